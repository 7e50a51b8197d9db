"""``python -m pathfusion.server``: the same as ``python -m pathfusion`` (:mod:`pathfusion.__main__`),
kept for editors configured with the server package's own name."""

import sys

from .cli import with_default_command

raise SystemExit(with_default_command(sys.argv[1:]))
