"""The code follows its map: docs/architecture.md's rooms table is the one source of the layers,
and every import under kvtool/ is checked against it.

- every module under kvtool/ belongs to a room of the table, and every room exists;
- a module imports only its own room or rooms of a lower rank (never a peer of the same rank);
- no module imports, or reaches through a module, a private (``_name``) name of another module;
- nothing under kvtool/ refers to DESIGN.md, a file a user's clone does not have.

Each test lists all its violations at once, as ``file:line: rule: detail``.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kvtool"
DOC = ROOT / "docs" / "architecture.md"
HEADING = "## Rooms"  # the table under this heading of docs/architecture.md is the source
STAGES_HEADING = "## Stages"  # ... and the stages with the other stages each may import
COLUMNS = ("rank", "room", "what it holds", "may import")


@dataclass(frozen=True)
class Room:
    """One row of the rooms table: ``modules`` are dotted names; a module belongs to the room
    whose name is its longest matching prefix (``kvtool`` itself matches only the package's
    ``__init__``, so a new top-level module or package is never silently an edge)."""

    rank: int
    modules: tuple[str, ...]
    may_import: str
    line: int

    @property
    def label(self) -> str:
        return "/".join(m.removeprefix("kvtool.") for m in self.modules)


@dataclass(frozen=True)
class Import:
    """One imported kvtool module (and the name taken from it, if any) at a source line."""

    line: int
    module: str
    name: str | None


def may_import_text(rank: int) -> str:
    """What the "may import" column must say for ``rank``."""
    if rank == 0:
        return "nothing of kvtool"
    return "rank 0" if rank == 1 else f"ranks 0–{rank - 1}"


@cache
def rooms() -> tuple[Room, ...]:
    """The rooms table of docs/architecture.md: the first table under ``HEADING``."""
    lines = DOC.read_text().splitlines()
    start = lines.index(HEADING)
    rows: list[tuple[int, list[str]]] = []
    for number, line in enumerate(lines[start + 1 :], start + 2):
        if line.startswith("|"):
            rows.append((number, [cell.strip() for cell in line.strip().strip("|").split("|")]))
        elif rows:
            break
    assert rows, f"{DOC.relative_to(ROOT)}: no table under {HEADING!r}"
    header = tuple(cell.lower() for cell in rows[0][1])
    assert header == COLUMNS, f"{DOC.relative_to(ROOT)}:{rows[0][0]}: columns are {header}"
    out = []
    for number, cells in rows[2:]:
        modules = tuple(re.findall(r"`(kvtool(?:\.\w+)*)`", cells[1]))
        assert cells[0].isdigit() and modules, f"{DOC.relative_to(ROOT)}:{number}: bad row {cells}"
        out.append(Room(int(cells[0]), modules, cells[3], number))
    return tuple(out)


@cache
def stages() -> dict[str, frozenset[str]]:
    """The stages table of docs/architecture.md: stage -> the other stages it may import."""
    lines = DOC.read_text().splitlines()
    start = lines.index(STAGES_HEADING)
    out: dict[str, frozenset[str]] = {}
    seen_table = False
    for line in lines[start + 1 :]:
        if not line.startswith("|"):
            if seen_table:
                break
            continue
        seen_table = True
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        names = re.findall(r"`(kvtool(?:\.\w+)*)`", cells[0])
        if not names:
            continue  # the header and its rule
        out[names[0]] = frozenset(re.findall(r"`(kvtool\.\w+)`", cells[1]))
    assert out, f"{DOC.relative_to(ROOT)}: no table under {STAGES_HEADING!r}"
    return out


def stage_of(module: str) -> str | None:
    return next((s for s in stages() if module == s or module.startswith(s + ".")), None)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_package(module: str) -> bool:
    return (ROOT.joinpath(*module.split(".")) / "__init__.py").exists()


def exists(module: str) -> bool:
    base = ROOT.joinpath(*module.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def room_of(module: str) -> Room | None:
    best: tuple[int, Room] | None = None
    for room in rooms():
        for name in room.modules:
            matches = module == name or (name != "kvtool" and module.startswith(name + "."))
            if matches and (best is None or len(name) > best[0]):
                best = (len(name), room)
    return best[1] if best else None


def sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def from_base(path: Path, node: ast.ImportFrom) -> str:
    """The absolute module of ``from X import ...``, relative imports resolved."""
    if not node.level:
        return node.module or ""
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    parts = package.split(".")
    anchor = parts[: len(parts) - node.level + 1]
    return ".".join(anchor + ([node.module] if node.module else []))


def imports(path: Path, tree: ast.Module) -> list[Import]:
    """Every kvtool import of the file, at any depth (functions, TYPE_CHECKING blocks)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "kvtool":
                    out.append(Import(node.lineno, alias.name, None))
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            base = from_base(path, node)
            if base.split(".")[0] != "kvtool":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if alias.name != "*" and exists(sub):  # `from kvtool.replay import metrics`
                    out.append(Import(node.lineno, sub, None))
                else:
                    out.append(Import(node.lineno, base, alias.name))
    return out


def module_aliases(path: Path, tree: ast.Module) -> dict[str, str]:
    """Local names bound to kvtool modules (``import kvtool.x as m``, ``from kvtool import x``)."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] != "kvtool":
                    continue
                if alias.asname:
                    out[alias.asname] = alias.name
                else:  # `import kvtool.x.y` binds `kvtool`
                    out["kvtool"] = "kvtool"
        elif isinstance(node, ast.ImportFrom):
            base = from_base(path, node)
            if base.split(".")[0] != "kvtool":
                continue
            for alias in node.names:
                if exists(f"{base}.{alias.name}"):
                    out[alias.asname or alias.name] = f"{base}.{alias.name}"
    return out


def dotted(node: ast.expr) -> list[str] | None:
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(names)]


def private_reaches(path: Path, tree: ast.Module) -> list[str]:
    """``module._name`` through a module object bound by an import."""
    aliases = module_aliases(path, tree)
    this = module_name(path)
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not is_private(node.attr):
            continue
        chain = dotted(node.value)
        if not chain or chain[0] not in aliases:
            continue
        owner = ".".join([aliases[chain[0]], *chain[1:]])
        if exists(owner) and owner != this:
            out.append(
                f"{where(path, node.lineno)}: private name: uses {owner}.{node.attr} "
                f"(a private name of another module)"
            )
    return out


@cache
def parsed() -> tuple[tuple[Path, ast.Module], ...]:
    return tuple((p, ast.parse(p.read_text(), str(p))) for p in sources())


def describe(room: Room) -> str:
    return f"room {room.label}, rank {room.rank}"


def fail_with(problems: list[str]) -> None:
    """All violations at once, one per line."""
    if problems:
        pytest.fail(f"{len(problems)} violation(s):\n" + "\n".join(problems), pytrace=False)


def test_rooms_table_is_well_formed():
    table = rooms()
    problems = []
    names = [m for room in table for m in room.modules]
    if len(names) != len(set(names)):
        problems.append(f"{DOC.relative_to(ROOT)}: a module is listed twice: {sorted(names)}")
    ranks = sorted({room.rank for room in table})
    if ranks != list(range(len(ranks))):
        problems.append(f"{DOC.relative_to(ROOT)}: ranks are not 0, 1, 2, ... : {ranks}")
    for room in table:
        expected = may_import_text(room.rank)
        if room.may_import != expected:
            problems.append(
                f"{DOC.relative_to(ROOT)}:{room.line}: table: {room.label} may import "
                f"{expected!r} (its rank says so), not {room.may_import!r}"
            )
    fail_with(problems)


def test_every_module_belongs_to_a_room_and_every_room_exists():
    problems = [
        f"{where(path, 1)}: no room: {module_name(path)} is in no room of the table "
        f"(add it to {DOC.relative_to(ROOT)}, {HEADING})"
        for path in sources()
        if room_of(module_name(path)) is None
    ]
    problems += [
        f"{DOC.relative_to(ROOT)}:{room.line}: no such module: {name} is in the table but not "
        f"under kvtool/"
        for room in rooms()
        for name in room.modules
        if not exists(name)
    ]
    fail_with(problems)


def test_imports_follow_the_ranks():
    problems = []
    checked = 0
    for path, tree in parsed():
        this = module_name(path)
        mine = room_of(this)
        if mine is None:
            continue  # reported by the room test
        for imp in imports(path, tree):
            checked += 1
            theirs = room_of(imp.module)
            if theirs is None:
                problems.append(
                    f"{where(path, imp.line)}: no room: imports {imp.module}, in no room"
                )
            elif theirs is mine:
                continue
            elif theirs.rank == mine.rank:
                problems.append(
                    f"{where(path, imp.line)}: peer import: {this} ({describe(mine)}) imports "
                    f"{imp.module} ({describe(theirs)}), a room of the same rank"
                )
            elif theirs.rank > mine.rank:
                problems.append(
                    f"{where(path, imp.line)}: upward import: {this} ({describe(mine)}) imports "
                    f"{imp.module} ({describe(theirs)}), a higher rank"
                )
    assert checked > 100, f"only {checked} kvtool imports found: is the parser broken?"
    fail_with(problems)


def test_stages_do_not_import_each_other():
    """A stage imports another stage only where the stages table says so."""
    assert all(room_of(stage) is not None for stage in stages()), "a stage is not a room"
    problems = []
    for path, tree in parsed():
        this = module_name(path)
        mine = stage_of(this)
        if mine is None:
            continue
        for imp in imports(path, tree):
            theirs = stage_of(imp.module)
            if theirs is not None and theirs != mine and theirs not in stages()[mine]:
                problems.append(
                    f"{where(path, imp.line)}: stage import: {this} imports {imp.module}; "
                    f"{mine} may not import {theirs} (docs/architecture.md, Stages)"
                )
    fail_with(problems)


def test_no_private_names_cross_modules():
    problems = []
    for path, tree in parsed():
        this = module_name(path)
        for imp in imports(path, tree):
            taken = imp.name or imp.module.rpartition(".")[2]
            private = [p for p in imp.module.split(".") if is_private(p)]
            if imp.module != this and (is_private(taken) or private):
                name = f"{imp.module}.{imp.name}" if imp.name else imp.module
                problems.append(
                    f"{where(path, imp.line)}: private name: imports {name} "
                    f"(a private name of another module)"
                )
        problems += private_reaches(path, tree)
    fail_with(problems)


def test_nothing_refers_to_design_md():
    problems = []
    for path in sorted(PACKAGE.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        problems += [
            f"{where(path, n)}: DESIGN.md: refer to docs/architecture.md instead"
            for n, line in enumerate(text.splitlines(), 1)
            if "DESIGN.md" in line
        ]
    fail_with(problems)


@pytest.mark.parametrize(
    ("module", "label"),
    [
        ("kvtool", "cli/cli_reference/kvtool/__main__"),
        ("kvtool.__main__", "cli/cli_reference/kvtool/__main__"),
        ("kvtool.store.db", "store"),
        ("kvtool.tokenize.hashing", "tokenize"),
        ("kvtool.newthing", None),
    ],
)
def test_room_lookup(module: str, label: str | None):
    room = room_of(module)
    assert (room.label if room else None) == label


def test_tests_import_their_helpers_as_a_clean_clone_runs_them():
    """``make test`` runs pytest from the venv, where the repository root is not on sys.path:
    helper modules of tests/ are imported by their own name (``from workloads import ...``),
    never as ``tests.<module>``."""
    import re

    tests_dir = Path(__file__).parent
    bad = [
        f"{p.name}:{i}"
        for p in sorted(tests_dir.glob("*.py"))
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if re.match(r"\s*(from|import) tests(\.|\s)", line)
    ]
    assert bad == []
