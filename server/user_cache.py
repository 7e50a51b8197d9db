"""Where pathfusion keeps what it computes for the user: workspace indexes and the record of
verified model files.  ``$PATHFUSION_CACHE_DIR`` replaces the platform's user cache folder
(tests and benchmarks point it at a temporary folder)."""

from __future__ import annotations

import os
from pathlib import Path

ENV_CACHE_DIR = "PATHFUSION_CACHE_DIR"


def cache_root() -> Path:
    """``$PATHFUSION_CACHE_DIR``, else the user cache directory of pathfusion."""
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("pathfusion"))
