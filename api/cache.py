"""The 5-minute response cache (seed 003's METRICS_CACHE_TTL_SECONDS), bypassed by `?refresh=true`.

Keys include the caller's scope (org and vehicles), so one tenant's cached answer is never another's.
Concurrent misses of one key compute it once: the first caller computes, the others wait for its value
(a hundred users opening the same dashboard when its entry expires cost one computation, not a hundred).
A refresh always computes, and its value serves the waiting callers and later hits.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

__all__ = ["TtlCache"]


class _Flight:
    """One computation in progress: waiters block on `done` and then read `value` (or re-raise `error`)."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class TtlCache:
    def __init__(self, ttl_s: float, max_entries: int = 2048, clock: Callable[[], float] = time.monotonic):
        self.ttl_s = ttl_s
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[tuple[Any, ...], tuple[float, Any]] = OrderedDict()
        self._flights: dict[tuple[Any, ...], _Flight] = {}
        self._lock = threading.Lock()

    def get_or_compute(self, key: tuple[Any, ...], compute: Callable[[], Any],
                       refresh: bool = False) -> tuple[Any, bool]:
        """The value and whether it came from the cache (a value computed by a concurrent caller counts as one)."""
        with self._lock:
            if not refresh and self.ttl_s > 0:
                hit = self._entries.get(key)
                if hit is not None and hit[0] > self._clock():
                    self._entries.move_to_end(key)
                    return hit[1], True
                flight = self._flights.get(key)
                if flight is not None:
                    joined = True
                else:
                    joined, flight = False, self._flights.setdefault(key, _Flight())
            else:
                joined, flight = False, _Flight()
        if joined:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.value, True
        return self._compute(key, compute, flight, refresh), False

    def _compute(self, key: tuple[Any, ...], compute: Callable[[], Any], flight: _Flight, refresh: bool) -> Any:
        try:
            flight.value = compute()
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                if flight.error is None:
                    self._entries[key] = (self._clock() + self.ttl_s, flight.value)
                    self._entries.move_to_end(key)
                    while len(self._entries) > self._max:
                        self._entries.popitem(last=False)
                if not refresh and self._flights.get(key) is flight:
                    del self._flights[key]
            flight.done.set()
        return flight.value
