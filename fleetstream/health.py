"""Health of a long-running part: one HTTP endpoint for every part, serving its Prometheus metrics too.

Each part (worker, ClickHouse sink, GraphQL sink, edge agent) builds a `PartHealth` at start and serves:

- `GET /health/live`: 200 while the process serves requests (a liveness probe restarts only when this fails);
- `GET /health/ready`: 200 when the broker, the part's store and its group assignment are healthy, else 503
  with the failing checks (a readiness probe takes the part out of rotation, it does not restart it);
- `GET /health`: the same as ready, as JSON with the last error and the consumer lag (`fleetstream status`);
- `GET /metrics`: Prometheus text: throughput, consumer lag per partition, dead letters by reason, batch
  latency, rebalances, and whatever part-specific metrics share the registry.

Readiness is probed in a background thread every `probe_interval_s`, not per request: a metadata request to
Kafka and the part's store check, each bounded by `probe_timeout_s`, so a dead broker shows as not ready within
interval + timeout (5 s with the defaults) and as ready again after the first probe that succeeds. The same
probe asks the part for its consumer lag per assigned partition, from what its own consumer knows (end offsets
seen in fetches, its position): no request to the cluster. Not the coordinator Admin APIs
(ListConsumerGroupOffsets, DescribeConsumerGroups) in a long-running part: librdkafka aborts the whole process
when the connection drops during one of them (confluentinc/librdkafka#4605, fix pending in #5397), which is
exactly when a health probe runs. `fleetstream status`, a short command, reads the groups' committed lag.

A part listens on its configured address (`health.<part>`); port 0 picks a free port. Either way the address is
announced in `<home>/health/<part>-<pid>.json` (removed on exit), which is how `fleetstream status` finds every
part of a local deployment, several workers of one group included.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from fleetstream.config import HealthSettings, KafkaSettings
from fleetstream.errors import FleetstreamError
from fleetstream.logs import LibrdkafkaLog
from fleetstream.prometheus import PartMetrics
from fleetstream.store.discovery import process_alive

__all__ = [
    "ANNOUNCE_DIR",
    "CheckFailed",
    "HealthAddressInUse",
    "LagTracker",
    "PartHealth",
    "announced",
    "consumer_lag",
    "group_lag",
    "handle_health_request",
    "parse_address",
]

log = logging.getLogger(__name__)

ANNOUNCE_DIR = "health"
"""Under the home: one `<part>-<pid>.json` per running part with its health address."""

_PROBE_LOG = LibrdkafkaLog(max_level=logging.DEBUG)  # a down broker is what the readiness check reports
_NEVER_COMMITTED = -1001  # librdkafka's OFFSET_INVALID: the group has no committed offset there


class HealthAddressInUse(FleetstreamError):
    """The configured health address is taken (by another part, or a second copy of this one)."""


class CheckFailed(Exception):
    """Raised by a store check with what is wrong (any exception counts as a failure; this one reads best)."""


def parse_address(address: str) -> tuple[str, int]:
    """`host:port` (checked by config.HealthSettings) → (host, port)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


@dataclass
class _State:
    """What the probe thread and the part's callbacks last found; read by the HTTP handler."""

    checks: dict[str, str] = field(default_factory=dict)
    """check name → "ok", "ok (detail)" or what is wrong."""
    lag: dict[str, dict[str, int]] = field(default_factory=dict)
    """group → {"topic[partition]": lag}."""
    assignment: str = "waiting for the first assignment"
    assigned_partitions: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    probed_at: float | None = None


class PartHealth:
    """One part's readiness, metrics and their HTTP endpoint (see the module docstring).

    `store` is the part's store check (raises when the store is gone; may return a detail), `lag` returns the
    part's lag per assigned (topic, partition) in consumer group `group`, `needs_assignment` whether the part is a
    group consumer that is not ready between a revoke and the next assignment. Call `assigned`/`revoked`/`lost`
    from the consumer's rebalance callbacks and `error` with what went wrong; everything else runs in the
    background after `start()`.
    """

    def __init__(self, part: str, kafka: KafkaSettings, settings: HealthSettings, address: str, *,
                 home: Path | None = None, store: Callable[[], object] | None = None, group: str = "",
                 lag: Callable[[], Mapping[tuple[str, int], int]] | None = None, needs_assignment: bool = True,
                 metrics: PartMetrics | None = None) -> None:
        self.part = part
        self.kafka = kafka
        self.settings = settings
        self.configured_address = address
        self.home = home
        self.store = store
        self.group = group
        self.lag = lag
        self.needs_assignment = needs_assignment
        self.metrics = metrics or PartMetrics(part)
        self.address: str | None = None
        """Where it serves once started (the actual port when the configured one is 0)."""
        self._state = _State()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._admin: Any = None
        self._announcement: Path | None = None
        self._bounded: _BoundedCheck | None = None

    # the part's callbacks

    def assigned(self, partitions: int) -> None:
        with self._lock:
            self._state.assignment, self._state.assigned_partitions = "ok", partitions
        self.metrics.rebalances.labels(self.part).inc()

    def revoked(self) -> None:
        with self._lock:
            self._state.assignment, self._state.assigned_partitions = "rebalancing", 0

    def lost(self) -> None:
        with self._lock:
            self._state.assignment, self._state.assigned_partitions = "partitions lost (session expired)", 0

    def error(self, text: str) -> None:
        """Record `text` as the last error (shown by /health and `fleetstream status`)."""
        with self._lock:
            self._state.last_error, self._state.last_error_at = text, time.time()
        self.metrics.errors.labels(self.part).inc()

    # reading

    def snapshot(self) -> dict[str, Any]:
        """What /health answers: status, each check, assignment, lag per group and partition, last error."""
        with self._lock:
            state = self._state
            checks = dict(state.checks)
            if self.needs_assignment:
                checks["assignment"] = state.assignment
            ok = _all_ok(checks)
            self.metrics.ready.labels(self.part).set(1 if ok else 0)
            return {
                "part": self.part, "pid": os.getpid(), "status": "ok" if ok else "unavailable",
                "checks": checks, "assigned_partitions": state.assigned_partitions,
                "lag": {group: dict(lags) for group, lags in state.lag.items()},
                "last_error": state.last_error, "last_error_at": state.last_error_at, "probed_at": state.probed_at,
            }

    def ready(self) -> bool:
        return bool(self.snapshot()["status"] == "ok")

    # life cycle

    def start(self) -> PartHealth:
        """Probe once (so the first answer is not a guess), then serve and keep probing in the background."""
        self.probe()
        if self.configured_address:
            self._serve(*parse_address(self.configured_address))
        prober = threading.Thread(target=self._probe_loop, name=f"{self.part}-health-probe", daemon=True)
        prober.start()
        self._threads.append(prober)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._announcement is not None:
            self._announcement.unlink(missing_ok=True)
            self._announcement = None
        for thread in self._threads:
            thread.join(timeout=self.settings.probe_timeout_s + 1)

    def __enter__(self) -> PartHealth:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _serve(self, host: str, port: int) -> None:
        try:
            self._httpd = ThreadingHTTPServer((host, port), _handler(self))
        except OSError as exc:
            raise HealthAddressInUse(
                f"the {self.part}'s health endpoint cannot listen on {host}:{port}: {exc.strerror}",
                f"give each {self.part} its own address (FLEETSTREAM_HEALTH__{self.part.upper()}=host:port, "
                "port 0 picks a free one)") from exc
        self._httpd.daemon_threads = True
        actual = self._httpd.server_address[1]
        self.address = f"{host}:{actual}"
        server = threading.Thread(target=self._httpd.serve_forever, name=f"{self.part}-health-http", daemon=True)
        server.start()
        self._threads.append(server)
        self._announce()
        log.info("%s health and metrics on http://%s (/health/ready, /metrics)", self.part, self.address)

    def _announce(self) -> None:
        if self.home is None or self.address is None:
            return
        folder = self.home / ANNOUNCE_DIR
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.part}-{os.getpid()}.json"
        path.write_text(json.dumps({"part": self.part, "pid": os.getpid(), "address": self.address}))
        self._announcement = path

    # probing

    def _probe_loop(self) -> None:
        while not self._stop.wait(self.settings.probe_interval_s):
            try:
                self.probe()
            except Exception as exc:  # a bug in a check must not end the probing (the part would stay "ok")
                log.exception("%s health probe failed", self.part)
                with self._lock:
                    self._state.checks["probe"] = f"{type(exc).__name__}: {exc}"

    def probe(self) -> None:
        """Run the checks once: Kafka metadata, the store, and the groups' lag (only while Kafka answers)."""
        checks = {"kafka": self._check_kafka()}
        if self.store is not None:
            checks["store"] = self._check_store(self.store)
        lag = self._read_lag()
        with self._lock:
            self._state.checks = checks
            if lag is not None:
                self._state.lag = lag
            self._state.probed_at = time.time()
        self.snapshot()  # updates fleetstream_ready
        for name, result in checks.items():
            self.metrics.check_ok.labels(self.part, name).set(1 if _ok(result) else 0)
        if lag is not None:
            self._export_lag(lag)

    def _check_store(self, check: Callable[[], object]) -> str:
        if self._bounded is None:
            self._bounded = _BoundedCheck(check)
        return self._bounded(self.settings.probe_timeout_s)

    def _admin_client(self) -> Any:
        if self._admin is None:
            from confluent_kafka.admin import AdminClient

            # reconnect within a second once the broker is back (librdkafka backs off up to 10 s by default)
            self._admin = AdminClient(self.kafka.client(logger=_PROBE_LOG, **{"reconnect.backoff.max.ms": 1000}))
        return self._admin

    def _check_kafka(self) -> str:
        try:
            metadata = self._admin_client().list_topics(timeout=self.settings.probe_timeout_s)
        except Exception as exc:
            return f"unreachable at {self.kafka.bootstrap_servers}: {exc}"
        return "ok" if metadata.brokers else f"no broker answers at {self.kafka.bootstrap_servers}"

    def _read_lag(self) -> dict[str, dict[str, int]] | None:
        if self.lag is None:
            return None
        try:
            by_partition = self.lag()
        except Exception as exc:  # the consumer is being rebuilt, or closed: keep the last known lag
            log.debug("lag of %s unknown: %s", self.part, exc)
            return None
        return {self.group: {f"{topic}[{partition}]": n for (topic, partition), n in sorted(by_partition.items())}}

    def _export_lag(self, lag: Mapping[str, Mapping[str, int]]) -> None:
        self.metrics.consumer_lag.clear()
        for group, partitions in lag.items():
            for name, n in partitions.items():
                topic, _, partition = name.rstrip("]").rpartition("[")
                self.metrics.consumer_lag.labels(self.part, group, topic, partition).set(n)


def _run_check(check: Callable[[], object]) -> str:
    try:
        detail = check()
    except Exception as exc:
        return f"unavailable: {exc}" if str(exc) else f"unavailable: {type(exc).__name__}"
    return f"ok ({detail})" if detail not in (None, "") else "ok"


class _BoundedCheck:
    """Runs a check in its own thread and gives up waiting after a timeout: a store that hangs (a server that
    accepts connections but never answers) must read as not ready, not keep the last answer forever."""

    def __init__(self, check: Callable[[], object]) -> None:
        self.check = check
        self._running: threading.Thread | None = None
        self._result = "unavailable: not checked yet"

    def __call__(self, timeout_s: float) -> str:
        if self._running is None or not self._running.is_alive():
            self._running = threading.Thread(target=self._run, name="health-store-check", daemon=True)
            self._running.start()
        self._running.join(timeout_s)
        if self._running.is_alive():
            return f"unavailable: no answer within {timeout_s:g} s"
        return self._result

    def _run(self) -> None:
        self._result = _run_check(self.check)


def _ok(result: str) -> bool:
    return result == "ok" or result.startswith("ok (")


def _all_ok(checks: Mapping[str, str]) -> bool:
    return all(_ok(result) for result in checks.values())


class LagTracker:
    """A confluent-kafka consumer's lag per partition, refreshed by the thread that polls the consumer.

    `refresh` (called after each poll, does work at most once per `every_s`) reads only what the client holds:
    the end offsets seen in fetches and the positions of the partitions the part says it owns. Not from the
    probe thread, and not `assignment()`: that call waits on the group thread, which blocks while the broker is
    down, exactly when the probe must keep answering.
    """

    def __init__(self, every_s: float = 1.0) -> None:
        self.every_s = every_s
        self.lag: dict[tuple[str, int], int] = {}
        self._due = 0.0

    def refresh(self, consumer: Any, partitions: Iterable[tuple[str, int]]) -> None:
        now = time.monotonic()
        if now < self._due:
            return
        self._due = now + self.every_s
        self.lag = consumer_lag(consumer, partitions)

    def __call__(self) -> dict[tuple[str, int], int]:
        return dict(self.lag)


def consumer_lag(consumer: Any, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """Lag of a confluent-kafka consumer's `partitions`, from its cached end offsets and its positions (no
    request to the cluster); partitions it has not fetched from yet are left out (their end is unknown)."""
    from confluent_kafka import TopicPartition

    wanted = [TopicPartition(topic, partition) for topic, partition in partitions]
    lag: dict[tuple[str, int], int] = {}
    for tp in consumer.position(wanted) if wanted else []:
        _low, high = consumer.get_watermark_offsets(tp, cached=True)
        if high >= 0 and tp.offset >= 0:
            lag[(tp.topic, tp.partition)] = max(0, high - tp.offset)
    return lag


def group_lag(admin: Any, group: str, timeout_s: float = 5.0) -> dict[tuple[str, int], int]:
    """Per partition the group has committed to: end offset minus committed offset (an empty dict for a group
    that committed nothing yet). Two requests to the cluster, whatever the number of partitions.

    For short commands only (`fleetstream status`): ListConsumerGroupOffsets can abort the process when the
    connection drops mid-request (see the module docstring)."""
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import OffsetSpec

    futures = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=timeout_s)
    committed = {(tp.topic, tp.partition): tp.offset for tp in futures[group].result(timeout=timeout_s).topic_partitions
                 if tp.error is None}
    if not committed:
        return {}
    ends = admin.list_offsets({TopicPartition(t, p): OffsetSpec.latest() for t, p in committed},
                              request_timeout=timeout_s)
    lag: dict[tuple[str, int], int] = {}
    for tp, future in ends.items():
        end = future.result(timeout=timeout_s).offset
        position = committed[(tp.topic, tp.partition)]
        lag[(tp.topic, tp.partition)] = max(0, end - (0 if position == _NEVER_COMMITTED else position))
    return lag


def handle_health_request(health: PartHealth, path: str) -> tuple[int, str, bytes] | None:
    """(status, content type, body) for a health or metrics path, None for any other path.

    Shared by `PartHealth`'s own server and endpoints that serve other paths too (the sink's query endpoint).
    """
    path = path.split("?", 1)[0].rstrip("/") or "/"
    if path == "/metrics":
        health.snapshot()  # brings fleetstream_ready up to date with assignments since the last probe
        return 200, CONTENT_TYPE_LATEST, health.metrics.exposition()
    if path == "/health/live":
        return 200, "application/json", json.dumps({"status": "ok", "part": health.part,
                                                    "pid": os.getpid()}).encode()
    if path in ("/health", "/health/ready"):
        snapshot = health.snapshot()
        return (200 if snapshot["status"] == "ok" else 503), "application/json", json.dumps(snapshot).encode()
    return None


def _handler(health: PartHealth) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            answer = handle_health_request(health, self.path)
            status, content_type, body = answer or (
                404, "application/json", b'{"error": "GET /health/live, /health/ready, /health or /metrics"}')
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.address_string(), *args)

    return Handler


def announced(home: Path) -> list[dict[str, Any]]:
    """The parts that announced a health address under `home` and still run (stale files are removed)."""
    found: list[dict[str, Any]] = []
    for path in sorted((home / ANNOUNCE_DIR).glob("*.json")):
        try:
            info = json.loads(path.read_text())
            pid = int(info["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not process_alive(pid):
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        found.append(info)
    return found
