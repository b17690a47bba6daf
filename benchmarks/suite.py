"""`fleetstream bench all`: every benchmark in one run, and the named figures runs are compared by.

Each part keeps its own report (with its repeats, medians, min and max); this module only runs them in turn and
lifts the figures the issue names into one flat object. Produce and edge run on the given broker; the streams
comparison and the end-to-end run each get a private broker, because both drive consumer groups and topics
with fixed names and a backlog left by one would be measured by the next.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fleetstream.benchmarks.common import machine_info, render_json
from fleetstream.config import Settings

__all__ = ["FIGURES", "bench_all", "to_table"]

log = logging.getLogger(__name__)

FIGURES = (
    "produce_vs_raw_ratio", "streams_samples_per_s", "streams_vs_quix_ratio", "streams_vs_plain_ratio",
    "sink_rows_per_s_100k", "e2e_p50_ms_at_50k", "e2e_p99_ms_at_50k", "sustained_samples_per_s", "edge_rss_mb",
    "edge_cpu_pct", "edge_drain_samples_per_s",
)


def bench_all(settings: Settings, bootstrap: str, quick: bool = False) -> dict[str, Any]:
    """Run produce, streams (with the peers), sink, e2e and edge; `quick` shrinks every workload for a smoke run."""
    from fleetstream.benchmarks.e2e import bench_e2e_private
    from fleetstream.benchmarks.edge import bench_edge
    from fleetstream.benchmarks.peers_bench import bench_peers
    from fleetstream.benchmarks.produce import bench_produce
    from fleetstream.benchmarks.sink import bench_sink

    parts: dict[str, Callable[[], dict[str, Any]]] = {
        "produce": lambda: bench_produce(bootstrap, samples=200_000 if quick else 2_000_000,
                                         repeats=1 if quick else 3, settings=settings),
        "streams": lambda: bench_peers(None, samples=100_000 if quick else 1_000_000, repeats=1 if quick else 3),
        "sink": lambda: bench_sink(batch_sizes=(1_000, 10_000, 100_000), repeats=1 if quick else 3),
        "e2e": lambda: bench_e2e_private(settings, quick=quick),
        "edge": lambda: bench_edge(bootstrap, seconds=10 if quick else 30,
                                   outage_samples=360_000 if quick else 3_600_000),
    }
    reports: dict[str, dict[str, Any]] = {}
    for name, run in parts.items():
        try:
            reports[name] = run()
        except Exception as exc:  # one part failing must not throw away the others' figures
            log.exception("bench %s failed", name)
            reports[name] = {"error": f"{type(exc).__name__}: {exc}"}
    figures = {key: None for key in FIGURES}
    for report in reports.values():
        figures.update({key: report[key] for key in FIGURES if report.get(key) is not None})
    sink_100k = next((r for r in reports["sink"].get("results", []) if r["batch_rows"] == 100_000), None)
    if sink_100k is not None:
        figures["sink_rows_per_s_100k"] = sink_100k["sink"]["median_rows_s"]
    failed = {name: report["error"] for name, report in reports.items() if "error" in report}
    return {"machine": machine_info(settings.stack.kafka_version), "quick": quick, **figures, "failed": failed,
            "parts": reports}


def to_table(report: dict[str, Any]) -> str:
    lines = ["figure                          value"]
    for key in FIGURES:
        value = report.get(key)
        lines.append(f"{key:30s}  {'n/a' if value is None else f'{value:,.3f}' if value < 10 else f'{value:,.0f}'}")
    lines += [f"FAILED {name}: {error}" for name, error in report.get("failed", {}).items()]
    return "\n".join(lines)


def as_json(report: dict[str, Any]) -> str:
    return render_json(report)
