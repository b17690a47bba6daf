"""The read side: `fleetstream serve`, an HTTP API over the pipeline's ClickHouse store, per tenant and role.

`create_app(Services.start(settings))` builds the app; `serve(settings)` runs it with uvicorn. The modules:
`rbac` (roles, permissions), `tokens` (JWT, API keys), `users` (users on a compacted Kafka topic), `store`
(where ClickHouse is read), `scoped` (the one tenancy layer), `analytics` (dashboards and metrics SQL),
`reports` and `schedule` (scheduled reports), `publish` (audit, acks, events, metric values to Kafka),
`events`, `custom_metrics`, `segments`, `definitions` (seed 004's side), `routes`, `analytics_routes` and
`app` (HTTP), `sdk` (the async client).
"""

from fleetstream.api.app import create_app
from fleetstream.api.rbac import Role
from fleetstream.api.server import serve
from fleetstream.api.services import ConfigError, Services
from fleetstream.api.users import UserError, UserStore

__all__ = ["ConfigError", "Role", "Services", "UserError", "UserStore", "create_app", "serve"]
