"""The index's test doubles: a deterministic fake embedder and a small workspace of
six functions in three files (the index, concurrency and LSP search tests)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

FILES = {
    "config.py": '''
def load_config(path):
    """Read the settings file (JSON) and return it as a dict."""
    with open(path) as fh:
        return json.load(fh)


def save_config(path, data):
    with open(path, "w") as fh:
        json.dump(data, fh)
''',
    "net/http.py": '''
def download_file(url, target):
    """Fetch a URL over HTTP and write the response body to a local file."""
    with urllib.request.urlopen(url) as resp, open(target, "wb") as out:
        shutil.copyfileobj(resp, out)
''',
    "mathutil.py": '''
class Stats:
    def mean(self, values):
        return sum(values) / len(values)


def is_prime(n):
    if n < 2:
        return False
    return all(n % d for d in range(2, int(n ** 0.5) + 1))


def reverse_words(sentence):
    return " ".join(reversed(sentence.split()))
''',
}


class FakeEmbedder:
    """Deterministic unit vectors from a hash of the text; counts what it embeds."""

    def __init__(self, model_id: str = "fake", dim: int = 32) -> None:
        self._model_id = model_id
        self._dim = dim
        self.texts: list[str] = []

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def model_id(self) -> str:
        return self._model_id

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        self.texts.extend(texts)
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for i, text in enumerate(texts):
            seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
            vector = np.random.default_rng(seed).standard_normal(self._dim)
            out[i] = vector / np.linalg.norm(vector)
        return out


def write_workspace(root: Path) -> Path:
    """:data:`FILES` under ``root``, plus a git-ignored ``ignored.py``."""
    for rel, text in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.lstrip("\n"))
    (root / ".gitignore").write_text("ignored.py\n")
    (root / "ignored.py").write_text("def hidden():\n    pass\n")
    return root
