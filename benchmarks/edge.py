"""The edge benchmark: what one agent costs on a gateway, and how fast it catches up after an outage.

Two measurements against a real broker (issue 7's targets: under 80 MB RSS and under 10 % of one core at
1,000 samples/s):

- steady state: one `fleetstream agent run` *process* with a `counter` source at `rate` samples/s, batched as
  the dyno sources batch (one record per channel every `batch_interval_s`). Every second the bench reads the
  process's VmRSS from /proc/<pid>/status and its utime+stime from /proc/<pid>/stat; it reports the medians
  of those one-second samples (CPU as % of one core), after a warm-up that is not counted.
- drain: `outage_samples` (default one hour at 1,000 samples/s) go through an agent's own `emit` into a spool
  while no broker is used (same encoding, batching and fsync per batch as a live source); then an agent with
  the broker up starts on that spool and the bench times how long until the spool is empty → samples/s.

Both check their result: the topic must hold as many records as the agent spooled.
`python -m fleetstream.benchmarks.edge [--rate --seconds --outage-samples --json]` runs it (`--private-broker` starts a
broker of its own on free ports).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

__all__ = ["bench_edge", "measure_drain", "measure_steady_state", "to_table"]

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_WARMUP_S = 3.0
_STATION = "bench-edge"


def bench_edge(bootstrap: str, rate: int = 1000, seconds: float = 30.0, outage_samples: int = 3_600_000, *,
               channels: int = 10, batch_interval_s: float = 0.25, work_dir: Path | None = None) -> dict[str, Any]:
    """Run both measurements; `edge_rss_mb`, `edge_cpu_pct`, `edge_drain_samples_per_s` and their details."""
    with _work_dir(work_dir) as root:
        steady = measure_steady_state(bootstrap, root / "steady", rate=rate, seconds=seconds, channels=channels,
                                      batch_interval_s=batch_interval_s)
        drain = measure_drain(bootstrap, root / "drain", samples=outage_samples, rate=rate, channels=channels,
                              batch_interval_s=batch_interval_s)
    return {
        "edge_rss_mb": steady["rss_mb_median"],
        "edge_cpu_pct": steady["cpu_pct_median"],
        "edge_drain_samples_per_s": drain["drain_samples_per_s"],
        "targets": {"edge_rss_mb": 80.0, "edge_cpu_pct": 10.0},
        "steady_state": steady,
        "drain": drain,
        "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]},
    }


@contextmanager
def _work_dir(work_dir: Path | None) -> Iterator[Path]:
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
        yield work_dir
        return
    root = Path(tempfile.mkdtemp(prefix="fleetstream-bench-edge-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _bench_topic(bootstrap: str, what: str) -> str:
    from fleetstream.admin import ensure_topics

    topic = f"bench.edge-{what}.{uuid.uuid4().hex[:10]}"
    ensure_topics(bootstrap, [topic], partitions=1)
    return topic


def _delete_topic(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics([topic], operation_timeout=30).values():
        future.result()


def _topic_records(bootstrap: str, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}"})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
        return int(high - low)
    finally:
        consumer.close()


def _proc_sample(pid: int) -> tuple[float, float]:
    """(VmRSS in MB, utime+stime in seconds) of a live process."""
    rss_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
            break
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may hold spaces; fields after it are fixed
    cpu_ticks = int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of proc(5)
    return rss_kb / 1024, cpu_ticks / _CLOCK_TICKS


def measure_steady_state(bootstrap: str, work_dir: Path, *, rate: int = 1000, seconds: float = 30.0,
                         channels: int = 10, batch_interval_s: float = 0.25) -> dict[str, Any]:
    """RSS and CPU of one agent process publishing `rate` samples/s, sampled every second (medians)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    topic = _bench_topic(bootstrap, "steady")
    config_path = work_dir / "agent.yaml"
    config_path.write_text(yaml.safe_dump({
        "station_id": _STATION, "spool_dir": str(work_dir / "spool"), "metrics_port": None,
        "topic_overrides": {"dyno.samples": topic},
        "sources": [{"name": "counter", "type": "counter",
                     "options": {"rate_hz": rate, "channels": channels, "batch_interval_s": batch_interval_s}}]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETSTREAM_KAFKA__")}
    env.update({"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "FLEETSTREAM_LOG_LEVEL": "WARNING"})
    process = subprocess.Popen([sys.executable, "-m", "fleetstream", "agent", "run", "--config", str(config_path)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rss: list[float] = []
    cpu: list[float] = []
    try:
        time.sleep(_WARMUP_S)
        if process.poll() is not None:
            raise RuntimeError(f"the agent exited during warm-up: {process.communicate()[1][-2000:]}")
        wall, (_, busy) = time.monotonic(), _proc_sample(process.pid)
        started_wall, started_busy = wall, busy
        deadline = wall + seconds
        while time.monotonic() < deadline:
            time.sleep(1.0)
            now, (rss_mb, now_busy) = time.monotonic(), _proc_sample(process.pid)
            rss.append(rss_mb)
            cpu.append(100 * (now_busy - busy) / (now - wall))
            wall, busy = now, now_busy
        overall_cpu = 100 * (busy - started_busy) / (wall - started_wall)
        peak_kb = next(int(line.split()[1]) for line in Path(f"/proc/{process.pid}/status").read_text().splitlines()
                       if line.startswith("VmHWM:"))
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    if process.returncode != 0:
        raise RuntimeError(f"the agent failed (exit {process.returncode}): {err[-2000:]}")
    status = json.loads(out[out.index("{"):])
    in_topic = _topic_records(bootstrap, topic)
    _delete_topic(bootstrap, topic)
    spool = status["spool"]
    if spool["pending_bytes"] or in_topic != spool["published_records"]:
        raise RuntimeError(f"the agent did not deliver everything: {in_topic} records in the topic, status {spool}")
    return {
        "rate_samples_per_s": rate,
        "channels": channels,
        "batch_interval_s": batch_interval_s,
        "measured_s": seconds,
        "rss_mb_median": round(statistics.median(rss), 1),
        "rss_mb_max": round(max(rss), 1),
        "rss_mb_peak_hwm": round(peak_kb / 1024, 1),
        "cpu_pct_median": round(statistics.median(cpu), 2),
        "cpu_pct_max": round(max(cpu), 2),
        "cpu_pct_overall": round(overall_cpu, 2),
        "spooled_samples": spool["spooled_samples"],
        "published_samples": spool["published_samples"],
        "published_records": spool["published_records"],
        "records_in_topic": in_topic,
    }


def measure_drain(bootstrap: str, work_dir: Path, *, samples: int = 3_600_000, rate: int = 1000,
                  channels: int = 10, batch_interval_s: float = 0.25, timeout_s: float = 1800.0) -> dict[str, Any]:
    """Spool `samples` through an agent's emit with no broker in use, then time a started agent's drain."""
    from fleetstream.config import KafkaSettings
    from fleetstream.producers.agent import Agent, AgentConfig
    from fleetstream.producers.sources import CounterStream

    work_dir.mkdir(parents=True, exist_ok=True)
    topic = _bench_topic(bootstrap, "drain")
    config = AgentConfig.model_validate({
        "station_id": _STATION, "spool_dir": str(work_dir / "spool"), "metrics_port": None,
        "spool_budget_mb": 4096, "topic_overrides": {"dyno.samples": topic},
        "sources": [{"name": "backlog", "type": "counter"}]})
    stream = CounterStream(_STATION, rate_hz=rate, batch_interval_s=batch_interval_s, channels=channels,
                           epoch_ms=time.time_ns() // 1_000_000 - samples * 1000 // rate)
    batches = -(-samples // stream.batch_samples)

    # Filling: the agent's own emit (encode, append, fsync per batch), but never started: no broker involved.
    offline = Agent(config, KafkaSettings(bootstrap_servers="127.0.0.1:9"), sources={"backlog": _idle_source})
    emit = offline.emit_for("backlog")
    fill_started = time.monotonic()
    for k in range(batches):
        emit([("dyno.samples", _STATION, r) for r in stream.batch(k)])
    fill_s = time.monotonic() - fill_started
    spooled = offline.spool.stats.spooled_samples
    spooled_records = offline.spool.stats.spooled_records
    spool_bytes = offline.spool.pending_bytes()
    offline.spool.close()

    agent = Agent(config, KafkaSettings(bootstrap_servers=bootstrap), sources={})
    started = time.monotonic()
    agent.start()
    drained = False
    while time.monotonic() - started < timeout_s:
        if agent.spool.pending_bytes() == 0:
            drained = True
            break
        time.sleep(0.02)
    drain_s = time.monotonic() - started
    published = agent.spool.stats.published_samples
    agent.stop()
    in_topic = _topic_records(bootstrap, topic)
    _delete_topic(bootstrap, topic)
    if not drained or published != spooled or in_topic != spooled_records:
        raise RuntimeError(f"drain incomplete after {drain_s:.1f} s: {published} of {spooled} samples published, "
                           f"{in_topic} of {spooled_records} records in the topic")
    return {
        "outage_samples": spooled,
        "outage_records": spooled_records,
        "spool_mb": round(spool_bytes / 1e6, 1),
        "fill_s": round(fill_s, 2),
        "fill_samples_per_s": round(spooled / fill_s),
        "drain_s": round(drain_s, 2),
        "drain_samples_per_s": round(spooled / drain_s),
        "drain_records_per_s": round(spooled_records / drain_s),
        "records_in_topic": in_topic,
    }


def _idle_source(emit: Any, stop: Any) -> None:
    """The filler agent is never started; its one source only gives `emit_for` a name to count under."""


def to_table(result: dict[str, Any]) -> str:
    """The figures as a plain-text table, targets beside them."""
    steady, drain = result["steady_state"], result["drain"]
    targets = result["targets"]
    rows = [
        ("edge agent RSS (median)", f"{result['edge_rss_mb']:.1f} MB",
         f"< {targets['edge_rss_mb']:.0f} MB", "ok" if result["edge_rss_mb"] < targets["edge_rss_mb"] else "MISSED"),
        ("edge agent CPU (median, 1 core)", f"{result['edge_cpu_pct']:.2f} %",
         f"< {targets['edge_cpu_pct']:.0f} %", "ok" if result["edge_cpu_pct"] < targets["edge_cpu_pct"] else "MISSED"),
        ("drain after outage", f"{result['edge_drain_samples_per_s']:,} samples/s", "", ""),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{name:<{width}}  {value:>22}  {target:>8}  {verdict}" for name, value, target, verdict in rows]
    lines += [
        "",
        f"steady state: {steady['rate_samples_per_s']:,} samples/s in {steady['channels']} channels every "
        f"{steady['batch_interval_s']} s, {steady['measured_s']:.0f} s measured after {_WARMUP_S:.0f} s warm-up; "
        f"RSS max {steady['rss_mb_max']} MB (VmHWM {steady['rss_mb_peak_hwm']} MB), CPU max "
        f"{steady['cpu_pct_max']} %, overall {steady['cpu_pct_overall']} %; "
        f"{steady['published_samples']:,} samples published, {steady['records_in_topic']:,} records in the topic",
        f"drain: {drain['outage_samples']:,} samples in {drain['outage_records']:,} records ({drain['spool_mb']} MB "
        f"spooled in {drain['fill_s']} s) drained in {drain['drain_s']} s = "
        f"{drain['drain_records_per_s']:,} records/s",
        f"machine: {result['machine']['cores']} cores, Python {result['machine']['python']}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fleetstream.benchmarks.edge", description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default: the configured ones)")
    parser.add_argument("--private-broker", action="store_true", help="start a broker of its own on free ports")
    parser.add_argument("--rate", type=int, default=1000, help="samples/s of the steady-state agent")
    parser.add_argument("--seconds", type=float, default=30.0, help="steady-state measurement time")
    parser.add_argument("--outage-samples", type=int, default=3_600_000, help="samples spooled before the drain")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)

    from fleetstream.config import load_settings

    settings = load_settings()
    if args.private_broker:
        from fleetstream.stack import KafkaStack
        from fleetstream.testing import local_stack_settings

        with tempfile.TemporaryDirectory(prefix="fleetstream-bench-broker-") as home:
            stack = KafkaStack(local_stack_settings(Path(home), settings))
            stack.up()
            try:
                result = bench_edge(stack.bootstrap, args.rate, args.seconds, args.outage_samples)
            finally:
                stack.down()
    else:
        result = bench_edge(args.bootstrap or settings.kafka.bootstrap_servers, args.rate, args.seconds,
                            args.outage_samples)
    print(json.dumps(result, indent=2) if args.json else to_table(result))


if __name__ == "__main__":
    main()
