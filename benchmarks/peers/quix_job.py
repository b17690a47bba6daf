"""The benchmark job in Quix Streams' own API: Application, StreamingDataFrame, a stateful apply.

    python quix_job.py --bootstrap HOST:PORT --input TOPIC --output TOPIC --group GROUP

Messages are deserialised as bytes and decoded by `signal_job.decode` (our single-object Avro framing, which
Quix's Avro deserialiser does not speak), validated, then a stateful apply keeps, per message key, one state
entry per channel (dedup memory and open tumbling windows, as `signal_job.ChannelState` plain data in Quix's
RocksDB state store, checkpointed with the consumer offsets) and returns the windows a message closed; they
are expanded into one JSON message each on `--output`. Runs until SIGTERM (Quix handles it).

Why not `sdf.tumbling_window(...)`: Quix windows one event per message at the message timestamp, while a
signal batch carries 100 samples with their own event times; exploding batches into per-sample events and
re-keying by channel (group_by, an extra topic) would measure a different job.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from quixstreams import Application, State

sys.path.insert(0, str(Path(__file__).resolve().parent))
import signal_job


def process(message: dict[str, Any], state: State) -> list[dict[str, Any]]:
    key, channel = message["key"], message["channel"]
    stored = state.get(channel)
    channel_state = signal_job.ChannelState.from_dict(stored) if stored else signal_job.ChannelState()
    closed = channel_state.process(key, channel, message["times"], message["values"])
    state.set(channel, channel_state.to_dict())
    return closed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", required=True)
    args = parser.parse_args()
    app = Application(broker_address=args.bootstrap, consumer_group=args.group, auto_offset_reset="earliest",
                      state_dir=args.state_dir, use_changelog_topics=True, loglevel="WARNING",
                      producer_extra_config={"compression.type": "lz4", "linger.ms": 5})
    source = app.topic(args.input, value_deserializer="bytes", key_deserializer="str")
    sink = app.topic(args.output, value_serializer="json", key_serializer="str")
    sdf = app.dataframe(source)

    def decode(value: bytes, key: Any, timestamp: int, headers: Any) -> dict[str, Any] | None:
        record = signal_job.decode(value)
        if record is None:
            return None
        times, values = signal_job.valid_samples(record, signal_job.now_ms())
        return {"key": key or str(record["vehicle_id"]), "channel": str(record["name"]), "times": times,
                "values": values}

    sdf = sdf.apply(decode, metadata=True)
    sdf = sdf.filter(lambda message: message is not None)
    sdf = sdf.apply(process, stateful=True, expand=True)
    sdf.to_topic(sink)
    app.run()


if __name__ == "__main__":
    main()
