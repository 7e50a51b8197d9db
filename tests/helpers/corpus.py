"""A tiny real code2vec corpus: four easy names, distinct code shapes (training and the
train → export → evaluate tests)."""

from __future__ import annotations

import gzip
import json
import random
from dataclasses import asdict
from pathlib import Path

TEMPLATES = {
    "get|value": "def get_value(self):\n    value = self._data.get('{k}')\n    return value\n",
    "set|value": "def set_value(self, value):\n    self._data['{k}'] = value\n    self.changed = True\n",
    "is|empty": "def is_empty(self):\n    count = len(self.items_{k})\n    return count == 0\n",
    "close": "def close(self):\n    if self.handle_{k} is not None:\n        self.handle_{k}.close()\n",
}


def write_corpus(folder: Path, per_label: int) -> None:
    """``train``/``valid``/``test`` splits of :data:`TEMPLATES` (``per_label`` training
    functions per name, 6 in the other splits), as the corpus builder writes them."""
    from pathfusion.model_export.corpus import extract_file

    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", per_label), ("valid", 6), ("test", 6)):
        with gzip.open(folder / f"{split}.jsonl.gz", "wt") as fh:
            for template in TEMPLATES.values():
                for i in range(n):
                    code = template.format(k=f"{split}{i}{rng.randint(0, 9)}")
                    for record in extract_file(f"p-{split}", f"m{i}.py", code.encode()):
                        fh.write(json.dumps(asdict(record)) + "\n")
