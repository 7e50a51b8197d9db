"""The models of one server: the naming model, the LLM embedder and the index's search
model, for the current settings.

Which models a setting means, and loading each once, is :class:`pathfusion.server.runtime.ModelHub`'s
job; this module runs the hub's calls off the loop and turns what cannot be loaded into
what the user sees.  Why lazily: a model is loaded on the first request that needs one,
and again when ``modelsDir``, ``device`` or the LLM or fusion settings change; the LLM
embedder is loaded once and shared by naming (fusion variants) and the workspace index.
A folder that cannot be used is reported once with ``window/showMessage``; the features
then answer nothing until the settings change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from .code2vec import Predictor
from .embedder import Embedder
from .models import ModelError
from .runtime import ModelHub, models_dir, shared_hub
from .search_model import SearchModel
from .settings import Settings

__all__ = ["Models", "models_dir"]

T = TypeVar("T")


class Models:
    """What is loaded for the current settings, and why something is not.

    ``warn`` reports a problem to the user (once per message: ``warn_once``).
    """

    def __init__(self, executor: Executor, warn: Callable[[str], None], hub: ModelHub | None = None) -> None:
        self.executor = executor
        self.warn = warn
        self.hub = hub if hub is not None else shared_hub()
        self.model: Predictor | None = None
        """What suggests names: the generative naming head, code2vec or a fusion variant
        (:meth:`ModelHub.naming_or_code2vec <pathfusion.server.runtime.ModelHub.naming_or_code2vec>`)."""
        self.model_key: tuple[Any, ...] | None = None
        self.model_error: str | None = None
        self._model_lock: asyncio.Lock | None = None
        self.embedder: Embedder | None = None
        self.embedder_key: tuple[Any, ...] | None = None
        self.embedder_error: str | None = None
        self.search_model: SearchModel | None = None
        """What the indexes were last opened with (:meth:`search`); forgotten when the
        embedder changes, as its vectors came from the previous one."""

    async def _off_loop(self, fn: Callable[[Settings], T], settings: Settings) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, settings)

    async def naming(self, settings: Settings) -> Predictor | None:
        """The naming model for ``settings`` (loaded off the loop), or None.

        ``pathfusion.fusionVariant`` picks it: ``default`` is the folder's generative naming
        head when it has one, ``code2vec`` code2vec alone, another a fusion variant; all but
        code2vec need the LLM embedder — loaded here and shared with the index.  A model that
        cannot be loaded (no export, another embedder) falls back to code2vec with a warning.
        """
        s = settings
        key = (models_dir(s), s.device, s.fusion_variant, s.llm_backend, s.llm_model_path)
        if key == self.model_key:
            return self.model
        if self._model_lock is None:
            self._model_lock = asyncio.Lock()
        async with self._model_lock:
            if key == self.model_key:
                return self.model
            model: Predictor | None = None
            error = None
            if s.fusion_variant != "code2vec":
                await self.shared_embedder(s)  # for the status, and the index's
            try:
                model, fallback = await self._off_loop(self.hub.naming_or_code2vec, s)
                if fallback is not None:
                    self.warn(f"name suggestions use code2vec alone: {fallback}")
            except ModelError as exc:  # the hub words onnxruntime's and the file system's errors
                error = str(exc)
            self.model, self.model_key, self.model_error = model, key, error
            if error is not None:
                self.warn(f"name suggestions are off: {error}")
            return model

    async def shared_embedder(self, settings: Settings) -> Embedder | None:
        """The LLM embedder for ``settings``, loaded once and shared by naming and the
        index; None when it cannot be loaded (the reason in ``embedder_error``, also kept
        per settings by the hub so that a broken model is not reloaded on every request)."""
        s = settings
        key = (models_dir(s), s.llm_backend, s.llm_model_path, s.device)
        if key != self.embedder_key:
            try:
                self.embedder = await self._off_loop(self.hub.embedder, s)
                self.embedder_error = None
            except ModelError as exc:  # the hub words onnxruntime's and the file system's errors
                self.embedder, self.embedder_error = None, str(exc)
            self.embedder_key = key
            self.search_model = None  # its vectors came from the previous embedder
        return self.embedder

    async def search(self, settings: Settings, run: Callable[..., Any]) -> SearchModel:
        """The index's search model for ``settings``, loaded by ``run`` (the indexing
        thread: :meth:`Indexes.on_index_thread <pathfusion.server.feature_index.Indexes.on_index_thread>`)."""
        self.search_model = model = await run(self.hub.search_model, settings)
        return model

    def status(self, settings: Settings) -> dict[str, Any]:
        """The naming model's part of ``pathfusion.status``."""
        return {
            "model_loaded": self.model is not None,
            "model": getattr(self.model, "info", None) if self.model is not None else None,
            "models_dir": self.model_key[0] if self.model_key else models_dir(settings),
            "model_error": self.model_error,
        }
