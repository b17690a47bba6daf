"""What every benchmark shares: the machine and versions it ran on, repeat-and-median, table and JSON output.

A figure without its context is not comparable, so every report carries `machine` (cores, memory, CPU model,
Python, client library versions, Kafka version). A measurement is repeated (`repeat`), and reported as its
median with min and max (`Stat`), never as one lucky run. `private_kafka` gives a benchmark a broker of
its own (the local stack's jars on free ports), because benchmarks that start the worker or reset topics
must not share a broker, its consumer groups or its topics with anyone else.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fleetstream.config import Settings
    from fleetstream.stack import LocalCluster

__all__ = [
    "CHANNELS",
    "SAMPLES_PER_MESSAGE",
    "Stat",
    "machine_info",
    "machine_line",
    "private_kafka",
    "render_json",
    "render_table",
    "repeat",
    "signal_batch",
    "stat",
]


@dataclass(frozen=True)
class Stat:
    """Median, min and max of repeated measurements of one figure (the raw values kept for the JSON)."""

    median: float
    min: float
    max: float
    values: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"median": self.median, "min": self.min, "max": self.max, "runs": list(self.values)}

    def cell(self, fmt: str = ",.0f") -> str:
        """`median (min-max)` for a table."""
        return f"{self.median:{fmt}} ({self.min:{fmt}}-{self.max:{fmt}})"


def stat(values: Sequence[float]) -> Stat:
    if not values:
        raise ValueError("no measurements")
    return Stat(statistics.median(values), min(values), max(values), tuple(values))


def repeat(measure: Callable[[int], dict[str, float]], repeats: int, warmup: int = 0) -> dict[str, Stat]:
    """Run `measure(run_index)` `warmup + repeats` times; each run returns named figures.

    Warm-up runs (index < 0) are discarded. Returns one `Stat` per figure name over the counted runs.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    runs: list[dict[str, float]] = []
    for index in range(-warmup, repeats):
        figures = measure(index)
        if index >= 0:
            runs.append(figures)
    return {name: stat([run[name] for run in runs]) for name in runs[0]}


# --- machine and versions ------------------------------------------------------------------------------------


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _java_version() -> str | None:
    java = shutil.which("java")
    if java is None:
        return None
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = (out.stderr or out.stdout).splitlines()
    return first[0].strip() if first else None


def machine_info(kafka_version: str | None = None) -> dict[str, Any]:
    """Cores, memory, CPU, load, and the versions of everything on the measured path."""
    import confluent_kafka

    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    if kafka_version is None:
        from fleetstream.config import StackSettings

        kafka_version = StackSettings().kafka_version
    return {
        "cores": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "cpu": _cpu_model(),
        "load_avg_1_5_15": load,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": {
            "fleetstream": _version("fleetstream"),
            "confluent_kafka": confluent_kafka.version()[0],
            "librdkafka": confluent_kafka.libversion()[0],
            "fastavro": _version("fastavro"),
            "faust_streaming": _version("faust-streaming"),
            "numpy": _version("numpy"),
            "kafka": kafka_version,
            "java": _java_version(),
        },
    }


# --- a broker of our own ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def private_kafka(scratch: Path | None = None, timeout_s: float = 120.0) -> Iterator[str]:
    """A single-node broker from the local stack's jars on free ports, for the block; yields its bootstrap.

    Used when a benchmark needs a cluster nobody else writes to (the worker's consumer group and topics have
    fixed names). The broker and its files are removed afterwards.
    """
    from fleetstream.stack import KafkaStack
    from fleetstream.testing import OWNER_FILE, local_stack_settings

    with contextlib.ExitStack() as cleanup:
        if scratch is None:
            scratch = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="fleetstream-bench-kafka-")))
        scratch.mkdir(parents=True, exist_ok=True)
        (scratch / OWNER_FILE).write_text(f"{os.getpid()}\n")  # lets reap_orphaned_stacks stop a leaked broker
        stack = KafkaStack(local_stack_settings(scratch / "stack"))
        status = stack.up(timeout_s=timeout_s)
        try:
            yield status.bootstrap
        finally:
            stack.down()


@contextlib.contextmanager
def private_pipeline_settings(base: Settings, name: str) -> Iterator[Settings]:
    """`base` on a private broker and a temporary home with an embedded ClickHouse, all removed afterwards: what a
    whole-pipeline benchmark (`bench e2e`, `bench soak`) runs on, so the peers' or a demo's backlog is not measured."""
    with tempfile.TemporaryDirectory(prefix=f"fleetstream-bench-{name}-") as tmp, \
            private_kafka(Path(tmp) / "kafka") as bootstrap:
        yield _pipeline_settings(base, Path(tmp), bootstrap)


@contextlib.contextmanager
def private_cluster_pipeline(base: Settings, name: str, brokers: int) -> Iterator[tuple[Settings, LocalCluster]]:
    """Like `private_pipeline_settings` on a private local cluster of `brokers` KRaft nodes, returned too so that
    the benchmark can SIGKILL and restart single brokers (`cluster.nodes`)."""
    from fleetstream.testing import local_cluster

    with tempfile.TemporaryDirectory(prefix=f"fleetstream-bench-{name}-") as tmp, \
            local_cluster(Path(tmp) / "kafka", brokers=brokers) as cluster:
        yield _pipeline_settings(base, Path(tmp), cluster.bootstrap), cluster


def _pipeline_settings(base: Settings, tmp: Path, bootstrap: str) -> Settings:
    return base.model_copy(update={
        "home": tmp / "home",
        "kafka": base.kafka.model_copy(update={"bootstrap_servers": bootstrap}),
        "clickhouse": base.clickhouse.model_copy(update={"dsn": None}),
    })


# --- output ---------------------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, Stat):
        return value.to_dict()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return round(value, 6)
    return value


def render_json(report: dict[str, Any]) -> str:
    """The report as one JSON object (Stats become {median, min, max, runs})."""
    return json.dumps(_plain(report), indent=2, sort_keys=False)


def render_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]], notes: Sequence[str] = ()) -> str:
    """An aligned text table: first column left-aligned, the rest right-aligned; Stats as `median (min-max)`."""
    cells = [[c.cell() if isinstance(c, Stat) else (f"{c:,.3g}" if isinstance(c, float) and abs(c) < 10
                                                    else f"{c:,.0f}" if isinstance(c, float) else str(c))
              for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths,
                                                                                             strict=True)))

    out = [title, line(header), "-" * (sum(widths) + 2 * (len(widths) - 1))]
    out += [line(r) for r in cells]
    out += [f"  {n}" for n in notes]
    return "\n".join(out) + "\n"


def machine_line(machine: dict[str, Any]) -> str:
    """One line of context for a table: cores, memory, load and the main versions."""
    v = machine["versions"]
    return (f"machine: {machine['cores']} cores, {machine['memory_gb']} GB, load {machine['load_avg_1_5_15']}; "
            f"python {machine['python']}, confluent-kafka {v['confluent_kafka']} (librdkafka {v['librdkafka']}), "
            f"fastavro {v['fastavro']}, kafka {v['kafka']}")


# --- workload ---------------------------------------------------------------------------------------------------

SAMPLES_PER_MESSAGE = 100
"""Samples per Kafka message, as the producers batch them (DESIGN.md: one message carries a batch)."""

CHANNELS: tuple[tuple[str, str, float, float], ...] = (  # name, unit, typical value, noise
    ("EngineSpeed", "rpm", 2400.0, 600.0),
    ("VehicleSpeed", "mph", 45.0, 15.0),
    ("ThrottlePosition", "%", 30.0, 10.0),
    ("MAP", "kPa", 60.0, 15.0),
    ("IntakeAirTemp", "degF", 75.0, 3.0),
    ("AFR", "AFR", 14.7, 0.3),
    ("CoolantTemp", "degF", 190.0, 4.0),
)


def signal_batch(vehicle: int, channel: int, start_ms: int, samples: int, step_ms: int, rng: Any,
                 seq: int = 0) -> dict[str, Any]:
    """One signal_batch record like the vehicle simulator's: `samples` noisy values of one channel."""
    name, unit, typical, noise = CHANNELS[channel % len(CHANNELS)]
    vehicle_id = str(1001 + vehicle)
    return {
        "batch_id": f"bench-{vehicle_id}-{name}-{start_ms}-{seq}", "source": "bench", "org_id": "7",
        "fleet_id": "42", "vehicle_id": vehicle_id, "device_id": str(51_001 + vehicle), "name": name, "unit": unit,
        "message_name": "EEC1", "network_name": "CAN1", "ecu_name": "ECM", "arb_id": "", "param_type": "RAW",
        "signal_type": "SIGNAL",
        "samples": [{"timestamp_ms": start_ms + i * step_ms, "value": round(typical + rng.gauss(0, noise), 3)}
                    for i in range(samples)],
    }
