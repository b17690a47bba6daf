"""Replay a JetDrive packet capture through the decoder: what `fleetstream inspect` shows for a .pcap/.pcapng.

Offline there is nobody to ping, so timestamps use the decoder's no-sync mapping: each provider's first
value lands on the capture time of the packet that carried it. Replies the decoder would send
(RequestChannelInfo, Pong) are discarded: values whose ChannelInfo never appears in the capture end as
`dropped_before_info`, so the counts add up.

Not exported from `fleetstream.producers.jetdrive` on purpose: `fleetstream.producers.pcap` imports the protocol
constants, and
keeping this module out of the package's `__init__` keeps that import one-way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from fleetstream.producers.jetdrive.batches import provider_label, samples_to_batches
from fleetstream.producers.jetdrive.decoder import DecodedSample, JetDriveDecoder
from fleetstream.producers.jetdrive.protocol import DEFAULT_PORT
from fleetstream.producers.pcap import CaptureStats, read_udp_payloads

__all__ = ["CaptureReplay", "ChannelSummary", "replay_capture"]

_LISTENER_HOST = 0xFFFE  # a host id no provider in a capture can be answering to


@dataclass
class ChannelSummary:
    """Per (provider, channel): how many samples, their range and time span."""

    provider: str
    channel: str
    unit: str
    count: int = 0
    minimum: float = float("inf")
    maximum: float = float("-inf")
    first_ms: int = 0
    last_ms: int = 0

    def add(self, sample: DecodedSample) -> None:
        if self.count == 0:
            self.first_ms = sample.timestamp_ms
        self.count += 1
        self.minimum = min(self.minimum, sample.value)
        self.maximum = max(self.maximum, sample.value)
        self.last_ms = sample.timestamp_ms


@dataclass
class CaptureReplay:
    """The records a capture yields, per-channel summaries, and the reader's and decoder's counters."""

    records: list[dict[str, Any]] = field(default_factory=list)
    channels: dict[tuple[int, int], ChannelSummary] = field(default_factory=dict)
    capture: CaptureStats = field(default_factory=CaptureStats)
    decoder: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Plain data for printing as JSON or a table."""
        return {
            "capture": {"packets": self.capture.packets, "payloads": self.capture.payloads,
                        "skipped": dict(self.capture.skipped)},
            "decoder": self.decoder,
            "records": len(self.records),
            "channels": [vars(c) for c in self.channels.values()],
        }


def replay_capture(source: str | Path | BinaryIO, station_id: str, *, run_id: str = "",
                   port: int = DEFAULT_PORT, flush_every_samples: int = 500) -> CaptureReplay:
    """Decode every JetDrive datagram of a capture into `dyno_sample_batch` records and a summary.

    Records are cut every `flush_every_samples` decoded samples (all channels), as a live client cuts
    them every batch interval.
    Raises producers.pcap.PcapFormatError if the file is not a capture.
    """
    replay = CaptureReplay()
    decoder = JetDriveDecoder(_LISTENER_HOST)
    pending: list[DecodedSample] = []
    for payload in read_udp_payloads(source, port, replay.capture):
        samples = decoder.feed(payload.payload, payload.timestamp_ms)
        decoder.take_outgoing()
        for sample in samples:
            key = (sample.host, sample.channel_id)
            if key not in replay.channels:
                replay.channels[key] = ChannelSummary(provider_label(sample.provider, sample.host),
                                                      sample.channel, sample.unit)
            replay.channels[key].add(sample)
        pending.extend(samples)
        if len(pending) >= flush_every_samples:
            replay.records.extend(samples_to_batches(pending, station_id, run_id))
            pending = []
    if pending:
        replay.records.extend(samples_to_batches(pending, station_id, run_id))
    decoder.drop_held()  # the capture is over: whatever is still held will never be announced
    replay.decoder = decoder.counters.snapshot()
    return replay
