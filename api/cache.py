"""The 5-minute response cache (seed 003's METRICS_CACHE_TTL_SECONDS), bypassed by `?refresh=true`.

Keys include the caller's scope (org and vehicles), so one tenant's cached answer is never another's.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

__all__ = ["TtlCache"]


class TtlCache:
    def __init__(self, ttl_s: float, max_entries: int = 2048, clock: Callable[[], float] = time.monotonic):
        self.ttl_s = ttl_s
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[tuple[Any, ...], tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_compute(self, key: tuple[Any, ...], compute: Callable[[], Any],
                       refresh: bool = False) -> tuple[Any, bool]:
        """The value and whether it came from the cache."""
        now = self._clock()
        if not refresh and self.ttl_s > 0:
            with self._lock:
                hit = self._entries.get(key)
                if hit is not None and hit[0] > now:
                    self._entries.move_to_end(key)
                    return hit[1], True
        value = compute()
        with self._lock:
            self._entries[key] = (now + self.ttl_s, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return value, False
