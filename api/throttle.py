"""Slows repeated failed logins, per username and per client address.

After `free_failures` failures, each further attempt must wait 2^(n - free) seconds (capped) since the last
failure; an attempt that comes earlier is refused with the time to wait (HTTP 429 + Retry-After) without
the password being checked, so guessing costs time whichever account or address is tried. A success clears
the username's count. State is per process and in memory: a restart forgives, which is acceptable for a
slow-down (the argon2 hash is the real defence against offline guessing).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["LoginThrottle"]


@dataclass
class _Failures:
    count: int = 0
    last_s: float = 0.0


class LoginThrottle:
    def __init__(self, free_failures: int = 5, max_delay_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic):
        self.free_failures = free_failures
        self.max_delay_s = max_delay_s
        self._clock = clock
        self._failures: dict[str, _Failures] = {}
        self._lock = threading.Lock()

    def _delay(self, failures: _Failures) -> float:
        over = failures.count - self.free_failures
        return 0.0 if over < 0 else min(self.max_delay_s, 2.0 ** over)

    def wait_s(self, username: str, client: str) -> float:
        """Seconds the caller must still wait before this attempt is checked (0 = go ahead)."""
        now = self._clock()
        with self._lock:
            waits = [self._delay(f) - (now - f.last_s) for k in (f"u:{username}", f"c:{client}")
                     if (f := self._failures.get(k)) is not None]
        return max([0.0, *waits])

    def failed(self, username: str, client: str) -> None:
        now = self._clock()
        with self._lock:
            for key in (f"u:{username}", f"c:{client}"):
                failures = self._failures.setdefault(key, _Failures())
                failures.count += 1
                failures.last_s = now
            if len(self._failures) > 100_000:  # bounded memory under a spray of usernames: forget the oldest
                for key in sorted(self._failures, key=lambda k: self._failures[k].last_s)[:50_000]:
                    del self._failures[key]

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._failures.pop(f"u:{username}", None)
