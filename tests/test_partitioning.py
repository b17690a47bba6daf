"""One partitioner everywhere: a key has the same partition in every raw, valid and derived topic.

The edge producer (librdkafka) and the stream worker (faust on aiokafka) are different clients; they agree only
if both hash keys with Kafka's murmur2. The unit tests pin the worker's hash to Kafka's own reference values and
check that every producer configuration asks librdkafka for murmur2; the integration test produces through the
edge producer, lets the real worker validate and aggregate, and reads every topic's partitions back.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner, murmur2
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
from pydantic import ValidationError

from fleetstream.admin import create_topics, wait_for_group
from fleetstream.config import KEY_PARTITIONER, KafkaSettings, Settings, TopicSettings, TopicSpec
from fleetstream.demo import Services
from fleetstream.producers.edge import EdgeProducer

# Apache Kafka's UtilsTest.testMurmur2: what the Java client's partitioner hashes these keys to (signed int32).
KAFKA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}

WORKER_GROUP = "fleetstream-streams"


def _signed(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


def worker_partition(key: bytes, partitions: int) -> int:
    """The partition the worker's producer (faust → aiokafka's DefaultPartitioner) sends `key` to."""
    return int(DefaultPartitioner()(key, list(range(partitions)), list(range(partitions))))


def test_the_worker_hashes_keys_like_the_java_client() -> None:
    assert {key: _signed(murmur2(key)) for key in KAFKA_MURMUR2} == KAFKA_MURMUR2
    # Java: Utils.toPositive(murmur2("foobar")) % 50 == 1357151166 % 50
    assert worker_partition(b"foobar", 50) == 16


def test_every_producer_configuration_asks_for_murmur2() -> None:
    kafka = KafkaSettings(client_config={"linger.ms": "7"})
    assert KEY_PARTITIONER == "murmur2_random"  # librdkafka's name for the Java partitioner
    assert EdgeProducer(kafka).config["partitioner"] == KEY_PARTITIONER
    assert EdgeProducer(kafka, None, **{"linger.ms": 1}).config["partitioner"] == KEY_PARTITIONER
    assert kafka.producer(**{"acks": "all"})["partitioner"] == KEY_PARTITIONER
    assert "partitioner" not in kafka.client()  # consumers would warn about a producer property


def test_another_partitioner_in_the_client_config_is_refused() -> None:
    with pytest.raises(ValidationError, match="murmur2"):
        KafkaSettings(client_config={"partitioner": "consistent_random"})


def test_keyed_topics_with_different_partition_counts_are_refused() -> None:
    topics = TopicSettings().topics
    changed = [t.model_copy(update={"partitions": 6}) if t.name == "telemetry.signals.valid" else t for t in topics]
    with pytest.raises(ValidationError, match="same number of partitions"):
        TopicSettings(topics=changed)
    # dead-letter topics are not read together with anything keyed, so they may differ
    dlq = [TopicSpec(name=t.name, partitions=1) if t.name.startswith("dlq.") else t for t in topics]
    assert TopicSettings(topics=dlq).topics == dlq


# --- on the real broker, through the real worker -------------------------------------------------------------


@pytest.mark.integration
def test_topics_create_reports_an_existing_topic_with_another_partition_count(kafka_bootstrap: str,
                                                                              topic_factory: Any) -> None:
    from confluent_kafka.admin import AdminClient

    name = topic_factory(partitions=1)  # made earlier, by hand or by an older configuration
    topics = TopicSettings(topics=[TopicSpec(name=name, partitions=3), TopicSpec(name=f"{name}.valid", partitions=3),
                                   TopicSpec(name=f"dlq.{name}", partitions=1)])
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    try:
        report = create_topics(kafka, topics)
        assert report.mismatched == {name: (1, 3)}
        assert set(report.created) == {f"{name}.valid", f"dlq.{name}"}
        assert create_topics(kafka, topics).mismatched == {name: (1, 3)}  # reported every time, not only once
    finally:
        admin = AdminClient(kafka.client())  # held until the futures resolve
        for future in admin.delete_topics([f"{name}.valid", f"dlq.{name}"], operation_timeout=30).values():
            future.result()


def _ids(key: str) -> dict[str, Any]:
    return {"batch_id": f"{key}-{uuid.uuid4().hex}", "source": "partition-test", "org_id": "7", "fleet_id": "42",
            "vehicle_id": key, "device_id": f"dev-{key}"}


def _records(key: str, now_ms: int) -> list[tuple[str, dict[str, Any]]]:
    """One record per raw topic: 5 s of engine speed over the alert thresholds (and one NaN, a dead letter)."""
    times = [now_ms - 5_000 + i * 100 for i in range(50)]
    samples = [{"timestamp_ms": t, "value": math.nan if i == 7 else 7_000.0, "svalue": None, "flags": 0}
               for i, t in enumerate(times)]
    signal = {**_ids(key), "name": "EngineSpeed", "unit": "rpm", "message_name": "EEC1", "network_name": "CAN1",
              "ecu_name": "ECM", "ecu_id": "", "arb_id": "", "file_id": "", "message_date": "", "param_type": "RAW",
              "signal_type": "SIGNAL", "param_id": "", "samples": samples}
    dtc = {**_ids(key), "name": "DTC", "message_name": "DM1", "network_name": "CAN1", "ecu_name": "ECM",
           "ecu_id": "14DA80F1", "arb_id": "", "file_id": "", "message_date": "",
           "dtcs": [{"dtc_id": "P0301", "status": "2F", "description": "misfire", "timestamp_ms": now_ms,
                     "extended": [], "snapshot": []}]}
    gps = {**_ids(key), "points": [{"timestamp_ms": now_ms, "latitude": 42.1, "longitude": -83.2, "accuracy_m": 3.0,
                                    "altitude_m": None, "speed": 12.5, "bearing_deg": 90.0, "available": None}]}
    netstats = {**_ids(key), "timestamp_ms": now_ms, "name": "CAN1", "upload_id": None, "file_id": "",
                "total_messages": 100, "matched_messages": 90, "unmatched_messages": 10, "error_messages": 0,
                "long_message_parts": 0, "min_time_ms": now_ms - 10_000, "max_time_ms": now_ms, "rate": 10.0}
    dyno = {"batch_id": f"{key}-{uuid.uuid4().hex}", "source": "partition-test", "station_id": key, "provider": "JD",
            "run_id": "", "channel": "power", "unit": "hp", "sensor_state": "ok",
            "samples": [{"timestamp_ms": t, "value": 300.0, "flags": 0} for t in times]}
    location = {"batch_id": f"{key}-{uuid.uuid4().hex}", "provider": "motive", "provider_vehicle_id": key,
                "vin": None, "fleet_number": None,
                "locations": [{"timestamp_ms": now_ms, "latitude": 1.5, "longitude": 2.5, "speed_mph": 30.0,
                               "heading_degrees": None, "engine_state": "On", "driver_id": None, "driver_name": None,
                               "location_description": "", "odometer_miles": 12.5}]}
    fault = {"batch_id": f"{key}-{uuid.uuid4().hex}", "provider": "samsara", "provider_vehicle_id": key, "vin": None,
             "fleet_number": None,
             "faults": [{"fault_id": "x1", "code": "SPN100", "description": None, "status": "open",
                         "first_observed_ms": now_ms, "last_observed_ms": now_ms, "source_address": "0"}]}
    return [("telemetry.signals", signal), ("telemetry.dtcs", dtc), ("telemetry.gps", gps),
            ("telemetry.netstats", netstats), ("dyno.samples", dyno), ("fleet.locations", location),
            ("fleet.faults", fault)]


def _end_offsets(consumer: Consumer, topics: list[str]) -> list[TopicPartition]:
    metadata = consumer.list_topics(timeout=10)
    return [TopicPartition(topic, p, consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1])
            for topic in topics for p in metadata.topics[topic].partitions]


def _partitions_by_key(consumer: Consumer, keys: set[bytes], topics: list[str], until: float
                       ) -> Iterator[dict[tuple[str, bytes], set[int]]]:
    """Yields, after every poll, the partitions each (topic, key) of ours was read from so far."""
    seen: dict[tuple[str, bytes], set[int]] = defaultdict(set)
    while time.monotonic() < until:
        for message in consumer.consume(num_messages=1000, timeout=0.5):
            key = message.key()
            if message.error() is None and key in keys:
                seen[(message.topic() or "", key)].add(message.partition() or 0)
        yield seen


@pytest.fixture(scope="module")
def worker(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The real worker (`fleetstream worker`) on the configured topics, closing idle windows after 2 s."""
    settings = Settings(home=tmp_path_factory.mktemp("partition-home"),
                        kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap))
    settings.streams.idle_flush_s = 2.0
    create_topics(settings.kafka, settings.topics)
    services = Services(settings)
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("FLEETSTREAM_STREAMS__IDLE_FLUSH_S", "2")
            env.delenv("FLEETSTREAM_CONFIG", raising=False)
            services.start("worker", "worker")
        wait_for_group(settings.kafka, WORKER_GROUP, check=services.check)
        yield settings
    finally:
        services.stop()


@pytest.mark.integration
@pytest.mark.slow
def test_a_key_has_the_same_partition_in_every_raw_valid_and_derived_topic(worker: Settings) -> None:
    settings = worker
    partitions = {t.partitions for t in settings.topics.topics if not t.name.startswith("dlq.")}
    assert partitions == {3}, "the default configuration: one partition count (3) for every keyed topic"
    raw = settings.topics.raw
    derived = ["telemetry.windows", "analytics.kpi", "analytics.threshold.exceeded", "alert.created"]
    topics = [*raw, *[f"{t}.valid" for t in raw], *derived, "dlq.telemetry.signals"]
    keys = [f"cop-{uuid.uuid4().hex[:6]}-{i}" for i in range(40)]
    expected = {k.encode(): worker_partition(k.encode(), 3) for k in keys}
    assert len(set(expected.values())) == 3, "the keys cover every partition"

    reader = Consumer(settings.kafka.client(**{"group.id": f"cop-{uuid.uuid4().hex[:8]}",
                                               "enable.auto.commit": False}))
    reader.assign(_end_offsets(reader, topics))
    delivered: dict[tuple[str, bytes], set[int]] = defaultdict(set)

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        assert err is None, err
        delivered[(msg.topic() or "", msg.key() or b"")].add(msg.partition() or 0)

    now_ms = int(time.time() * 1000)
    with EdgeProducer(settings.kafka) as producer:
        for key in keys:
            for topic, record in _records(key, now_ms):
                producer.publish(topic, key, record, on_delivery)
    assert len(delivered) == len(keys) * len(raw)
    # the edge producer put every key where the worker's partitioner puts it
    assert {k: p for k, p in delivered.items() if p != {expected[k[1]]}} == {}

    wanted = {(topic, k.encode()) for topic in topics for k in keys}
    seen: dict[tuple[str, bytes], set[int]] = {}
    try:
        for seen in _partitions_by_key(reader, set(expected), topics, time.monotonic() + 120):
            if wanted <= seen.keys():
                break
    finally:
        reader.close()
    missing = sorted({topic for topic, _ in wanted - seen.keys()})
    assert not missing, f"no records of some keys arrived on {missing}"
    misplaced = {f"{topic} {key.decode()}": (sorted(p), expected[key]) for (topic, key), p in seen.items()
                 if p != {expected[key]}}
    assert misplaced == {}, "(partitions seen, partition expected) per topic and key"
