"""`fleetstream demo`: the whole pipeline, end to end, on embedded defaults, with every sample accounted for.

Sources (each as a user would run it): simulated vehicles through the edge producer, a JetDrive dyno and an
Innovate wideband through an edge agent (real multicast and a real tty), a WinPEP 8 run imported from a file,
a vehicle through the `IcsAnalytics` drop-in, and the Motive and Samsara pollers against local fakes of
their APIs. The worker validates, the ClickHouse sink stores, the GraphQL forwarder feeds a local
contract-checking backend.

The demo is also the pipeline's end-to-end self-check, so each figure comes from a different place:
`produced` from the broker's delivery acknowledgements, `valid` and `dead_letter` from reading the
`.valid` and `dlq.` topics back, `stored` from ClickHouse. The identities `produced == valid + dead_letter`
and `stored == valid` are real checks. Only what this run wrote counts: the demo notes every topic's end
offsets before it starts and counts records (and rows, by their Kafka provenance) from there, so it assumes
it is the only writer on the cluster while it runs.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from fleetstream.admin import create_topics, wait_for_group
from fleetstream.config import Settings
from fleetstream.schemas import serializer
from fleetstream.topics import RAW_TOPICS, dead_letter_topic, record_type_of, sample_count, valid_topic

__all__ = ["Services", "TopicTally", "run_demo", "summary_text"]

log = logging.getLogger(__name__)

_STREAM_STAGES = ("decode", "validate")
"""Dead letters written by the validation stage: the ones `produced == valid + dead-lettered` is about.
Later stages (sink, forward) dead-letter samples that were valid, and are reported separately."""

_TABLE_TOPICS = {
    "samples": ["telemetry.signals.valid", "dyno.samples.valid"],
    "gps_points": ["telemetry.gps.valid"],
    "dtcs": ["telemetry.dtcs.valid"],
    "network_stats": ["telemetry.netstats.valid"],
    "fleet_locations": ["fleet.locations.valid"],
    "fleet_faults": ["fleet.faults.valid"],
}

Watermarks = dict[tuple[str, int], int]


_DERIVED = ("telemetry.windows", "analytics.kpi", "analytics.threshold.exceeded")


def _tallied_topics() -> list[str]:
    return [valid_topic(t) for t in RAW_TOPICS] + [dead_letter_topic(t) for t in RAW_TOPICS] + list(_DERIVED)


def end_offsets(settings: Settings, topics: list[str], timeout_s: float = 60.0) -> Watermarks:
    """The next offset of every partition of `topics`: where this run's records begin.

    One ListOffsets request for all partitions, retried while freshly created topics still elect leaders.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, OffsetSpec

    admin = AdminClient(settings.kafka.client())
    metadata = admin.list_topics(timeout=10)
    partitions = [TopicPartition(t, p) for t in topics for p in metadata.topics[t].partitions]
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            futures = admin.list_offsets({tp: OffsetSpec.latest() for tp in partitions}, request_timeout=10)
            return {(tp.topic, tp.partition): future.result().offset for tp, future in futures.items()}
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise
            log.debug("offsets not available yet (%s); retrying", exc)
            time.sleep(0.5)


@dataclass
class TopicTally:
    """Counts samples on the `.valid` and `dlq.` topics from the run's starting offsets."""

    settings: Settings
    start: Watermarks
    valid_samples: int = 0
    dead_letter_samples: int = 0
    dead_letters_by_code: Counter[str] = field(default_factory=Counter)
    later_stage_dead_letters: Counter[str] = field(default_factory=Counter)
    by_source: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    derived: Counter[str] = field(default_factory=Counter)
    _seen: set[tuple[str, ...]] = field(default_factory=set)
    _consumer: Consumer | None = None

    def poll(self, seconds: float) -> None:
        """Read whatever arrived within `seconds`."""
        if self._consumer is None:
            self._consumer = Consumer(self.settings.kafka.client(**{
                "group.id": f"fleetstream-demo-tally-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False}))
            self._consumer.assign([TopicPartition(t, p, offset) for (t, p), offset in self.start.items()])
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            messages = self._consumer.consume(num_messages=5000, timeout=0.2)
            for message in messages:
                topic, value = message.topic(), message.value()
                if not message.error() and topic is not None and value is not None:
                    self._count(topic, value)
            if not messages:
                return

    def _count(self, topic: str, value: bytes) -> None:
        record_type = record_type_of(topic)
        record = serializer(self.settings.kafka.schema_registry_url).decode(value, record_type)
        if topic in _DERIVED:
            self.derived[topic if record_type != "alert" else f"alerts_{record['event']}"] += 1
            return
        # Stages hand over at least once: a record re-sent after a rebalance has the same identity (batch id;
        # for a dead letter, its source offset and reason) and counts once, as the idempotent sinks store it.
        identity = ((topic, record["batch_id"]) if record_type != "dead_letter" else
                    (topic, str(record["partition"]), str(record["offset"]), record["stage"], record["error_code"]))
        if identity in self._seen:
            self.duplicates += 1
            return
        self._seen.add(identity)
        if record_type != "dead_letter":
            self.valid_samples += sample_count(record_type, record)
            self.by_source[record.get("source") or record.get("provider") or "?"] += sample_count(record_type, record)
        elif record["stage"] in _STREAM_STAGES:
            self.dead_letter_samples += record["sample_count"]
            self.dead_letters_by_code[record["error_code"]] += record["sample_count"]
        else:
            self.later_stage_dead_letters[f"{record['stage']}:{record['error_code']}"] += record["sample_count"]

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()


class Services:
    """Child processes the demo starts (`fleetstream worker`, the ClickHouse sink), logs under `home/logs`."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.log_dir = settings.home / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> None:
        log_path = self.log_dir / f"{name}.log"
        env = {"FLEETSTREAM_STREAMS__IDLE_FLUSH_S": str(self.settings.streams.idle_flush_s), **os.environ,
               "FLEETSTREAM_STREAMS__APP_ID": self.settings.streams.app_id,
               # Both spellings: an inherited FLEETSTREAM_KAFKA__BOOTSTRAP_SERVERS would otherwise point the child
               # at another cluster than these settings (a benchmark's private broker).
               "KAFKA_BOOTSTRAP_SERVERS": self.settings.kafka.bootstrap_servers,
               "FLEETSTREAM_KAFKA__BOOTSTRAP_SERVERS": self.settings.kafka.bootstrap_servers,
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


def _provenance(start: Watermarks, topics: list[str]) -> str:
    """A SQL condition selecting rows whose Kafka provenance is at or after the run's start offsets."""
    clauses = [f"(kafka_topic = '{t}' AND kafka_partition = {p} AND kafka_offset >= {o})"
               for (t, p), o in start.items() if t in topics]
    return " OR ".join(clauses) or "0"


def _stored_counts(settings: Settings, start: Watermarks) -> tuple[int, int]:
    """(valid samples stored, validation dead-letter samples stored) for this run, asked of the running sink."""
    from fleetstream.sinks import run_sql

    stored = " + ".join(f"(SELECT count() FROM fleetstream.{table} WHERE {_provenance(start, topics)})"
                        for table, topics in _TABLE_TOPICS.items())
    dead = (f"SELECT sum(sample_count) FROM fleetstream.dead_letters FINAL WHERE stage IN {_STREAM_STAGES} "
            f"AND ({_provenance(start, [dead_letter_topic(t) for t in RAW_TOPICS])})")
    stored_rows = run_sql(settings, f"SELECT {stored}")[1][0][0]
    dead_rows = run_sql(settings, dead)[1][0][0]
    return int(stored_rows or 0), int(dead_rows or 0)


# --- sources ---------------------------------------------------------------------------------------------------


def _vehicles(settings: Settings, seconds: float, vehicles: int, stop: threading.Event, counts: Counter[str]) -> None:
    from fleetstream.producers import EdgeProducer, VehicleFleetSimulator, run_simulation

    with EdgeProducer(settings.kafka) as producer:
        run_simulation(VehicleFleetSimulator(vehicles=vehicles, first_vehicle_id=1001), producer, seconds, stop=stop)
    counts.update(producer.delivered_samples)


def _test_cell(settings: Settings, seconds: float, stop: threading.Event, counts: Counter[str]) -> None:
    """A dyno cell's edge agent: a JetDrive simulator and client on loopback multicast, an MTS on a tty."""
    from fleetstream.producers import Agent, AgentConfig, SourceSpec

    config = AgentConfig(station_id="demo-cell-1", spool_dir=settings.home / "demo-agent-spool", metrics_port=None,
                         sources=[
                             SourceSpec(name="jetdrive_sim", type="jetdrive_sim",
                                        options={"interface": "127.0.0.1", "rate_hz": 20.0}),
                             SourceSpec(name="jetdrive", type="jetdrive", options={"interface": "127.0.0.1"}),
                             SourceSpec(name="innovate", type="innovate", options={
                                 "simulate": True, "aux": [{"name": "engine_speed", "scale": 10.0, "unit": "rpm"}]}),
                         ])
    agent = Agent(config, settings.kafka)
    agent.start()
    stop.wait(seconds)
    agent.stop(drain_timeout_s=30)
    counts.update(agent.producer.delivered_samples)


def _file_import(settings: Settings, counts: Counter[str]) -> None:
    from fleetstream.producers import EdgeProducer, import_file

    sample = Path(__file__).parents[1] / "producers" / "samples" / "dyno_pull.wp8"
    start_ms = int((datetime.now(UTC) - timedelta(minutes=1)).timestamp() * 1000)  # inside the validation horizon
    with EdgeProducer(settings.kafka) as producer:
        for record in import_file(sample, station_id="demo-cell-1", start_time_ms=start_ms, progress=False,
                                  mapping=sample.with_name("dyno_pull.wp8.mapping.yaml")):
            producer.publish("dyno.samples", "demo-cell-1", record)
    counts.update(producer.delivered_samples)


def _vehicle_client(settings: Settings, seconds: float, stop: threading.Event, counts: Counter[str]) -> None:
    """A device's code, unchanged but for the import: IcsAnalytics fed by a simulated vehicle."""
    from fleetstream.producers import IcsAnalytics, VehicleFleetSimulator

    simulator = VehicleFleetSimulator(vehicles=1, first_vehicle_id=9101, bad_sample_rate=0.0, malformed_rate=0.0)
    with IcsAnalytics(device_id=9001, vehicle_id=9101, fleet_id=42, org_id=7, batch_size=200,
                      batch_interval_seconds=1, kafka=settings.kafka,
                      spool_dir=settings.home / "demo-vehicle-client") as client:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not stop.is_set():
            for topic, _, record in simulator.tick(int(time.time() * 1000)):
                if isinstance(record, dict):
                    _call_client(client, topic, record)
            stop.wait(1.0)
        client.flush()
        counts["vehicle_client"] += client.delivered_samples


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _call_client(client: Any, topic: str, record: dict[str, Any]) -> None:
    """Turn a simulator record into the public client's input dicts (as device code writes them)."""
    if topic == "telemetry.signals":
        client.add_signal({"name": record["name"], "unit": record["unit"], "messageName": record["message_name"],
                           "networkName": record["network_name"], "ecuName": record["ecu_name"], "arbId": "",
                           "paramType": "NUMBER", "signalType": "PID" if record["name"] == "EngineSpeed" else "SIGNAL",
                           "data": [{"value": s["value"], "time": _iso(s["timestamp_ms"])} for s in record["samples"]]})
    elif topic == "telemetry.gps":
        client.add_gps([{"time": _iso(p["timestamp_ms"]), "latitude": p["latitude"], "longitude": p["longitude"],
                         "speed": p["speed"], "bearing": p["bearing_deg"], "available": p["available"]}
                        for p in record["points"]])
    elif topic == "telemetry.dtcs":
        client.add_dtc({"messageName": record["message_name"], "name": record["name"], "ecuName": record["ecu_name"],
                        "networkName": record["network_name"], "ecuId": record["ecu_id"],
                        "data": [{"dtcId": d["dtc_id"], "status": d["status"], "description": d["description"],
                                  "time": _iso(d["timestamp_ms"])} for d in record["dtcs"]]})
    elif topic == "telemetry.netstats":
        client.add_network_stats({"name": record["name"], "totalMessages": record["total_messages"],
                                  "matchedMessages": record["matched_messages"],
                                  "unmatchedMessages": record["unmatched_messages"],
                                  "errorMessages": record["error_messages"], "longMessageParts": 0,
                                  "minTime": _iso(record["min_time_ms"]), "maxTime": _iso(record["max_time_ms"]),
                                  "rate": record["rate"]})


def _fleet_apis(settings: Settings, counts: Counter[str]) -> None:
    """Both providers' pollers, each against a local fake of its API, polled twice (the second incrementally)."""
    from fleetstream.producers import EdgeProducer, build_poller
    from fleetstream.producers.fleet.fake_providers import start_fake

    now = datetime.now(UTC)
    producer = EdgeProducer(settings.kafka)

    def publish(batch: list[tuple[str, bytes, dict[str, Any]]]) -> None:
        for topic, key, record in batch:
            producer.publish(topic, key.decode(), record)
        producer.confirm()

    for provider in ("motive", "samsara"):
        url, fake = start_fake(provider, vehicles=4, seed=11, origin=now - timedelta(hours=1), error_rate=0.05)
        try:
            poller = build_poller(provider, settings.fleet, "fake-token", settings.home / "demo-fleet-checkpoints",
                                  publish, since=now - timedelta(minutes=30), base_url=url, rate_per_s=50.0, burst=50,
                                  backoff_base_s=0.05)
            poller.poll_once(now - timedelta(minutes=5))
            poller.poll_once(datetime.now(UTC))
        finally:
            fake.stop()
    counts.update(producer.delivered_samples)


def _run_sources(settings: Settings, seconds: float, vehicles: int) -> Counter[str]:
    counts: Counter[str] = Counter()
    stop = threading.Event()
    jobs: list[tuple[str, Callable[[], None]]] = [
        ("vehicles", lambda: _vehicles(settings, seconds, vehicles, stop, counts)),
        ("test cell", lambda: _test_cell(settings, seconds, stop, counts)),
        ("file import", lambda: _file_import(settings, counts)),
        ("vehicle client", lambda: _vehicle_client(settings, seconds, stop, counts)),
        ("fleet APIs", lambda: _fleet_apis(settings, counts)),
    ]
    errors: list[str] = []

    def guarded(name: str, job: Callable[[], None]) -> None:
        try:
            job()
        except Exception as exc:
            log.exception("demo source %s failed", name)
            errors.append(f"{name}: {exc}")
            stop.set()

    threads = [threading.Thread(target=guarded, args=job, name=f"demo-{job[0]}") for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError("demo sources failed: " + "; ".join(errors))
    return counts


# --- the run ---------------------------------------------------------------------------------------------------


def run_demo(
    settings: Settings, seconds: float = 20.0, vehicles: int = 5, settle_timeout_s: float = 180.0
) -> dict[str, Any]:
    """Run the pipeline for `seconds` of traffic and return the summary (see the module docstring)."""
    from fleetstream.kafka import require_kafka
    from fleetstream.sinks.graphql.contract_backend import ContractBackend
    from fleetstream.stack import running_broker

    services = Services(settings)
    forwarder_stop = threading.Event()
    backend = ContractBackend(token=settings.sec_auth_token.get_secret_value() if settings.sec_auth_token else None)
    tally: TopicTally | None = None
    with running_broker(settings):
        try:
            require_kafka(settings.kafka)
            create_topics(settings.kafka, settings.topics)
            start = end_offsets(settings, _tallied_topics())
            tally = TopicTally(settings, start)
            backend.start()
            settings = settings.model_copy(update={"graphql_endpoint": backend.url})
            services.start("worker", "worker")
            services.start("sink-clickhouse", "sink", "clickhouse")
            forwarder, forwarder_thread = _start_forwarder(settings, forwarder_stop)
            _wait_for_sink(settings, services)
            wait_for_group(settings.kafka, settings.streams.app_id, check=services.check)
            log.info("publishing for %.0f s: vehicles, a dyno cell, a file import, a vehicle client, fleet APIs",
                     seconds)
            sources = _run_sources(settings, seconds, vehicles)
            produced = sum(sources.values())
            stored, dead_stored = _settle(settings, services, tally, produced, start, settle_timeout_s)
            _wait_for_derived(tally, settings.streams.idle_flush_s)
            _drain_forwarder(forwarder, forwarder_stop, forwarder_thread)
            api = _api_tour(settings)
            return {
                **api,
                "produced_samples": produced,
                "valid_samples": tally.valid_samples,
                "dead_letter_samples": tally.dead_letter_samples,
                "stored_samples": stored,
                "dead_letters_stored": dead_stored,
                "dead_letters_by_reason": dict(tally.dead_letters_by_code),
                "sources": dict(sources),
                "valid_by_source": dict(tally.by_source),
                "redelivered_records": tally.duplicates,
                "windows": tally.derived["telemetry.windows"],
                "kpis": tally.derived["analytics.kpi"],
                "alerts": {"fired": tally.derived["alerts_fired"], "resolved": tally.derived["alerts_resolved"]},
                "graphql_requests": sum(backend.counts.values()),
                "graphql_failures": forwarder.stats.failures,
                "graphql_dead_letters": forwarder.stats.dead_letters,
                "ok": produced == tally.valid_samples + tally.dead_letter_samples
                and stored == tally.valid_samples and dead_stored == tally.dead_letter_samples,
            }
        finally:
            forwarder_stop.set()
            if tally is not None:
                tally.close()
            services.stop()
            backend.stop()


def _api_tour(settings: Settings) -> dict[str, Any]:
    """The read side's part: serve, two roles of the simulated org 7 and an empty tenant, refusals, a report."""
    try:
        from fleetstream.api.tour import api_tour
    except ImportError:  # the api extra is not installed
        return {}
    return api_tour(settings, org="7", vehicles=["1001", "9101"])


def _start_forwarder(settings: Settings, stop: threading.Event) -> tuple[Any, threading.Thread]:
    from fleetstream.sinks import GraphQLForwarder

    forwarder = GraphQLForwarder(settings)
    thread = threading.Thread(target=forwarder.run, args=(stop,), name="demo-graphql-forwarder", daemon=True)
    thread.start()
    return forwarder, thread


def _drain_forwarder(forwarder: Any, stop: threading.Event, thread: threading.Thread, idle_s: float = 3.0) -> None:
    """Let the forwarder finish what is on the topics: stop once its count has not moved for `idle_s`."""
    last, still_since = -1, time.monotonic()
    while time.monotonic() - still_since < idle_s:
        current = forwarder.stats.records_forwarded + forwarder.stats.dead_letters
        if current != last:
            last, still_since = current, time.monotonic()
        time.sleep(0.2)
    stop.set()
    thread.join(timeout=30)


def _wait_for_sink(settings: Settings, services: Services, timeout_s: float = 120.0) -> None:
    """Wait until the sink answers queries. With the embedded store the demo never opens it itself: the
    sink process owns it, so readiness is its query endpoint appearing."""
    from fleetstream.store import embedded_path, is_embedded
    from fleetstream.store.query_server import discover

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        services.check()
        try:
            if is_embedded(settings.clickhouse_dsn) and discover(embedded_path(settings.clickhouse_dsn)) is None:
                raise ConnectionError("the sink's query endpoint is not up yet")
            _stored_counts(settings, {})
            return
        except Exception as exc:
            log.debug("sink not ready yet: %s", exc)
            time.sleep(0.5)
    raise TimeoutError(f"the ClickHouse sink did not answer within {timeout_s:.0f} s (see {services.log_dir})")


def _wait_for_derived(tally: TopicTally, idle_flush_s: float, quiet_s: float = 3.0) -> None:
    """After the sources stop, idle channels flush their windows and periods: wait until that output settles."""
    deadline = time.monotonic() + idle_flush_s * 3 + 30
    last, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        tally.poll(0.5)
        total = sum(tally.derived.values())
        if total != last:
            last, quiet_since = total, time.monotonic()
        elif time.monotonic() - quiet_since > max(quiet_s, idle_flush_s * 1.5) and total > 0:
            return
        time.sleep(0.2)



def _settle(settings: Settings, services: Services, tally: TopicTally, produced: int, start: Watermarks,
            timeout_s: float, stall_s: float = 30.0) -> tuple[int, int]:
    """Wait until every produced sample is valid or dead-lettered, and all of them are stored.

    Gives up after `timeout_s`, or earlier when nothing has moved for `stall_s` (the summary then shows the gap).
    """
    deadline = time.monotonic() + timeout_s
    stored = dead_stored = 0
    progress: tuple[int, ...] = ()
    moved_at = last_log = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - moved_at < stall_s:
        services.check()
        tally.poll(1.0)
        stored, dead_stored = _stored_counts(settings, start)
        accounted = tally.valid_samples + tally.dead_letter_samples
        if accounted >= produced and stored >= tally.valid_samples and dead_stored >= tally.dead_letter_samples:
            return stored, dead_stored
        if (accounted, stored, dead_stored) != progress:
            progress, moved_at = (accounted, stored, dead_stored), time.monotonic()
        if time.monotonic() - last_log >= 5:
            last_log = time.monotonic()
            log.info("waiting: produced %d, accounted %d, stored %d/%d, dead letters stored %d/%d", produced,
                     accounted, stored, tally.valid_samples, dead_stored, tally.dead_letter_samples)
        time.sleep(0.5)
    log.error("not everything was accounted for (produced %d, accounted %d, stored %d)", produced,
              tally.valid_samples + tally.dead_letter_samples, stored)
    return stored, dead_stored


def summary_text(summary: dict[str, Any]) -> str:
    ok = "OK" if summary.get("ok") else "MISMATCH"
    lines = [
        f"fleetstream demo: {ok} in {summary.get('elapsed_s', 0)} s",
        f"  produced samples      {summary['produced_samples']:>10,}",
        f"  valid samples         {summary['valid_samples']:>10,}",
        f"  dead-lettered samples {summary['dead_letter_samples']:>10,}  {summary['dead_letters_by_reason']}",
        f"  stored in ClickHouse  {summary['stored_samples']:>10,}",
        f"  dead letters stored   {summary['dead_letters_stored']:>10,}",
        f"  window aggregates     {summary['windows']:>10,}",
        f"  KPI records           {summary['kpis']:>10,}",
        f"  alerts                {summary['alerts']['fired']:>10,} fired, {summary['alerts']['resolved']} resolved",
        f"  GraphQL requests      {summary['graphql_requests']:>10,}  ({summary['graphql_failures']} failed, "
        f"{summary['graphql_dead_letters']} dead letters)",
        *([f"  read API              {summary['api_requests']:>10,} requests, {summary['api_denied']} refused "
             f"across tenants/owners, {summary['reports']} report written"] if "api_requests" in summary else []),
        "  sources: " + ", ".join(f"{name} {count:,}" for name, count in sorted(summary["sources"].items())),
    ]
    return "\n".join(lines)
