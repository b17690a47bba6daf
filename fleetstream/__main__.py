"""`python -m fleetstream` is the `fleetstream` command (how the demo starts its child processes)."""

from fleetstream.cli import run

run()
