"""The ClickHouse sink's pure pieces, without a broker or a store: batch-id dedup, insert retries, commits,
dead letters of a dead-letter topic. The shell that wires them is proven by the integration tests
(test_clickhouse.py, test_sink_exactly_once.py, test_sink_restart.py)."""

from __future__ import annotations

from typing import Any

import pytest

from fleetstream.sinks.clickhouse.batches import Batch, Buffered
from fleetstream.sinks.clickhouse.commits import Commits
from fleetstream.sinks.clickhouse.deadletters import Rejected, dlq_topic_for, stored_dead_letter_columns
from fleetstream.sinks.clickhouse.dedup import StoredId, digest_of, sort_out, stream_of
from fleetstream.sinks.clickhouse.inserts import INSERT_ATTEMPTS, insert_retrying


def item(offset: int, batch_id: str | None = "b1", raw: bytes = b"x", rows: int = 3) -> Buffered:
    record = None if batch_id == "undecodable" else ({} if batch_id is None else {"batch_id": batch_id})
    return Buffered(offset, b"k", raw, record, "bad magic" if record is None else None, rows)


def batch(*items: Buffered, topic: str = "telemetry.signals.valid") -> Batch:
    return Batch(topic, 2, list(items))


def test_new_batch_ids_and_records_without_one_are_stored() -> None:
    result = sort_out(batch(item(10, "a"), item(11, None), item(12, "b")), known={})
    assert [i.offset for i in result.good] == [10, 11, 12]
    assert (result.dead, result.redelivered, result.conflicts) == ([], 0, 0)


def test_resent_copy_of_a_stored_batch_id_is_skipped() -> None:
    known = {"a": StoredId(digest_of(b"x"), "telemetry.signals.valid", 0, 5)}
    result = sort_out(batch(item(10, "a", raw=b"x"), item(11, "b")), known)
    assert [i.offset for i in result.good] == [11]
    assert result.redelivered == 1 and result.dead == []


def test_reused_batch_id_with_other_content_is_dead_lettered_with_where_it_was_stored() -> None:
    known = {"a": StoredId(digest_of(b"first"), "telemetry.signals.valid", 0, 5)}
    result = sort_out(batch(item(10, "a", raw=b"second", rows=7)), known)
    assert result.good == [] and result.conflicts == 1
    [rejected] = result.dead
    assert rejected.error_code == "batch_id_conflict" and rejected.sample_count == 7
    assert "telemetry.signals.valid[0]@5" in rejected.reason


def test_stored_id_without_digest_counts_as_same_content() -> None:
    known = {"a": StoredId("", "telemetry.signals.valid", 0, 5)}  # stored before migration 015
    assert sort_out(batch(item(10, "a", raw=b"other")), known).redelivered == 1


def test_repeat_inside_one_batch_is_stored_once_and_a_changed_repeat_is_a_conflict() -> None:
    result = sort_out(batch(item(10, "a", raw=b"x"), item(11, "a", raw=b"x"), item(12, "a", raw=b"y")), {})
    assert [i.offset for i in result.good] == [10]
    assert result.redelivered == 1 and result.conflicts == 1


def test_undecodable_message_is_dead_lettered_as_malformed() -> None:
    [rejected] = sort_out(batch(item(10, "undecodable")), {}).dead
    assert rejected.error_code == "malformed" and "bad magic" in rejected.reason


def test_sort_out_leaves_the_known_ids_of_the_caller_alone() -> None:
    known: dict[str, StoredId] = {}
    sort_out(batch(item(10, "a")), known)
    assert known == {}


def test_batch_identity_is_per_stream_and_dead_letters_go_to_the_source_topics_dlq() -> None:
    assert stream_of("telemetry.signals.valid") == stream_of("telemetry.signals") == "telemetry.signals"
    assert dlq_topic_for("telemetry.signals.valid") == "dlq.telemetry.signals.valid"


def test_unreadable_messages_of_a_dead_letter_topic_become_dead_letter_rows() -> None:
    dead = [Rejected(item(4, "undecodable", raw=b"\x00junk"), "malformed", "unused")]
    columns = stored_dead_letter_columns(batch(*[d.item for d in dead], topic="dlq.telemetry.signals"), dead,
                                         first_seen_ms=1_700_000_000_000)
    assert len(next(iter(columns.values()))) == 1
    row = {name: values[0] for name, values in columns.items()}
    assert row["source_topic"] == "dlq.telemetry.signals" and row["error_code"] == "malformed"
    assert "bad magic" in row["reason"]


class FlakyClient:
    """Fails the first `failures` inserts, then accepts; records each attempt's token."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.tokens: list[str] = []

    def insert(self, table: str, data: Any, **kwargs: Any) -> None:
        self.tokens.append(kwargs["settings"]["insert_deduplication_token"])
        if len(self.tokens) <= self.failures:
            raise ConnectionError("store went away")


def test_failed_insert_is_retried_with_the_same_token_and_reported() -> None:
    client, errors, sleeps = FlakyClient(failures=2), list[str](), list[float]()
    insert_retrying(client, "samples", {"a": [1]}, "t-0-1-2", on_retry=errors.append,  # type: ignore[arg-type]
                    sleep=sleeps.append)
    assert client.tokens == ["t-0-1-2"] * 3
    assert sleeps == [0.5, 1.0] and len(errors) == 2 and "store went away" in errors[0]


def test_insert_that_keeps_failing_raises_after_the_last_attempt() -> None:
    client = FlakyClient(failures=INSERT_ATTEMPTS)
    with pytest.raises(ConnectionError):
        insert_retrying(client, "samples", {"a": [1]}, "t", sleep=lambda _s: None)  # type: ignore[arg-type]
    assert len(client.tokens) == INSERT_ATTEMPTS


class RecordingConsumer:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.commits: list[tuple[str, int, int]] = []

    def commit(self, offsets: list[Any], asynchronous: bool) -> None:
        assert asynchronous is False
        if self.fail:
            raise RuntimeError("coordinator moved")
        self.commits += [(tp.topic, tp.partition, tp.offset) for tp in offsets]


def test_skipped_redeliveries_are_committed_once_per_partition_past_the_last_one() -> None:
    consumer = RecordingConsumer()
    commits = Commits(consumer, on_error=lambda _e: None)  # type: ignore[arg-type]
    commits.skipped("t", 0, 5)
    commits.skipped("t", 0, 6)
    commits.skipped("t", 1, 2)
    commits.commit_skipped()
    commits.commit_skipped()
    assert sorted(consumer.commits) == [("t", 0, 7), ("t", 1, 3)]


def test_failed_commit_is_reported_not_raised() -> None:
    errors: list[str] = []
    Commits(RecordingConsumer(fail=True), on_error=errors.append).commit("t", 3, 10)  # type: ignore[arg-type]
    assert errors == ["commit of t[3]: coordinator moved"]
