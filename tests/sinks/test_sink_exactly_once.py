"""The exactly-once proof: a sink process killed again and again mid-stream stores every sample exactly once.

The sink runs as a separate process (`python -m fleetstream.sinks.clickhouse`) on a 3-partition topic while a producer
streams 20,000 signal samples (400 records). It is SIGKILLed at random moments and, through the test-only
fault point, killed exactly between an insert and its Kafka commit, then restarted each time. At the end the
stored multiset of (vehicle, channel, ts, value) must equal the sent one, and the rollups must agree with it.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetstream.config import Settings, load_settings
from fleetstream.schemas.codec import encode
from fleetstream.sinks.clickhouse import rows
from fleetstream.sinks.clickhouse.faults import EXIT_STATUS, Fault
from fleetstream.sinks.clickhouse.inserts import insert_batch
from fleetstream.sinks.clickhouse.migrations import migrate
from fleetstream.sinks.clickhouse.rows import SourcedRecord
from fleetstream.store.client import DATABASE, Client, connect, embedded_path, is_embedded
from fleetstream.store.query_server import discover, query

REPO = Path(__file__).resolve().parents[2]
DAY_MS = 86_400_000
RECORDS, SAMPLES_PER_RECORD, PARTITIONS = 400, 50, 3
START_MS = (int(time.time() * 1000) // DAY_MS - 3) * DAY_MS + 12_345  # three days ago: spans 2-3 day partitions

Sample = tuple[str, str, int, float]


def make_records(prefix: str, seed: int = 7) -> list[dict[str, Any]]:
    """400 signal batches of 50 samples with distinct (vehicle, channel, ts) over 12 vehicles and 5 channels."""
    rnd = random.Random(seed)
    out = []
    for i in range(RECORDS):
        vehicle, channel = f"{prefix}-veh-{i % 12}", f"ch{(i // 12) % 5}"
        out.append({
            "batch_id": f"{prefix}-b{i}", "source": "kill-test", "org_id": "org", "fleet_id": "fleet",
            "vehicle_id": vehicle, "device_id": "dev", "name": channel, "unit": "rpm", "message_name": "",
            "network_name": "", "ecu_name": "", "ecu_id": "", "arb_id": "", "file_id": "", "message_date": "",
            "param_type": "NUMBER", "signal_type": "SIGNAL", "param_id": "",
            "samples": [{"timestamp_ms": START_MS + (i * SAMPLES_PER_RECORD + j) * 7_000,
                         "value": rnd.uniform(500.0, 7000.0), "svalue": None, "flags": 0}
                        for j in range(SAMPLES_PER_RECORD)],
        })
    return out


def samples_of(records: list[dict[str, Any]]) -> Counter[Sample]:
    return Counter((r["vehicle_id"], r["name"], s["timestamp_ms"], s["value"]) for r in records for s in r["samples"])


# unit level: the fault point and the Arrow insert path


def test_fault_spec_parses_and_rejects_unknown_points() -> None:
    assert Fault.parse("crash_after_insert:3") == Fault("crash_after_insert", 3)
    assert Fault.parse("crash_after_mark") == Fault("crash_after_mark", 1)
    assert Fault.from_env({}) is None
    with pytest.raises(ValueError, match="unknown fault point"):
        Fault.parse("crash_sometime:1")
    with pytest.raises(ValueError, match=">= 1"):
        Fault.parse("crash_after_insert:0")


def test_fault_exits_the_process_on_the_nth_pass() -> None:
    code = ("from sinks.clickhouse.faults import Fault\n"
            "f = Fault.parse('crash_after_insert:2')\n"
            "f.reached('crash_before_insert'); f.reached('crash_after_insert'); print('first', flush=True)\n"
            "f.reached('crash_after_insert'); print('never')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (EXIT_STATUS, "first\n")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Client]:
    client = connect(f"chdb://{tmp_path / 'store'}")
    migrate(client)
    yield client
    client.close()


@pytest.mark.parametrize("record_type", ["signal_batch", "dyno_sample_batch"])
def test_arrow_rows_equal_the_column_rows(record_type: str) -> None:
    from tests.sinks.test_clickhouse import RECORDS as EXAMPLES

    records = [SourcedRecord(EXAMPLES[record_type], "t", 2, 7 + k) for k in range(3)]
    columns = rows.to_columns(record_type, records)
    table = rows.samples_arrow(record_type, records)
    assert sorted(table.column_names) == sorted(columns)
    arrow = table.to_pydict()
    arrow["ts"] = [int(t.timestamp() * 1000) for t in arrow["ts"]]
    assert arrow == columns


def test_replayed_arrow_batch_is_stored_once_in_samples_and_rollups(store: Client) -> None:
    records = [SourcedRecord(r, "t", 0, i) for i, r in enumerate(make_records("replay")[::10])]
    table = rows.samples_arrow("signal_batch", records)
    days = {t // DAY_MS for t in (s["timestamp_ms"] for rec in records for s in rec.value["samples"])}
    assert len(days) >= 2  # one insert, several partitions: deduplicated block by block
    for _ in range(2):
        insert_batch(store, "samples", table, "t-0-0-39")
    n = len(records) * SAMPLES_PER_RECORD
    for sql in (f"SELECT count() FROM {DATABASE}.samples", f"SELECT sum(samples) FROM {DATABASE}.samples_1m",
                f"SELECT sum(samples) FROM {DATABASE}.samples_1h"):
        assert store.query(sql).result_rows[0][0] == n
    insert_batch(store, "samples", table, "t-0-40-79")  # another range is new data
    assert store.query(f"SELECT count() FROM {DATABASE}.samples").result_rows[0][0] == 2 * n


def test_bench_measures_the_real_path_and_stores_every_row_once(tmp_path: Path) -> None:
    from fleetstream.benchmarks.sink import bench_sink, to_table

    dsn = f"chdb://{tmp_path / 'bench'}"
    report = bench_sink(dsn, batch_sizes=(200, 1_000), repeats=2)
    assert [r["batch_rows"] for r in report["results"]] == [200, 1_000]
    assert all(r["sink"]["min_rows_s"] <= r["sink"]["median_rows_s"] <= r["sink"]["max_rows_s"]
               for r in report["results"])
    assert "1,000" in to_table(report)
    client = connect(dsn)
    try:  # 3 rounds (1 warm-up) per size went through the dedup-token path: nothing dropped, nothing doubled
        for sql in (f"SELECT count() FROM {DATABASE}.samples", f"SELECT sum(samples) FROM {DATABASE}.samples_1h"):
            assert client.query(sql).result_rows[0][0] == 3 * 200 + 3 * 1_000
    finally:
        client.close()


# the process-level proof (real broker, real engine, real SIGKILL)


class SinkProcess:
    """One `python -m fleetstream.sinks.clickhouse` process on the test topic, with its log captured to a file."""

    def __init__(self, env: dict[str, str], args: list[str], log_path: Path, fault: str | None = None):
        self.log_path = log_path
        env = {k: v for k, v in env.items() if k != "FLEETSTREAM_FAULT"}
        if fault:
            env["FLEETSTREAM_FAULT"] = fault
        self._log = log_path.open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "fleetstream.sinks.clickhouse", *args], cwd=REPO, env=env,
                                     stdout=subprocess.PIPE, stderr=self._log, text=True)

    def wait(self, timeout_s: float) -> int:
        try:
            return self.proc.wait(timeout_s)
        finally:
            self._log.close()

    def kill(self) -> int:
        self.proc.send_signal(signal.SIGKILL)
        return self.wait(30)

    def log(self) -> str:
        return self.log_path.read_text()


def stored_count(settings: Settings, topic: str) -> int:
    """Rows of `topic` in samples: through the running sink's endpoint (never opening an embedded store here,
    which would hold its lock against the sink), or from the server; -1 while there is no answer."""
    dsn = settings.clickhouse_dsn
    if is_embedded(dsn) and discover(embedded_path(dsn)) is None:
        return -1
    try:
        return int(query(settings, f"SELECT count() FROM {DATABASE}.samples WHERE kafka_topic = {{t:String}}",
                         {"t": topic}, timeout_s=10).rows[0][0])
    except Exception:  # the endpoint of a sink that was just killed
        return -1


def wait_until(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.1)


@pytest.mark.integration
@pytest.mark.slow
def test_sink_killed_repeatedly_mid_stream_stores_every_sample_exactly_once(
    kafka_bootstrap: str, clickhouse_dsn: str, topic_factory: Any, tmp_path: Path
) -> None:
    from confluent_kafka import Producer

    prefix = f"k{uuid.uuid4().hex[:8]}"
    topic = topic_factory(prefix="exactly-once", partitions=PARTITIONS)
    records = make_records(prefix)
    expected = samples_of(records)
    assert sum(expected.values()) == len(expected) == RECORDS * SAMPLES_PER_RECORD  # distinct by construction

    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "CLICKHOUSE_DSN": clickhouse_dsn,
           "FLEETSTREAM_HOME": str(tmp_path / "home"), "FLEETSTREAM_CLICKHOUSE__BATCH_ROWS": "1000",
           "FLEETSTREAM_CLICKHOUSE__BATCH_SECONDS": "0.3", "FLEETSTREAM_CLICKHOUSE__QUERY_PORT": "0",
           "PYTHONPATH": str(REPO)}
    settings = load_settings(home=tmp_path / "home", kafka={"bootstrap_servers": kafka_bootstrap},
                             clickhouse={"dsn": clickhouse_dsn})
    # static membership by default (group.instance.id from the home): a restarted sink takes its partitions back
    # at once instead of after a session timeout
    args = ["--route", f"{topic}=samples:signal_batch", "--group", f"kill-{prefix}", "--no-dlq",
            "--consumer", "session.timeout.ms=10000"]

    produced = threading.Event()
    errors: list[BaseException] = []

    def stream() -> None:  # 400 records over ~16 s, keyed by vehicle: the kills land mid-stream
        try:
            producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True, "acks": "all",
                                 "linger.ms": 5})
            for start in range(0, RECORDS, 10):
                for r in records[start:start + 10]:
                    producer.produce(topic, encode("signal_batch", r), key=r["vehicle_id"].encode())
                producer.poll(0)
                time.sleep(0.4)
            assert producer.flush(30) == 0
        except BaseException as exc:
            errors.append(exc)
        finally:
            produced.set()

    rnd = random.Random()
    plan = ["crash_after_insert:3", "kill", "crash_after_insert:2", "kill", "kill"]
    streamer = threading.Thread(target=stream, daemon=True)
    streamer.start()
    progress: list[tuple[str, int]] = []
    for run, step in enumerate(plan):
        before = max(stored_count(settings, topic), 0) if run else 0
        sink = SinkProcess(env, args, tmp_path / f"sink-{run}.log", fault=None if step == "kill" else step)
        if step == "kill":
            if plan[run - 1].startswith("crash_after_insert"):  # the replay this run owes must happen first
                wait_until(lambda s=sink: f"re-forming unacknowledged batches of {topic}" in s.log(), 120,
                           "the replay of the unacknowledged range")
            # a random moment once this run has stored something new: mid-batch, mid-insert or mid-commit
            wait_until(lambda b=before: stored_count(settings, topic) > b or produced.is_set(), 120, "progress")
            time.sleep(rnd.uniform(0.0, 0.6))
            assert sink.kill() == -signal.SIGKILL, sink.log()
        else:
            assert sink.wait(120) == EXIT_STATUS, sink.log()  # died between the insert and the commit
            assert f"injected fault {step}" in sink.log()
        progress.append((step, stored_count(settings, topic)))

    final = SinkProcess(env, args, tmp_path / "sink-final.log")
    wait_until(produced.is_set, 120, "the producer")
    assert not errors, errors
    wait_until(lambda: stored_count(settings, topic) >= len(expected), 180, f"{len(expected)} rows")
    time.sleep(1.0)  # anything still arriving would be a duplicate: let it land before the check
    base = discover(embedded_path(clickhouse_dsn)) if is_embedded(clickhouse_dsn) else None
    if base is not None:  # the running sink's Prometheus counters, on its loopback endpoint
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
            assert 'fleetstream_sink_rows_total{table="samples"}' in response.read().decode()
    final.proc.send_signal(signal.SIGTERM)
    assert final.wait(60) == 0, final.log()
    stats = json.loads(final.proc.stdout.read() if final.proc.stdout else "{}")

    # the runs after a crash between insert and commit re-formed the unacknowledged range (the replay path ran)
    logs = [(tmp_path / f"sink-{run}.log").read_text() for run in range(1, len(plan))] + [final.log()]
    replays = [log for step, log in zip(plan, logs, strict=True) if step.startswith("crash_after_insert")]
    assert all(f"re-forming unacknowledged batches of {topic}" in log for log in replays), progress

    client = connect(clickhouse_dsn)
    try:
        stored: Counter[Sample] = Counter((str(v), str(c), int(t), float(x)) for v, c, t, x in client.query(
            f"SELECT vehicle_id, toString(channel), toUnixTimestamp64Milli(ts), value FROM {DATABASE}.samples "
            "WHERE kafka_topic = {t:String}", parameters={"t": topic}).result_rows)
        assert len(stored) == len(expected), f"{sum(stored.values())} rows, {len(stored)} distinct; {progress}"
        assert stored == expected, f"missing {list((expected - stored).items())[:3]}, " \
                                   f"extra {list((stored - expected).items())[:3]}"
        assert_rollups_agree(client, records, prefix)
    finally:
        client.close()
    assert stats["rows"].get("samples", 0) > 0


def assert_rollups_agree(client: Client, records: list[dict[str, Any]], prefix: str) -> None:
    """samples_1m and samples_1h hold, per vehicle/channel/bucket, the count, min, max and sum of the sent samples."""
    for table, bucket_col, width_ms in (("samples_1m", "minute", 60_000), ("samples_1h", "hour", 3_600_000)):
        want: dict[tuple[str, str, int], list[float]] = defaultdict(list)
        for r in records:
            for s in r["samples"]:
                want[(r["vehicle_id"], r["name"], s["timestamp_ms"] // width_ms * width_ms // 1000)].append(s["value"])
        got = client.query(
            f"SELECT vehicle_id, toString(channel), toUnixTimestamp({bucket_col}), sum(samples), sum(value_count), "
            f"min(min_value), max(max_value), sum(sum_value) FROM {DATABASE}.{table} "
            "WHERE startsWith(vehicle_id, {p:String}) GROUP BY 1, 2, 3", parameters={"p": f"{prefix}-"}).result_rows
        assert len(got) == len(want), table
        for vehicle, channel, bucket, n, n_values, lo, hi, total in got:
            values = want[(vehicle, channel, bucket)]
            assert (n, n_values, lo, hi) == (len(values), len(values), min(values), max(values)), (table, vehicle)
            assert math.isclose(total, sum(values), rel_tol=1e-9), (table, vehicle, bucket)
