"""`fleetstream bench streams` (peers part): our faust worker next to Quix Streams and a plain consume loop.

The job is the same for all three: validate → dedup on (key, channel, event time) → 60 s event-time tumbling
windows with count/min/max/mean/last/p95 (benchmarks/peers/signal_job.py spells out the semantics, which are
streams/windows.py's). Each runs alone, on the same input:

1. start the job (the worker through `fleetstream.demo.Services`; a peer in its own venv,
   `benchmarks/peers/.venv`, created from `benchmarks/peers/requirements.txt` on first use) and wait until its
   consumer group is stable with partitions assigned;
2. load its input topic with the same messages (the worker reads `telemetry.signals`; each peer a fresh topic
   of its own, same partition count, same keys and bytes, so every partition holds the same sequence):
   signal batches of 100 samples, with duplicated batches and invalid samples (NaN, out of range), and one
   final sentinel sample per (key, channel) 6 min later in event time, so every real window closes by
   watermark in all three jobs (no idle-flush timing involved);
3. read its output until every expected window has arrived; throughput = input samples / (last window's
   arrival at the reader - load start).

The expected windows come from running `signal_job` in this process; the three jobs' tumbling windows are
then compared with each other: same (key, channel, window start) set, equal count, min, max, last and p95
(nearest rank, exact), mean within 1e-9 relative.

Fairness notes: our worker does more than the peers: validation writes `telemetry.signals.valid` and the
analytics agent reads it back (two hops through Kafka), and it also computes 5 min hopping windows, threshold
alerts and KPIs, with state in changelogged faust tables. The peers are one hop, tumbling windows only.
Each worker run gets its own `streams.app_id` (consumer group and table changelogs); the worker's topic names
are the configured ones, so nothing else should write `telemetry.signals` on that broker during the run.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from fleetstream.benchmarks.common import CHANNELS, SAMPLES_PER_MESSAGE, machine_info, machine_line, render_table, stat
from fleetstream.config import KEY_PARTITIONER, Settings
from fleetstream.schemas import codec

__all__ = ["bench_peers", "ensure_peers_venv", "make_input", "to_table"]

PEERS_DIR = Path(__file__).resolve().parent / "peers"
PEERS_VENV = PEERS_DIR / ".venv"
SENTINEL_GAP_MS = 6 * 60_000
Window = dict[str, Any]
WindowKey = tuple[str, str, int]


def ensure_peers_venv(venv: Path = PEERS_VENV) -> Path:
    """The peers' Python, creating the venv from requirements.txt on first use."""
    python = venv / "bin" / "python"
    marker = venv / ".requirements-installed"
    requirements = PEERS_DIR / "requirements.txt"
    if python.exists() and marker.exists() and marker.read_text() == requirements.read_text():
        return python
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(requirements)], check=True)
    marker.write_text(requirements.read_text())
    return python


def _signal_job() -> ModuleType:
    """benchmarks/peers/signal_job.py, loaded here too (it needs only fastavro) for the expected windows."""
    spec = importlib.util.spec_from_file_location("fleetstream_bench_signal_job", PEERS_DIR / "signal_job.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- input -----------------------------------------------------------------------------------------------------


def make_input(samples: int, vehicles: int = 10, seed: int = 11, duplicate_rate: float = 0.02,
               invalid_rate: float = 0.01) -> tuple[list[tuple[bytes, bytes]], int]:
    """(key, value) messages in arrival order and their total sample count (see the module docstring)."""
    rng = random.Random(seed)
    channels = len(CHANNELS)
    batches = max(1, samples // (SAMPLES_PER_MESSAGE * vehicles * channels))
    start_ms = (int(time.time() * 1000) - 2 * 3_600_000) // 60_000 * 60_000
    messages: list[tuple[bytes, bytes]] = []
    previous: dict[tuple[int, int], bytes] = {}
    total = 0
    for b in range(batches):
        for v in range(vehicles):
            for c in range(channels):
                name, unit, typical, noise = CHANNELS[c]
                record: dict[str, Any] = {
                    "batch_id": f"peers-{v}-{c}-{b}", "source": "bench", "org_id": "7", "fleet_id": "42",
                    "vehicle_id": str(1001 + v), "device_id": str(51_001 + v), "name": name, "unit": unit,
                    "samples": [{"timestamp_ms": start_ms + (b * SAMPLES_PER_MESSAGE + i) * 10,
                                 "value": _value(rng, name, typical, noise, invalid_rate)}
                                for i in range(SAMPLES_PER_MESSAGE)],
                }
                key, value = record["vehicle_id"].encode(), codec.encode("signal_batch", record)
                messages.append((key, value))
                total += SAMPLES_PER_MESSAGE
                if (v, c) in previous and rng.random() < duplicate_rate:
                    messages.append((key, previous[(v, c)]))  # a redelivered older batch: all duplicates
                    total += SAMPLES_PER_MESSAGE
                previous[(v, c)] = value
    end_ms = start_ms + batches * SAMPLES_PER_MESSAGE * 10
    for v in range(vehicles):
        for c in range(channels):
            name, unit, typical, _ = CHANNELS[c]
            sentinel: dict[str, Any] = {
                "batch_id": f"peers-{v}-{c}-sentinel", "source": "bench", "org_id": "7", "fleet_id": "42",
                "vehicle_id": str(1001 + v), "device_id": str(51_001 + v), "name": name, "unit": unit,
                "samples": [{"timestamp_ms": end_ms + SENTINEL_GAP_MS, "value": typical}]}
            messages.append((sentinel["vehicle_id"].encode(), codec.encode("signal_batch", sentinel)))
            total += 1
    return messages, total


def _value(rng: random.Random, name: str, typical: float, noise: float, invalid_rate: float) -> float:
    if rng.random() < invalid_rate:
        return 25_000.0 if name == "EngineSpeed" and rng.random() < 0.5 else math.nan
    return round(typical + rng.gauss(0, noise), 3)


def expected_windows(messages: list[tuple[bytes, bytes]]) -> dict[WindowKey, Window]:
    job = _signal_job()
    states: dict[tuple[str, str], Any] = {}
    out: dict[WindowKey, Window] = {}
    now = job.now_ms()
    for key_bytes, value in messages:
        record = job.decode(value)
        key, channel = key_bytes.decode(), str(record["name"])
        times, values = job.valid_samples(record, now)
        state = states.setdefault((key, channel), job.ChannelState())
        for window in state.process(key, channel, times, values):
            out[(key, channel, window["window_start_ms"])] = window
    return out


# --- running one job ---------------------------------------------------------------------------------------------


def _load(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                         "compression.type": "lz4", "linger.ms": 20, "batch.size": 1_000_000,
                         "partitioner": KEY_PARTITIONER})
    for key, value in messages:
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(60):
        raise RuntimeError(f"loading {topic}: messages not acknowledged")


def _wait_for_group(bootstrap: str, group: str, alive: Callable[[], None], timeout_s: float = 180.0) -> None:
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive()
        try:
            description = admin.describe_consumer_groups([group])[group].result(timeout=10)
            if description.state == ConsumerGroupState.STABLE and any(
                    m.assignment.topic_partitions for m in description.members):
                return
        except Exception:  # the group does not exist yet
            pass
        time.sleep(0.3)
    raise TimeoutError(f"consumer group {group} was not stable within {timeout_s:.0f} s")


def _collect(bootstrap: str, topic: str, start: dict[int, int], parse: Callable[[bytes], Window | None],
             expected: set[WindowKey], alive: Callable[[], None], timeout_s: float) -> tuple[dict[WindowKey, Window],
                                                                                            float]:
    """Read windows until every expected one arrived; returns them and when the last one was received (epoch s).

    Receive time, not the message timestamp: Quix gives its outputs the input message's timestamp.
    """
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-collect-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, o) for p, o in start.items()])
    got: dict[WindowKey, Window] = {}
    last_received = 0.0
    deadline = time.monotonic() + timeout_s
    try:
        while not expected.issubset(got) and time.monotonic() < deadline:
            alive()
            for message in consumer.consume(num_messages=5000, timeout=0.5):
                value = message.value()
                if message.error() or value is None:
                    continue
                window = parse(value)
                if window is None:
                    continue
                wkey = (window["key"], window["channel"], int(window["window_start_ms"]))
                got[wkey] = window
                if wkey in expected:
                    last_received = time.time()
    finally:
        consumer.close()
    missing = expected - set(got)
    if missing:
        raise TimeoutError(f"{len(missing)} of {len(expected)} windows missing on {topic} after {timeout_s:.0f} s")
    return got, last_received


def _end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    from confluent_kafka import KafkaException

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-offsets"})
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
                return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
            except KafkaException:  # a new topic's leader is elected but not serving yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        consumer.close()


def _parse_faust(value: bytes) -> Window | None:
    record = codec.decode(value, "window_aggregate")
    return record if record["window_kind"] == "tumbling" else None


def _parse_json(value: bytes) -> Window | None:
    result: Window = json.loads(value)
    return result


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _run_worker(settings: Settings, messages: list[tuple[bytes, bytes]], expected: set[WindowKey],
                timeout_s: float) -> tuple[dict[WindowKey, Window], float]:
    from fleetstream.demo import Services

    bootstrap = settings.kafka.bootstrap_servers
    start = _end_offsets(bootstrap, "telemetry.windows")
    # A fresh app id per run: its own consumer group and table changelogs, so a run never inherits the
    # previous run's dedup state (which would take this run's samples for duplicates).
    settings = settings.model_copy(deep=True)
    settings.streams.app_id = f"bench-faust-{uuid.uuid4().hex[:8]}"
    services = Services(settings)
    services.start("worker", "worker")
    try:
        _wait_for_group(bootstrap, settings.streams.app_id, services.check)
        started = time.time()
        _load(bootstrap, "telemetry.signals", messages)
        got, last = _collect(bootstrap, "telemetry.windows", start, _parse_faust, expected, services.check, timeout_s)
        return got, last - started
    finally:
        services.stop()


def _run_peer(python: Path, script: str, bootstrap: str, messages: list[tuple[bytes, bytes]],
              expected: set[WindowKey], partitions: int, scratch: Path, timeout_s: float
              ) -> tuple[dict[WindowKey, Window], float]:
    from fleetstream.admin import ensure_topics

    run = uuid.uuid4().hex[:8]
    source, sink, group = f"bench.peers.{script}.in.{run}", f"bench.peers.{script}.out.{run}", f"bench-{script}-{run}"
    ensure_topics(bootstrap, [source, sink], partitions=partitions)
    command = [str(python), str(PEERS_DIR / f"{script}.py"), "--bootstrap", bootstrap, "--input", source,
               "--output", sink, "--group", group]
    if script == "quix_job":
        command += ["--state-dir", str(scratch / f"quix-state-{run}")]
    log_path = scratch / f"{script}-{run}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)

    def alive() -> None:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace").splitlines()[-20:]
            raise RuntimeError(f"{script} exited with {process.returncode}:\n" + "\n".join(tail))

    try:
        _wait_for_group(bootstrap, group, alive)
        started = time.time()
        _load(bootstrap, source, messages)
        got, last = _collect(bootstrap, sink, {p: 0 for p in range(partitions)}, _parse_json, expected, alive,
                             timeout_s)
        return got, last - started
    finally:
        _stop(process)


# --- comparing --------------------------------------------------------------------------------------------------


def compare(reference: dict[WindowKey, Window], other: dict[WindowKey, Window]) -> list[str]:
    """Differences between two sets of windows (empty: the same), at most 10 listed."""
    problems: list[str] = []
    if set(reference) != set(other):
        problems.append(f"window sets differ: {len(set(reference) - set(other))} missing, "
                        f"{len(set(other) - set(reference))} extra")
    for wkey in sorted(set(reference) & set(other)):
        a, b = reference[wkey], other[wkey]
        for name in ("count", "min", "max", "last", "p95"):
            if a[name] != b[name]:
                problems.append(f"{wkey} {name}: {a[name]!r} != {b[name]!r}")
        if not math.isclose(a["mean"], b["mean"], rel_tol=1e-9, abs_tol=0.0):
            problems.append(f"{wkey} mean: {a['mean']!r} != {b['mean']!r}")
        if len(problems) >= 10:
            break
    return problems


def bench_peers(bootstrap: str | None = None, samples: int = 1_000_000, repeats: int = 3,
                timeout_s: float = 600.0, jobs: tuple[str, ...] = ("faust", "quix", "plain")) -> dict[str, Any]:
    """Run each job `repeats` times on the same input; see the module docstring. `bootstrap` None = private broker."""
    from fleetstream.benchmarks.common import private_kafka

    python = ensure_peers_venv()
    messages, total_samples = make_input(samples)
    expected_map = expected_windows(messages)
    expected = set(expected_map)
    with tempfile.TemporaryDirectory(prefix="fleetstream-bench-peers-") as tmp:
        scratch = Path(tmp)
        if bootstrap is None:
            with private_kafka(scratch / "kafka") as private:
                return _bench(private, python, messages, total_samples, expected_map, expected, repeats, scratch,
                              timeout_s, jobs, reset_topics=True)
        return _bench(bootstrap, python, messages, total_samples, expected_map, expected, repeats, scratch,
                      timeout_s, jobs, reset_topics=False)


def _bench(bootstrap: str, python: Path, messages: list[tuple[bytes, bytes]], total_samples: int,
           expected_map: dict[WindowKey, Window], expected: set[WindowKey], repeats: int, scratch: Path,
           timeout_s: float, jobs: tuple[str, ...], reset_topics: bool) -> dict[str, Any]:
    from fleetstream.admin import create_topics, ensure_topics

    base = Settings()
    partitions = 3
    seconds: dict[str, list[float]] = {job: [] for job in jobs}
    outputs: dict[str, dict[WindowKey, Window]] = {}
    for run in range(repeats):
        for job in jobs:
            if job == "faust":
                # A fresh home and fresh pipeline topics per run: the worker's group and topics have fixed names.
                home = scratch / f"home-{run}"
                settings = base.model_copy(update={
                    "home": home,
                    "kafka": base.kafka.model_copy(update={"bootstrap_servers": bootstrap}),
                    "streams": base.streams.model_copy(update={"idle_flush_s": 3600.0}),
                })
                if reset_topics:  # only on the benchmark's own broker
                    _reset_pipeline_topics(settings)
                create_topics(settings.kafka, settings.topics)
                ensure_topics(bootstrap, [t.name for t in settings.topics.topics])  # waits for their leaders
                got, elapsed = _run_worker(settings, messages, expected, timeout_s)
            else:
                got, elapsed = _run_peer(python, f"{job}_job", bootstrap, messages, expected, partitions, scratch,
                                         timeout_s)
            seconds[job].append(elapsed)
            outputs.setdefault(job, {k: v for k, v in got.items() if k in expected})
    checks = {job: compare(expected_map, outputs[job]) for job in jobs}
    rates = {job: stat([total_samples / s for s in values]) for job, values in seconds.items()}
    report: dict[str, Any] = {
        "machine": machine_info(),
        "workload": {"input_messages": len(messages), "input_samples": total_samples,
                     "samples_per_message": SAMPLES_PER_MESSAGE, "partitions": partitions,
                     "windows_expected": len(expected), "repeats": repeats},
        "samples_per_s": rates,
        "outputs_equal": all(not problems for problems in checks.values()),
        "output_differences": {job: problems for job, problems in checks.items() if problems},
        "peer_versions": _peer_versions(python),
    }
    if "faust" in rates:
        report["streams_samples_per_s"] = rates["faust"].median
        if "quix" in rates:
            report["streams_vs_quix_ratio"] = rates["faust"].median / rates["quix"].median
        if "plain" in rates:
            report["streams_vs_plain_ratio"] = rates["faust"].median / rates["plain"].median
    return report


def _reset_pipeline_topics(settings: Settings) -> None:
    """Delete the worker's topics (only ever on the benchmark's own broker), so each run starts empty."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(settings.kafka.client())
    existing = [t for t in admin.list_topics(timeout=10).topics if not t.startswith("__")
                and not t.startswith("bench.")]
    if existing:
        for future in admin.delete_topics(existing, operation_timeout=30).values():
            with contextlib.suppress(Exception):
                future.result()
        deadline = time.monotonic() + 30
        while set(existing) & set(admin.list_topics(timeout=10).topics) and time.monotonic() < deadline:
            time.sleep(0.2)
    if os.path.exists(settings.home):
        shutil.rmtree(settings.home)


def _peer_versions(python: Path) -> dict[str, str]:
    code = ("import json, importlib.metadata as m; print(json.dumps({d: m.version(d) for d in "
            "('quixstreams', 'confluent-kafka', 'fastavro')}))")
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60)
    try:
        versions: dict[str, str] = json.loads(out.stdout.strip().splitlines()[-1])
        return versions
    except (ValueError, IndexError):
        return {}


def to_table(report: dict[str, Any]) -> str:
    rates = report["samples_per_s"]
    names = {"faust": "fleetstream worker (faust)", "quix": "Quix Streams 3.x job", "plain": "plain confluent-kafka"}
    rows = [[names[job], rate] for job, rate in rates.items()]
    w = report["workload"]
    notes = [f"outputs equal: {report['outputs_equal']} ({w['windows_expected']:,} tumbling windows compared)",
             f"{w['input_samples']:,} samples in {w['input_messages']:,} messages, {w['partitions']} partitions, "
             f"{w['repeats']} runs each; samples/s = input samples / (last window received - load start)",
             "the worker also makes .valid (2 Kafka hops), hopping windows, alerts and KPIs; peers do one hop",
             machine_line(report["machine"])]
    for key in ("streams_vs_quix_ratio", "streams_vs_plain_ratio"):
        if key in report:
            notes.insert(0, f"{key} = {report[key]:.2f}")
    return render_table("bench streams (peers): samples/s, median (min-max)", ["job", "samples/s"], rows, notes)


def main() -> None:
    import argparse

    from fleetstream.benchmarks.common import render_json

    parser = argparse.ArgumentParser(description="our worker vs Quix Streams vs a plain consume loop")
    parser.add_argument("--bootstrap", help="an existing broker nobody else uses (default: a private one)")
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = bench_peers(args.bootstrap, args.samples, args.repeats)
    print(render_json(report) if args.json else to_table(report))


if __name__ == "__main__":
    main()
