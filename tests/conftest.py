"""Fixtures that give integration tests real services (see fleetstream.testing for how they are found).

- `kafka_bootstrap`: bootstrap servers of a real broker, once per session (env, testcontainers or the local
  KafkaStack on free ports, stopped at the end only if this session started it).
- `clickhouse_dsn`: a ClickHouse DSN (env, testcontainers, else `chdb://<session tmp dir>`).
- `topic_factory`: creates uniquely named topics (the local broker does not auto-create topics) and deletes
  them after the test.
- `fleetstream.testing.docker_available()`: for `pytest.mark.skipif` on tests of the testcontainers path.

Tests that use the service fixtures must be marked `integration`, so `pytest -m "not integration"` never
starts a broker; an unmarked one fails with a message saying so.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator, Mapping

import pytest

from fleetstream.stack import LocalCluster
from fleetstream.testing import ResolvedService, clickhouse_service, kafka_service, local_cluster, reap_orphaned_stacks

log = logging.getLogger(__name__)

SERVICE_FIXTURES = frozenset({"kafka_service_info", "kafka_bootstrap", "clickhouse_dsn", "topic_factory",
                              "kafka_cluster3"})

TopicFactory = Callable[..., str]


@pytest.hookimpl(tryfirst=True)
def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--screenshots", default=None, metavar="DIR",
                     help="write the browser tests' page screenshots to DIR (default: the test run's tmp folder)")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail a test that uses a real service without the `integration` marker, before any service starts."""
    used = SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ()))
    if used and item.get_closest_marker("integration") is None:
        pytest.fail(f"{item.nodeid} uses {', '.join(sorted(used))} but is not marked @pytest.mark.integration",
                    pytrace=False)


@pytest.fixture(scope="session")
def kafka_service_info(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ResolvedService]:
    """The session's Kafka cluster and where it came from (`env`, `docker` or `local`)."""
    # pytest-of-<user>/pytest-<n>/kafka<i>: brokers leaked by killed sessions are stopped before starting one
    reap_orphaned_stacks(tmp_path_factory.getbasetemp().parent)
    with kafka_service(os.environ, tmp_path_factory.mktemp("kafka")) as service:
        log.info("integration tests use kafka at %s (%s)", service.address, service.source)
        yield service


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_service_info: ResolvedService) -> str:
    """Bootstrap servers of a real Kafka broker for this session."""
    return kafka_service_info.address


@pytest.fixture(scope="session")
def kafka_cluster3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A private local cluster of three KRaft brokers for this session, separate from `kafka_bootstrap`.

    Always the local stack (never the environment's cluster): tests SIGKILL and restart its nodes
    (`cluster.nodes[i]`). Heavy (three JVMs): only for tests of broker failures, all marked integration.
    """
    reap_orphaned_stacks(tmp_path_factory.getbasetemp().parent)
    with local_cluster(tmp_path_factory.mktemp("kafka3"), brokers=3) as cluster:
        log.info("three-broker tests use kafka at %s", cluster.bootstrap)
        yield cluster


@pytest.fixture(scope="session")
def clickhouse_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ClickHouse DSN for this session: a server if one is configured or Docker runs, else embedded chDB."""
    with clickhouse_service(os.environ, tmp_path_factory.mktemp("clickhouse")) as service:
        yield service.address


@pytest.fixture
def topic_factory(kafka_bootstrap: str, request: pytest.FixtureRequest) -> Iterator[TopicFactory]:
    """`make(prefix="test", partitions=1, config=None) -> name`: a new, empty topic with leaders, unique per call."""
    from confluent_kafka.admin import AdminClient

    from fleetstream.admin import ensure_topics

    created: list[str] = []
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40]

    def make(prefix: str = "", partitions: int = 1, config: Mapping[str, str] | None = None) -> str:
        name = f"test.{prefix or base}.{uuid.uuid4().hex[:10]}"
        ensure_topics(kafka_bootstrap, [name], partitions=partitions, config=config)
        created.append(name)
        return name

    yield make
    if created:
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})  # held until the futures resolve
        for name, future in admin.delete_topics(created, operation_timeout=30).items():
            try:
                future.result()
            except Exception as exc:  # cleanup only: a leftover test topic must not fail the test
                log.warning("could not delete test topic %s: %s", name, exc)
