"""The ``models/`` folder at run time: manifest, verification, onnxruntime providers.

Why the runtime verifies every file: a model only makes sense with the extractor it was
trained with and with its own vocabularies; a half-copied folder or a model from another
extractor version would give confident nonsense instead of an error.  So
:func:`load_manifest` refuses, with a message that says what to do, a missing or unreadable
manifest, another ``extractor_version``, a missing file and a file whose sha256 differs.

The manifest (written by ``pathfusion export``)::

    {"format": 1, "extractor_version": "pf-paths-3", "corpus_manifest_sha256": "…",
     "models": {"code2vec": {"files": {"code2vec/code2vec.onnx": "<sha256>", …}, …}}}

File names are relative to the models folder and may not leave it.  No torch here: the
server needs only onnxruntime and numpy.

Why a file is not hashed at every start: hashing the ~33 MB of graphs was a good part of a
cold start (130–250 ms on the preload thread, which competes with the server's imports),
and the server, the index and the CLI each load the manifest.  A file's sha256 is
remembered with its identity — size, modification and change times, inode
(:func:`verified_sha256`) — in the process and in ``<user cache>/verified-models.json``;
a file rewritten since (any of the four changes; the change time cannot be set back by
``touch`` or a copy tool) is hashed again, so a re-export or a damaged copy is still
caught.  The check guards against accidents (a half-copied folder, a file from another
export), not against someone who can write the models folder and the user's cache.  A
loader verifies only the models it uses (``models=``); the others' files must merely exist.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from .paths import EXTRACTOR_VERSION

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
DEVICES = ("auto", "cpu", "cuda")
ENV_MODELS = "PATHFUSION_MODELS"


class ModelError(Exception):
    """The models folder cannot be used; the message says why and what to do."""


def default_models_dir() -> Path:
    """``$PATHFUSION_MODELS`` if set, else the ``models/`` folder at the repository root."""
    env = os.environ.get(ENV_MODELS)
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[1] / "models"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_HASHES: dict[tuple[str, int, int, int, int], str] = {}
_HASHES_LOCK = threading.Lock()
RECORD_NAME = "verified-models.json"
RECORD_LIMIT = 256
"""Files remembered in the record (the newest); a record only grows with re-exports."""


def _identity(path: Path) -> tuple[str, int, int, int, int]:
    stat = os.stat(path)
    return os.path.realpath(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino


def _record_path() -> Path:
    from .user_cache import cache_root

    return cache_root() / RECORD_NAME


def _read_record(path: Path) -> dict[str, list[Any]]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}  # none yet, or unreadable: every file is hashed (and the record rewritten)
    return record if isinstance(record, dict) else {}


def _remember(identity: tuple[str, int, int, int, int], digest: str) -> None:
    from .atomic import write_atomic

    path = _record_path()
    record = _read_record(path)
    record.pop(identity[0], None)
    record[identity[0]] = [*identity[1:], digest]
    keep = dict(list(record.items())[-RECORD_LIMIT:])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, (json.dumps(keep) + "\n").encode())
    except OSError as exc:  # a read-only cache costs the next start a hash, nothing else
        log.debug("cannot record verified model files in %s: %s", path, exc)


def verified_sha256(path: Path) -> str:
    """``sha256_file(path)``, computed once per file identity (see the module docstring):
    remembered in the process and in the user cache's record."""
    identity = _identity(path)
    with _HASHES_LOCK:
        known = _HASHES.get(identity)
    if known is not None:
        return known
    entry = _read_record(_record_path()).get(identity[0])
    if isinstance(entry, list) and len(entry) == 5 and tuple(entry[:4]) == identity[1:] and isinstance(entry[4], str):
        known = entry[4]
    else:
        known = sha256_file(path)
        _remember(identity, known)
    with _HASHES_LOCK:
        _HASHES[identity] = known
    return known


def model_file(models_dir: Path, name: str, listed_in: Path | None = None) -> Path:
    """The path of file ``name`` (relative, inside ``models_dir``), as named by the manifest
    or by ``listed_in`` (a model's own config; its names are checked the same way)."""
    pure = PurePosixPath(name)
    if not name or pure.is_absolute() or ".." in pure.parts or "\\" in name:
        source = listed_in if listed_in is not None else models_dir / MANIFEST_NAME
        raise ModelError(f"{source}: file name {name!r} is not a path inside the models folder")
    return models_dir.joinpath(*pure.parts)


def load_manifest(models_dir: Path | str | None = None, *, verify: bool = True,
                  models: Iterable[str] | None = None) -> dict[str, Any]:
    """The parsed manifest of ``models_dir``, after checking it (see the module docstring).

    ``verify=False`` skips the sha256 of each file (their existence is still checked);
    ``models`` limits the sha256 check to the files of those entries (default: all).
    """
    wanted = None if models is None else set(models)
    models_dir = Path(models_dir) if models_dir is not None else default_models_dir()
    path = models_dir / MANIFEST_NAME
    hint = "export the models with `pathfusion export code2vec` or pass --models DIR"
    if not models_dir.is_dir():
        raise ModelError(f"models folder {models_dir} not found; {hint}")
    if not path.is_file():
        raise ModelError(f"{path} not found: {models_dir} is not a pathfusion models folder; {hint}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"{path} is unreadable or not valid JSON ({exc}); re-export the models") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("models"), dict):
        raise ModelError(f"{path} is not a pathfusion manifest (no \"models\" object); re-export the models")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ModelError(f"{path} has manifest format {manifest.get('format')!r}, this pathfusion reads "
                         f"format {MANIFEST_FORMAT}; re-export the models or upgrade pathfusion")
    found = manifest.get("extractor_version")
    if found != EXTRACTOR_VERSION:
        raise ModelError(
            f"{path}: the models were trained with extractor {found!r} but this pathfusion uses "
            f"extractor {EXTRACTOR_VERSION!r}; re-export (retrain) the models with this version "
            f"or upgrade pathfusion to one that uses {found!r}"
        )
    for model_name, entry in manifest["models"].items():
        files = entry.get("files") if isinstance(entry, dict) else None
        if not isinstance(files, dict) or not files:
            raise ModelError(f"{path}: model {model_name!r} lists no files; re-export the models")
        for name, expected in files.items():
            file = model_file(models_dir, name)
            if not file.is_file():
                raise ModelError(f"{file} is missing (listed in {path} for {model_name}); re-export the models")
            if verify and (wanted is None or model_name in wanted):
                actual = verified_sha256(file)
                if actual != expected:
                    raise ModelError(
                        f"{file} does not match {path}: sha256 {actual[:12]}…, expected "
                        f"{str(expected)[:12]}…; the file was modified or copied incompletely, "
                        f"re-export the models"
                    )
    return manifest


def model_entry(manifest: dict[str, Any], name: str, models_dir: Path | str | None = None) -> dict[str, Any]:
    """The manifest entry of model ``name``, or a :class:`ModelError` naming the fix."""
    entry = manifest.get("models", {}).get(name)
    if not isinstance(entry, dict):
        where = f" in {models_dir}" if models_dir is not None else ""
        raise ModelError(f"no {name} model{where}; export it with `pathfusion export {name}`")
    return entry


def providers(device: str = "auto") -> list[str]:
    """onnxruntime execution providers for ``device`` (``auto``, ``cpu`` or ``cuda``).

    ``auto`` uses CUDA when this onnxruntime has it; ``cuda`` without it falls back to the
    CPU with a warning (an editor setting must not stop the server).
    """
    device = (device or "auto").lower()
    if device not in DEVICES:
        raise ModelError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    if device == "cpu":
        return ["CPUExecutionProvider"]
    try:
        import onnxruntime

        available = set(onnxruntime.get_available_providers())
    except Exception as exc:  # pragma: no cover - onnxruntime is a dependency
        raise ModelError(f"onnxruntime is not usable: {exc}") from exc
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        log.warning("device 'cuda' requested but this onnxruntime has no CUDAExecutionProvider "
                    "(install onnxruntime-gpu: pip install -e '.[gpu]'); using the CPU")
    return ["CPUExecutionProvider"]
