"""The `fleetstream` command: one entry point for the stack, the producers, the worker, the sinks and queries.

Every command takes the same configuration (see `fleetstream --help`): defaults, then `--config FILE` (or
$FLEETSTREAM_CONFIG), then environment variables. Heavy imports happen inside commands, so `--help` is fast
and a device that installs only the producers extra can still run its commands.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from fleetstream.config import Settings, load_settings
from fleetstream.errors import FleetstreamError
from fleetstream.logs import setup_logging

app = typer.Typer(
    help="fleetstream: vehicle, fleet and dyno telemetry on Apache Kafka.\n\n"
    "Start with `fleetstream demo` (runs the whole pipeline on a local stack and prints a summary). "
    "Point at existing services with KAFKA_BOOTSTRAP_SERVERS and CLICKHOUSE_DSN.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
stack_app = typer.Typer(help="The local single-node stack: a real KRaft Kafka broker from the official jars.",
                        no_args_is_help=True)
topics_app = typer.Typer(help="Kafka topics from the configuration.", no_args_is_help=True)
simulate_app = typer.Typer(help="Simulators that publish realistic telemetry (and deliberate bad data).",
                           no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.add_typer(topics_app, name="topics")
db_app = typer.Typer(help="ClickHouse schema: versioned migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
sink_app = typer.Typer(help="Sinks: ClickHouse storage and the GraphQL forwarder.", no_args_is_help=True)
app.add_typer(sink_app, name="sink")
agent_app = typer.Typer(help="The edge agent: sources → durable spool → Kafka, for dyno PCs and gateways.",
                        no_args_is_help=True)
app.add_typer(simulate_app, name="simulate")
app.add_typer(agent_app, name="agent")
config_app = typer.Typer(help="The effective configuration and where each value came from.", no_args_is_help=True)
app.add_typer(config_app, name="config")


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


def settings_of(ctx: typer.Context) -> Settings:
    settings: Settings = ctx.obj
    return settings


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"fleetstream {version('fleetstream')}")
        except PackageNotFoundError:
            typer.echo("fleetstream (not installed as a package: version unknown)")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML configuration file.",
                                                envvar="FLEETSTREAM_CONFIG", exists=True, dir_okay=False)] = None,
    log_level: Annotated[LogLevel, typer.Option("--log-level", help="DEBUG shows tracebacks of errors too.",
                                                case_sensitive=False)] = "INFO",
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True,
                                          callback=_print_version)] = False,
) -> None:
    """Load the configuration once; every command receives it."""
    setup_logging(log_level)
    ctx.obj = load_settings(config)  # a ConfigError is reported by the CLI's one error handler (exit 2)


def _positive(value: float) -> float:
    """Option callback for rates and periods: zero or less would divide by zero or never tick."""
    if value <= 0:
        raise typer.BadParameter(f"{value:g} is not > 0")
    return value


InspectFormat = Literal["auto", "wp8", "pvlog", "csv", "jetdrive", "mts"]  # producers.inspection.inspectors()
ImportFormat = Literal["auto", "wp8", "pvlog", "csv"]  # the file-import parsers (producers.files)


def echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


# --- stack -------------------------------------------------------------------------------------------------


def _stack_settings(ctx: typer.Context, brokers: int | None) -> Settings:
    settings = settings_of(ctx)
    if brokers is None:
        return settings
    return settings.model_copy(update={"stack": settings.stack.model_copy(update={"brokers": brokers})})


BrokersOption = Annotated[int | None, typer.Option(
    "--brokers", min=1, max=9, help="KRaft nodes (each broker and controller); 3 survives one node down. "
    "Node i listens on kafka_port + 2(i-1). Default: stack.brokers (1).")]


@stack_app.command("up")
def stack_up(ctx: typer.Context, timeout_s: Annotated[float, typer.Option(help="Seconds to wait for readiness.")]
             = 120.0, brokers: BrokersOption = None) -> None:
    """Start the broker, or a cluster with --brokers 3 (jars fetched through Maven on first use); fine to run twice.

    With several brokers point the clients at all of them, e.g.
    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096, and `fleetstream topics create`
    replicates every topic to three brokers with min.insync.replicas=2.
    """
    from fleetstream.stack import LocalCluster

    status = LocalCluster(_stack_settings(ctx, brokers)).up(timeout_s=timeout_s)
    typer.echo(status.to_text())


@stack_app.command("down")
def stack_down(ctx: typer.Context) -> None:
    """Stop every local broker under the home (single or cluster) cleanly; fine when nothing runs."""
    from fleetstream.stack import LocalCluster

    LocalCluster(settings_of(ctx)).down()
    typer.echo("stack stopped")


@stack_app.command("status")
def stack_status(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False,
                 brokers: BrokersOption = None) -> None:
    """Whether the brokers run, where, and where their logs are."""
    from fleetstream.stack import LocalCluster

    settings = _stack_settings(ctx, brokers)
    status = (LocalCluster(settings) if brokers else LocalCluster.found(settings)).status()
    if as_json:
        echo_json(status.to_dict())
    else:
        typer.echo(status.to_text())


# --- config ------------------------------------------------------------------------------------------------


@config_app.command("show")
def config_show(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every effective value and where it came from: default, the YAML file, or the variable that set it.

    Secrets (tokens, passwords, the password in a DSN) are shown as ***.
    """
    rows = settings_of(ctx).effective_values()
    if as_json:
        echo_json({key: {"value": value, "source": source} for key, value, source in rows})
        return
    width = max(len(key) for key, _, _ in rows)
    for key, value, source in rows:
        shown = value if isinstance(value, str) else json.dumps(value)
        typer.echo(f"{key:{width}s}  {shown}  [{source}]")


# --- topics ------------------------------------------------------------------------------------------------


@topics_app.command("create")
def topics_create(ctx: typer.Context) -> None:
    """Create every configured topic that does not exist yet (idempotent)."""
    from fleetstream.admin import create_topics
    from fleetstream.kafka import require_kafka

    settings = settings_of(ctx)
    require_kafka(settings.kafka, [])  # one line within seconds, not librdkafka's retries
    report = create_topics(settings.kafka, settings.topics)
    replication = f" (replication {report.replication.factor}, min.insync.replicas {report.replication.min_insync} " \
                  f"on {report.replication.brokers} brokers)" if report.replication and report.created else ""
    typer.echo(f"created {len(report.created)} topics{replication}, {len(report.existing)} already existed")
    for name in report.created:
        typer.echo(f"  + {name}")
    for name, (actual, configured) in report.mismatched.items():
        typer.echo(f"error: {name} has {actual} partitions, configured {configured}", err=True)
    if report.mismatched:
        raise typer.Exit(1)


@topics_app.command("list")
def topics_list(ctx: typer.Context) -> None:
    """The configured topics with partitions and retention."""
    for topic in settings_of(ctx).topics.topics:
        typer.echo(f"{topic.name:40s} partitions={topic.partitions} retention={topic.retention_ms // 3_600_000}h")


# --- operations --------------------------------------------------------------------------------------------


@app.command("status")
def status_cmd(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every part (worker, sinks, edge agents, API) and every consumer group on one screen: state, lag, last error.

    Parts are found through the addresses they announce under the home (`<home>/health`), the fixed addresses
    in `health.*` (e.g. FLEETSTREAM_HEALTH__WORKER=10.0.0.5:9401) and api.host/api.port. Each part's /health says
    whether it is ready and what failed; the groups' lag comes from Kafka (committed offsets against the end of
    each partition). Exits 1 when Kafka or a part is not ready, so scripts and cron can use it.
    """
    from fleetstream.sinks.clickhouse import GROUP_ID
    from fleetstream.status import collect, render

    settings = settings_of(ctx)
    report = collect(settings, [settings.streams.app_id, GROUP_ID, settings.graphql.group_id])
    if as_json:
        echo_json(report.to_dict())
    else:
        typer.echo(render(report))
    if not report.healthy:
        raise typer.Exit(1)


# --- streams -----------------------------------------------------------------------------------------------


@app.command("worker")
def worker(ctx: typer.Context) -> None:
    """Run the faust-streaming worker (validation, windows, KPIs, alerts) until interrupted."""
    from fleetstream.streams import run_worker

    settings = settings_of(ctx)
    run_worker(settings, loglevel=settings.log_level)


# --- simulators --------------------------------------------------------------------------------------------


@simulate_app.command("vehicles")
def simulate_vehicles(
    ctx: typer.Context,
    seconds: Annotated[float, typer.Option(help="How long to run; 0 runs until interrupted.", min=0)] = 30.0,
    vehicles: Annotated[int, typer.Option(help="Number of simulated vehicles.", min=1)] = 5,
    sample_hz: Annotated[float, typer.Option(help="Samples per second per channel (> 0).", callback=_positive)]
    = 10.0,
    bad_sample_rate: Annotated[float, typer.Option(help="Fraction of samples made NaN or out of range.", min=0,
                                                   max=1)] = 0.01,
    first_vehicle_id: Annotated[int, typer.Option(help="Vehicle ids count up from this one (the Kafka key).")] = 1001,
) -> None:
    """Publish simulated vehicle signals, GPS, DTCs and network statistics through the edge producer.

    Exits 0 only when the broker acknowledged every message (also after an interrupt)."""
    from fleetstream.kafka import require_kafka
    from fleetstream.producers import EdgeProducer, VehicleFleetSimulator, run_simulation
    from fleetstream.producers.vehicle_sim import TOPICS

    settings = settings_of(ctx)
    require_kafka(settings.kafka, TOPICS)
    simulator = VehicleFleetSimulator(vehicles=vehicles, sample_hz=sample_hz, bad_sample_rate=bad_sample_rate,
                                      first_vehicle_id=first_vehicle_id)
    with EdgeProducer(settings.kafka) as producer:
        run_simulation(simulator, producer, seconds or float("inf"), stop=_until_signalled())
    typer.echo(f"delivered {producer.delivered_messages} messages: {dict(producer.delivered_samples)} samples")


@simulate_app.command("jetdrive")
def simulate_jetdrive(
    seconds: Annotated[float, typer.Option(help="How long to stream; 0 runs until interrupted.", min=0)] = 0.0,
    group: Annotated[str, typer.Option(help="Multicast group.")] = "224.0.2.10",
    port: Annotated[int, typer.Option(help="UDP port.", min=1, max=65535)] = 22344,
    interface: Annotated[str, typer.Option(help="Interface address to send and join on (127.0.0.1 for one host).")]
    = "0.0.0.0",
    seed: Annotated[int, typer.Option(help="Seed: the same seed streams byte-identical pulls.")] = 0,
    rate_hz: Annotated[float, typer.Option(help="ChannelValues messages per second (> 0).", callback=_positive)]
    = 50.0,
) -> None:
    """Stream realistic dyno pulls (RPM sweep, drum-consistent power and torque, AFR, MAP, IAT, TPS) as JetDrive."""
    import threading

    from fleetstream.producers import JetDriveSimulator

    stop = threading.Event()
    if seconds:
        threading.Timer(seconds, stop.set).start()
    simulator = JetDriveSimulator(group=group, port=port, interface=interface, seed=seed, rate_hz=rate_hz)
    try:
        simulator.run(stop)
    except KeyboardInterrupt:
        stop.set()
    typer.echo(f"sent {simulator.sent_datagrams} datagrams, {simulator.sent_values} values")


# --- files and captures -------------------------------------------------------------------------------------


@app.command("inspect")
def inspect_cmd(
    path: Annotated[Path, typer.Argument(help="A capture or file: .pcap/.pcapng (JetDrive), MTS serial capture, "
                                              ".pvlog, .wp8 or .csv.", exists=True, dir_okay=False)],
    fmt: Annotated[InspectFormat, typer.Option("--format", help="The file's format; auto detects it.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """What a capture or file decodes to, without publishing anything: format, counts, channels with units,
    time span, value ranges, and errors with their offsets. Exits 1 when the file has errors."""
    from fleetstream.producers import inspect

    report = inspect(path, fmt)
    typer.echo(report.to_json() if as_json else report.to_text())
    if not report.ok:
        what = report.fatal or f"{report.error_count} errors"
        raise FleetstreamError(what if what.startswith(f"{path}:") else f"{path}: {what}",
                               "" if as_json else "the report above says where")


@app.command("import")
def import_cmd(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Files to import.", exists=True, dir_okay=False)],
    station: Annotated[str, typer.Option(help="Dyno cell or gateway id (the Kafka key).")],
    fmt: Annotated[ImportFormat, typer.Option("--format", help="The files' format; auto detects it.")] = "auto",
    mapping: Annotated[Path | None, typer.Option(help="YAML column mapping: columns: {header: {channel, unit}}.",
                                                 exists=True, dir_okay=False)] = None,
    start_time: Annotated[str | None, typer.Option(help="Absolute start time (ISO-8601 or epoch ms); default: "
                                                        "the file's own, else its modification time.")] = None,
    batch_samples: Annotated[int, typer.Option(help="Samples per Kafka message.", min=1)] = 500,
    strict: Annotated[bool, typer.Option(help="Fail on the first bad row instead of counting it.")] = False,
    force: Annotated[bool, typer.Option(help="Send again a file the ledger says was imported.")] = False,
) -> None:
    """Import Power Vision logs, WinPEP 8 runs or CSV exports into dyno.samples, with a progress bar.

    Idempotent: a file already imported completely (same content) is skipped; batch ids and sample keys are
    derived from the file's content, so a re-send is recognised downstream. A file enters the import ledger
    only once the broker acknowledged all of its messages; any that were not end the import with exit 1.
    """
    import time as time_

    from fleetstream.kafka import require_kafka
    from fleetstream.producers import (
        EdgeProducer,
        FileFormatError,
        ImportLedger,
        import_file,
        load_mapping,
        parse_time_ms,
    )

    settings = settings_of(ctx)
    start_ms = None
    if start_time:
        try:
            start_ms = int(start_time) if start_time.isdigit() else parse_time_ms(start_time, "--start-time")
        except ValueError as exc:
            raise typer.BadParameter(str(exc).removeprefix("--start-time: "), param_hint="--start-time") from None
    ledger = ImportLedger(settings.home / "imports.json")
    failed = False
    load_mapping(mapping)  # a bad mapping is the user's input to fix (exit 2), whether or not Kafka answers
    require_kafka(settings.kafka, ["dyno.samples"])
    with EdgeProducer(settings.kafka) as producer:
        for path in paths:
            try:
                job = import_file(path, fmt, station_id=station, mapping=mapping, batch_samples=batch_samples,
                                  start_time_ms=start_ms, strict=strict)
            except (FileFormatError, ValueError) as exc:
                typer.echo(f"error: {exc}", err=True)
                failed = True
                continue
            done = ledger.get(job.file_id)
            if done and not force:
                typer.echo(f"{path}: already imported on {done['imported_at']} ({done['samples']} samples); "
                           "--force sends it again")
                continue
            try:
                for record in job:
                    producer.publish("dyno.samples", station, record)
            except FileFormatError as exc:
                typer.echo(f"error: {exc}", err=True)
                failed = True
                continue
            producer.confirm()  # raises unless every message of this file was acknowledged
            ledger.record(job.file_id, path=str(path), station=station, samples=job.stats.samples,
                          imported_at=time_.strftime("%Y-%m-%dT%H:%M:%SZ", time_.gmtime()))
            typer.echo(f"{path}: {job.fmt}, {job.stats.samples} samples in {job.batches} batches, "
                       f"{job.stats.errors} bad rows, start time from {job.start_time_source}")
    if failed:
        raise typer.Exit(1)


# --- fleet APIs ---------------------------------------------------------------------------------------------


@app.command("poll")
def poll(
    ctx: typer.Context,
    provider: Annotated[str, typer.Argument(help="motive or samsara.")],
    since: Annotated[str | None, typer.Option(help="Start here when there is no checkpoint (ISO-8601).")] = None,
    once: Annotated[bool, typer.Option(help="Poll once up to now and exit, instead of every interval.")] = False,
    base_url: Annotated[str | None, typer.Option(help="API base URL (e.g. a local fake).")] = None,
) -> None:
    """Poll a fleet API incrementally into fleet.locations and fleet.faults.

    The token comes from MOTIVE_API_KEY or SAMSARA_API_TOKEN. Checkpoints live in <home>/fleet-checkpoints,
    one per provider and endpoint, and move only after the broker acknowledged what was published.
    """
    import os
    from datetime import datetime

    from fleetstream.kafka import require_kafka
    from fleetstream.producers import TOKEN_VARIABLES, EdgeProducer, build_poller

    settings = settings_of(ctx)
    if provider not in TOKEN_VARIABLES:
        typer.echo(f"error: unknown provider {provider!r}: use motive or samsara", err=True)
        raise typer.Exit(2)
    token = os.environ.get(TOKEN_VARIABLES[provider])
    if not token:
        typer.echo(f"error: set {TOKEN_VARIABLES[provider]} to the {provider} API token", err=True)
        raise typer.Exit(2)
    producer = EdgeProducer(settings.kafka)

    def publish(batch: list[tuple[str, bytes, dict[str, Any]]]) -> None:
        for topic, key, record in batch:
            producer.publish(topic, key.decode(), record)
        producer.confirm()  # the checkpoint moves only after this returns

    overrides = {"base_url": base_url} if base_url else {}
    try:
        start = datetime.fromisoformat(since) if since else None
    except ValueError:
        raise typer.BadParameter(f"{since!r} is not an ISO-8601 date or time", param_hint="--since") from None
    poller = build_poller(provider, settings.fleet, token, settings.home / "fleet-checkpoints", publish,
                          since=start, **overrides)
    require_kafka(settings.kafka, poller.topics.values())
    if once:
        typer.echo(f"{provider}: published {poller.poll_once()} new items")
    else:
        poller.run(_until_signalled())
    echo_json(poller.stats.__dict__)


# --- edge agent --------------------------------------------------------------------------------------------


@agent_app.command("run")
def agent_run(
    ctx: typer.Context,
    agent_config: Annotated[Path, typer.Option("--config", help="agent.yaml: station id, spool, sources.",
                                               exists=True, dir_okay=False)],
    seconds: Annotated[float, typer.Option(help="Stop after this long (0 = until interrupted).")] = 0.0,
) -> None:
    """Run the sources in agent.yaml through one durable spool and one Kafka producer.

    Example agent.yaml: see examples/agent.yaml. Metrics: http://127.0.0.1:<metrics_port>/metrics.
    Status while it runs: `fleetstream agent status --spool-dir <spool_dir>`.
    """
    import signal
    import threading

    from fleetstream.producers import Agent, load_agent_config

    config = load_agent_config(agent_config)
    settings = settings_of(ctx)
    agent = Agent(config, settings.kafka, health=settings.health, home=settings.home)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    agent.start()
    stop.wait(seconds or None)
    agent.stop()
    echo_json(agent.status())


@agent_app.command("status")
def agent_status(
    spool_dir: Annotated[Path, typer.Option(help="The agent's spool_dir.")] = Path(".fleetstream/spool"),
) -> None:
    """Health of a running (or the last) agent: sources, circuit states, spool backlog, counters."""
    from fleetstream.producers import read_status

    try:
        echo_json(read_status(spool_dir))
    except FileNotFoundError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


# --- sinks -------------------------------------------------------------------------------------------------


def _until_signalled(seconds: float = 0.0) -> Any:
    """An Event set by SIGTERM/SIGINT (and after `seconds`, if given): how long-running commands stop cleanly."""
    import signal
    import threading

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if seconds:
        timer = threading.Timer(seconds, stop.set)
        timer.daemon = True
        timer.start()
    return stop


@db_app.command("migrate")
def db_migrate(ctx: typer.Context) -> None:
    """Apply pending migrations (sinks/migrations/*.sql) in order; safe to run again."""
    from fleetstream.sinks import migrate
    from fleetstream.store import connect

    settings = settings_of(ctx)
    client = connect(settings.clickhouse_dsn, lock_wait_s=10)
    try:
        applied = migrate(client, settings.clickhouse.retention_days)
    finally:
        client.close()
    typer.echo(f"applied {len(applied)} migrations" + "".join(f"\n  + {m.version:03d} {m.name}" for m in applied))


@db_app.command("status")
def db_status(ctx: typer.Context) -> None:
    """Which migrations are applied and which are pending."""
    from fleetstream.sinks import status
    from fleetstream.store import connect

    client = connect(settings_of(ctx).clickhouse_dsn, lock_wait_s=10)
    try:
        for row in status(client):
            state = f"applied {row.applied_at}" if row.applied else "pending"
            typer.echo(f"{row.version:03d} {row.name:32s} {state}")
    finally:
        client.close()


@sink_app.command("clickhouse")
def sink_clickhouse(
    ctx: typer.Context,
    seconds: Annotated[float, typer.Option(help="Stop after this long (0 = until interrupted).")] = 0.0,
) -> None:
    """Store validated, derived and dead-letter topics in ClickHouse, exactly once (migrations applied first).

    With the embedded store it also serves read-only queries on 127.0.0.1 (clickhouse.query_port), which
    is how `fleetstream query` reaches the store while the sink owns it.
    """
    from fleetstream.sinks import ClickHouseSink
    from fleetstream.sinks.clickhouse import Fault

    # a second sink on the same embedded store ends with StoreLockedError, naming the holder's pid
    stats = ClickHouseSink(settings_of(ctx), fault=Fault.from_env()).run(_until_signalled(seconds))
    echo_json(stats.as_dict())


QueryFormat = Literal["table", "csv", "json", "parquet"]  # sinks.clickhouse.queries.FORMATS (a test keeps them equal)


@app.command("query")
def query_cmd(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="A query of the pack; omit to list them.")] = None,
    vehicle: Annotated[str | None, typer.Option(help="Vehicle or station id.")] = None,
    from_: Annotated[str | None, typer.Option("--from", help="Start of the range: ISO-8601 date or time, UTC unless "
                                                             "it has an offset (2026-11-30T10:00:00+02:00).")] = None,
    to: Annotated[str | None, typer.Option(help="End of the range (excluded), written like --from.")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="Another parameter the query lists, as "
                                                                    "NAME=VALUE (repeatable).")] = None,
    fmt: Annotated[QueryFormat, typer.Option("--format", help="Output format.")] = "table",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to a file instead of stdout.")] = None,
    sql: Annotated[str | None, typer.Option(help="Run this read-only SQL (in the fleetstream database) instead "
                                                 "of a named query.")] = None,
) -> None:
    """Ask ClickHouse the questions users ask: `fleetstream query` lists the pack, `fleetstream query NAME` runs one.

    Works while the sink runs (through its query endpoint) and when it does not (opening the store).
    """
    from fleetstream.sinks import list_queries, run_query, run_sql
    from fleetstream.sinks.clickhouse import render

    if name is None and sql is None:
        for named in list_queries():
            params = ", ".join(f"--{p}" if p in _QUERY_OPTIONS else f"--param {p}=<{t}>"
                               for p, t in named.parameters.items())
            typer.echo(f"{named.name:30s} {named.description}" + (f"  [{params}]" if params else ""))
        return
    if name is not None and sql is not None:
        raise typer.BadParameter("give a query name or --sql, not both", param_hint="NAME / --sql")
    settings = settings_of(ctx)
    if sql is not None:
        columns, rows = run_sql(settings, sql)
    else:
        assert name is not None
        values = {"vehicle": vehicle, "from": from_, "to": to, **_named_values(param or [])}
        columns, rows = run_query(settings, name, values)
    rendered = render(columns, rows, fmt)
    if output is not None:
        output.write_bytes(rendered if isinstance(rendered, bytes) else rendered.encode())
        typer.echo(f"{len(rows)} rows written to {output}")
    elif isinstance(rendered, bytes):
        raise typer.BadParameter("parquet output needs --output FILE", param_hint="--format")
    else:
        typer.echo(rendered)


_QUERY_OPTIONS = ("vehicle", "from", "to")


def _named_values(pairs: list[str]) -> dict[str, str]:
    """`--param NAME=VALUE` pairs; the query checks the names and the types of the values."""
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--param")
        if key.strip() in _QUERY_OPTIONS:
            raise typer.BadParameter(f"use --{key.strip()} for {key.strip()}", param_hint="--param")
        values[key.strip()] = value
    return values


@app.command("export")
def export_cmd(
    ctx: typer.Context,
    table: Annotated[str, typer.Option(help="samples, gps_points, dtcs, network_stats, fleet_locations, "
                                            "window_aggregates, kpis, alerts, dead_letters, ...")],
    from_: Annotated[str, typer.Option("--from", help="First day (YYYY-MM-DD, included) or an ISO instant.")],
    to: Annotated[str, typer.Option(help="Last day (included) or an ISO instant (excluded).")],
    out: Annotated[Path, typer.Option(help="Output folder; files go to <out>/<table>/date=YYYY-MM-DD/.",
                                      file_okay=False)],
) -> None:
    """Export a time range as Parquet with Hive-style date partitions (the layout BigQuery, Spark, DuckDB read)."""
    from fleetstream.sinks import export_parquet

    result = export_parquet(settings_of(ctx), table, _day_or_instant(from_, "--from"), _day_or_instant(to, "--to"),
                            out)
    echo_json(result.as_dict())


def _day_or_instant(text: str, option: str) -> Any:
    """A day (YYYY-MM-DD) or an ISO-8601 instant, checked before the store is asked anything."""
    import datetime as dt

    try:
        return dt.date.fromisoformat(text) if len(text) == 10 else dt.datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a day (YYYY-MM-DD) or an ISO-8601 time", param_hint=option) \
            from None


@sink_app.command("graphql")
def sink_graphql(
    ctx: typer.Context,
    seconds: Annotated[float, typer.Option(help="Stop after this long (0 = until interrupted).")] = 0.0,
    drain: Annotated[bool, typer.Option(help="Forward what is there and stop when the topics are idle.")] = False,
) -> None:
    """Forward validated signals, DTCs, GPS and network stats to the GraphQL backend (GRAPHQL_ENDPOINT).

    createConfiguration and createMessage ids are cached; requests are batched by count, time and samples;
    offsets are committed only after the backend accepted; rejected records become dead letters.
    With --drain it exits 0 only when every record read was accepted or its dead letter acknowledged by
    Kafka, and the offsets were committed.
    """
    from fleetstream.kafka import require_kafka
    from fleetstream.sinks import GraphQLForwarder
    from fleetstream.topics import dead_letter_topic

    settings = settings_of(ctx)
    if not settings.graphql_endpoint:
        typer.echo("error: set GRAPHQL_ENDPOINT (or graphql_endpoint in the config)", err=True)
        raise typer.Exit(2)
    topics = settings.graphql.topics
    require_kafka(settings.kafka, [*topics, *map(dead_letter_topic, topics)])
    forwarder = GraphQLForwarder(settings)
    forwarder.client.probe()
    stats = forwarder.drain() if drain else forwarder.run(_until_signalled(seconds))
    echo_json(stats.__dict__)


@app.command("fake-backend")
def fake_backend(
    port: Annotated[int, typer.Option(help="Port (0 picks a free one).", min=0, max=65535)] = 8088,
    host: Annotated[str, typer.Option(help="Address to bind (0.0.0.0 in a container).")] = "127.0.0.1",
    token: Annotated[str | None, typer.Option(help="Require this bearer token.", envvar="SEC_AUTH_TOKEN")] = None,
) -> None:
    """A local GraphQL backend that type-checks every request against the backend's contract and records it.

    For demos and contract tests: point GRAPHQL_ENDPOINT at the printed URL.
    """
    from fleetstream.sinks.graphql.contract_backend import ContractBackend

    try:
        backend = ContractBackend(token=token, host=host, port=port)
    except OSError as exc:
        raise FleetstreamError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                               "pick another --port, or 0 for a free one") from exc
    typer.echo(f"contract backend listening on {backend.url}")
    backend.serve(_until_signalled())
    typer.echo(json.dumps(dict(backend.counts)))


# --- benchmarks ---------------------------------------------------------------------------------------------

bench_app = typer.Typer(help="Benchmarks: throughput and latency of each part, measured on this machine.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("produce")
def bench_produce_cmd(
    ctx: typer.Context,
    samples: Annotated[int, typer.Option(help="Samples per run (100 per message).")] = 2_000_000,
    repeats: Annotated[int, typer.Option(help="Runs (median reported, min and max shown).")] = 3,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Samples/s and MB/s of the edge producer path, next to raw confluent-kafka on the same bytes and the broker's
    own kafka-producer-perf-test (the machine's limit)."""
    from fleetstream.benchmarks.common import render_json
    from fleetstream.benchmarks.produce import bench_produce, to_table
    from fleetstream.stack import running_broker

    settings = settings_of(ctx)
    with running_broker(settings) as bootstrap:
        report = bench_produce(bootstrap, samples=samples, repeats=repeats, settings=settings)
    typer.echo(render_json(report) if as_json else to_table(report))


@bench_app.command("streams")
def bench_streams_cmd(
    ctx: typer.Context,
    samples: Annotated[int, typer.Option(help="Samples on the input topic.")] = 1_000_000,
    repeats: Annotated[int, typer.Option(help="Runs per job.")] = 3,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Samples/s through validate + dedup + windows: the faust worker next to the same job written with Quix
    Streams and as a plain confluent-kafka loop, on the same topic contents (outputs checked equal)."""
    from fleetstream.benchmarks.common import render_json
    from fleetstream.benchmarks.peers_bench import bench_peers, to_table
    from fleetstream.stack import running_broker

    with running_broker(settings_of(ctx)) as bootstrap:
        report = bench_peers(bootstrap, samples=samples, repeats=repeats)
    typer.echo(render_json(report) if as_json else to_table(report))


@bench_app.command("worker")
def bench_worker_cmd(
    ctx: typer.Context,
    samples: Annotated[int, typer.Option(help="Backlog for the throughput measurement.")] = 1_000_000,
    rate: Annotated[float, typer.Option(help="Offered samples/s for the latency measurement.")] = 20_000,
    seconds: Annotated[float, typer.Option(help="Duration of the latency measurement.")] = 30,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Our worker alone: throughput on a preloaded backlog (validate + dedup + windows + alerts + KPIs) and the
    latency of `.valid` records and of final windows at a fixed offered rate."""
    from fleetstream.benchmarks.common import render_json
    from fleetstream.benchmarks.worker import bench_streams, to_table
    from fleetstream.stack import running_broker

    settings = settings_of(ctx)
    with running_broker(settings) as bootstrap:
        report = bench_streams(bootstrap, samples=samples, rate=rate, duration_s=seconds, settings=settings)
    typer.echo(render_json(report) if as_json else to_table(report))


@bench_app.command("e2e")
def bench_e2e_cmd(
    ctx: typer.Context,
    rate: Annotated[float, typer.Option(help="Offered samples/s for the latency measurement.")] = 50_000,
    seconds: Annotated[float, typer.Option(help="Duration of the latency measurement.")] = 30,
    quick: Annotated[bool, typer.Option(help="10 s steps instead of 60 s in the sustained-rate search.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Latency from a sample's device time to its row being queryable in ClickHouse (p50/p95/p99) at a fixed
    rate, and the highest rate the whole pipeline sustains without growing consumer lag."""
    from fleetstream.benchmarks.common import render_json
    from fleetstream.benchmarks.e2e import bench_e2e_private, to_table

    report = bench_e2e_private(settings_of(ctx), rate=rate, seconds=seconds, quick=quick)
    typer.echo(render_json(report) if as_json else to_table(report))


@bench_app.command("soak")
def bench_soak_cmd(
    ctx: typer.Context,
    minutes: Annotated[float, typer.Option(help="How long the steady load runs.")] = 20.0,
    seed: Annotated[int, typer.Option(help="Seeds the kill times and which part is killed.")] = 1,
    rate: Annotated[float, typer.Option(help="Offered samples/s.")] = 5_000,
    kill_every: Annotated[float, typer.Option(help="Mean seconds between kills (+-30 %).")] = 120.0,
    brokers: Annotated[int, typer.Option(min=1, max=5, help="Brokers of the private cluster; above 1 a random "
                                         "broker is among the parts killed (and restarted).")] = 1,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Steady load through producer -> worker -> ClickHouse sink with a random SIGKILL of the worker or the sink
    (or, with --brokers 3, a broker) every couple of minutes (restarted at once): samples lost and duplicated, and
    the recovery time of each kill."""
    from fleetstream.benchmarks.common import render_json
    from fleetstream.benchmarks.soak import bench_soak_private, to_table

    report = bench_soak_private(settings_of(ctx), brokers=brokers, minutes=minutes, seed=seed, rate=rate,
                                kill_every_s=kill_every)
    typer.echo(render_json(report) if as_json else to_table(report))
    if report["soak_lost"] or report["soak_duplicated"] or report["soak_unrecovered_kills"]:
        raise typer.Exit(1)


@bench_app.command("dashboard")
def bench_dashboard_cmd(
    ctx: typer.Context,
    vehicles: Annotated[int, typer.Option(min=1, max=100_000, help="Vehicles in the generated fleet.")] = 1000,
    days: Annotated[int, typer.Option(min=1, max=365, help="Days of hourly KPIs and samples per vehicle.")] = 30,
    repeats: Annotated[int, typer.Option(min=1, max=100, help="Page loads measured (median reported).")] = 5,
    screenshots: Annotated[Path | None, typer.Option(help="Also write fleet-dashboard.png and dyno-run.png here.")]
    = None,
    chromium: Annotated[str, typer.Option(help="The Chromium binary Playwright drives.")] = "/usr/bin/chromium",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Fleet dashboard load time in a real browser (navigation start to charts drawn) with a generated fleet of
    1,000 vehicles on a private broker and a temporary store: JSON key `dashboard_load_ms` (target < 2,000)."""
    from fleetstream.benchmarks.common import render_json
    from fleetstream.benchmarks.dashboard import bench_dashboard, to_table

    if not Path(chromium).exists():
        from fleetstream.errors import ConfigError

        raise ConfigError(f"no Chromium at {chromium}", "install it (`apt-get install chromium`) or pass "
                                 "--chromium PATH")
    report = bench_dashboard(settings_of(ctx), vehicles=vehicles, days=days, repeats=repeats,
                             screenshots=screenshots, chromium=chromium)
    typer.echo(render_json(report) if as_json else to_table(report))


@bench_app.command("all")
def bench_all_cmd(
    ctx: typer.Context,
    quick: Annotated[bool, typer.Option(help="Small workloads and single runs: a smoke run, not figures.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Every benchmark in one run on the local stack; --json gives the named figures runs are compared by."""
    from fleetstream.benchmarks.suite import as_json as suite_json
    from fleetstream.benchmarks.suite import bench_all, to_table
    from fleetstream.stack import running_broker

    settings = settings_of(ctx)
    with running_broker(settings) as bootstrap:
        report = bench_all(settings, bootstrap, quick)
    typer.echo(suite_json(report) if as_json else to_table(report))
    if report["failed"]:
        raise typer.Exit(1)  # the other parts' figures are printed; the exit status says the run is incomplete


@bench_app.command("edge")
def bench_edge_cmd(
    ctx: typer.Context,
    rate: Annotated[int, typer.Option(help="Samples/s of the steady-state agent.")] = 1000,
    seconds: Annotated[float, typer.Option(help="Steady-state measurement time.")] = 30.0,
    outage_samples: Annotated[int, typer.Option(help="Samples spooled during the outage (1 h at 1,000/s).")]
    = 3_600_000,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Resident memory and CPU of one edge agent publishing `rate` samples/s, and its drain rate after an outage."""
    from fleetstream.benchmarks.edge import bench_edge, to_table
    from fleetstream.stack import running_broker

    with running_broker(settings_of(ctx)) as bootstrap:
        result = bench_edge(bootstrap, rate, seconds, outage_samples)
    typer.echo(json.dumps(result) if as_json else to_table(result))


@bench_app.command("sink")
def bench_sink_cmd(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    dsn: Annotated[str | None, typer.Option(help="ClickHouse DSN (default: a fresh temporary chDB store).")] = None,
    repeats: Annotated[int, typer.Option(help="Runs per batch size (median reported).")] = 3,
) -> None:
    """Rows/s into ClickHouse by batch size (1k, 10k, 100k) through the sink's insert path, next to a plain
    clickhouse-connect columnar insert of the same rows."""
    from fleetstream.benchmarks.sink import bench_sink, to_table

    report = bench_sink(dsn, repeats=repeats)
    typer.echo(json.dumps(report) if as_json else to_table(report))


@bench_app.command("api")
def bench_api_cmd(
    ctx: typer.Context,
    vehicles: Annotated[int, typer.Option(min=1, help="Vehicles of the one org loaded.")] = 1000,
    days: Annotated[int, typer.Option(min=1, max=365, help="Days of KPIs, windows, alerts loaded.")] = 30,
    users: Annotated[int, typer.Option(min=1, help="Concurrent users (fleet managers of the org).")] = 100,
    requests: Annotated[int, typer.Option(min=1, help="Requests per user per probe.")] = 5,
    kpi_minutes: Annotated[int, typer.Option(min=1, help="KPI period (the worker's default is 5).")] = 5,
    window_minutes: Annotated[int, typer.Option(min=1, help="Window length of the loaded aggregates.")] = 5,
    probe: Annotated[list[str] | None, typer.Option(help="Only these probes (repeatable): dashboard, aggregate, "
                                                         "dashboard_compute, aggregate_compute (the default), "
                                                         "dashboard_uncached.")] = None,
    browser: Annotated[bool, typer.Option(help="Also time the fleet dashboard page in Chromium with VEHICLES "
                                               "vehicles (`bench dashboard`): key dashboard_load_ms.")] = True,
    chromium: Annotated[str, typer.Option(help="The Chromium binary Playwright drives.")] = "/usr/bin/chromium",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """p50/p95/p99 latency of the fleet dashboard and of a metrics aggregate with USERS concurrent users, on a
    store loaded with VEHICLES vehicles and DAYS days of windows and KPIs (`fleetstream serve` in its own
    process, a private broker and a temporary store; ~2 GB of disk for the defaults); then, unless
    --no-browser, the fleet dashboard's load time in Chromium (`bench dashboard`, its own generated fleet)."""
    from fleetstream.benchmarks.common import render_json
    from fleetstream.benchmarks.read_api import PROBES, bench_api, to_table

    unknown = sorted(set(probe or ()) - PROBES.keys())
    if unknown:
        typer.echo(f"error: unknown probe {', '.join(unknown)}; choose from {', '.join(PROBES)}", err=True)
        raise typer.Exit(2)
    if browser and not Path(chromium).exists():
        from fleetstream.errors import ConfigError

        raise ConfigError(f"no Chromium at {chromium}", "install it (`apt-get install chromium`), pass "
                          "--chromium PATH, or --no-browser")
    report = bench_api(settings_of(ctx), vehicles=vehicles, days=days, users=users, requests_per_user=requests,
                       kpi_minutes=kpi_minutes, window_minutes=window_minutes, probes=probe,
                       progress=lambda line: typer.echo(line, err=True))
    text = to_table(report)
    if browser:
        from fleetstream.benchmarks import dashboard

        typer.echo("timing the fleet dashboard in Chromium", err=True)
        page = dashboard.bench_dashboard(settings_of(ctx), vehicles=vehicles, days=days, chromium=chromium)
        report = {**report, "dashboard_load_ms": page["dashboard_load_ms"],
                  "dashboard_load_warm_ms": page["dashboard_load_warm_ms"], "browser": page}
        text += "\n\n" + dashboard.to_table(page)
    typer.echo(render_json(report) if as_json else text)


# --- read side ---------------------------------------------------------------------------------------------

users_app = typer.Typer(help="Users and API keys of `fleetstream serve` (kept on a compacted Kafka topic).",
                        no_args_is_help=True)
app.add_typer(users_app, name="users")


@app.command("serve")
def serve_cmd(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Address to bind (default api.host, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default api.port, 8080).")] = None,
) -> None:
    """The read-side HTTP API: dashboards, metrics, alerts, drill-down, dyno runs, audit, reports (/docs)."""
    from fleetstream.api import serve

    serve(settings_of(ctx), host, port)


def _users(ctx: typer.Context) -> Any:
    from confluent_kafka import KafkaException

    from fleetstream.admin import replication_for
    from fleetstream.api import UserError, UserStore

    settings = settings_of(ctx)
    store = UserStore(settings.kafka, settings.api.users_topic)
    try:
        store.ensure_topic(replication_factor=replication_for(settings.kafka, settings.topics).factor)
        store.load()
    except (KafkaException, TimeoutError, UserError) as exc:
        typer.echo(f"error: users topic {settings.api.users_topic} on {settings.kafka.bootstrap_servers}: {exc}",
                   err=True)
        raise typer.Exit(2) from exc
    return store


def _user_command(action: Any) -> Any:
    from fleetstream.api import UserError

    try:
        return action()
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _password(password: str | None) -> str:
    return password or os.environ.get("FLEETSTREAM_USER_PASSWORD") or typer.prompt(
        "password", hide_input=True, confirmation_prompt=True)


@users_app.command("add")
def users_add(
    ctx: typer.Context,
    username: str,
    org: Annotated[str, typer.Option(help="The user's tenant (org_id of the data they see).")],
    role: Annotated[str, typer.Option(help="owner, fleet_manager, technician, admin, executive or support.")],
    vehicle: Annotated[list[str] | None, typer.Option(help="A vehicle the user sees (repeat); default all for "
                                                            "roles other than owner and technician.")] = None,
    password: Annotated[str | None, typer.Option(help="Else $FLEETSTREAM_USER_PASSWORD, else prompted.")] = None,
    machine: Annotated[bool, typer.Option(help="No password: a machine user that only uses API keys.")] = False,
) -> None:
    """Add a user (stored when the broker acknowledged it)."""
    from fleetstream.api import Role

    if role not in Role.__members__.values():
        typer.echo(f"error: unknown role {role}; one of {', '.join(r.value for r in Role)}", err=True)
        raise typer.Exit(2)
    secret = None if machine else _password(password)
    store = _users(ctx)
    user = _user_command(lambda: store.add(username, secret, org, Role(role), tuple(vehicle or ())))
    echo_json(user.public())


@users_app.command("list")
def users_list(ctx: typer.Context) -> None:
    """Every user (never their hashes)."""
    echo_json([u.public() for u in _users(ctx).all()])


@users_app.command("disable")
def users_disable(ctx: typer.Context, username: str,
                  enable: Annotated[bool, typer.Option(help="Enable again instead.")] = False) -> None:
    """Disable a user: their tokens and API keys stop working at once in every serve process."""
    store = _users(ctx)
    echo_json(_user_command(lambda: store.set_disabled(username, not enable)).public())


@users_app.command("passwd")
def users_passwd(ctx: typer.Context, username: str,
                 password: Annotated[str | None, typer.Option(help="Else $FLEETSTREAM_USER_PASSWORD or prompted.")]
                 = None) -> None:
    """Set a user's password."""
    secret = _password(password)
    store = _users(ctx)
    echo_json(_user_command(lambda: store.set_password(username, secret)).public())


@users_app.command("apikey")
def users_apikey(ctx: typer.Context, username: str) -> None:
    """Create an API key for a user; it is printed once (only its hash is stored)."""
    store = _users(ctx)
    key, _user = _user_command(lambda: store.add_api_key(username))
    typer.echo(key)


# --- demo --------------------------------------------------------------------------------------------------


@app.command("demo")
def demo(
    ctx: typer.Context,
    seconds: Annotated[float, typer.Option(help="How long the simulators publish.")] = 20.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
    vehicles: Annotated[int, typer.Option(help="Simulated vehicles.")] = 5,
) -> None:
    """Run the whole pipeline end to end on the local stack, print what happened, and stop what it started.

    Starts the broker (unless KAFKA_BOOTSTRAP_SERVERS points elsewhere), creates the topics, starts the
    worker and the sinks, runs the simulators, waits until every sample is accounted for, and prints
    produced, valid, dead-lettered and stored counts.
    """
    import signal

    from fleetstream.demo import run_demo

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt  # unwinds run_demo, which stops what it started

    signal.signal(signal.SIGTERM, interrupted)
    started = time.monotonic()
    settings = settings_of(ctx)
    # A demo run is short: close idle windows and KPI periods after 3 s, not the production 30 s.
    if "FLEETSTREAM_STREAMS__IDLE_FLUSH_S" not in os.environ:
        settings.streams.idle_flush_s = 3.0
    summary = run_demo(settings, seconds=seconds, vehicles=vehicles)
    summary["elapsed_s"] = round(time.monotonic() - started, 1)
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        from fleetstream.demo import summary_text

        typer.echo(summary_text(summary))
    if not summary.get("ok", False):
        sys.exit(1)


def run() -> None:
    """The `fleetstream` console script: the app, with every failure reported as one `error:` line (cli_errors)."""
    from fleetstream.cli_errors import run_app

    sys.exit(run_app(app))


if __name__ == "__main__":
    run()
