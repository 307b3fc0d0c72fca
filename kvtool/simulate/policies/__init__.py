"""Eviction policies as plug-ins: one module per policy, each registering its class.

``base`` holds the hooks every policy implements (the contract is in its docstring), two shared
bases and ``register``. Every other module of this package is imported here, so adding a policy
is one file: a class with the hooks, decorated ``@register(name, one-line help)``. ``POLICIES``
lists them, online policies first, then the bounds (``PolicyInfo.bound``), each group by name;
``--policy``, its help and ``SimConfig``'s check read it.
"""

from __future__ import annotations

import importlib
import pkgutil

from kvtool.errors import OptionError
from kvtool.simulate.policies.base import INF, REGISTRY, Policy, PolicyInfo, register

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

POLICIES: dict[str, PolicyInfo] = dict(
    sorted(REGISTRY.items(), key=lambda item: (item[1].bound, item[0]))
)


def make_policy(name: str, capacity: int, **options: float) -> Policy:
    """A policy by name; ``options`` (e.g. ``ttl``) are passed to the ones that take them."""
    info = POLICIES.get(name)
    if info is None:
        raise OptionError("policy", f"{name!r} is not one of {', '.join(POLICIES)}")
    return info.cls(capacity, **options)


__all__ = ["INF", "POLICIES", "Policy", "PolicyInfo", "make_policy", "register"]
