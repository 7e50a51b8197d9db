"""Shared output of the benchmark scripts: a two-column table on stdout and a JSON file."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def print_rows(rows: Iterable[tuple[str, Any]], width: int = 40) -> None:
    for key, value in rows:
        print(f"{key:>{width}}: {value}")


def save_json(result: dict[str, Any], path: Path) -> None:
    """Write ``result`` (indented JSON) to ``path`` and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
