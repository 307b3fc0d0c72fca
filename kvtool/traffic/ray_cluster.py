"""The Ray engine's machinery: a cluster connection, Ray Data pipelines, the staged ingest.

Imported only when ``Executor.name`` is 'ray' (see ``kvtool.traffic.engine``).
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from kvtool.errors import InputError, KvtoolError, OptionError
from kvtool.ingest import FileReport, check_ingest_options, check_max_line_bytes
from kvtool.ingest.paths import expand_paths
from kvtool.ingest.reader import STDIN
from kvtool.ingest.staged import StagedFile, merge_staged, stage_file
from kvtool.ingest.writer import path_text
from kvtool.progress import Progress
from kvtool.store import Connection
from kvtool.store.parquet import join, remove
from kvtool.traffic.engine import Executor

PARTS_PER_CPU = 4  # tokenize partitions per worker CPU: small enough to balance skew


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise OptionError(
            "engine", "'ray' needs Ray: pip install 'kvtool[ray]' (ray[data] >= 2.40)"
        ) from None
    return ray


class RayCluster:
    """A connection to a Ray cluster for one command: ``map`` runs a function over items as a
    Ray Data pipeline; ``location`` is the staging area (``kvtool.tokenize.staged.Distributor``).
    A cluster this process started is shut down by ``close``."""

    def __init__(self, engine: Executor) -> None:
        ray = self.ray = _ray()
        self.started = False
        if not ray.is_initialized():
            address = engine.address or os.environ.get("RAY_ADDRESS")
            try:
                ray.init(
                    address=address,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level="ERROR",
                    configure_logging=True,
                )
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise InputError(f"cannot reach the Ray cluster at {address}: {exc}") from None
            self.started = True
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        for name in ("ray", "ray.data"):  # Ray Data logs every execution at INFO on stderr
            logging.getLogger(name).setLevel(logging.ERROR)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        if engine.staging is None and nodes > 1:
            self.close()
            raise OptionError(
                "ray_staging",
                f"is needed on a cluster of {nodes} nodes: name storage that every node and "
                "this machine share (a shared path or an s3:// URL)",
            )
        self.own_staging = engine.staging is None
        base = engine.staging or tempfile.mkdtemp(prefix="kvtool-ray-")
        self.location = join(base, f"run-{os.getpid()}-{id(self):x}")
        self.parts = engine.parts or PARTS_PER_CPU * max(1, cpus)

    def map(self, fn: Callable[[dict], dict], items: Iterable[dict]) -> Iterator[dict]:
        """``fn`` over ``items``, one Ray Data block (and task) per item, results as they
        finish. A ``KvtoolError`` of ``fn`` surfaces as itself (Ray's wrappers unwrapped)."""
        listed = list(items)
        if not listed:
            return
        ds = self.ray.data.from_items(listed, override_num_blocks=len(listed)).map(fn)
        try:
            yield from ds.iter_rows()
        except Exception as exc:
            raise _kvtool_cause(exc) or exc from None

    def close(self) -> None:
        if getattr(self, "location", None) is not None:
            remove(self.location)
            if self.own_staging:
                remove(self.location.rsplit("/", 1)[0])
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()
            self.started = False


def _kvtool_cause(exc: BaseException) -> KvtoolError | None:
    """The ``KvtoolError`` a worker raised, found inside Ray's wrappers (None: another error)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, KvtoolError):
            return e
        todo.extend([e.__cause__, e.__context__, getattr(e, "cause", None)])
    return None


def _stage_item(item: dict) -> dict:
    """Run on a worker: ``stage_file`` of one input; the ``StagedFile`` travels pickled."""
    staged = stage_file(
        item["index"],
        item["source"],
        item["name"],
        item["location"],
        fmt=item["fmt"],
        hash_block_size=item["hash_block_size"],
        max_line_bytes=item["max_line_bytes"],
    )
    return {"index": item["index"], "staged": pickle.dumps(staged)}


def _inputs(paths: Iterable[str | Path]) -> list[tuple[str, str]]:
    """(what a worker opens, the name stored) for each file of ``paths``, in order: local
    files as absolute paths (workers do not share this process's directory), URLs as given."""
    out: list[tuple[str, str]] = []
    for given in paths:
        text = str(given)
        if text == STDIN:
            raise OptionError("engine", "'ray' reads files, not stdin: use the local engine")
        for path in expand_paths([given]):
            if isinstance(path, str):  # a URL
                out.append((path, path))
            else:
                out.append((str(path.absolute()), path_text(path)))
    return out


def ray_ingest(
    con: Connection,
    cluster: RayCluster,
    paths: Iterable[str | Path],
    *,
    fmt: str | None,
    hash_block_size: int,
    max_line_bytes: int,
    progress: Progress,
) -> list[FileReport]:
    """``ingest_paths`` on the cluster: each file parsed by one task, merged here in the order
    given (``kvtool.ingest.staged``); ``InputError`` first for a redacted database. The first
    file that fails (in that order) raises its ``InputError`` after the files before it are
    merged, as a local ingest would."""
    from kvtool.tokenize.redact import check_not_mixed

    check_ingest_options(fmt, hash_block_size)
    check_max_line_bytes(max_line_bytes)
    check_not_mixed(con, redact=False)
    inputs = _inputs(paths)
    location = join(cluster.location, "ingest")
    items = [
        {
            "index": i,
            "source": source,
            "name": name,
            "location": location,
            "fmt": fmt,
            "hash_block_size": hash_block_size,
            "max_line_bytes": max_line_bytes,
        }
        for i, (source, name) in enumerate(inputs)
    ]
    progress.stage("ingest (ray)", len(items))
    staged: dict[int, StagedFile] = {}
    try:
        for row in cluster.map(_stage_item, items):
            staged[int(row["index"])] = pickle.loads(row["staged"])
            progress.advance(1)
        reports = []
        for i in range(len(items)):
            one = staged[i]
            if one.error is not None:
                raise InputError(one.error)
            reports.append(merge_staged(con, one))
        return reports
    finally:
        remove(location)


def ingest_on_ray(
    con: Connection,
    engine: Executor,
    paths: Iterable[str | Path],
    *,
    redact: bool,
    **options: Any,
) -> list[FileReport]:
    """``kvtool ingest --engine ray``: ``ray_ingest`` (``options``: its ``fmt``,
    ``hash_block_size``, ``max_line_bytes`` and ``progress``) on a cluster connected for this
    call; ``OptionError`` for ``redact``."""
    engine.refuse_redact(redact)
    cluster = RayCluster(engine)
    try:
        return ray_ingest(con, cluster, paths, **options)
    finally:
        cluster.close()
