"""Everything that puts records on Kafka: device decoders, file imports, fleet APIs, the edge agent.

- `agent` (`Agent`, `load_agent_config`): sources → a durable spool → one idempotent producer; `sources` has
  the adapters and their interface, `spool` the spool, `edge` the producer (`EdgeProducer`).
- Devices: `jetdrive/` (Dynojet JetDrive over UDP), `innovate/` (Innovate MTS over serial), `pcap` (captures).
- Files: `files` (`import_file`, detection, the import ledger) over the parsers `pvlog`, `wp8`, `csvimport`
  and their shared `file_parsing`; `inspection` (`fleetstream inspect`).
- Fleet APIs: `fleet/` (Motive and Samsara pollers); `fleet/fake_providers` serves local fakes of both APIs.
- `vehicle_client` (`IcsAnalytics`, the drop-in client), `vehicle_sim` (a simulated fleet).
"""

from typing import TYPE_CHECKING

from fleetstream.exports import lazy_exports

if TYPE_CHECKING:
    from fleetstream.producers.agent import Agent, AgentConfig, load_agent_config, read_status
    from fleetstream.producers.edge import EdgeProducer
    from fleetstream.producers.files import FileFormatError, ImportLedger, import_file, load_mapping
    from fleetstream.producers.fleet import TOKEN_VARIABLES, build_poller
    from fleetstream.producers.inspection import inspect
    from fleetstream.producers.jetdrive import JetDriveSimulator
    from fleetstream.producers.sources import Source, SourceSpec
    from fleetstream.producers.vehicle_client import IcsAnalytics, parse_time_ms
    from fleetstream.producers.vehicle_sim import VehicleFleetSimulator, run_simulation

__all__ = [
    "TOKEN_VARIABLES",
    "Agent",
    "AgentConfig",
    "EdgeProducer",
    "FileFormatError",
    "IcsAnalytics",
    "ImportLedger",
    "JetDriveSimulator",
    "Source",
    "SourceSpec",
    "VehicleFleetSimulator",
    "build_poller",
    "import_file",
    "inspect",
    "load_agent_config",
    "load_mapping",
    "parse_time_ms",
    "read_status",
    "run_simulation",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    "fleetstream.producers.agent": ["Agent", "AgentConfig", "load_agent_config", "read_status"],
    "fleetstream.producers.edge": ["EdgeProducer"],
    "fleetstream.producers.files": ["FileFormatError", "ImportLedger", "import_file", "load_mapping"],
    "fleetstream.producers.fleet": ["TOKEN_VARIABLES", "build_poller"],
    "fleetstream.producers.inspection": ["inspect"],
    "fleetstream.producers.jetdrive": ["JetDriveSimulator"],
    "fleetstream.producers.sources": ["Source", "SourceSpec"],
    "fleetstream.producers.vehicle_client": ["IcsAnalytics", "parse_time_ms"],
    "fleetstream.producers.vehicle_sim": ["VehicleFleetSimulator", "run_simulation"],
})
