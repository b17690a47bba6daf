"""A static group member restarted with another topic set never hangs (issue 12).

With static membership (KIP-345) the broker may hand a member that rejoins under its instance id the assignment
of its previous run (it rebalances instead in some group states). If that run read other topics (a changed
configuration or version), aiokafka's group coordination ends with "Received an assignment for unsubscribed
topic", and the worker used to sit there for good, consuming nothing and saying nothing. It must exit with a
clear error instead, for its supervisor to restart it once the previous session has expired, and then it must
work; if the broker rebalanced, it must simply run with its new topics.
"""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

import pytest

from fleetstream import config
from fleetstream.demo import Services
from fleetstream.streams.offsets import EXIT_RESTART
from tests.streams.test_worker_correctness import wait_for_worker, worker_env, worker_settings

EXTRA_TOPIC = "telemetry.extra"
"""A raw topic only the previous run read (created for the test, and only subscribed through the hook below)."""

WIDER_TOPIC_SET = f"""
import fleetstream.config as config
config.RAW_TOPICS = (*config.RAW_TOPICS, {EXTRA_TOPIC!r})
"""
"""`sitecustomize` of the previous run: the same worker, reading one more raw topic."""


def _positioned(worker: Services, pid: int) -> bool:
    """Whether the worker process `pid` has positioned its input partitions (it runs)."""
    log = (worker.log_dir / "worker.log").read_text(errors="replace")
    return f"[{pid}] [INFO] input partitions positioned" in log


@pytest.mark.integration
def test_a_static_member_restarted_with_fewer_topics_exits_with_a_clear_error(
        kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = uuid.uuid4().hex[:8]
    worker_env(monkeypatch, f"fleetstream-streams-membership-{run}")
    monkeypatch.setenv("FLEETSTREAM_STREAMS__INSTANCE_ID", f"membership-{run}")
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(WIDER_TOPIC_SET)
    with monkeypatch.context() as wider:
        wider.setattr(config, "RAW_TOPICS", (*config.RAW_TOPICS, EXTRA_TOPIC))
        worker_settings(kafka_bootstrap, tmp_path / "home")  # creates the extra topic and its .valid and dlq
    settings = worker_settings(kafka_bootstrap, tmp_path / "home")
    worker = Services(settings)
    try:
        with monkeypatch.context() as wider:
            wider.setenv("PYTHONPATH", str(hook))
            worker.start("worker", "worker")
        wait_for_worker(settings, worker)
        worker.processes["worker"].send_signal(signal.SIGKILL)
        worker.processes["worker"].wait(10)
        worker.start("worker", "worker")  # at once, with the usual topics: the group still has the old session
        process = worker.processes["worker"]
        deadline = time.monotonic() + 90
        while process.poll() is None and time.monotonic() < deadline and not _positioned(worker, process.pid):
            time.sleep(0.5)
        log = (worker.log_dir / "worker.log").read_text(errors="replace")
        if process.poll() is None:
            # The broker rebalanced instead of handing back the old assignment (it does, depending on the group's
            # state when the member rejoins): the worker must then run with the topics it reads now.
            assert _positioned(worker, process.pid), f"the worker neither ran nor exited: {log[-2000:]}"
            assert EXTRA_TOPIC not in log.split(f"[{process.pid}]", 1)[1]
            return
        assert process.returncode == EXIT_RESTART, f"the worker did not exit: {log[-2000:]}"
        assert "unsubscribed topic" in log and "Hint: start it again once" in log
        # Its supervisor restarts it once the previous session expired: it joins with the topics it reads now.
        time.sleep(settings.streams.session_timeout_s + 1)
        worker.start("worker", "worker")
        wait_for_worker(settings, worker)
        time.sleep(3)
        worker.check()
    finally:
        worker.stop(timeout_s=15)
