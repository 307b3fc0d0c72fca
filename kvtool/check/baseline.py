"""Where the baseline fixtures of ``kvtool check`` come from: a file, or a file at a git commit.

``baseline`` is ``FILE``, ``git:REF`` (the candidate's own path at REF, in the repository that
holds the candidate) or ``git:REF:PATH`` (PATH from the root of the repository that holds the
current directory). Invariant: the only failure that passes is a path that provably does not
exist at a valid commit (``git ls-tree`` reads the commit's trees and lists nothing): a new
fixture file, no baseline, no error. Everything else (no such file, not a commit, a missing or
corrupt object, a path that is a directory, no git) is one ``InputError`` line carrying git's
own message; git runs read-only (``rev-parse``, ``ls-tree``, ``cat-file``) and nothing is
written outside ``workdir``.
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
    top = Path(_git(spec, where, "rev-parse", "--show-toplevel").decode().strip())
    rel = rel or candidate.resolve().relative_to(top.resolve()).as_posix()
    commit = (
        _git(spec, top, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}")
        .decode()
        .strip()
    )
    label = f"{ref}:{rel}"
    # ls-tree exits 0 with no entry only when every tree on the way was read and the path is not
    # there; a missing or corrupt tree is a git failure (InputError), never "new".
    listing = _git(spec, top, "--literal-pathspecs", "ls-tree", "-z", commit, "--", rel)
    entries = [e for e in listing.split(b"\0") if e]
    if not entries:
        return Baseline(path=None, label=label)
    meta, _, _name = entries[0].partition(b"\t")
    _mode, kind, oid = meta.decode().split(" ")
    if len(entries) > 1 or kind != "blob":
        raise InputError(f"baseline {spec}: {label} is not a file ({kind}) at {ref}")
    out = workdir / Path(rel).name
    out.write_bytes(_git(spec, top, "cat-file", "blob", oid))
    return Baseline(path=out, label=label)


def _git(spec: str, where: Path, *args: str) -> bytes:
    """Run git in ``where`` and return its stdout; its failure becomes one ``InputError`` line
    with git's last line of stderr."""
    command = next(a for a in args if not a.startswith("-"))
    try:
        return subprocess.run(
            ["git", "-C", str(where), *args], capture_output=True, check=True
        ).stdout
    except FileNotFoundError as exc:
        raise InputError(f"baseline {spec}: git is not installed") from exc
    except subprocess.CalledProcessError as exc:
        lines = exc.stderr.decode(errors="replace").strip().splitlines()
        why = lines[-1] if lines else f"{args[-1]!r} is not a commit"
        raise InputError(f"baseline {spec}: git {command} in {where}: {why}") from exc
