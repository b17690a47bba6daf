"""How a process finds the one that owns the embedded store: the discovery file the owner writes beside it.

chDB opens a data directory from one process only. The owner (a running sink) serves reads on loopback and
announces itself in `<store>/query_server.json` (host, port, pid; removed on exit). Both the store client
(to say who holds a locked store) and the query path (to send reads there) ask this module.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from pathlib import Path

__all__ = ["DISCOVERY_FILE", "discover", "process_alive", "store_owner"]

log = logging.getLogger(__name__)

DISCOVERY_FILE = "query_server.json"


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists (one of another user counts: it exists, we may not signal it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def store_owner(store: Path) -> int | None:
    """The pid of the live process (not this one) whose discovery file says it serves `store`: the sink owning it."""
    try:
        pid = int(json.loads((store / DISCOVERY_FILE).read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid if pid != os.getpid() and process_alive(pid) else None


def discover(store: Path, timeout_s: float = 2.0) -> str | None:
    """The base URL of the endpoint serving `store`, if its discovery file names a live, answering process."""
    path = store / DISCOVERY_FILE
    try:
        info = json.loads(path.read_text())
        pid, host, port = int(info["pid"]), str(info["host"]), int(info["port"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
    if not process_alive(pid):
        log.debug("stale discovery file %s (pid %d is gone)", path, pid)
        return None
    base = f"http://{host}:{port}"
    try:
        # live, not ready: a sink whose Kafka is down still serves queries of the store it holds
        with urllib.request.urlopen(f"{base}/health/live", timeout=timeout_s) as response:
            return base if response.status == 200 else None
    except OSError:  # URLError and timeouts are OSErrors
        return None
