"""Path contexts as integer ids: the code2vec source of the naming head's fusions (issue 11).

Why here, torch-free: the server extracts a hovered function's contexts and turns them into
ids exactly as training did — one extractor (:func:`pathfusion.server.paths.contexts_of_text`
over the masked source the naming head reads) and one vocabulary file, ``contexts.json.gz``,
saved beside the naming head.  A context is ``(start token, path, end token)``; the ids are
rows of two embedding tables (tokens, paths), 0 for padding and 1 for anything outside the
vocabulary.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .paths import MAX_CONTEXTS, contexts_of_text

VOCAB_FILE = "contexts.json.gz"
PAD_ID, UNK_ID = 0, 1
VOCAB_FORMAT = "pathfusion-contexts-1"


def split_context(text: str) -> tuple[str, str, str]:
    """``"start,path,end"`` → its three parts (paths hold no comma; a token might)."""
    start, rest = text.split(",", 1)
    path, end = rest.rsplit(",", 1)
    return start, path, end


@dataclass
class ContextCounts:
    """How often each token and path occurs in a set of functions' contexts."""

    tokens: Counter[str] = field(default_factory=Counter)
    paths: Counter[str] = field(default_factory=Counter)

    def add(self, contexts: Iterable[str]) -> None:
        for text in contexts:
            start, path, end = split_context(text)
            self.tokens[start] += 1
            self.tokens[end] += 1
            self.paths[path] += 1


def _commonest(counts: Counter[str], size: int) -> list[str]:
    return [item for item, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:size]]


@dataclass(frozen=True)
class ContextVocab:
    """Token and path vocabularies (id 0 padding, 1 unknown) and how many contexts a function keeps."""

    tokens: tuple[str, ...]
    paths: tuple[str, ...]
    max_contexts: int = MAX_CONTEXTS

    token_ids: Mapping[str, int] = field(init=False, repr=False, compare=False)
    """Each known token's id (derived from ``tokens``; a plain dict, so that process pools can
    pickle the vocabulary)."""
    path_ids: Mapping[str, int] = field(init=False, repr=False, compare=False)
    """Each known path's id (derived from ``paths``)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "token_ids", {t: i + 2 for i, t in enumerate(self.tokens)})
        object.__setattr__(self, "path_ids", {p: i + 2 for i, p in enumerate(self.paths)})

    @classmethod
    def build(cls, counts: ContextCounts, tokens: int, paths: int, max_contexts: int = MAX_CONTEXTS) -> ContextVocab:
        """The ``tokens`` / ``paths`` commonest (ties broken by the string, so a rebuild is identical)."""
        return cls(tuple(_commonest(counts.tokens, tokens)), tuple(_commonest(counts.paths, paths)), max_contexts)

    def table_sizes(self) -> tuple[int, int]:
        """Rows of the token and path embedding tables (padding and unknown included)."""
        return len(self.tokens) + 2, len(self.paths) + 2

    def encode(self, contexts: Sequence[str | tuple[str, str, str]], dtype: Any = np.uint16) -> np.ndarray:
        """``[C, 3]`` ids (start, path, end) of ``contexts`` — as text (``"tok,path,tok"``) or
        triples (:class:`~pathfusion.server.paths.Context`).  uint16 by default, as context
        packs store them (then each table holds at most 65,536 rows); code2vec's runtime,
        whose vocabularies may be larger, asks for int64."""
        if np.dtype(dtype) == np.uint16 and max(self.table_sizes()) > 65536:
            raise ValueError("context ids stored as uint16 allow at most 65,534 entries per vocabulary")
        token_ids, path_ids = self.token_ids, self.path_ids
        out = np.zeros((len(contexts), 3), dtype=dtype)
        for row, context in enumerate(contexts):
            start, path, end = split_context(context) if isinstance(context, str) else context
            out[row] = (token_ids.get(start, UNK_ID), path_ids.get(path, UNK_ID), token_ids.get(end, UNK_ID))
        return out

    def of_source(self, masked_source: str, dtype: Any = np.uint16) -> np.ndarray:
        """The ids of the contexts of the function in ``masked_source`` (its name already
        masked), as training extracted them: the first function defined there, parsed alone."""
        return self.encode(contexts_of_text(masked_source, self.max_contexts), dtype)

    def to_json(self) -> dict[str, object]:
        return {"format": VOCAB_FORMAT, "max_contexts": self.max_contexts, "tokens": list(self.tokens),
                "paths": list(self.paths)}

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        # mtime=0: the same vocabulary gives the same bytes (the export's hashes stay put)
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as fh:
            fh.write(json.dumps(self.to_json(), ensure_ascii=False).encode("utf-8"))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> ContextVocab:
        try:
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, EOFError, ValueError) as exc:
            raise ValueError(f"{path}: not a context vocabulary ({exc})") from exc
        if not isinstance(data, dict) or data.get("format") != VOCAB_FORMAT:
            raise ValueError(f"{path}: not a {VOCAB_FORMAT} context vocabulary")
        return cls(tuple(data["tokens"]), tuple(data["paths"]), int(data["max_contexts"]))
