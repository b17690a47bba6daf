"""One typed configuration tree for every part: defaults, then a YAML file, then environment variables.

Built once at the edge (the CLI or an app's start) and passed in; code deeper down never reads the
environment. Secrets (tokens, passwords) come only from the environment and are never logged.

Environment: `FLEETSTREAM_<SECTION>__<FIELD>` for any field (e.g. `FLEETSTREAM_KAFKA__BOOTSTRAP_SERVERS`),
plus the conventional short names `KAFKA_BOOTSTRAP_SERVERS`, `CLICKHOUSE_DSN`, `SCHEMA_REGISTRY_URL`,
`SEC_AUTH_TOKEN` that point a deployment at existing services. `FLEETSTREAM_CONFIG` names the YAML file.

Mistakes are refused, not dropped (fleetstream.config_sources): a key or a `FLEETSTREAM_*` variable that names
no setting, a value out of range, a DSN of another scheme. In the YAML file, lists marked `MergeBy` merge item by
item with the defaults, so a file that changes one alert rule keeps the others; a variable gives a list whole.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from fleetstream.config_sources import (
    CheckedAs,
    ConfigError,
    Layer,
    MergeBy,
    Provenance,
    build,
    dotted,
    env_layers,
    invalid,
    masked_leaves,
    read_yaml_mapping,
)
from fleetstream.logs import librdkafka_log
from fleetstream.topics import RAW_TOPICS, Topic, UnknownTopic, default_topic_names, is_dead_letter_topic, topic

__all__ = [
    "CLICKHOUSE_SCHEMES",
    "KEY_PARTITIONER",
    "ApiSettings",
    "ChannelRange",
    "ClickHouseSettings",
    "ConfigError",
    "FleetSettings",
    "GraphQLSinkSettings",
    "HealthSettings",
    "KafkaSettings",
    "ReportSchedule",
    "Settings",
    "StackSettings",
    "StreamsSettings",
    "TopicSettings",
    "ValidationSettings",
    "check_clickhouse_dsn",
    "group_instance_id",
    "load_settings",
]


KEY_PARTITIONER = "murmur2_random"
"""librdkafka's name for the Java clients' partitioner, which faust/aiokafka use too (murmur2 of the key; a
random partition for a record without key). With one partitioner everywhere a key has the same partition
number in every topic of the same partition count, so one worker owns a vehicle's raw, valid and derived
records (librdkafka's own default, CRC32, put vehicle 1001 on raw partition 2 and `.valid` partition 0)."""


class _Section(BaseModel):
    """A part of the tree: an unknown key is an error (a typo must not silently fall back to a default)."""

    model_config = ConfigDict(extra="forbid")


class KafkaSettings(_Section):
    """How every client reaches the cluster; `client_config` passes librdkafka options through (SASL, SSL)."""

    bootstrap_servers: str = Field(default="127.0.0.1:9092", min_length=1)
    client_config: dict[str, str] = Field(default_factory=dict)
    schema_registry_url: str | None = Field(default=None, pattern=r"^(https?|mock)://.+")
    compression_type: str = Field(default="lz4", pattern="^(none|gzip|snappy|lz4|zstd)$")
    linger_ms: int = Field(default=20, ge=0)
    batch_size_bytes: int = Field(default=1_000_000, ge=1)

    @field_validator("client_config")
    @classmethod
    def _one_partitioner(cls, value: dict[str, str]) -> dict[str, str]:
        if value.get("partitioner", KEY_PARTITIONER) != KEY_PARTITIONER:
            raise ValueError(f"partitioner {value['partitioner']!r}: the stream worker partitions by murmur2, so "
                             f"every producer must use {KEY_PARTITIONER!r} or a key lands on different partitions")
        return value

    def client(self, **overrides: Any) -> dict[str, Any]:
        """librdkafka configuration for a confluent-kafka client; its logs go through Python logging, rate-limited."""
        return {"bootstrap.servers": self.bootstrap_servers, "logger": librdkafka_log(), **self.client_config,
                **overrides}

    def producer(self, **overrides: Any) -> dict[str, Any]:
        """librdkafka configuration for a confluent-kafka Producer: `client()` with the murmur2 partitioner."""
        return self.client(**{"partitioner": KEY_PARTITIONER, **overrides})


class TopicSpec(_Section):
    """One topic `fleetstream topics create` makes; retention -1 keeps records forever (Kafka's convention).

    Partitions and retention are configured; what the topic carries comes from the topic model
    (`fleetstream.topics`), so `spec.model.record_type` and `spec.model.dead_letter_topic` answer for any
    configured topic, and a topic the pipeline does not know is allowed (an operator's extra) but unkeyed.
    """

    name: str = Field(min_length=1)
    partitions: int = Field(default=3, ge=1)
    retention_ms: int = Field(default=7 * 24 * 3600 * 1000, ge=-1)

    @property
    def model(self) -> Topic | None:
        """What the topic carries, from the topic model; None for a topic the pipeline does not know."""
        try:
            return topic(self.name)
        except UnknownTopic:
            return None

    @property
    def keyed(self) -> bool:
        """Records placed by vehicle key (not a dead-letter topic): partitions must match the other keyed topics."""
        return not is_dead_letter_topic(self.name)

    @field_validator("retention_ms")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("retention_ms 0 would delete every record at once; use -1 to keep them forever")
        return value


def _topics() -> list[TopicSpec]:
    return [TopicSpec(name=n, retention_ms=30 * 24 * 3600 * 1000 if topic(n).kind == "dead_letter"
                      else 7 * 24 * 3600 * 1000) for n in default_topic_names()]


class TopicSettings(_Section):
    """Topic names, partitions and retention: `fleetstream topics create` makes exactly these."""

    replication_factor: int | None = Field(default=None, ge=1)
    """None: from the cluster (`fleetstream.admin.Replication.for_cluster`): 3 with 3+ brokers, else the count."""
    topics: Annotated[list[TopicSpec], MergeBy("name")] = Field(default_factory=_topics)

    @model_validator(mode="after")
    def _co_partitioned(self) -> TopicSettings:
        """Keyed topics the worker reads and writes together need one partition count (see KEY_PARTITIONER)."""
        by_count: dict[int, list[str]] = {}
        for spec in self.topics:
            if spec.keyed:
                by_count.setdefault(spec.partitions, []).append(spec.name)
        if len(by_count) > 1:
            listing = "; ".join(f"{n}: {', '.join(names)}" for n, names in sorted(by_count.items()))
            raise ValueError(f"raw, .valid and derived topics must have the same number of partitions, or a "
                             f"vehicle's records land on partitions different workers own: {listing}")
        return self

    @property
    def raw(self) -> list[str]:
        """Topics producers write and the validator reads."""
        return [t.name for t in self.topics if t.name in RAW_TOPICS]



class StackSettings(_Section):
    """The local stack (`fleetstream stack up`): KRaft brokers from the official jars, one by default.

    Node i (1-based) listens on `kafka_port + 2 (i - 1)` and `controller_port + 2 (i - 1)`: 9092/9093,
    9094/9095, 9096/9097 with the defaults.
    """

    kafka_version: str = Field(default="4.1.1", min_length=1)
    kafka_port: int = Field(default=9092, ge=1, le=65535)
    controller_port: int = Field(default=9093, ge=1, le=65535)
    brokers: int = Field(default=1, ge=1, le=9)
    """Nodes of the local cluster, each broker and controller (3 tolerates one node down)."""
    cache_dir: Path = Path.home() / ".cache" / "fleetstream"
    heap_mb: int = Field(default=768, ge=128)


CLICKHOUSE_SCHEMES = ("chdb", "http", "https")
"""What clickhouse-connect serves: the embedded engine and the HTTP interface (it has no native-protocol client)."""


def check_clickhouse_dsn(dsn: str) -> str:
    """`dsn` if its scheme is one of CLICKHOUSE_SCHEMES with a store or host, else ValueError (never a fallback:
    clickhouse-connect would read `notadsn` or `mysql://...` as http://localhost:8123)."""
    parts = urlsplit(dsn)
    if parts.scheme not in CLICKHOUSE_SCHEMES or "://" not in dsn:
        found = f", not {parts.scheme}://" if parts.scheme and "://" in dsn else ""
        raise ValueError(f"a ClickHouse DSN starts with {', '.join(s + '://' for s in CLICKHOUSE_SCHEMES)}{found}")
    if parts.scheme == "chdb" and not dsn.removeprefix("chdb://").strip():
        raise ValueError("a chdb:// DSN names the store's directory (chdb:///path/to/store)")
    if parts.scheme != "chdb" and not parts.hostname:
        raise ValueError(f"the DSN names no host ({parts.scheme}://host:port)")
    return dsn


class ClickHouseSettings(_Section):
    """Where analytics rows go: `chdb://<dir>` (embedded engine, default) or `http(s)://host:8123`."""

    dsn: str | None = None
    batch_rows: int = Field(default=50_000, ge=1)
    batch_seconds: float = Field(default=1.0, gt=0)
    query_port: int = Field(default=8124, ge=0, le=65535)
    """0 picks a free port."""
    retention_days: int = Field(default=365, ge=1, le=25_000)
    """TTL of stored rows; at most 25,000 days, since ClickHouse DateTime ends in 2106."""
    instance_id: str | None = None
    """The sink's `group.instance.id` (see `group_instance_id`): default host and home, "" = dynamic membership."""

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, value: str | None) -> str | None:
        return check_clickhouse_dsn(value) if value else None


class ChannelRange(_Section):
    """Sensor limits for one channel in one unit: outside hard = dead letter (or clamp), outside warning = flagged."""

    channel: str = Field(min_length=1)
    unit: str = Field(min_length=1)
    aliases: list[str] = Field(default_factory=list)
    hard_min: float | None = None
    hard_max: float | None = None
    warn_min: float | None = None
    warn_max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        """min <= max for both pairs, and the warning band inside the hard limits (else nothing is ever flagged)."""
        pairs = [("hard_min", "hard_max"), ("warn_min", "warn_max"), ("hard_min", "warn_min"),
                 ("warn_max", "hard_max"), ("hard_min", "warn_max"), ("warn_min", "hard_max")]
        for low, high in pairs:
            low_value, high_value = getattr(self, low), getattr(self, high)
            if low_value is not None and high_value is not None and low_value > high_value:
                raise ValueError(f"{low} {low_value:g} is above {high} {high_value:g}")
        return self


def _default_ranges() -> list[ChannelRange]:
    # DESIGN.md's range table: (hard min, hard max, warning min, warning max)
    return [
        ChannelRange(channel="engine_speed", unit="rpm", aliases=["rpm", "EngineSpeed", "Engine Speed", "engine_rpm"],
                     hard_min=0, hard_max=20000, warn_min=500, warn_max=15000),
        ChannelRange(channel="afr", unit="AFR", aliases=["AFR", "Air/Fuel Ratio", "air_fuel_ratio"],
                     hard_min=6.0, hard_max=35.0, warn_min=10.0, warn_max=20.0),
        ChannelRange(channel="map", unit="kPa", aliases=["MAP", "manifold_pressure", "ManifoldPressure"],
                     hard_min=0, hard_max=300, warn_min=20, warn_max=250),
        ChannelRange(channel="power", unit="hp", aliases=["horsepower", "Power", "hp"],
                     hard_min=-50, hard_max=2000, warn_max=1000),
        ChannelRange(channel="torque", unit="ft-lb", aliases=["Torque"], hard_min=-100, hard_max=2000, warn_max=800),
        ChannelRange(channel="tps", unit="%", aliases=["TPS", "throttle", "ThrottlePosition", "Throttle Position"],
                     hard_min=0, hard_max=100),
        ChannelRange(channel="iat", unit="degF", aliases=["IAT", "intake_air_temp", "IntakeAirTemp"],
                     hard_min=-40, hard_max=300, warn_min=32, warn_max=200),
    ]


class ValidationSettings(_Section):
    """What the validator accepts: ranges per channel and unit, timestamp skew and horizon, reject or sanitize."""

    mode: str = Field(default="reject", pattern="^(reject|sanitize)$")
    max_future_skew_ms: int = Field(default=5 * 60 * 1000, ge=0)
    max_age_ms: int = Field(default=10 * 365 * 24 * 3600 * 1000, ge=1)
    """Older event times are rejected (`too_old`): catches clocks at the epoch, lets historical runs be imported."""
    ranges: Annotated[list[ChannelRange], MergeBy("channel", "unit")] = Field(default_factory=_default_ranges)


FORWARDED_TOPICS = ("telemetry.signals.valid", "telemetry.dtcs.valid", "telemetry.gps.valid",
                    "telemetry.netstats.valid")
"""The validated topics whose records the backend receives."""


class GraphQLSinkSettings(_Section):
    """The GraphQL forwarder: batching (defaults match the public vehicle client), TLS, retries, consumer.

    The endpoint and bearer token are top-level settings (`GRAPHQL_ENDPOINT`, `SEC_AUTH_TOKEN`).
    """

    batch_size: int = Field(default=100, ge=1, description="Signals or DTC entries per request; records per batch.")
    max_samples_per_request: int = Field(default=10_000, ge=1, description="Data points per request.")
    max_gps_points: int = Field(default=10_000, ge=1, description="GPS points per upsertGpsData request.")
    batch_interval_seconds: float = Field(default=1.0, gt=0, description="Longest a record waits in a batch.")
    verify_tls: bool = True
    ca_bundle: Path | None = Field(default=None, description="CA file for the backend's certificate.")
    timeout_seconds: float = Field(default=30.0, gt=0)
    retry_attempts: int = Field(default=5, ge=1, description="Tries per request on network errors and 5xx.")
    retry_base_delay_seconds: float = Field(default=0.5, ge=0)
    retry_max_delay_seconds: float = Field(default=30.0, ge=0)
    group_id: str = "fleetstream-graphql"
    topics: tuple[str, ...] = FORWARDED_TOPICS
    poll_max_messages: int = Field(default=500, ge=1)
    poll_timeout_seconds: float = Field(default=0.2, ge=0)
    instance_id: str | None = None
    """The forwarder's `group.instance.id` (see `group_instance_id`): default host and home, "" = dynamic."""

    def tls_verify(self) -> bool | ssl.SSLContext:
        """httpx's `verify`: off, the system trust store, or a context trusting the CA bundle."""
        if not self.verify_tls:
            return False
        if self.ca_bundle is None:
            return True
        return ssl.create_default_context(cafile=str(self.ca_bundle))


def _default_alert_rules() -> list[dict[str, Any]]:
    return [
        {"rule_id": "over_rev", "channel": "engine_speed", "comparator": ">", "threshold": 6200,
         "for_duration_ms": 300, "hysteresis": 200, "severity": "warning", "message": "engine speed above 6200 rpm"},
        {"rule_id": "lean_afr", "channel": "afr", "comparator": ">", "threshold": 15.5, "for_duration_ms": 1000,
         "hysteresis": 0.3, "severity": "warning", "message": "air/fuel ratio lean"},
        {"rule_id": "coolant_overheat", "channel": "CoolantTemp", "comparator": ">", "threshold": 230,
         "for_duration_ms": 5000, "hysteresis": 5, "severity": "critical", "message": "coolant above 230 degF"},
        {"rule_id": "engine_overspeed", "channel": "EngineSpeed", "comparator": ">", "threshold": 5000,
         "for_duration_ms": 2000, "hysteresis": 250, "severity": "warning", "message": "engine speed above 5000 rpm"},
    ]


class StreamsSettings(_Section):
    """The analytics stage of the worker: dedup, event-time windows, KPIs, alerts, custom metrics.

    `alert_rules`, `dtc` and `metrics` stay plain data here (their models belong to the streams part:
    streams.alerts.AlertRule, streams.alerts.DtcAlertSettings, streams.custom_metrics.MetricDefinition); `load_settings`
    checks what a file or variable sets against those models, and the worker validates them again at start.
    """

    app_id: str = Field(default="fleetstream-streams", min_length=1)
    """The faust app id: the worker's consumer group and the prefix of its table changelog topics."""
    allowed_lateness_ms: int = Field(default=10_000, ge=0)
    dedup_horizon_ms: int = Field(default=360_000, ge=0)
    tumbling_ms: int = Field(default=60_000, ge=1)
    hopping_size_ms: int = Field(default=300_000, ge=1)
    hopping_advance_ms: int = Field(default=60_000, ge=1)
    kpi_period_ms: int = Field(default=300_000, ge=1)
    idle_flush_s: float = Field(default=30.0, gt=0)
    """Close the open windows of a channel that has had no data for this long (wall clock): end of a run or a file."""
    alert_rules: Annotated[list[dict[str, Any]], MergeBy("rule_id"),
                           CheckedAs("fleetstream.streams.alerts:AlertRule")] = Field(
        default_factory=_default_alert_rules)
    dtc: Annotated[dict[str, Any], CheckedAs("fleetstream.streams.alerts:DtcAlertSettings")] = Field(
        default_factory=dict)
    metrics: Annotated[list[dict[str, Any]], MergeBy("name"),
                       CheckedAs("fleetstream.streams.custom_metrics:MetricDefinition")] = Field(default_factory=list)
    instance_id: str | None = None
    """Static group membership id (KIP-345); default `<app_id>-<host>-<n>`, n the lowest free slot on the host."""
    session_timeout_s: float = Field(default=10.0, ge=6.0)
    """How long the group waits for a worker that stopped heartbeating (and was not restarted) before moving its
    partitions; a restarted worker takes them back at once by its instance id."""

    @model_validator(mode="after")
    def _hopping(self) -> Self:
        if self.hopping_advance_ms > self.hopping_size_ms:
            raise ValueError(f"hopping_advance_ms {self.hopping_advance_ms} is above hopping_size_ms "
                             f"{self.hopping_size_ms}: the windows would leave gaps")
        return self


class FleetSettings(_Section):
    """The Motive and Samsara pollers. Per provider: HTTP overrides (base_url, rate_per_s, burst, verify_tls,
    ca_bundle, use_truststore, timeouts, max_retries). Tokens only from MOTIVE_API_KEY / SAMSARA_API_TOKEN."""

    # keys only: base_url may come from the provider's default, so a partial override is not a full HttpSettings
    motive: Annotated[dict[str, Any], CheckedAs("fleetstream.producers.fleet.http:HttpSettings", values=False)] = Field(
        default_factory=dict)
    samsara: Annotated[dict[str, Any],
                       CheckedAs("fleetstream.producers.fleet.http:HttpSettings", values=False)] = Field(
        default_factory=dict)
    lookback_s: float = Field(default=900.0, ge=0)
    interval_s: float = Field(default=60.0, gt=0)
    max_window_s: float = Field(default=6 * 3600.0, gt=0)


ENV_PREFIX = "FLEETSTREAM_"
OTHER_VARIABLES = frozenset({"FLEETSTREAM_CONFIG", "FLEETSTREAM_FAULT", "FLEETSTREAM_USER_PASSWORD"})
"""`FLEETSTREAM_*` variables that are not settings: the YAML file's path, the sink's test-only fault hook and the
password `fleetstream users add|passwd` reads instead of prompting (a secret, so never a setting)."""


class ReportSchedule(_Section):
    """A report `fleetstream serve` writes on its own after each complete week (Monday to Monday, UTC) or month,
    for one org, to `<report dir>/scheduled/<org>/`, announced on `api.reports_topic`."""

    org_id: str = Field(min_length=1)
    kind: Literal["fleet_health", "alerts", "data_quality", "dyno_runs"]
    format: Literal["csv", "xlsx", "pdf"] = "pdf"
    every: Literal["weekly", "monthly"] = "weekly"
    vehicle_ids: list[str] = Field(default_factory=list)
    """Only these vehicles; empty = every vehicle of the org."""


class ApiSettings(_Section):
    """`fleetstream serve`: the read-side HTTP API. The JWT secret only from the environment (JWT_SECRET_KEY)."""

    host: str = "127.0.0.1"
    port: int = 8080
    jwt_secret: SecretStr | None = None
    jwt_previous_secrets: list[SecretStr] = Field(default_factory=list)
    """Secrets of earlier keys: their tokens verify until they expire (key rotation)."""
    token_ttl_s: int = Field(default=3600, ge=60)
    users_topic: str = "fleetstream.users"
    acks_topic: str = "alert.acknowledged"
    audit_topic: str = "audit.log"
    events_topic: str = "analytics.events"
    metric_values_topic: str = "analytics.metric.values"
    definitions_topic: str = "analytics.definitions"
    reports_topic: str = "analytics.report.generated"
    """Where each generated report (requested or scheduled) is announced."""
    max_batch_events: int = Field(default=1000, ge=1, le=100_000)
    """Events (or metric values) one batch request may carry."""
    report_schedules: list[ReportSchedule] = Field(default_factory=list)
    schedule_check_s: float = Field(default=300.0, gt=0)
    """How often serve looks for a scheduled report that is due (and catches up after a restart)."""
    default_org: str | None = None
    """The org that owns records carrying no org id (dyno stations); None = nobody sees them."""
    cache_ttl_s: float = Field(default=300.0, ge=0)
    report_dir: Path | None = None
    """Where generated reports are written; None = `<home>/reports`."""
    max_report_rows: int = Field(default=10_000, ge=1)
    login_free_failures: int = Field(default=5, ge=1)
    """Failed logins per username and per client allowed before each further attempt must wait."""
    login_max_delay_s: float = Field(default=300.0, gt=0)


def _health_address(value: str) -> str:
    """'' (serve nothing) or host:port (0 = a free port); checked here so a typo fails at start, not later."""
    if value:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{value!r} is not host:port (port 0 picks a free one, '' serves nothing)")
    return value


HealthAddress = Annotated[str, AfterValidator(_health_address)]


class HealthSettings(_Section):
    """Where each long-running part serves /health/live, /health/ready, /health and /metrics (`fleetstream.health`).

    host:port per part; port 0 (the default) picks a free port, announced under `home/health` for
    `fleetstream status`; a fixed port is what Kubernetes probes and Prometheus scrape configs need
    (e.g. `FLEETSTREAM_HEALTH__WORKER=0.0.0.0:9401`); '' serves nothing. The API serves its own (api.host/port).
    """

    worker: HealthAddress = "127.0.0.1:0"
    clickhouse_sink: HealthAddress = "127.0.0.1:0"
    graphql_sink: HealthAddress = "127.0.0.1:0"
    edge_agent: HealthAddress = "127.0.0.1:0"
    probe_interval_s: float = Field(default=2.0, gt=0, le=60)
    """How often readiness is checked (a dead broker shows within interval + timeout)."""
    probe_timeout_s: float = Field(default=3.0, gt=0, le=60)


class Settings(BaseSettings):
    """The whole configuration; see the module docstring for where values come from."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid")

    home: Path = Path(".fleetstream")
    """Working data of the local stack and sinks (broker logs and storage, chDB store, spools, pid files)."""
    log_level: str = Field(default="INFO", pattern="(?i)^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    stack: StackSettings = Field(default_factory=StackSettings)
    clickhouse: ClickHouseSettings = Field(default_factory=ClickHouseSettings)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    streams: StreamsSettings = Field(default_factory=StreamsSettings)
    fleet: FleetSettings = Field(default_factory=FleetSettings)
    graphql: GraphQLSinkSettings = Field(default_factory=GraphQLSinkSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    graphql_endpoint: str | None = None
    sec_auth_token: SecretStr | None = None

    @property
    def clickhouse_dsn(self) -> str:
        """The configured DSN, else the embedded store under `home`."""
        return self.clickhouse.dsn or f"chdb://{(self.home / 'clickhouse').resolve()}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings reads and checks the environment itself; `Settings(...)` built directly still reads it
        return (init_settings,) if _loading.get() else (init_settings, env_settings)

    def effective_values(self) -> list[tuple[str, Any, str]]:
        """(key, value, source) of every value, secrets masked; source is "default", the file's path, a
        variable's name or "argument" (what `fleetstream config show` prints)."""
        provenance = self._provenance or Provenance()
        return [(dotted(path), value, provenance.source_of(path)) for path, value in masked_leaves(self)]

    _provenance: Provenance | None = PrivateAttr(default=None)


def group_instance_id(home: Path, configured: str | None, subscription: str = "") -> str | None:
    """A sink consumer's `group.instance.id` (static membership, KIP-345), None for dynamic membership.

    A restarted static member takes its partitions back at once; a dynamic one waits until the group gives up
    on its dead predecessor (the session timeout, 45 s) and rebalances. `configured` wins ("" turns static
    membership off); the default names this host, working directory and `subscription` (group and topics), so
    the same sink restarted is the same member, while a second sink beside it (another home), or one restarted
    with other topics, is another member and gets a rebalance that accounts for its topics.
    """
    if configured is not None:
        return configured or None
    digest = hashlib.blake2b(f"{home.resolve()}\0{subscription}".encode(), digest_size=4).hexdigest()
    return f"{socket.gethostname()}-{digest}"



_loading: ContextVar[bool] = ContextVar("_loading", default=False)

_SHORT_ENV = {
    "KAFKA_BOOTSTRAP_SERVERS": ("kafka", "bootstrap_servers"),
    "SCHEMA_REGISTRY_URL": ("kafka", "schema_registry_url"),
    "CLICKHOUSE_DSN": ("clickhouse", "dsn"),
    "GRAPHQL_ENDPOINT": ("graphql_endpoint",),
    "SEC_AUTH_TOKEN": ("sec_auth_token",),
    "JWT_SECRET_KEY": ("api", "jwt_secret"),
}


def _nested(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    data: dict[str, Any] = {path[-1]: value}
    for part in reversed(path[:-1]):
        data = {part: data}
    return data


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Defaults < YAML file (`path` or `$FLEETSTREAM_CONFIG`) < short variables < `FLEETSTREAM_*` < overrides.

    Raises ConfigError naming the key and its file or variable for anything it cannot use as given.
    """
    if path is None and os.environ.get("FLEETSTREAM_CONFIG"):
        path = Path(os.environ["FLEETSTREAM_CONFIG"])
    layers = [Layer(str(path), read_yaml_mapping(path))] if path is not None else []
    layers += [Layer(name, _nested(where, os.environ[name])) for name, where in _SHORT_ENV.items()
               if os.environ.get(name)]
    layers += env_layers(Settings, os.environ, ENV_PREFIX, "__", OTHER_VARIABLES)
    if overrides:
        layers.append(Layer("argument", overrides, merge_lists=False))
    data, provenance = build(Settings, layers)
    token = _loading.set(True)
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise invalid(exc, Settings, data, provenance) from None
    finally:
        _loading.reset(token)
    settings._provenance = provenance
    return settings
