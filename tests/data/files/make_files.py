"""Writers for the file formats fleetstream imports, and the simulated dyno pull the sample files hold.

No real Power Vision, WinPEP 8 or dyno CSV file may be shipped, so the fixtures in this folder and the demo
samples in producers/samples/ are written by this module, following the layouts in
../shared/contracts/hardware-formats.md. Regenerate them with:

    .venv/bin/python -m tests.data.files.make_files

The output is deterministic (seeded noise, fixed run time), which tests/producers/test_files.py checks.
"""

from __future__ import annotations

import csv
import io
import math
import random
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
SAMPLES = HERE.parents[2] / "producers" / "samples"

RUN_TIME_MS = 1_715_682_720_000  # 2024-05-14 10:32:00 UTC
STOICH_AFR = 14.7


@dataclass(frozen=True)
class PullPoint:
    """The state of a simulated wide-open-throttle pull at one instant, in US units."""

    time_ms: int
    rpm: float
    torque_ftlb: float
    power_hp: float
    afr: float
    map_kpa: float
    iat_degf: float
    tps_pct: float
    speed_mph: float
    force_lbf: float


def torque_curve_ftlb(rpm: float) -> float:
    """A naturally aspirated V8-like curve: 300 ft-lb at 4500 rpm, about 255 at 2500 and 250 at 6500."""
    return 300.0 - 45.0 * ((rpm - 4500.0) / 2000.0) ** 2 - (5.0 if rpm > 4500 else 0.0) * (rpm - 4500.0) / 2000.0


def dyno_pull(duration_ms: int = 8000, step_ms: int = 10, seed: int = 7) -> list[PullPoint]:
    """A pull from 2500 to 6500 rpm over `duration_ms`; hp = torque x rpm / 5252 holds at every point."""
    rng = random.Random(seed)
    points = []
    drum_circumference_ft = 7.85
    for time_ms in range(0, duration_ms + 1, step_ms):
        fraction = time_ms / duration_ms
        rpm = 2500.0 + 4000.0 * fraction
        torque = torque_curve_ftlb(rpm) + rng.gauss(0.0, 0.8)
        power = torque * rpm / 5252.0
        speed_mph = rpm / 6500.0 * 118.0
        drum_rpm = speed_mph * 5280.0 / 60.0 / drum_circumference_ft
        force = power * 33000.0 / (drum_circumference_ft * drum_rpm)
        points.append(PullPoint(
            time_ms=time_ms, rpm=round(rpm, 1), torque_ftlb=round(torque, 2), power_hp=round(power, 2),
            afr=round(13.5 - 0.7 * fraction + rng.gauss(0.0, 0.05), 2),
            map_kpa=round(97.0 + 2.0 * math.sin(fraction * math.pi) + rng.gauss(0.0, 0.2), 1),
            iat_degf=round(85.0 + 7.0 * fraction, 1),
            tps_pct=round(min(100.0, 20.0 + 80.0 * time_ms / 300.0), 1),
            speed_mph=round(speed_mph, 2), force_lbf=round(force, 1)))
    return points


# --- Power Vision text layout ---------------------------------------------------------------------------------

# (index, name, units, attribute of PullPoint or None for a channel in a unit with no canonical conversion,
#  period in ms): signals at different rates, as a Power Vision logs them.
PV_SIGNALS: list[tuple[int, str, str, str | None, int]] = [
    (1, "Engine Speed", "rpm", "rpm", 20),
    (2, "Horsepower", "hp", "power_hp", 20),
    (3, "Torque", "ft-lb", "torque_ftlb", 20),
    (4, "Air/Fuel Ratio", "AFR", "afr", 40),
    (5, "Manifold Absolute Pressure", "kPa", "map_kpa", 20),
    (6, "Intake Air Temp", "°F", "iat_degf", 200),
    (7, "Throttle Position", "%", "tps_pct", 20),
    (8, "Spark Advance", "deg", None, 40),
]


def pvlog_text(pull: Sequence[PullPoint]) -> str:
    """A Power Vision log in the documented text layout ("Pro-XY CSV 1.0.0")."""
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\r\n")
    out.write("Dynojet Power Vision Log File\r\n")
    writer.writerow(["Format:", "Pro-XY CSV 1.0.0"])
    for index, name, units, _, _ in PV_SIGNALS:
        out.write(f'{index},"PV","{1000 + index}","{name}","{units}","{name} ({units})","#{index * 20:06x}"\r\n')
    out.write("\r\n")
    writer.writerow(["Time(ms)", "Signal", "Value"])
    for point in pull:
        for index, _, _, attribute, period_ms in PV_SIGNALS:
            if point.time_ms % period_ms:
                continue
            value = getattr(point, attribute) if attribute else round(28.0 - point.rpm / 1000.0, 1)
            out.write(f"{point.time_ms},{index},{value:g}\r\n")
    return out.getvalue()


def write_pvlog(path: Path, pull: Sequence[PullPoint]) -> None:
    path.write_bytes(pvlog_text(pull).encode("utf-8"))


# --- WinPEP 8, protocol-buffers layout (dyno runs) -------------------------------------------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def pb_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value) if value else b""  # proto3: zero is not written


def pb_bytes(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def pb_text(number: int, text: str) -> bytes:
    return pb_bytes(number, text.encode("utf-8")) if text else b""


def pb_float(number: int, value: float) -> bytes:
    return varint(number << 3 | 5) + struct.pack("<f", value) if value else b""


def pb_double(number: int, value: float) -> bytes:
    return varint(number << 3 | 1) + struct.pack("<d", value) if value else b""


def pb_fixed64(number: int, value: int) -> bytes:
    return varint(number << 3 | 1) + struct.pack("<Q", value)


@dataclass(frozen=True)
class Wp8Channel:
    """One channel block of a dyno run: where it comes from, its unit (code, sub-field), its (time ms, value) points."""

    module_id: int
    sub_index: int
    channel_id: int
    name: str
    unit_code: int
    points: Sequence[tuple[int, float]]
    device: str = ""
    category: str = ""
    unit_sub: int = 0
    """Field 3.2, the unit within the quantity (proto3: 0 is not written)."""


def wp8_channel_block(channel: Wp8Channel) -> bytes:
    metadata = pb_varint(1, channel.module_id) + pb_varint(2, channel.sub_index) + pb_varint(4, channel.channel_id)
    unit = pb_varint(1, channel.unit_code) + pb_varint(2, channel.unit_sub)
    body = pb_bytes(1, metadata) + pb_text(2, channel.name) + pb_bytes(3, unit)
    body += b"".join(pb_bytes(4, pb_float(1, value) + pb_varint(2, time_ms)) for time_ms, value in channel.points)
    return body + pb_text(7, channel.device) + pb_text(8, channel.category)


def filetime(ms: int) -> int:
    return (ms + 11_644_473_600_000) * 10_000


def wp8_run_bytes(channels: Iterable[Wp8Channel], *, run_time_ms: int | None = RUN_TIME_MS,
                  stoich_afr: float | None = STOICH_AFR, fields: dict[int, str] | None = None) -> bytes:
    """A dyno-run file: magic, layout 0x01, channel blocks (field 1), then run-level fields in number order."""
    out = bytearray(b"\xfe\xce\xfa\xce\x01")
    for channel in channels:
        out += pb_bytes(1, wp8_channel_block(channel))
    texts = fields if fields is not None else {3: "Baseline pull, 4th gear", 10: "8.2.1.1045", 11: "2.14",
                                               15: "250iX-41873", 18: "40500412B", 25: "Westside Dyno",
                                               28: "WOT 2500-6500"}
    for number in sorted({*texts, 19, 29}):
        if number == 19 and run_time_ms is not None:
            out += pb_fixed64(19, filetime(run_time_ms))
        elif number == 29 and stoich_afr is not None:
            out += pb_double(29, stoich_afr)
        elif number in texts:
            out += pb_text(number, texts[number])
    return bytes(out)


def degf_to_degc(degf: float) -> float:
    return (degf - 32.0) / 1.8


def pull_channels(pull: Sequence[PullPoint]) -> list[Wp8Channel]:
    """The pull as WinPEP 8 records it: dyno CPU at 100 Hz, wideband at 50 Hz, ECU at 20 Hz, probe 1 Hz.

    Unit (code, sub-field) pairs: the ones producers.wp8.UNITS knows (speed 2/1 mph, AFR 13/1, temperature 6/1
    degC, so the IAT is stored in degC) and, for the rest, pairs it does not know (imported unchanged with the
    unit unknown(code=C,sub=S)); humidity carries code 10 without a sub-field, as in a real Dynoware RT run.
    """

    def series(attribute: str, period_ms: int, convert: Callable[[float], float] = float) -> list[tuple[int, float]]:
        return [(p.time_ms, convert(getattr(p, attribute))) for p in pull if p.time_ms % period_ms == 0]

    return [
        Wp8Channel(17, 0, 1, "Engine Speed", 8, series("rpm", 10), "Dynojet 250i", "Engine", unit_sub=1),
        Wp8Channel(17, 1, 2, "Power Drum 1", 4, series("power_hp", 10), "Dynojet 250i", "Power", unit_sub=1),
        Wp8Channel(17, 1, 3, "Torque Drum 1", 5, series("torque_ftlb", 10), "Dynojet 250i", "Power", unit_sub=1),
        Wp8Channel(17, 1, 4, "Speed Drum 1", 2, series("speed_mph", 10), "Dynojet 250i", "Drum", unit_sub=1),
        Wp8Channel(17, 1, 5, "Force Drum 1", 3, series("force_lbf", 10), "Dynojet 250i", "Drum", unit_sub=1),
        Wp8Channel(19, 0, 1, "Air/Fuel Ratio", 13, series("afr", 20), "Wideband 1", "AFR", unit_sub=1),
        Wp8Channel(102, 0, 10, "Manifold Absolute Pressure", 7, series("map_kpa", 50), "", "ECU", unit_sub=1),
        Wp8Channel(102, 0, 11, "Intake Air Temp", 6, series("iat_degf", 50, degf_to_degc), "", "ECU", unit_sub=1),
        Wp8Channel(102, 0, 12, "Throttle Position", 16, series("tps_pct", 50), "", "ECU", unit_sub=1),
        Wp8Channel(20, 0, 1, "Humidity", 10, [(t, 41.0) for t, _ in series("rpm", 1000)], "Atmospheric probe"),
    ]


def write_wp8_run(path: Path, pull: Sequence[PullPoint]) -> None:
    path.write_bytes(wp8_run_bytes(pull_channels(pull)))


# --- WinPEP 8, TLV layout (ECU logs) ---------------------------------------------------------------------------


def tlv(tag: int, value: bytes = b"") -> bytes:
    return struct.pack("<HI", tag, len(value)) + value


@dataclass(frozen=True)
class EcuChannel:
    name: str
    unit_code: int
    source: int = 1
    unit_sub: int | None = None
    """Sub-TLV 0x1106, the unit within the quantity; None writes no 0x1106."""


def wp8_ecu_log_bytes(channels: Sequence[EcuChannel], rows: Iterable[tuple[int, Sequence[float]]], *,
                      part_number: str = "32764-11B", flat_channels: bool = False) -> bytes:
    """An ECU log: magic, layout 0x04, header length, header TLVs, then one 0x1003 TLV per row.

    Channels are written with their sub-TLVs inside the 0x1000 value, or with `flat_channels` after a 0x1000
    of length 0: the contract allows both readings, the parser accepts both.
    """
    header = bytearray(tlv(0x0001, part_number.encode() + b"\0"))
    for channel in channels:
        sub_field = b"" if channel.unit_sub is None else tlv(0x1106, struct.pack("<H", channel.unit_sub))
        subs = (tlv(0x1001, channel.name.encode() + b"\0") + tlv(0x1101, bytes([channel.source]))
                + tlv(0x1105, struct.pack("<H", channel.unit_code)) + sub_field + tlv(0x1104, b"\x01\x00\x00\x00")
                + tlv(0xFFFF))
        header += tlv(0x1000) + subs if flat_channels else tlv(0x1000, subs)
    header += tlv(0xFFFF)
    out = bytearray(b"\xfe\xce\xfa\xce\x04" + struct.pack("<I", len(header)) + header)
    for timestamp_ms, values in rows:
        out += tlv(0x1003, struct.pack(f"<I{len(values)}f", timestamp_ms, *values))
    return bytes(out)


ECU_CHANNELS = [EcuChannel("Engine Speed", 8, unit_sub=1), EcuChannel("Throttle Position", 16, unit_sub=1),
                EcuChannel("Air/Fuel Ratio", 13, source=2, unit_sub=1)]


def ecu_rows(pull: Sequence[PullPoint], boot_ms: int = 184_250) -> list[tuple[int, list[float]]]:
    """ECU-log rows every 50 ms; timestamps count from ECU power-up, so they start well above 65535."""
    return [(boot_ms + p.time_ms, [p.rpm, p.tps_pct, p.afr]) for p in pull if p.time_ms % 50 == 0]


def write_wp8_ecu_log(path: Path, pull: Sequence[PullPoint]) -> None:
    path.write_bytes(wp8_ecu_log_bytes(ECU_CHANNELS, ecu_rows(pull)))


# --- dyno CSV export ----------------------------------------------------------------------------------------

CSV_COLUMNS: list[tuple[str, str | None]] = [
    ("Time (s)", None),
    ("(PV) Engine Speed", "rpm"),
    ("(DWRT CPU) Power Drum 1", "power_hp"),
    ("(DWRT CPU) Torque Drum 1", "torque_ftlb"),
    ("(PV) Air/Fuel Ratio 1", "afr"),
    ("(PV) Manifold Absolute Pressure", "map_kpa"),
    ("(PV) Intake Air Temp (°F)", "iat_degf"),
    ("(PV) Throttle Position", "tps_pct"),
    ("(DWRT CPU) Speed Drum 1", "speed_mph"),
    ("(DWRT CPU) Correction Factor", None),
]


def csv_text(pull: Sequence[PullPoint], delimiter: str = "\t", period_ms: int = 20) -> str:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow([header for header, _ in CSV_COLUMNS])
    for point in pull:
        if point.time_ms % period_ms:
            continue
        row = [f"{point.time_ms / 1000:.3f}"]
        for header, attribute in CSV_COLUMNS[1:]:
            row.append(f"{getattr(point, attribute):g}" if attribute else "1.012" if "Correction" in header else "")
        writer.writerow(row)
    return out.getvalue()


def write_csv(path: Path, pull: Sequence[PullPoint], *, delimiter: str = "\t", encoding: str = "cp1252") -> None:
    path.write_bytes(csv_text(pull, delimiter).encode(encoding))


def main() -> None:
    """Write the test fixtures (short pull) and the demo samples (full pull)."""
    short = dyno_pull(duration_ms=2000)
    write_pvlog(HERE / "pull.pvlog", short)
    write_wp8_run(HERE / "run.wp8", short)
    write_wp8_ecu_log(HERE / "ecu_log.wp8", short)
    write_csv(HERE / "pull.csv", short)
    full = dyno_pull()
    SAMPLES.mkdir(exist_ok=True)
    write_pvlog(SAMPLES / "dyno_pull.pvlog", full)
    write_wp8_run(SAMPLES / "dyno_pull.wp8", full)
    write_csv(SAMPLES / "dyno_pull.csv", full, delimiter=",", encoding="utf-8-sig")


if __name__ == "__main__":
    main()
