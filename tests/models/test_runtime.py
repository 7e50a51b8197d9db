"""The model hub (:mod:`pathfusion.server.runtime`): which models a setting means, each loaded once,
the fallbacks and their messages, the thread counts passed to the loaders.

The loaders are replaced by counting fakes (the decisions and the caching are what is
tested, not onnxruntime); one test loads the repository's real models."""

from __future__ import annotations

import json

import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pathfusion.server import runtime
from pathfusion.server.embedder import EmbedderError
from pathfusion.server.fusion import FusionPredictor
from pathfusion.server.models import ModelError
from pathfusion.server.runtime import ModelHub, Threads, models_dir
from pathfusion.server.search_model import EmbedderSearchModel, search_model_from_settings
from pathfusion.server.settings import Settings

REPO_MODELS = Path(__file__).resolve().parents[2] / "models"


class FakeEmbedder:
    model_id = "fake-embedder"
    dim = 8

    def embed(self, texts: Any, batch_size: int = 32) -> np.ndarray:
        return np.ones((len(texts), self.dim), dtype=np.float32) / np.sqrt(self.dim)


class FakeRuntime:
    """Stands for a FusionRuntime: what FusionPredictor and the index read of it."""

    def __init__(self, variant: str) -> None:
        self.variant = variant
        self.info = {"name": f"fusion:{variant}"}


class Loaders:
    """Counting fakes of the hub's loaders; ``fail`` makes one raise."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, fusion: bool = True) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.fail: dict[str, Exception] = {}
        self.fusion = fusion
        self.delay = 0.0
        loaders = self

        class FakeCode2Vec:
            @staticmethod
            def load(folder: str, device: str = "auto", *, threads: int = 1) -> Any:
                loaders.record("code2vec", folder, device, threads)
                return object()

        monkeypatch.setattr(runtime, "Code2VecModel", FakeCode2Vec)
        monkeypatch.setattr(runtime, "load_embedder", self.load_embedder)
        monkeypatch.setattr(runtime, "fusion_variant", self.fusion_variant)

        class FakeFusionRuntime:
            @staticmethod
            def load(embedder: Any, code2vec: Any, folder: str, name: str, device: str, *,
                     threads: int, query_threads: int) -> Any:
                loaders.record("fusion", name, threads, query_threads)
                return FakeRuntime(name)

        monkeypatch.setattr(runtime, "FusionRuntime", FakeFusionRuntime)

    def record(self, what: str, *args: Any) -> None:
        time.sleep(self.delay)
        self.calls.append((what, *args))
        if what in self.fail:
            raise self.fail[what]

    def load_embedder(self, backend: str, folder: str, model_path: Any, device: str, *,
                      threads: Any) -> Any:
        self.record("embedder", backend, threads)
        return FakeEmbedder()

    def fusion_variant(self, folder: Any, wanted: str | None) -> str | None:
        if not self.fusion:
            if wanted not in (None, "", "default", "code2vec"):
                raise ModelError(f"fusion variant {wanted!r} needs the fusion export in {folder}")
            return None
        return "llm" if wanted in (None, "", "default") else wanted

    def count(self, what: str) -> int:
        return sum(1 for call in self.calls if call[0] == what)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(models_dir=str(tmp_path), device="cpu")


def test_naming_and_search_share_one_load_of_each_model(monkeypatch: pytest.MonkeyPatch,
                                                        settings: Settings) -> None:
    loaders = Loaders(monkeypatch)
    hub = ModelHub()
    naming = hub.naming(settings)
    search = hub.search_model(settings)
    assert isinstance(naming, FusionPredictor) and naming.runtime is search  # one fusion runtime
    assert hub.naming(settings) is naming and hub.search_model(settings) is search
    assert hub.embedder(settings) is hub.embedder(settings)
    assert [loaders.count(k) for k in ("code2vec", "embedder", "fusion")] == [1, 1, 1]
    # the thread counts come from THREADS (1 for the small graphs, the embedder
    # onnxruntime's default)
    assert ("code2vec", models_dir(settings), "cpu", 1) in loaders.calls
    assert ("embedder", "onnx", None) in loaders.calls and ("fusion", "llm", 1, 1) in loaders.calls


def test_threads_are_passed_to_every_loader(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    loaders = Loaders(monkeypatch)
    ModelHub(Threads(code2vec=3, fusion=4, query=5, embedder=6)).naming(settings)
    assert loaders.calls == [("code2vec", models_dir(settings), "cpu", 3), ("embedder", "onnx", 6),
                             ("fusion", "llm", 4, 5)]


def test_code2vec_variant_needs_no_embedder(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    loaders = Loaders(monkeypatch)
    hub = ModelHub()
    s = Settings(models_dir=settings.models_dir, device="cpu", fusion_variant="code2vec")
    assert hub.naming(s) is hub.code2vec(s)
    assert hub.naming_or_code2vec(s) == (hub.code2vec(s), None)
    assert loaders.count("embedder") == 0


def test_folder_without_fusion_export(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    loaders = Loaders(monkeypatch, fusion=False)
    hub = ModelHub()
    assert hub.naming(settings) is hub.code2vec(settings)
    assert isinstance(hub.search_model(settings), EmbedderSearchModel)
    assert loaders.count("fusion") == 0
    llm = Settings(models_dir=settings.models_dir, device="cpu", fusion_variant="llm")
    with pytest.raises(ModelError, match="needs the fusion export"):
        hub.naming(llm)


def test_a_fusion_that_cannot_load_falls_back(monkeypatch: pytest.MonkeyPatch, settings: Settings,
                                              caplog: pytest.LogCaptureFixture) -> None:
    loaders = Loaders(monkeypatch)
    loaders.fail["fusion"] = ModelError("trained on other embeddings")
    hub = ModelHub()
    with pytest.raises(ModelError, match="trained on other embeddings"):
        hub.naming(settings)  # the CLI: an error
    model, reason = hub.naming_or_code2vec(settings)  # the server: code2vec, and why
    assert model is hub.code2vec(settings) and reason == "trained on other embeddings"
    with caplog.at_level(logging.WARNING, logger="pathfusion.server.index"):
        assert isinstance(hub.search_model(settings), EmbedderSearchModel)
    assert "search uses the LLM embedder alone: trained on other embeddings" in caplog.text
    assert loaders.count("fusion") == 1  # the failure is kept for these settings


def test_an_embedder_that_cannot_load(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    loaders = Loaders(monkeypatch)
    loaders.fail["embedder"] = OSError("disk on fire")
    hub = ModelHub()
    model, reason = hub.naming_or_code2vec(settings)
    assert model is hub.code2vec(settings) and reason == "the LLM embedder cannot be loaded: disk on fire"
    for _ in range(2):
        with pytest.raises(EmbedderError, match="^disk on fire$"):
            hub.search_model(settings)
    assert loaders.count("embedder") == 1  # a broken model is not reloaded on every request


def test_code2vec_errors_are_worded(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    loaders = Loaders(monkeypatch)
    loaders.fail["code2vec"] = RuntimeError("onnxruntime says no")
    with pytest.raises(ModelError, match=r"^cannot load the models in .*: onnxruntime says no$"):
        ModelHub().naming_or_code2vec(settings)


def test_new_settings_reload_and_forget_what_was_built_over_the_old(
        monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    loaders = Loaders(monkeypatch)
    hub = ModelHub()
    first = hub.search_model(settings)
    other = Settings(models_dir=settings.models_dir, device="cpu", fusion_variant="concat")
    assert hub.search_model(other) is not first and loaders.count("fusion") == 2
    assert loaders.count("code2vec") == 1 and loaders.count("embedder") == 1  # not in the variant's key
    assert hub.search_model(settings) is not first  # one slot each: the old model was freed
    moved = Settings(models_dir=settings.models_dir + "/x", device="cpu")
    hub.code2vec(moved)
    hub.code2vec(settings)  # code2vec replaced: what was built over it is forgotten
    assert hub.search_model(settings).variant == "llm" and loaders.count("fusion") == 4


def test_concurrent_requests_load_once(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    loaders = Loaders(monkeypatch)
    loaders.delay = 0.05
    hub = ModelHub()
    got: list[Any] = []
    threads = [threading.Thread(target=lambda: got.append(hub.naming(settings))) for _ in range(4)]
    threads += [threading.Thread(target=lambda: got.append(hub.search_model(settings))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 6 and [loaders.count(k) for k in ("code2vec", "embedder", "fusion")] == [1, 1, 1]


def test_search_model_from_settings_uses_the_given_embedder(monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    loaders = Loaders(monkeypatch, fusion=False)
    embedder = FakeEmbedder()

    class Namespace:  # what pathfusion.model_export.evaluate passes
        models_dir = tmp_path
        device = "cpu"
        fusion_variant = "default"

    model = search_model_from_settings(Namespace(), embedder)
    assert isinstance(model, EmbedderSearchModel) and model.embedder is embedder
    assert loaders.count("embedder") == 0


def test_real_models_name_with_the_generative_head() -> None:
    """The shipped folder's default naming is its naming head, over the shipped embedder,
    and it reads an obvious getter right."""
    from pathfusion.server.name_generator import NameGenerator

    settings = Settings(models_dir=str(REPO_MODELS), device="cpu")
    model = ModelHub().naming(settings)
    assert isinstance(model, NameGenerator)
    manifest = json.loads((REPO_MODELS / "manifest.json").read_text())
    assert manifest["models"]["naming"]["embedder_id"] == model.embedder.model_id == manifest["models"]["embedder"]["id"]
    (names,) = model.predict([[]], top_k=3, sources=["def METHOD_NAME(self):\n    return self._name\n"])
    assert names and "name" in names[0][0].split("|")


def test_server_naming_does_not_wait_for_the_embedder_when_code2vec_serves(
        monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    """Without a fusion export the first hover's model is code2vec: the embedder (the index's
    business) is not loaded on the hover's path."""
    loaders = Loaders(monkeypatch, fusion=False)
    model, reason = ModelHub().naming_or_code2vec(settings)
    assert reason is None and loaders.count("code2vec") == 1 and loaders.count("embedder") == 0
    loaders = Loaders(monkeypatch, fusion=True)  # a fusion export: its graph needs the embedder
    hub = ModelHub()
    model, reason = hub.naming_or_code2vec(settings)
    assert reason is None and isinstance(model, FusionPredictor) and loaders.count("embedder") == 1


def test_preload_fills_the_shared_hub_the_server_uses(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    from pathfusion.server.lsp_models import Models

    loaders = Loaders(monkeypatch, fusion=False)
    monkeypatch.setattr(runtime, "_SHARED", None)
    runtime.preload(settings).join(10)
    assert loaders.count("code2vec") == 1
    models = Models(executor=None, warn=lambda message: None)  # type: ignore[arg-type]
    assert models.hub is runtime.shared_hub()
    assert models.hub.code2vec(settings) is models.hub.code2vec(settings) and loaders.count("code2vec") == 1
    # a failed preload is remembered and reported when the server asks, not lost
    monkeypatch.setattr(runtime, "_SHARED", None)
    loaders.fail["code2vec"] = ModelError("bad manifest")
    runtime.preload(Settings(models_dir=str(Path(settings.models_dir or "") / "x"))).join(10)
    with pytest.raises(ModelError, match="bad manifest"):
        runtime.shared_hub().code2vec(Settings(models_dir=str(Path(settings.models_dir or "") / "x")))
