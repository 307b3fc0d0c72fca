"""One error family. Every error kvtool raises for input or options it cannot use is a
``KvtoolError``; the CLI turns that base class into one line on stderr and exit code 2, once.

Library messages name parameters as the Python API spells them (``block_size``); an
``OptionError`` carries the parameter in ``param`` so that the CLI can name its flag instead
(``--block-size``).
"""

from __future__ import annotations


class KvtoolError(Exception):
    """Input or options that kvtool cannot use (exit code 2 on the command line)."""


class InputError(KvtoolError):
    """An input file or fixture that cannot be read or holds nothing usable."""


class OptionError(KvtoolError):
    """A parameter value that is out of range or unknown. ``param`` is its Python name."""

    def __init__(self, param: str, message: str):
        super().__init__(f"{param} {message}")
        self.param = param
        self.message = message


class NotFoundError(KvtoolError):
    """A named thing (tokenizer, model, stored run) that does not exist here; nothing is ever
    fetched from a network to find it."""


class WorkloadError(KvtoolError):
    """The selected traffic cannot be analyzed as one workload (nothing in it, mixed kinds)."""


class SchemaError(KvtoolError):
    """A database file written by an incompatible kvtool version."""


class ServerError(KvtoolError):
    """A model server that could not be launched or did not come up."""
