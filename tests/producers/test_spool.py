from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fleetstream.producers.spool import Spool, SpoolEntry, SpoolFullError


def entries(n: int, start: int = 0, size: int = 10, topic: str = "dyno.samples") -> list[SpoolEntry]:
    return [SpoolEntry(topic, f"k{i}".encode(), str(i).encode().ljust(size, b"."), samples=2, source="t")
            for i in range(start, start + n)]


def collect(spool: Spool) -> list[SpoolEntry]:
    sent: list[SpoolEntry] = []

    def publish(batch):
        sent.extend(batch)
        return [True] * len(batch)

    while spool.drain_once(publish):
        pass
    return sent


def test_appended_records_drain_in_order_and_only_once(tmp_path):
    spool = Spool(tmp_path)
    spool.append(entries(5))
    spool.append(entries(5, start=5))
    sent = collect(spool)
    assert [e.key for e in sent] == [f"k{i}".encode() for i in range(10)]
    assert spool.stats.published_samples == 20
    assert collect(spool) == []


def test_higher_priorities_drain_first(tmp_path):
    spool = Spool(tmp_path)
    spool.append(entries(2, topic="bulk"), priority="bulk")
    spool.append(entries(2, topic="crit"), priority="critical")
    assert [e.topic for e in collect(spool)] == ["crit", "crit", "bulk", "bulk"]


def test_a_failure_mid_chunk_resends_from_the_first_unacknowledged(tmp_path):
    spool = Spool(tmp_path)
    spool.append(entries(6))
    assert spool.drain_once(lambda batch: [True, True, False, True, True, True]) == 2
    assert [e.key for e in collect(spool)] == [f"k{i}".encode() for i in range(2, 6)]


def test_acknowledged_cursor_survives_reopening(tmp_path):
    spool = Spool(tmp_path)
    spool.append(entries(4))
    spool.drain_once(lambda batch: [True, True, False, False])
    spool.close()
    reopened = Spool(tmp_path)
    assert [e.key for e in collect(reopened)] == [b"k2", b"k3"]


def test_a_torn_record_at_the_tail_is_discarded_and_the_rest_kept(tmp_path):
    spool = Spool(tmp_path)
    spool.append(entries(3))
    spool.close()
    segment = next((tmp_path / "normal").glob("*.seg"))
    with segment.open("ab") as out:
        out.write(b"\x40\x00\x00\x00garbage")  # a header promising 64 bytes, cut short by a crash
    reopened = Spool(tmp_path)
    assert [e.key for e in collect(reopened)] == [b"k0", b"k1", b"k2"]
    assert reopened.stats.corrupt_tails == 1


def test_the_spool_is_owned_by_one_process(tmp_path):
    owner = Spool(tmp_path)
    with pytest.raises(RuntimeError, match="in use by another process"):
        Spool(tmp_path)
    owner.close()


def test_over_budget_evicts_lower_priorities_first_and_counts_the_loss(tmp_path, monkeypatch):
    monkeypatch.setattr("fleetstream.producers.spool._SEGMENT_BYTES", 200)
    spool = Spool(tmp_path, budget_bytes=1100)
    for i in range(6):
        assert spool.append(entries(2, start=i * 2, size=40), priority="bulk")
    assert spool.append(entries(4, start=100, size=40), priority="high")
    assert spool.stats.dropped_samples["bulk:evicted"] > 0
    assert spool.size_bytes() <= 1100
    sent = collect(spool)
    assert [e.key for e in sent[:4]] == [b"k100", b"k101", b"k102", b"k103"]  # nothing of high was lost
    kept_bulk = [int(e.key[1:]) for e in sent[4:]]
    assert kept_bulk == sorted(kept_bulk) and kept_bulk[-1] == 11  # the oldest bulk went, the newest stayed


def test_lowest_priority_is_refused_when_full_and_critical_raises(tmp_path):
    spool = Spool(tmp_path, budget_bytes=300)
    assert spool.append(entries(3, size=40), priority="bulk")
    assert not spool.append(entries(3, size=40), priority="bulk")
    assert spool.stats.dropped_samples["bulk:budget"] == 6
    with pytest.raises(SpoolFullError):
        spool.append(entries(10, size=40), priority="critical")


def test_acknowledged_data_costs_no_budget_and_leaves_the_disk(tmp_path):
    spool = Spool(tmp_path, budget_bytes=4_000)  # room for about 50 of these records unacknowledged
    for i in range(200):  # 40 times the budget in total, acknowledged as it goes (the broker is up)
        assert spool.append(entries(5, start=i * 5, size=80))
        if i % 3 == 2:
            assert spool.size_bytes() > 0
            collect(spool)
            assert spool.size_bytes() == 0  # a fully acknowledged segment is closed and deleted
    assert not spool.stats.dropped_samples
    assert [int(e.key[1:]) for e in collect(spool)] == list(range(990, 1000))
    assert spool.stats.published_records == 1000
    # unacknowledged data still counts in full
    while spool.append(entries(5, size=80)):
        pass
    assert spool.stats.dropped_samples["normal:budget"] == 10 and spool.pending_bytes() <= 4_000


def test_appends_after_everything_was_acknowledged_survive_a_restart(tmp_path):
    spool = Spool(tmp_path)
    spool.append(entries(3))
    collect(spool)
    spool.close()
    reopened = Spool(tmp_path)
    reopened.append(entries(2, start=3))
    reopened.close()
    assert [e.key for e in collect(Spool(tmp_path))] == [b"k3", b"k4"]


def test_a_crash_between_cursor_write_and_segment_delete_loses_nothing_later(tmp_path):
    spool = Spool(tmp_path)
    spool.append(entries(3))
    spool.close()
    # the cursor already moved past segment 0 (all acknowledged), the segment itself was not deleted yet
    (tmp_path / "normal" / "cursor").write_text("1 0\n")
    reopened = Spool(tmp_path)
    assert reopened.pending_bytes() == 0 and not (tmp_path / "normal" / "000000000000.seg").exists()
    reopened.append(entries(2, start=3))
    assert [e.key for e in collect(reopened)] == [b"k3", b"k4"]


def test_unknown_priority_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown priority 'urgent'"):
        Spool(tmp_path).append(entries(1), priority="urgent")


@pytest.mark.slow
def test_kill_9_loses_nothing_that_append_acknowledged(tmp_path: Path):
    """A writer process is SIGKILLed mid-stream; every batch it reported as appended is still there."""
    script = textwrap.dedent(f"""
        import sys
        from fleetstream.producers.spool import Spool, SpoolEntry
        spool = Spool({str(tmp_path)!r})
        i = 0
        while True:
            spool.append([SpoolEntry("t", str(i + j).encode(), b"x" * 50) for j in range(10)])
            print(i + 9, flush=True)
            i += 10
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).parents[2])
    acknowledged = -1
    assert proc.stdout is not None
    for _ in range(300):
        acknowledged = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    keys = [int(e.key) for e in collect(Spool(tmp_path))]
    assert keys[: acknowledged + 1] == list(range(acknowledged + 1))
