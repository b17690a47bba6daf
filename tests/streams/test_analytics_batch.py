"""The analytics agent's batch: bad messages are dead-lettered, and a stage that raises costs only its message."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from fleetstream.schemas import codec
from fleetstream.streams.analytics import Analyzer, Live
from fleetstream.streams.app import _analyze_events
from fleetstream.topics import record_type_of
from tests.streams.test_analytics import SIGNALS, make_config, signal


def _event(offset: int, value: bytes) -> Any:
    return SimpleNamespace(message=SimpleNamespace(topic=SIGNALS, partition=0, offset=offset, key=b"v1", value=value))


def _events() -> list[Any]:
    start = int(time.time() * 1000) - 10_000
    good = [codec.encode("signal_batch", signal("v1", "rpm", [(start + 100 * i + j, 1.0 + j) for j in range(100)]))
            for i in range(3)]
    return [_event(0, good[0]), _event(1, good[1]), _event(2, b"\xc3\x01 not avro"), _event(3, good[2])]


def _letters(outputs: list[Any]) -> dict[int, dict[str, Any]]:
    decoded = [codec.decode(v, record_type_of(t)) for t, _, v in outputs if t.startswith("dlq.")]
    return {d["offset"]: d for d in decoded}


def _no_live(*stores: Any) -> bool:
    return not any(isinstance(v, Live) for store in stores for v in store.changes.values())


def test_a_malformed_message_is_dead_lettered_and_the_batch_goes_on() -> None:
    outputs, channels, keys = _analyze_events(Analyzer(make_config()), _events(), {}, {})
    letters = _letters(outputs)
    assert list(letters) == [2]
    assert (letters[2]["stage"], letters[2]["error_code"]) == ("analytics", "malformed")
    assert keys.changes["v1"]["samples_total"] == 300
    assert _no_live(channels, keys)


def test_a_stage_that_raises_costs_only_its_message(monkeypatch: pytest.MonkeyPatch) -> None:
    analyzer = Analyzer(make_config())
    process = analyzer.process

    def failing(topic: str, partition: int, offset: int, *args: Any, **kwargs: Any) -> Any:
        outputs = process(topic, partition, offset, *args, **kwargs)
        if offset == 1:
            raise RuntimeError("a bug")  # after its stages took the samples in: they are half-updated
        return outputs

    monkeypatch.setattr(analyzer, "process", failing)
    stores: tuple[dict[str, Any], dict[str, Any]] = ({}, {})
    outputs, channels, keys = _analyze_events(analyzer, _events(), *stores)
    letters = _letters(outputs)
    assert sorted(letters) == [1, 2]
    assert letters[1]["error_code"] == "internal_error" and "a bug" in letters[1]["reason"]
    assert keys.changes["v1"]["samples_total"] == 200  # the two good messages, each once
    assert _no_live(channels, keys)
    assert stores == ({}, {})  # the stores themselves are written by the agent, after delivery
