"""The stream worker: raw topics → validation → `.valid`, windows, KPIs and alerts, exactly once.

- `app`: the faust app (`create_app`, `run_worker`) and `validate_message`, the thin Kafka shell.
- Pure stages, tested without a broker: `validation` (`Validator`), `windows`, `kpis`, `alerts`, `dedup`,
  `analytics` (the stages per batch), `outputs` (size limits).
- `offsets`: the worker's offsets and recovery state machine; `metrics`: custom metrics from config, as
  KPI records (not Prometheus).
"""

from typing import TYPE_CHECKING

from fleetstream.exports import lazy_exports

if TYPE_CHECKING:
    from fleetstream.streams.app import create_app, run_worker, validate_message
    from fleetstream.streams.validation import Validator

__all__ = [
    "Validator",
    "create_app",
    "run_worker",
    "validate_message",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    "fleetstream.streams.app": ["create_app", "run_worker", "validate_message"],
    "fleetstream.streams.validation": ["Validator"],
})
