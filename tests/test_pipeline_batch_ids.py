"""Issue 12: two `fleetstream simulate vehicles` runs with the same seed are both stored.

The simulator seeds its values; its batch ids used to come from the same seeded generator, so the second run
(other vehicles) repeated the first run's ids and the sink skipped every record of it as a re-sent copy. Both
runs go through the real broker, `fleetstream worker` and `fleetstream sink clickhouse`; every valid sample
either run produced must be stored, and nothing dead-lettered as a batch id conflict.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest

from fleetstream.topics import sample_count
from tests.pipeline import Pipeline, TopicReader, pipeline  # noqa: F401  (pipeline is a fixture)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _simulate(p: Pipeline, first_vehicle_id: int) -> None:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": p.bootstrap}
    env.pop("FLEETSTREAM_CONFIG", None)
    subprocess.run([sys.executable, "-m", "fleetstream", "simulate", "vehicles", "--seconds", "3", "--vehicles", "2",
                    "--bad-sample-rate", "0", "--first-vehicle-id", str(first_vehicle_id)],
                   env=env, check=True, capture_output=True, timeout=120)


def test_two_simulator_runs_with_the_same_seed_are_both_stored(pipeline: Pipeline) -> None:  # noqa: F811
    first = random.randrange(100_000, 900_000, 10)  # this session's vehicles only
    vehicles = [str(v) for v in (first, first + 1, first + 5, first + 6)]
    reader = TopicReader(pipeline.settings.kafka, ["telemetry.signals.valid"])
    _simulate(pipeline, first)
    _simulate(pipeline, first + 5)
    try:
        records = reader.read_until(lambda rs: {r["vehicle_id"] for *_, r in rs} >= set(vehicles), timeout_s=90)
    finally:
        reader.close()
    valid = {v: sum(sample_count("signal_batch", r) for *_, r in records if r["vehicle_id"] == v) for v in vehicles}
    assert all(valid.values()), valid

    stored = pipeline.wait_for_rows(
        "SELECT vehicle_id, ts, channel FROM fleetstream.samples WHERE vehicle_id IN {v:Array(String)}",
        {"v": vehicles}, expected=sum(valid.values()), timeout_s=120)
    per_vehicle = {v: sum(1 for row in stored if row["vehicle_id"] == v) for v in vehicles}
    assert per_vehicle == valid
    conflicts = pipeline.rows("SELECT count() AS n FROM fleetstream.dead_letters WHERE error_code = "
                              "'batch_id_conflict' AND key IN {v:Array(String)}", {"v": vehicles})
    assert conflicts == [{"n": 0}]
