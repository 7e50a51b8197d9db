"""Query side of code search at run time (docs/design.md §4, paper §3.2): text → query
vector.

A search query ("read a json config file") is turned into lowercase subtokens by
:func:`tokenize_query`, mapped to ids by a :class:`QueryVocab` and encoded by the exported
query encoder graph (``query_encoder.onnx``, written by
:func:`pathfusion.model_export.query_encoder.export_query_encoder`) into an L2-normalised vector of the
search space that the code side is projected into.

Why the tokeniser lives here and not in ``model_export``: the vocabulary is built from the
training queries (docstrings) with *this* function and the server tokenises the user's query
with it again; two copies would drift apart and silently map words to ``<UNK>``.  Its rules
are part of the model's identity, so the vocabulary file records
:data:`QUERY_TOKENIZER_VERSION` and a mismatch is refused at load time.

Tokeniser rules (version ``pf-query-1``):

* accents are folded (NFKD, combining marks dropped: ``café`` → ``cafe``), because queries
  are typed by people and identifiers are mostly ASCII;
* the text is cut into word runs (``\\w+``), and every run is split like an identifier
  (:func:`pathfusion.server.paths.split_subtokens`: ``_``, camelCase and digit boundaries), so a query
  that names code (``getHTTPResponse``) meets the same subtokens as the code does:
  ``"getHTTPResponse returns JSON"`` → ``get http response returns json``;
* punctuation is dropped, subtokens are lowercased, at most :data:`MAX_QUERY_TOKENS` are kept
  (the encoder's positional embeddings stop there and CodeSearchNet caps queries likewise).

No torch here: the server needs only numpy and onnxruntime.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import write_atomic
from .models import ModelError
from .onnx_session import create_session
from .paths import split_subtokens

MAX_QUERY_TOKENS = 32
"""Most subtokens a query keeps (the rest is cut off)."""
QUERY_TOKENIZER_VERSION = "pf-query-1"
"""Identity of :func:`tokenize_query`'s rules; bump it whenever they change."""
VOCAB_FORMAT = 1
PAD, UNK = "<PAD>", "<UNK>"
INPUT_NAMES = ("ids", "mask")
OUTPUT_NAME = "query_vector"

_WORD_RE = re.compile(r"\w+")


def _fold_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def tokenize_query(text: str, max_tokens: int = MAX_QUERY_TOKENS) -> list[str]:
    """The lowercase subtokens of a search query (rules in the module docstring)."""
    tokens: list[str] = []
    for word in _WORD_RE.findall(_fold_accents(text)):
        for part in split_subtokens(word):
            if part:
                tokens.append(part)
                if len(tokens) >= max_tokens:
                    return tokens
    return tokens


class QueryVocab:
    """Query subtoken vocabulary: id 0 is ``<PAD>``, 1 is ``<UNK>``, then the known subtokens.

    Treated as immutable: the index is built once, and the encoder's embedding table has
    exactly ``len(vocab)`` rows, so changing the list after training would shift every id.
    """

    __slots__ = ("_index", "_tokens")

    def __init__(self, tokens: Iterable[str]) -> None:
        items = list(tokens)
        if len(items) < 2 or items[0] != PAD or items[1] != UNK:
            raise ValueError(f"a query vocabulary starts with {PAD!r}, {UNK!r}; got {items[:2]!r}")
        if not all(isinstance(item, str) and item for item in items):
            raise ValueError("query vocabulary entries must be non-empty strings")
        index = {item: i for i, item in enumerate(items)}
        if len(index) != len(items):
            raise ValueError("query vocabulary has duplicate entries")
        self._tokens = items
        self._index = index

    @property
    def tokens(self) -> list[str]:
        """The entries by id (a copy: the vocabulary itself never changes)."""
        return list(self._tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QueryVocab) and self._tokens == other._tokens

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"QueryVocab({len(self._tokens)} tokens)"

    def id(self, token: str) -> int:
        """The id of ``token`` (1 = ``<UNK>`` when it is not in the vocabulary)."""
        return self._index.get(token, 1)

    def encode(
        self, texts: Sequence[str], max_tokens: int = MAX_QUERY_TOKENS
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids int64 [B, T], mask float32 [B, T]) of ``texts``, right-padded with ``<PAD>``.

        ``T`` is the longest query (at least 1).  A query with no subtoken gets a single
        ``<UNK>`` with mask 1, so that every row has a real token and the encoder output is
        defined (it then stands for "an unknown query", not for a zero vector).
        """
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of queries, not one string")
        rows = [[self.id(t) for t in tokenize_query(text, max_tokens)] or [1] for text in texts]
        width = max([1, *(len(row) for row in rows)])
        ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.float32)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1.0
        return ids, mask

    def to_json(self) -> dict[str, Any]:
        """The JSON object saved beside the graph (tokeniser identity included)."""
        return {
            "format": VOCAB_FORMAT,
            "tokenizer": QUERY_TOKENIZER_VERSION,
            "max_tokens": MAX_QUERY_TOKENS,
            "tokens": list(self._tokens),
        }

    @classmethod
    def from_json(cls, data: Any, source: str = "query vocabulary") -> QueryVocab:
        """The vocabulary of :meth:`to_json`'s object; :class:`ModelError` when it is not one
        or was built with other tokeniser rules."""
        if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
            raise ModelError(f"{source} is not a query vocabulary (a JSON object with "
                             f"\"tokens\"); re-export the query encoder")
        if data.get("format") != VOCAB_FORMAT:
            raise ModelError(f"{source} has format {data.get('format')!r}, this pathfusion "
                             f"reads format {VOCAB_FORMAT}; re-export the query encoder")
        if data.get("tokenizer") != QUERY_TOKENIZER_VERSION:
            raise ModelError(f"{source} was built with query tokenizer {data.get('tokenizer')!r}, "
                             f"this pathfusion uses {QUERY_TOKENIZER_VERSION!r}; retrain and "
                             f"re-export the query encoder")
        try:
            return cls(data["tokens"])
        except ValueError as exc:
            raise ModelError(f"{source}: {exc}; re-export the query encoder") from exc

    def save(self, path: Path) -> None:
        """Write the vocabulary as JSON, atomically (a reader never sees half a file)."""
        data = json.dumps(self.to_json(), ensure_ascii=False).encode("utf-8")
        write_atomic(Path(path), data, mode=0o644)

    @classmethod
    def load(cls, path: Path) -> QueryVocab:
        """The vocabulary saved by :meth:`save`; :class:`ModelError` if missing or corrupt."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ModelError(f"{path} not found; export the query encoder") from exc
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ModelError(f"{path}: unreadable query vocabulary ({exc}); "
                             f"re-export the query encoder") from exc
        return cls.from_json(data, str(path))


class QueryEncoderRuntime:
    """The exported query encoder in onnxruntime: queries → L2-normalised vectors."""

    def __init__(self, session: Any, vocab: QueryVocab, dim: int, source: Path) -> None:
        self.session = session
        self.vocab = vocab
        self._dim = dim
        self.source = source

    @property
    def dim(self) -> int:
        """Width of the query vectors (the search space)."""
        return self._dim

    @classmethod
    def load(
        cls,
        folder: Path,
        onnx_name: str = "query_encoder.onnx",
        vocab_name: str = "query_vocab.json",
        providers: Sequence[str] | None = None,
        *,
        threads: int = 1,
    ) -> QueryEncoderRuntime:
        """Open ``folder/onnx_name`` with its vocabulary ``folder/vocab_name``.

        ``providers`` defaults to the CPU: a query is a few dozen ids, far too little work
        to pay for a GPU round trip.  The graph is run once on the largest id of the
        vocabulary, so a graph and a vocabulary that do not belong together (or a graph
        onnxruntime cannot run) fail here with :class:`ModelError`, not on the first search.
        """

        folder = Path(folder)
        vocab = QueryVocab.load(folder / vocab_name)
        onnx_path = folder / onnx_name
        if not onnx_path.is_file():
            raise ModelError(f"{onnx_path} not found; export the query encoder")
        chosen = list(providers) if providers is not None else ["CPUExecutionProvider"]
        session = create_session(onnx_path, chosen, threads, fix="re-export the query encoder")
        names = [i.name for i in session.get_inputs()]
        outputs = [o.name for o in session.get_outputs()]
        if sorted(names) != sorted(INPUT_NAMES) or OUTPUT_NAME not in outputs:
            raise ModelError(f"{onnx_path} has inputs {names} and outputs {outputs}, expected "
                             f"inputs ids, mask and output {OUTPUT_NAME}; is it a query encoder?")
        probe_ids = np.array([[len(vocab) - 1, 1]], dtype=np.int64)
        probe_mask = np.ones((1, 2), dtype=np.float32)
        try:
            (probe,) = session.run([OUTPUT_NAME], {"ids": probe_ids, "mask": probe_mask})
        except Exception as exc:
            raise ModelError(f"{onnx_path} cannot encode with {folder / vocab_name} "
                             f"({len(vocab)} tokens): {exc}; the graph and the vocabulary do "
                             f"not belong together, re-export the query encoder") from exc
        probe = np.asarray(probe)
        if probe.ndim != 2 or probe.shape[0] != 1 or not np.all(np.isfinite(probe)):
            raise ModelError(f"{onnx_path} returned {probe.shape} for one query, expected "
                             f"[1, dim] finite values; re-export the query encoder")
        return cls(session, vocab, int(probe.shape[1]), onnx_path)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [len(texts), dim] L2-normalised query vectors (one batch, padded)."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of queries, not one string")
        if len(texts) == 0:
            return np.zeros((0, self._dim), dtype=np.float32)
        ids, mask = self.vocab.encode(texts)
        (vectors,) = self.session.run([OUTPUT_NAME], {"ids": ids, "mask": mask})
        vectors = np.asarray(vectors, dtype=np.float32)
        # The graph normalises already; doing it again in float32 here keeps the contract
        # (unit vectors for the inner-product index) even for a hand-made graph.
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
