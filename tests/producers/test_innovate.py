"""Innovate MTS (ISP2): the decoder against real captures and hand-computed frames, encode/decode properties,
resync after junk, batching into dyno_sample_batch records, and the reader + simulator over real serial URLs."""

from __future__ import annotations

import json
import os
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
import pytest
import serial
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetstream.producers.innovate import (
    PACKET_INTERVAL_MS,
    AuxChannel,
    DeviceInfo,
    InnovateBatcher,
    InnovateDecoder,
    InnovateReader,
    InnovateSimulator,
    Packet,
    SensorState,
    encode_aux,
    encode_device_info,
    encode_header,
    encode_lm1,
    encode_packet,
    encode_wideband,
    lambda_to_raw,
    open_port,
    parse_device_info,
    stamp_burst,
)
from fleetstream.producers.reliability import Backoff

DATA = Path(__file__).resolve().parents[1] / "data" / "innovate"
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "avro" / "dyno_sample_batch" / "v2.avsc"


def decode_file(name: str, chunk: int = 0) -> tuple[list[Packet], InnovateDecoder]:
    data = (DATA / name).read_bytes()
    decoder = InnovateDecoder()
    if chunk:
        packets = [p for i in range(0, len(data), chunk) for p in decoder.feed(data[i:i + chunk])]
    else:
        packets = decoder.feed(data)
    decoder.finish()
    return packets, decoder


def function_runs(packets: list[Packet]) -> list[tuple[int, int]]:
    """(function code, run length) of the first sensor, in order."""
    runs: list[list[int]] = []
    for packet in packets:
        code = packet.sensors[0].function_code
        if runs and runs[-1][0] == code:
            runs[-1][1] += 1
        else:
            runs.append([code, 1])
    return [(code, n) for code, n in runs]


def assert_every_byte_accounted(decoder: InnovateDecoder) -> None:
    c = decoder.counters
    assert c.bytes_in == c.packet_bytes + c.skipped_bytes + c.dropped_bytes + decoder.buffered_bytes


# --- hand-computed frames ---------------------------------------------------------------------------------


def test_contract_example_lambda_0_928_encodes_and_decodes() -> None:
    # λ 0.928 -> L = 928 - 500 = 428 = 0x1AC -> word1 = (0x1AC >> 7) << 8 | (0x1AC & 0x7F) = 0x0300 | 0x2C.
    # word0 = 0x4200 | F=0 | (147 >> 7) << 8 = 0x100 | 147 & 0x7F = 0x13 -> 0x4313. Header, 2 words: 0xB282.
    frame = encode_packet(encode_wideband(0, lambda_to_raw(0.928), 147))
    assert frame == bytes.fromhex("B2824313032C")
    [packet] = InnovateDecoder().feed(frame)
    sensor = packet.sensors[0]
    assert sensor.state is SensorState.OK
    assert sensor.lambda_value == pytest.approx(0.928)
    assert sensor.afr == pytest.approx(0.928 * 14.7)  # 13.6416


def test_serial_log_capture_warms_up_then_runs_normal() -> None:
    packets, decoder = decode_file("Serial-log.isp2")
    assert len(packets) == 347
    assert Counter(p.header for p in packets) == {0xB282: 1, 0xB286: 346}
    assert function_runs(packets) == [(4, 326), (0, 21)]
    assert all(len(p.aux) == 4 for p in packets[1:]) and packets[0].aux == ()
    assert Counter(p.aux for p in packets[1:]).most_common(1)[0][0] == (0, 0, 0, 0)
    # First normal packet, bytes 43 13 2E 40: F = (0x4313 >> 10) & 7 = 0; multiplier = 0x80 | 0x13 = 147;
    # L = 0x2E << 7 | 0x40 = 5952 -> λ = (5952 + 500) / 1000 = 6.452 (free air reads very lean), AFR = 94.8444.
    first_normal = packets[326]
    assert first_normal.to_bytes()[:6] == bytes.fromhex("B2864313 2E40".replace(" ", ""))
    assert first_normal.sensors[0].lambda_value == pytest.approx(6.452)
    assert first_normal.sensors[0].afr == pytest.approx(94.8444)
    # Warm-up packet 100, lambda word 0x0052 = 82 -> 8.2 % of operating temperature, no λ.
    assert packets[100].sensors[0].warmup_percent == pytest.approx(8.2)
    assert packets[100].sensors[0].lambda_value is None and packets[100].sensors[0].afr is None
    # The file ends with a 67-byte text footer ("---------- 2017-11-05 ... Logging Stopped"): skipped, counted.
    assert decoder.counters.skipped_bytes == 67 and decoder.counters.dropped_bytes == 0
    assert_every_byte_accounted(decoder)


def test_nostart_capture_skips_leading_junk_and_keeps_every_packet() -> None:
    packets, decoder = decode_file("NoStart.TXT")
    # 2 junk bytes + 2 one-sensor packets (6 bytes) + 1155 packets of 7 words (14 bytes) = 16184, the file size.
    assert len(packets) == 1157
    assert Counter(p.header for p in packets) == {0xB282: 2, 0xB286: 1155}
    assert packets[0].offset == 2 and packets[0].header == 0xB282
    c = decoder.counters
    assert (c.skipped_bytes, c.resyncs, c.dropped_bytes) == (2, 1, 0)
    # 00 FF B2 82: 'FF B2' matches the header mask (178 words); word 2 (00 B2) has bit 7 set, so it is rejected.
    assert c.errors == {"junk": 1, "truncated_packet": 1}
    assert {(i.offset, i.reason) for i in c.recent_issues} == {(0, "junk"), (1, "truncated_packet")}
    codes = [p.sensors[0].function_code for p in packets]
    assert codes[:460] == [4] * 460  # warm-up
    assert codes[460] == 1 and Counter(codes[460:]) == {1: 649, 0: 48}  # O2 % with scattered normal packets
    # Packet 460, bytes 47 13 01 48: F = (0x4713 >> 10) & 7 = 1 (O2); value = 1 << 7 | 0x48 = 200 -> 20.0 %.
    assert packets[460].sensors[0].o2_percent == pytest.approx(20.0)
    # Packet 515, bytes 43 13 3C 5D: F = 0; L = 0x3C << 7 | 0x5D = 7773 -> λ 8.273.
    assert packets[515].sensors[0].lambda_value == pytest.approx(8.273)
    # Aux 0x015A = 1 << 7 | 0x5A = 218 counts -> 218 * 5 / 1023 V.
    assert packets[460].aux == (0, 0, 218, 48)
    assert AuxChannel("aux3").value(218) == pytest.approx(1.06549, abs=1e-5)
    assert_every_byte_accounted(decoder)


def test_ssi4_capture_has_an_lc1_in_o2_mode_then_aux_only_packets() -> None:
    packets, decoder = decode_file("mts-ssi-4-192.asc")
    assert len(packets) == 42 and decoder.counters.errors == {}
    first = packets[0]
    # 47 13 01 4B: F = 1, value = 1 << 7 | 0x4B = 203 -> 20.3 % O2 (free air).
    assert first.header == 0xB282 and first.sensors[0].state is SensorState.O2_PERCENT
    assert first.sensors[0].o2_percent == pytest.approx(20.3) and first.sensors[0].afr is None
    for packet in packets[1:]:
        assert packet.header == 0xB284 and packet.sensors == ()
        assert packet.aux == (0, 1023, 789, 0)  # 0x077F = 7 << 7 | 0x7F = 1023 (5 V); 0x0615 = 6 << 7 | 0x15 = 789


def test_device_info_reply_of_an_ssi4() -> None:
    raw = (DATA / "S.txt").read_bytes()
    info = parse_device_info(raw)
    assert (info.firmware_version, info.version_text, info.device_type) == (0x100F, "1.00", "SSI4")
    assert (info.cpu, info.channels, info.extra) == (5, 4, bytes.fromhex("FC000000050000"))
    assert encode_device_info(info) == raw
    armed = InnovateDecoder()
    armed.expect_device_info()
    frame = encode_packet(encode_wideband(0, 500))
    [reply, data] = [p for chunk in (raw[:7], raw[7:] + frame) for p in armed.feed(chunk)]
    assert reply.kind == "device_info" and reply.device_info == info and data.kind == "data"
    lapsed = InnovateDecoder()
    lapsed.expect_device_info(within_packets=2)
    assert len(lapsed.feed(frame * 2 + raw + frame)) == 3 and lapsed.counters.skipped_bytes == 15
    assert lapsed.counters.errors == {"device_info_missing": 1, "junk": 1}
    unarmed = InnovateDecoder()  # not asked for: the bytes are junk, counted
    assert unarmed.feed(raw + frame)[0].offset == 15 and unarmed.counters.skipped_bytes == 15


# --- states, replies, errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "state", "field", "expected"), [
    (0, SensorState.OK, "lambda_value", 1.0),
    (1, SensorState.O2_PERCENT, "o2_percent", 50.0),
    (2, SensorState.CALIBRATING, "lambda_value", None),
    (3, SensorState.NEEDS_CALIBRATION, "lambda_value", None),
    (4, SensorState.WARMING_UP, "warmup_percent", 50.0),
    (5, SensorState.HEATER_CALIBRATION, "heater_countdown", 500),
    (6, SensorState.ERROR, "error_code", 500),
    (7, SensorState.RESERVED, "afr", None),
])
def test_function_codes_map_to_states_and_only_ok_gives_lambda(code: int, state: SensorState, field: str,
                                                                 expected: float | None) -> None:
    [packet] = InnovateDecoder().feed(encode_packet(encode_wideband(code, 500)))
    sensor = packet.sensors[0]
    assert sensor.state is state and getattr(sensor, field) == expected
    assert (sensor.lambda_value is not None) == (state is SensorState.OK)
    assert sensor.state_label == ("error:500" if state is SensorState.ERROR else state.value)


def test_first_sensor_multiplier_applies_to_the_chain() -> None:
    payload = [*encode_wideband(0, lambda_to_raw(1.0), 147), *encode_wideband(0, lambda_to_raw(1.0), 64)]
    [packet] = InnovateDecoder().feed(encode_packet(payload))
    assert [s.afr_multiplier for s in packet.sensors] == [147, 64]
    assert [s.afr for s in packet.sensors] == [pytest.approx(14.7), pytest.approx(14.7)]


def test_lm1_sub_packet_with_battery_and_aux() -> None:
    # Battery 0x2A1 = 673 counts with divider 3: 673 * 5 * 3 / 1023 = 9.868 V.
    payload = [*encode_lm1(0, lambda_to_raw(0.85), 147, battery_raw=673, battery_divider=3, recording=True),
               *(encode_aux(v) for v in (0, 100, 1023, 5, 6))]
    [packet] = InnovateDecoder().feed(encode_packet(payload))
    [lm1] = packet.sensors
    assert lm1.device == "lm1" and lm1.recording and lm1.lambda_value == pytest.approx(0.85)
    assert lm1.battery_volts == pytest.approx(673 * 5 * 3 / 1023)
    assert packet.aux == (0, 100, 1023, 5, 6)


def test_reply_packet_is_recognised_by_bit_12() -> None:
    frame = encode_packet([encode_aux(0xF3), encode_aux(0x4C), encode_aux(0x43)], is_data=False)
    [packet] = InnovateDecoder().feed(frame)
    assert packet.kind == "reply" and packet.reply_type == 0xF3 and packet.sensors == ()


def test_invalid_word_drops_the_packet_with_offset_and_reason() -> None:
    good = encode_packet(encode_wideband(0, 428))
    bad = encode_packet([0x6000, 0x0000])  # bit 14 set without the wideband markers
    decoder = InnovateDecoder()
    packets = decoder.feed(good + bad + good)
    assert [p.offset for p in packets] == [0, len(good) + len(bad)]
    assert decoder.counters.errors == {"invalid_word": 1} and decoder.counters.dropped_bytes == len(bad)
    assert decoder.counters.recent_issues[0].offset == len(good)
    assert_every_byte_accounted(decoder)


def test_resync_after_junk_and_a_cut_packet_in_the_middle() -> None:
    frames = [encode_packet([*encode_wideband(0, 400 + i), encode_aux(i)]) for i in range(6)]
    junk = bytes([0x13, 0x00, 0xFF, 0x7F, 0x22])
    cut = frames[2][:5]  # a packet that lost its tail
    stream = frames[0] + frames[1] + junk + cut + frames[3] + frames[4] + frames[5]
    decoder = InnovateDecoder()
    packets = [p for b in stream for p in decoder.feed(bytes([b]))]  # byte by byte: state kept between calls
    assert [p.sensors[0].raw_value for p in packets] == [400, 401, 403, 404, 405]
    c = decoder.counters
    assert c.skipped_bytes == len(junk) + len(cut) and c.resyncs == 1
    assert c.errors["truncated_packet"] == 1
    assert any(i.reason == "junk" and i.offset == 2 * len(frames[0]) for i in c.recent_issues)
    assert_every_byte_accounted(decoder)


def test_finish_counts_an_unfinished_packet() -> None:
    decoder = InnovateDecoder()
    assert decoder.feed(encode_packet(encode_wideband(0, 1))[:4]) == []
    decoder.finish()
    assert decoder.counters.dropped_bytes == 4 and decoder.counters.errors == {"truncated_at_end": 1}


# --- properties -------------------------------------------------------------------------------------------

thirteen_bits = st.integers(0, 0x1FFF)
wideband = st.tuples(st.integers(0, 7), thirteen_bits, st.integers(0, 255))


@settings(max_examples=300, deadline=None)
@given(sensors=st.lists(wideband, max_size=4), aux=st.lists(thirteen_bits, max_size=40), recording=st.booleans())
def test_encode_decode_round_trip(sensors: list[tuple[int, int, int]], aux: list[int], recording: bool) -> None:
    payload = [w for code, value, af in sensors for w in encode_wideband(code, value, af)]
    payload += [encode_aux(v) for v in aux]
    frame = encode_packet(payload, recording=recording)
    decoder = InnovateDecoder()
    [packet] = decoder.feed(frame)
    assert packet.to_bytes() == frame and packet.recording == recording
    assert [(s.function_code, s.raw_value, s.afr_multiplier) for s in packet.sensors] == sensors
    assert list(packet.aux) == aux
    if sensors:
        assert all(s.chain_afr_multiplier == sensors[0][2] for s in packet.sensors)
    assert decoder.counters.errors == {}


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=600), splits=st.lists(st.integers(1, 40), max_size=30))
def test_arbitrary_bytes_never_raise_and_every_byte_is_accounted(data: bytes, splits: list[int]) -> None:
    whole = InnovateDecoder()
    expected = [p.to_bytes() for p in whole.feed(data)]
    chunked = InnovateDecoder()
    got: list[bytes] = []
    pos = 0
    for size in splits:
        got += [p.to_bytes() for p in chunked.feed(data[pos:pos + size])]
        pos += size
    got += [p.to_bytes() for p in chunked.feed(data[pos:])]
    assert got == expected  # how bytes are split across reads never changes the result
    assert_every_byte_accounted(chunked)
    chunked.finish()
    assert chunked.buffered_bytes == 0
    assert_every_byte_accounted(chunked)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.tuples(st.integers(0, 7), thirteen_bits), min_size=1, max_size=20),
       junk=st.binary(min_size=1, max_size=30).map(lambda b: bytes(x & 0x7F for x in b)),
       where=st.integers(0, 20))
def test_packets_around_junk_are_all_recovered(values: list[tuple[int, int]], junk: bytes, where: int) -> None:
    frames = [encode_packet([*encode_wideband(code, value), encode_aux(value)]) for code, value in values]
    where = min(where, len(frames))
    decoder = InnovateDecoder()
    packets = decoder.feed(b"".join(frames[:where]) + junk + b"".join(frames[where:]))
    assert [(p.sensors[0].function_code, p.sensors[0].raw_value) for p in packets] == values
    decoder.finish()  # junk at the very end is only known to be junk once the stream ends
    c = decoder.counters
    assert c.skipped_bytes + c.dropped_bytes == len(junk) and c.resyncs <= 1
    if where < len(frames):
        assert c.skipped_bytes == len(junk) and c.resyncs == 1


@given(st.floats(0.5, 8.691, allow_nan=False))
def test_lambda_raw_round_trip(lam: float) -> None:
    [packet] = InnovateDecoder().feed(encode_packet(encode_wideband(0, lambda_to_raw(lam))))
    assert packet.sensors[0].lambda_value == pytest.approx(lam, abs=0.0005)


def test_encoder_rejects_out_of_range_fields() -> None:
    for bad in (lambda: encode_wideband(8, 0), lambda: encode_aux(0x2000), lambda: encode_header(256),
                lambda: encode_wideband(0, 0, 256), lambda: lambda_to_raw(0.2)):
        with pytest.raises(ValueError):
            bad()


# --- timestamps and records -------------------------------------------------------------------------------


def test_a_burst_is_spread_back_at_the_chain_cadence_and_stamps_never_go_back() -> None:
    packets = InnovateDecoder().feed(encode_packet(encode_wideband(0, 1)) * 3)
    assert stamp_burst(packets, 10_000, None) == [10_000 - 164, 10_000 - 82, 10_000]  # round(2 * 81.92) = 164
    assert stamp_burst(packets, 10_000, 9_990) == [9_991, 9_992, 10_000]
    assert PACKET_INTERVAL_MS == 81.92


def _schema() -> Any:
    return fastavro.parse_schema(json.loads(SCHEMA_PATH.read_text()))


def test_batcher_reports_states_and_only_ok_samples() -> None:
    batcher = InnovateBatcher("cell-1", aux_channels=[AuxChannel("engine_speed", 10.0, unit="rpm")])
    stream = (encode_packet([*encode_wideband(4, 300), encode_aux(90)])
              + encode_packet([*encode_wideband(4, 600), encode_aux(91)])
              + encode_packet([*encode_wideband(0, lambda_to_raw(0.9)), encode_aux(250)])
              + encode_packet([*encode_wideband(6, 9), encode_aux(0)]))
    for i, packet in enumerate(InnovateDecoder().feed(stream)):
        batcher.add(1000 + 82 * i, packet)
    records = batcher.take()
    schema = _schema()
    for record in records:
        fastavro.validation.validate(record, schema, raise_errors=True)
    by_key = {(r["provider"], r["channel"], r["sensor_state"]): r for r in records}
    warm = by_key[("wideband1", "afr", "warming_up")]
    assert warm["samples"] == [] and warm["batch_id"] == "innovate:cell-1:wideband1:afr:1000"
    ok = by_key[("wideband1", "afr", "ok")]
    assert [s["value"] for s in ok["samples"]] == [pytest.approx(0.9 * 14.7)] and ok["unit"] == "AFR"
    assert by_key[("wideband1", "lambda", "ok")]["samples"][0]["timestamp_ms"] == 1164
    assert by_key[("wideband1", "lambda", "error:9")]["samples"] == []
    rpm = by_key[("aux", "engine_speed", "ok")]
    assert rpm["unit"] == "rpm" and [s["value"] for s in rpm["samples"]] == [900.0, 910.0, 2500.0, 0.0]
    assert batcher.state_changes == 3 and batcher.take() == []


def test_batch_ids_are_stable_across_a_replay() -> None:
    frames = InnovateSimulator(seed=3, warmup_packets=2).frames(40)
    packets = InnovateDecoder().feed(b"".join(frames))

    def ids() -> list[str]:
        batcher = InnovateBatcher("cell-1", max_samples_per_batch=10)
        for i, packet in enumerate(packets):
            batcher.add(5000 + 82 * i, packet)
        return [r["batch_id"] for r in batcher.take()]

    first = ids()
    assert first == ids() and len(first) == len(set(first))


# --- simulator, reader, serial URLs -----------------------------------------------------------------------


def test_simulator_is_deterministic_and_warms_up_before_pulls() -> None:
    a = b"".join(InnovateSimulator(seed=7, warmup_packets=10, junk_probability=0.2).frames(300))
    assert a == b"".join(InnovateSimulator(seed=7, warmup_packets=10, junk_probability=0.2).frames(300))
    packets = InnovateDecoder().feed(a)
    assert len(packets) == 300
    assert [p.sensors[0].state for p in packets[:10]] == [SensorState.WARMING_UP] * 10
    lambdas = [p.sensors[0].lambda_value for p in packets[10:]]
    assert all(lam is not None and 0.8 < lam < 1.45 for lam in lambdas)
    rpms = [p.aux[0] * 10 for p in packets[10:]]
    assert max(rpms) > 6000 and min(rpms) < 1000  # idle, a pull to ~6800 rpm, decel


@pytest.fixture
def null_modem() -> Iterator[int]:
    """A TCP relay on 127.0.0.1: the first two clients are wired to each other, like a null-modem cable."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    done = threading.Event()

    def relay() -> None:
        a, _ = server.accept()
        b, _ = server.accept()
        peers = {a: b, b: a}
        while not done.is_set():
            readable, _, _ = select.select(list(peers), [], [], 0.05)
            for sock in readable:
                data = sock.recv(4096)
                if not data:
                    return
                peers[sock].sendall(data)

    thread = threading.Thread(target=relay, daemon=True)
    thread.start()
    yield port
    done.set()
    thread.join(2)
    server.close()


def _wait_for(condition: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_reader_and_simulator_over_a_socket_url(null_modem: int) -> None:
    url = f"socket://127.0.0.1:{null_modem}"
    records: list[dict[str, Any]] = []
    infos: list[DeviceInfo] = []
    reader = InnovateReader(url, "cell-7", batch_interval_s=0.05, on_device_info=infos.append,
                            aux_channels=[AuxChannel("engine_speed", 10.0, unit="rpm")])
    stop_reader, stop_sim = threading.Event(), threading.Event()
    reader_thread = threading.Thread(target=reader.run, args=(records.extend, stop_reader))
    reader_thread.start()
    _wait_for(lambda: reader.counters.connects == 1)
    sim = InnovateSimulator(url, seed=11, interval_s=0.004, warmup_packets=8, junk_probability=0.1)
    sim_thread = threading.Thread(target=sim.run, args=(stop_sim, 120))
    sim_thread.start()
    reader.send("S")
    sim_thread.join(20)
    _wait_for(lambda: reader.decoder.counters.data_packets == 120)
    stop_reader.set()
    reader_thread.join(5)

    expected = InnovateDecoder().feed(b"".join(InnovateSimulator(seed=11, warmup_packets=8,
                                                                 junk_probability=0.1).frames(120)))
    c = reader.decoder.counters
    assert c.skipped_bytes == sim.junk_bytes > 0 and c.dropped_bytes == 0
    assert infos == [InnovateSimulator.DEVICE_INFO] and reader.device_info == InnovateSimulator.DEVICE_INFO
    samples = [s for r in records if r["channel"] == "lambda" for s in r["samples"]]
    assert [s["value"] for s in samples] == [p.sensors[0].lambda_value for p in expected[8:]]
    stamps = [s["timestamp_ms"] for s in samples]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    states = [r["sensor_state"] for r in records if r["channel"] == "afr"]
    assert states[0] == "warming_up" and set(states[1:]) == {"ok"}
    rpm = [s["value"] for r in records if r["channel"] == "engine_speed" for s in r["samples"]]
    assert rpm == [p.aux[0] * 10.0 for p in expected]
    schema = _schema()
    for record in records:
        fastavro.validation.validate(record, schema, raise_errors=True)
    assert reader.counters.samples == sum(len(r["samples"]) for r in records)


def test_reader_on_a_pty_reads_a_real_tty_device() -> None:
    master, slave = os.openpty()
    path = os.ttyname(slave)
    records: list[dict[str, Any]] = []
    reader = InnovateReader(path, "cell-pty", batch_interval_s=0.05)
    stop = threading.Event()
    thread = threading.Thread(target=reader.run, args=(records.extend, stop))
    thread.start()
    try:
        _wait_for(lambda: reader.counters.connects == 1)
        frames = list(InnovateSimulator(seed=5, warmup_packets=0, aux_rpm=False, extra_aux=2).frames(30))
        for frame in frames:
            os.write(master, frame)
            time.sleep(0.002)
        _wait_for(lambda: reader.decoder.counters.data_packets == 30)
    finally:
        stop.set()
        thread.join(5)
        os.close(master)
        os.close(slave)
    assert reader.decoder.counters.errors == {}
    afr = [s for r in records if r["channel"] == "afr" for s in r["samples"]]
    assert len(afr) == 30
    aux_channels = {r["channel"] for r in records if r["provider"] == "aux"}
    assert aux_channels == {"aux1", "aux2"}


def test_commands_are_written_to_the_port() -> None:
    port = open_port("loop://", timeout_s=0.05)
    reader = InnovateReader("loop://", "cell-loop", opener=lambda url, timeout: port, batch_interval_s=0.05)
    for command in ("H", "R", "r", "c"):
        reader.send(command)
    with pytest.raises(ValueError):
        reader.send("X")
    stop = threading.Event()
    seen = bytearray()
    original_feed = reader.decoder.feed

    def spy(data: bytes) -> list[Packet]:
        seen.extend(data)
        if len(seen) >= 4:
            stop.set()
        return original_feed(data)

    reader.decoder.feed = spy  # type: ignore[method-assign]
    reader.run(lambda records: None, stop)
    assert bytes(seen) == b"HRrc" and reader.counters.commands_sent == 4  # loop:// echoes what was written


def test_reader_retries_a_port_that_fails_to_open() -> None:
    attempts: list[str] = []
    stop = threading.Event()

    def opener(url: str, timeout: float) -> Any:
        attempts.append(url)
        if len(attempts) >= 3:
            stop.set()
        raise serial.SerialException("could not open port /dev/ttyUSB9")

    reader = InnovateReader("/dev/ttyUSB9", "cell-x", opener=opener, backoff=Backoff(base_s=0.001, cap_s=0.002))
    reader.run(lambda records: None, stop)
    assert reader.counters.connect_failures == 3 and "ttyUSB9" in reader.counters.last_error
    assert reader.snapshot()["connected"] is False
