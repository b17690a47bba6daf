"""How the `fleetstream` command reports a failure: one `error: <what> (<hint>)` line on stderr and an exit status.

Exit status 2: the command was asked something it cannot do (usage, a bad value, an unknown name, the
configuration); 1: the work failed (a bad file, a service out of reach, a store held by another process, a
bug). The traceback goes to stderr above the line only with `--log-level DEBUG`, so a user sees what to do
and a developer can still see where it happened. One place, wrapped around the whole app, so no command
needs its own try/except to be reported properly.
"""

from __future__ import annotations

import errno
import logging
import sys
import traceback
from typing import Any

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError

from fleetstream.errors import FleetstreamError, exit_code_of

__all__ = ["Failure", "describe", "run_app"]

USAGE, RUNTIME, INTERRUPTED = 2, 1, 130


class Failure:
    """What to tell the user about one exception: the message, an optional hint and the exit status."""

    __slots__ = ("exit_code", "hint", "message")

    def __init__(self, message: str, hint: str = "", exit_code: int = RUNTIME) -> None:
        self.message = " ".join(message.split()) or "failed"  # one line, whatever the exception's text held
        self.hint = " ".join(hint.split())
        self.exit_code = exit_code

    def line(self) -> str:
        return f"error: {self.message}" + (f" ({self.hint})" if self.hint else "")


def run_app(app: typer.Typer, prog_name: str = "fleetstream", args: list[str] | None = None) -> int:
    """Run the typer app and return the exit status; every exception becomes one line (see the module doc)."""
    try:
        result = app(args=args, prog_name=prog_name, standalone_mode=False)
    except NoArgsIsHelpError as exc:
        return exc.exit_code  # typer printed the help while raising it
    except KeyboardInterrupt:
        return INTERRUPTED
    except Exception as exc:
        return _report(exc)
    return result if isinstance(result, int) else 0  # non-standalone typer returns the code of a typer.Exit


def _report(exc: Exception) -> int:
    if isinstance(exc, OSError) and exc.errno == errno.EPIPE:
        return RUNTIME  # stdout closed by the reader (`| head`): nothing to tell it
    failure = describe(exc)
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        traceback.print_exception(exc, file=sys.stderr)
    sys.stdout.flush()
    print(failure.line(), file=sys.stderr, flush=True)
    return failure.exit_code


def describe(exc: BaseException) -> Failure:
    """The message, hint and exit status for `exc`: ours carry them, known families get them here."""
    if isinstance(exc, FleetstreamError):
        return Failure(str(exc), exc.hint, exit_code_of(exc))
    if isinstance(exc, UsageError):
        return Failure(exc.format_message(), _help_hint(exc), USAGE)
    if isinstance(exc, ClickException):
        return Failure(exc.format_message(), "", exc.exit_code)
    if isinstance(exc, typer.Abort):
        return Failure("aborted", "", RUNTIME)
    for family in (_kafka_failure, _clickhouse_failure, _yaml_failure, _os_failure):
        failure = family(exc)
        if failure is not None:
            return failure
    if isinstance(exc, ValueError | KeyError):
        text = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        return Failure(str(text), "", RUNTIME)
    return Failure(f"unexpected {type(exc).__name__}: {exc}",
                   "a bug in fleetstream: run again with --log-level DEBUG for the traceback and report it", RUNTIME)


def _help_hint(exc: UsageError) -> str:
    ctx: Any = exc.ctx
    return f"see '{ctx.command_path} --help'" if ctx is not None else "see 'fleetstream --help'"


def _loaded(module: str) -> Any:
    """A module if something already imported it: an exception of a library that was never loaded cannot occur."""
    return sys.modules.get(module)


def _kafka_failure(exc: BaseException) -> Failure | None:
    kafka = _loaded("confluent_kafka")
    if kafka is None or not isinstance(exc, kafka.KafkaException):
        return None
    error: Any = exc.args[0] if exc.args else None
    text = str(error.str()) if isinstance(error, kafka.KafkaError) else str(exc)
    return Failure(f"Kafka: {text}", "is the broker running? KAFKA_BOOTSTRAP_SERVERS says where it is", RUNTIME)


def _clickhouse_failure(exc: BaseException) -> Failure | None:
    driver = _loaded("clickhouse_connect.driver.exceptions")
    chdb = _loaded("chdb._exceptions")
    families = tuple(getattr(module, name) for module, name in ((driver, "Error"), (chdb, "ChdbError")) if module)
    if not families or not isinstance(exc, families):
        return None
    first = next((line for line in str(exc).splitlines() if line.strip()), repr(exc))
    return Failure(f"ClickHouse: {first}", "CLICKHOUSE_DSN says which store; the sink's log may say more", RUNTIME)


def _yaml_failure(exc: BaseException) -> Failure | None:
    yaml = _loaded("yaml")
    if yaml is None or not isinstance(exc, yaml.YAMLError):
        return None
    mark = getattr(exc, "problem_mark", None)
    where = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc)
    return Failure(f"invalid YAML: {where}{problem}", "", USAGE)  # a file the user wrote and named


def _os_failure(exc: BaseException) -> Failure | None:
    if not isinstance(exc, OSError):
        return None
    what = exc.strerror or str(exc)
    if exc.filename is not None:
        what = f"{exc.filename}: {what}"
    return Failure(what, "", RUNTIME)
