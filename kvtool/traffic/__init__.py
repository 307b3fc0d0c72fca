"""Traffic: the requests every command starts from (analyze, simulate, replay, export, report).

``load_traffic`` ingests and tokenizes what is not in the store yet and loads the ``Workload``:
requests as integer arrays in processing order (timestamp order, ties by file and line) and
their block tree, whose node ids name equal prefixes. ``block_streams`` turns the tree into each
request's full blocks at a block size; ``kv_shape_name`` sizes them in bytes; ``ideal`` gives
the tree's runs and passes, the infinite-cache hits that analyze and simulate both report and
the measurement window after a warm-up (``measurement_window``); ``output_blocks`` the blocks a
request's generated output adds to the cache (vLLM keeps them), shared by the ideal and the
engine;
``BreakLosses`` what prompt breaks cost, as analyze hands it to simulate's shortfall waterfall.
``Executor`` says where ingest and tokenization run (``engine``): here, or on a Ray cluster
(``ray_cluster``, imported only then).
"""

from kvtool.traffic.blocks import block_streams
from kvtool.traffic.engine import ENGINES, Executor, as_executor
from kvtool.traffic.ideal import (
    Hits,
    OutputHits,
    Passes,
    Runs,
    Warmup,
    Window,
    base_hit_blocks,
    boundaries,
    first_through_hits,
    hit_blocks,
    ideal_hits,
    measurement_window,
    output_hit_blocks,
    parse_warmup,
    passes,
    run_starts,
    runs,
)
from kvtool.traffic.load import (
    PRICE_INPUT,
    REUSE_WINDOWS,
    Traffic,
    kv_shape_name,
    load_traffic,
)
from kvtool.traffic.losses import BreakFinder, BreakLosses
from kvtool.traffic.output_blocks import (
    OutputPaths,
    caches_outputs,
    output_blocks,
    streams_with_outputs,
)
from kvtool.traffic.workload import (
    TreePart,
    Workload,
    WorkloadError,
    WorkloadParts,
    load_parts,
    load_workload,
)

__all__ = [
    "ENGINES",
    "Executor",
    "as_executor",
    "BreakFinder",
    "BreakLosses",
    "PRICE_INPUT",
    "REUSE_WINDOWS",
    "Hits",
    "OutputHits",
    "OutputPaths",
    "Passes",
    "Runs",
    "Traffic",
    "TreePart",
    "Warmup",
    "Window",
    "Workload",
    "WorkloadError",
    "WorkloadParts",
    "base_hit_blocks",
    "boundaries",
    "caches_outputs",
    "block_streams",
    "first_through_hits",
    "hit_blocks",
    "ideal_hits",
    "kv_shape_name",
    "load_parts",
    "load_traffic",
    "load_workload",
    "measurement_window",
    "output_blocks",
    "output_hit_blocks",
    "parse_warmup",
    "passes",
    "runs",
    "run_starts",
    "streams_with_outputs",
]
