"""``python -m pathfusion.model_export.head_from_export``: the exported naming head
(``models/naming``) turned back into a naming run's ``best/`` folder.

Why: a head's torch weights live in the run folder of the machine that trained it (``data/``,
never committed), so on a new machine nothing could continue training the shipped head
(``train naming init=…``) or start a fusion from its decoder (``init_decoder=…``).  The
exported graphs hold every weight — int8 per row, which this module dequantises exactly as
the runtime computes with them — so the folder rebuilt from them is the head the editor runs;
with the encoder rebuilt by :mod:`pathfusion.model_export.onnx_to_hf`, ``train naming
init=shipped`` continues it — the same weights up to the int8 rounding of the graphs (what
that costs, measured: ``docs/training.md``, "The shipped head on a new machine").

How the weights are found: the exporter keeps the names of biases, norms and embedding
tables, but turns each linear weight into an anonymous, transposed ``MatMul`` constant
(``onnx::MatMul_681``).  So the export's own code traces a *probe* — a module of the head's
shape whose every parameter holds distinct random values — and each constant of the probe's
graph is matched to the parameter, or its transpose, that it equals; what the same input of
the same node holds in the shipped graph is then the head's parameter.  Every parameter must be found,
and the rebuilt modules must answer the export's parity inputs as the shipped graphs do
(≤ :data:`PARITY_LIMIT`), or the folder is not written.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from pathfusion.server.context_vocab import VOCAB_FILE

from .export_embedder import load_reference
from .export_naming import (
    PARITY_LIMIT,
    FusionGraph,
    cached_case,
    decoder_examples,
    fusion_examples,
    fusion_graph_diff,
    keys_graph_diff,
    step_graph_diff,
    write_decoder_graphs,
    write_fusion_graph,
)
from .fusion_memory import FusedMemory, FusionShape
from .name_decoder import DecoderShape, NameDecoder
from .naming_model import save_decoder, save_fusion
from .onnx_to_hf import ConversionError, graph_constants
from .onnx_to_hf import build as build_encoder

REPORT_FILE = "rebuilt.json"
HEAD_CANDIDATES = (6, 12, 8, 4, 3, 2, 1)
"""Attention heads are not visible in the weights: the first count whose rebuilt module
answers as the graph does is the head's (6, the training default, is tried first)."""
NodeInput = tuple[str, int, int]
"""A node's name, which of the nodes of that name it is (the exporter names the nodes of a
module called twice alike), which of its inputs."""
Mapping = dict[NodeInput, tuple[str, bool]]
"""A node's input → (the parameter it holds, whether transposed)."""
Constants = tuple[Any, dict[str, np.ndarray]]
"""A graph and its constants (:func:`~pathfusion.model_export.onnx_to_hf.graph_constants`)."""


def _named_nodes(graph: Any) -> dict[tuple[str, int], Any]:
    """The graph's nodes by (name, how many nodes of that name came before)."""
    seen: dict[str, int] = {}
    keyed = {}
    for node in graph.graph.node:
        keyed[(node.name, seen.get(node.name, 0))] = node
        seen[node.name] = seen.get(node.name, 0) + 1
    return keyed


def probe_mappings(module: torch.nn.Module, write_graphs: Callable[[Path], Sequence[Path]],
                   seed: int = 0) -> list[Mapping]:
    """Which parameter of ``module`` each constant input of its exported graphs' nodes holds:
    ``module``'s parameters are overwritten with distinct random values, ``write_graphs(folder)``
    exports it into ``folder`` and returns the graphs' paths, and each graph's
    (dequantisation-folded) constants are matched by value; one mapping per graph.

    Why by node and not by the constant's name: the exporter gives constants of equal
    contents one shared name (a fresh layer's zero biases), so a head's graph may lack names
    the probe's has, while the nodes that read them are the same."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    params = {name: p.detach().numpy() for name, p in module.named_parameters()}
    with tempfile.TemporaryDirectory() as tmp:
        graphs = [graph_constants(path) for path in write_graphs(Path(tmp))]
    return [_match(params, graph, arrays) for graph, arrays in graphs]


def _match(params: dict[str, np.ndarray], graph: Any, arrays: dict[str, np.ndarray]) -> Mapping:
    holds: dict[str, tuple[str, bool]] = {}
    for constant, value in arrays.items():
        for name, array in params.items():
            if array.shape == value.shape and np.array_equal(array, value):
                holds[constant] = (name, False)
            elif array.ndim == 2 and array.T.shape == value.shape and np.array_equal(array.T, value):
                holds[constant] = (name, True)
    return {(name, count, index): holds[value] for (name, count), node in _named_nodes(graph).items()
            for index, value in enumerate(node.input) if value in holds}


class ProbeCache:
    """Probe mappings by the shipped graph they were found for (its sha256) and the shape tried.

    Why: the probe is exported by the torch at hand, and its node names must be those of the
    torch that exported the shipped graph; a job on a machine with another torch (a lent GPU
    runs 2.11, the export here 2.13) carries the mappings found here (``path``) instead of
    probing there.  Without a ``path`` it only avoids probing a shape twice."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.found: dict[str, list[list[list[Any]]]] = {}
        if path is not None and path.is_file():
            self.found = json.loads(path.read_text())

    def mappings(self, graph: Path, shape: str, probe: Callable[[], list[Mapping]]) -> list[Mapping]:
        """The mappings of ``graph`` for ``shape``: kept ones, else ``probe()``'s (then kept)."""
        from pathfusion.server.models import sha256_file

        key = f"{sha256_file(graph)}:{shape}"
        if key not in self.found:
            self.found[key] = [[[*node, *held] for node, held in mapping.items()] for mapping in probe()]
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.path.write_text(json.dumps(self.found) + "\n")
        return [{(row[0], int(row[1]), int(row[2])): (row[3], bool(row[4])) for row in mapping}
                for mapping in self.found[key]]


def load_mapped(module: torch.nn.Module, mappings: Sequence[tuple[Mapping, Path, Constants]]) -> None:
    """Set ``module``'s parameters from each (mapping, graph path, its constants); raises
    :class:`ConversionError` when a node or its constant is missing, or a parameter is left unset."""
    params = dict(module.named_parameters())
    found: set[str] = set()
    with torch.no_grad():
        for mapping, path, (graph, arrays) in mappings:
            nodes = _named_nodes(graph)
            for (node_name, count, index), (name, transposed) in mapping.items():
                node = nodes.get((node_name, count))
                if node is None or index >= len(node.input) or node.input[index] not in arrays:
                    raise ConversionError(f"{path}: no constant at input {index} of node {node_name!r} (for {name}); "
                                          "was it exported by another version of pathfusion export naming?")
                value = arrays[node.input[index]]
                value = value.T if transposed else value
                if tuple(value.shape) != tuple(params[name].shape):
                    raise ConversionError(f"{path}: {node.input[index]!r} has shape {value.shape}, "
                                          f"{name} {tuple(params[name].shape)}")
                params[name].copy_(torch.tensor(value, dtype=torch.float32))
                found.add(name)
    missing = sorted(set(params) - found)
    if missing:
        raise ConversionError(f"the graphs hold no weights for {missing[:5]}")


def rebuild_decoder(naming: Path, meta: dict[str, Any], step_file: str, keys_file: str,
                    probes: ProbeCache | None = None) -> tuple[NameDecoder, torch.Tensor, float]:
    """The decoder of the step and keys graphs in ``naming`` (``meta``: its ``decoder.json``),
    the vocabulary table the step graph holds, and the largest |difference| between the
    rebuilt decoder and the graphs on the export's parity inputs."""
    step, keys = graph_constants(naming / step_file), graph_constants(naming / keys_file)
    step_arrays = step[1]
    table = torch.from_numpy(np.ascontiguousarray(step_arrays["vocab_table"], dtype=np.float32))
    feed = step_arrays.get("decoder.layers.layers.0.linear1.bias")  # renamed only if it equals another
    feed_forward = int(feed.shape[0]) if feed is not None else DecoderShape().feed_forward
    full_vocab = int(step_arrays["decoder.full_to_vocab"].shape[0])
    worst = float("inf")
    for heads in (h for h in HEAD_CANDIDATES if meta["hidden"] % h == 0):
        shape = DecoderShape(meta["layers"], heads, feed_forward, meta["max_length"], DecoderShape().dropout)
        decoder = NameDecoder(meta["hidden"], meta["vocab_ids"], full_vocab, meta["bos_id"], meta["eos_id"],
                              meta["unk_id"], shape).eval()
        worst = _load_decoder(decoder, table, naming / step_file, step, naming / keys_file, keys,
                              probes or ProbeCache())
        if worst <= PARITY_LIMIT:
            return decoder, table, worst
    raise ConversionError(f"{naming / step_file}: no decoder shape rebuilt from it answers as the graph does "
                          f"(|difference| {worst:.2g} > {PARITY_LIMIT})")


def _load_decoder(decoder: NameDecoder, table: torch.Tensor, step_path: Path, step: Constants, keys_path: Path,
                  keys: Constants, probes: ProbeCache) -> float:
    """Fill ``decoder`` from the step and keys graphs; returns its largest |difference| from them."""
    probe = copy.deepcopy(decoder)
    probe_table = torch.randn(table.shape, generator=torch.Generator().manual_seed(1))
    example = cached_case(probe, probe_table, decoder_examples(probe, probe.hidden)[1])[0]

    def write(folder: Path) -> list[Path]:
        paths = [folder / "step.onnx", folder / "keys.onnx"]
        write_decoder_graphs(probe, probe_table, example, example[3], *paths)
        return paths

    step_mapping, keys_mapping = probes.mappings(step_path, f"decoder:{decoder.shape.heads}",
                                                 lambda: probe_mappings(probe, write))
    load_mapped(decoder, [(step_mapping, step_path, step), (keys_mapping, keys_path, keys)])
    examples = decoder_examples(decoder, decoder.hidden)
    cases = [cached_case(decoder, table, example) for example in examples]
    return max(step_graph_diff(step_path, cases, decoder.vocab_ids.numpy()), keys_graph_diff(keys_path, examples))


def _load_fusion(fusion: FusedMemory, hidden: int, path: Path, constants: Constants, probes: ProbeCache) -> float:
    """Fill ``fusion`` from its graph; returns its largest |difference| from it."""
    probe = copy.deepcopy(fusion)
    example = fusion_examples(probe, hidden)[1]

    def write(folder: Path) -> list[Path]:
        write_fusion_graph(FusionGraph(probe).eval(), example, folder / "fusion.onnx")
        return [folder / "fusion.onnx"]

    (mapping,) = probes.mappings(path, f"fusion:{fusion.shape.heads}", lambda: probe_mappings(probe, write))
    load_mapped(fusion, [(mapping, path, constants)])
    return fusion_graph_diff(path, FusionGraph(fusion).eval(), fusion_examples(fusion, hidden))


def rebuild_fusion(naming: Path, fusion_file: str, variant: str, hidden: int,
                   probes: ProbeCache | None = None) -> tuple[FusedMemory, float]:
    """The fusion of the graph ``naming/fusion_file`` and its largest |difference| from the graph."""
    constants = graph_constants(naming / fusion_file)
    arrays = constants[1]
    tokens = arrays.get("fusion.contexts.tokens.weight")
    paths = arrays.get("fusion.contexts.paths.weight")
    if tokens is None or paths is None:
        raise ConversionError(f"{naming / fusion_file}: no context embedding tables")
    feed = arrays.get("fusion.feed_in.bias")
    feed_forward = int(feed.shape[0]) if feed is not None else FusionShape().feed_forward
    worst = float("inf")
    heads_to_try = [h for h in HEAD_CANDIDATES if hidden % h == 0] if variant == "attention" else [FusionShape().heads]
    for heads in heads_to_try:
        fusion = FusedMemory(FusionShape(variant, int(tokens.shape[0]), int(paths.shape[0]), int(tokens.shape[1]),
                                         hidden, heads, feed_forward, FusionShape().dropout)).eval()
        worst = _load_fusion(fusion, hidden, naming / fusion_file, constants, probes or ProbeCache())
        if worst <= PARITY_LIMIT:
            return fusion, worst
    raise ConversionError(f"{naming / fusion_file}: the rebuilt {variant} fusion does not answer as the graph does "
                          f"(|difference| {worst:.2g} > {PARITY_LIMIT})")


def build(models: Path, out: Path, probes: ProbeCache | None = None) -> dict[str, Any]:
    """Write ``out`` — the encoder (a Hugging Face folder), ``decoder.pt``/``decoder.json``,
    for a fusion head ``fusion.pt``/``fusion.json`` and its context vocabulary — from the
    naming head in ``models``; returns (and writes as ``rebuilt.json``) what was checked."""
    manifest_path = models / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path} not found")
    entries = json.loads(manifest_path.read_text())["models"]
    entry, embedder = entries.get("naming"), entries.get("embedder")
    if entry is None or embedder is None:
        raise ConversionError(f"{manifest_path} lists no naming head (or no embedder under it)")
    if entry.get("embedder_id") != embedder.get("id"):
        raise ConversionError(f"the naming head reads {entry.get('embedder_id')}, the embedder here is {embedder.get('id')}")
    naming = models / Path(entry["onnx"]).parent
    meta = json.loads((models / entry["config"]).read_text())
    decoder, table, decoder_diff = rebuild_decoder(naming, meta, Path(entry["onnx"]).name, Path(entry["keys_onnx"]).name,
                                                   probes)
    fusion, fusion_diff = None, None
    if entry.get("fusion_onnx"):
        fusion, fusion_diff = rebuild_fusion(naming, Path(entry["fusion_onnx"]).name, entry["variant"], decoder.hidden,
                                             probes)
    staging = out.with_name(out.name + ".head-tmp")
    shutil.rmtree(staging, ignore_errors=True)
    encoder_report = build_encoder(models, staging)
    bert, _ = load_reference(staging)
    encoder_table = bert.embeddings.word_embeddings.weight[decoder.vocab_ids].T.detach()
    config = SimpleNamespace(max_source_tokens=int(meta["max_source_tokens"]))  # what save_decoder reads of one
    save_decoder(decoder, staging, config)
    if fusion is not None:
        save_fusion(fusion, staging)
        shutil.copy2(models / entry["contexts"], staging / VOCAB_FILE)
    report = {"naming_id": entry["id"], "embedder_id": embedder["id"], "variant": entry.get("variant", "llm"),
              "decoder_max_abs_diff": decoder_diff, "fusion_max_abs_diff": fusion_diff,
              "heads": decoder.shape.heads, "vocab_table_vs_encoder_max_abs_diff":
                  float((table - encoder_table).abs().max()), "encoder": encoder_report}
    (staging / REPORT_FILE).write_text(json.dumps(report, indent=1) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pathfusion.model_export.head_from_export",
                                     description=__doc__.splitlines()[0].strip("`: "))
    parser.add_argument("--models", type=Path, default=Path("models"), help="models folder (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="the best/ folder to write")
    parser.add_argument("--probes", type=Path, default=None,
                        help="probe mappings to read (and to add those found): a JSON file (ProbeCache)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    try:
        report = build(args.models, args.out, ProbeCache(args.probes) if args.probes else None)
    except (ConversionError, FileNotFoundError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
