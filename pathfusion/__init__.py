"""pathfusion: one importable name for the language server and its training pipeline.

Why links: the repository keeps its two top-level folders, ``server/`` (the runtime: parsing,
path contexts, models, the language server; no torch) and ``model_export/`` (corpus, training,
export; the ``train`` extra).  ``pathfusion/server`` and ``pathfusion/model_export`` are
symbolic links to them, so that ``pathfusion.server`` and ``pathfusion.model_export`` import
from a checkout with nothing installed (a remote GPU job, ``python -m pathfusion`` in the
repository), mypy follows them as ordinary packages, and the wheel — setuptools follows the
links — installs one top-level package, ``pathfusion``, instead of generic names such as
``server`` that collide with other projects."""

__version__ = "0.1.0"
