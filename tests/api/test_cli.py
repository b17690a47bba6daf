"""`fleetstream users ...` and `fleetstream serve` from the command line, on the real broker."""

from __future__ import annotations

import json
import uuid

import pytest

from fleetstream.api.users import UserStore
from fleetstream.cli import app
from fleetstream.cli_errors import run_app
from fleetstream.config import KafkaSettings

pytestmark = pytest.mark.integration


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Runs `fleetstream ARGS` in-process the way the console script does (with its one error handler):
    exit code, standard output and standard error."""

    def run(env: dict[str, str], *args: str) -> tuple[int, str, str]:
        with monkeypatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            code = run_app(app, args=list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_users_commands_store_users_that_survive_a_restart(kafka_bootstrap: str, cli) -> None:
    def _run(env: dict[str, str], *args: str) -> tuple[int, str]:
        code, out, _ = cli(env, *args)
        return code, out

    topic = f"test.users.{uuid.uuid4().hex[:8]}"
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "FLEETSTREAM_API__USERS_TOPIC": topic,
           "FLEETSTREAM_USER_PASSWORD": "first password"}
    code, out = _run(env, "users", "add", "alice", "--org", "acme", "--role", "admin")
    assert code == 0, out
    assert json.loads(out)["vehicle_ids"] == ["*"] and "hash" not in out
    assert _run(env, "users", "add", "alice", "--org", "acme", "--role", "admin")[0] == 2  # exists
    assert _run(env, "users", "add", "olga", "--org", "acme", "--role", "owner")[0] == 2  # owner needs vehicles
    assert _run(env, "users", "add", "olga", "--org", "acme", "--role", "owner", "--vehicle", "v1")[0] == 0
    assert _run(env, "users", "add", "bob", "--org", "acme", "--role", "wizard")[0] == 2
    assert _run({**env, "FLEETSTREAM_USER_PASSWORD": "new password"}, "users", "passwd", "alice")[0] == 0
    assert _run(env, "users", "disable", "olga")[0] == 0
    code, key = _run(env, "users", "apikey", "alice")
    assert code == 0 and key.startswith("fsk_")
    code, out = _run(env, "users", "list")
    listed = {u["username"]: u for u in json.loads(out)}
    assert set(listed) == {"alice", "olga"} and listed["olga"]["disabled"] and len(listed["alice"]["api_keys"]) == 1

    restarted = UserStore(KafkaSettings(bootstrap_servers=kafka_bootstrap), topic)  # a fresh process's view
    restarted.load()
    assert restarted.authenticate("alice", "new password") is not None
    assert restarted.authenticate("alice", "first password") is None
    assert restarted.authenticate("olga", "first password") is None  # disabled
    alice = restarted.by_api_key(key.strip())
    assert alice is not None and alice.username == "alice"
    restarted.close()


def test_serve_refuses_to_start_without_a_strong_jwt_secret(kafka_bootstrap: str, cli) -> None:
    code, out, err = cli({"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "JWT_SECRET_KEY": "tooshort"},
                         "serve", "--port", "0")
    assert code == 2 and "JWT_SECRET_KEY" in err and "tooshort" not in out + err
