"""``python -m flowjobs``: the same as the ``flowjobs`` command."""

from flowjobs.cli import main

main()
