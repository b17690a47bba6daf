"""What keeps a flaky source from taking an agent down: backoff with jitter, a circuit breaker, and health.

Sources fail in the field all the time (a serial adapter unplugged, a dyno PC rebooting, an API rate
limiting us). Each source runs under a supervisor that retries with exponential backoff and full jitter,
and a breaker that stops hammering a source that keeps failing: closed → open after `failure_threshold`
consecutive failures → half-open after `open_seconds` → closed after `success_threshold` successes.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Backoff", "CircuitBreaker", "SourceHealth"]


@dataclass
class Backoff:
    """Exponential backoff with full jitter: the n-th delay is uniform in [0, min(cap, base * 2**n)]."""

    base_s: float = 0.5
    cap_s: float = 30.0
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.base_s * (2 ** self.attempt))
        self.attempt += 1
        return self.rng.uniform(0, ceiling)

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class CircuitBreaker:
    """closed → open after N consecutive failures → half-open after a timeout → closed after M successes."""

    failure_threshold: int = 5
    open_seconds: float = 30.0
    success_threshold: int = 2
    clock: Callable[[], float] = time.monotonic
    state: str = "closed"
    failures: int = 0
    successes: int = 0
    opened_at: float = 0.0

    def allow(self) -> bool:
        """Whether a call may be attempted now (moves open → half-open when the timeout has passed)."""
        if self.state == "open" and self.clock() - self.opened_at >= self.open_seconds:
            self.state, self.successes = "half_open", 0
        return self.state != "open"

    def record_success(self) -> None:
        if self.state == "half_open":
            self.successes += 1
            if self.successes >= self.success_threshold:
                self.state, self.failures = "closed", 0
        else:
            self.failures = 0

    def record_failure(self) -> None:
        self.failures += 1
        if self.state == "half_open" or self.failures >= self.failure_threshold:
            self.state, self.opened_at = "open", self.clock()

    def seconds_until_retry(self) -> float:
        return max(0.0, self.open_seconds - (self.clock() - self.opened_at)) if self.state == "open" else 0.0


@dataclass
class SourceHealth:
    """What `fleetstream agent status` shows per source."""

    name: str
    state: str = "starting"
    connected: bool = False
    received_samples: int = 0
    failures: int = 0
    last_error: str = ""
    last_sample_at: float = 0.0
    started_at: float = field(default_factory=time.time)

    def record(self, samples: int) -> None:
        self.received_samples += samples
        self.last_sample_at = time.time()

    def to_dict(self, breaker: CircuitBreaker) -> dict[str, object]:
        elapsed = max(1e-9, time.time() - self.started_at)
        return {
            "name": self.name,
            "state": self.state,
            "connected": self.connected,
            "circuit": breaker.state,
            "received_samples": self.received_samples,
            "samples_per_s": round(self.received_samples / elapsed, 2),
            "failures": self.failures,
            "last_error": self.last_error,
            "last_sample_age_s": round(time.time() - self.last_sample_at, 1) if self.last_sample_at else None,
        }
