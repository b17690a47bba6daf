"""`fleetstream status`: every part of a deployment and every consumer group on one screen.

Parts are found where they say they are: the addresses announced under `<home>/health` (every part started
with this home, several workers of a group included), the fixed addresses in `health.*`, and the API server
(`api.host`/`api.port`). Each is asked for `/health` (state, failing checks, last error, its group's lag). The
groups' lag is read from Kafka itself (committed offsets against end offsets), so a group whose members are all
down still shows how far behind it is.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from fleetstream.config import Settings
from fleetstream.health import announced, group_lag

__all__ = ["GroupStatus", "PartStatus", "Report", "collect", "render"]

HTTP_TIMEOUT_S = 2.0


@dataclass
class PartStatus:
    """One part as its health endpoint describes it (or could not)."""

    part: str
    address: str
    state: str
    """ready, not ready, unreachable."""
    detail: str = ""
    """The failing checks, or why the endpoint did not answer."""
    pid: int | None = None
    lag: int | None = None
    last_error: str | None = None


@dataclass
class GroupStatus:
    """One consumer group as the cluster sees it."""

    group: str
    state: str
    members: int
    lag: int | None
    max_partition_lag: int | None
    partitions: int
    error: str | None = None


@dataclass
class Report:
    bootstrap: str
    kafka: str
    parts: list[PartStatus] = field(default_factory=list)
    groups: list[GroupStatus] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return self.kafka == "ok" and all(p.state == "ready" for p in self.parts)

    def to_dict(self) -> dict[str, Any]:
        return {"bootstrap": self.bootstrap, "kafka": self.kafka, "healthy": self.healthy,
                "parts": [asdict(p) for p in self.parts], "groups": [asdict(g) for g in self.groups]}


def part_addresses(settings: Settings) -> list[tuple[str, str]]:
    """(part, host:port) of every part to ask: announced ones, fixed configured ones, the API; no duplicates."""
    found = [(str(a["part"]), str(a["address"])) for a in announced(settings.home)]
    for part in ("worker", "clickhouse_sink", "graphql_sink", "edge_agent"):
        address = getattr(settings.health, part)
        if address and not address.endswith(":0"):
            found.append((part, _reachable_form(address)))
    found.append(("api", f"{_reachable_form(settings.api.host)}:{settings.api.port}"
                  if ":" not in settings.api.host else f"[{settings.api.host}]:{settings.api.port}"))
    unique: dict[str, tuple[str, str]] = {}
    for part, address in found:
        unique.setdefault(address, (part, address))
    return list(unique.values())


def _reachable_form(address: str) -> str:
    """A wildcard listen address asked on loopback (0.0.0.0:9401 → 127.0.0.1:9401)."""
    for wildcard in ("0.0.0.0", "::", "[::]"):
        if address == wildcard or address.startswith(wildcard + ":"):
            return "127.0.0.1" + address[len(wildcard):]
    return address


def probe_part(part: str, address: str, timeout_s: float = HTTP_TIMEOUT_S) -> PartStatus:
    """Ask one part's `/health` (the API's `/health/ready`); 503 is an answer too, with the failing checks."""
    path = "/health/ready" if part == "api" else "/health"
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=timeout_s) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read())
        except ValueError:
            return PartStatus(part, address, "not ready", f"HTTP {exc.code}")
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return PartStatus(part, address, "unreachable", str(reason))
    checks = body.get("checks") or {k: v for k, v in body.items() if k != "status" and isinstance(v, str)}
    failing = {k: v for k, v in checks.items() if not (v == "ok" or str(v).startswith("ok"))}
    lag = body.get("lag")
    total = sum(sum(per.values()) for per in lag.values()) if isinstance(lag, dict) and lag else None
    return PartStatus(part, address, "ready" if body.get("status") == "ok" else "not ready",
                      "; ".join(f"{k}: {v}" for k, v in failing.items()), body.get("pid"), total,
                      body.get("last_error"))


def group_status(admin: Any, group: str, timeout_s: float = 5.0) -> GroupStatus:
    """State, members and lag of `group` from the cluster."""
    try:
        described = admin.describe_consumer_groups([group], request_timeout=timeout_s)[group].result(timeout_s)
        state = str(getattr(described.state, "name", described.state)).lower()
        members = len(described.members)
        lags = group_lag(admin, group, timeout_s)
    except Exception as exc:
        return GroupStatus(group, "unknown", 0, None, None, 0, str(exc))
    return GroupStatus(group, state, members, sum(lags.values()) if lags else 0,
                       max(lags.values()) if lags else 0, len(lags))


def collect(settings: Settings, groups: Sequence[str], admin: Any = None, timeout_s: float = 5.0) -> Report:
    """Everything `fleetstream status` shows (parts in the order found, groups in the order given)."""
    from confluent_kafka.admin import AdminClient

    from fleetstream.kafka import KafkaUnreachable, require_kafka

    report = Report(settings.kafka.bootstrap_servers, "ok")
    try:
        require_kafka(settings.kafka, timeout_s=timeout_s)
    except KafkaUnreachable as exc:
        report.kafka = str(exc)
    if report.kafka == "ok":
        admin = admin or AdminClient(settings.kafka.client())
        report.groups = [group_status(admin, group, timeout_s) for group in groups]
    report.parts = [probe_part(part, address) for part, address in part_addresses(settings)]
    return report


def render(report: Report) -> str:
    """The one screen: Kafka, then one line per part, then one line per group."""
    lines = [f"kafka {report.bootstrap}: {report.kafka}", "", "parts:"]
    width = max([len(p.part) for p in report.parts] + [4])
    for p in report.parts:
        lag = "" if p.lag is None else f"  lag {p.lag}"
        pid = "" if p.pid is None else f" pid {p.pid}"
        lines.append(f"  {p.part:{width}s} {p.address:21s} {p.state}{pid}{lag}")
        if p.detail:
            lines.append(f"  {'':{width}s}   {p.detail}")
        if p.last_error:
            lines.append(f"  {'':{width}s}   last error: {p.last_error}")
    if not report.parts:
        lines.append("  (none found: no part announced itself under the home and no fixed address is set)")
    if report.groups:
        lines += ["", "consumer groups:"]
        gwidth = max(len(g.group) for g in report.groups)
        for g in report.groups:
            if g.error:
                lines.append(f"  {g.group:{gwidth}s} {g.state}: {g.error}")
                continue
            lines.append(f"  {g.group:{gwidth}s} {g.state}, {g.members} members, lag {g.lag} over {g.partitions} "
                         f"partitions (max {g.max_partition_lag})")
    return "\n".join(lines)
