"""Runs the API with uvicorn (and the report scheduler) until interrupted; the services are closed on the way out."""

from __future__ import annotations

import logging

import uvicorn

from fleetstream.api.app import create_app
from fleetstream.api.schedule import ReportScheduler
from fleetstream.api.services import Services
from fleetstream.config import Settings

__all__ = ["serve"]

log = logging.getLogger(__name__)


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    services = Services.start(settings)
    scheduler = ReportScheduler(services)
    scheduler.start()
    try:
        config = uvicorn.Config(create_app(services), host=host or settings.api.host, port=port or settings.api.port,
                                log_level=settings.log_level.lower(), access_log=False,
                                timeout_graceful_shutdown=5)  # open event streams end after 5 s
        log.info("fleetstream serve on http://%s:%d (OpenAPI at /docs)", config.host, config.port)
        uvicorn.Server(config).run()
    finally:
        scheduler.stop()
        services.close()
