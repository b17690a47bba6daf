"""One typed configuration tree for every part: defaults, then a YAML file, then environment variables.

Built once at the edge (the CLI or an app's start) and passed in; code deeper down never reads the
environment. Secrets (tokens, passwords) come only from the environment and are never logged.

Environment: `FLEETSTREAM_<SECTION>__<FIELD>` for any field (e.g. `FLEETSTREAM_KAFKA__BOOTSTRAP_SERVERS`),
plus the conventional short names `KAFKA_BOOTSTRAP_SERVERS`, `CLICKHOUSE_DSN`, `SCHEMA_REGISTRY_URL`,
`SEC_AUTH_TOKEN` that point a deployment at existing services. `FLEETSTREAM_CONFIG` names the YAML file.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

__all__ = [
    "KEY_PARTITIONER",
    "ChannelRange",
    "ClickHouseSettings",
    "FleetSettings",
    "GraphQLSinkSettings",
    "KafkaSettings",
    "Settings",
    "StackSettings",
    "StreamsSettings",
    "TopicSettings",
    "ValidationSettings",
    "group_instance_id",
    "load_settings",
]


KEY_PARTITIONER = "murmur2_random"
"""librdkafka's name for the Java clients' partitioner, which faust/aiokafka use too (murmur2 of the key; a
random partition for a record without key). With one partitioner everywhere a key has the same partition
number in every topic of the same partition count, so one worker owns a vehicle's raw, valid and derived
records (librdkafka's own default, CRC32, put vehicle 1001 on raw partition 2 and `.valid` partition 0)."""


class KafkaSettings(BaseModel):
    """How every client reaches the cluster; `client_config` passes librdkafka options through (SASL, SSL)."""

    bootstrap_servers: str = "127.0.0.1:9092"
    client_config: dict[str, str] = Field(default_factory=dict)
    schema_registry_url: str | None = None
    compression_type: str = "lz4"
    linger_ms: int = 20
    batch_size_bytes: int = 1_000_000

    @field_validator("client_config")
    @classmethod
    def _one_partitioner(cls, value: dict[str, str]) -> dict[str, str]:
        if value.get("partitioner", KEY_PARTITIONER) != KEY_PARTITIONER:
            raise ValueError(f"partitioner {value['partitioner']!r}: the stream worker partitions by murmur2, so "
                             f"every producer must use {KEY_PARTITIONER!r} or a key lands on different partitions")
        return value

    def client(self, **overrides: Any) -> dict[str, Any]:
        """librdkafka configuration for a confluent-kafka consumer or admin client."""
        return {"bootstrap.servers": self.bootstrap_servers, **self.client_config, **overrides}

    def producer(self, **overrides: Any) -> dict[str, Any]:
        """librdkafka configuration for a confluent-kafka Producer: `client()` with the murmur2 partitioner."""
        return self.client(**{"partitioner": KEY_PARTITIONER, **overrides})


class TopicSpec(BaseModel):
    name: str
    partitions: int = 3
    retention_ms: int = 7 * 24 * 3600 * 1000


def _topics() -> list[TopicSpec]:
    raw = [
        "telemetry.signals",
        "telemetry.dtcs",
        "telemetry.gps",
        "telemetry.netstats",
        "dyno.samples",
        "fleet.locations",
        "fleet.faults",
    ]
    derived = ["telemetry.windows", "analytics.kpi", "analytics.threshold.exceeded", "alert.created"]
    valid = [f"{t}.valid" for t in raw]
    names = raw + valid + derived + [f"dlq.{t}" for t in raw + valid + derived]
    return [TopicSpec(name=n, retention_ms=30 * 24 * 3600 * 1000 if n.startswith("dlq.") else 7 * 24 * 3600 * 1000)
            for n in names]


class TopicSettings(BaseModel):
    """Topic names, partitions and retention: `fleetstream topics create` makes exactly these."""

    replication_factor: int = 1
    topics: list[TopicSpec] = Field(default_factory=_topics)

    @model_validator(mode="after")
    def _co_partitioned(self) -> TopicSettings:
        """Keyed topics the worker reads and writes together need one partition count (see KEY_PARTITIONER)."""
        by_count: dict[int, list[str]] = {}
        for topic in self.topics:
            if not topic.name.startswith("dlq."):
                by_count.setdefault(topic.partitions, []).append(topic.name)
        if len(by_count) > 1:
            listing = "; ".join(f"{n}: {', '.join(names)}" for n, names in sorted(by_count.items()))
            raise ValueError(f"raw, .valid and derived topics must have the same number of partitions, or a "
                             f"vehicle's records land on partitions different workers own: {listing}")
        return self

    @property
    def raw(self) -> list[str]:
        """Topics producers write and the validator reads."""
        return [t.name for t in self.topics if not t.name.endswith(".valid") and not t.name.startswith(
            ("dlq.", "telemetry.windows", "analytics.", "alert."))]


class StackSettings(BaseModel):
    """The local single-node stack (`fleetstream stack up`): a KRaft broker from the official jars."""

    kafka_version: str = "4.1.1"
    kafka_port: int = 9092
    controller_port: int = 9093
    cache_dir: Path = Path.home() / ".cache" / "fleetstream"
    heap_mb: int = 768


class ClickHouseSettings(BaseModel):
    """Where analytics rows go: `chdb://<dir>` (embedded engine, default) or `http(s)://host:8123`."""

    dsn: str | None = None
    batch_rows: int = 50_000
    batch_seconds: float = 1.0
    query_port: int = 8124
    retention_days: int = Field(default=365, ge=1, le=25_000)
    """TTL of stored rows; at most 25,000 days, since ClickHouse DateTime ends in 2106."""
    instance_id: str | None = None
    """The sink's `group.instance.id` (see `group_instance_id`): default host and home, "" = dynamic membership."""


class ChannelRange(BaseModel):
    """Sensor limits for one channel in one unit: outside hard = dead letter (or clamp), outside warning = flagged."""

    channel: str
    unit: str
    aliases: list[str] = Field(default_factory=list)
    hard_min: float | None = None
    hard_max: float | None = None
    warn_min: float | None = None
    warn_max: float | None = None


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


class ValidationSettings(BaseModel):
    """What the validator accepts: ranges per channel and unit, timestamp skew and horizon, reject or sanitize."""

    mode: str = Field(default="reject", pattern="^(reject|sanitize)$")
    max_future_skew_ms: int = 5 * 60 * 1000
    max_age_ms: int = 10 * 365 * 24 * 3600 * 1000
    """Older event times are rejected (`too_old`): catches clocks at the epoch, lets historical runs be imported."""
    ranges: list[ChannelRange] = Field(default_factory=_default_ranges)


FORWARDED_TOPICS = ("telemetry.signals.valid", "telemetry.dtcs.valid", "telemetry.gps.valid",
                    "telemetry.netstats.valid")
"""The validated topics whose records the backend receives."""


class GraphQLSinkSettings(BaseModel):
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


class StreamsSettings(BaseModel):
    """The analytics stage of the worker: dedup, event-time windows, KPIs, alerts, custom metrics.

    `alert_rules`, `dtc` and `metrics` are validated by the worker at start (streams.alerts.AlertRule,
    streams.alerts.DtcAlertSettings, streams.metrics.MetricDefinition), so a bad rule stops it with the reason.
    """

    app_id: str = "fleetstream-streams"
    """The faust app id: the worker's consumer group and the prefix of its table changelog topics."""
    allowed_lateness_ms: int = 10_000
    dedup_horizon_ms: int = 360_000
    tumbling_ms: int = 60_000
    hopping_size_ms: int = 300_000
    hopping_advance_ms: int = 60_000
    kpi_period_ms: int = 300_000
    idle_flush_s: float = 30.0
    """Close the open windows of a channel that has had no data for this long (wall clock): end of a run or a file."""
    alert_rules: list[dict[str, Any]] = Field(default_factory=_default_alert_rules)
    dtc: dict[str, Any] = Field(default_factory=dict)
    metrics: list[dict[str, Any]] = Field(default_factory=list)


class FleetSettings(BaseModel):
    """The Motive and Samsara pollers. Per provider: HTTP overrides (base_url, rate_per_s, burst, verify_tls,
    ca_bundle, use_truststore, timeouts, max_retries). Tokens only from MOTIVE_API_KEY / SAMSARA_API_TOKEN."""

    motive: dict[str, Any] = Field(default_factory=dict)
    samsara: dict[str, Any] = Field(default_factory=dict)
    lookback_s: float = 900.0
    interval_s: float = 60.0
    max_window_s: float = 6 * 3600.0


class Settings(BaseSettings):
    """The whole configuration; see the module docstring for where values come from."""

    model_config = SettingsConfigDict(env_prefix="FLEETSTREAM_", env_nested_delimiter="__", extra="ignore")

    home: Path = Path(".fleetstream")
    """Working data of the local stack and sinks (broker logs and storage, chDB store, spools, pid files)."""
    log_level: str = "INFO"
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    stack: StackSettings = Field(default_factory=StackSettings)
    clickhouse: ClickHouseSettings = Field(default_factory=ClickHouseSettings)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    streams: StreamsSettings = Field(default_factory=StreamsSettings)
    fleet: FleetSettings = Field(default_factory=FleetSettings)
    graphql: GraphQLSinkSettings = Field(default_factory=GraphQLSinkSettings)
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
        return (init_settings, env_settings, _FileSource(settings_cls))


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


_file_data: ContextVar[dict[str, Any] | None] = ContextVar("_file_data", default=None)


class _FileSource(PydanticBaseSettingsSource):
    """The YAML file and the conventional short variables, below `FLEETSTREAM_*` in priority."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return (_file_data.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return _file_data.get() or {}


_SHORT_ENV = {
    "KAFKA_BOOTSTRAP_SERVERS": ("kafka", "bootstrap_servers"),
    "SCHEMA_REGISTRY_URL": ("kafka", "schema_registry_url"),
    "CLICKHOUSE_DSN": ("clickhouse", "dsn"),
    "GRAPHQL_ENDPOINT": ("graphql_endpoint",),
    "SEC_AUTH_TOKEN": ("sec_auth_token",),
}


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Defaults < YAML file (`path` or `$FLEETSTREAM_CONFIG`) < short variables < `FLEETSTREAM_*` < overrides."""
    path = path or (Path(os.environ["FLEETSTREAM_CONFIG"]) if os.environ.get("FLEETSTREAM_CONFIG") else None)
    data: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of settings at the top level")
        data = loaded
    for name, where in _SHORT_ENV.items():
        if os.environ.get(name):
            nested: dict[str, Any] = {where[-1]: os.environ[name]}
            for part in reversed(where[:-1]):
                nested = {part: nested}
            data = _deep_merge(data, nested)
    token = _file_data.set(data)
    try:
        return Settings(**overrides)
    finally:
        _file_data.reset(token)
