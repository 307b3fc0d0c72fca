"""Tier specifications from the command line: ``--tier-gb hbm=80,dram=0,32,64`` and overrides.

Tier names are free; their order is speed order (the first is where requests compute: GPU HBM).
Defaults come from the first known kind word in the name (DESIGN.md: Tiers and cost); each is an
assumption, overridable with ``--tier NAME:read_gbps=..,latency_us=..,price=..``:

| kind words | read GB/s | latency | $/GB-month | what it stands for |
|---|---|---|---|---|
| hbm, gpu | (local) | 0 | 22.8 | H100 80 GB at $2.50/h |
| dram, cpu, host, mem | 25 | 10 us | 4.0 | host memory over PCIe 5 (about half its peak) |
| nvme, ssd, disk, local | 6 | 100 us | 0.08 | a local NVMe drive |
| remote, net, rdma, store, shared | 12 | 20 us | 4.0 | a remote DRAM pool over 100 Gb/s RDMA |
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace


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


class TierSpecError(ValueError):
    """A tier option that cannot be understood (one line, for the CLI)."""


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
            self.name,
            blocks,
            gb,
            self.read_gbps,
            self.latency_s,
            self.price_gb_month,
            self.block_tokens,
        )


def _defaults(name: str, first: bool) -> tuple[float, float, float]:
    low = name.lower()
    for words, bw, lat, price in _KINDS:
        if any(w in low for w in words):
            return bw, lat, price
    if first:
        return _KINDS[0][1:]
    raise TierSpecError(
        f"tier {name!r}: unknown kind; name it after hbm/gpu, dram/cpu, nvme/ssd or remote, "
        f"or give its speed with --tier {name}:read_gbps=..,latency_us=..,price=.."
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
                raise TierSpecError(f"--tier-gb {text!r}: bad tier name {name!r}")
            tiers.append((name.strip(), []))
        elif not tiers:
            raise TierSpecError(f"--tier-gb {text!r}: expected NAME=GB first")
        else:
            value = name
        try:
            gb = float(value)
        except ValueError:
            raise TierSpecError(f"--tier-gb {text!r}: {value!r} is not a size in GB") from None
        if gb < 0:
            raise TierSpecError(f"--tier-gb {text!r}: sizes must be >= 0")
        tiers[-1][1].append(gb)
    if not tiers:
        raise TierSpecError("--tier-gb is empty")
    if len({n for n, _ in tiers}) != len(tiers):
        raise TierSpecError(f"--tier-gb {text!r}: a tier is named twice")
    if sum(len(v) > 1 for _, v in tiers) > 1:
        raise TierSpecError(f"--tier-gb {text!r}: only one tier can be swept at a time")
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
            raise TierSpecError(f"--tier {text!r}: no tier named {name!r} in --tier-gb")
        t = by_name[name]
        for item in filter(None, (s.strip() for s in body.split(","))):
            key, _, value = item.partition("=")
            try:
                v = float(value)
            except ValueError:
                raise TierSpecError(f"--tier {text!r}: {value!r} is not a number") from None
            if key == "read_gbps":
                t = replace(t, read_gbps=v)
            elif key == "latency_us":
                t = replace(t, latency_s=v * 1e-6)
            elif key == "price":
                t = replace(t, price_gb_month=v)
            elif key == "block":
                if not v.is_integer() or v <= 0 or v % 16:
                    raise TierSpecError(f"--tier {text!r}: block must be a multiple of 16 tokens")
                t = replace(t, block_tokens=int(v))
            else:
                raise TierSpecError(
                    f"--tier {text!r}: unknown key {key!r} (read_gbps, latency_us, price, block)"
                )
        by_name[name] = t
    return [by_name[t.name] for t in tiers]


def parse_duration(text: str) -> float:
    """'300', '300s', '5m', '1h', '1.5h', '24h', '1d' -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if m is None:
        raise TierSpecError(f"--ttl {text!r}: expected a duration like 300s, 5m, 1h")
    scale = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    seconds = float(m.group(1)) * scale
    if seconds <= 0:
        raise TierSpecError(f"--ttl {text!r}: must be positive")
    return seconds
