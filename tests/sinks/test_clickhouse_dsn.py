"""The DSN's scheme decides the protocol: an https:// DSN opens TLS whatever its port (clickhouse-connect on its own
would send it over plain HTTP to 8123, password included)."""

from __future__ import annotations

import socket
import threading

import pytest

from fleetstream.sinks.clickhouse import connect


def first_bytes_sent_to(dsn_for_port: str) -> bytes:
    """Connect to a listening socket on 127.0.0.1 and return the first bytes the client sends (then hang up)."""
    received: list[bytes] = []
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(30)

        def accept() -> None:
            conn, _ = server.accept()
            server.close()  # a retry is refused instead of waiting in the backlog for an answer
            with conn:
                conn.settimeout(30)
                received.append(conn.recv(16))

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        with pytest.raises(Exception):  # noqa: B017 - the server hangs up: any connection error will do
            connect(dsn_for_port.format(port=server.getsockname()[1]))
        thread.join(30)
    assert received, "the client never connected"
    return received[0]


@pytest.mark.parametrize(("dsn", "tls"), [("https://default:pw@127.0.0.1:{port}", True),
                                          ("http://default:pw@127.0.0.1:{port}", False)])
def test_the_dsn_scheme_picks_tls_or_plain_http(dsn: str, tls: bool) -> None:
    first = first_bytes_sent_to(dsn)
    assert (first[:1] == b"\x16") is tls  # 0x16: a TLS handshake record (ClientHello)
    assert first.startswith((b"GET", b"POST")) is not tls
