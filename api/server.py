"""Runs the API with uvicorn (and the report scheduler) until interrupted; the services are closed on the way out."""

from __future__ import annotations

import logging
from typing import Any

import uvicorn

from fleetstream.api.app import create_app
from fleetstream.api.schedule import ReportScheduler
from fleetstream.api.services import Services
from fleetstream.config import Settings

__all__ = ["KEEP_ALIVE_S", "serve", "server_config"]

log = logging.getLogger(__name__)

KEEP_ALIVE_S = 75.0
"""How long an idle kept-alive connection stays open. uvicorn's 5 s equals the idle expiry of httpx's pool (and
of the SDK on it), so a client that sent its next request just as the server closed the connection got
"server disconnected without sending a response" (a 100-user run of `bench api` did); a server must keep idle
connections longer than its clients and proxies do (browsers 60-300 s, load balancers 60 s)."""


def server_config(app: Any, host: str, port: int, log_level: str = "warning") -> uvicorn.Config:
    """uvicorn's settings for the API: the one place serve and the tests take them from."""
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                          timeout_keep_alive=int(KEEP_ALIVE_S),
                          timeout_graceful_shutdown=5)  # open event streams end after 5 s


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    services = Services.start(settings)
    scheduler = ReportScheduler(services)
    scheduler.start()
    try:
        config = server_config(create_app(services), host or settings.api.host, port or settings.api.port,
                               settings.log_level.lower())
        log.info("fleetstream serve on http://%s:%d (OpenAPI at /docs)", config.host, config.port)
        uvicorn.Server(config).run()
    finally:
        scheduler.stop()
        services.close()
