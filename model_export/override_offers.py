"""``python -m pathfusion.model_export.override_offers``: how often a hover offers to rename an override.

Why: renaming a method that overrides an inherited one breaks the program silently
(:mod:`pathfusion.server.overrides`).  Which methods override is known exactly for the standard
library: its classes are imported here (this tool only; the server never imports what it
reads) and a method overrides when a class of its ``__mro__`` past the first defines its name.
Each module's methods get the names a hover would offer (the shipped head, then the rename
rules); printed: how many overriding methods got an offer, by where the overridden method lives.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import inspect
import warnings
from collections.abc import Sequence
from pathlib import Path

from pathfusion.server.code2vec import suggest_for_document
from pathfusion.server.parsing import Document
from pathfusion.server.rename_safety import safe_suggestion

from .evaluate import load_predictor

MODULES = (
    "socketserver", "http.server", "logging.handlers", "html.parser", "json.encoder", "ast", "argparse",
    "unittest.case", "threading", "collections", "email.feedparser", "xml.sax.handler", "xml.dom.minidom",
    "asyncio.protocols", "asyncio.sslproto", "asyncio.selector_events", "zipfile", "tarfile", "io", "_pyio",
    "codecs", "configparser", "pprint", "string", "numbers", "importlib.abc", "http.client", "urllib.request",
    "logging", "shelve", "dbm.dumb", "queue", "concurrent.futures.thread", "concurrent.futures.process",
    "selectors", "xmlrpc.server", "wsgiref.simple_server", "wsgiref.handlers", "smtplib", "ftplib",
    "tkinter.simpledialog", "idlelib.editor",
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pathfusion.model_export.override_offers",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=None)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    model, _ = load_predictor("default", args.models, "cpu")
    counts: collections.Counter[str] = collections.Counter()
    offered_names: list[str] = []
    for name in MODULES:
        try:
            module = importlib.import_module(name)
            text = Path(inspect.getsourcefile(module) or "").read_text(encoding="utf-8")
        except (ImportError, OSError, TypeError):
            continue
        doc = Document(text)
        offered = {s.qualname: s for s in suggest_for_document(doc, model, top_k=5)}
        for func in doc.functions():
            parts = func.qualname.split(".")
            cls = getattr(module, parts[-2], None) if len(parts) == 2 else None
            if not inspect.isclass(cls) or func.name.startswith("__"):
                continue
            owner = next((base for base in cls.__mro__[1:] if func.name in vars(base)), None)
            found = offered.get(func.qualname)
            shown = found is not None and found.line == func.span.start.line + 1 and bool(
                safe_suggestion(found, text, func, 5).worth_offering())
            counts["methods"] += 1
            if owner is None:
                counts["other methods offered"] += shown
                continue
            counts["overriding"] += 1
            where = ("same file" if owner.__module__ == module.__name__ else
                     "builtins" if owner.__module__ == "builtins" else "another module")
            counts[f"overriding, offered: base in {where}"] += shown
            if shown:
                offered_names.append(f"{name}:{func.qualname} (overrides {owner.__module__}.{owner.__qualname__})")
    for key, value in counts.items():
        print(f"{key}: {value}")
    print("\n".join(["overriding methods offered a rename:", *offered_names]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
