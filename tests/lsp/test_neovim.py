"""Neovim as the client, headless end to end: Debian's nvim 0.7
starts the real server with ``vim.lsp.start_client``, hovers, applies a resolved rename code
action across two files and runs ``pathfusion.search`` (tests/nvim/e2e.lua), against the tiny
code2vec model and the real int8 MiniLM embedder in a tmp models folder.

``make test`` installs nvim; without it this test fails, unless PATHFUSION_SKIP_NVIM=1."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.rename_checks import assert_clean_rename

SCRIPT = Path(__file__).resolve().parents[1] / "nvim" / "e2e.lua"
TIMEOUT_S = 180

LIB = '''import json


def do_it(path):
    with open(path) as fh:
        return json.loads(fh.read())


def is_prime(n):
    if n < 2:
        return False
    return all(n % d for d in range(2, int(n ** 0.5) + 1))
'''

APP = '''from lib import do_it


def main():
    return do_it("settings.json")
'''

NAME_LINE, NAME_CHARACTER = 3, 6  # inside `do_it` in LIB
EXACT_QUERY, NL_QUERY = "do_it", "check whether a number is prime"


@pytest.fixture(scope="session")  # session scope, as the models': checked before they are built
def nvim() -> str:
    if os.environ.get("PATHFUSION_SKIP_NVIM") == "1":
        pytest.skip("PATHFUSION_SKIP_NVIM=1")
    found = shutil.which("nvim")
    if found is None:
        pytest.fail("nvim is not installed: run `make nvim` (apt-get install neovim) "
                    "or set PATHFUSION_SKIP_NVIM=1 to skip the Neovim end-to-end test")
    return found


def run_nvim(nvim: str, tmp_path: Path, workspace: Path, models: Path) -> dict[str, Any]:
    out = tmp_path / "result.json"
    home = tmp_path / "nvim-home"  # lsp.log and any state stay in tmp
    env = {
        **os.environ,
        "PATHFUSION_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
        "XDG_CACHE_HOME": str(home / "cache"), "XDG_STATE_HOME": str(home / "state"),
        "XDG_DATA_HOME": str(home / "data"), "XDG_CONFIG_HOME": str(home / "config"),
        "PATHFUSION_E2E_CMD": json.dumps([sys.executable, "-m", "pathfusion", "serve", "--stdio"]),
        "PATHFUSION_E2E_ROOT": str(workspace), "PATHFUSION_E2E_FILE": str(workspace / "lib.py"),
        "PATHFUSION_E2E_OUT": str(out), "PATHFUSION_E2E_MODELS": str(models),
        "PATHFUSION_E2E_LINE": str(NAME_LINE), "PATHFUSION_E2E_CHARACTER": str(NAME_CHARACTER),
        "PATHFUSION_E2E_QUERIES": json.dumps([EXACT_QUERY, NL_QUERY]),
        "PATHFUSION_E2E_TIMEOUT_MS": str((TIMEOUT_S - 20) * 1000),
    }
    command = [nvim, "--headless", "--clean", "-n", "-i", "NONE", "-u", "NONE",
               "-c", f"luafile {SCRIPT}"]
    try:
        proc = subprocess.run(command, cwd=workspace, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"nvim did not exit within {TIMEOUT_S} s: {exc.stderr!r}{lsp_log(home)}")
    result = json.loads(out.read_text()) if out.exists() else {"error": "no result file"}
    assert proc.returncode == 0 and "error" not in result, (
        f"nvim exited {proc.returncode}: {result.get('error')}\n"
        f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}{lsp_log(home)}")
    assert isinstance(result, dict)
    return result


def lsp_log(home: Path) -> str:
    logs = sorted(home.glob("**/lsp.log"))
    return f"\nlsp.log: {logs[0].read_text()[-3000:]}" if logs else ""


def test_neovim_hover_code_action_and_search(nvim: str, search_models: Path, tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "lib.py").write_text(LIB)
    (workspace / "app.py").write_text(APP)

    result = run_nvim(nvim, tmp_path, workspace, search_models)

    # the index was ready before searching; exact identifier first, natural language answers
    [folder] = result["status"]["index"]["folders"]
    assert folder["state"] == "ready" and folder["functions"] == 3
    exact = result["searches"][EXACT_QUERY]
    assert exact and exact[0]["qualname"] == "do_it"
    assert exact[0]["uri"] == (workspace / "lib.py").as_uri()
    found = result["searches"][NL_QUERY]
    assert isinstance(found, list) and 1 <= len(found) <= 3
    assert found[0]["qualname"] == "is_prime" and found[0]["snippet"].startswith("def is_prime(n):")

    # hover: ranked suggestions with percentages
    hover = result["hover"]
    assert isinstance(hover, str) and "Current name `do_it`" in hover
    assert re.search(r"^1\. `\w+` — \d+\.\d%", hover, re.MULTILINE), hover

    # the rename code action, resolved and applied by Neovim, written to disk by :wall
    new_name = result["action"]["new_name"]
    assert result["action"]["title"] == f"Rename `do_it` → `{new_name}`"
    assert new_name.isidentifier() and new_name != "do_it"
    assert sorted(result["edited_uris"]) == sorted(
        (workspace / name).as_uri() for name in ("app.py", "lib.py"))
    lib, app = (workspace / "lib.py").read_text(), (workspace / "app.py").read_text()
    assert lib == LIB.replace("def do_it(", f"def {new_name}(")
    assert app == APP.replace("do_it", new_name)
    assert_clean_rename({"lib.py": LIB, "app.py": APP}, {"lib.py": lib, "app.py": app}, "do_it", new_name)
