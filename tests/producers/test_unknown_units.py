"""No reader changes a value whose unit it does not know (issue 11).

Each case feeds one reader a value whose unit the source does not declare for certain (a WinPEP 8 unit code and
sub-field not in producers.wp8.UNITS, a CSV or Power Vision column without a unit, a JetDrive unit code the
spec does not define or its vendor-defined "extended" code, an Innovate chain without an AFR multiplier) and
checks what is published: the source's number, unchanged, under an `unknown` unit (or, for Innovate, no AFR
at all rather than one computed with an assumed stoichiometric ratio). Values chosen so that any of the
former guesses would have changed them: lambda-sized numbers in AFR-named channels (x14.7), temperatures
(degC -> degF), speeds (km/h -> mph).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from typing import BinaryIO

import pytest

from fleetstream.producers import csvimport, pvlog, wp8
from fleetstream.producers.files import ParsedFile, ParseOptions
from fleetstream.producers.innovate import (
    AuxChannel,
    InnovateBatcher,
    InnovateDecoder,
    encode_aux,
    encode_packet,
    encode_wideband,
    lambda_to_raw,
)
from fleetstream.producers.jetdrive.decoder import JetDriveDecoder
from fleetstream.producers.jetdrive.protocol import (
    ALL_HOSTS,
    ChannelDef,
    ChannelInfo,
    ChannelValue,
    ChannelValues,
    Message,
    encode_message,
)
from fleetstream.schemas.units import is_unknown_unit
from tests.data.files.make_files import EcuChannel, Wp8Channel, wp8_ecu_log_bytes, wp8_run_bytes

Published = list[tuple[str, float]]
"""(unit, value) of every sample of the channel under test."""


def f32(value: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", value))[0])


def _file_samples(parser: Callable[[BinaryIO, ParseOptions], ParsedFile], data: bytes) -> Published:
    parsed = parser(io.BytesIO(data), ParseOptions(label="case"))
    return [(sample.unit, sample.value) for sample in parsed.samples]


def wp8_dyno_run(name: str, code: int, sub: int, value: float) -> Published:
    channel = Wp8Channel(17, 0, 1, name, code, [(0, value), (10, value)], unit_sub=sub)
    return _file_samples(wp8.parse, wp8_run_bytes([channel], stoich_afr=14.7))


def wp8_ecu_log(name: str, code: int, sub: int | None, value: float) -> Published:
    return _file_samples(wp8.parse, wp8_ecu_log_bytes([EcuChannel(name, code, unit_sub=sub)], [(70_000, [value])]))


def csv_column(header: str, value: float) -> Published:
    return _file_samples(csvimport.parse, f"Time (ms),{header}\n0,{value}\n10,{value}\n".encode())


def pvlog_signal(name: str, units: str, value: float) -> Published:
    text = ("Dynojet Power Vision Log File\r\n\"Format:\",\"Pro-XY CSV 1.0.0\"\r\n"
            f"1,\"PV\",\"1001\",\"{name}\",\"{units}\",\"{name}\",\"#000000\"\r\n\r\n"
            f"\"Time(ms)\",\"Signal\",\"Value\"\r\n0,1,{value}\r\n20,1,{value}\r\n")
    return _file_samples(pvlog.parse, text.encode())


def jetdrive_channel(name: str, unit_code: int, value: float) -> Published:
    decoder = JetDriveDecoder(0x1234)
    announce = ChannelInfo("Dyno", (ChannelDef(1, name, unit_code),))
    decoder.feed(encode_message(Message(0x4321, 1, ALL_HOSTS, announce)), 1000)
    sample = ChannelValues((ChannelValue(1, 5, value),))
    samples = decoder.feed(encode_message(Message(0x4321, 2, ALL_HOSTS, sample)), 1010)
    return [(sample.unit, sample.value) for sample in samples]


CASES = [
    # WinPEP 8, both layouts: pairs not known for certain, values that the old table and heuristics changed.
    pytest.param(lambda: wp8_dyno_run("Accel 1", 11, 0, 1.5125), f32(1.5125), id="wp8 run: accel code 11"),
    pytest.param(lambda: wp8_dyno_run("Humidity", 10, 0, 39.2), f32(39.2), id="wp8 run: humidity code 10"),
    pytest.param(lambda: wp8_dyno_run("afr", 13, 0, 0.775), f32(0.775), id="wp8 run: lambda in code 13 sub 0"),
    pytest.param(lambda: wp8_dyno_run("Coolant Temperature", 6, 2, 190.0), 190.0, id="wp8 run: temp sub 2"),
    pytest.param(lambda: wp8_ecu_log("Air/Fuel Ratio", 13, None, 0.9), f32(0.9), id="wp8 log: code 13, no sub"),
    pytest.param(lambda: wp8_ecu_log("Vehicle Speed", 2, 2, 116.0), 116.0, id="wp8 log: speed sub 2"),
    # CSV and Power Vision: a known channel name whose unit the file does not state.
    pytest.param(lambda: csv_column("(PV) Air/Fuel Ratio 1", 0.87), 0.87, id="csv: AFR column, no unit"),
    pytest.param(lambda: csv_column("Intake Air Temp", 38.0), 38.0, id="csv: IAT column, no unit"),
    pytest.param(lambda: csv_column("Speed Drum 1", 116.0), 116.0, id="csv: speed column, no unit"),
    pytest.param(lambda: pvlog_signal("Air/Fuel Ratio", "", 0.87), 0.87, id="pvlog: AFR signal, no unit"),
    pytest.param(lambda: pvlog_signal("Spark Advance", "", 28.5), 28.5, id="pvlog: unknown name, no unit"),
    # JetDrive: a unit code outside the spec's table, and 254 (extended: vendor-defined unit).
    pytest.param(lambda: jetdrive_channel("Air/Fuel Ratio", 99, 0.9), f32(0.9), id="jetdrive: unit code 99"),
    pytest.param(lambda: jetdrive_channel("Intake Air Temp", 254, 38.0), 38.0, id="jetdrive: unit code 254"),
]


@pytest.mark.parametrize(("read", "stored"), CASES)
def test_no_reader_changes_a_value_whose_unit_it_does_not_know(read: Callable[[], Published], stored: float) -> None:
    published = read()
    assert published, "the value must be published, not dropped"
    for unit, value in published:
        assert is_unknown_unit(unit), unit
        assert value == stored  # exactly the source's number: no conversion, no scaling


@pytest.mark.parametrize(("aux", "unit", "value"), [
    (AuxChannel("aux1"), "V", 218 * 5.0 / 1023),                                 # ISP2's 0..1023 = 0..5 V
    (AuxChannel("engine_speed", 10.0), "unknown", 2180.0),                      # a scaling, no unit: not V
    (AuxChannel("engine_speed", 10.0, unit="rpm"), "rpm", 2180.0),
])
def test_innovate_aux_channel_is_volts_only_with_the_volts_scaling(aux: AuxChannel, unit: str, value: float) -> None:
    decoder = InnovateDecoder()
    [packet] = decoder.feed(encode_packet([encode_aux(218)]))
    batcher = InnovateBatcher("cell-1", aux_channels=[aux])
    batcher.add(1000, packet)
    [record] = batcher.take()
    assert (record["unit"], record["samples"][0]["value"]) == (unit, pytest.approx(value))


def test_innovate_without_an_afr_multiplier_publishes_lambda_and_no_assumed_afr() -> None:
    # ISP2: AFR = lambda x multiplier / 10; a chain whose multiplier is 0 has no fuel configured. No AFR is
    # made up from an assumed 14.7: the lambda goes out as measured, and nothing else.
    decoder = InnovateDecoder()
    packets = decoder.feed(encode_packet(encode_wideband(0, lambda_to_raw(0.9), afr_multiplier=0)) * 2)
    batcher = InnovateBatcher("cell-1")
    for index, packet in enumerate(packets):
        batcher.add(1000 + 82 * index, packet)
    published = {(record["channel"], record["unit"]): [s["value"] for s in record["samples"]]
                 for record in batcher.take()}
    assert published == {("lambda", "lambda"): [0.9, 0.9]}
