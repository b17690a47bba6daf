"""Test-only fault injection: make the sink process die at an exact point of the exactly-once sequence.

Random SIGKILLs rarely land in the few milliseconds between a batch's insert and its Kafka commit, yet that
is the window the deduplication token exists for. `FLEETSTREAM_FAULT=<point>:<n>` (test-only; never set it in
a deployment) makes the process `os._exit(137)` (the status a SIGKILL gives a shell) the n-th time it passes
`<point>`, without flushing, closing or committing anything:

* `crash_before_insert`: the range is recorded `before`, nothing inserted;
* `crash_after_insert`: the insert landed, the range is still `before`, offsets not committed;
* `crash_after_mark`: recorded `after`, offsets not committed (the replay must be skipped).

The variable is read once at the edge (`python -m fleetstream.sinks.clickhouse`, the CLI) and passed in as a `Fault`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["ENV_VAR", "POINTS", "Fault"]

log = logging.getLogger(__name__)

ENV_VAR = "FLEETSTREAM_FAULT"
POINTS = ("crash_before_insert", "crash_after_insert", "crash_after_mark")
EXIT_STATUS = 137


@dataclass
class Fault:
    """Die the `nth` time execution passes `point`."""

    point: str
    nth: int
    _seen: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.point not in POINTS:
            raise ValueError(f"unknown fault point {self.point!r}; use one of {', '.join(POINTS)}")
        if self.nth < 1:
            raise ValueError(f"fault count must be >= 1, not {self.nth}")

    @classmethod
    def parse(cls, spec: str) -> Fault:
        """`crash_after_insert:3` → Fault("crash_after_insert", 3); a bare point means the first pass."""
        point, _, nth = spec.strip().partition(":")
        try:
            return cls(point, int(nth) if nth else 1)
        except ValueError as exc:
            raise ValueError(f"{ENV_VAR}={spec!r}: {exc}") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Fault | None:
        """The fault `FLEETSTREAM_FAULT` asks for, or None (the normal case)."""
        spec = environ.get(ENV_VAR, "").strip()
        return cls.parse(spec) if spec else None

    def reached(self, point: str) -> None:
        """Called at each fault point; exits the process on the planned pass."""
        if point != self.point:
            return
        self._seen += 1
        if self._seen == self.nth:
            log.critical("injected fault %s:%d: exiting with status %d", point, self.nth, EXIT_STATUS)
            for handler in logging.getLogger().handlers:
                handler.flush()
            sys.stderr.flush()
            os._exit(EXIT_STATUS)
