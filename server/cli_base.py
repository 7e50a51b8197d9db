"""What the ``pathfusion`` command's modules and ``python -m pathfusion.server.lsp`` share: the error
a user can fix, and the arguments of ``serve``.

Why a module of its own: ``serve``'s arguments and its ``--tcp`` rule are the same for
``pathfusion serve`` (:mod:`pathfusion.server.cli`) and ``python -m pathfusion.server.lsp`` (:mod:`pathfusion.server.lsp`);
kept here, the language server needs nothing of the CLI and the CLI imports the server
only when it serves — neither imports the other.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path


class CliError(Exception):
    """An error the user can fix; printed without a traceback."""


def parse_tcp(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``:PORT`` = localhost, ``[::1]:PORT`` for IPv6) for ``serve --tcp``."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "127.0.0.1", int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine (``localhost`` or a
    loopback address; a host name is not resolved: it could name any interface)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_serve_arguments(args: argparse.Namespace) -> None:
    """Refuse ``--tcp`` on a host other than loopback without ``--allow-remote``.

    Why: the TCP transport has no authentication, and the server reads, indexes and renames
    the workspace's files for whoever connects; on another interface that is anyone who can
    reach the port."""
    tcp = getattr(args, "tcp", None)
    if tcp is None or is_loopback(tcp[0]):
        return
    if not getattr(args, "allow_remote", False):
        raise CliError(f"--tcp {tcp[0]}:{tcp[1]}: {tcp[0]!r} is not a loopback address and the TCP "
                       f"transport has no authentication (whoever connects can read and rename the "
                       f"workspace's files); listen on 127.0.0.1, or pass --allow-remote to accept it")
    print(f"pathfusion serve: warning: listening on {tcp[0]}:{tcp[1]} without authentication",
          file=sys.stderr)


SERVE_OPTIONS = ("--stdio", "--tcp", "--allow-remote", "--models")
"""``serve``'s own options: ``python -m pathfusion --stdio`` serves (:func:`pathfusion.server.cli.with_default_command`)."""


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--stdio", action="store_true", help="talk over stdin/stdout (default)")
    mode.add_argument("--tcp", type=parse_tcp, metavar="HOST:PORT",
                      help="listen on a TCP port; no authentication, so for local use only: HOST must "
                           "be a loopback address (default 127.0.0.1) unless --allow-remote is given")
    parser.add_argument("--allow-remote", action="store_true",
                        help="let --tcp listen on a host other than loopback (anyone who reaches the "
                             "port can read and rename the workspace's files)")
    parser.add_argument("--models", type=Path, default=None,
                        help="models folder (default: the modelsDir setting, $PATHFUSION_MODELS "
                             "or models/ of the repository)")
