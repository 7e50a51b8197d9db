"""The ``pathfusion`` verbs that delegate to the training package, ``model_export``:
``train``, ``export``, ``corpus`` and ``eval``.

Why apart from :mod:`pathfusion.server.cli`: the server runs without the training package's heavy
dependencies, so nothing under ``server/`` imports ``model_export`` or torch at import
time.  These verbs import their implementation only when they run, and are registered only
where it can run, checked with :func:`importlib.util.find_spec` (which finds a module
without importing it, so ``pathfusion --help`` never pays for torch):

* ``train`` and ``export`` need the ``train`` extra (torch, transformers, onnx:
  :data:`TRAIN_EXTRA`);
* ``corpus`` and ``eval`` need ``model_export`` alone: reading the corpus and scoring the
  exported models use nothing but the server's own dependencies (numpy, tree-sitter,
  onnxruntime), so they are kept where the extra is not installed.

An unregistered verb still answers: :func:`unavailable` says which extra it needs and how
to install it (:func:`pathfusion.server.cli.main` asks before parsing).
"""

from __future__ import annotations

import argparse
import importlib.util
from typing import Any

from .cli_base import CliError

TRAIN_EXTRA = ("torch", "transformers", "onnx")
"""What ``pip install 'pathfusion[train]'`` adds that the training verbs import."""
NEEDS: dict[str, tuple[str, ...]] = {
    "train": ("pathfusion.model_export", *TRAIN_EXTRA),
    "export": ("pathfusion.model_export", *TRAIN_EXTRA),
    "corpus": ("pathfusion.model_export",),
    "eval": ("pathfusion.model_export",),
}
"""Each verb of this module and the modules it needs."""
PASSTHROUGH = frozenset(NEEDS)
"""Commands whose arguments are parsed by the implementation they delegate to."""
TRAINABLE = ("code2vec", "embedder", "naming", "fusion")
INSTALL = "pip install 'pathfusion[train]' (in a checkout: pip install -e '.[train]')"


def _findable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a broken or half-imported package
        return False


def missing(verb: str) -> list[str]:
    """The modules ``verb`` needs that cannot be imported here (none are imported)."""
    return [name for name in NEEDS.get(verb, ()) if not _findable(name)]


def unavailable(verb: str) -> str | None:
    """Why ``verb`` is not registered here, or None (also for the verbs of other modules)."""
    lacking = missing(verb)
    if not lacking:
        return None
    return (f"`pathfusion {verb}` needs the train extra ({', '.join(lacking)} "
            f"{'is' if len(lacking) == 1 else 'are'} not installed); install it with: {INSTALL}")


def cmd_export(args: argparse.Namespace) -> int:
    """``pathfusion export code2vec|embedder|naming|fusion …`` (model_export/export_*.py)."""
    try:
        if args.target == "embedder":
            from pathfusion.model_export.export_embedder import main as export_main
        elif args.target == "naming":
            from pathfusion.model_export.export_naming import main as export_main
        elif args.target == "fusion":
            from pathfusion.model_export.export_fusion import main as export_main
        else:
            from pathfusion.model_export.export_code2vec import main as export_main
    except ImportError as exc:
        raise CliError(f"export needs the training dependencies ({exc}); "
                       "install them with: pip install -e '.[train]'") from exc
    return int(export_main(args.rest))


def cmd_corpus(args: argparse.Namespace) -> int:
    """``pathfusion corpus …`` (model_export/corpus.py)."""
    from pathfusion.model_export.corpus import main as corpus_main

    return int(corpus_main(args.rest))


def cmd_eval(args: argparse.Namespace) -> int:
    """``pathfusion eval naming|search …`` (see model_export/evaluate.py)."""
    from pathfusion.model_export.evaluate import main as eval_main

    return int(eval_main([args.task, *args.rest]))


def cmd_train(args: argparse.Namespace) -> int:
    """``pathfusion train MODEL …``: the model_export pipeline (needs the ``train`` extra)."""
    if args.model not in TRAINABLE:
        raise CliError(f"unknown model {args.model!r}; trainable now: {', '.join(TRAINABLE)}")
    try:
        if args.model == "fusion":
            from pathfusion.model_export.train_fusion import main as train_main
        elif args.model == "embedder":
            from pathfusion.model_export.train_embedder import main as train_main
        elif args.model == "naming":
            from pathfusion.model_export.train_naming import main as train_main
        else:
            from pathfusion.model_export.train_code2vec import main as train_main
    except ImportError as exc:
        raise CliError(f"training needs the train extra: pip install -e '.[train]' ({exc})") from exc
    return int(train_main(args.rest))


def register(sub: Any) -> list[str]:
    """Add the verbs that can run here to ``sub`` (the subparsers of ``pathfusion``), in
    the order of ``pathfusion --help``; returns those left out."""
    left_out = [verb for verb in NEEDS if missing(verb)]
    if "export" not in left_out:
        export = sub.add_parser("export", help="export a trained model to ONNX (needs the train extra)")
        export.add_argument("target", choices=("code2vec", "embedder", "naming", "fusion"))
        export.add_argument("rest", nargs=argparse.REMAINDER)
        export.set_defaults(func=cmd_export)
    if "corpus" not in left_out:
        corpus = sub.add_parser("corpus", help="build the training corpus (see model_export/corpus.py)",
                                add_help=False)
        corpus.add_argument("rest", nargs=argparse.REMAINDER)
        corpus.set_defaults(func=cmd_corpus)
    if "eval" not in left_out:
        evaluate = sub.add_parser("eval", help="score the exported models on held-out code")
        evaluate.add_argument("task", choices=("naming", "search"))
        evaluate.add_argument("rest", nargs=argparse.REMAINDER)
        evaluate.set_defaults(func=cmd_eval)
    if "train" not in left_out:
        train = sub.add_parser("train", help="train a model: code2vec (model_export/train_code2vec.py), "
                                             "embedder (model_export/train_embedder.py), naming "
                                             "(model_export/train_naming.py) or fusion "
                                             "(model_export/train_fusion.py)")
        train.add_argument("model", help="which model: code2vec, embedder, naming or fusion")
        train.add_argument("rest", nargs=argparse.REMAINDER)
        train.set_defaults(func=cmd_train)
    return left_out
