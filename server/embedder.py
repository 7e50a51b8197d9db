"""The LLM embedder at run time (docs/design.md §4): text → L2-normalised sentence embedding.

Two backends behind one :class:`Embedder` protocol (``embed(texts) -> float32 [n, dim]``,
``dim``, ``model_id``):

* :class:`OnnxEmbedder` (default) — the graph written by ``pathfusion export embedder``
  (all-MiniLM-L6-v2; mean pooling and normalisation are inside the graph), the
  ``tokenizers`` fast tokenizer and onnxruntime.  It never imports torch.  The int8 graph is
  the default on CPU; on CUDA the fp32 graph is preferred by :func:`load_embedder`, because
  dynamically quantised ``MatMulInteger`` nodes mostly run on the CPU there.
* :class:`~pathfusion.server.embedder_transformers.TransformersEmbedder` — an explicit, optional
  backend for any local Hugging Face folder (``llmBackend: transformers``).  torch and
  transformers come with the ``train`` extra; its module is imported only when the backend
  is selected (:func:`load_embedder`), and it imports them only then, so the server and the
  ONNX backend never load torch.  Selected without them, it raises :class:`EmbedderError`
  naming the extra.

Batching: texts are tokenised once, **sorted by token length**, cut into batches padded to
their own longest text, and the embeddings are put back in the caller's order.  Similar
lengths per batch waste little compute on padding; the result equals embedding each text
alone (the attention mask keeps padding out of every token and of the pooling).  A
dynamically quantised int8 graph is the exception: its activations are quantised with one
scale per batch, so it runs one text at a time to keep every vector independent of its
batch (see :meth:`OnnxEmbedder.load`); the shipped embedder is such a graph, its activation
outliers moved into the weights first (``model_export/smooth_quant.py``).  An export that
stores only the weights in int8 (``int8_storage: rows``) computes in fp32 and batches like
the fp32 graph.

Every embedding is L2-normalised.  User mistakes (a missing folder, one without
``config.json``, a model that cannot be loaded, a bad backend name) raise
:class:`EmbedderError` with a message that says what to do; it is a
:class:`~pathfusion.server.models.ModelError`, so callers that already report model errors catch it.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .models import ModelError, load_manifest, model_entry, model_file, providers
from .onnx_session import create_session

log = logging.getLogger(__name__)

BACKENDS = ("onnx", "transformers")
STATES_NAME = "token_states"
"""The export's second output (last hidden states), read by the generative naming head."""
ENTRY_NAME = "embedder"
TRANSFORMERS_NAMES = frozenset({"TransformersEmbedder", "is_decoder_config", "POOLINGS",
                                "DEFAULT_MAX_LENGTH", "CAUSAL_LM_TYPES"})
"""What :mod:`pathfusion.server.embedder_transformers` defines and this module gives too (lazily: it is
the optional backend)."""


class EmbedderError(ModelError):
    """The embedder cannot be loaded or used; the message says why and what to do."""


@runtime_checkable
class Embedder(Protocol):
    """Text → L2-normalised float32 embeddings ``[len(texts), dim]``, in the input order."""

    @property
    def dim(self) -> int: ...

    @property
    def model_id(self) -> str: ...

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray: ...


def _check_batch_size(batch_size: int) -> int:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise EmbedderError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


def _sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (stable for equal lengths)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise EmbedderError("embed() takes a sequence of texts, not a single string")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise EmbedderError(f"text {i} is a {type(text).__name__}, not a str")
    return texts


# --------------------------------------------------------------------------- ONNX


class _Identified:
    """``dim`` and ``model_id`` of a concrete embedder, read-only for callers."""

    _dim: int
    _model_id: str

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def model_id(self) -> str:
        return self._model_id


class OnnxEmbedder(_Identified):
    """The exported embedder graph (see ``model_export/export_embedder.py``) in onnxruntime."""

    def __init__(self, session: Any, tokenizer: Any, *, dim: int, model_id: str, pad_id: int = 0,
                 path: Path | None = None, one_per_run: bool = False) -> None:
        self._session = session
        self._tokenizer = tokenizer
        self._dim = dim
        self._model_id = model_id
        self._pad_id = pad_id
        self.path = path
        self._inputs = [node.name for node in session.get_inputs()]
        unknown = set(self._inputs) - {"input_ids", "attention_mask", "token_type_ids"}
        if unknown or "input_ids" not in self._inputs:
            raise EmbedderError(f"{path}: unexpected graph inputs {self._inputs}; re-export the embedder")
        self._output = session.get_outputs()[0].name
        self._states = next((node.name for node in session.get_outputs() if node.name == STATES_NAME), None)
        # Run each text alone (batch of 1), whatever ``batch_size`` says; see :meth:`load`.
        self.one_per_run = one_per_run

    @classmethod
    def load(cls, models_dir: Path | str | None = None, device: str = "auto", quantized: bool = True,
             *, threads: int | None = None, verify: bool = True) -> OnnxEmbedder:
        """The ``embedder`` model of the models folder's manifest.

        ``quantized`` picks the int8 graph (else fp32); when the export has only the other
        one, that one is used with a warning.  ``threads`` sets onnxruntime's intra-op threads
        (None: its default).  ``verify`` checks the files' sha256 against the manifest.

        A dynamically quantised int8 graph (``int8_storage: dynamic`` in its config; exports
        without the key are dynamic) embeds one text per run: it picks one activation
        scale per tensor, i.e. per *batch*, so a text's int8 embedding would depend on the
        texts batched with it (cosine down to ≈ 0.96 for very short texts), which breaks
        "same function → same vector" and the content-hash cache.  On the CPU every graph
        runs one text per run: it costs nothing for the dynamic int8 graph and *saves* time for
        the fp32-compute ones, whose batches pay for padding to their longest text and for
        attention over it — on 150 standard-library functions with two threads, one text
        per run embedded 56–65 functions/s against 38–48 in length-sorted batches of 32
        (``benchmarks/embedder_threads.py``, docs/performance.md).  On CUDA, batches.
        """
        try:
            manifest = load_manifest(models_dir, verify=verify, models=(ENTRY_NAME,))
            folder = Path(models_dir) if models_dir is not None else None
            if folder is None:
                from .models import default_models_dir

                folder = default_models_dir()
            entry = model_entry(manifest, ENTRY_NAME, folder)
            config_path = model_file(folder, str(entry.get("config") or ""))
        except EmbedderError:
            raise
        except ModelError as exc:
            raise EmbedderError(str(exc)) from exc
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
            files = config["files"]
            dim = int(config["dim"])
            max_length = int(config["max_length"])
            tokenizer_name = str(config["tokenizer"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise EmbedderError(f"{config_path} is not a valid embedder config ({exc!r}); "
                                f"re-export the embedder with `pathfusion export embedder`") from exc
        wanted, other = ("int8", "fp32") if quantized else ("fp32", "int8")
        name = files.get(wanted) if isinstance(files, dict) else None
        if not name:
            name = files.get(other) if isinstance(files, dict) else None
            if not name:
                raise EmbedderError(f"{config_path} lists no ONNX graph; re-export the embedder")
            log.warning("the %s embedder graph was not exported; using the %s one", wanted, other)
        # The config's names are relative to its own folder; like the manifest's, they may
        # not leave the models folder (else a config could make the server read any file).
        config_dir = PurePosixPath(str(entry.get("config"))).parent
        try:
            onnx_path = model_file(folder, str(config_dir / str(name)), listed_in=config_path)
            tokenizer_path = model_file(folder, str(config_dir / tokenizer_name), listed_in=config_path)
        except ModelError as exc:
            raise EmbedderError(f"{exc}; re-export the embedder") from exc
        for path in (onnx_path, tokenizer_path):
            if not path.is_file():
                raise EmbedderError(f"{path} is missing; re-export the embedder")
        try:
            tokenizer = read_tokenizer(tokenizer_path)
            tokenizer.no_padding()
            tokenizer.enable_truncation(max_length)
            # Weights stored int8 per row (``int8_storage: rows``) are folded back to fp32
            # at load; a dynamically quantised graph keeps its int8 kernels as they are.
            dynamic = name == files.get("int8") and config.get("int8_storage", "dynamic") == "dynamic"
            session = create_session(onnx_path, providers(device), threads,
                                     fix="re-export it with `pathfusion export embedder`", fold_weights=not dynamic)
        except ModelError as exc:
            raise EmbedderError(str(exc)) from exc
        except Exception as exc:  # onnxruntime/tokenizers raise their own exception types
            raise EmbedderError(f"cannot load the embedder {onnx_path}: {exc}; "
                                f"re-export it with `pathfusion export embedder`") from exc
        model_id = str(config.get("id") or entry.get("id") or "embedder")
        return cls(session, tokenizer, dim=dim, model_id=model_id, pad_id=int(config.get("pad_id", 0)),
                   path=onnx_path, one_per_run=dynamic or "CUDAExecutionProvider" not in session.get_providers())

    @property
    def tokenizer(self) -> Any:
        """The fast tokenizer (truncating at the export's ``max_length``)."""
        return self._tokenizer

    def token_states(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(wordpiece ids ``[S]``, token states ``[S, dim]``) of one text: the memory the
        generative naming head (:mod:`pathfusion.server.name_generator`) reads."""
        if self._states is None:
            raise EmbedderError(f"{self.path} has no {STATES_NAME} output (exported before the naming head); "
                                "re-export it with `pathfusion export embedder`")
        encoding = self._tokenizer.encode(_check_texts([text])[0])
        ids = np.asarray([encoding.ids], dtype=np.int64)
        arrays = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        states = self._session.run([self._states], {name: arrays[name] for name in self._inputs})[0]
        return ids[0], np.asarray(states[0], dtype=np.float32)

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        texts = _check_texts(texts)
        _check_batch_size(batch_size)
        batch_size = 1 if self.one_per_run else batch_size
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch(texts)
        lengths = [len(encoding.ids) for encoding in encodings]
        for batch in _sorted_batches(lengths, batch_size):
            width = max(lengths[i] for i in batch)
            ids = np.full((len(batch), width), self._pad_id, dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            types = np.zeros((len(batch), width), dtype=np.int64)
            for row, i in enumerate(batch):
                encoding = encodings[i]
                n = lengths[i]
                ids[row, :n] = encoding.ids
                mask[row, :n] = encoding.attention_mask
                types[row, :n] = encoding.type_ids
            arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            result = self._session.run([self._output], {name: arrays[name] for name in self._inputs})[0]
            out[batch] = result
        return out


# --------------------------------------------------------------------------- factory


def load_embedder(backend: str = "onnx", models_dir: Path | str | None = None,
                  model_path: Path | str | None = None, device: str = "auto", *,
                  quantized: bool | None = None, threads: int | None = None,
                  pooling: str | None = None) -> Embedder:
    """The embedder chosen by the settings (``llm_backend``, ``models_dir``,
    ``llm_model_path``, ``device``).

    ``quantized=None`` picks the int8 graph unless onnxruntime will run on CUDA.
    """
    backend = (backend or "onnx").lower()
    if backend == "onnx":
        if quantized is None:
            try:
                quantized = providers(device)[0] != "CUDAExecutionProvider"
            except ModelError as exc:
                raise EmbedderError(str(exc)) from exc
        return OnnxEmbedder.load(models_dir, device=device, quantized=quantized, threads=threads)
    if backend == "transformers":
        if model_path is None or not str(model_path).strip():
            raise EmbedderError("the transformers LLM backend needs a model folder: set "
                                "pathfusion.llmModelPath to a local Hugging Face model folder")
        from .embedder_transformers import TransformersEmbedder

        return TransformersEmbedder(model_path, device=device, pooling=pooling, threads=threads)
    raise EmbedderError(f"unknown LLM backend {backend!r}; expected one of {', '.join(BACKENDS)}")


def __getattr__(name: str) -> Any:
    """``from pathfusion.server.embedder import TransformersEmbedder`` keeps working, importing the
    optional backend's module (not torch) only when asked."""
    if name in TRANSFORMERS_NAMES:
        from . import embedder_transformers

        return getattr(embedder_transformers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def read_tokenizer(path: Path) -> Any:
    """The fast tokenizer stored at ``path`` (:func:`tokenizer_json`)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_str(tokenizer_json(path).decode("utf-8"))


def tokenizer_json(path: Path) -> bytes:
    """The bytes of the ``tokenizer.json`` stored at ``path``, as is or gzipped
    (``tokenizer.json.gz``, as exported: the vocabulary is 0.47 MB of JSON, 0.2 MB gzipped,
    and the tracked tree has a 40 MiB budget)."""
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data
