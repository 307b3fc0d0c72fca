"""Replay: send the trace's requests to a real vLLM and put what it measured next to the
simulation of the same configuration.

``prepare`` turns stored requests into HTTP requests (chat logs as chat completions with their
messages and tools, hash traces as synthetic token ids with the trace's sharing); ``server``
launches vLLM (on a CPU machine with the tiny model of ``model``); ``client`` sends the requests;
``metrics`` scrapes ``/metrics`` before and after; ``run`` stores every measurement
(``replay_runs``, ``replay_requests``); ``validate`` runs the simulator's engine on the same
requests with the server's block size, KV capacity and LRU.
"""

from kvtool.replay.run import LaunchConfig, replay
from kvtool.replay.validate import ReplayValidation, validate

__all__ = ["LaunchConfig", "ReplayValidation", "replay", "validate"]
