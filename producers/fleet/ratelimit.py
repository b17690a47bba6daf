"""A client-side token bucket: keeps one provider's request rate under its published limit.

Throttling ourselves is cheaper than being throttled: a 429 costs a round trip and a `Retry-After`
wait, and Samsara counts limits per token and per organisation, so one greedy poller would starve
every other integration on the same account. The clock and sleep are injectable for tests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["TokenBucket"]


class TokenBucket:
    """`rate_per_s` tokens a second, at most `burst` saved up; `acquire()` blocks until one is free.

    Thread-safe: several threads sharing one provider client share its budget. The wait is computed
    from the deficit, so a caller sleeps once rather than spinning.
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if rate_per_s <= 0:
            raise ValueError(f"rate_per_s must be positive, got {rate_per_s}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._updated_s = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now_s = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now_s - self._updated_s) * self.rate_per_s)
        self._updated_s = now_s

    def try_acquire(self) -> float:
        """Take a token if one is free and return 0.0; else return the seconds until one will be."""
        with self._lock:
            self._refill()
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate_per_s

    def acquire(self) -> float:
        """Block until a token is taken; return the seconds spent waiting."""
        waited_s = 0.0
        while (wait_s := self.try_acquire()) > 0.0:
            self._sleep(wait_s)
            waited_s += wait_s
        return waited_s
