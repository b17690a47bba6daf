"""Real services for integration tests and benchmarks: a Kafka cluster and a ClickHouse DSN, found or started.

Shipped (not under tests/) because `fleetstream bench` uses it too; nothing in the pipeline imports it.

Resolution, most explicit first:
- Kafka: `KAFKA_BOOTSTRAP_SERVERS` if set; else a testcontainers Kafka when a Docker engine answers; else the
  local `KafkaStack` (official jars, no Docker) on free loopback ports with its home in a scratch folder.
- ClickHouse: `CLICKHOUSE_DSN` if set; else a testcontainers ClickHouse server when Docker answers; else the
  embedded engine, `chdb://<scratch folder>`.

Each resolver is a context manager: what it started it stops on exit, what it found it leaves alone. The
environment is passed in by the caller (tests/conftest.py), not read here.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from fleetstream.config import Settings, StackSettings, load_settings
from fleetstream.stack import KafkaStack, LocalCluster, cluster_bootstrap
from fleetstream.store.discovery import process_alive

__all__ = [
    "CLICKHOUSE_IMAGE",
    "KAFKA_IMAGE",
    "ResolvedService",
    "clickhouse_service",
    "docker_available",
    "free_ports",
    "kafka_service",
    "local_cluster",
    "local_cluster_settings",
    "local_stack_settings",
    "reap_orphaned_stacks",
]

log = logging.getLogger(__name__)

KAFKA_IMAGE = "confluentinc/cp-kafka:7.6.0"
CLICKHOUSE_IMAGE = "clickhouse/clickhouse-server:24.8"
DOCKER_PING_TIMEOUT_S = 2.0
OWNER_FILE = "owner.pid"
"""Next to a private local stack: the pid of the process that started it, so a leaked broker can be found."""


@dataclass(frozen=True)
class ResolvedService:
    """Where a service is (`address`: bootstrap servers or DSN) and how it was found: env, docker, local."""

    address: str
    source: str


@functools.cache
def docker_available() -> tuple[bool, str]:
    """(True, version) if a Docker engine answers a ping within ~2 s, else (False, why); checked once per process."""
    try:
        import docker
    except ImportError:
        return False, "the docker SDK is not installed"
    try:
        client = docker.from_env(timeout=DOCKER_PING_TIMEOUT_S)
        try:
            client.ping()
            version = client.version().get("Version", "?")
        finally:
            client.close()
    except Exception as exc:  # the SDK raises DockerException, requests' and OS errors alike
        return False, f"{type(exc).__name__}: {exc}"
    return True, f"Docker engine {version}"


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports that were free a moment ago (the kernel's choice, so parallel runs differ)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def local_stack_settings(home: Path, base: Settings | None = None) -> Settings:
    """Settings for a private local broker under `home` on free ports; jar cache and heap come from `base`."""
    base = base or load_settings()
    kafka_port, controller_port = free_ports(2)
    stack = StackSettings(**{**base.stack.model_dump(), "kafka_port": kafka_port, "controller_port": controller_port})
    kafka = base.kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{kafka_port}"})
    return base.model_copy(update={"home": home, "stack": stack, "kafka": kafka})


def free_port_block(count: int, attempts: int = 200) -> int:
    """The first of `count` consecutive loopback ports that were all free a moment ago (for a local cluster,
    whose node i listens on base + 2 (i - 1)), outside the kernel's ephemeral range.

    Outside that range because the cluster's nodes are killed and restarted: while a node is down its clients keep
    reconnecting to its port, and a connect to a free port inside the ephemeral range can get that same port as
    its source and connect to itself (TCP simultaneous open), which would hold the port against the restarted node.
    (A just-killed node's own closed connections hold it for a few seconds too: `PORT_RELEASE_GRACE_S` in stack.)
    """
    low, high = _outside_ephemeral_range()
    for _ in range(attempts):
        base = random.randrange(low, high - count)
        if all(_bindable(port) for port in range(base, base + count)):
            return base
    raise RuntimeError(f"no {count} consecutive free loopback ports found in {low}-{high}")


def _outside_ephemeral_range(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> tuple[int, int]:
    """(low, high) of loopback ports the kernel never picks as a connection's source: below its ephemeral range
    (Linux's from `path`, else the IANA one, 49152-65535), or above it when the range starts too low."""
    try:
        first, last = (int(v) for v in path.read_text().split()[:2])
    except (OSError, ValueError):
        first, last = 49152, 65535
    if first > 12_000:
        return 10_000, first
    if last < 63_000:
        return last + 1, 65_536
    return 10_000, 32_768  # no range is outside: keep the old behaviour's odds


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def local_cluster_settings(home: Path, brokers: int, base: Settings | None = None) -> Settings:
    """Settings for a private local cluster of `brokers` nodes under `home` on a free block of ports."""
    base = base or load_settings()
    first = free_port_block(2 * brokers)
    stack = StackSettings(**{**base.stack.model_dump(), "kafka_port": first, "controller_port": first + 1,
                             "brokers": brokers})
    kafka = base.kafka.model_copy(update={"bootstrap_servers": cluster_bootstrap(stack)})
    return base.model_copy(update={"home": home, "stack": stack, "kafka": kafka})


def reap_orphaned_stacks(root: Path) -> list[int]:
    """Stop private brokers in `root/*/*/` whose starting process is gone; return their pids.

    A test session that is killed (CI timeout, SIGKILL) cannot stop the broker it started, which would then hold
    ~1 GB until the machine restarts. Brokers of live sessions, including concurrent ones, are left alone.
    """
    stopped: list[int] = []
    for owner_file in root.glob(f"*/*/{OWNER_FILE}"):
        try:
            owner = int(owner_file.read_text().strip())
        except (OSError, ValueError):
            continue
        if process_alive(owner):
            continue
        cluster = LocalCluster.found(Settings(home=owner_file.parent / "stack"))
        pids = [node.pid for node in cluster.status().nodes if node.running and node.pid is not None]
        if pids:
            log.warning("stopping kafka pids %s left running by dead process %s (%s)", pids, owner,
                        owner_file.parent)
            cluster.down(timeout_s=10.0)
            stopped += pids
        owner_file.unlink(missing_ok=True)
    return stopped


@contextlib.contextmanager
def kafka_service(env: Mapping[str, str], scratch: Path, base: Settings | None = None,
                  timeout_s: float = 120.0) -> Iterator[ResolvedService]:
    """A Kafka cluster for the duration of the block; see the module docstring for the order tried.

    The local stack's files live in `scratch/stack`, with `scratch/owner.pid` naming this process for
    `reap_orphaned_stacks`.
    """
    if env.get("KAFKA_BOOTSTRAP_SERVERS"):
        log.info("kafka: using KAFKA_BOOTSTRAP_SERVERS=%s", env["KAFKA_BOOTSTRAP_SERVERS"])
        yield ResolvedService(env["KAFKA_BOOTSTRAP_SERVERS"], "env")
        return
    has_docker, why = docker_available()
    if has_docker:
        with _kafka_container() as bootstrap:
            yield ResolvedService(bootstrap, "docker")
        return
    log.info("kafka: no Docker engine answers (%s); starting the local KafkaStack", why)
    stack = KafkaStack(local_stack_settings(scratch / "stack", base))
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / OWNER_FILE).write_text(f"{os.getpid()}\n")
    status = stack.up(timeout_s=timeout_s)
    try:
        yield ResolvedService(status.bootstrap, "local")
    finally:
        stack.down()


@contextlib.contextmanager
def local_cluster(scratch: Path, brokers: int = 3, base: Settings | None = None,
                  timeout_s: float = 180.0) -> Iterator[LocalCluster]:
    """A private local cluster of `brokers` nodes for the duration of the block (tests of broker failures: the
    caller may kill and restart single nodes through `cluster.nodes`). Files in `scratch/stack`, with
    `scratch/owner.pid` for `reap_orphaned_stacks`."""
    cluster = LocalCluster(local_cluster_settings(scratch / "stack", brokers, base))
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / OWNER_FILE).write_text(f"{os.getpid()}\n")
    try:
        cluster.up(timeout_s=timeout_s)
        yield cluster
    finally:
        cluster.down(timeout_s=15.0)


@contextlib.contextmanager
def _kafka_container() -> Iterator[str]:
    from testcontainers.community.kafka import KafkaContainer

    log.info("kafka: starting a testcontainers Kafka (%s)", KAFKA_IMAGE)
    with KafkaContainer(KAFKA_IMAGE).with_kraft() as container:
        yield container.get_bootstrap_server()


@contextlib.contextmanager
def clickhouse_service(env: Mapping[str, str], scratch: Path) -> Iterator[ResolvedService]:
    """A ClickHouse DSN for the duration of the block; see the module docstring for the order tried."""
    if env.get("CLICKHOUSE_DSN"):
        log.info("clickhouse: using CLICKHOUSE_DSN from the environment")
        yield ResolvedService(env["CLICKHOUSE_DSN"], "env")
        return
    has_docker, why = docker_available()
    if has_docker:
        with _clickhouse_container() as dsn:
            yield ResolvedService(dsn, "docker")
        return
    data_dir = (scratch / "clickhouse").resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    log.info("clickhouse: no Docker engine answers (%s); using the embedded engine in %s", why, data_dir)
    yield ResolvedService(f"chdb://{data_dir}", "local")


@contextlib.contextmanager
def _clickhouse_container() -> Iterator[str]:
    from testcontainers.community.clickhouse import ClickHouseContainer

    log.info("clickhouse: starting a testcontainers ClickHouse server (%s)", CLICKHOUSE_IMAGE)
    with ClickHouseContainer(CLICKHOUSE_IMAGE) as container:
        host, port = container.get_container_host_ip(), container.get_exposed_port(8123)
        yield f"http://{container.username}:{container.password}@{host}:{port}/{container.dbname}"
