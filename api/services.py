"""Everything a running API needs, built once at start (`Services.start`) and handed to the app."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from fleetstream import errors
from fleetstream.admin import replication_for
from fleetstream.api.cache import TtlCache
from fleetstream.api.definitions import DefinitionStore
from fleetstream.api.publish import Publisher
from fleetstream.api.reports import ReportStore
from fleetstream.api.scoped import ScopedReader
from fleetstream.api.store import StoreReader
from fleetstream.api.throttle import LoginThrottle
from fleetstream.api.tokens import TokenIssuer
from fleetstream.api.users import UserStore
from fleetstream.config import Settings
from fleetstream.prometheus import ApiMetrics

__all__ = ["ConfigError", "Services"]

log = logging.getLogger(__name__)


class ConfigError(errors.ConfigError):
    """The API cannot start as configured (no JWT secret, ...)."""


@dataclass
class Services:
    settings: Settings
    users: UserStore
    reader: ScopedReader
    issuer: TokenIssuer
    publisher: Publisher | None
    throttle: LoginThrottle
    cache: TtlCache
    reports: ReportStore
    metrics: ApiMetrics
    definitions: DefinitionStore

    @classmethod
    def start(cls, settings: Settings, publisher: bool = True) -> Services:
        """Load the users (and follow them), open the reader and the producer."""
        api = settings.api
        if api.jwt_secret is None or len(api.jwt_secret.get_secret_value()) < 32:
            raise ConfigError("set JWT_SECRET_KEY (or FLEETSTREAM_API__JWT_SECRET) to a random secret of at least "
                              "32 characters, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`")
        metrics = ApiMetrics()
        users = UserStore(settings.kafka, api.users_topic)
        users.ensure_topic(replication_factor=replication_for(settings.kafka, settings.topics).factor)
        log.info("loaded %d users from %s", users.load(), api.users_topic)
        users.follow()
        issuer = TokenIssuer(api.jwt_secret.get_secret_value(),
                             tuple(s.get_secret_value() for s in api.jwt_previous_secrets), api.token_ttl_s)
        reader = ScopedReader(StoreReader(settings), api.default_org)
        producer = (Publisher(settings.kafka, on_failure=lambda t: metrics.publish_failures.labels(t).inc())
                    if publisher else None)
        return cls(
            settings=settings, users=users, reader=reader, issuer=issuer, publisher=producer,
            throttle=LoginThrottle(api.login_free_failures, api.login_max_delay_s),
            cache=TtlCache(api.cache_ttl_s),
            reports=ReportStore(report_dir(settings), api.max_report_rows),
            metrics=metrics,
            definitions=DefinitionStore(reader, producer, api.definitions_topic),
        )

    def close(self) -> None:
        if self.publisher is not None:
            self.publisher.close()
        self.users.close()
        self.reader.close()


def report_dir(settings: Settings) -> Path:
    return settings.api.report_dir or settings.home / "reports"
