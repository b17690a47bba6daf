"""Logging set-up shared by every command: one clear line per event, to stderr, so stdout stays for results."""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable

__all__ = ["LibrdkafkaLog", "librdkafka_log", "setup_logging"]

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(level: str = "INFO") -> None:
    """Configure the root logger once; noisy third-party loggers are held at WARNING."""
    logging.basicConfig(level=level.upper(), format=_FORMAT, datefmt="%H:%M:%S", stream=sys.stderr, force=True)
    for noisy in ("aiokafka", "faust", "mode", "httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    # clickhouse-connect (and urllib3 under it) warn about each failed connection attempt that the caller
    # reports as its own error anyway (fleetstream.store.client.ClickHouseUnreachable).
    for chatty in ("clickhouse_connect.driver._backend", "urllib3.connectionpool"):
        logging.getLogger(chatty).setLevel(max(logging.ERROR, logging.getLogger().level))


_NUMBERS = re.compile(r"\d+")
_SUPPRESSED = re.compile(r",? \d+ identical error\(s\) suppressed")
"""librdkafka's own repeat counter, which would make each repeat of a line look new."""


class LibrdkafkaLog:
    """The `logger` of every confluent-kafka client we create: librdkafka's lines through Python logging.

    Left to itself librdkafka writes each reconnect attempt to stderr, hundreds of lines while a broker is
    down. Here each distinct line (numbers and librdkafka's own "N identical error(s) suppressed" ignored,
    so counters and client ids do not make it new) is logged at most once per `interval_s` to the
    `librdkafka` logger at the level confluent-kafka mapped it to; the next one logged says how many were
    suppressed.
    """

    def __init__(self, interval_s: float = 30.0, logger: logging.Logger | None = None, max_level: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.logger = logger or logging.getLogger("librdkafka")
        self.max_level = max_level
        """Cap on the level (DEBUG for a probe whose failure is reported on its own)."""
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def log(self, level: int, msg: str, *args: object) -> None:
        """confluent-kafka's call: `log(level, "%s [%s] %s", facility, client name, text)`."""
        text = msg % args if args else msg
        if self.max_level is not None:
            level = min(level, self.max_level)
        if not self.logger.isEnabledFor(level):
            return
        key = _NUMBERS.sub("#", _SUPPRESSED.sub("", text))
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval_s:
                self._held[key] = self._held.get(key, 0) + 1
                return
            held = self._held.pop(key, 0)
            self._last[key] = now
            if len(self._last) > 1000:  # bound the memory of a long-running client with many distinct lines
                self._last = {k: t for k, t in self._last.items() if now - t < self.interval_s}
        self.logger.log(level, "%s%s", text, f" ({held} similar lines suppressed)"
                        if held else "")


_shared = LibrdkafkaLog()


def librdkafka_log() -> LibrdkafkaLog:
    """The one rate-limited sink every client shares, so a line repeated by several clients is logged once."""
    return _shared
