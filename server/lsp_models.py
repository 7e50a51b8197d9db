"""The models of one server: the naming model, the LLM embedder and the index's search
model, for the current settings.

Why lazily and here: a model is loaded on the first request that needs one (off the
loop), and again when ``modelsDir``, ``device`` or the fusion settings change; the LLM
embedder is loaded once and shared by naming (fusion variants) and the workspace index.  A
folder that cannot be used is reported once with ``window/showMessage``; the features then
answer nothing until the settings change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from .code2vec import Code2VecModel, Predictor
from .embedder import Embedder, load_embedder
from .fusion import naming_predictor
from .index import SearchModel
from .models import ModelError, default_models_dir
from .settings import Settings


def models_dir(settings: Settings) -> str:
    """The models folder that ``settings`` name (``~`` expanded), else the default one."""
    return str(Path(settings.models_dir).expanduser()) if settings.models_dir else str(default_models_dir())


class Models:
    """What is loaded for the current settings, and why something is not.

    ``warn`` reports a problem to the user (once per message: ``warn_once``).
    """

    def __init__(self, executor: Executor, warn: Callable[[str], None]) -> None:
        self.executor = executor
        self.warn = warn
        self.model: Predictor | None = None
        """What suggests names: code2vec or a fusion variant (:func:`server.fusion.naming_predictor`)."""
        self.code2vec: Code2VecModel | None = None
        self.model_key: tuple[Any, ...] | None = None
        self.model_error: str | None = None
        self._model_lock: asyncio.Lock | None = None
        self.embedder: Embedder | None = None
        self.embedder_key: tuple[Any, ...] | None = None
        self.embedder_error: str | None = None
        self.search_model: SearchModel | None = None
        """Built by the index over :attr:`embedder` (:mod:`server.feature_index`); forgotten
        when the embedder changes, as its vectors came from the previous one."""

    async def naming(self, settings: Settings) -> Predictor | None:
        """The naming model for ``settings`` (loaded off the loop), or None.

        ``pathfusion.fusionVariant`` picks it: code2vec alone, or a fusion variant, which
        also needs the LLM embedder — loaded here and shared with the index.  A fusion that
        cannot be loaded (no export, another embedder) falls back to code2vec with a warning.
        """
        s = settings
        folder = models_dir(s)
        key = (folder, s.device, s.fusion_variant, s.llm_backend, s.llm_model_path)
        if key == self.model_key:
            return self.model
        if self._model_lock is None:
            self._model_lock = asyncio.Lock()
        async with self._model_lock:
            if key == self.model_key:
                return self.model
            loop = asyncio.get_running_loop()
            model: Predictor | None = None
            error = None
            try:
                code2vec = await loop.run_in_executor(
                    self.executor, lambda: Code2VecModel.load(folder, device=s.device))
                self.code2vec = model = code2vec
            except ModelError as exc:
                error = str(exc)
            except Exception as exc:  # onnxruntime and the file system raise their own types
                error = f"cannot load the models in {folder}: {exc}"
            if model is not None and s.fusion_variant != "code2vec":
                try:
                    embedder = await self.shared_embedder(folder, s.llm_backend, s.llm_model_path, s.device)
                    if embedder is None:
                        raise ModelError(f"the LLM embedder cannot be loaded: {self.embedder_error}")
                    model = await loop.run_in_executor(
                        self.executor,
                        lambda: naming_predictor(code2vec, embedder, s.fusion_variant, folder, s.device))
                except Exception as exc:  # ModelError, EmbedderError, onnxruntime's own
                    self.warn(f"name suggestions use code2vec alone: {exc}")
            self.model, self.model_key, self.model_error = model, key, error
            if error is not None:
                self.warn(f"name suggestions are off: {error}")
            return model

    async def shared_embedder(self, folder: str | None, backend: str, model_path: str | None,
                              device: str) -> Embedder | None:
        """The LLM embedder for these settings, loaded once and shared by naming and the
        index; None when it cannot be loaded (the reason in ``embedder_error``, also kept
        per settings so that a broken model is not reloaded on every request)."""
        key = (folder, backend, model_path, device)
        if key != self.embedder_key:
            loop = asyncio.get_running_loop()
            try:
                self.embedder = await loop.run_in_executor(
                    self.executor, lambda: load_embedder(backend, folder, model_path, device))
                self.embedder_error = None
            except Exception as exc:  # EmbedderError, onnxruntime's and the file system's own
                self.embedder, self.embedder_error = None, str(exc)
            self.embedder_key = key
            self.search_model = None  # its vectors came from the previous embedder
        return self.embedder

    def status(self, settings: Settings) -> dict[str, Any]:
        """The naming model's part of ``pathfusion.status``."""
        return {
            "model_loaded": self.model is not None,
            "model": getattr(self.model, "info", None) if self.model is not None else None,
            "models_dir": self.model_key[0] if self.model_key else models_dir(settings),
            "model_error": self.model_error,
        }
