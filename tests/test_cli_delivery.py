"""Commands that hand data to Kafka succeed only when the broker acknowledged all of it (issue 11).

Each command runs as a user runs it (`python -m fleetstream ...` in a subprocess) against an address where
no broker listens, and against the session's real broker. An unreachable broker, backend or ClickHouse must
end the command within seconds with one `error:` line and exit 1, and leave no trace of success (the import
ledger).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from fleetstream.admin import ensure_topics

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "producers" / "samples" / "dyno_pull.csv"
NOBODY = "127.0.0.1:1"
"""A bootstrap address where nothing listens: connections are refused."""
FAST_S = 15.0
"""Upper bound for "fails within a few seconds" (the probe gives up after 5 s; the machine may be busy)."""


def run_cli(*args: str, home: Path, bootstrap: str, timeout_s: float = 120.0,
            **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run `fleetstream <args>`; the completed process and its wall time in seconds."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("FLEETSTREAM_", "KAFKA_", "GRAPHQL_"))}
    environ.update(FLEETSTREAM_HOME=str(home), KAFKA_BOOTSTRAP_SERVERS=bootstrap, **env)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "fleetstream", *args], cwd=REPO, env=environ, capture_output=True,
                          text=True, timeout=timeout_s)
    return done, time.monotonic() - started


def assert_one_error_line(done: subprocess.CompletedProcess[str], *expected: str) -> None:
    """Exit 1, and stderr is exactly one line: `error: ...` containing each of `expected`."""
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), lines[0]
    for text in expected:
        assert text in lines[0], lines[0]


def messages_with_key(bootstrap: str, topic: str, key: bytes) -> int:
    """How many messages on `topic` carry `key` (read from the start to the current end of each partition)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        count, done = 0, {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + 60
        while len(done) < len(ends) and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            count += message.key() == key
            partition, offset = message.partition(), message.offset()
            if partition is not None and offset is not None and offset + 1 >= ends[partition]:
                done.add(partition)
        assert len(done) == len(ends), "did not read every partition to its end"
        return count
    finally:
        consumer.close()


def closed_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago and has no listener."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def run_file(tmp_path: Path) -> Path:
    """A copy of the sample CSV with a unique last line, so its content id (the ledger's key) is new."""
    path = tmp_path / "run.csv"
    shutil.copyfile(SAMPLE, path)
    with path.open("a") as handle:
        handle.write(f"# {uuid.uuid4().hex}\n")
    return path


@pytest.mark.integration
@pytest.mark.slow
def test_import_waits_for_the_broker_before_the_ledger_says_imported(kafka_bootstrap: str, tmp_path: Path,
                                                                     run_file: Path) -> None:
    station = f"cell-{uuid.uuid4().hex[:8]}"
    home = tmp_path / "home"
    ledger = home / "imports.json"

    down, elapsed = run_cli("import", str(run_file), "--station", station, home=home, bootstrap=NOBODY)
    assert_one_error_line(down, f"cannot reach Kafka at {NOBODY}", "KAFKA_BOOTSTRAP_SERVERS")
    assert elapsed < FAST_S
    assert "samples in" not in down.stdout
    assert not ledger.exists()

    ensure_topics(kafka_bootstrap, ["dyno.samples"])
    up, _ = run_cli("import", str(run_file), "--station", station, home=home, bootstrap=kafka_bootstrap)
    assert up.returncode == 0, up.stderr
    batches = int(up.stdout.split(" samples in ")[1].split()[0])
    assert batches > 0
    assert messages_with_key(kafka_bootstrap, "dyno.samples", station.encode()) == batches
    (entry,) = json.loads(ledger.read_text()).values()
    assert entry["station"] == station

    again, _ = run_cli("import", str(run_file), "--station", station, home=home, bootstrap=kafka_bootstrap)
    assert again.returncode == 0, again.stderr
    assert "already imported" in again.stdout
    assert messages_with_key(kafka_bootstrap, "dyno.samples", station.encode()) == batches


@pytest.mark.integration
@pytest.mark.slow
def test_import_whose_messages_time_out_is_not_recorded(kafka_bootstrap: str, tmp_path: Path,
                                                        run_file: Path) -> None:
    """The broker is up (the probe passes) but no message is delivered: 1 ms is less than the idempotent
    producer needs to get its producer id, so every message times out before it is sent."""
    ensure_topics(kafka_bootstrap, ["dyno.samples"])
    home = tmp_path / "home"
    done, _ = run_cli("import", str(run_file), "--station", "cell-timeout", home=home, bootstrap=kafka_bootstrap,
                      FLEETSTREAM_KAFKA__CLIENT_CONFIG=json.dumps({"message.timeout.ms": "1", "linger.ms": "0"}))
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and "samples in" not in done.stdout
    last = done.stderr.strip().splitlines()[-1]
    total = int(last.split(" of ")[1].split()[0])
    assert last.startswith(f"error: {total} of {total} messages were not acknowledged by Kafka at {kafka_bootstrap}")
    assert "Local: Message timed out" in last
    assert not (home / "imports.json").exists()


@pytest.mark.integration
@pytest.mark.slow
def test_simulate_vehicles_fails_fast_without_broker_and_succeeds_with_it(kafka_bootstrap: str,
                                                                          tmp_path: Path) -> None:
    args = ("simulate", "vehicles", "--seconds", "1", "--vehicles", "1", "--sample-hz", "2")
    down, elapsed = run_cli(*args, home=tmp_path, bootstrap=NOBODY)
    assert_one_error_line(down, f"cannot reach Kafka at {NOBODY}")
    assert elapsed < FAST_S
    assert "delivered" not in down.stdout

    ensure_topics(kafka_bootstrap, ["telemetry.signals", "telemetry.dtcs", "telemetry.gps", "telemetry.netstats"])
    up, _ = run_cli(*args, "--first-vehicle-id", "7001", home=tmp_path, bootstrap=kafka_bootstrap)
    assert up.returncode == 0, up.stderr
    assert up.stdout.startswith("delivered ") and not up.stdout.startswith("delivered 0 ")


@pytest.mark.integration
@pytest.mark.slow
def test_sink_graphql_drain_fails_fast_without_broker_or_backend(kafka_bootstrap: str, tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}/graphql"
    args = ("sink", "graphql", "--drain")

    no_kafka, elapsed = run_cli(*args, home=tmp_path, bootstrap=NOBODY, GRAPHQL_ENDPOINT=endpoint)
    assert_one_error_line(no_kafka, f"cannot reach Kafka at {NOBODY}")
    assert elapsed < FAST_S

    topics = ["telemetry.signals.valid", "telemetry.dtcs.valid", "telemetry.gps.valid", "telemetry.netstats.valid"]
    ensure_topics(kafka_bootstrap, [*topics, *(f"dlq.{t}" for t in topics)])
    no_backend, elapsed = run_cli(*args, home=tmp_path, bootstrap=kafka_bootstrap, GRAPHQL_ENDPOINT=endpoint,
                                  FLEETSTREAM_GRAPHQL__GROUP_ID=f"test-{uuid.uuid4().hex}")
    assert_one_error_line(no_backend, f"cannot reach the GraphQL backend at {endpoint}", "GRAPHQL_ENDPOINT")
    assert elapsed < FAST_S


@pytest.mark.parametrize("command", [("db", "status"), ("db", "migrate"), ("query", "--sql", "SELECT 1"),
                                     ("sink", "clickhouse", "--seconds", "1")])
def test_clickhouse_commands_fail_fast_when_the_server_is_unreachable(command: tuple[str, ...],
                                                                       tmp_path: Path) -> None:
    port = closed_port()
    done, elapsed = run_cli(*command, home=tmp_path, bootstrap=NOBODY,
                            CLICKHOUSE_DSN=f"http://reader:s3cret@127.0.0.1:{port}")
    assert_one_error_line(done, f"cannot reach ClickHouse at http://127.0.0.1:{port}", "CLICKHOUSE_DSN")
    assert "s3cret" not in done.stderr
    assert elapsed < FAST_S


def test_poll_once_fails_fast_without_broker_and_keeps_no_checkpoint(tmp_path: Path) -> None:
    done, elapsed = run_cli("poll", "motive", "--once", "--base-url", f"http://127.0.0.1:{closed_port()}",
                            home=tmp_path, bootstrap=NOBODY, MOTIVE_API_KEY="test-token")
    assert_one_error_line(done, f"cannot reach Kafka at {NOBODY}")
    assert elapsed < FAST_S
    assert not any((tmp_path / "fleet-checkpoints").glob("*"))
