"""Traffic: the requests every command starts from (analyze, simulate, replay, export, report).

``load_traffic`` ingests and tokenizes what is not in the store yet and loads the ``Workload``:
requests as integer arrays in processing order (timestamp order, ties by file and line) and
their block tree, whose node ids name equal prefixes. ``block_streams`` turns the tree into each
request's full blocks at a block size; ``kv_shape_name`` sizes them in bytes.
"""

from kvtool.traffic.blocks import block_streams
from kvtool.traffic.load import PRICE_INPUT, Traffic, kv_shape_name, load_traffic
from kvtool.traffic.workload import Workload, WorkloadError, load_workload

__all__ = [
    "PRICE_INPUT",
    "Traffic",
    "Workload",
    "WorkloadError",
    "block_streams",
    "kv_shape_name",
    "load_traffic",
    "load_workload",
]
