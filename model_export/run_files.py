"""What every resumable training run writes into its run folder, written one way.

Why shared: code2vec's and the embedder's runs are resumed across sessions; both append
events to ``log.jsonl`` (the learning curves in ``docs/results.md`` are read from it) and
replace checkpoints atomically, so that a run killed mid-write resumes from the previous
checkpoint instead of a truncated one.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch


def log_event(run: Path, entry: dict[str, Any], echo: bool = True) -> None:
    """Append ``entry`` (time-stamped) to ``run/log.jsonl``; ``echo`` also prints it to stderr."""
    entry = {"time": round(time.time(), 1), **entry}
    with open(run / "log.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")
    if echo:
        print(json.dumps(entry), file=sys.stderr, flush=True)


def atomic_torch_save(obj: object, path: Path) -> None:
    """``torch.save`` to a temp file beside ``path``, then rename over it."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
