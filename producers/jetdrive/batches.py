"""Group decoded JetDrive samples into `dyno_sample_batch` records (schemas/avro/dyno_sample_batch/v2.avsc).

One record per (provider host, channel) per call, so a Kafka message carries many samples of one channel
and the per-message cost is paid once. The `batch_id` is derived from the station, the provider host,
the channel id and the first sample's timestamp: replaying the same datagrams (a pcap, a re-run of
`inspect`) yields the same ids, which is what downstream deduplication keys on.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fleetstream.producers.jetdrive.decoder import DecodedSample

__all__ = ["SOURCE", "provider_label", "samples_to_batches"]

SOURCE = "jetdrive"


def provider_label(provider_name: str, host: int) -> str:
    """The record's `provider`: the JetDrive provider name and its host id (names need not be unique)."""
    return f"{provider_name or 'unnamed'}@0x{host:04x}"


def samples_to_batches(samples: Iterable[DecodedSample], station_id: str, run_id: str = "") -> list[dict[str, Any]]:
    """One `dyno_sample_batch` record per (host, channel id, channel name, unit), samples in arrival order."""
    groups: dict[tuple[int, int, str, str], list[DecodedSample]] = {}
    for sample in samples:
        groups.setdefault((sample.host, sample.channel_id, sample.channel, sample.unit), []).append(sample)
    return [_record(group, station_id, run_id) for group in groups.values()]


def _record(group: list[DecodedSample], station_id: str, run_id: str) -> dict[str, Any]:
    first = group[0]
    return {
        "batch_id": f"{SOURCE}:{station_id}:{first.host}:{first.channel_id}:{first.timestamp_ms}",
        "source": SOURCE,
        "station_id": station_id,
        "provider": provider_label(first.provider, first.host),
        "run_id": run_id,
        "channel": first.channel,
        "unit": first.unit,
        "sensor_state": "ok",
        "samples": [{"timestamp_ms": s.timestamp_ms, "value": s.value, "flags": 0} for s in group],
    }
