"""The exception family of fleetstream: what the CLI reports to a user as `error: <message> (<hint>)`.

`fleetstream.cli.main` turns any FleetstreamError into that one line and exits with its `exit_code`: 2 when the
command was asked something it cannot do (a bad value, an unknown name, a configuration mistake), 1 when the
work itself failed (a file that is not its format, a store held by another process, a service out of reach).
Errors of other families (OSError, ValueError, Kafka's, ClickHouse's) are reported the same way by the CLI.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "FleetstreamError",
    "InvalidInput",
    "KafkaUnavailable",
    "StoreError",
    "exit_code_of",
]


class FleetstreamError(Exception):
    """Base of every error fleetstream reports to a user: a one-line message and a hint."""
    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


class InvalidInput(FleetstreamError):
    """The command was given something it cannot use: an unknown name, a value out of range, a bad time."""

    exit_code = 2


class ConfigError(FleetstreamError):
    """The configuration (file, environment) is wrong; nothing was started."""

    exit_code = 2


class KafkaUnavailable(FleetstreamError):
    """Kafka could not be reached, or did not acknowledge what was handed to it."""

    exit_code = 1


class StoreError(FleetstreamError):
    """The ClickHouse store could not be opened or answered with an error."""

    exit_code = 1


def exit_code_of(error: FleetstreamError) -> int:
    """The process exit status for `error`: its class's `exit_code`, else 1 (the work failed)."""
    code = getattr(error, "exit_code", 1)
    return code if isinstance(code, int) else 1
