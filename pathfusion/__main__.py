"""``python -m pathfusion``: the same commands as ``pathfusion``.  With no command, or with only
``serve``'s options (``--stdio``, ``--tcp HOST:PORT``, ``--models DIR``), it serves — so that
editors can start the server with ``python -m pathfusion --stdio``."""

import sys

from pathfusion.server.cli import with_default_command

raise SystemExit(with_default_command(sys.argv[1:]))
