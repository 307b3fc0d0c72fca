"""``python -m kvtool``: the same as the ``kvtool`` command."""

from kvtool.cli import main

main()
