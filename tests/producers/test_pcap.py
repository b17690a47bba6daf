"""Capture reading: pcap and pcapng fixtures from the JetDrive simulator, link types, and damaged files."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetstream.producers.jetdrive import JetDriveDecoder
from fleetstream.producers.pcap import CaptureStats, PcapFormatError, read_udp_payloads, write_udp_pcap

DATA = Path(__file__).parents[1] / "data" / "jetdrive"
START_EPOCH_MS = 1_704_067_200_000  # the fixtures' first packet (see tests/data/jetdrive/README.md)


@pytest.mark.parametrize("name", ["sim_pull.pcap", "sim_pull.pcapng"])
def test_fixture_captures_yield_every_jetdrive_datagram_with_its_timestamp(name):
    stats = CaptureStats()
    payloads = list(read_udp_payloads(DATA / name, stats=stats))
    assert (stats.packets, stats.payloads, dict(stats.skipped)) == (52, 52, {})
    assert payloads[0].timestamp_ms == START_EPOCH_MS
    assert payloads[-1].timestamp_ms == START_EPOCH_MS + 1000
    assert (payloads[0].src, payloads[0].dst, payloads[0].dst_port) == ("192.0.2.10", "224.0.2.10", 22344)


@pytest.mark.parametrize("name", ["sim_pull.pcap", "sim_pull.pcapng"])
def test_fixture_capture_decodes_to_canonical_samples(name):
    decoder = JetDriveDecoder(0x0101)
    samples = [s for p in read_udp_payloads(DATA / name) for s in decoder.feed(p.payload, p.timestamp_ms)]
    assert len(samples) == 50 * 9
    assert {s.channel for s in samples} >= {"engine_speed", "torque", "power", "afr", "map", "iat", "tps"}
    assert samples[0].timestamp_ms == START_EPOCH_MS
    assert decoder.counters.errors == {}


def frames(payloads: list[tuple[int, bytes]], **kwargs) -> bytes:
    buffer = io.BytesIO()
    write_udp_pcap(buffer, payloads, **kwargs)
    return buffer.getvalue()


def test_other_ports_are_skipped_and_counted_unless_any_port_is_asked():
    raw = frames([(1000, b"a")], dst_port=5353) + frames([(2000, b"b")])[24:]  # second file's records appended
    stats = CaptureStats()
    assert [p.payload for p in read_udp_payloads(io.BytesIO(raw), stats=stats)] == [b"b"]
    assert stats.skipped == {"other_port": 1}
    assert [p.payload for p in read_udp_payloads(io.BytesIO(raw), port=None)] == [b"a", b"b"]


def test_non_udp_and_fragmented_packets_are_counted():
    buffer = io.BytesIO()
    writer = dpkt.pcap.Writer(buffer)
    tcp = dpkt.ip.IP(src=socket.inet_aton("10.0.0.1"), dst=socket.inet_aton("10.0.0.2"), p=dpkt.ip.IP_PROTO_TCP,
                     data=dpkt.tcp.TCP())
    fragment = dpkt.ip.IP(src=socket.inet_aton("10.0.0.1"), dst=socket.inet_aton("224.0.2.10"),
                          p=dpkt.ip.IP_PROTO_UDP, mf=1, data=dpkt.udp.UDP(dport=22344, data=b"x" * 8))
    arp = dpkt.ethernet.Ethernet(type=dpkt.ethernet.ETH_TYPE_ARP, data=dpkt.arp.ARP())
    for packet in (dpkt.ethernet.Ethernet(data=tcp), dpkt.ethernet.Ethernet(data=fragment), arp):
        writer.writepkt(bytes(packet), ts=1.0)
    stats = CaptureStats()
    assert list(read_udp_payloads(io.BytesIO(buffer.getvalue()), stats=stats)) == []
    assert stats.skipped == {"not_udp": 1, "ip_fragment": 1, "not_ip": 1}


def test_raw_ip_captures_are_read():
    buffer = io.BytesIO()
    writer = dpkt.pcap.Writer(buffer, linktype=101)
    udp = dpkt.udp.UDP(sport=1, dport=22344, data=b"jetdrive")
    udp.ulen = len(udp)
    writer.writepkt(bytes(dpkt.ip.IP(src=socket.inet_aton("127.0.0.1"), dst=socket.inet_aton("224.0.2.10"),
                                     p=dpkt.ip.IP_PROTO_UDP, data=udp)), ts=2.5)
    (payload,) = read_udp_payloads(io.BytesIO(buffer.getvalue()))
    assert (payload.timestamp_ms, payload.src, payload.payload) == (2500, "127.0.0.1", b"jetdrive")


def test_unsupported_link_types_are_refused_by_name():
    buffer = io.BytesIO()
    dpkt.pcap.Writer(buffer, linktype=147)
    with pytest.raises(PcapFormatError, match="link type 147 is not supported"):
        list(read_udp_payloads(io.BytesIO(buffer.getvalue())))


def test_a_file_that_is_not_a_capture_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "run.csv"
    path.write_text("time,rpm\n0,2500\n")
    with pytest.raises(PcapFormatError, match=r"run\.csv: not a pcap or pcapng file \(starts with 74696d65"):
        list(read_udp_payloads(path))


@pytest.mark.parametrize("name", ["sim_pull.pcap", "sim_pull.pcapng"])
def test_a_truncated_capture_yields_what_is_whole_and_counts_the_rest(name):
    raw = (DATA / name).read_bytes()
    stats = CaptureStats()
    payloads = list(read_udp_payloads(io.BytesIO(raw[:-40]), stats=stats))
    assert len(payloads) == 51
    assert sum(stats.skipped.values()) == 1


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(["sim_pull.pcap", "sim_pull.pcapng"]), cut=st.integers(0, 9172),
       junk=st.binary(max_size=64))
def test_damaged_captures_never_raise_once_the_header_is_read(name, cut, junk):
    raw = (DATA / name).read_bytes()
    cut = max(cut, 200)  # keep the file header (and pcapng's interface block) intact
    raw = raw[:cut] + junk + raw[cut + len(junk):]  # overwrite records, their headers included
    stats = CaptureStats()
    payloads = list(read_udp_payloads(io.BytesIO(raw), stats=stats))
    assert stats.payloads == len(payloads) <= stats.packets


def test_a_cut_off_file_header_is_a_format_error():
    with pytest.raises(PcapFormatError, match="unreadable capture header"):
        list(read_udp_payloads(io.BytesIO(b"\xd4\xc3\xb2\xa1\x02\x00")))
