"""``pathfusion export fusion``: the trained variants (``data/runs/fusion/<variant>/``) →
``models/fusion/`` + the ``fusion`` entry of ``manifest.json`` (docs/design.md §6).

Per variant two graphs:

* ``<variant>.onnx`` — inputs ``llm`` [B, 384] and ``code`` [B, 384] (a variant that uses
  only one of them still declares both; the runtime feeds what the graph asks for), outputs
  ``top_ids``/``top_probs`` (naming) and ``search_vector``;
* ``<variant>.query.onnx`` — the query encoder: inputs ``ids``/``mask`` (token encoders,
  vocabulary ``query_vocab.json``) or ``query_llm`` (the ``llm`` encoder).

Each graph is first written in fp32 and checked against torch on random batches (max
|diff| ≤ :data:`PARITY_TOLERANCE`, the contract of docs/design.md §6); the shipped file is
then the weight-compacted one (:mod:`pathfusion.model_export.compact_onnx`: int8 weights dequantised in
the graph, fp32 compute), whose distance to torch is recorded as well.  To keep the tracked
tree within its 40 MiB, ``--keep default`` (the command's default) ships only the variant
that validation picks plus ``code2vec``'s search part; ``--keep all`` writes every variant
for comparison.  The entry records each shipped variant's test metrics and the ``default``
variant: the best test-free choice, i.e. the highest *validation* naming F1 plus search MRR.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pathfusion.server.atomic import write_atomic
from pathfusion.server.models import sha256_file
from pathfusion.server.query import QueryVocab

from .compact_onnx import compact
from .export_code2vec import legacy_onnx_export, merge_manifest
from .fusion import VARIANTS, FusionConfig, FusionExport, FusionModel
from .train_fusion import RUNS, QuerySide

PARITY_TOLERANCE = 1e-4
ENTRY = "fusion"


class ExportError(RuntimeError):
    """A run folder is incomplete or an exported graph disagrees with torch."""


def load_variant(folder: Path) -> tuple[FusionModel, QuerySide, dict[str, Any]]:
    """The trained model and query side of one run folder (eval mode)."""
    for needed in ("config.json", "model.pt", "query.pt", "test.json"):
        if not (folder / needed).is_file():
            raise ExportError(f"{folder / needed} not found; run python -m pathfusion.model_export.train_fusion first")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    model = FusionModel(FusionConfig.from_dict(config["fusion"]))
    model.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
    query_cfg = config["query"]
    vocab = QueryVocab.load(folder / "query_vocab.json") if (folder / "query_vocab.json").is_file() else None
    query = QuerySide(query_cfg["kind"], query_cfg["pooling"], vocab, model.config.search_dim, model.config.llm_dim)
    query.load_state_dict(torch.load(folder / "query.pt", weights_only=True))
    model.eval()
    query.eval()
    return model, query, config


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _feeds(session: Any, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {i.name: values[i.name] for i in session.get_inputs()}


def fusion_parity(model: FusionModel, path: Path, seed: int = 0) -> float:
    """Largest |onnxruntime − torch| of the naming probabilities and search vectors."""
    session = _session(path)
    rng = np.random.default_rng(seed)
    worst = 0.0
    wrapper = FusionExport(model).eval()
    for batch in (1, 3, 64):
        llm = rng.standard_normal((batch, model.config.llm_dim)).astype(np.float32)
        llm /= np.linalg.norm(llm, axis=1, keepdims=True)
        code = np.tanh(rng.standard_normal((batch, model.config.code_dim))).astype(np.float32)
        with torch.no_grad():
            _, probs, vector = wrapper(torch.from_numpy(llm), torch.from_numpy(code))
        ids_o, probs_o, vector_o = session.run(None, _feeds(session, {"llm": llm, "code": code}))
        # ids may differ on ties: compare torch's probability of onnxruntime's ids
        with torch.no_grad():
            full = torch.softmax(model.naming_logits(torch.from_numpy(llm), torch.from_numpy(code)), -1).numpy()
        picked = np.take_along_axis(full, ids_o.astype(np.int64), axis=1)
        worst = max(worst, float(np.abs(picked - probs_o).max()), float(np.abs(probs.numpy() - probs_o).max()),
                    float(np.abs(vector.numpy() - vector_o).max()))
    return worst


def query_parity(query: QuerySide, path: Path, seed: int = 0) -> float:
    session = _session(path)
    rng = np.random.default_rng(seed)
    worst = 0.0
    words = ["read", "the", "config", "file", "and", "return", "json", "parse", "url", "x"]
    for batch in (1, 4, 16):
        texts = [" ".join(rng.choice(words, size=int(rng.integers(0, 40)))) for _ in range(batch)]
        query_llm = rng.standard_normal((batch, 384)).astype(np.float32)
        with torch.no_grad():
            expected = query(texts, torch.from_numpy(query_llm)).numpy()
        if query.kind == "llm":
            feeds = {"query_llm": query_llm}
        else:
            assert query.vocab is not None
            ids, mask = query.vocab.encode(texts)
            feeds = {"ids": ids, "mask": mask}
        (got,) = session.run(None, _feeds(session, feeds))
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def export_query(query: QuerySide, path: Path) -> None:
    if query.kind == "llm":
        example: tuple[torch.Tensor, ...] = (torch.randn(2, 384),)
        legacy_onnx_export(query.encoder, example, path, ["query_llm"], ["query_vector"],
                           {"query_llm": {0: "batch"}, "query_vector": {0: "batch"}}, DeprecationWarning)
        return
    example = (torch.ones(2, 5, dtype=torch.int64), torch.ones(2, 5, dtype=torch.float32))
    axes = {0: "batch", 1: "tokens"}
    legacy_onnx_export(query.encoder, example, path, ["ids", "mask"], ["query_vector"],
                       {"ids": axes, "mask": axes, "query_vector": {0: "batch"}}, DeprecationWarning)


def embedder_id(models: Path) -> str:
    """The id of the embedder whose vectors the fusions were trained on (the shipped one)."""
    config = models / "embedder" / "embedder.json"
    if not config.is_file():
        raise ExportError(f"{config} not found; the fusions are trained on the shipped embedder's vectors")
    return str(json.loads(config.read_text(encoding="utf-8"))["id"])


def export_variant(variant: str, runs: Path, staging: Path) -> dict[str, Any]:
    """Write ``<variant>.onnx`` and ``<variant>.query.onnx`` (compacted) into ``staging``."""
    model, query, config = load_variant(runs / variant)
    result = json.loads((runs / variant / "test.json").read_text(encoding="utf-8"))
    full, full_query = staging / f"{variant}.fp32.onnx", staging / f"{variant}.query.fp32.onnx"
    example = (torch.randn(2, model.config.llm_dim), torch.randn(2, model.config.code_dim))
    legacy_onnx_export(FusionExport(model).eval(), example, full, ["llm", "code"],
                       ["top_ids", "top_probs", "search_vector"],
                       {"llm": {0: "batch"}, "code": {0: "batch"}, "top_ids": {0: "batch"},
                        "top_probs": {0: "batch"}, "search_vector": {0: "batch"}}, DeprecationWarning)
    export_query(query, full_query)
    parity = {"fusion": fusion_parity(model, full), "query": query_parity(query, full_query)}
    if max(parity.values()) > PARITY_TOLERANCE:
        raise ExportError(f"{variant}: ONNX differs from torch by {parity} (> {PARITY_TOLERANCE})")
    shipped, shipped_query = staging / f"{variant}.onnx", staging / f"{variant}.query.onnx"
    sizes = {"fusion": compact(full, shipped), "query": compact(full_query, shipped_query)}
    compacted = {"fusion": fusion_parity(model, shipped), "query": query_parity(query, shipped_query)}
    full.unlink()
    full_query.unlink()
    outputs = ["top_ids", "top_probs", "search_vector"]
    if variant == "code2vec":  # its names come from code2vec's own head: ship the search part only
        sizes["fusion"]["bytes_after"] = search_only(shipped)
        outputs = ["search_vector"]
    entry: dict[str, Any] = {
        "outputs": outputs,
        "onnx": f"fusion/{variant}.onnx", "query_onnx": f"fusion/{variant}.query.onnx",
        "query": {"kind": query.kind, "pooling": query.pooling,
                  "input": "query_llm" if query.kind == "llm" else "tokens"},
        "dims": {"llm": model.config.llm_dim, "code": model.config.code_dim, "search": model.config.search_dim},
        "top_k": model.config.top_k, "config": config,
        "parity_fp32": parity, "compact_max_abs_diff": compacted,
        "bytes": {k: v["bytes_after"] for k, v in sizes.items()},
        "metrics": result["test"], "valid": result["valid"],
    }
    if query.vocab is not None:
        query.vocab.save(staging / "query_vocab.json")
        entry["query_vocab"] = "fusion/query_vocab.json"
    return entry


def search_only(path: Path) -> int:
    """Cut ``path`` down to the ``search_vector`` output in place (naming head dropped);
    returns its new size."""
    import onnx
    from onnx import utils

    model = onnx.load(str(path))
    inputs = [i.name for i in model.graph.input]
    onnx.save(utils.Extractor(model).extract_model(inputs, ["search_vector"]), str(path))
    return path.stat().st_size


def _validation_score(entry: dict[str, Any]) -> float:
    valid = entry["valid"]
    return float(valid["naming"].get("f1", 0.0)) + float(valid["search"].get("mrr", 0.0))


def export(runs: Path = RUNS, out: Path = Path("models"), variants: Sequence[str] = VARIANTS,
           keep: str = "all") -> dict[str, Any]:
    """Export ``variants`` of ``runs`` into ``out/fusion`` and merge the manifest entry.

    ``keep="default"`` ships only the variant that validation picks plus ``code2vec`` (the
    single-source baseline, search part only): ``models/`` must stay small enough for a remote
    GPU job to carry it with data (``docs/training.md``); the others' scores stay in
    ``docs/results.md``, and ``keep="all"`` exports them for comparison."""
    if keep not in ("all", "default"):
        raise ExportError(f"keep must be all or default, not {keep!r}")
    target = out / "fusion"
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=target))
    try:
        trained_on = embedder_id(out)
        entries = {v: {**export_variant(v, runs, staging), "embedder": trained_on} for v in variants}
        default = max(entries, key=lambda v: _validation_score(entries[v]))
        if keep == "default":
            entries = {v: e for v, e in entries.items() if v in (default, "code2vec")}
        shipped = {Path(e[k]).name for e in entries.values() for k in ("onnx", "query_onnx", "query_vocab") if k in e}
        for item in target.glob("*.onnx"):  # graphs of variants no longer shipped
            if item.name not in shipped:
                item.unlink()
        for item in staging.iterdir():
            if item.name in shipped:
                shutil.move(str(item), target / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    files: dict[str, str] = {}
    for entry in entries.values():
        for key in ("onnx", "query_onnx", "query_vocab"):
            if key in entry:
                files[entry[key]] = sha256_file(out / entry[key])
    manifest = merge_manifest(out, ENTRY, {"files": files, "default": default, "variants": entries})
    write_atomic(out / "manifest.json", (json.dumps(manifest, indent=1) + "\n").encode())
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pathfusion export fusion", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, default=RUNS)
    parser.add_argument("--out", type=Path, default=Path("models"))
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--keep", choices=("default", "all"), default="default",
                        help="ship the best variant (+ code2vec's search part) or all of them (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        manifest = export(args.runs, args.out, args.variants, args.keep)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    entry = manifest["models"][ENTRY]
    for variant, item in entry["variants"].items():
        print(f"{variant}: {sum(item['bytes'].values()) / 1e6:.1f} MB, parity fp32 {item['parity_fp32']}, "
              f"compact {item['compact_max_abs_diff']}")
    print(f"default variant: {entry['default']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
