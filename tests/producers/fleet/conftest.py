"""Shared helpers of the fleet poller tests: fixture loading and a recording sleep."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "data" / "fleet"


def fixture(name: str) -> Any:
    """A response fixture from tests/data/fleet/ (see its README for origin)."""
    return json.loads((FIXTURES / name).read_text())


class RecordingSleep:
    """Stands in for time.sleep: records the waits and advances a fake monotonic clock."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self.now_s = 0.0

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now_s += seconds

    def clock(self) -> float:
        return self.now_s


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()
