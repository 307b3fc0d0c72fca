"""Where the heavy stages run: this process (``local``, the default) or a Ray cluster (``ray``).

With the Ray engine, parsing (one task per input file: ``kvtool.ingest.staged``) and
tokenization with chain hashing (one task per partition of tenant and prefix family:
``kvtool.tokenize.staged``) run as Ray Data pipelines whose workers write Parquet to a staging
location; the driver merges it into the DuckDB store, which then holds exactly what a local run
would have written, so every later stage (analyze, simulate, report) runs unchanged on it
(docs/scale.md). Ray is an extra (``pip install 'kvtool[ray]'``), imported only by
``kvtool.traffic.ray_cluster``, and only when asked for.

Staging: a temporary directory on this machine unless ``staging`` names one. A cluster of more
than one node needs storage every node shares with the driver (an NFS path, ``s3://...``):
without it ``OptionError``, since workers would write where the driver cannot read.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvtool.errors import OptionError

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class Executor:
    """How ingest and tokenization run. ``name``: 'local' or 'ray'; ``address``: the Ray
    cluster (None: ``RAY_ADDRESS`` if set, else a cluster started in this process; 'auto': the
    one ``ray start`` runs on this machine); ``staging``: where workers write Parquet (a path
    or URL the driver can read too); ``parts``: tokenize partitions (None: 4 per cluster CPU)."""

    name: str = "local"
    address: str | None = None
    staging: str | None = None
    parts: int | None = None

    def __post_init__(self) -> None:
        if self.name not in ENGINES:
            raise OptionError("engine", f"must be one of {', '.join(ENGINES)}, not {self.name!r}")
        for param, value in (("ray_address", self.address), ("ray_staging", self.staging)):
            if value and self.name == "local":
                raise OptionError(param, "needs engine 'ray'")
        if self.parts is not None and self.parts < 1:
            raise OptionError("ray_parts", "must be at least 1")

    @property
    def distributed(self) -> bool:
        return self.name != "local"

    def refuse_redact(self, redact: bool) -> None:
        """``OptionError`` for a redacted ingest on a cluster: it keeps the prompt text in one
        process's memory and nowhere else."""
        if redact and self.distributed:
            raise OptionError("redact", "runs on the local engine: the text must stay in memory")


def as_executor(engine: Executor | str | None) -> Executor:
    """An ``Executor`` from a name ('local', 'ray') or an engine; None is local."""
    if engine is None:
        return Executor()
    return engine if isinstance(engine, Executor) else Executor(engine)
