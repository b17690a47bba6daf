"""Reading an idle embedded store: serve opens it itself, and lets go of it so a sink can start afterwards.

Each side runs in its own process, as in production (chDB allows one process per data directory).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

_READER = textwrap.dedent("""
    import sys, time
    from fleetstream.config import load_settings
    from fleetstream.api.store import StoreReader
    reader = StoreReader(load_settings(clickhouse={"dsn": "chdb://" + sys.argv[1]}), idle_close_s=0.5)
    print(reader.mode, reader.query("SELECT count() AS n FROM fleetstream.schema_migrations", {}).rows, flush=True)
    time.sleep(float(sys.argv[2]))  # stays alive, idle: the store must be released meanwhile
""")

_OPENER = textwrap.dedent("""
    import sys
    from fleetstream.store.client import connect
    connect("chdb://" + sys.argv[1], lock_wait_s=60).close()
    print("opened", flush=True)
""")


def _python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_serve_reads_an_idle_store_itself_and_releases_it(tmp_path: Path) -> None:
    store = tmp_path / "store"
    migrate = subprocess.run([sys.executable, "-m", "fleetstream", "db", "migrate"], capture_output=True, text=True,
                             env={**_env(), "CLICKHOUSE_DSN": f"chdb://{store}"}, timeout=300)
    assert migrate.returncode == 0, migrate.stderr
    reader = _python(_READER, str(store), "120")
    try:
        assert reader.stdout is not None and reader.stderr is not None
        line = reader.stdout.readline()
        assert line.startswith("embedded [["), line + (reader.stderr.read() if reader.poll() is not None else "")
        assert int(line.split("[[")[1].split("]")[0]) >= 17  # the migrations, read through the store
        opener = _python(_OPENER, str(store))  # what a sink starting now does: wait for the lock, then open
        out, err = opener.communicate(timeout=120)
        assert opener.returncode == 0 and out.strip() == "opened", err
        assert reader.poll() is None  # the reader is still running: it released the store while idle
    finally:
        reader.kill()
        reader.wait()


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k not in ("CLICKHOUSE_DSN", "FLEETSTREAM_CONFIG")}
