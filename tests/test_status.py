"""`fleetstream status`: parts found through their announcements and fixed addresses, asked for /health."""

from __future__ import annotations

from pathlib import Path

from fleetstream.config import HealthSettings, KafkaSettings, load_settings
from fleetstream.health import PartHealth
from fleetstream.status import GroupStatus, Report, part_addresses, probe_part, render
from fleetstream.testing import free_ports
from tests.test_health import _Admin


def test_status_finds_announced_and_fixed_parts_and_reports_what_each_says(tmp_path: Path) -> None:
    admin = _Admin()
    health = PartHealth("clickhouse_sink", KafkaSettings(), HealthSettings(probe_interval_s=0.1, probe_timeout_s=0.5),
                        "127.0.0.1:0", home=tmp_path, group="fleetstream-clickhouse",
                        lag=lambda: {("telemetry.signals.valid", 0): 7})
    health._admin = admin
    (nothing_there,) = free_ports(1)
    settings = load_settings(home=tmp_path, health={"worker": f"0.0.0.0:{nothing_there}"})
    with health:
        health.assigned(3)
        health.error("insert into samples: timed out")
        found = part_addresses(settings)
        assert found[:2] == [("clickhouse_sink", health.address), ("worker", f"127.0.0.1:{nothing_there}")]
        assert found[2] == ("api", f"127.0.0.1:{settings.api.port}")

        sink = probe_part("clickhouse_sink", str(health.address))
        assert (sink.state, sink.lag, sink.last_error) == ("ready", 7, "insert into samples: timed out")
        health.revoked()
        rebalancing = probe_part("clickhouse_sink", str(health.address))
        assert (rebalancing.state, rebalancing.detail) == ("not ready", "assignment: rebalancing")
    worker = probe_part("worker", f"127.0.0.1:{nothing_there}")
    assert worker.state == "unreachable"

    report = Report("127.0.0.1:9092", "ok", [sink, rebalancing, worker],
                    [GroupStatus("fleetstream-clickhouse", "stable", 2, 7, 7, 96)])
    text = render(report)
    assert "last error: insert into samples: timed out" in text
    assert "assignment: rebalancing" in text
    assert "fleetstream-clickhouse stable, 2 members, lag 7 over 96 partitions (max 7)" in text
    assert not report.healthy and report.to_dict()["parts"][0]["lag"] == 7
