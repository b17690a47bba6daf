"""The edge agent: any set of sources → one durable spool → one idempotent Kafka producer.

Each source runs in its own thread under a supervisor (backoff with jitter, circuit breaker, health).
Sources hand over records through `emit`, which encodes them and appends them to the spool: when `emit`
returns, the records are on disk. A drain thread publishes the spool in order and moves its cursor only
over what the broker acknowledged, so an outage of hours or a `kill -9` loses nothing (producers/spool.py).
Counters are exported as Prometheus metrics and in a status file that `fleetstream agent status` reads.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import start_http_server
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fleetstream.config import HealthSettings, KafkaSettings
from fleetstream.config_sources import ConfigError, Layer, build, read_yaml_mapping, validate
from fleetstream.health import PartHealth
from fleetstream.producers.edge import EdgeProducer
from fleetstream.producers.reliability import Backoff, CircuitBreaker, SourceHealth
from fleetstream.producers.sources import SOURCE_TYPES, Emit, Record, Source, SourceSpec, build_source
from fleetstream.producers.spool import Spool, SpoolEntry
from fleetstream.prometheus import AgentMetrics, PartMetrics
from fleetstream.schemas.codec import serializer
from fleetstream.topics import record_type_of, sample_count

__all__ = ["Agent", "AgentConfig", "Emit", "Record", "Source", "SourceSpec", "load_agent_config", "read_status"]
# Emit, Record, Source and SourceSpec are defined with the adapters (producers/sources.py), re-exported here
# because they are the agent's interface to its sources.

log = logging.getLogger(__name__)

class AgentConfig(BaseModel):
    """agent.yaml: an unknown key is refused (a mistyped `spool_dir` must not spool into the default)."""

    model_config = ConfigDict(extra="forbid")

    station_id: str = Field(default="edge-1", min_length=1)
    spool_dir: Path = Path(".fleetstream/spool")
    spool_budget_mb: int = Field(default=1024, ge=0)
    metrics_port: int | None = Field(default=9464, ge=0, le=65535)
    """0 or null: no metrics endpoint."""
    drain_chunk: int = Field(default=5000, ge=1)
    failure_threshold: int = Field(default=5, ge=1)
    open_seconds: float = Field(default=30.0, gt=0)
    success_threshold: int = Field(default=2, ge=1)
    reconnect_base_s: float = Field(default=0.5, gt=0)
    reconnect_cap_s: float = Field(default=30.0, gt=0)
    """A failed source is restarted after a delay uniform in [0, min(cap, base * 2**attempt)]."""
    topic_overrides: dict[str, str] = Field(default_factory=dict)
    """Publish what sources send to a topic (key) on another topic (value) of the same record type instead:
    for a site that prefixes its topics, or a test that owns a fresh topic."""
    sources: list[SourceSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> AgentConfig:
        """Sources are told apart by name (health, breakers, metrics): two with one name would run as one."""
        names = [spec.name for spec in self.sources]
        if twice := sorted({name for name in names if names.count(name) > 1}):
            raise ValueError(f"source names must be unique: {', '.join(twice)} used more than once")
        return self


def load_agent_config(path: Path) -> AgentConfig:
    """Read agent.yaml; an unknown key, a bad value or an unknown source type is a ConfigError naming the file."""
    data, provenance = build(AgentConfig, [Layer(str(path), read_yaml_mapping(path))])
    config: AgentConfig = validate(AgentConfig, data, provenance)
    for spec in config.sources:
        if spec.type not in SOURCE_TYPES:
            near = difflib.get_close_matches(spec.type, list(SOURCE_TYPES), n=1)
            hint = f"did you mean '{near[0]}'?" if near else f"known types: {', '.join(SOURCE_TYPES)}"
            raise ConfigError(f"source '{spec.name}' in {path} has unknown type '{spec.type}'", hint)
    return config


class Agent:
    """Runs sources, the spool and the drain loop until `stop()` (see the module docstring)."""

    def __init__(self, config: AgentConfig, kafka: KafkaSettings, sources: dict[str, Source] | None = None,
                 health: HealthSettings | None = None, home: Path | None = None):
        """`health`: serve /health and /metrics on `health.edge_agent` (fleetstream.health) while running."""
        self.config = config
        self.spool = Spool(config.spool_dir, budget_bytes=config.spool_budget_mb * 1024 * 1024)
        self.codec = serializer(kafka.schema_registry_url)
        self.producer = EdgeProducer(kafka, self.codec)
        self._sources = sources if sources is not None else {
            spec.name: build_source(spec, config.station_id) for spec in config.sources}
        self._priority = {spec.name: spec.priority for spec in config.sources}
        self.health = {name: SourceHealth(name) for name in self._sources}
        self.breakers = {name: CircuitBreaker(config.failure_threshold, config.open_seconds,
                                              config.success_threshold) for name in self._sources}
        self.metrics = AgentMetrics()
        self.part_health = None if health is None else PartHealth(
            "edge_agent", kafka, health, health.edge_agent, home=home, store=self._check_spool, needs_assignment=False,
            metrics=PartMetrics("edge_agent", self.metrics.registry))
        self._stop = threading.Event()
        self._drain_stop = threading.Event()
        self._source_threads: list[threading.Thread] = []
        self._threads: list[threading.Thread] = []

    def emit_for(self, name: str) -> Emit:
        """The `emit` a source gets: encode, append durably, count.

        A batch that reached the spool also counts as a success for the source's breaker: a source that
        runs for hours and then fails is not "failing consecutively", and a half-open breaker closes once
        the reconnected source delivers again (a long-running source never returns to report success).
        """
        priority = self._priority.get(name, "normal")
        overrides = self.config.topic_overrides
        breaker = self.breakers.get(name)
        received = self.metrics.received.labels(name)

        def emit(records: Sequence[Record]) -> None:
            entries = []
            for topic, key, record in records:
                record_type = record_type_of(topic)
                target = overrides.get(topic, topic)
                entries.append(SpoolEntry(target, key.encode(), self.codec.encode(record_type, record, target),
                                          sample_count(record_type, record), name))
            samples = sum(e.samples for e in entries)
            if self.spool.append(entries, priority):
                self.health[name].record(samples)
                received.inc(samples)
                if breaker is not None and entries:
                    breaker.record_success()

        return emit

    def start(self) -> None:
        if self.part_health is not None:
            self.part_health.start()
        if self.config.metrics_port:
            start_http_server(self.config.metrics_port, addr="127.0.0.1", registry=self.metrics.registry)
        self._spawn("drain", self._drain_loop)
        for name, source in self._sources.items():
            self._source_threads.append(self._spawn(f"source-{name}", self._supervise, name, source))
        self._spawn("status", self._status_loop)
        log.info("agent %s running %d sources, spool %s", self.config.station_id, len(self._sources),
                 self.config.spool_dir)

    def _check_spool(self) -> str:
        """The health check of the agent's store, its spool: writable, and nothing dropped by the disk budget."""
        if not os.access(self.config.spool_dir, os.W_OK):
            raise PermissionError(f"spool {self.config.spool_dir} is not writable")
        dropped = sum(self.spool.stats.dropped_samples.values())
        if dropped:
            raise RuntimeError(f"the spool is full: {dropped} samples dropped by the disk budget")
        return f"{self.spool.pending_bytes()} bytes pending"

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    def _supervise(self, name: str, source: Source) -> None:
        health, breaker = self.health[name], self.breakers[name]
        backoff = Backoff(self.config.reconnect_base_s, self.config.reconnect_cap_s)
        emit = self.emit_for(name)
        while not self._stop.is_set():
            if not breaker.allow():
                health.state = "circuit_open"
                self.metrics.circuit.labels(name).set(1)
                self._stop.wait(breaker.seconds_until_retry())
                continue
            self.metrics.circuit.labels(name).set(0)
            health.state, health.connected = "running", True
            received_before = health.received_samples
            try:
                source(emit, self._stop)
                breaker.record_success()
                backoff.reset()
                if not self._stop.is_set():
                    health.state, health.connected = "finished", False
                    return
            except Exception as exc:
                health.connected, health.failures, health.last_error = False, health.failures + 1, str(exc)
                if self.part_health is not None:
                    self.part_health.error(f"source {name}: {exc}")
                breaker.record_failure()
                if health.received_samples > received_before:
                    backoff.reset()  # it delivered before failing: a fresh outage, not a run of failed connects
                delay = backoff.next_delay()
                health.state = "reconnecting"
                log.warning("source %s failed (%s); retrying in %.1f s, circuit %s", name, exc, delay, breaker.state)
                self._stop.wait(delay)
        health.state, health.connected = "stopped", False

    def _drain_loop(self) -> None:
        backoff = Backoff(base_s=0.2, cap_s=10.0)
        while not self._drain_stop.is_set():
            before = self.spool.stats.failed_publishes
            try:
                sent = self.spool.drain_once(self.producer.publish_acknowledged, self.config.drain_chunk)
            except Exception as exc:  # a dead drain thread would silently fill the disk: log, back off, retry
                log.exception("spool drain failed: %s", exc)
                self.spool.stats.failed_publishes += 1
                sent = 0
            self.metrics.published.inc(sent)
            self.metrics.failed.inc(self.spool.stats.failed_publishes - before)
            if self.part_health is not None and sent:
                self.part_health.metrics.count(messages=sent, batch_seconds=self.spool.stats.last_latency_s)
            if self.part_health is not None and self.spool.stats.failed_publishes > before:
                self.part_health.error(f"publishing from the spool failed ({self.spool.stats.failed_publishes} "
                                       "failures so far); retrying")
            self.metrics.latency.set(self.spool.stats.last_latency_s)
            if self.spool.stats.failed_publishes > before:
                self._drain_stop.wait(backoff.next_delay())
            elif sent == 0:
                backoff.reset()
                self._drain_stop.wait(0.05)

    def _status_loop(self) -> None:
        while not self._stop.wait(1.0):
            self.write_status()

    def status(self) -> dict[str, Any]:
        stats = self.spool.stats
        for reason, samples in stats.dropped_samples.items():
            self.metrics.dropped.labels(reason).set(samples)
        self.metrics.spooled_bytes.set(self.spool.pending_bytes())
        return {
            "station_id": self.config.station_id,
            "pid": os.getpid(),
            "updated_at": time.time(),
            "spool": {"pending_bytes": self.spool.pending_bytes(), "spooled_samples": stats.spooled_samples,
                      "published_samples": stats.published_samples, "published_records": stats.published_records,
                      "failed_publishes": stats.failed_publishes, "dropped_samples": dict(stats.dropped_samples),
                      "last_latency_s": round(stats.last_latency_s, 3)},
            "sources": [self.health[n].to_dict(self.breakers[n]) for n in self._sources],
        }

    def write_status(self) -> None:
        path = self.config.spool_dir / "status.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.status(), indent=2))
        os.replace(tmp, path)

    def drain(self, timeout_s: float = 60.0) -> bool:
        """Wait until everything spooled so far is acknowledged (for `--once` runs, tests and shutdown)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.spool.pending_bytes() == 0:
                return True
            time.sleep(0.05)
        return False

    def stop(self, drain_timeout_s: float = 10.0) -> None:
        """Stop sources, drain for up to `drain_timeout_s`, and leave the rest safely on disk for next time."""
        self._stop.set()
        for thread in self._source_threads:
            thread.join(timeout=drain_timeout_s)
        if not self.drain(drain_timeout_s):
            log.warning("stopping with %d bytes still spooled; they are sent on the next start",
                        self.spool.pending_bytes())
        self._drain_stop.set()
        for thread in self._threads:
            thread.join(timeout=drain_timeout_s)
        self.write_status()
        self.producer.flush(5.0)
        self.spool.close()
        if self.part_health is not None:
            self.part_health.stop()


def read_status(spool_dir: Path) -> dict[str, Any]:
    """The last status an agent wrote, with `running` telling whether its process is alive."""
    path = spool_dir / "status.json"
    if not path.exists():
        raise FileNotFoundError(f"no agent status at {path}: is an agent running with spool_dir {spool_dir}?")
    status: dict[str, Any] = json.loads(path.read_text())
    try:
        os.kill(status["pid"], 0)
        status["running"] = time.time() - status["updated_at"] < 10
    except ProcessLookupError:
        status["running"] = False
    return status
