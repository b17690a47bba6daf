"""The benchmark job as a plain confluent-kafka consume loop: batch consume, decode, validate, dedup, window.

    python plain_job.py --bootstrap HOST:PORT --input TOPIC --output TOPIC --group GROUP

Reads `--input` from the beginning, writes each closed window as JSON (keyed by the record key) to `--output`,
and runs until SIGTERM. The logic is `signal_job` (see there for the semantics); this file is only the shell.
Offsets are committed by the client's auto-commit (at-least-once is not what is measured here).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from confluent_kafka import Consumer, Producer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import signal_job


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    args = parser.parse_args()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": args.group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": True})
    # murmur2 as the Java clients and our worker (its own venv has no fleetstream to import KEY_PARTITIONER from)
    producer = Producer({"bootstrap.servers": args.bootstrap, "acks": "all", "enable.idempotence": True,
                         "compression.type": "lz4", "linger.ms": 5, "partitioner": "murmur2_random"})
    consumer.subscribe([args.input])
    states: dict[tuple[str, str], signal_job.ChannelState] = {}
    try:
        while not stop:
            messages = consumer.consume(num_messages=1000, timeout=0.2)
            now_ms = signal_job.now_ms()
            for message in messages:
                value = message.value()
                if message.error() or value is None:
                    continue
                record = signal_job.decode(value)
                if record is None:
                    continue
                key = (message.key() or b"").decode() or str(record["vehicle_id"])
                channel = str(record["name"])
                times, values = signal_job.valid_samples(record, now_ms)
                state = states.get((key, channel))
                if state is None:
                    state = states[(key, channel)] = signal_job.ChannelState()
                for window in state.process(key, channel, times, values):
                    producer.produce(args.output, key=key.encode(), value=json.dumps(window).encode())
            producer.poll(0)
    finally:
        producer.flush(30)
        consumer.close()


if __name__ == "__main__":
    main()
