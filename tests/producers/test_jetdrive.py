"""JetDrive: wire codec, decoder state (channels, sequence, clock, held values), batches, simulator, client."""

from __future__ import annotations

import io
import socket
import struct
import threading
import time
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetstream.producers.jetdrive import (
    DecodedSample,
    DynoPullModel,
    JetDriveClient,
    JetDriveDecoder,
    JetDriveSimulator,
    canonical_channel_name,
    samples_to_batches,
)
from fleetstream.producers.jetdrive.decoder import UNIT_NAMES, ClockSync
from fleetstream.producers.jetdrive.protocol import (
    ALL_HOSTS,
    HEADER_BYTES,
    OPTIONAL_KEYS,
    ChannelDef,
    ChannelInfo,
    ChannelValue,
    ChannelValues,
    ClearChannelInfo,
    Message,
    MessageKey,
    Ping,
    Pong,
    RequestChannelInfo,
    Sender,
    Unsupported,
    decode_datagram,
    encode_message,
    split_body,
)
from fleetstream.producers.jetdrive.replay import replay_capture
from fleetstream.producers.jetdrive.simulator import SIM_CHANNELS
from fleetstream.producers.pcap import write_udp_pcap
from fleetstream.schemas.codec import decode, encode
from fleetstream.schemas.units import canonical_unit

B = TypeVar("B")

ME = 0x0101
DYNO = 0x1A2B
PROBE = 0x3C4D
T0 = 1_700_000_000_000

# --- strategies ---------------------------------------------------------------------------------------

u8, u16, u32 = st.integers(0, 0xFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)


def fixed_text(max_bytes: int) -> st.SearchStrategy[str]:
    chars = st.characters(exclude_characters="\0", exclude_categories=["Cs"])
    return st.text(chars, max_size=max_bytes).filter(lambda s: len(s.encode("utf-8")) <= max_bytes)


channel_defs = st.builds(ChannelDef, u16, fixed_text(30), u8, u8)
channel_values = st.builds(ChannelValue, u16, u32, st.floats(width=32, allow_nan=False))
bodies = st.one_of(
    st.builds(ChannelInfo, fixed_text(50), st.lists(channel_defs, max_size=40).map(tuple)),
    st.builds(ChannelValues, st.lists(channel_values, max_size=200).map(tuple)),
    st.just(ClearChannelInfo()),
    st.builds(Ping, u32, st.binary(max_size=64), st.integers(1, 9)),
    st.builds(Pong, u32, u32, st.binary(max_size=64), st.integers(1, 9)),
    st.just(RequestChannelInfo()),
    st.builds(Unsupported, st.sampled_from(sorted(OPTIONAL_KEYS)), st.binary(max_size=64)),
)


def datagram(body, host=DYNO, sequence=1, destination=ALL_HOSTS) -> bytes:
    return encode_message(Message(host, sequence, destination, body))


def info(host=DYNO, name="Dyno CPU", channels=SIM_CHANNELS, sequence=1) -> bytes:
    return datagram(ChannelInfo(name, tuple(channels)), host, sequence)


def values(*triples, host=DYNO, sequence=2) -> bytes:
    return datagram(ChannelValues(tuple(ChannelValue(*t) for t in triples)), host, sequence)


def body_of(raw: bytes, kind: type[B]) -> B:
    """The body of the single message in `raw`, checked to be a `kind`."""
    (message,), errors = decode_datagram(raw)
    assert errors == [] and isinstance(message.body, kind)
    return message.body


def sync_of(decoder: JetDriveDecoder, host: int) -> ClockSync:
    sync = decoder.clock_sync(host)
    assert sync is not None
    return sync


def outgoing(decoder: JetDriveDecoder) -> list[Message]:
    return [m for d in decoder.take_outgoing() for m in decode_datagram(d)[0]]


# --- codec --------------------------------------------------------------------------------------------


@given(body=bodies, host=u16, sequence=u8, destination=u16)
def test_every_message_type_round_trips(body, host, sequence, destination):
    message = Message(host, sequence, destination, body)
    messages, errors = decode_datagram(encode_message(message))
    assert errors == []
    assert messages == [message]


def test_header_is_key_length_host_sequence_destination_little_endian():
    raw = datagram(Ping(0x01020304, b"ab"), host=0x1234, sequence=7, destination=0xFFFF)
    assert raw[:HEADER_BYTES] == bytes([0x04, 7, 0, 0x34, 0x12, 7, 0xFF, 0xFF])
    assert raw[HEADER_BYTES:] == bytes([1, 4, 3, 2, 1]) + b"ab"


@given(body=st.one_of(st.builds(ChannelInfo, fixed_text(50), st.lists(channel_defs, max_size=120).map(tuple)),
                      st.builds(ChannelValues, st.lists(channel_values, max_size=600).map(tuple))),
       mtu=st.integers(100, 1500))
def test_large_messages_split_into_complete_messages_within_the_mtu(body, mtu):
    sender = Sender(DYNO, mtu)
    parts = [decode_datagram(d) for d in sender.datagrams(body)]
    assert all(errors == [] for _, errors in parts)
    assert all(len(d) <= mtu for d in sender.datagrams(body))
    if isinstance(body, ChannelInfo):
        infos = [body_of(d, ChannelInfo) for d in sender.datagrams(body)]
        assert {p.provider_name for p in infos} == {body.provider_name}
        assert tuple(c for p in infos for c in p.channels) == body.channels
    else:
        value_parts = [body_of(d, ChannelValues) for d in sender.datagrams(body)]
        assert tuple(v for p in value_parts for v in p.values) == body.values


def test_sender_sequence_wraps_at_256():
    sender = Sender(DYNO)
    sequences = [decode_datagram(sender.datagrams(RequestChannelInfo())[0])[0][0].sequence for _ in range(300)]
    assert sequences[:3] == [1, 2, 3] and sequences[254:257] == [255, 0, 1]


def test_split_refuses_an_mtu_that_holds_no_record():
    with pytest.raises(ValueError, match="cannot hold even one ChannelInfo"):
        split_body(ChannelInfo("x", (ChannelDef(1, "a", 8),)), mtu_bytes=80)


def test_long_names_are_cut_at_a_character_boundary():
    decoded = body_of(datagram(ChannelInfo("Dyno", (ChannelDef(1, "é" * 20, 8),))), ChannelInfo)
    assert decoded.channels[0].name == "é" * 15


def test_names_with_nul_are_refused_when_encoding():
    with pytest.raises(ValueError, match=r"channel name .* NUL"):
        datagram(ChannelInfo("Dyno", (ChannelDef(1, "a\0b", 8),)))


def test_truncated_value_is_an_error_with_offset_and_reason():
    raw = values((1, 0, 1.0), (2, 0, 2.0))
    messages, errors = decode_datagram(raw[:-5])
    assert messages == []
    assert errors[0].reason == "truncated_value" and errors[0].offset == 0
    assert "declares 20 value bytes, 15 present" in str(errors[0])


def test_partial_records_decode_the_whole_ones_and_count_the_rest():
    raw = values((1, 5, 1.5))
    value = raw[HEADER_BYTES:] + b"\x01\x02\x03"
    damaged = struct.pack("<BHHBH", 2, len(value), DYNO, 1, ALL_HOSTS) + value
    (message,), (error,) = decode_datagram(damaged)
    assert message.body == ChannelValues((ChannelValue(1, 5, 1.5),))
    assert error.reason == "partial_value_record" and error.offset == HEADER_BYTES + 10


@pytest.mark.parametrize(("raw", "reason"), [
    (b"", "empty"),
    (b"\x02\x00", "truncated_header"),
    (struct.pack("<BHHBH", 0x77, 0, DYNO, 1, ALL_HOSTS), "unknown_key"),
    (struct.pack("<BHHBH", 0x04, 2, DYNO, 1, ALL_HOSTS) + b"\x01\x00", "short_ping"),
    (struct.pack("<BHHBH", 0x05, 9, DYNO, 1, ALL_HOSTS) + bytes(9), "unsupported_version"),
    (struct.pack("<BHHBH", 0x01, 10, DYNO, 1, ALL_HOSTS) + bytes(10), "short_channel_info"),
])
def test_malformed_datagrams_are_counted_by_reason(raw, reason):
    decoder = JetDriveDecoder(ME)
    assert decoder.feed(raw, T0) == []
    assert decoder.counters.errors[reason] == 1
    assert reason in decoder.counters.recent_errors[-1]


@settings(max_examples=500)
@given(raw=st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_from_feed(raw):
    decoder = JetDriveDecoder(ME)
    decoder.feed(info(), T0)
    decoder.feed(raw, T0 + 1)
    decoder.take_outgoing()
    assert decoder.counters.datagrams == 2


def test_optional_message_types_are_counted_as_unsupported():
    decoder = JetDriveDecoder(ME)
    decoder.feed(datagram(Unsupported(0x10, b"\x01")), T0)
    assert decoder.counters.unsupported == {"0x10": 1}
    assert decoder.counters.errors == {}


# --- decoder: channels, units, names --------------------------------------------------------------


def test_channel_ids_colliding_across_providers_are_kept_apart():
    decoder = JetDriveDecoder(ME)
    decoder.feed(info(DYNO, "Dyno CPU", [ChannelDef(1, "Engine RPM", 8)]), T0)
    decoder.feed(info(PROBE, "Atmospheric Probe", [ChannelDef(1, "Intake Air Temp", 6)]), T0)
    samples = decoder.feed(values((1, 10, 3000.0), host=DYNO), T0) + decoder.feed(
        values((1, 10, 25.0), host=PROBE), T0)
    by_host = {s.host: s for s in samples}
    assert (by_host[DYNO].provider, by_host[DYNO].channel, by_host[DYNO].unit) == ("Dyno CPU", "engine_speed", "rpm")
    assert (by_host[PROBE].channel, by_host[PROBE].unit) == ("iat", "degF")
    assert by_host[PROBE].value == pytest.approx(77.0)


@pytest.mark.parametrize(("code", "sent", "unit", "expected"), [
    (4, 100.0, "hp", 134.102), (5, 100.0, "ft-lb", 73.756), (6, 100.0, "degF", 212.0),
    (2, 100.0, "mph", 62.137), (3, 1000.0, "lbf", 224.809), (7, 101.3, "kPa", 101.3), (16, 42.0, "%", 42.0),
])
def test_values_are_converted_to_canonical_units(code, sent, unit, expected):
    decoder = JetDriveDecoder(ME)
    decoder.feed(info(channels=[ChannelDef(9, "Channel", code)]), T0)
    (sample,) = decoder.feed(values((9, 0, sent)), T0)
    assert sample.unit == unit
    assert sample.value == pytest.approx(expected, rel=1e-4)


def test_every_jetdrive_unit_code_has_a_canonical_unit():
    canonical = {code: canonical_unit(name) for code, name in UNIT_NAMES.items()}  # raises on an unknown spelling
    assert set(canonical) == {*range(17), 254, 255}
    assert (canonical[4], canonical[5], canonical[6], canonical[8]) == ("hp", "ft-lb", "degF", "rpm")


@pytest.mark.parametrize(("code", "unit"), [(99, "unknown(jetdrive unit 99)"),
                                           (254, "unknown(jetdrive unit 254, extended)")])
def test_unknown_and_extended_unit_codes_pass_unchanged_marked_unknown(code, unit):
    decoder = JetDriveDecoder(ME)
    decoder.feed(info(channels=[ChannelDef(3, "Mystery", code)]), T0)
    (sample,) = decoder.feed(values((3, 0, 1.5)), T0)
    assert (sample.unit, sample.value) == (unit, 1.5)
    assert decoder.counters.errors["unknown_unit_code"] == (code == 99)


def test_unit_none_stays_unitless():
    decoder = JetDriveDecoder(ME)
    decoder.feed(info(channels=[ChannelDef(3, "Gear", 255)]), T0)
    (sample,) = decoder.feed(values((3, 0, 4.0)), T0)
    assert (sample.unit, sample.value) == ("", 4.0)


@pytest.mark.parametrize(("name", "canonical"), [
    ("RPM", "engine_speed"), ("Engine RPM", "engine_speed"), ("Power", "power"), ("Horsepower", "power"),
    ("Torque", "torque"), ("Air/Fuel Ratio", "afr"), ("AFR", "afr"), ("MAP", "map"), ("IAT", "iat"),
    ("Intake Air Temp", "iat"), ("TPS", "tps"), ("Throttle", "tps"), ("Drum Speed", "drum_speed"),
    ("  Torque Drum 1 ", "torque_drum_1"), ("", "channel_7"), ("***", "channel_7"),
])
def test_provider_channel_names_map_to_canonical_names(name, canonical):
    assert canonical_channel_name(name, 7) == canonical


# --- decoder: sequence numbers ----------------------------------------------------------------------


def feed_sequences(decoder: JetDriveDecoder, sequences: list[int]) -> None:
    for sequence in sequences:
        decoder.feed(datagram(RequestChannelInfo(), DYNO, sequence, destination=0x7777), T0)


def test_sequence_wrap_from_255_to_0_is_not_a_gap():
    decoder = JetDriveDecoder(ME)
    feed_sequences(decoder, [253, 254, 255, 0, 1])
    assert decoder.counters.seq_gaps[DYNO] == 0 and decoder.counters.out_of_order[DYNO] == 0


def test_sequence_gaps_count_missing_messages_across_the_wrap():
    decoder = JetDriveDecoder(ME)
    feed_sequences(decoder, [250, 254, 2])  # 251-253 and 255, 0, 1 missing
    assert decoder.counters.seq_gaps[DYNO] == 6


def test_lower_sequence_numbers_count_as_out_of_order_without_a_false_gap():
    decoder = JetDriveDecoder(ME)
    feed_sequences(decoder, [10, 12, 11, 13])
    assert decoder.counters.out_of_order[DYNO] == 1
    assert decoder.counters.seq_gaps[DYNO] == 1


def test_sequences_are_tracked_per_host():
    decoder = JetDriveDecoder(ME)
    decoder.feed(datagram(RequestChannelInfo(), DYNO, 1), T0)
    decoder.feed(datagram(RequestChannelInfo(), PROBE, 100), T0)
    decoder.feed(datagram(RequestChannelInfo(), DYNO, 2), T0)
    assert sum(decoder.counters.seq_gaps.values()) == 0


# --- decoder: ping, pong, clock ---------------------------------------------------------------------


def test_ping_is_answered_with_a_pong_echoing_timestamp_and_bytes():
    decoder = JetDriveDecoder(ME)
    decoder.feed(datagram(Ping(123456, b"echo!"), DYNO), T0)
    pongs = [m for m in outgoing(decoder) if isinstance(m.body, Pong)]
    assert len(pongs) == 1
    pong = pongs[0]
    assert (pong.host, pong.destination) == (ME, DYNO)
    assert pong.body == Pong(123456, T0 & 0xFFFFFFFF, b"echo!")


def test_first_contact_sends_a_ping_and_pings_for_others_are_ignored():
    decoder = JetDriveDecoder(ME)
    decoder.feed(datagram(Ping(1), DYNO, destination=PROBE), T0)
    (ping,) = outgoing(decoder)
    assert isinstance(ping.body, Ping) and ping.destination == DYNO
    assert decoder.counters.ignored["not_addressed_to_us"] == 1


def pong_from(host: int, sent_ms: int, remote_ms: int) -> bytes:
    return datagram(Pong(sent_ms & 0xFFFFFFFF, remote_ms), host, destination=ME)


def test_clock_sync_maps_provider_time_with_offset_minus_latency():
    decoder = JetDriveDecoder(ME)
    decoder.feed(info(), T0)
    decoder.feed(pong_from(DYNO, sent_ms=T0, remote_ms=5_000), T0 + 40)  # round trip 40 ms
    sync = sync_of(decoder, DYNO)
    assert (sync.latency_ms, sync.offset_ms) == (20, T0 + 40 - 5_000)
    (sample, *_) = decoder.feed(values((1, 6_000, 3000.0)), T0 + 1_100)
    assert sample.timestamp_ms == 6_000 + (T0 + 40 - 5_000) - 20  # = T0 + 1020


def test_clock_sync_keeps_the_smallest_latency():
    decoder = JetDriveDecoder(ME)
    decoder.feed(pong_from(DYNO, T0, 5_000), T0 + 40)
    decoder.feed(pong_from(DYNO, T0 + 100, 5_150), T0 + 300)  # slower round trip: ignored
    assert sync_of(decoder, DYNO).latency_ms == 20
    decoder.feed(pong_from(DYNO, T0 + 400, 5_402), T0 + 404)  # faster: adopted
    assert sync_of(decoder, DYNO).latency_ms == 2
    assert sync_of(decoder, DYNO).offset_ms == T0 + 404 - 5_402


def test_latency_survives_the_u32_wrap_of_our_ping_timestamp():
    decoder = JetDriveDecoder(ME)
    now = (1 << 32) * 400 + 10  # our u32 clock wrapped 30 ms after the ping went out
    decoder.feed(pong_from(DYNO, now - 30, 1_000), now)
    assert sync_of(decoder, DYNO).latency_ms == 15


def test_without_sync_the_first_value_maps_to_receive_time():
    decoder = JetDriveDecoder(ME)
    decoder.feed(info(), T0)
    first = decoder.feed(values((1, 9_000, 1.0)), T0 + 5)
    later = decoder.feed(values((1, 9_020, 1.0), sequence=3), T0 + 31)
    assert first[0].timestamp_ms == T0 + 5
    assert later[0].timestamp_ms == T0 + 25  # spacing kept from the provider's clock


# --- decoder: values before ChannelInfo ---------------------------------------------------------------


def test_values_before_info_are_held_requested_and_released():
    decoder = JetDriveDecoder(ME)
    assert decoder.feed(values((1, 0, 3000.0), (3, 0, 50.0)), T0) == []
    requests = [m for m in outgoing(decoder) if isinstance(m.body, RequestChannelInfo)]
    assert [r.destination for r in requests] == [DYNO]
    released = decoder.feed(info(sequence=3), T0 + 100)
    assert [(s.channel, s.unit) for s in released] == [("engine_speed", "rpm"), ("power", "hp")]
    assert decoder.counters.dropped_before_info == 0


def test_info_requests_are_rate_limited_per_host():
    decoder = JetDriveDecoder(ME, request_interval_ms=500)
    for i in range(10):
        decoder.feed(values((1, i, 1.0), sequence=i + 1), T0 + i * 10)
    assert sum(isinstance(m.body, RequestChannelInfo) for m in outgoing(decoder)) == 1


def test_held_values_expire_as_counted_drops():
    decoder = JetDriveDecoder(ME, hold_ms=1000)
    decoder.feed(values((1, 0, 1.0), (2, 0, 2.0)), T0)
    assert decoder.tick(T0 + 1001) == 2
    assert decoder.counters.dropped_before_info == 2
    assert decoder.feed(info(), T0 + 1002) == []


def test_holding_is_bounded_per_host():
    decoder = JetDriveDecoder(ME, max_held_per_host=3)
    decoder.feed(values(*[(1, i, float(i)) for i in range(5)]), T0)
    assert decoder.counters.dropped_before_info == 2
    assert [s.value for s in decoder.feed(info(), T0)] == [2.0, 3.0, 4.0]


def test_clear_channel_info_forgets_that_hosts_channels_only():
    decoder = JetDriveDecoder(ME)
    decoder.feed(info(DYNO), T0)
    decoder.feed(info(PROBE, "Probe"), T0)
    decoder.feed(datagram(ClearChannelInfo(), DYNO, 2), T0)
    assert decoder.feed(values((1, 0, 1.0), host=DYNO, sequence=3), T0) == []  # held again
    assert len(decoder.feed(values((1, 0, 1.0), host=PROBE), T0)) == 1
    assert {host for host, _ in decoder.channels()} == {PROBE}


def test_own_echo_and_all_hosts_source_are_ignored():
    decoder = JetDriveDecoder(ME)
    decoder.feed(info(ME), T0)
    decoder.feed(info(ALL_HOSTS), T0)
    assert decoder.channels() == {}
    assert decoder.counters.ignored == {"own_echo": 1, "source_all_hosts": 1}


# --- batches ------------------------------------------------------------------------------------------


def sample(host=DYNO, channel_id=1, timestamp_ms=T0, value=1.0, channel="engine_speed", unit="rpm"):
    return DecodedSample(host, "Dyno CPU", channel_id, channel, unit, timestamp_ms, value)


def test_batches_group_by_provider_and_channel_with_stable_ids():
    samples = [sample(timestamp_ms=T0), sample(PROBE, timestamp_ms=T0 + 1), sample(timestamp_ms=T0 + 2, value=2.0)]
    records = samples_to_batches(samples, "cell-3", run_id="run-9")
    assert [r["batch_id"] for r in records] == [f"jetdrive:cell-3:{DYNO}:1:{T0}", f"jetdrive:cell-3:{PROBE}:1:{T0 + 1}"]
    assert [s["value"] for s in records[0]["samples"]] == [1.0, 2.0]
    assert records[0]["provider"] == "Dyno CPU@0x1a2b"
    assert samples_to_batches(samples, "cell-3", run_id="run-9") == records


def test_batches_match_the_dyno_sample_batch_schema():
    (record,) = samples_to_batches([sample(), sample(timestamp_ms=T0 + 20)], "cell-3")
    assert decode(encode("dyno_sample_batch", record), "dyno_sample_batch") == record


# --- simulator ---------------------------------------------------------------------------------------


def decode_capture(simulator: JetDriveSimulator, seconds: float) -> list[DecodedSample]:
    decoder = JetDriveDecoder(ME)
    return [s for elapsed, d in simulator.capture(seconds) for s in decoder.feed(d, T0 + elapsed)]


def by_timestamp(samples: list[DecodedSample]) -> dict[int, dict[str, float]]:
    rows: dict[int, dict[str, float]] = {}
    for s in samples:
        rows.setdefault(s.timestamp_ms, {})[s.channel] = s.value
    return rows


def assert_dyno_physics(rows: dict[int, dict[str, float]]) -> None:
    loaded = [r for r in rows.values() if r.get("engine_speed", 0) > 0 and r.get("power", 0) > 5]
    assert loaded
    for r in loaded:
        assert r["torque"] * r["engine_speed"] / 5252 == pytest.approx(r["power"], rel=1e-3)


def test_simulated_pull_sweeps_rpm_with_consistent_drum_physics():
    samples = decode_capture(JetDriveSimulator(host=DYNO, seed=1), seconds=15)
    rows = by_timestamp(samples)
    rpm = [r["engine_speed"] for r in rows.values()]
    assert min(rpm) == pytest.approx(2500, abs=60) and max(rpm) == pytest.approx(6500, abs=10)
    assert_dyno_physics(rows)
    wot = [r for r in rows.values() if r["tps"] == 100.0]
    assert 12.5 < sum(r["afr"] for r in wot) / len(wot) < 13.5
    peak_hp = max(r["power"] for r in rows.values())
    assert 250 < peak_hp < 320  # 300 ft-lb engine through 85 % drivetrain efficiency


def test_simulator_is_deterministic_for_a_seed():
    first = list(JetDriveSimulator(host=DYNO, seed=5).capture(1))
    assert first == list(JetDriveSimulator(host=DYNO, seed=5).capture(1))
    assert first != list(JetDriveSimulator(host=DYNO, seed=6).capture(1))


def test_simulator_repeats_channel_info_and_clears_on_stop():
    keys = [decode_datagram(d)[0][0].body for _, d in JetDriveSimulator(host=DYNO, rate_hz=10).capture(61)]
    assert sum(isinstance(b, ChannelInfo) for b in keys) == 3  # 0 s, 30 s, 60 s
    assert isinstance(keys[-1], ClearChannelInfo)


def test_simulator_answers_ping_and_info_requests():
    simulator = JetDriveSimulator(host=DYNO)
    (pong,) = decode_datagram(simulator.replies_to(datagram(Ping(77, b"x"), ME, destination=DYNO), 5_000)[0])[0]
    assert (pong.destination, pong.body) == (ME, Pong(77, 5_000, b"x"))
    (reply,) = simulator.replies_to(datagram(RequestChannelInfo(), ME, destination=DYNO), 0)
    assert body_of(reply, ChannelInfo).channels == SIM_CHANNELS
    assert simulator.replies_to(datagram(RequestChannelInfo(), ME, destination=PROBE), 0) == []


def test_pull_model_values_are_in_jetdrive_si_units():
    rpm, torque_nm, power_kw = (DynoPullModel(seed=0).values_si(4.0)[k] for k in (1, 2, 3))
    assert torque_nm * rpm / 9548.8 == pytest.approx(power_kw, rel=1e-3)  # SI: kW = N·m * rpm / 9548.8


# --- client over real sockets -------------------------------------------------------------------------


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_client_receives_simulated_pull_over_loopback_multicast():
    port = free_udp_port()
    group = "239.255.43.21"
    simulator = JetDriveSimulator(group=group, port=port, interface="127.0.0.1", host=DYNO, seed=2, rate_hz=100)
    client = JetDriveClient("cell-1", group=group, port=port, interface="127.0.0.1", host=ME, batch_interval_s=0.05)
    stop = threading.Event()
    records: list[dict] = []
    synced: list[object] = []

    def on_batch(batch: list[dict]) -> None:
        records.extend(batch)
        synced.append(client.decoder.clock_sync(DYNO))

    threads = [threading.Thread(target=client.run, args=(on_batch, stop)),
               threading.Thread(target=simulator.run, args=(stop,))]
    threads[0].start()
    time.sleep(0.1)  # the client joins first so it sees the initial ChannelInfo
    threads[1].start()
    deadline = time.monotonic() + 5
    while sum(len(r["samples"]) for r in records) < 450 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join(timeout=5)

    samples = [DecodedSample(DYNO, "", 0, r["channel"], r["unit"], s["timestamp_ms"], s["value"])
               for r in records for s in r["samples"]]
    assert len(samples) >= 450
    assert {r["provider"] for r in records} == {"Dynojet Dyno CPU@0x1a2b"}
    assert_dyno_physics(by_timestamp(samples))
    assert any(s is not None for s in synced), "the simulator's Pong should give the client a clock sync"
    assert abs(samples[-1].timestamp_ms - time.time() * 1000) < 2000
    health = client.health()
    assert health["errors"] == {} and health["dropped_before_info"] == 0 and not health["connected"]


# --- capture replay -----------------------------------------------------------------------------------


def test_capture_replay_turns_the_fixture_into_records_and_a_summary():
    replay = replay_capture(Path(__file__).parents[1] / "data" / "jetdrive" / "sim_pull.pcap", "cell-1")
    summary = replay.summary()
    assert summary["capture"] == {"packets": 52, "payloads": 52, "skipped": {}}
    assert summary["decoder"]["samples"] == 450 and summary["decoder"]["errors"] == {}
    assert sum(len(r["samples"]) for r in replay.records) == 450
    rpm = replay.channels[(0x0A0B, 1)]
    assert (rpm.provider, rpm.channel, rpm.unit, rpm.count) == ("Dynojet Dyno CPU@0x0a0b", "engine_speed", "rpm", 50)
    assert rpm.first_ms == 1_704_067_200_000 and 2500 <= rpm.minimum < rpm.maximum < 3100


def test_capture_replay_counts_values_whose_info_never_came_as_dropped():
    capture = JetDriveSimulator(host=DYNO).capture(0.2)
    without_info = [(T0 + t, d) for t, d in capture if d[0] != MessageKey.CHANNEL_INFO]  # announced before start
    buffer = io.BytesIO()
    write_udp_pcap(buffer, without_info)
    buffer.seek(0)
    replay = replay_capture(buffer, "cell-1")
    assert replay.records == []
    assert replay.decoder["dropped_before_info"] == 10 * 9
