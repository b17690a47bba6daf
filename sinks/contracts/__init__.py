"""External contracts the sinks speak, shipped beside the code so a clone needs nothing outside the repository."""

from __future__ import annotations

from functools import cache
from pathlib import Path

__all__ = ["GRAPHQL_BACKEND_CONTRACT", "graphql_backend_sdl"]

GRAPHQL_BACKEND_CONTRACT = Path(__file__).with_name("graphql-backend.graphql")
"""The analytics backend's GraphQL schema (SDL), copied from the shared contract."""


@cache
def graphql_backend_sdl() -> str:
    """The backend contract's SDL text."""
    return GRAPHQL_BACKEND_CONTRACT.read_text(encoding="utf-8")
