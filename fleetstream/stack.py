"""The local stack: real KRaft Kafka brokers (one, or a cluster with `stack.brokers`) from the official jars.

`KafkaStack(settings).up()` resolves the jars once through Maven into `stack.cache_dir/kafka-<version>/libs`,
writes `server.properties` under `home/kafka`, formats the storage on first start, starts `kafka.Kafka` detached
(its own session, output in `home/kafka/broker.log`) and returns only when a Kafka client has actually fetched
metadata from it, with the cluster id this home was formatted with (so a different broker on the same port is
never mistaken for ours). `down()` stops it with SIGTERM (a clean controlled shutdown), SIGKILL after a timeout.
Both are idempotent and safe to run from several processes (a lock file serialises them).

Topics are not auto-created (`auto.create.topics.enable=false`), so a misspelt topic fails loudly instead of
silently creating a new one: create topics with `fleetstream topics create` or `fleetstream.admin.ensure_topics()`.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fleetstream.config import Settings, StackSettings
from fleetstream.errors import FleetstreamError
from fleetstream.kafka_runtime import LOG4J_CONFIG, POM

__all__ = [
    "ClusterStatus",
    "KafkaStack",
    "LocalCluster",
    "StackError",
    "StackStatus",
    "cluster_bootstrap",
    "ensure_java",
    "ensure_maven",
    "new_cluster_id",
    "node_home",
    "node_ports",
    "render_server_properties",
    "resolve_jars",
]

log = logging.getLogger(__name__)

MIN_JAVA_MAJOR = 17
"""Kafka 4.x brokers need Java 17."""
MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
NODE_ID = 1
MAVEN_TIMEOUT_S = 900.0
"""Budget for the one-time jar download (about 6 s with a warm network, ~95 jars / 60 MB)."""
# JVM options after Kafka's own kafka-run-class.sh defaults, sized for a small box: G1 with short pauses, no AWT,
# and exit (rather than limp on) when out of memory. -XX:TieredStopAtLevel=1 starts ~0.5 s faster but halves
# steady-state throughput, which the benchmarks run on this broker care about, so it is not used.
JVM_OPTIONS = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
_LOG_TAIL_LINES = 40


PORT_RELEASE_GRACE_S = 15.0
"""How long a node's start waits for its ports: a node of a cluster SIGKILLed a moment ago leaves its closed
connections bound to its port for a few seconds (seen in the soak: a restart at once failed with "port ... already in
use", the next attempt 2 s later started), and Kafka's own bind would then fail too."""


class StackError(FleetstreamError, RuntimeError):
    """The local stack cannot be set up, started or stopped; the message says why and what to do."""


@dataclass(frozen=True)
class StackStatus:
    """What `fleetstream stack status` shows: whether our broker runs, where, and where to look."""

    running: bool
    pid: int | None
    bootstrap: str
    version: str
    home: Path
    log_path: Path
    data_dir: Path
    cluster_id: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (paths as strings)."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}

    def to_text(self) -> str:
        """Human-readable lines for the CLI."""
        state = f"running (pid {self.pid})" if self.running else "stopped"
        return "\n".join([
            f"kafka {self.version}: {state}",
            f"  bootstrap:  {self.bootstrap}",
            f"  cluster id: {self.cluster_id or '(not formatted yet)'}",
            f"  data dir:   {self.data_dir}",
            f"  log:        {self.log_path}",
        ])


# --- prerequisites -----------------------------------------------------------------------------------------


def ensure_java(min_major: int = MIN_JAVA_MAJOR) -> str:
    """Path of a `java` on PATH with at least `min_major`; StackError saying what to install otherwise."""
    java = shutil.which("java")
    if java is None:
        raise StackError(f"java not found on PATH: the local Kafka broker needs Java {min_major}+ "
                         f"(e.g. `apt-get install openjdk-{min_major}-jre-headless`)")
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    major = _java_major(out.stderr + out.stdout)
    if major is None or major < min_major:
        found = (out.stderr or out.stdout).splitlines()[:1]
        raise StackError(f"{java} is {found[0] if found else 'of unknown version'}; Kafka 4.x needs Java {min_major}+")
    return java


def _java_major(version_output: str) -> int | None:
    """Major version from `java -version` output: `"17.0.15"` -> 17, `"1.8.0_392"` -> 8."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def ensure_maven() -> str:
    """Path of `mvn` on PATH; StackError otherwise (it is needed once, to fetch the jars)."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError("mvn not found on PATH: Maven fetches the Kafka jars once from Maven Central "
                         "(e.g. `apt-get install maven`)")
    return mvn


# --- jars --------------------------------------------------------------------------------------------------


def resolve_jars(cache_dir: Path, version: str, pom: Path = POM) -> Path:
    """The `libs` folder with every runtime jar of Kafka `version`, downloading it through Maven if needed.

    The jars land in a staging folder that is renamed into place, and a marker listing them is written after
    that: a download that was interrupted is redone, a complete one is never fetched again.
    """
    root = cache_dir.expanduser().resolve() / f"kafka-{version}"
    libs, marker = root / "libs", root / "libs.complete.json"
    if _jars_complete(libs, marker):
        return libs
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / ".lock"):
        if _jars_complete(libs, marker):  # another process finished it while we waited
            return libs
        started = time.monotonic()
        log.info("fetching the Kafka %s jars through Maven into %s (once)", version, libs)
        jars = _maven_copy_dependencies(root, version, pom)
        marker.write_text(json.dumps({"version": version, "jars": jars}, indent=1))
        log.info("fetched %d jars for Kafka %s in %.1f s", len(jars), version, time.monotonic() - started)
    return libs


def _jars_complete(libs: Path, marker: Path) -> bool:
    try:
        jars = json.loads(marker.read_text())["jars"]
    except (OSError, ValueError, KeyError):
        return False
    return bool(jars) and all((libs / jar).is_file() for jar in jars)


def _maven_copy_dependencies(root: Path, version: str, pom: Path) -> list[str]:
    """Run Maven's copy-dependencies into `root/libs` and return the jar names."""
    mvn = ensure_maven()
    staging, libs = root / "libs.partial", root / "libs"
    shutil.rmtree(staging, ignore_errors=True)
    work_pom = root / "pom.xml"  # a copy: the package folder may be read-only and Maven may write next to it
    shutil.copyfile(pom, work_pom)
    cmd = [mvn, "-B", "-q", "-f", str(work_pom), "dependency:copy-dependencies", f"-DoutputDirectory={staging}",
           "-DincludeScope=runtime", f"-Dkafka.version={version}"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=MAVEN_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"Maven did not fetch the Kafka {version} jars within {MAVEN_TIMEOUT_S:.0f} s") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-_LOG_TAIL_LINES:])
        raise StackError(f"Maven could not fetch the Kafka {version} jars (exit {done.returncode}): "
                         f"{' '.join(cmd)}\n{tail}")
    jars = sorted(p.name for p in staging.glob("*.jar"))
    if f"kafka_2.13-{version}.jar" not in jars:
        raise StackError(f"Maven finished but {staging} has no kafka_2.13-{version}.jar (got {len(jars)} jars)")
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    return jars


# --- configuration -----------------------------------------------------------------------------------------


def new_cluster_id() -> str:
    """A KRaft cluster id as `kafka-storage random-uuid` makes it: 16 random bytes, URL-safe base64, no padding.

    Kafka rejects ids that start with '-' (they read as command-line options), so those are drawn again.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def node_ports(stack: StackSettings, node_id: int) -> tuple[int, int]:
    """(client port, controller port) of node `node_id` (1-based): the configured pair, then every second port."""
    step = 2 * (node_id - 1)
    return stack.kafka_port + step, stack.controller_port + step


def cluster_bootstrap(stack: StackSettings) -> str:
    """Bootstrap servers of the local stack: every node's client listener, comma-separated."""
    return ",".join(f"127.0.0.1:{node_ports(stack, i)[0]}" for i in range(1, stack.brokers + 1))


def render_server_properties(stack: StackSettings, data_dir: Path, *, auto_create_topics: bool = False,
                             extra: Mapping[str, str] | None = None, node_id: int = NODE_ID) -> str:
    """`server.properties` of one KRaft node (broker and controller in one process) on loopback.

    With `stack.brokers` > 1 every node is a voter, so the metadata quorum survives one node down in three, and
    the internal topics are replicated to min(3, brokers) nodes with a min ISR of 2 (where there are 3).
    A static voter set (`controller.quorum.voters`) rather than a dynamic quorum: nothing about the listeners is
    stored at format time, so changing the ports in the settings needs no reformat.
    """
    host = "127.0.0.1"
    kafka_port, controller_port = node_ports(stack, node_id)
    voters = ",".join(f"{i}@{host}:{node_ports(stack, i)[1]}" for i in range(1, stack.brokers + 1))
    replicas = str(min(3, stack.brokers))
    min_isr = str(min(2, stack.brokers - 1) or 1)
    props: dict[str, str] = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://{host}:{kafka_port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{kafka_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "3",
        "default.replication.factor": replicas,
        "min.insync.replicas": "1",  # per topic: `fleetstream topics create` sets 2 where it replicates to 3
        "offsets.topic.replication.factor": replicas,
        # 50 by default; 10 makes the first consumer group's coordinator ready sooner on a 2-core box
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min_isr,
        "transaction.state.log.num.partitions": "10",
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": min_isr,
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": str(auto_create_topics).lower(),
        "delete.topic.enable": "true",
        "num.network.threads": "2",
        "num.io.threads": "4",
    }
    props.update(extra or {})
    lines = ["# Generated by fleetstream.stack from the settings; rewritten on every `stack up`."]
    lines += [f"{key}={value}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def _read_properties(path: Path) -> dict[str, str]:
    props: dict[str, str] = {}
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text().splitlines():
            if line.strip() and not line.lstrip().startswith(("#", "!")) and "=" in line:
                key, value = line.split("=", 1)
                props[key.strip()] = value.strip()
    return props


# --- the stack ---------------------------------------------------------------------------------------------


def node_home(settings: Settings, node_id: int = NODE_ID) -> Path:
    """Where node `node_id` keeps its files: `home/kafka` alone, `home/kafka-cluster/node-<i>` in a cluster.

    Separate folders because a node formatted for one quorum must not be started in another.
    """
    if settings.stack.brokers == 1:
        return (settings.home / "kafka").resolve()
    return (settings.home / "kafka-cluster" / f"node-{node_id}").resolve()


class KafkaStack:
    """One local broker: files under `node_home`, jars shared in `stack.cache_dir`.

    With `stack.brokers` 1 (the default) this is the whole local stack; in a cluster it is node `node_id`,
    and `LocalCluster` starts and stops the nodes together.
    """

    def __init__(self, settings: Settings, *, auto_create_topics: bool = False,
                 extra_properties: Mapping[str, str] | None = None, node_id: int = NODE_ID):
        self.settings = settings
        self.stack = settings.stack
        self.node_id = node_id
        self.home = node_home(settings, node_id)
        self.data_dir = self.home / "data"
        self.config_path = self.home / "server.properties"
        self.log_path = self.home / "broker.log"
        self.pid_path = self.home / "broker.pid"
        self.kafka_port, self.controller_port = node_ports(self.stack, node_id)
        self.bootstrap = f"127.0.0.1:{self.kafka_port}"
        self.auto_create_topics = auto_create_topics
        self.extra_properties = dict(extra_properties or {})
        self._child: subprocess.Popen[bytes] | None = None  # set when this object started the broker

    # status

    def status(self) -> StackStatus:
        """The broker's state from the pid file, checked against the process's command line."""
        pid = self._running_pid()
        version = self.stack.kafka_version
        if pid is not None:
            version = _system_property(_cmdline(pid) or [], "fleetstream.kafka.version") or version
        return StackStatus(running=pid is not None, pid=pid, bootstrap=self.bootstrap, version=version,
                           home=self.home, log_path=self.log_path, data_dir=self.data_dir,
                           cluster_id=self.cluster_id())

    def cluster_id(self) -> str | None:
        """The id the storage was formatted with, or None before the first start."""
        return _read_properties(self.data_dir / "meta.properties").get("cluster.id")

    # up

    def up(self, timeout_s: float = 90.0) -> StackStatus:
        """Start the broker unless it runs, and return once a client reads its metadata.

        `timeout_s` bounds the wait for readiness; the one-time jar download has its own budget.
        """
        self.home.mkdir(parents=True, exist_ok=True)
        with _locked(self.home / ".lock"):
            if self._running_pid() is not None:
                log.info("kafka already running (pid %s) on %s", self._running_pid(), self.bootstrap)
                return self.status()
            self._check_ports_free()  # before java and the jars: a taken port is the likelier mistake
            java = ensure_java()
            libs = resolve_jars(self.stack.cache_dir, self.stack.kafka_version)
            cluster_id = self.start(java, libs)
            started = time.monotonic()
            self.wait_ready(cluster_id, timeout_s)
            log.info("kafka %s ready on %s in %.1f s (pid %s, log %s)", self.stack.kafka_version, self.bootstrap,
                     time.monotonic() - started, self._running_pid(), self.log_path)
        self._warn_if_clients_look_elsewhere()
        return self.status()

    def start(self, java: str, libs: Path, cluster_id: str | None = None) -> str:
        """Write the configuration, format the storage (with `cluster_id`, or a new id) and start the broker
        without waiting for it; return the cluster id. The caller holds the lock and knows it is not running."""
        self._check_ports_free(grace_s=PORT_RELEASE_GRACE_S)
        self._write_config()
        cluster_id = self._format_storage(java, libs, cluster_id)
        self._start(java, libs)
        return cluster_id

    def _check_ports_free(self, grace_s: float = 0.0) -> None:
        """Raise if a port is taken, after waiting up to `grace_s` for it to be released."""
        deadline = time.monotonic() + grace_s
        for name, port in (("kafka_port", self.kafka_port), ("controller_port", self.controller_port)):
            while not _port_free(port) and time.monotonic() < deadline:
                time.sleep(0.5)
            if not _port_free(port):
                raise StackError(
                    f"port {port} ({name}) on 127.0.0.1 is already in use by another process{_port_owner(port)}, "
                    f"not by the fleetstream broker of {self.home}; stop it or choose another port "
                    f"(FLEETSTREAM_STACK__{name.upper()})")

    def _write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        text = render_server_properties(self.stack, self.data_dir, auto_create_topics=self.auto_create_topics,
                                        extra=self.extra_properties, node_id=self.node_id)
        self.config_path.write_text(text)

    def _format_storage(self, java: str, libs: Path, cluster_id: str | None = None) -> str:
        """Format the storage on first start (with `cluster_id`, else a new id); return the id in use."""
        existing = self.cluster_id()
        if existing is not None and cluster_id not in (None, existing):
            raise StackError(f"{self.data_dir} belongs to cluster {existing}, not {cluster_id} of the other nodes; "
                             f"`fleetstream stack down` and remove {self.home.parent} to start a new cluster")
        if existing is not None:
            return existing
        cluster_id = cluster_id or new_cluster_id()
        cmd = [java, "-cp", f"{libs}/*", f"-Dlog4j2.configurationFile={LOG4J_CONFIG}", STORAGE_TOOL, "format",
               "-t", cluster_id, "-c", str(self.config_path)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-_LOG_TAIL_LINES:])
            raise StackError(f"formatting the Kafka storage in {self.data_dir} failed "
                             f"(exit {done.returncode}):\n{tail}")
        log.info("formatted %s as cluster %s", self.data_dir, cluster_id)
        return cluster_id

    def _java_command(self, java: str, libs: Path) -> list[str]:
        return [
            java, f"-Xmx{self.stack.heap_mb}m", *JVM_OPTIONS,
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            f"-Dkafka.logs.dir={self.home}",
            # markers that identify our process in `ps` and in the pid-file check
            f"-Dfleetstream.home={self.home}",
            f"-Dfleetstream.kafka.version={self.stack.kafka_version}",
            "-cp", f"{libs}/*", MAIN_CLASS, str(self.config_path),
        ]

    def _start(self, java: str, libs: Path) -> None:
        if self.log_path.exists():  # keep the previous run's log for one more start
            self.log_path.replace(self.log_path.with_suffix(".log.1"))
        cmd = self._java_command(java, libs)
        log.info("starting kafka %s on %s (home %s)", self.stack.kafka_version, self.bootstrap, self.home)
        with self.log_path.open("ab") as out:
            # its own session: the broker outlives this process and a Ctrl-C in the terminal does not reach it
            self._child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                           cwd=self.home, start_new_session=True)
        self.pid_path.write_text(f"{self._child.pid}\n")

    def wait_ready(self, cluster_id: str, timeout_s: float) -> None:
        """Poll until a client fetches metadata with our cluster id; stop the broker and raise otherwise."""
        deadline = time.monotonic() + timeout_s
        probe: Any = None
        try:
            while time.monotonic() < deadline:
                self._raise_if_exited()
                if _port_accepts(self.kafka_port):
                    probe = probe or _admin_client(self.bootstrap)
                    if _metadata_matches(probe, cluster_id, min(2.0, max(0.1, deadline - time.monotonic()))):
                        return
                time.sleep(0.2)
        except StackError:
            self._stop_pid(self._child.pid if self._child else None, timeout_s=10.0)
            raise
        self._stop_pid(self._child.pid if self._child else None, timeout_s=10.0)
        raise StackError(f"kafka did not become ready on {self.bootstrap} within {timeout_s:.0f} s and was stopped; "
                         f"last lines of {self.log_path}:\n{self._log_tail()}")

    def _raise_if_exited(self) -> None:
        if self._child is None or self._child.poll() is None:
            return
        code = self._child.returncode
        self.pid_path.unlink(missing_ok=True)
        raise StackError(f"kafka exited during start-up (exit {code}); last lines of {self.log_path}:\n"
                         f"{self._log_tail()}")

    def _log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(no log: {exc})"

    def _warn_if_clients_look_elsewhere(self) -> None:
        configured = self.settings.kafka.bootstrap_servers
        if self.bootstrap not in configured.split(",") and f"localhost:{self.kafka_port}" not in configured:
            log.warning("clients are configured for %s but the local stack listens on %s", configured,
                        self.bootstrap)

    # down

    def down(self, timeout_s: float = 30.0) -> None:
        """Stop the broker if it runs: SIGTERM for a clean shutdown, SIGKILL after `timeout_s`."""
        self.home.mkdir(parents=True, exist_ok=True)
        with _locked(self.home / ".lock"):
            pid = self._running_pid()
            if pid is None:
                log.info("kafka is not running (home %s)", self.home)
                return
            self._stop_pid(pid, timeout_s)

    def _stop_pid(self, pid: int | None, timeout_s: float) -> None:
        if pid is not None:
            log.info("stopping kafka (pid %s)", pid)
            started = time.monotonic()
            _signal(pid, signal.SIGTERM)
            if not self._wait_exit(pid, timeout_s):
                log.warning("kafka (pid %s) did not stop within %.0f s; killing it", pid, timeout_s)
                _signal(pid, signal.SIGKILL)
                self._wait_exit(pid, 10.0)
            log.info("kafka stopped in %.1f s", time.monotonic() - started)
        self.pid_path.unlink(missing_ok=True)
        self._child = None

    def _wait_exit(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._child is not None and self._child.pid == pid:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._child.wait(timeout=0.1)
                    return True
            elif not self._is_our_broker(pid):
                return True
            else:
                time.sleep(0.1)
        return False

    # pid bookkeeping

    def _running_pid(self) -> int | None:
        """The pid from the pid file if that process is our broker; a stale pid file is removed."""
        try:
            pid = int(self.pid_path.read_text().strip())
        except FileNotFoundError:
            return None
        except ValueError:
            log.warning("removing unreadable pid file %s", self.pid_path)
            self.pid_path.unlink(missing_ok=True)
            return None
        if self._child is not None and self._child.pid == pid and self._child.poll() is not None:
            self.pid_path.unlink(missing_ok=True)  # our child exited (poll() reaped it)
            return None
        if self._is_our_broker(pid):
            return pid
        log.info("removing stale pid file %s (pid %s is not this stack's broker)", self.pid_path, pid)
        self.pid_path.unlink(missing_ok=True)
        return None

    def _is_our_broker(self, pid: int) -> bool:
        """True if `pid` runs kafka.Kafka for this home (a reused pid belongs to something else)."""
        cmdline = _cmdline(pid) or []
        return MAIN_CLASS in cmdline and f"-Dfleetstream.home={self.home}" in cmdline


# --- the cluster -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterStatus:
    """What `fleetstream stack status` shows for the whole local stack: each node's status."""

    bootstrap: str
    nodes: tuple[StackStatus, ...]

    @property
    def running(self) -> int:
        return sum(node.running for node in self.nodes)

    def to_dict(self) -> dict[str, Any]:
        return {"bootstrap": self.bootstrap, "brokers": len(self.nodes), "running": self.running,
                "nodes": [node.to_dict() for node in self.nodes]}

    def to_text(self) -> str:
        if len(self.nodes) == 1:
            return self.nodes[0].to_text()
        lines = [f"kafka cluster: {self.running} of {len(self.nodes)} brokers running",
                 f"  bootstrap:  {self.bootstrap}"]
        for i, node in enumerate(self.nodes, start=1):
            state = f"running (pid {node.pid})" if node.running else "stopped"
            lines.append(f"  node {i} {node.bootstrap}: {state}, log {node.log_path}")
        return "\n".join(lines)


class LocalCluster:
    """The local stack as `fleetstream stack up|down|status` sees it: `stack.brokers` KRaft nodes on loopback.

    One node is exactly `KafkaStack(settings)`. Several are started together (a quorum of three voters elects a
    controller only once two run), formatted with one cluster id, and ready when a client sees every broker.
    `down` stops the nodes of both layouts under `home`, so a cluster started with `--brokers 3` is stopped by
    a plain `stack down` too.
    """

    def __init__(self, settings: Settings, *, auto_create_topics: bool = False,
                 extra_properties: Mapping[str, str] | None = None):
        self.settings = settings
        self.bootstrap = cluster_bootstrap(settings.stack)
        self.nodes = [KafkaStack(settings, auto_create_topics=auto_create_topics, extra_properties=extra_properties,
                                 node_id=i) for i in range(1, settings.stack.brokers + 1)]
        self.lock_path = (settings.home / "kafka-cluster" / ".lock").resolve()

    def status(self) -> ClusterStatus:
        return ClusterStatus(self.bootstrap, tuple(node.status() for node in self.nodes))

    def up(self, timeout_s: float = 120.0) -> ClusterStatus:
        """Start the nodes that do not run and return once a client sees all of them."""
        if len(self.nodes) == 1:
            self.nodes[0].up(timeout_s)
            return self.status()
        with _locked(self.lock_path):
            stopped = [node for node in self.nodes if node._running_pid() is None]
            if stopped:
                self._start(stopped, timeout_s)
        self._warn_if_clients_look_elsewhere()
        return self.status()

    def _start(self, stopped: list[KafkaStack], timeout_s: float) -> None:
        java = ensure_java()
        libs = resolve_jars(self.settings.stack.cache_dir, self.settings.stack.kafka_version)
        cluster_id = next((c for c in (node.cluster_id() for node in self.nodes) if c), None) or new_cluster_id()
        started = time.monotonic()
        try:
            for node in stopped:
                node.start(java, libs, cluster_id)
            for node in stopped:
                node.wait_ready(cluster_id, max(1.0, timeout_s - (time.monotonic() - started)))
            _wait_for_brokers(self.bootstrap, len(self.nodes), max(1.0, timeout_s - (time.monotonic() - started)))
        except BaseException:
            for node in stopped:
                node.down(timeout_s=10.0)
            raise
        log.info("kafka cluster of %d brokers ready on %s in %.1f s", len(self.nodes), self.bootstrap,
                 time.monotonic() - started)

    @classmethod
    def found(cls, settings: Settings) -> LocalCluster:
        """The cluster under `settings.home` as it was set up: the configured size unless a cluster of another
        size has nodes there and the configured one does not run (so `stack status` needs no --brokers)."""
        configured = cls(settings)
        if configured.status().running:
            return configured
        nodes = [p for p in (settings.home / "kafka-cluster").glob("node-*") if p.name.removeprefix("node-").isdigit()]
        if len(nodes) > 1 and len(nodes) != settings.stack.brokers:
            return cls(settings.model_copy(update={"stack": settings.stack.model_copy(update={"brokers": len(nodes)})}))
        return configured

    def down(self, timeout_s: float = 30.0) -> None:
        """Stop every node under `home`, of a single broker or a cluster of any size; fine when nothing runs.

        The nodes stop in parallel: stopped one after another, the last one has no quorum left to acknowledge
        its controlled shutdown and would wait out `timeout_s` before being killed.
        """
        from concurrent.futures import ThreadPoolExecutor

        nodes = [node for node in self._all_nodes() if node.home.exists()]
        with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
            for done in [pool.submit(node.down, timeout_s) for node in nodes]:
                done.result()

    def _all_nodes(self) -> list[KafkaStack]:
        single = KafkaStack(self.settings.model_copy(update={"stack": self.settings.stack.model_copy(
            update={"brokers": 1})}))
        found = sorted((self.settings.home / "kafka-cluster").glob("node-*"), key=lambda p: p.name)
        cluster = [KafkaStack(self.settings.model_copy(update={"stack": self.settings.stack.model_copy(
            update={"brokers": max(2, len(found))})}), node_id=int(p.name.removeprefix("node-")))
            for p in found if p.name.removeprefix("node-").isdigit()]
        return [single, *cluster]

    def _warn_if_clients_look_elsewhere(self) -> None:
        configured = set(self.settings.kafka.bootstrap_servers.split(","))
        if not configured & set(self.bootstrap.split(",")):
            log.warning("clients are configured for %s but the local cluster listens on %s (set "
                        "KAFKA_BOOTSTRAP_SERVERS=%s)", self.settings.kafka.bootstrap_servers, self.bootstrap,
                        self.bootstrap)


def _wait_for_brokers(bootstrap: str, count: int, timeout_s: float) -> None:
    """Until the cluster's metadata lists `count` brokers (a node can answer before the others registered)."""
    admin = _admin_client(bootstrap)
    deadline = time.monotonic() + timeout_s
    seen = 0
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            seen = len(admin.list_topics(timeout=2.0).brokers)
            if seen >= count:
                return
        time.sleep(0.2)
    raise StackError(f"only {seen} of {count} brokers registered on {bootstrap} within {timeout_s:.0f} s")
# --- process and socket helpers ----------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on `path`, held for the block (serialises up/down and jar downloads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _cmdline(pid: int) -> list[str] | None:
    """A process's arguments, or None if it does not exist or is a zombie (empty command line)."""
    if Path("/proc/self").exists():
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return raw.decode(errors="replace").split("\0")[:-1] or None
    done = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True)
    return done.stdout.split() or None  # no /proc (macOS): good enough for the marker check


def _system_property(cmdline: Sequence[str], name: str) -> str | None:
    prefix = f"-D{name}="
    return next((arg[len(prefix):] for arg in cmdline if arg.startswith(prefix)), None)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _port_free(port: int) -> bool:
    """Whether we could listen on 127.0.0.1:port (with SO_REUSEADDR, as Java does, so TIME_WAIT is no conflict)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port_owner(port: int) -> str:
    """Best effort ' (java pid 123)' for an error message, from `ss`; empty when unknown."""
    if shutil.which("ss") is None:
        return ""
    done = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True)
    match = re.search(r'users:\(\("([^"]+)",pid=(\d+)', done.stdout)
    return f" ({match.group(1)} pid {match.group(2)})" if match else ""


def _port_accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class _DebugLog:
    """librdkafka's log sink during readiness polling: its connection errors are expected, so DEBUG, not stderr."""

    def log(self, level: int, msg: str, *args: object) -> None:
        log.debug("librdkafka: " + msg, *args)


def _admin_client(bootstrap: str) -> Any:
    from confluent_kafka.admin import AdminClient

    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": _DebugLog(), "reconnect.backoff.max.ms": 500}
    return AdminClient(config)


def _metadata_matches(admin: Any, cluster_id: str, timeout_s: float) -> bool:
    """True once the broker answers a metadata request, lists itself, and carries our cluster id."""
    from confluent_kafka import KafkaException

    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        log.debug("kafka not ready yet: %s", exc)
        return False
    if metadata.cluster_id != cluster_id:
        raise StackError(f"the broker answering on {metadata.orig_broker_name} has cluster id {metadata.cluster_id}, "
                         f"not {cluster_id} of this stack: another broker holds the port")
    return bool(metadata.brokers)


@contextlib.contextmanager
def running_broker(settings: Settings) -> Iterator[str]:
    """The bootstrap servers to use, with the local stack started for the duration if it is the target.

    Any address other than the local stack's own is an existing cluster and is used as it is. A stack this
    context started is stopped at the end; one that was already running is left running.
    """
    if settings.kafka.bootstrap_servers != cluster_bootstrap(settings.stack):
        yield settings.kafka.bootstrap_servers
        return
    stack = LocalCluster(settings)
    started = not stack.status().running
    stack.up()
    try:
        yield settings.kafka.bootstrap_servers
    finally:
        if started:
            stack.down()
