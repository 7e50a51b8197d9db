"""The ``pathfusion.*`` settings of a session: from ``initializationOptions``, then pulled
with ``workspace/configuration`` where the client can answer it, else pushed by
``workspace/didChangeConfiguration``.

Why the options of ``initialize`` are the base of every later change: a pulled or pushed
section may leave fields out, and those keep the value the session started with.  A value
that cannot be used is reported once (``warn_once``) and the field keeps the base's value
(:meth:`~pathfusion.server.settings.Settings.from_dict`).  Models and indexes pick up new settings when
they are next needed (:mod:`pathfusion.server.lsp_models`, :meth:`~pathfusion.server.feature_index.Indexes.start`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from lsprotocol import types

from .settings import SECTION, Settings

if TYPE_CHECKING:
    from .lsp_server import PathfusionServer

log = logging.getLogger(__name__)


def apply_settings(ls: PathfusionServer, data: Any, base: Settings | None = None) -> None:
    """Make ``data`` (the ``pathfusion`` section, as sent) the session's settings, over
    ``base`` (else the options of ``initialize``)."""
    ls.settings = Settings.from_dict(data, base=base or ls.base_settings)
    for warning in ls.settings.warnings:
        ls.warn_once(warning)


def supports_configuration(ls: PathfusionServer) -> bool:
    caps = ls.client_capabilities.workspace
    return bool(caps is not None and caps.configuration)


async def pull_settings(ls: PathfusionServer) -> None:
    """Ask the client for the ``pathfusion`` section (when it can answer)."""
    if not supports_configuration(ls):
        return
    try:
        result = await ls.workspace_configuration_async(types.ConfigurationParams(
            items=[types.ConfigurationItem(section=SECTION)]))
    except Exception as exc:  # a client error must not stop the server
        log.warning("workspace/configuration failed: %s", exc)
        return
    value = result[0] if result else None
    if value is not None:
        apply_settings(ls, value)


def initialize(ls: PathfusionServer, params: types.InitializeParams) -> None:
    """The options of ``initialize`` are the base of every later change."""
    apply_settings(ls, params.initialization_options)
    ls.base_settings = ls.settings


async def configuration_changed(ls: PathfusionServer, params: types.DidChangeConfigurationParams) -> None:
    """Pull the settings again (a client that cannot be asked sends them in ``params``)."""
    if supports_configuration(ls):
        await pull_settings(ls)
    elif params.settings is not None:
        apply_settings(ls, params.settings)
