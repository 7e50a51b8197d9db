"""The wheel installs one top-level package, ``pathfusion``: nothing named ``server`` or
``model_export`` that could collide with another project's packages, the corpus manifest
travels with ``pathfusion.model_export``, and the installed copy serves from outside the
checkout (the symbolic links ``pathfusion/server`` and ``pathfusion/model_export`` are followed
when the wheel is built)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def build_wheel(out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check",
                    "-w", str(out), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = out.glob("pathfusion-*.whl")
    return wheel


def test_the_wheel_installs_only_pathfusion_and_serves_outside_the_checkout(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path / "wheel")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"pathfusion", wheel.name.split("-py")[0] + ".dist-info"}
    for needed in ("pathfusion/__main__.py", "pathfusion/server/lsp.py", "pathfusion/server/name_generator.py",
                   "pathfusion/model_export/train_naming.py", "pathfusion/model_export/corpus_manifest.txt"):
        assert needed in names, needed

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check",
                    "--target", str(target), str(wheel)], check=True, capture_output=True, timeout=300)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "server").mkdir()  # a workspace's own package of the old generic name
    (outside / "server" / "__init__.py").write_text("raise ImportError('the workspace shadowed pathfusion')\n")
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = ("import pathfusion, pathfusion.server.lsp, pathfusion.server.cli as cli\n"
            "print(pathfusion.__file__)\n"
            "from pathfusion.model_export.corpus import MANIFEST\n"
            "print(MANIFEST.is_file())\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=outside, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    where, manifest = done.stdout.split()
    assert Path(where).is_relative_to(target) and manifest == "True"
    help_text = subprocess.run([sys.executable, "-m", "pathfusion", "--help"], cwd=outside, env=env,
                               capture_output=True, text=True, timeout=120)
    assert help_text.returncode == 0 and "serve" in help_text.stdout, help_text.stderr
