"""``python -m pathfusion.model_export.override_offers``: how often a hover offers to rename an override.

Why: renaming a method that overrides an inherited one breaks the program silently
(:mod:`pathfusion.server.overrides`).  Which methods override is known exactly once their
classes are imported (here only; the server never imports what it reads): a method overrides
when a class of its ``__mro__`` past the first defines or declares (``name: Any``) its name,
and is overridden when a loaded subclass defines it.  Two measures:

* the standard library (default): each module's methods get the names a hover would offer
  (the shipped head, then the rename rules, the module read from its file); printed: how many
  overriding methods got an offer, by where the overridden method lives;
* ``--packages a,b.c``: every module of those installed packages, the rules alone (no model):
  how many overriding methods the rules keep, by where the base lives (the same file, another
  file of the package, another package, the standard library), and how many methods they keep
  that neither override nor are overridden — once as served (each package its own project,
  :mod:`pathfusion.server.subclasses` scanning its files), once reading the standard library
  only, no relative imports and no subclasses in other files (the rules before
  :mod:`pathfusion.server.base_classes`).
"""

from __future__ import annotations

import argparse
import collections
import importlib
import inspect
import json
import os
import pkgutil
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from types import ModuleType

from pathfusion.server.base_classes import ModulePath, Origin, origin_of
from pathfusion.server.code2vec import suggest_for_document
from pathfusion.server.parsing import Document
from pathfusion.server.rename_safety import module_names, safe_suggestion

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
    parser.add_argument("--packages", default="", help="comma-separated installed packages: the rules alone")
    parser.add_argument("--json", type=Path, default=None, help="also write the counts here")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    if args.packages:
        wrong: list[str] = []
        rules = rule_counts([name for name in args.packages.split(",") if name], wrong)
        print("\n".join(["methods the rules keep or miss wrongly (as served):", *wrong]))
        print(json.dumps(rules, indent=1))
        if args.json is not None:
            args.json.write_text(json.dumps(rules, indent=1) + "\n")
        return 0
    model, _ = load_predictor("default", args.models, "cpu")
    counts: collections.Counter[str] = collections.Counter()
    offered_names: list[str] = []
    for name in MODULES:
        try:
            module = importlib.import_module(name)
            path = Path(inspect.getsourcefile(module) or "")
            text = path.read_text(encoding="utf-8")
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
                safe_suggestion(found, text, func, 5, origin_of(str(path))).worth_offering())
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


def rule_counts(packages: Sequence[str], listing: list[str] | None = None) -> dict[str, dict[str, int]]:
    """The rules' counts over every module of ``packages`` (see the module docstring), as
    served (``served``) and standard library only (``stdlib_only``); the methods the served
    rules keep or miss wrongly are appended to ``listing``."""
    stdlib = Origin(None, ModulePath(tuple(p for p in ModulePath.environment().roots if "-packages" not in p)))
    counts: dict[str, collections.Counter[str]] = {"served": collections.Counter(), "stdlib_only": collections.Counter()}
    for module in list(_modules(packages)):  # all imported first: their subclasses are then loaded
        path = Path(inspect.getsourcefile(module) or "")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        names = module_names(text)
        if not names.compiled:
            continue
        top = sys.modules[_package_of(module.__name__, packages)]
        served = replace(origin_of(str(path)), project=str(Path(inspect.getsourcefile(top) or "").parent))  # its own project
        for func in Document(text).functions():
            parts = func.qualname.split(".")
            cls = vars(module).get(parts[0]) if len(parts) == 2 else None
            if not inspect.isclass(cls) or cls.__module__ != module.__name__ or func.name.startswith("__") \
                    or func.name not in vars(cls):
                continue
            owner = next((base for base in cls.__mro__[1:] if _declares(base, func.name)), None)
            overridden = any(func.name in vars(sub) for sub in _subclasses(cls))
            where = "" if owner is None else _where(owner.__module__, module.__name__, packages)
            line = func.name_span.start.line + 1
            for mode, origin in (("served", served), ("stdlib_only", stdlib)):
                kept = names.fixed_by(func.name, line, origin) is not None
                count = counts[mode]
                if listing is not None and mode == "served" and kept != (owner is not None or overridden):
                    listing.append(f"{'kept' if kept else 'missed'} {module.__name__}:{func.qualname}"
                                   f" (base: {owner.__module__ + '.' + owner.__qualname__ if owner else '-'})")
                count["methods"] += 1
                if owner is not None:
                    count[f"overriding, base in {where}"] += 1
                    count[f"overriding, base in {where}, kept"] += kept
                elif overridden:
                    count["overridden only"] += 1
                    count["overridden only, kept"] += kept
                else:
                    count["neither, kept (wrongly)"] += kept
    return {mode: dict(sorted(count.items())) for mode, count in counts.items()}


def _modules(packages: Sequence[str]) -> Iterator[ModuleType]:
    """Every importable module of ``packages`` (a module that fails to import is skipped)."""
    sys.argv = sys.argv[:1]  # some modules read the command line on import
    with open(os.devnull, "w") as quiet:
        for name in packages:
            try:
                top = importlib.import_module(name)
            except Exception:  # any import may fail; the package is then skipped
                continue
            yield top
            for info in pkgutil.walk_packages(getattr(top, "__path__", []), prefix=f"{name}.", onerror=lambda _: None):
                stdout, sys.stdout = sys.stdout, quiet
                try:
                    found: ModuleType | None = importlib.import_module(info.name)
                except BaseException:  # SystemExit and the like from a module's import
                    found = None
                finally:
                    sys.stdout = stdout
                if found is not None:
                    yield found


def _package_of(module: str, packages: Sequence[str]) -> str:
    """The measured package that ``module`` belongs to (``module`` itself when none)."""
    return next((p for p in packages if module == p or module.startswith(p + ".")), module)


def _declares(cls: type, name: str) -> bool:
    """Whether ``cls`` defines ``name`` or declares it (``get_filters: Any``: an interface
    that subclasses fill in, which its other methods call)."""
    annotations = vars(cls).get("__annotations__", {})
    return name in vars(cls) or (isinstance(annotations, dict) and name in annotations)


def _subclasses(cls: type) -> Iterator[type]:
    try:
        direct: list[type] = cls.__subclasses__()
    except TypeError:  # ``type`` itself
        return
    for sub in direct:
        yield sub
        yield from _subclasses(sub)


def _where(owner: str, module: str, packages: Sequence[str]) -> str:
    if owner == module:
        return "the same file"
    if owner == "builtins":
        return "builtins"
    top = _package_of(module, packages)
    if owner == top or owner.startswith(top + "."):
        return "another file of the package"
    return "the standard library" if owner.partition(".")[0] in sys.stdlib_module_names else "another package"


if __name__ == "__main__":
    raise SystemExit(main())
