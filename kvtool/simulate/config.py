"""``SimConfig``: everything that defines one simulation besides the traffic and the tiers.

A frozen dataclass validated once, in ``__post_init__``: an instance that exists is valid, and
neither ``simulate`` nor the engine checks its fields again. Errors are ``OptionError`` naming
the field (``policy``, ``ttl_s``, ...). ``block_size`` and ``prefill_tps`` may be None, meaning
"from the traffic" and "from the model's preset"; ``simulate`` resolves both (``replace``) before
the engine runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from kvtool.errors import OptionError
from kvtool.simulate.policies import POLICIES
from kvtool.traffic import PRICE_INPUT, parse_warmup

DEFAULT_PREFILL_TPS = 8000.0
WRITE_POLICIES = ("back", "through")
ROUTINGS = ("round_robin", "session", "prefix_aware")


@dataclass(frozen=True)
class Timing:
    """Throughput figures that turn tokens into seconds."""

    prefill_tps: float = DEFAULT_PREFILL_TPS
    decode_tps: float = 40.0


@dataclass(frozen=True)
class SimConfig:
    """The options of one simulation.

    - ``policy``: a name of ``POLICIES``; ``ttl_s`` (seconds) is required by policies that expire
      blocks (``ttl``);
    - ``block_size``: tokens per block (None: 16, or a hash trace's own);
    - ``write_policy``: ``back`` demotes first-tier victims, ``through`` writes every block down;
    - ``concurrency``: requests running at once per replica (None: unlimited);
    - ``prefill_tps`` (None: the model's preset, else ``DEFAULT_PREFILL_TPS``), ``decode_tps``;
    - ``price_input``: $ per million recomputed input tokens;
    - ``replicas``, ``routing`` (one of ``ROUTINGS``), ``shared_lower`` (one lower-tier pool);
    - ``warmup``: requests the cache sees but the figures do not count: a fraction of them
      (``0.5`` or ``'0.5'``: the first half) or a duration from the first one (``'30m'``);
      None: every request counts (``kvtool.traffic.parse_warmup``);
    - ``output_cache``: a request's output blocks enter the cache where the next prompt of its
      session re-renders the answer, as vLLM keeps a finished request's full blocks
      (``kvtool.traffic.output_blocks``; text logs only); False: prompt blocks only;
    - ``one_pass``: LRU points with one request at a time and one replica come from the one-pass
      stack curve wherever it is exact (capacities of at least the largest request) and serves
      three points or more (``run.CURVE_POINTS``: fewer are faster direct); False: the engine
      simulates every point (for checks and benchmarks);
    - ``compiled``: points simulated directly run on the engine's compiled twin
      (``kvtool.simulate.compiled_engine``) wherever it reproduces the Python engine (one tier,
      one replica, its policies); False: always the Python engine (for checks and benchmarks);
    - ``sample``: simulate prefix-aware samples of this rate in (0, 1] on tiers as many times
      smaller, and estimate every point from them, with an error bar
      (``kvtool.simulate.sample``: from ten random groups of each sample's units); None:
      every request; ``sample_salts``: how many independent samples, pooled (each one is
      simulated: more cost as much again, for an error about 1/sqrt(salts) as large);
      ``sample_seed``: which draw of them (draw d uses salts ``d * sample_salts`` up to the
      next draw's: draws are disjoint).
    """

    policy: str = "lru"
    block_size: int | None = None
    write_policy: str = "back"
    concurrency: int | None = None
    ttl_s: float | None = None
    prefill_tps: float | None = None
    decode_tps: float = 40.0
    price_input: float = PRICE_INPUT
    replicas: int = 1
    routing: str = "round_robin"
    shared_lower: bool = False
    warmup: str | float | None = None
    output_cache: bool = True
    one_pass: bool = True
    compiled: bool = True
    sample: float | None = None
    sample_salts: int = 1
    sample_seed: int = 0

    def __post_init__(self) -> None:
        info = POLICIES.get(self.policy)
        if info is None:
            raise OptionError("policy", f"{self.policy!r} is not one of {', '.join(POLICIES)}")
        if self.block_size is not None and self.block_size <= 0:
            raise OptionError("block_size", f"must be positive, got {self.block_size}")
        if self.write_policy not in WRITE_POLICIES:
            raise OptionError(
                "write_policy", f"{self.write_policy!r} is not one of {', '.join(WRITE_POLICIES)}"
            )
        if self.concurrency is not None and self.concurrency < 1:
            raise OptionError("concurrency", f"must be >= 1, got {self.concurrency}")
        if self.ttl_s is not None and not self.ttl_s > 0:
            raise OptionError("ttl_s", f"must be positive, got {self.ttl_s}")
        if info.cls.needs_ttl and self.ttl_s is None:
            raise OptionError("ttl_s", f"is needed by policy {self.policy!r}")
        if self.prefill_tps is not None and not self.prefill_tps > 0:
            raise OptionError("prefill_tps", f"must be positive, got {self.prefill_tps}")
        if not self.decode_tps > 0:
            raise OptionError("decode_tps", f"must be positive, got {self.decode_tps}")
        if not self.price_input >= 0:
            raise OptionError("price_input", f"must be >= 0, got {self.price_input}")
        if self.replicas < 1:
            raise OptionError("replicas", f"must be >= 1, got {self.replicas}")
        if self.routing not in ROUTINGS:
            raise OptionError("routing", f"{self.routing!r} is not one of {', '.join(ROUTINGS)}")
        if self.warmup is not None:
            parse_warmup(self.warmup)
        if self.sample is not None and not 0 < self.sample <= 1:
            raise OptionError("sample", f"must be in (0, 1], got {self.sample}")
        if self.sample_salts < 1:
            raise OptionError("sample_salts", f"must be >= 1, got {self.sample_salts}")
        if not 0 <= self.sample_seed < 2**32:
            raise OptionError("sample_seed", f"must be in [0, 2**32), got {self.sample_seed}")

    @property
    def salts(self) -> range:
        """The salts of ``--sample``'s samples: draw ``sample_seed``'s ``sample_salts``."""
        return range(
            self.sample_seed * self.sample_salts, (self.sample_seed + 1) * self.sample_salts
        )

    @property
    def timing(self) -> Timing:
        return Timing(self.prefill_tps or DEFAULT_PREFILL_TPS, self.decode_tps)

    def to_json(self) -> dict:
        """The fields by name, in order (the start of the ``config`` object of ``--json``)."""
        return dataclasses.asdict(self)
