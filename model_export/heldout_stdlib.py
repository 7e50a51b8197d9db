"""``python -m pathfusion.model_export.heldout_stdlib [OUT]``: the interpreter's standard library as
held-out projects for ``pathfusion eval … --projects`` (default ``data/heldout/stdlib``).

Why the standard library: none of it is in the corpus (PyPI projects only), it is real
code with docstrings, and every machine has it.  Each top-level package becomes one project
folder; the loose modules together form one more (``modules/stdlib_modules``).  Tests,
GUI demos and vendored or generated code are left out (the corpus rules of
``pathfusion eval`` skip test files too).
"""

from __future__ import annotations

import shutil
import sys
import sysconfig
from pathlib import Path

SKIPPED = {"site-packages", "test", "tests", "idlelib", "__pycache__", "lib2to3", "ensurepip",
           "turtledemo", "tkinter"}


def build(out: Path, stdlib: Path | None = None) -> int:
    """Copy the packages and modules of ``stdlib`` into ``out``; returns the project count."""
    stdlib = stdlib or Path(sysconfig.get_paths()["stdlib"])
    out.mkdir(parents=True, exist_ok=True)
    projects = 0
    for package in sorted(stdlib.iterdir()):
        if package.name in SKIPPED or package.name.startswith("config-") or not (package / "__init__.py").is_file():
            continue
        target = out / package.name / package.name
        if not target.exists():
            shutil.copytree(package, target, ignore=shutil.ignore_patterns("__pycache__"))
        projects += 1
    modules = out / "modules" / "stdlib_modules"
    modules.mkdir(parents=True, exist_ok=True)
    for module in sorted(stdlib.glob("*.py")):
        shutil.copy2(module, modules / module.name)
    return projects + 1


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("data/heldout/stdlib")
    print(f"{build(target)} projects in {target}")
