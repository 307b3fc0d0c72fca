"""Simulate: what hit rate, prefill saved, TTFT and dollars a cache tiering gives on real traffic.

- ``config``: ``SimConfig``, the validated options of one simulation;
- ``policies``: the eviction policies, one plug-in module each, and their registry ``POLICIES``;
- ``engine``: ``Engine``, requests through the tiers event by event;
- ``sweep``: the one-pass LRU curve (Mattson's stack distances);
- ``result``: ``SimulateResult`` and its points, ``to_json()`` (the ``--json`` object) and
  ``points_frame()``;
- ``run``: ``simulate()``, which loads the traffic, runs every configuration and stores the run;
- ``providers``: ``predict_provider``, a hosted provider's automatic prefix caching and bill
  (OpenAI, DeepSeek, Gemini implicit; not yet behind a command).

Counting follows docs/architecture.md ("Block identity", "Cached tokens").
"""

from kvtool.simulate.config import SimConfig
from kvtool.simulate.engine import Engine, EngineResult
from kvtool.simulate.policies import POLICIES, PolicyInfo, make_policy, register
from kvtool.simulate.result import SimPoint, SimulateResult, Sweep
from kvtool.simulate.run import simulate

__all__ = [
    "POLICIES",
    "Engine",
    "EngineResult",
    "PolicyInfo",
    "SimConfig",
    "SimPoint",
    "SimulateResult",
    "Sweep",
    "make_policy",
    "register",
    "simulate",
]
