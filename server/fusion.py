"""The fusion variants at run time (docs/design.md §1, §4): ``l`` (LLM embedding) + ``c``
(code2vec code vector) → naming top-k and search vectors, and queries → the same search space.

What runs where, per function:

* naming (hover, code actions, ``pathfusion suggest``): ``l`` of the *masked* source (the
  name replaced by ``METHOD_NAME``, :func:`pathfusion.server.paths.mask_source`, exactly as in
  training), ``c`` from the function's path contexts, → ``top_ids``/``top_probs``;
* search (the workspace index): ``l`` of the source *as written* (docs/design.md §2), ``c``
  of the function's own text, → ``search_vector``;
* a query: the variant's query encoder (``<variant>.query.onnx``), over query tokens or over
  the query's LLM embedding, whichever the manifest names.

The graphs are written by ``pathfusion export fusion`` (:mod:`pathfusion.model_export.export_fusion`).
"""

from __future__ import annotations

import hashlib
import textwrap
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .code2vec import Code2VecModel, ContextLike
from .embedder import Embedder
from .models import (
    ModelError,
    default_models_dir,
    load_manifest,
    model_entry,
    model_file,
    providers,
)
from .onnx_session import create_session
from .parsing import FunctionInfo
from .paths import contexts_of_text
from .query import QueryEncoderRuntime

ENTRY = "fusion"
SPECIAL_TARGETS = frozenset({0, 1})


def resolve_variant(entry: dict[str, Any], wanted: str | None) -> str:
    """``wanted`` (a variant name, or ``default``/None for the manifest's default)."""
    variants = entry.get("variants") or {}
    name = entry.get("default") if wanted in (None, "", "default") else wanted
    if name not in variants:
        raise ModelError(f"fusion variant {name!r} is not in the models folder (it has: "
                         f"{', '.join(sorted(variants)) or 'none'}); pick one of those in pathfusion.fusionVariant")
    return str(name)


def _session(path: Path, device: str, threads: int) -> Any:
    return create_session(path, providers(device), threads, fix="re-export with `pathfusion export fusion`")


def _unit_rows(vectors: Any) -> np.ndarray:
    """float32 rows scaled to unit length (the index is an inner-product space)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def function_contexts(func: FunctionInfo) -> list[str]:
    """Path contexts of ``func`` from its own text only (re-indented to column 0 and parsed
    alone), so that its search vector — like the index's cache key — depends on nothing
    else in the file."""
    return contexts_of_text(textwrap.dedent(" " * func.span.start.character + func.source))


@dataclass
class FusionRuntime:
    """One variant's graphs, with the code2vec model and the embedder that feed them."""

    variant: str
    entry: dict[str, Any]
    session: Any
    query_session: Any
    query_encoder: QueryEncoderRuntime | None
    code2vec: Code2VecModel
    embedder: Embedder
    models_dir: Path

    @classmethod
    def load(cls, embedder: Embedder, code2vec: Code2VecModel, models_dir: Path | str | None = None,
             variant: str | None = None, device: str = "auto", *, threads: int = 1,
             query_threads: int = 1) -> FusionRuntime:
        """``threads``: the fusion graph's intra-op threads; ``query_threads``: the query
        encoder's, which always runs on the CPU (a query is too little work for a GPU round
        trip).  :data:`pathfusion.server.runtime.THREADS` chooses both for the server and the CLI."""
        models_dir = Path(models_dir) if models_dir is not None else default_models_dir()
        manifest = load_manifest(models_dir, verify=False)
        entry = model_entry(manifest, ENTRY, models_dir)
        name = resolve_variant(entry, variant)
        spec = entry["variants"][name]
        trained_on = spec.get("embedder")
        if trained_on is not None and embedder.model_id != trained_on:
            raise ModelError(f"fusion variant {name!r} was trained on {trained_on} embeddings, but the embedder "
                             f"is {embedder.model_id}; use the default embedder or retrain the fusion for it")
        expected = int(spec.get("dims", {}).get("llm", 384))
        if embedder.dim != expected:
            raise ModelError(f"fusion variant {name!r} was trained on {expected}-d LLM embeddings, but the "
                             f"embedder {embedder.model_id} gives {embedder.dim}-d; use the default embedder "
                             f"or retrain the fusion for this one")
        session = _session(model_file(models_dir, spec["onnx"]), device, threads)
        query_path = model_file(models_dir, spec["query_onnx"])
        query_encoder = None
        query_session = None
        if spec.get("query", {}).get("input") == "tokens":
            query_encoder = QueryEncoderRuntime.load(query_path.parent, query_path.name,
                                                     Path(spec["query_vocab"]).name, threads=query_threads)
        else:
            query_session = _session(query_path, "cpu", query_threads)
        return cls(name, spec, session, query_session, query_encoder, code2vec, embedder, models_dir)

    @property
    def model_id(self) -> str:
        """Identity of the search space (index rebuilds when it changes)."""
        files = "|".join(str(self.entry.get(k)) for k in ("onnx", "query_onnx"))
        return f"fusion:{self.variant}:{self.embedder.model_id}:{files}:{self.entry.get('bytes')}"

    @property
    def search_dim(self) -> int:
        return int(self.entry.get("dims", {}).get("search", 256))

    # -- graph runs --------------------------------------------------------------------
    def _run(self, outputs: list[str], llm: np.ndarray, code: np.ndarray) -> list[np.ndarray]:
        feeds = {"llm": llm.astype(np.float32), "code": code.astype(np.float32)}
        wanted = {i.name for i in self.session.get_inputs()}
        try:
            return list(self.session.run(outputs, {k: v for k, v in feeds.items() if k in wanted}))
        except Exception as exc:
            raise ModelError(f"fusion {self.variant} inference failed: {exc}") from exc

    def naming(self, llm: np.ndarray, code: np.ndarray, top_k: int) -> list[list[tuple[str, float]]]:
        if len(llm) == 0:
            return []
        if "top_ids" not in {o.name for o in self.session.get_outputs()}:
            raise ModelError(f"fusion variant {self.variant!r} is shipped for search only; its names come "
                             "from code2vec (pathfusion.fusionVariant code2vec)")
        ids, probs = self._run(["top_ids", "top_probs"], llm, code)
        targets = self.code2vec.targets
        out: list[list[tuple[str, float]]] = []
        for row_ids, row_probs in zip(ids, probs, strict=True):
            names = [(targets[int(i)], float(p)) for i, p in zip(row_ids, row_probs, strict=True)
                     if int(i) not in SPECIAL_TARGETS and 0 <= int(i) < len(targets)]
            out.append(names[: max(0, top_k)])
        return out

    def search_vectors(self, llm: np.ndarray, code: np.ndarray) -> np.ndarray:
        if len(llm) == 0:
            return np.zeros((0, self.search_dim), dtype=np.float32)
        (vectors,) = self._run(["search_vector"], llm, code)
        return _unit_rows(vectors)

    def query_vectors(self, texts: Sequence[str]) -> np.ndarray:
        if self.query_encoder is not None:
            return self.query_encoder.encode(texts)
        if len(texts) == 0:
            return np.zeros((0, self.search_dim), dtype=np.float32)
        llm = np.asarray(self.embedder.embed(list(texts)), dtype=np.float32)
        (vectors,) = self.query_session.run(None, {"query_llm": llm})
        return _unit_rows(vectors)

    # -- functions ---------------------------------------------------------------------
    def encode_functions(self, functions: Sequence[FunctionInfo]) -> np.ndarray:
        """Search vectors of ``functions`` (LLM of the search text + code2vec)."""
        if not functions:
            return np.zeros((0, self.search_dim), dtype=np.float32)
        llm = np.asarray(self.embedder.embed([f.search_text for f in functions]), dtype=np.float32)
        code = self.code2vec.code_vectors([function_contexts(f) for f in functions])
        return self.search_vectors(llm, code)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.query_vectors(texts)

    @property
    def dim(self) -> int:
        return self.search_dim

    @property
    def info(self) -> dict[str, Any]:
        """What the CLI and the server report about the naming model."""
        return {**self.code2vec.info, "name": f"fusion:{self.variant}", "embedder": self.embedder.model_id,
                "metrics": self.entry.get("metrics")}


class FusionPredictor:
    """Name suggestions of a fusion variant, behind the interface of
    :func:`pathfusion.server.code2vec.suggest_for_document` (contexts + the masked sources).

    The LLM embedding of a masked source is the expensive part (tens of ms on a CPU core)
    and hovers repeat on unchanged functions, so the last :data:`CACHE_SIZE` embeddings are
    kept, keyed by a 16-byte digest of the masked text rather than the text: a function's
    source can be any length, and a cache keyed by it would hold a copy of every edited
    version of every hovered function; with digests the cache is bounded in bytes (~1.6 KB
    an entry)."""

    CACHE_SIZE = 2048

    def __init__(self, runtime: FusionRuntime) -> None:
        self.runtime = runtime
        self.info = runtime.info
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def _embeddings(self, sources: Sequence[str]) -> np.ndarray:
        """LLM embeddings of ``sources``, embedding only what the cache lacks (outside the
        lock, so that concurrent hovers are not serialised behind one embedding)."""
        keys = {text: _digest(text) for text in dict.fromkeys(sources)}
        with self._lock:
            found = {text: self._cache[key] for text, key in keys.items() if key in self._cache}
            for text in found:
                self._cache.move_to_end(keys[text])
        missing = [text for text in keys if text not in found]
        if missing:
            fresh = np.asarray(self.runtime.embedder.embed(missing), dtype=np.float32)
            found.update(zip(missing, fresh, strict=True))
            with self._lock:
                for text in missing:
                    self._cache[keys[text]] = found[text]
                while len(self._cache) > self.CACHE_SIZE:
                    self._cache.popitem(last=False)
        return np.stack([found[text] for text in sources])

    def prefetch(self, sources: Sequence[str]) -> None:
        """Embed and cache ``sources`` (masked) ahead of the hovers that will need them."""
        if sources:
            self._embeddings(sources)

    def predict(self, functions: Sequence[Sequence[ContextLike]], top_k: int = 5,
                sources: Sequence[str] | None = None) -> list[list[tuple[str, float]]]:
        if sources is None or len(sources) != len(functions):
            raise ValueError("a fusion predictor needs the masked source of every function")
        if not functions:
            return []
        llm = self._embeddings(sources)
        code = self.runtime.code2vec.code_vectors(functions)
        return self.runtime.naming(llm, code, top_k)


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", errors="surrogatepass"), digest_size=16).digest()


def fusion_variant(models_dir: Path | str | None, wanted: str | None) -> str | None:
    """The fusion variant that ``wanted`` (a ``pathfusion.fusionVariant`` value) names in
    ``models_dir``, or None for a models folder without a fusion export (older exports keep
    working: naming uses code2vec's own model, search the LLM embedding alone).  A variant
    the folder lacks is a :class:`ModelError`.  :class:`pathfusion.server.runtime.ModelHub` decides
    from it which models a setting means."""
    folder = Path(models_dir) if models_dir is not None else default_models_dir()
    entry = load_manifest(folder, verify=False)["models"].get(ENTRY)
    if not isinstance(entry, dict):
        if wanted not in (None, "", "default", "code2vec"):
            raise ModelError(f"fusion variant {wanted!r} needs the fusion export in {folder}; "
                             f"run `pathfusion export fusion` or set pathfusion.fusionVariant to default")
        return None
    return resolve_variant(entry, wanted)
