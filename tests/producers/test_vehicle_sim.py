"""The vehicle simulator: repeatable values for a seed, batch ids unique across runs."""

from __future__ import annotations

from typing import Any

from fleetstream.producers.vehicle_sim import VehicleFleetSimulator

NOW_MS = 1_790_000_000_000


def _records(simulator: VehicleFleetSimulator) -> list[dict[str, Any]]:
    return [r for tick in range(5) for _, _, r in simulator.tick(NOW_MS + tick * 500) if isinstance(r, dict)]


def test_two_runs_with_the_same_seed_repeat_the_values_but_never_a_batch_id() -> None:
    first = _records(VehicleFleetSimulator(vehicles=2, first_vehicle_id=1001, seed=7))
    second = _records(VehicleFleetSimulator(vehicles=2, first_vehicle_id=1001, seed=7))
    other_fleet = _records(VehicleFleetSimulator(vehicles=2, first_vehicle_id=2001, seed=7))
    assert [r.get("samples") for r in first] == [r.get("samples") for r in second]
    ids = [[r["batch_id"] for r in run] for run in (first, second, other_fleet)]
    assert all(len(set(run)) == len(run) for run in ids)
    assert not set(ids[0]) & set(ids[1]) and not set(ids[0]) & set(ids[2])
