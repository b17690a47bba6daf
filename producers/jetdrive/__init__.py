"""Dynojet JetDrive (KLHDV over UDP multicast): wire codec, decoder, client, simulator.

- `protocol`: the message types and their byte layout (pure).
- `decoder`: `JetDriveDecoder`, datagrams in, canonical samples out, replies queued (pure).
- `batches`: samples grouped into `dyno_sample_batch` records.
- `client`: `JetDriveClient`, the multicast socket shell an edge agent runs.
- `simulator`: `JetDriveSimulator`, a dyno provider streaming realistic pulls.
"""

from fleetstream.producers.jetdrive.batches import provider_label, samples_to_batches
from fleetstream.producers.jetdrive.client import JetDriveClient, open_multicast_socket, random_host_id
from fleetstream.producers.jetdrive.decoder import (
    ClockSync,
    DecodedSample,
    JetDriveCounters,
    JetDriveDecoder,
    canonical_channel_name,
)
from fleetstream.producers.jetdrive.protocol import DEFAULT_GROUP, DEFAULT_MTU_BYTES, DEFAULT_PORT
from fleetstream.producers.jetdrive.simulator import DynoPullModel, DynoPullProfile, JetDriveSimulator

__all__ = [
    "DEFAULT_GROUP",
    "DEFAULT_MTU_BYTES",
    "DEFAULT_PORT",
    "ClockSync",
    "DecodedSample",
    "DynoPullModel",
    "DynoPullProfile",
    "JetDriveClient",
    "JetDriveCounters",
    "JetDriveDecoder",
    "JetDriveSimulator",
    "canonical_channel_name",
    "open_multicast_socket",
    "provider_label",
    "random_host_id",
    "samples_to_batches",
]
