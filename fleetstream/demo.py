"""`fleetstream demo`: the whole pipeline, end to end, on embedded defaults, with every sample accounted for.

The demo is also the pipeline's end-to-end self-check, so each figure comes from a different place:
`produced` from the broker's delivery acknowledgements, `valid` and `dead_letter` from reading the
`.valid` and `dlq.` topics back, `stored` from ClickHouse. The identities `produced == valid + dead_letter`
and `stored == valid` are then real checks. A run uses its own key prefix, so a shared or long-lived
cluster with older data does not disturb the counts.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from fleetstream.config import Settings
from schemas import codec
from schemas.topics import RAW_TOPICS, dlq_topic, record_type_of, sample_count, valid_topic

__all__ = ["Services", "TopicTally", "run_demo", "summary_text"]

log = logging.getLogger(__name__)


@dataclass
class TopicTally:
    """Reads `.valid` and `dlq.` topics from the start and counts samples whose key has the run's prefix."""

    settings: Settings
    key_prefix: bytes
    valid_samples: int = 0
    dead_letter_samples: int = 0
    dead_letters_by_code: Counter[str] = field(default_factory=Counter)
    _consumer: Consumer | None = None

    def _open(self) -> Consumer:
        consumer = Consumer(self.settings.kafka.client(**{
            "group.id": f"fleetstream-demo-tally-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }))
        topics = [valid_topic(t) for t in RAW_TOPICS] + [dlq_topic(t) for t in RAW_TOPICS]
        metadata = consumer.list_topics(timeout=10)
        consumer.assign([TopicPartition(t, p, 0) for t in topics for p in metadata.topics[t].partitions])
        return consumer

    def poll(self, seconds: float) -> None:
        """Read whatever arrived within `seconds`."""
        if self._consumer is None:
            self._consumer = self._open()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            messages = self._consumer.consume(num_messages=5000, timeout=0.2)
            for message in messages:
                topic, value = message.topic(), message.value()
                if message.error() or topic is None or value is None:
                    continue
                if (message.key() or b"").startswith(self.key_prefix):
                    self._count(topic, value)
            if not messages:
                return

    def _count(self, topic: str, value: bytes) -> None:
        record_type = record_type_of(topic)
        record = codec.decode(value, record_type)
        if record_type == "dead_letter":
            self.dead_letter_samples += record["sample_count"]
            self.dead_letters_by_code[record["error_code"]] += record["sample_count"]
        else:
            self.valid_samples += sample_count(record_type, record)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()


class Services:
    """Child processes the demo starts (`fleetstream worker`, the sinks), with their logs under `home/logs`."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.log_dir = settings.home / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> None:
        log_path = self.log_dir / f"{name}.log"
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": self.settings.kafka.bootstrap_servers,
               "FLEETSTREAM_HOME": str(self.settings.home.resolve()),
               "CLICKHOUSE_DSN": self.settings.clickhouse_dsn}
        with log_path.open("ab") as out:
            self.processes[name] = subprocess.Popen([sys.executable, "-m", "fleetstream", *args], stdout=out,
                                                    stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.info("started %s (pid %d), log: %s", name, self.processes[name].pid, log_path)

    def check(self) -> None:
        """Fail fast, with the log's tail, if a child died."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                tail = (self.log_dir / f"{name}.log").read_text(errors="replace").splitlines()[-15:]
                raise RuntimeError(f"{name} exited with code {process.returncode}:\n" + "\n".join(tail))

    def stop(self, timeout_s: float = 30.0) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for name, process in self.processes.items():
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s; killing it", name, timeout_s)
                process.kill()
                process.wait()


def _stored_counts(settings: Settings, key_prefix: str) -> tuple[int, int]:
    """(valid samples stored, dead-lettered samples stored) for this run, asked of the running sink."""
    from sinks.clickhouse import run_sql

    like = {"prefix": key_prefix + "%"}
    stored_sql = """
        SELECT (SELECT count() FROM fleetstream.samples WHERE vehicle_id LIKE {prefix:String})
             + (SELECT count() FROM fleetstream.gps_points WHERE vehicle_id LIKE {prefix:String})
             + (SELECT count() FROM fleetstream.dtcs WHERE vehicle_id LIKE {prefix:String})
             + (SELECT count() FROM fleetstream.network_stats WHERE vehicle_id LIKE {prefix:String})"""
    dead_sql = "SELECT sum(sample_count) FROM fleetstream.dead_letters FINAL WHERE key LIKE {prefix:String}"
    stored = run_sql(settings, stored_sql, like)[1][0][0]
    dead = run_sql(settings, dead_sql, like)[1][0][0]
    return int(stored or 0), int(dead or 0)


def run_demo(
    settings: Settings, seconds: float = 20.0, vehicles: int = 5, settle_timeout_s: float = 120.0
) -> dict[str, Any]:
    """Run the pipeline for `seconds` of simulated traffic and return the summary (see module docstring)."""
    from fleetstream.topics import create_topics
    from producers.edge import EdgeProducer
    from producers.vehicle_sim import VehicleFleetSimulator, run_simulation

    run_id = uuid.uuid4().hex[:8]
    key_prefix = f"demo-{run_id}-"
    local = settings.kafka.bootstrap_servers == f"127.0.0.1:{settings.stack.kafka_port}"
    stack = None  # anything but the local stack's own address is an existing cluster: used as it is
    if local:
        from fleetstream.stack import KafkaStack

        stack = KafkaStack(settings)
    started_stack = stack is not None and not stack.status().running
    services = Services(settings)
    tally = TopicTally(settings, key_prefix.encode())
    try:
        if stack is not None:
            stack.up()
        create_topics(settings.kafka, settings.topics)
        services.start("worker", "worker")
        services.start("sink-clickhouse", "sink", "clickhouse")
        _wait_for_sink(settings, services)
        simulator = VehicleFleetSimulator(vehicles=vehicles, prefix=key_prefix + "veh", seed=int(run_id, 16) % 10_000)
        log.info("publishing simulated traffic for %.0f s (run %s)", seconds, run_id)
        with EdgeProducer(settings.kafka) as producer:
            run_simulation(simulator, producer, seconds)
        produced = sum(producer.delivered_samples.values())
        stored, dead_stored = _settle(settings, services, tally, produced, key_prefix, settle_timeout_s)
        return {
            "run_id": run_id,
            "produced_samples": produced,
            "valid_samples": tally.valid_samples,
            "dead_letter_samples": tally.dead_letter_samples,
            "stored_samples": stored,
            "dead_letters_stored": dead_stored,
            "dead_letters_by_reason": dict(tally.dead_letters_by_code),
            "sources": dict(producer.delivered_samples),
            "ok": produced == tally.valid_samples + tally.dead_letter_samples
            and stored == tally.valid_samples and dead_stored == tally.dead_letter_samples,
        }
    finally:
        tally.close()
        services.stop()
        if started_stack and stack is not None:
            stack.down()


def _wait_for_sink(settings: Settings, services: Services, timeout_s: float = 120.0) -> None:
    """Wait until the sink answers queries. With the embedded store the demo never opens it itself: the
    sink process owns it, so readiness is its query endpoint appearing."""
    from sinks.clickhouse import embedded_path, is_embedded
    from sinks.query_server import discover

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        services.check()
        try:
            if is_embedded(settings.clickhouse_dsn) and discover(embedded_path(settings.clickhouse_dsn)) is None:
                raise ConnectionError("the sink's query endpoint is not up yet")
            _stored_counts(settings, "demo-readiness-")
            return
        except Exception as exc:
            log.debug("sink not ready yet: %s", exc)
            time.sleep(0.5)
    raise TimeoutError(f"the ClickHouse sink did not answer within {timeout_s:.0f} s (see {services.log_dir})")


def _settle(settings: Settings, services: Services, tally: TopicTally, produced: int, key_prefix: str,
            timeout_s: float) -> tuple[int, int]:
    """Wait until every produced sample is valid or dead-lettered, and all of them are stored."""
    deadline = time.monotonic() + timeout_s
    stored = dead_stored = 0
    while time.monotonic() < deadline:
        services.check()
        tally.poll(1.0)
        stored, dead_stored = _stored_counts(settings, key_prefix)
        accounted = tally.valid_samples + tally.dead_letter_samples
        if accounted >= produced and stored >= tally.valid_samples and dead_stored >= tally.dead_letter_samples:
            return stored, dead_stored
        log.info("waiting: produced %d, accounted %d, stored %d/%d, dead letters stored %d/%d", produced, accounted,
                 stored, tally.valid_samples, dead_stored, tally.dead_letter_samples)
        time.sleep(1.0)
    log.error("not everything was accounted for within %.0f s", timeout_s)
    return stored, dead_stored


def summary_text(summary: dict[str, Any]) -> str:
    ok = "OK" if summary.get("ok") else "MISMATCH"
    lines = [
        f"fleetstream demo, run {summary['run_id']}: {ok} in {summary.get('elapsed_s', 0)} s",
        f"  produced samples      {summary['produced_samples']:>10,}",
        f"  valid samples         {summary['valid_samples']:>10,}",
        f"  dead-lettered samples {summary['dead_letter_samples']:>10,}  {summary['dead_letters_by_reason']}",
        f"  stored in ClickHouse  {summary['stored_samples']:>10,}",
        f"  dead letters stored   {summary['dead_letters_stored']:>10,}",
        "  sources: " + ", ".join(f"{name} {count:,}" for name, count in summary["sources"].items()),
    ]
    return "\n".join(lines)

