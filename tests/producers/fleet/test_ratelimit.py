from __future__ import annotations

import pytest

from fleetstream.producers.fleet.ratelimit import TokenBucket
from tests.producers.fleet.conftest import RecordingSleep


def test_burst_is_free_then_requests_are_spaced_by_the_rate(sleep: RecordingSleep) -> None:
    bucket = TokenBucket(rate_per_s=2.0, burst=3, clock=sleep.clock, sleep=sleep)
    waits = [bucket.acquire() for _ in range(6)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3:] == pytest.approx([0.5, 0.5, 0.5])
    assert sleep.now_s == pytest.approx(1.5)


def test_idle_time_refills_up_to_the_burst_only(sleep: RecordingSleep) -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=2, clock=sleep.clock, sleep=sleep)
    bucket.acquire()
    bucket.acquire()
    sleep.now_s += 100.0  # a long pause must not bank 100 tokens
    assert [bucket.acquire() for _ in range(3)] == pytest.approx([0.0, 0.0, 1.0])


def test_motive_default_budget_is_sixty_a_minute(sleep: RecordingSleep) -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=5, clock=sleep.clock, sleep=sleep)
    for _ in range(65):
        bucket.acquire()
    assert sleep.now_s == pytest.approx(60.0)


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_nonsense_budgets_are_rejected(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst)
