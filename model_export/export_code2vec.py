"""``pathfusion export code2vec``: a trained run folder → ``models/code2vec/`` + manifest.

Why the parity check is part of the export and not only a test: an ONNX graph that
disagrees with the torch model it came from fails silently in the editor (plausible but
wrong names).  Every export therefore runs the ONNX graph in onnxruntime next to torch on
random batches (several batch and context sizes, padded rows, one row with no context at
all) and refuses to install the files when any output differs by more than ``1e-4``.

What is written (docs/design.md §6):

* ``<out>/code2vec/code2vec.onnx`` — opset 17, inputs ``starts``, ``paths``, ``ends``
  (int64 ``[batch, contexts]``) and ``mask`` (float32 ``[batch, contexts]``, 1 = real
  context, 0 = padding), both axes dynamic; outputs ``code_vector`` ``[batch, code]``,
  ``attention`` ``[batch, contexts]``, ``top_ids`` (int64 ``[batch, k]``) and ``top_probs``
  ``[batch, k]`` (softmax probabilities, sorted descending).  A row whose mask is all zero
  gets a zero code vector and a uniform distribution (no NaN).  The parity check runs on
  the fp32 graph; the shipped one stores its weights int8 per row, computed in fp32
  (:mod:`pathfusion.model_export.compact_onnx`), and the effect of that rounding is recorded.
* ``<out>/code2vec/{tokens,targets}.json`` and ``paths.json.gz`` — the run's vocabularies
  (JSON lists, id 0 ``<PAD>``, id 1 ``<UNK>``).
* ``<out>/manifest.json`` — merged with the entries of other models already there; file
  names are relative to ``<out>`` (``code2vec/code2vec.onnx``) with their sha256.

The graph is built by the TorchScript-based exporter (``dynamo=False``): the dynamo
exporter needs ``onnxscript``, which the ``train`` extra does not install, and the legacy
one gives a small, float32-only graph for this model.  Files are written to a temporary
folder, checked, then moved into place; the manifest is written last (temp + rename).
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
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pathfusion.server.atomic import write_atomic
from pathfusion.server.models import sha256_file
from pathfusion.server.paths import EXTRACTOR_VERSION

from .c2v_data import Vocabs
from .code2vec import Code2Vec, Code2VecConfig, Code2VecExport
from .compact_onnx import compact, compact_effect
from .train_code2vec import DEFAULT_RUN

log = logging.getLogger(__name__)

MANIFEST_FORMAT = 1
OPSET = 17
PARITY_TOLERANCE = 1e-4
INPUT_NAMES = ("starts", "paths", "ends", "mask")
OUTPUT_NAMES = ("code_vector", "attention", "top_ids", "top_probs")
VOCAB_FILES = ("tokens.json", "paths.json", "targets.json")
SHIPPED_VOCAB = {"tokens": "tokens.json", "paths": "paths.json.gz", "targets": "targets.json"}
"""Vocabulary files as shipped: the path vocabulary (long strings) gzip-compressed, 15× smaller."""
PARITY_SHAPES = ((1, 1), (2, 7), (5, 50), (16, 200), (64, 200))
"""(batch, contexts) of the random parity batches."""
CORPUS_MANIFEST = Path(__file__).with_name("corpus_manifest.txt")


class ExportError(RuntimeError):
    """The run folder is incomplete or the exported graph disagrees with torch."""


def load_run(run: Path) -> tuple[Code2Vec, Vocabs, Code2VecConfig, dict[str, Any] | None]:
    """(model in eval mode, vocabularies, config, final.json or None) of a training run."""
    for needed in ("config.json", "best.pt", *(f"vocab/{name}" for name in VOCAB_FILES)):
        if not (run / needed).is_file():
            raise ExportError(f"{run / needed} not found; is {run} a finished code2vec run folder?")
    config = Code2VecConfig(**json.loads((run / "config.json").read_text(encoding="utf-8")))
    vocabs = Vocabs.load(run / "vocab")
    model = Code2Vec(len(vocabs.tokens), len(vocabs.paths), len(vocabs.targets), config)
    state = torch.load(run / "best.pt", weights_only=True, map_location="cpu")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ExportError(f"{run / 'best.pt'} does not match the run's config/vocabularies: {exc}") from exc
    model.eval()
    final = None
    if (run / "final.json").is_file():
        final = json.loads((run / "final.json").read_text(encoding="utf-8"))
    return model, vocabs, config, final


def export_onnx(wrapper: Code2VecExport, path: Path) -> None:
    """Write the ONNX graph of ``wrapper`` (eval mode) to ``path``."""
    wrapper.eval()
    example = (
        torch.ones(2, 3, dtype=torch.int64),
        torch.ones(2, 3, dtype=torch.int64),
        torch.ones(2, 3, dtype=torch.int64),
        torch.ones(2, 3, dtype=torch.float32),
    )
    both = {0: "batch", 1: "contexts"}
    dynamic_axes = {name: both for name in INPUT_NAMES} | {
        "code_vector": {0: "batch"},
        "attention": both,
        "top_ids": {0: "batch"},
        "top_probs": {0: "batch"},
    }
    # The legacy exporter announces its own deprecation; the choice is deliberate (see the
    # module docstring).
    legacy_onnx_export(wrapper, example, path, INPUT_NAMES, OUTPUT_NAMES, dynamic_axes, DeprecationWarning)


def legacy_onnx_export(
    module: torch.nn.Module,
    example: tuple[torch.Tensor, ...],
    path: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]],
    quiet: type[Warning] = Warning,
) -> None:
    """Trace ``module`` with the TorchScript exporter (opset :data:`OPSET`, constants folded),
    with warnings of class ``quiet`` silenced, and check the graph (:func:`_check_graph`)."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", quiet)
        torch.onnx.export(
            module,
            example,
            str(path),
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    _check_graph(path)


def _check_graph(path: Path) -> None:
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    double = onnx.TensorProto.DOUBLE
    bad = [t.name for t in model.graph.initializer if t.data_type == double]
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        if value.type.tensor_type.elem_type == double:
            bad.append(value.name)
    for node in model.graph.node:
        for attribute in node.attribute:
            if attribute.name == "to" and attribute.i == double:
                bad.append(node.name or node.op_type)
    if bad:
        raise ExportError(f"the exported graph uses float64 ({', '.join(bad[:5])}); expected float32 only")


def random_batch(
    rng: np.random.Generator, batch: int, contexts: int, sizes: tuple[int, int, int]
) -> dict[str, np.ndarray]:
    """A padded random batch: row lengths vary, the last row of a batch of ≥ 2 is empty."""
    n_tokens, n_paths, _ = sizes
    lengths = rng.integers(1, contexts + 1, size=batch)
    lengths[0] = contexts
    if batch >= 2:
        lengths[-1] = 0
    mask = (np.arange(contexts)[None, :] < lengths[:, None]).astype(np.float32)
    real = mask.astype(np.int64)
    return {
        "starts": rng.integers(0, n_tokens, size=(batch, contexts), dtype=np.int64) * real,
        "paths": rng.integers(0, n_paths, size=(batch, contexts), dtype=np.int64) * real,
        "ends": rng.integers(0, n_tokens, size=(batch, contexts), dtype=np.int64) * real,
        "mask": mask,
    }


def parity_check(
    wrapper: Code2VecExport,
    onnx_path: Path,
    shapes: Sequence[tuple[int, int]] = PARITY_SHAPES,
    seed: int = 0,
    tolerance: float = PARITY_TOLERANCE,
) -> dict[str, Any]:
    """Largest |onnxruntime − torch| over every output on random batches; raises past
    ``tolerance`` or on a non-finite output.

    ``top_ids`` may legitimately differ where two probabilities tie, so the ids are checked
    through the probabilities: torch's probability of each id onnxruntime returned must
    equal onnxruntime's probability for it.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    model = wrapper.model
    sizes = (model.token_embedding.num_embeddings, model.path_embedding.num_embeddings,
             model.targets.out_features)
    rng = np.random.default_rng(seed)
    worst = {name: 0.0 for name in OUTPUT_NAMES}
    started = time.perf_counter()
    wrapper.eval()
    for batch, contexts in shapes:
        feeds = random_batch(rng, batch, contexts, sizes)
        got = dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), feeds), strict=True))
        with torch.no_grad():
            tensors = [torch.from_numpy(feeds[name]) for name in INPUT_NAMES]
            code, attention, top_ids, top_probs = wrapper(*tensors)
            all_probs = torch.softmax(model(torch.stack(tensors[:3], dim=-1), tensors[3])[2], dim=-1)
        want = {"code_vector": code.numpy(), "attention": attention.numpy(), "top_probs": top_probs.numpy()}
        for name, value in got.items():
            if not np.all(np.isfinite(value)):
                raise ExportError(f"parity: onnxruntime output {name} is not finite for shape {(batch, contexts)}")
        if got["top_ids"].shape != tuple(top_ids.shape) or got["top_ids"].dtype != np.int64:
            raise ExportError(f"parity: top_ids has shape {got['top_ids'].shape} {got['top_ids'].dtype}")
        probs_of_ids = np.take_along_axis(all_probs.numpy(), got["top_ids"], axis=-1)
        diffs = {name: float(np.max(np.abs(got[name] - want[name]))) for name in want}
        diffs["top_ids"] = float(np.max(np.abs(probs_of_ids - got["top_probs"])))
        for name, diff in diffs.items():
            worst[name] = max(worst[name], diff)
    max_diff = max(worst.values())
    result = {
        "max_abs_diff": max_diff,
        "per_output": worst,
        "shapes": [list(shape) for shape in shapes],
        "seconds": round(time.perf_counter() - started, 3),
    }
    if max_diff > tolerance:
        raise ExportError(f"ONNX/torch parity failed: max |diff| {max_diff:.3g} > {tolerance:g} ({worst})")
    return result


def _atomic_write_json(path: Path, data: object) -> None:
    """The manifest, shared by every export, written atomically and readable by all."""
    write_atomic(path, (json.dumps(data, indent=1) + "\n").encode("utf-8"), mode=0o644)


def merge_manifest(out: Path, name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """The manifest of ``out`` with ``entry`` for model ``name`` (other models kept when they
    were exported with the same extractor version)."""
    path = out / "manifest.json"
    models: dict[str, Any] = {}
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("%s is unreadable (%s); writing a new one", path, exc)
            old = {}
        if isinstance(old, dict) and isinstance(old.get("models"), dict):
            if old.get("extractor_version") == EXTRACTOR_VERSION:
                models = dict(old["models"])
            elif old["models"]:
                log.warning("dropping %s from %s: exported with extractor %s, not %s",
                            ", ".join(sorted(old["models"])), path, old.get("extractor_version"),
                            EXTRACTOR_VERSION)
    models[name] = entry
    return {
        "format": MANIFEST_FORMAT,
        "extractor_version": EXTRACTOR_VERSION,
        "models": dict(sorted(models.items())),
        "corpus_manifest_sha256": sha256_file(CORPUS_MANIFEST) if CORPUS_MANIFEST.is_file() else None,
    }


def export(run: Path, out: Path = Path("models"), top_k: int = 10) -> dict[str, Any]:
    """Export the run folder ``run`` into ``out``; returns the manifest written."""
    run, out = Path(run), Path(out)
    model, vocabs, config, final = load_run(run)
    top_k = max(1, min(top_k, len(vocabs.targets)))
    wrapper = Code2VecExport(model, top_k).eval()
    target_dir = out / "code2vec"
    target_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=target_dir))
    try:
        export_onnx(wrapper, staging / "fp32.onnx")
        parity = parity_check(wrapper, staging / "fp32.onnx")
        # Shipped with int8 row-scaled weights (4× smaller, fp32 compute; see compact_onnx).
        sizes = compact(staging / "fp32.onnx", staging / "code2vec.onnx")
        rng = np.random.default_rng(1)
        batches = [random_batch(rng, batch, contexts, (len(vocabs.tokens), len(vocabs.paths), len(vocabs.targets)))
                   for batch, contexts in PARITY_SHAPES]
        effect = compact_effect(staging / "fp32.onnx", staging / "code2vec.onnx", batches, OUTPUT_NAMES)
        for kind, name in SHIPPED_VOCAB.items():
            data = (run / "vocab" / f"{kind}.json").read_bytes()
            (staging / name).write_bytes(gzip.compress(data, 9, mtime=0) if name.endswith(".gz") else data)
        files: dict[str, str] = {}
        for name in ("code2vec.onnx", *SHIPPED_VOCAB.values()):
            files[f"code2vec/{name}"] = sha256_file(staging / name)
            os.replace(staging / name, target_dir / name)
        for kind, name in SHIPPED_VOCAB.items():  # a vocabulary stored the other way by an older export
            stale = f"{kind}.json" if name.endswith(".gz") else f"{kind}.json.gz"
            (target_dir / stale).unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    entry = {
        "files": files,
        "onnx": "code2vec/code2vec.onnx",
        "vocab": {kind: f"code2vec/{name}" for kind, name in SHIPPED_VOCAB.items()},
        "inputs": list(INPUT_NAMES),
        "outputs": list(OUTPUT_NAMES),
        "opset": OPSET,
        "dims": {"code": config.code_dim, "embed": config.embed_dim},
        "vocab_sizes": {"tokens": len(vocabs.tokens), "paths": len(vocabs.paths),
                        "targets": len(vocabs.targets)},
        "max_contexts": config.max_contexts,
        "top_k": top_k,
        "metrics": final.get("test") if isinstance(final, dict) else None,
        "config": config.to_dict(),
        "parity": {"max_abs_diff": parity["max_abs_diff"], "tolerance": PARITY_TOLERANCE,
                   "shapes": parity["shapes"]},
        "storage": {"weights": "int8-rows", "bytes_fp32": sizes["bytes_before"], "bytes": sizes["bytes_after"],
                    "effect": effect},
        "torch_version": torch.__version__,
    }
    manifest = merge_manifest(out, "code2vec", entry)
    _atomic_write_json(out / "manifest.json", manifest)
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pathfusion export code2vec", description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=DEFAULT_RUN, help="training run folder (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("models"), help="models folder (default: %(default)s)")
    parser.add_argument("--top-k", type=int, default=10, help="names the graph returns per function")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    try:
        manifest = export(args.run, args.out, args.top_k)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    entry = manifest["models"]["code2vec"]
    size = sum((args.out / name).stat().st_size for name in entry["files"])
    print(f"exported {args.run} → {args.out / 'code2vec'} ({size / 1e6:.1f} MB, "
          f"parity max |diff| {entry['parity']['max_abs_diff']:.2g}); manifest {args.out / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
