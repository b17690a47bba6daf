"""Where each provider's poll stopped, per endpoint, on disk: survives restarts, never half-written.

A checkpoint holds the high-water mark (everything before it has been published, except data that
arrives later than the lookback) and the dedup keys still inside the lookback window, so a restarted
poller neither re-publishes what it sent just before stopping nor forgets where it was. Files are
JSON, one per provider and endpoint, written to a temporary file, fsynced, renamed over the old one
with `os.replace` and the directory fsynced: a crash leaves the old checkpoint or the new, never a mix.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["Checkpoint", "CheckpointStore"]

_VERSION = 1


@dataclass
class Checkpoint:
    """`high_water_ms`: the end of the last published window; `seen`: dedup key → event time (ms)."""

    high_water_ms: int
    seen: dict[str, int] = field(default_factory=dict)

    def prune(self, keep_from_ms: int) -> None:
        """Forget keys older than `keep_from_ms`: they can no longer be fetched again."""
        self.seen = {key: event_ms for key, event_ms in self.seen.items() if event_ms >= keep_from_ms}


class CheckpointStore:
    """Checkpoints as `<directory>/<provider>.<endpoint>.json`."""

    def __init__(self, directory: Path | str):
        self.directory = Path(directory)

    def path(self, provider: str, endpoint: str) -> Path:
        return self.directory / f"{provider}.{endpoint}.json"

    def load(self, provider: str, endpoint: str) -> Checkpoint | None:
        """The saved checkpoint, or None before the first save. A corrupt file is an error, not a reset:
        silently starting over would re-publish or skip data."""
        path = self.path(provider, endpoint)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ValueError(f"checkpoint {path} is unreadable ({exc}); fix or delete it to start over") from exc
        return _from_json(raw, path)

    def save(self, provider: str, endpoint: str, checkpoint: Checkpoint) -> None:
        """Write atomically and durably (temp file + fsync + os.replace + directory fsync)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(provider, endpoint)
        payload = {
            "version": _VERSION, "provider": provider, "endpoint": endpoint,
            "high_water_ms": checkpoint.high_water_ms,
            "high_water": datetime.fromtimestamp(checkpoint.high_water_ms / 1000, UTC).isoformat(),
            "seen": checkpoint.seen,
        }
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "w") as tmp:
                json.dump(payload, tmp, separators=(",", ":"))
                tmp.flush()
                os.fsync(tmp.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        _fsync_directory(self.directory)


def _from_json(raw: Any, path: Path) -> Checkpoint:
    if not isinstance(raw, dict) or raw.get("version") != _VERSION or not isinstance(raw.get("high_water_ms"), int):
        raise ValueError(f"checkpoint {path} is not a version {_VERSION} checkpoint")
    seen = raw.get("seen") or {}
    if not isinstance(seen, dict) or not all(isinstance(value, int) for value in seen.values()):
        raise ValueError(f"checkpoint {path}: 'seen' must map keys to integer milliseconds")
    return Checkpoint(high_water_ms=raw["high_water_ms"], seen={str(key): value for key, value in seen.items()})


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
