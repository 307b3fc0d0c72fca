"""Tier specifications: ``tier_gb`` (``"hbm=80,dram=0,32,64"``) and per-tier overrides.

Tier names are free; their order is speed order (the first is where requests compute: GPU HBM).
Defaults come from the first known kind word in the name (docs/architecture.md, "Tiers and
cost"); each is an assumption, overridable with ``NAME:read_gbps=..,latency_us=..,price=..``:

| kind words | read GB/s | latency | $/GB-month | what it stands for |
|---|---|---|---|---|
| hbm, gpu | (local) | 0 | 22.8 | H100 80 GB at $2.50/h |
| dram, cpu, host, mem | 25 | 10 us | 4.0 | host memory over PCIe 5 (about half its peak) |
| nvme, ssd, disk, local | 6 | 100 us | 0.08 | a local NVMe drive |
| remote, net, rdma, store, shared | 12 | 20 us | 4.0 | a remote DRAM pool over 100 Gb/s RDMA |

Invariants of parsed specs: names are unique, sizes are >= 0 GB, at most one tier has several
sizes (the swept one), and a tier's own block is a multiple of 16 tokens. Errors are
``OptionError`` naming the parameter (``tier_gb``, ``tier_overrides``, ``ttl_s``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from kvtool.errors import OptionError


@dataclass(frozen=True)
class Tier:
    """One storage tier. ``blocks`` is its capacity in blocks; ``read_gbps`` and ``latency_s``
    price a load of one block into the first tier; ``price_gb_month`` its storage."""

    name: str
    blocks: int
    gb: float | None = None
    read_gbps: float = math.inf
    latency_s: float = 0.0
    price_gb_month: float = 0.0
    block_tokens: int | None = None  # the tier's own block (chunk) size; None: the simulation's

    def load_seconds(self, block_bytes: int) -> float:
        return self.latency_s + (
            block_bytes / (self.read_gbps * 1e9) if self.read_gbps else math.inf
        )


_KINDS: tuple[tuple[tuple[str, ...], float, float, float], ...] = (
    (("hbm", "gpu"), float("inf"), 0.0, 22.8),
    (("dram", "cpu", "host", "mem"), 25.0, 10e-6, 4.0),
    (("nvme", "ssd", "disk", "local"), 6.0, 100e-6, 0.08),
    (("remote", "net", "rdma", "store", "shared"), 12.0, 20e-6, 4.0),
)


@dataclass(frozen=True)
class TierSpec:
    """A tier before its capacity is fixed: name, capacities to simulate (GB; several = a sweep),
    and its speed and price."""

    name: str
    gbs: tuple[float, ...]
    read_gbps: float
    latency_s: float
    price_gb_month: float
    block_tokens: int | None = None

    def tier(self, gb: float, blocks: int) -> Tier:
        return Tier(
            name=self.name,
            blocks=blocks,
            gb=gb,
            read_gbps=self.read_gbps,
            latency_s=self.latency_s,
            price_gb_month=self.price_gb_month,
            block_tokens=self.block_tokens,
        )


def _defaults(name: str, first: bool) -> tuple[float, float, float]:
    low = name.lower()
    for words, bw, lat, price in _KINDS:
        if any(w in low for w in words):
            return bw, lat, price
    if first:
        return _KINDS[0][1:]
    raise OptionError(
        "tier_gb",
        f"tier {name!r}: unknown kind; name it after hbm/gpu, dram/cpu, nvme/ssd or remote, "
        f"or give its speed in tier_overrides: {name}:read_gbps=..,latency_us=..,price=..",
    )


def parse_tier_gb(text: str) -> list[TierSpec]:
    """``'hbm=80,dram=0,32,64'`` -> tiers in order; bare numbers extend the previous tier's list
    (a sweep). Only one tier may have several values."""
    tiers: list[tuple[str, list[float]]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, eq, value = part.partition("=")
        if eq:
            if not re.fullmatch(r"[A-Za-z][\w.-]*", name.strip()):
                raise OptionError("tier_gb", f"{text!r}: bad tier name {name!r}")
            tiers.append((name.strip(), []))
        elif not tiers:
            raise OptionError("tier_gb", f"{text!r}: expected NAME=GB first")
        else:
            value = name
        try:
            gb = float(value)
        except ValueError:
            raise OptionError("tier_gb", f"{text!r}: {value!r} is not a size in GB") from None
        if gb < 0:
            raise OptionError("tier_gb", f"{text!r}: sizes must be >= 0")
        tiers[-1][1].append(gb)
    if not tiers:
        raise OptionError("tier_gb", "is empty")
    if len({n for n, _ in tiers}) != len(tiers):
        raise OptionError("tier_gb", f"{text!r}: a tier is named twice")
    if sum(len(v) > 1 for _, v in tiers) > 1:
        raise OptionError("tier_gb", f"{text!r}: only one tier can be swept at a time")
    out = []
    for k, (name, gbs) in enumerate(tiers):
        bw, lat, price = _defaults(name, k == 0)
        out.append(TierSpec(name, tuple(gbs), bw, lat, price))
    return out


def apply_overrides(tiers: list[TierSpec], overrides: list[str]) -> list[TierSpec]:
    """``NAME:read_gbps=25,latency_us=10,price=3.5,block=256`` for each override (``block``: the
    tier's own block size in tokens, e.g. LMCache's 256-token chunks)."""
    by_name = {t.name: t for t in tiers}
    for text in overrides:
        name, _, body = text.partition(":")
        if name not in by_name:
            raise OptionError("tier_overrides", f"{text!r}: no tier named {name!r} in tier_gb")
        t = by_name[name]
        for item in filter(None, (s.strip() for s in body.split(","))):
            key, _, value = item.partition("=")
            try:
                v = float(value)
            except ValueError:
                raise OptionError(
                    "tier_overrides", f"{text!r}: {value!r} is not a number"
                ) from None
            if key == "read_gbps":
                t = replace(t, read_gbps=v)
            elif key == "latency_us":
                t = replace(t, latency_s=v * 1e-6)
            elif key == "price":
                t = replace(t, price_gb_month=v)
            elif key == "block":
                if not v.is_integer() or v <= 0 or v % 16:
                    raise OptionError(
                        "tier_overrides", f"{text!r}: block must be a multiple of 16 tokens"
                    )
                t = replace(t, block_tokens=int(v))
            else:
                raise OptionError(
                    "tier_overrides",
                    f"{text!r}: unknown key {key!r} (read_gbps, latency_us, price, block)",
                )
        by_name[name] = t
    return [by_name[t.name] for t in tiers]


def check_block_sizes(specs: list[TierSpec], block_size: int) -> None:
    """The first tier computes in blocks of ``block_size``; a lower tier's own block (chunk) must
    be a multiple of it."""
    first = specs[0]
    if first.block_tokens not in (None, block_size):
        raise OptionError(
            "tier_overrides",
            f"{first.name}:block= applies to lower tiers only; the first tier computes in "
            f"blocks of block_size ({block_size})",
        )
    for spec in specs[1:]:
        if spec.block_tokens is not None and spec.block_tokens % block_size:
            raise OptionError(
                "tier_overrides",
                f"tier {spec.name!r}: block {spec.block_tokens} is not a multiple of "
                f"block_size {block_size}",
            )


def parse_duration(text: str, param: str = "ttl_s") -> float:
    """'300', '300s', '5m', '1h', '1.5h', '24h', '1d' -> seconds (the caller's spec checks the
    value: ``SimConfig`` wants it positive); ``OptionError`` naming ``param`` otherwise."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if m is None:
        raise OptionError(param, f"{text!r}: expected a duration like 300s, 5m, 1h")
    scale = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    return float(m.group(1)) * scale
