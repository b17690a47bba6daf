"""Smoke tests of the benchmark harnesses at tiny sizes: they run on a real broker, report the named figures,
and the peers' outputs are checked equal to ours (and a wrong output is caught)."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest

from fleetstream.benchmarks.common import Stat, render_json, repeat, stat

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_repeat_reports_median_min_and_max_of_counted_runs():
    values = iter([100.0, 3.0, 1.0, 2.0])  # the first is the warm-up
    figures = repeat(lambda _: {"x": next(values)}, repeats=3, warmup=1)
    assert figures["x"] == Stat(2.0, 1.0, 3.0, (3.0, 1.0, 2.0))
    assert '"median": 2.0' in render_json({"x": stat([2.0])})


def test_bench_produce_reports_ratio_and_all_three_paths(kafka_bootstrap):
    from fleetstream.benchmarks.produce import bench_produce, to_table

    report = bench_produce(kafka_bootstrap, samples=20_000, repeats=1)
    assert report["produce_vs_raw_ratio"] > 0
    for name in ("edge_samples_per_s", "raw_samples_per_s", "perf_test_samples_per_s"):
        assert report["figures"][name].median > 0
    assert report["machine"]["cores"] >= 1 and report["workload"]["mean_message_bytes"] > 0
    assert "edge / raw" in to_table(report)


def test_peers_compute_the_same_windows_as_the_worker():
    from fleetstream.benchmarks.peers_bench import bench_peers, compare

    report = bench_peers(None, samples=20_000, repeats=1, timeout_s=240)
    assert report["outputs_equal"], report["output_differences"]
    assert report["workload"]["windows_expected"] > 0
    for key in ("streams_samples_per_s", "streams_vs_quix_ratio", "streams_vs_plain_ratio"):
        assert report[key] > 0
    window = {"count": 3, "min": 1.0, "max": 3.0, "mean": 2.0, "last": 3.0, "p95": 3.0}
    assert compare({("k", "c", 0): window}, {("k", "c", 0): {**window, "mean": 2.0 * (1 + 1e-12)}}) == []
    assert compare({("k", "c", 0): window}, {("k", "c", 0): {**window, "p95": 2.0}})
    assert compare({("k", "c", 0): window}, {})


def test_bench_e2e_measures_latency_and_a_sustained_rate(kafka_bootstrap):
    from fleetstream.benchmarks.e2e import bench_e2e
    from fleetstream.config import Settings

    with tempfile.TemporaryDirectory() as tmp:
        base = Settings()
        settings = base.model_copy(update={
            "home": Path(tmp) / "home",
            "kafka": base.kafka.model_copy(update={"bootstrap_servers": kafka_bootstrap}),
        })
        report = bench_e2e(settings, rate=5_000, seconds=6, warmup_s=1, rates=(5_000,), step_seconds=6)
    latency = report["latency"]
    assert latency["batches_measured"] > 0
    assert 0 < latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"]
    assert math.isfinite(latency["p99_ms"])
    assert latency["batches_traced"] > 0 and set(latency["stages"]) == {"edge_to_broker", "worker", "sink"}
    # the stages of a batch add up to its total (less the query's own time), so none exceeds the total's p99
    assert all(0 <= stage["p50_ms"] <= latency["p99_ms"] for stage in latency["stages"].values())
    assert report["steps"] and "sustained_samples_per_s" in report


def test_soak_counts_a_broker_recovered_only_once_every_replica_is_in_sync_again():
    from types import SimpleNamespace

    from confluent_kafka import KafkaException

    from fleetstream.benchmarks.soak import _replicas_complete

    def consumer(*isrs: list[int]) -> SimpleNamespace:
        partitions = {i: SimpleNamespace(error=None, replicas=[1, 2, 3], isrs=isr) for i, isr in enumerate(isrs)}
        metadata = SimpleNamespace(topics={"telemetry.signals": SimpleNamespace(partitions=partitions)})
        return SimpleNamespace(list_topics=lambda timeout: metadata)

    def unreachable(timeout: float) -> None:
        raise KafkaException("all brokers down")

    assert _replicas_complete(consumer([1, 2, 3], [3, 1, 2]))
    assert not _replicas_complete(consumer([1, 2, 3], [1, 3]))  # node 2 restarted but not caught up yet
    assert not _replicas_complete(SimpleNamespace(list_topics=unreachable))


def test_soak_table_names_the_brokers_killed():
    from fleetstream.benchmarks.soak import to_table

    machine = {"cores": 2, "memory_gb": 8, "load_avg_1_5_15": [1, 2, 3],
               "versions": {"confluent_kafka": "x", "librdkafka": "y", "fastavro": "z", "kafka": "4"},
               "python": "3.12"}
    report = {"machine": machine, "kills": [{"part": "broker-2", "at_s": 61.0, "recovery_s": 12.5}],
              "soak_samples": 100, "soak_lost": 0, "soak_duplicated": 0, "soak_recovery_p50_s": 12.5,
              "soak_recovery_max_s": 12.5,
              "workload": {"brokers": 3, "minutes": 1, "rate_samples_per_s": 10, "kill_every_s": 60, "seed": 1}}
    table = to_table(report)
    assert "brokers of 3" in table and "kill 1: broker-2" in table and "12.5 s" in table
