"""Innovate MTS (Serial Protocol 2, "ISP2") over serial: wire format, decoder, batches, reader, simulator.

- `protocol`: the packet and word layout, encoding and payload decoding (pure; the spec's ambiguities and how
  they are resolved are documented there).
- `decoder`: `InnovateDecoder`, bytes in any chunking to packets, resynchronising on damage; `stamp_burst`
  gives packets their times (pure).
- `batches`: `InnovateBatcher`, packets grouped into `dyno_sample_batch` records.
- `reader`: `InnovateReader`, the pyserial shell an edge agent runs.
- `simulator`: `InnovateSimulator`, an MTS chain streaming realistic packets.
"""

from fleetstream.producers.innovate.batches import AuxChannel, InnovateBatcher
from fleetstream.producers.innovate.decoder import DecodeIssue, DecoderCounters, InnovateDecoder, stamp_burst
from fleetstream.producers.innovate.protocol import (
    BAUDRATE,
    DEVICE_INFO_BYTES,
    DEVICE_INFO_WAIT_PACKETS,
    PACKET_INTERVAL_MS,
    SOURCE,
    Command,
    DeviceInfo,
    InnovateFormatError,
    Packet,
    SensorReading,
    SensorState,
    decode_payload,
    encode_aux,
    encode_device_info,
    encode_header,
    encode_lm1,
    encode_packet,
    encode_wideband,
    lambda_to_raw,
    parse_device_info,
)
from fleetstream.producers.innovate.reader import InnovateReader, ReaderCounters, open_port
from fleetstream.producers.innovate.simulator import InnovateSimulator

__all__ = [
    "BAUDRATE",
    "DEVICE_INFO_BYTES",
    "DEVICE_INFO_WAIT_PACKETS",
    "PACKET_INTERVAL_MS",
    "SOURCE",
    "AuxChannel",
    "Command",
    "DecodeIssue",
    "DecoderCounters",
    "DeviceInfo",
    "InnovateBatcher",
    "InnovateDecoder",
    "InnovateFormatError",
    "InnovateReader",
    "InnovateSimulator",
    "Packet",
    "ReaderCounters",
    "SensorReading",
    "SensorState",
    "decode_payload",
    "encode_aux",
    "encode_device_info",
    "encode_header",
    "encode_lm1",
    "encode_packet",
    "encode_wideband",
    "lambda_to_raw",
    "open_port",
    "parse_device_info",
    "stamp_burst",
]
