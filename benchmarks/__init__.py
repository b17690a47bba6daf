"""`fleetstream bench`: the pipeline's benchmarks, compared with peers in one interleaved run.

`suite` (`bench_all`) runs them all; `produce`, `edge` (the edge agent), `worker`, `sink`, `e2e`, `soak`,
`read_api`, `dashboard` and `peers_bench` are the single benches, and `common` what they share.
"""

from typing import TYPE_CHECKING

from fleetstream.exports import lazy_exports

if TYPE_CHECKING:
    from fleetstream.benchmarks.suite import bench_all

__all__ = [
    "bench_all",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    "fleetstream.benchmarks.suite": ["bench_all"],
})
