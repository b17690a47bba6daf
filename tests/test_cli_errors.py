"""Every command given bad input ends the way a user can act on: the expected exit status, exactly one
`error:` line on stderr, no traceback, and within a timeout.

The rows run the installed `fleetstream` console script (the venv's, beside this interpreter) in a subprocess,
with FLEETSTREAM_HOME in a temporary directory and Kafka pointed at a closed port, so nothing reaches a real
service by accident. The store rows use a real embedded ClickHouse store, migrated by `fleetstream db migrate`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleetstream import cli_errors
from fleetstream.errors import FleetstreamError, InvalidInput

FLEETSTREAM = Path(sys.executable).with_name("fleetstream")
DATA = Path(__file__).parent / "data"
CAPTURE = DATA / "innovate" / "Serial-log.isp2"
ROW_TIMEOUT_S = 90  # generous: the machine is shared; a hang still fails
USAGE, RUNTIME = 2, 1


@dataclass(frozen=True)
class Row:
    """One command line (placeholders in braces are files of the `files` fixture), what it must exit with and a
    piece of text its error line must contain."""

    args: tuple[str, ...]
    exit_code: int
    says: str = ""


def row(*args: str, exit_code: int = USAGE, says: str = "") -> object:
    return pytest.param(Row(args, exit_code, says), id=" ".join(args)[:80])


ROWS = [
    # usage: unknown commands and options, missing and malformed values, files that are not there
    row("nope", says="No such command"),
    row("inspect", "--bogus", "{csv}", says="No such option: --bogus"),
    row("inspect", "--format", "bogus", "{csv}", says="'bogus' is not one of"),
    row("inspect", "{missing}", says="does not exist"),
    row("inspect", "{dir}", says="is a directory"),
    row("--log-level", "LOUD", "inspect", "{csv}", says="--log-level"),
    row("--config", "{missing}", "topics", "list", says="does not exist"),
    row("--config", "{dir}", "topics", "list", says="is a directory"),
    row("import", "{csv}", says="Missing option '--station'"),
    row("import", "{csv}", "--station", "s", "--mapping", "{missing}", says="'--mapping'"),
    row("import", "{dir}", "--station", "s", says="is a directory"),
    row("import", "{csv}", "--station", "s", "--format", "xml", says="'xml' is not one of"),
    row("import", "{csv}", "--station", "s", "--batch-samples", "0", says="--batch-samples"),
    row("import", "{csv}", "--station", "s", "--batch-samples", "many", says="--batch-samples"),
    row("import", "{csv}", "--station", "s", "--mapping", "{bad_yaml}", says="invalid YAML: "),
    row("import", "{csv}", "--station", "s", "--start-time", "teatime", says="'teatime' is not ISO-8601"),
    row("query", "--format", "xml", "alerts", says="'xml' is not one of"),
    row("query", "nope", says="no query named 'nope' (known: alerts"),
    row("query", "alerts", "--from", "2026-11-31", says="'2026-11-31' is not an ISO-8601 date or time"),
    row("query", "alerts", "--to", "yesterday", says="'yesterday' is not an ISO-8601"),
    row("query", "data_quality", "--param", "late_seconds=abc", says="'abc' is not a whole number"),
    row("query", "data_quality", "--param", "late_seconds=-5", says="'-5' is not a whole number >= 0"),
    row("query", "alerts", "--param", "colour=red", says="no parameter colour (it takes from, to, vehicle)"),
    row("query", "alerts", "--param", "colour", says="'colour' is not NAME=VALUE"),
    row("query", "alerts", "--param", "from=2026-11-30", says="use --from"),
    row("query", "vehicle_timeline", says="needs --vehicle"),
    row("query", "alerts", "--sql", "SELECT 1", says="not both"),
    row("query", "--sql", "DROP TABLE fleetstream.samples", says="not DROP"),
    row("query", "--sql", "SELECT 1; SELECT 2", says="one statement"),
    row("query", "alerts", "--format", "parquet", says="needs --output"),
    row("query", "--sql", "SELECT * FROM no_such_table", says="no_such_table"),
    row("export", "--table", "nope", "--from", "2026-11-01", "--to", "2026-11-02", "--out", "{out}",
        says="no table fleetstream.nope (tables with a time partition: alert_acks, alerts"),
    row("export", "--table", "schema_migrations", "--from", "2026-11-01", "--to", "2026-11-02", "--out", "{out}",
        says="not partitioned by a time column"),
    row("export", "--table", "x;y", "--from", "2026-11-01", "--to", "2026-11-02", "--out", "{out}",
        says="not a table name"),
    row("export", "--table", "samples", "--from", "2026-11-31", "--to", "2026-12-01", "--out", "{out}",
        says="'2026-11-31' is not a day"),
    row("export", "--table", "samples", "--from", "2026-11-03", "--to", "2026-11-02", "--out", "{out}",
        says="empty range"),
    row("export", "--table", "samples", "--from", "2026-11-01", "--to", "2026-11-02", "--out", "{csv}",
        says="is a file"),
    row("simulate", "jetdrive", "--rate-hz", "0", says="0 is not > 0"),
    row("simulate", "jetdrive", "--rate-hz", "-5", says="-5 is not > 0"),
    row("simulate", "jetdrive", "--port", "70000", says="--port"),
    row("simulate", "vehicles", "--vehicles", "0", says="--vehicles"),
    row("simulate", "vehicles", "--vehicles", "abc", says="--vehicles"),
    row("simulate", "vehicles", "--sample-hz", "0", says="0 is not > 0"),
    row("simulate", "vehicles", "--bad-sample-rate", "2", says="--bad-sample-rate"),
    row("fake-backend", "--port", "99999", says="--port"),
    row("fake-backend", "--port", "-1", says="--port"),
    row("poll", "nowhere", says="unknown provider"),
    row("poll", "motive", says="MOTIVE_API_KEY"),
    row("agent", "run", "--config", "{missing}", says="does not exist"),
    row("stack", "up", "--timeout-s", "soon", says="--timeout-s"),
    row("bench", "produce", "--samples", "lots", says="--samples"),
    row("bench", "api", "--chromium", "{missing}", says="--no-browser"),
    row("bench", "api", "--probe", "nope", "--no-browser", says="unknown probe nope"),
    # runtime: the input was well-formed but the work failed
    row("inspect", "{junk}", exit_code=RUNTIME, says="expected one of the formats inspect knows"),
    row("inspect", "{empty}", exit_code=RUNTIME, says="an empty file"),
    row("inspect", "{swapped}", exit_code=RUNTIME, says="two bytes of every 16-bit word swapped"),
    row("inspect", "--format", "wp8", "{csv}", exit_code=RUNTIME, says="expected"),
    row("inspect", "--format", "mts", "{junk}", exit_code=RUNTIME, says="errors"),
    row("query", "--sql", "SELECT 1", "--output", "{dir}", exit_code=RUNTIME, says="Is a directory"),
    row("agent", "status", "--spool-dir", "{dir}", exit_code=RUNTIME),
    row("fake-backend", "--port", "{busy_port}", exit_code=RUNTIME, says="cannot listen on 127.0.0.1:"),
    row("import", "{junk}", "--station", "s", exit_code=RUNTIME),
]

KAFKA_ROWS = [  # unreachable Kafka fails fast only with the delivery branch; today each takes ~30 s
    row("topics", "create", exit_code=RUNTIME, says="Kafka"),
    row("import", "{csv}", "--station", "s", exit_code=RUNTIME, says="Kafka"),
    row("simulate", "vehicles", "--seconds", "1", exit_code=RUNTIME, says="Kafka"),
]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """FLEETSTREAM_HOME with a migrated embedded store (a real chDB), shared by the rows of this module."""
    path = tmp_path_factory.mktemp("home")
    done = subprocess.run([str(FLEETSTREAM), "db", "migrate"], env=environment(path), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The files the rows name: a good CSV, junk, an empty file, a swapped capture, a directory, a busy port."""
    root = tmp_path_factory.mktemp("files")
    (root / "run.csv").write_text("Time (ms),RPM\n0,2500\n10,2510\n", encoding="utf-8")
    (root / "junk.bin").write_bytes(bytes(range(256)) * 4)
    (root / "empty.bin").write_bytes(b"")
    capture = CAPTURE.read_bytes()[: CAPTURE.stat().st_size // 2 * 2]
    (root / "swapped.bin").write_bytes(b"".join(capture[i + 1:i + 2] + capture[i:i + 1]
                                                for i in range(0, len(capture), 2)))
    (root / "a-directory").mkdir()
    (root / "bad.yaml").write_text("columns: [RPM\n", encoding="utf-8")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield {"csv": str(root / "run.csv"), "junk": str(root / "junk.bin"), "empty": str(root / "empty.bin"),
               "swapped": str(root / "swapped.bin"), "dir": str(root / "a-directory"),
               "missing": str(root / "missing.yaml"), "out": str(root / "export"), "bad_yaml": str(root / "bad.yaml"),
               "busy_port": str(busy.getsockname()[1])}


def environment(home: Path, **extra: str) -> dict[str, str]:
    """The caller's environment without fleetstream settings or API tokens, plus a private home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEETSTREAM_", "KAFKA_", "CLICKHOUSE_"))
           and k not in ("MOTIVE_API_KEY", "SAMSARA_API_TOKEN", "GRAPHQL_ENDPOINT")}
    return {**env, "FLEETSTREAM_HOME": str(home), "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", **extra}


def run(args: tuple[str, ...], env: dict[str, str], files: dict[str, str],
        timeout_s: float = ROW_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    argv = [str(FLEETSTREAM), *(arg.format(**files) for arg in args)]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)


def assert_one_error_line(done: subprocess.CompletedProcess[str], exit_code: int, says: str) -> str:
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == exit_code, done.stderr
    assert len(errors) == 1, done.stderr
    assert "Traceback" not in done.stderr and "╭" not in done.stderr, done.stderr
    assert says in errors[0], errors[0]
    return errors[0]


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("case", ROWS)
def test_bad_input_gives_one_error_line(case: Row, home: Path, files: dict[str, str]) -> None:
    assert_one_error_line(run(case.args, environment(home), files), case.exit_code, case.says)


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("case", KAFKA_ROWS)
def test_unreachable_kafka_gives_one_error_line(case: Row, home: Path, files: dict[str, str]) -> None:
    started = time.monotonic()
    assert_one_error_line(run(case.args, environment(home), files, timeout_s=30), case.exit_code, case.says)
    assert time.monotonic() - started < 15


@pytest.mark.slow
def test_traceback_only_with_debug_logging(tmp_path: Path, files: dict[str, str]) -> None:
    quiet = run(("inspect", "{junk}"), environment(tmp_path), files)
    loud = run(("--log-level", "DEBUG", "inspect", "{junk}"), environment(tmp_path), files)
    assert_one_error_line(quiet, RUNTIME, "expected one of the formats")
    assert loud.returncode == RUNTIME and "Traceback" in loud.stderr and "FileFormatError" in loud.stderr
    assert loud.stderr.splitlines()[-1] == quiet.stderr.splitlines()[-1]  # and then the same one error line


@pytest.mark.slow
@pytest.mark.integration
def test_store_held_by_the_sink_names_its_pid(tmp_path: Path, files: dict[str, str]) -> None:
    """The sink marks ownership with the query endpoint's discovery file (pid); a process holding the store
    with that same endpoint stands in for the sink, which would need a broker."""
    env = environment(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        for command in (("db", "status"), ("db", "migrate")):
            started = time.monotonic()
            line = assert_one_error_line(run(command, env, files), RUNTIME, f"held by the running sink (pid "
                                                                             f"{holder.pid})")
            assert "stop the sink first" in line
            assert time.monotonic() - started < 30  # at once, not after the 10 s lock wait
        query = run(("query", "--sql", "SELECT count() AS n FROM samples"), env, files)
        assert query.returncode == 0 and query.stdout.split()[:1] == ["n"], query.stderr
    finally:
        holder.terminate()
        holder.wait(timeout=30)


HOLDER = """
import signal, sys, threading
from fleetstream.config import load_settings
from fleetstream.sinks.clickhouse import connect, migrate
from fleetstream.store.query_server import QueryServer
settings = load_settings(None)
client = connect(settings.clickhouse_dsn)
migrate(client)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
with QueryServer(client, settings, port=0):
    print("ready", flush=True)
    stop.wait(120)
client.close()
"""


def test_format_choices_match_the_registries() -> None:
    """The CLI's --format choices are typed out (fast --help); they must stay what the code knows."""
    from typing import get_args

    from fleetstream.cli import ImportFormat, InspectFormat, QueryFormat
    from fleetstream.producers.files import _parsers
    from fleetstream.producers.inspection import inspectors
    from fleetstream.sinks.clickhouse.queries import FORMATS

    assert set(get_args(InspectFormat)) == {"auto", *inspectors()}
    assert set(get_args(ImportFormat)) == {"auto", *_parsers()}
    assert get_args(QueryFormat) == FORMATS


# the error handler itself, without subprocesses


def test_our_errors_carry_their_hint_and_exit_status() -> None:
    assert cli_errors.describe(InvalidInput("bad --x", "use y")).line() == "error: bad --x (use y)"
    assert cli_errors.describe(InvalidInput("bad")).exit_code == USAGE
    assert cli_errors.describe(FleetstreamError("failed\non two lines")).line() == "error: failed on two lines"
    assert cli_errors.describe(FleetstreamError("failed")).exit_code == RUNTIME


def test_foreign_errors_become_one_line() -> None:
    from clickhouse_connect.driver.exceptions import DatabaseError
    from confluent_kafka import KafkaError, KafkaException

    kafka = cli_errors.describe(KafkaException(KafkaError(KafkaError._TRANSPORT, "Connection refused")))
    assert kafka.line().startswith("error: Kafka: Connection refused (is the broker running?")
    clickhouse = cli_errors.describe(DatabaseError("Code: 60. Unknown table\nstack trace line"))
    assert clickhouse.line().startswith("error: ClickHouse: Code: 60. Unknown table (")
    missing = cli_errors.describe(FileNotFoundError(2, "No such file or directory", "x.yaml"))
    assert missing.line() == "error: x.yaml: No such file or directory"
    bug = cli_errors.describe(ZeroDivisionError("float division by zero"))
    assert bug.line().startswith("error: unexpected ZeroDivisionError: float division by zero (a bug")
    assert cli_errors.describe(KeyError("no such key")).line() == "error: no such key"
    import yaml

    with pytest.raises(yaml.YAMLError) as bad_yaml:
        yaml.safe_load("a: [1\n")
    described = cli_errors.describe(bad_yaml.value)
    assert (described.exit_code, described.line()) == (USAGE, "error: invalid YAML: <unicode string>, line 2, "
                                                               "column 1: expected ',' or ']', but got '<stream end>'")


def test_run_app_returns_the_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    app = typer.Typer()

    @app.command()
    def fail(code: int) -> None:
        if code:
            raise InvalidInput(f"code {code}", "as asked")

    assert cli_errors.run_app(app, "t", ["0"]) == 0
    assert cli_errors.run_app(app, "t", ["3"]) == USAGE
    assert capsys.readouterr().err == "error: code 3 (as asked)\n"
    assert cli_errors.run_app(app, "t", ["x"]) == USAGE
    assert capsys.readouterr().err.startswith("error: Invalid value for 'code'")


def test_console_script_is_installed() -> None:
    assert FLEETSTREAM.exists() and shutil.which(str(FLEETSTREAM)), "install the package: pip install -e ."
