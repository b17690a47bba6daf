"""Regenerate the JetDrive capture fixtures from the simulator: `.venv/bin/python tests/data/jetdrive/make_capture.py`.

Deterministic: the same seed, host id and start time give byte-identical files.
"""

from __future__ import annotations

from pathlib import Path

from fleetstream.producers.jetdrive import JetDriveSimulator
from fleetstream.producers.pcap import write_udp_pcap

HERE = Path(__file__).parent
START_EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
DURATION_S = 1.0
SEED = 7
PROVIDER_HOST = 0x0A0B


def datagrams() -> list[tuple[int, bytes]]:
    simulator = JetDriveSimulator(host=PROVIDER_HOST, seed=SEED, provider_name="Dynojet Dyno CPU")
    return [(START_EPOCH_MS + elapsed_ms, datagram) for elapsed_ms, datagram in simulator.capture(DURATION_S)]


def main() -> None:
    for name, pcapng in (("sim_pull.pcap", False), ("sim_pull.pcapng", True)):
        with open(HERE / name, "wb") as fileobj:
            count = write_udp_pcap(fileobj, datagrams(), src="192.0.2.10", pcapng=pcapng)
        print(f"{name}: {count} packets")


if __name__ == "__main__":
    main()
