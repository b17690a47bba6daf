"""`python -m fleetstream.sinks.clickhouse`: the ClickHouse sink with its topics and consumer options given on the
command line.

`fleetstream sink clickhouse` stores the configured topics; this entry point exists for what that command does
not expose: an explicit topic → table routing (`--route TOPIC=TABLE:RECORD_TYPE`, e.g. a test's uniquely named
topic), the consumer group, librdkafka overrides (`--consumer KEY=VALUE`, e.g. `group.instance.id` for static
membership so a restarted sink takes its partitions back without waiting for a session timeout), and the
test-only `FLEETSTREAM_FAULT` (see `faults.py`). Settings come from the environment as everywhere
(`KAFKA_BOOTSTRAP_SERVERS`, `CLICKHOUSE_DSN`, `FLEETSTREAM_HOME`, `FLEETSTREAM_CLICKHOUSE__BATCH_ROWS`, ...).
Stops on SIGTERM/SIGINT (flushing what is buffered) and prints the stats as JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence

from fleetstream.config import load_settings
from fleetstream.logs import setup_logging
from fleetstream.sinks.clickhouse.consumer import GROUP_ID, ClickHouseSink
from fleetstream.sinks.clickhouse.faults import Fault
from fleetstream.sinks.clickhouse.rows import Route
from fleetstream.store.client import StoreLockedError

__all__ = ["main", "parse_route"]


def parse_route(spec: str) -> tuple[str, Route]:
    """`telemetry.signals.valid=samples:signal_batch` → (topic, Route("samples", "signal_batch"))."""
    topic, sep, target = spec.partition("=")
    table, sep2, record_type = target.partition(":")
    if not (sep and sep2 and topic and table and record_type):
        raise argparse.ArgumentTypeError(f"--route wants TOPIC=TABLE:RECORD_TYPE, not {spec!r}")
    return topic, Route(table, record_type)


def _key_value(spec: str) -> tuple[str, str]:
    key, sep, value = spec.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--consumer wants KEY=VALUE, not {spec!r}")
    return key, value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleetstream.sinks.clickhouse", description=__doc__.splitlines()[0])
    parser.add_argument("--route", type=parse_route, action="append", default=[],
                        help="TOPIC=TABLE:RECORD_TYPE (repeatable); default: every configured topic")
    parser.add_argument("--group", default=GROUP_ID, help="consumer group id")
    parser.add_argument("--no-dlq", action="store_true", help="do not subscribe to dlq.* topics")
    parser.add_argument("--consumer", type=_key_value, action="append", default=[],
                        help="librdkafka consumer option KEY=VALUE (repeatable)")
    parser.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0 = until signalled)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)

    setup_logging(args.log_level)
    settings = load_settings()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if args.seconds:
        timer = threading.Timer(args.seconds, stop.set)
        timer.daemon = True
        timer.start()
    sink = ClickHouseSink(settings, routes=dict(args.route) or None, subscribe_dlq=not args.no_dlq,
                          group_id=args.group, consumer_overrides=dict(args.consumer), fault=Fault.from_env())
    try:
        stats = sink.run(stop)
    except StoreLockedError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    print(json.dumps(stats.as_dict()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
