"""Where the baseline fixtures of ``kvtool check`` come from: a file, or a file at a git commit.

``baseline`` is ``FILE``, ``git:REF`` (the candidate's own path at REF, in the repository that
holds the candidate) or ``git:REF:PATH`` (PATH from the root of the repository that holds the
current directory). A file that does not exist at REF is a new fixture file: no baseline, no
error. Every other failure (no such file, not a commit, no git) is one ``InputError`` line; git
runs read-only (``rev-parse``, ``show``) and nothing is written outside ``workdir``.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from kvtool.errors import InputError, OptionError


@dataclass(frozen=True)
class Baseline:
    """A resolved baseline: the file to read (None: it does not exist at the ref, so there is
    nothing to compare) and the label reports show (``FILE`` or ``REF:PATH``)."""

    path: Path | None
    label: str


def resolve_baseline(spec: str, candidate: Path, workdir: Path) -> Baseline:
    """The baseline file ``spec`` names (see the module docstring). A file at a git ref is
    written under ``workdir``; the caller owns (and removes) that directory."""
    if not spec.startswith("git:"):
        path = Path(spec)
        if not path.is_file():
            raise InputError(f"baseline {spec}: no such file")
        return Baseline(path=path, label=spec)
    ref, _, rel = spec[4:].partition(":")
    if not ref:
        raise OptionError("baseline", f"{spec!r}: expected git:REF or git:REF:PATH")
    where = Path.cwd() if rel else candidate.resolve().parent
    top = Path(_git(spec, where, "rev-parse", "--show-toplevel").strip())
    rel = rel or candidate.resolve().relative_to(top.resolve()).as_posix()
    _git(spec, top, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}")
    label = f"{ref}:{rel}"
    try:
        data = subprocess.run(
            ["git", "-C", str(top), "show", label], capture_output=True, check=True
        ).stdout
    except subprocess.CalledProcessError:
        return Baseline(path=None, label=label)
    out = workdir / Path(rel).name
    out.write_bytes(data)
    return Baseline(path=out, label=label)


def _git(spec: str, where: Path, *args: str) -> str:
    """Run git in ``where``; its failure becomes one ``InputError`` line."""
    try:
        return subprocess.run(
            ["git", "-C", str(where), *args], capture_output=True, check=True, text=True
        ).stdout
    except FileNotFoundError as exc:
        raise InputError(f"baseline {spec}: git is not installed") from exc
    except subprocess.CalledProcessError as exc:
        lines = (exc.stderr or "").strip().splitlines()
        why = lines[-1] if lines else f"{args[-1]!r} is not a commit"
        raise InputError(f"baseline {spec}: git {args[0]} in {where}: {why}") from exc
