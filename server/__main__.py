"""``python -m server``: the same commands as ``pathfusion`` (``serve`` when none is given,
so that editors can start the server with ``python -m server``)."""

import sys

from .cli import main

raise SystemExit(main(sys.argv[1:] or ["serve"]))
