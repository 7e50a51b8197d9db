"""``pathfusion export naming``: the generative naming head as an ONNX decoder-step graph.

The runtime (:mod:`pathfusion.server.name_generator`) runs the embedder's graph once on the masked
function (its ``token_states`` output is the decoder's memory) and then this graph once per
beam step: ``(token [B, 1], position [1], past [layers, 2, B, t, H], memory [B | 1, S, H],
source [B | 1, S], attention_mask [B | 1, S], cross) → (generated [B, K], copied [B, S],
present [layers, 2, B, 1, H])`` — the next wordpiece's distribution after each prefix in two
parts, the probability of generating each of the ``K`` vocabulary wordpieces (their ids are
``decoder.json``'s ``vocab_ids``) and of copying each source position
(:meth:`NameDecoder.next_parts_cached`; the runtime adds them up over those wordpieces only,
``pathfusion.server.name_candidates.Candidates``, where spreading them over all 30,522
wordpieces in the graph cost ≈ 1.1 ms a step), where a prefix is its last wordpiece
``token`` plus the self-attention keys and values of the earlier ones (``past``, which the
runtime extends with ``present`` step by step).  A batch of 1 for the
function's side serves every prefix of a beam; the cross-attention keys and values of the
function (``cross``) come from a second small graph, once per function.  Why the cache: a
step reads one wordpiece instead of the whole prefix — measured 4.9 ms for a beam of six at
the first step against 12.3 ms at the twelfth without it (one thread, a busy machine).

The head is only valid over the encoder it was trained with, so the export takes the run's
``best/`` folder (encoder + ``decoder.pt``) and records the embedder id it belongs to; the
server refuses a head whose embedder is not the folder's (``docs/design.md`` §4).

Stored like the embedder: weights int8 with one scale per row, computed in fp32
(:mod:`pathfusion.model_export.compact_onnx`); the fp32 graph's parity with torch (≤ 1e-4) is checked on
every export and the int8 graph's deviation is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pathfusion.server.context_vocab import VOCAB_FILE
from pathfusion.server.models import sha256_file

from .compact_onnx import compact
from .export_code2vec import legacy_onnx_export
from .export_embedder import load_reference, write_manifest_entry
from .fusion_memory import FusedMemory
from .name_decoder import EPSILON, NameDecoder
from .name_lexicon import (
    DEFAULT_CORPUS,
    LEXICON_FILE,
    Lexicon,
    build_lexicon,
    lexicon_fields,
    write_lexicon,
)
from .naming_model import DECODER_META, load_decoder, load_fusion

SUBDIR = "naming"
GRAPH_FILE = "decoder.int8.onnx"
FP32_FILE = "decoder.onnx"
KEYS_FILE = "keys.int8.onnx"
KEYS_FP32_FILE = "keys.onnx"
META_FILE = "decoder.json"
INPUT_NAMES = ("token", "position", "past", "memory", "source", "attention_mask", "cross")
OUTPUT_NAMES = ("generated", "copied", "present")
KEYS_INPUT = "memory"
KEYS_OUTPUT = "cross"
PARITY_LIMIT = 1e-4
FUSION_FILE = "fusion.int8.onnx"
FUSION_FP32_FILE = "fusion.onnx"
FUSION_INPUTS = ("token_states", "source", "attention_mask", "contexts", "context_mask")
FUSION_OUTPUTS = ("memory", "memory_source", "memory_mask")


class ExportError(RuntimeError):
    pass


class DecoderStep(torch.nn.Module):
    """One beam step, with the vocabulary's embedding rows as a constant."""

    vocab_table: torch.Tensor

    def __init__(self, decoder: NameDecoder, vocab_table: torch.Tensor) -> None:
        super().__init__()
        self.decoder = decoder.eval()
        self.register_buffer("vocab_table", vocab_table.detach().clone())

    def forward(self, token: torch.Tensor, position: torch.Tensor, past: torch.Tensor, memory: torch.Tensor,
                source: torch.Tensor, attention_mask: torch.Tensor, cross: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.decoder.next_parts_cached(token, position, past, memory, source, attention_mask == 0,
                                              self.vocab_table, cross)


class CrossKeys(torch.nn.Module):
    """Once per function: every layer's cross-attention keys and values of the memory."""

    def __init__(self, decoder: NameDecoder) -> None:
        super().__init__()
        self.decoder = decoder.eval()

    def forward(self, memory: torch.Tensor) -> torch.Tensor:
        return self.decoder.cross_keys(memory)


class FusionGraph(torch.nn.Module):
    """Once per function, between the embedder and the decoder: the variant's memory from the
    token states and the path contexts (:class:`~pathfusion.model_export.fusion_memory.FusedMemory`),
    with the source ids and mask of its positions (what the decoder copies from and attends to)."""

    def __init__(self, fusion: FusedMemory) -> None:
        super().__init__()
        self.fusion = fusion.eval()

    def forward(self, token_states: torch.Tensor, source: torch.Tensor, attention_mask: torch.Tensor,
                contexts: torch.Tensor, context_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        memory, memory_source, pad = self.fusion(token_states, source, attention_mask == 0, contexts, context_mask == 0)
        return memory, memory_source, (~pad).to(torch.int64)


def fusion_examples(fusion: FusedMemory, hidden: int, seed: int = 1) -> list[tuple[torch.Tensor, ...]]:
    """Fusion inputs of several shapes: one function (as the runtime feeds it), a padded batch,
    and a function without any path context (one padding context)."""
    generator = torch.Generator().manual_seed(seed)
    tokens, paths = fusion.shape.token_rows, fusion.shape.path_rows
    out: list[tuple[torch.Tensor, ...]] = []
    for batch, length, count in ((1, 23, 40), (3, 17, 9), (1, 8, 1)):
        states = torch.randn(batch, length, hidden, generator=generator)
        source = torch.randint(999, 30000, (batch, length), generator=generator)
        mask = torch.ones(batch, length, dtype=torch.int64)
        mask[-1, length - 2:] = 0
        contexts = torch.stack([torch.randint(0, tokens, (batch, count), generator=generator),
                                torch.randint(0, paths, (batch, count), generator=generator),
                                torch.randint(0, tokens, (batch, count), generator=generator)], dim=-1)
        context_mask = torch.ones(batch, count, dtype=torch.int64)
        if count == 1:
            contexts.zero_()
            context_mask.zero_()
        elif batch > 1:
            context_mask[0, count - 4:] = 0
        out.append((states, source, mask, contexts, context_mask))
    return out


def fusion_graph_diff(path: Path, graph: FusionGraph, examples: Sequence[tuple[torch.Tensor, ...]]) -> float:
    worst = 0.0
    for example in examples:
        with torch.no_grad():
            want = [t.numpy() for t in graph(*example)]
        got = _run(path, FUSION_INPUTS, FUSION_OUTPUTS, example)
        if any(g.shape != w.shape for g, w in zip(got, want, strict=True)) or \
                not all(np.array_equal(g, w) for g, w in zip(got[1:], want[1:], strict=True)):
            return float("inf")
        worst = max(worst, _finite_max_diff(got[0], want[0]))
    return worst


def write_fusion_graph(graph: FusionGraph, example: tuple[torch.Tensor, ...], path: Path) -> None:
    """The fp32 fusion graph of ``graph`` at ``path`` (traced on ``example``)."""
    dynamic = {"token_states": {0: "batch", 1: "seq"}, "source": {0: "batch", 1: "seq"},
               "attention_mask": {0: "batch", 1: "seq"}, "contexts": {0: "batch", 1: "contexts"},
               "context_mask": {0: "batch", 1: "contexts"}, "memory": {0: "batch", 1: "positions"},
               "memory_source": {0: "batch", 1: "positions"}, "memory_mask": {0: "batch", 1: "positions"}}
    legacy_onnx_export(graph, example, path, FUSION_INPUTS, list(FUSION_OUTPUTS), dynamic)


def write_decoder_graphs(decoder: NameDecoder, vocab_table: torch.Tensor, step_example: tuple[torch.Tensor, ...],
                         memory: torch.Tensor, step_path: Path, keys_path: Path) -> None:
    """The fp32 decoder-step graph (traced on ``step_example``, the step graph's inputs) and
    the cross-keys graph (traced on ``memory``) of ``decoder``."""
    dynamic = {"token": {0: "batch"}, "past": {2: "batch", 3: "steps"}, "memory": {0: "batch", 1: "seq"},
               "source": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
               "cross": {2: "batch", 3: "seq"}, "generated": {0: "batch"}, "copied": {0: "batch", 1: "seq"},
               "present": {2: "batch"}}
    legacy_onnx_export(DecoderStep(decoder, vocab_table).eval(), step_example, step_path, INPUT_NAMES,
                       list(OUTPUT_NAMES), dynamic)
    # .eval() on the wrapper itself: the exporter restores the wrapper's mode on every
    # submodule afterwards, and a wrapper left in training mode turns dropout back on.
    legacy_onnx_export(CrossKeys(decoder).eval(), (memory,), keys_path, (KEYS_INPUT,), [KEYS_OUTPUT],
                       {KEYS_INPUT: {0: "batch", 1: "seq"}, KEYS_OUTPUT: {2: "batch", 3: "seq"}})


def _export_fusion(fusion: FusedMemory, hidden: int, staging: Path) -> dict[str, float]:
    """``fusion.onnx`` (checked against torch) and its int8-row ``fusion.int8.onnx`` in ``staging``."""
    graph = FusionGraph(fusion).eval()
    examples = fusion_examples(fusion, hidden)
    write_fusion_graph(graph, examples[1], staging / FUSION_FP32_FILE)
    parity = fusion_graph_diff(staging / FUSION_FP32_FILE, graph, examples)
    if parity > PARITY_LIMIT:
        raise ExportError(f"fp32 fusion graph differs from torch by {parity:.2g} > {PARITY_LIMIT}")
    compact(staging / FUSION_FP32_FILE, staging / FUSION_FILE)
    int8 = fusion_graph_diff(staging / FUSION_FILE, graph, examples)
    return {"fusion_max_abs_diff": parity, "fusion_int8_max_abs_diff": int8}


def decoder_examples(decoder: NameDecoder, hidden: int, seed: int = 0) -> list[tuple[torch.Tensor, ...]]:
    """Inputs of several shapes (batch, prefix, source length, padding) for parity checks;
    the last is a beam: several prefixes over one function's memory (batch 1), as the
    runtime feeds it."""
    generator = torch.Generator().manual_seed(seed)
    vocab = decoder.vocab_ids
    out: list[tuple[torch.Tensor, ...]] = []
    for batch, steps, length in ((1, 1, 9), (3, 4, 17), (5, 7, 40), (4, 3, 12)):
        tokens = torch.cat([torch.full((batch, 1), decoder.bos_id),
                            vocab[torch.randint(3, len(vocab), (batch, steps - 1), generator=generator)]], dim=1)
        source = torch.randint(999, 30000, (batch, length), generator=generator)
        mask = torch.ones(batch, length, dtype=torch.int64)
        mask[0, length - 3:] = 0
        source[0, length - 3:] = 0
        memory = torch.randn(batch, length, hidden, generator=generator)
        if batch == 4:
            source, mask, memory = source[:1], mask[:1], memory[:1]
        if steps > 1:  # a copied wordpiece outside the vocabulary as an input
            tokens[-1, -1] = source[-1, 2]
        with torch.no_grad():
            cross = decoder.cross_keys(memory)
        out.append((tokens, memory, source, mask, cross))
    return out


def cached_case(decoder: NameDecoder, vocab_table: torch.Tensor, example: tuple[torch.Tensor, ...]
                ) -> tuple[tuple[torch.Tensor, ...], np.ndarray, np.ndarray]:
    """``example`` (whole prefixes) as the step graph's inputs — its last wordpiece, with the
    keys and values of the earlier ones computed by torch step by step — and what the graph
    must answer: the log-probabilities of torch *without* the cache (so the check covers the
    cache and the export together), and the last wordpiece's keys and values."""
    tokens, memory, source, mask, cross = example
    pad = mask == 0
    layers, hidden = cross.shape[0], memory.shape[-1]
    past = torch.zeros(layers, 2, tokens.shape[0], 0, hidden)
    with torch.no_grad():
        for step in range(tokens.shape[1]):
            _, present = decoder.next_log_probs_cached(tokens[:, step:step + 1], torch.tensor([step]), past, memory,
                                                       source, pad, vocab_table, cross)
            if step < tokens.shape[1] - 1:
                past = torch.cat([past, present], dim=3)
        want = decoder.next_log_probs(tokens, memory, source, pad, vocab_table, cross).numpy()
    last = tokens.shape[1] - 1
    return (tokens[:, last:], torch.tensor([last]), past, memory, source, mask, cross), want, present.numpy()


def _run(path: Path, names: Sequence[str], outputs: Sequence[str], example: Sequence[torch.Tensor]
         ) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {name: tensor.numpy() for name, tensor in zip(names, example, strict=True)}
    return [np.asarray(out) for out in session.run(list(outputs), feeds)]


def _finite_max_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Max |a − b| over the entries both hold finite (−∞-like floors, e.g. log 1e-9, match)."""
    both = np.isfinite(a) & np.isfinite(b)
    return float(np.abs(a[both] - b[both]).max())


def spread(generated: np.ndarray, copied: np.ndarray, source: np.ndarray, vocab_ids: np.ndarray,
           full_vocab: int) -> np.ndarray:
    """The step graph's two parts → ``[B, V]`` log-probabilities over the full vocabulary
    (:meth:`NameDecoder._spread` in numpy), to compare with torch."""
    prob = np.zeros((generated.shape[0], full_vocab), dtype=np.float64)
    prob[:, vocab_ids] = generated
    rows = np.arange(generated.shape[0])[:, None]
    np.add.at(prob, (rows, np.broadcast_to(source, copied.shape)), copied)
    return np.log(prob + EPSILON)


def step_graph_diff(path: Path, cases: Sequence[tuple[tuple[torch.Tensor, ...], np.ndarray, np.ndarray]],
                    vocab_ids: np.ndarray) -> float:
    worst = 0.0
    for inputs, want, present in cases:
        generated, copied, got_present = _run(path, INPUT_NAMES, OUTPUT_NAMES, inputs)
        got = spread(generated, copied, inputs[4].numpy(), vocab_ids, want.shape[1])
        worst = max(worst, _finite_max_diff(got, want), _finite_max_diff(got_present, present))
    return worst


def keys_graph_diff(path: Path, examples: Sequence[tuple[torch.Tensor, ...]]) -> float:
    return max(_finite_max_diff(_run(path, (KEYS_INPUT,), (KEYS_OUTPUT,), (ex[1],))[0], ex[4].numpy())
               for ex in examples)


def check_inputs(run_best: Path, models: Path) -> dict[str, Any]:
    """The embedder's manifest entry of ``models``, once both folders are what an export needs.
    Why before anything else: the CLI builds the name lexicon from the whole train split
    first, which takes minutes that a mistyped folder should not cost."""
    if not (run_best / DECODER_META).is_file():
        what = "no such folder" if not run_best.exists() else f"no {DECODER_META} there"
        raise ExportError(f"{run_best} is not a naming run's best/ folder ({what}): pass --run-best DIR")
    manifest_path = models / "manifest.json"
    if not manifest_path.is_file():
        raise ExportError(f"{manifest_path} not found: export the embedder first")
    embedder_entry = json.loads(manifest_path.read_text())["models"].get("embedder")
    if embedder_entry is None:
        raise ExportError(f"{manifest_path} has no embedder: the naming head reads the embedder's token states")
    return dict(embedder_entry)


def export_naming(run_best: Path, models: Path, model_id: str | None = None, int8: bool = True,
                  lexicon: Lexicon | None = None) -> dict[str, Any]:
    """Export ``run_best`` (a naming run's ``best/``) into ``models/naming``; returns the
    manifest entry.  ``int8=False`` ships the fp32 graphs instead (tests of exact parity);
    ``lexicon``: the words the runtime keeps names to (:mod:`pathfusion.model_export.name_lexicon`;
    None: no filter)."""
    graph_file, keys_file = (GRAPH_FILE, KEYS_FILE) if int8 else (FP32_FILE, KEYS_FP32_FILE)
    embedder_entry = check_inputs(run_best, models)
    bert, _ = load_reference(run_best)
    decoder = load_decoder(run_best).eval()
    fusion = load_fusion(run_best, int(bert.config.hidden_size)).eval()
    if fusion.shape.variant == "code2vec":
        raise ExportError(f"{run_best} is a code2vec-only head (trained for comparison): it reads no token states "
                          "and is not served")
    meta = json.loads((run_best / DECODER_META).read_text())
    table = bert.embeddings.word_embeddings.weight[decoder.vocab_ids].T
    hidden = int(bert.config.hidden_size)
    examples = decoder_examples(decoder, hidden)
    cases = [cached_case(decoder, table.detach(), example) for example in examples]
    target = models / SUBDIR
    with tempfile.TemporaryDirectory(dir=models) as tmp:
        staging = Path(tmp)
        write_decoder_graphs(decoder, table, cases[1][0], examples[1][1], staging / FP32_FILE,
                             staging / KEYS_FP32_FILE)
        vocab_ids = decoder.vocab_ids.numpy()
        parity = max(step_graph_diff(staging / FP32_FILE, cases, vocab_ids),
                     keys_graph_diff(staging / KEYS_FP32_FILE, examples))
        if parity > PARITY_LIMIT:
            raise ExportError(f"fp32 decoder differs from torch by {parity:.2g} > {PARITY_LIMIT}")
        compact(staging / FP32_FILE, staging / GRAPH_FILE)
        compact(staging / KEYS_FP32_FILE, staging / KEYS_FILE)
        int8_diff = step_graph_diff(staging / GRAPH_FILE, cases, vocab_ids)
        keys_int8_diff = keys_graph_diff(staging / KEYS_FILE, examples)
        shipped = [graph_file, keys_file, META_FILE]
        fusion_metrics: dict[str, float] = {}
        fusion_entry: dict[str, str] = {}
        if fusion.shape.uses_contexts:
            fusion_metrics = _export_fusion(fusion, hidden, staging)
            shutil.copy2(run_best / VOCAB_FILE, staging / VOCAB_FILE)
            fusion_graph = FUSION_FILE if int8 else FUSION_FP32_FILE
            shipped += [fusion_graph, VOCAB_FILE]
            fusion_entry = {"variant": fusion.shape.variant, "fusion_onnx": f"{SUBDIR}/{fusion_graph}",
                            "contexts": f"{SUBDIR}/{VOCAB_FILE}"}
        runtime_meta = {"bos_id": decoder.bos_id, "eos_id": decoder.eos_id, "unk_id": decoder.unk_id,
                        "max_length": decoder.shape.max_length, "max_source_tokens": meta["max_source_tokens"],
                        "hidden": hidden, "vocabulary": len(decoder.vocab_ids), "keys": keys_file,
                        "layers": decoder.shape.layers, "step": "cached, two parts",
                        "vocab_ids": vocab_ids.tolist(), "variant": fusion.shape.variant}
        # compact: the vocabulary's 8,003 ids one per line were a third of the file (24 KB of
        # the tracked tree's 40 MiB budget)
        (staging / META_FILE).write_text(json.dumps(runtime_meta, separators=(",", ":")) + "\n")
        if lexicon is not None:
            write_lexicon(lexicon.words, staging / LEXICON_FILE)
            shipped.append(LEXICON_FILE)
        ready = staging / "ready"
        ready.mkdir()
        for name in shipped:
            (staging / name).replace(ready / name)
        # Two renames swap the whole folder, so the previous head is never half replaced; it
        # leaves with the staging folder.
        if target.exists():
            target.replace(staging / "previous")
        ready.replace(target)
    files = {f"{SUBDIR}/{name}": sha256_file(target / name) for name in shipped}
    entry = {
        **fusion_entry,
        "id": model_id or run_best.parent.name,
        "files": files,
        "onnx": f"{SUBDIR}/{graph_file}",
        "keys_onnx": f"{SUBDIR}/{keys_file}",
        "config": f"{SUBDIR}/{META_FILE}",
        "embedder_id": embedder_entry["id"],
        "inputs": list(INPUT_NAMES),
        "outputs": list(OUTPUT_NAMES),
        "sizes": {name: (target / Path(name).name).stat().st_size for name in files},
        "metrics": {"parity": {"max_abs_diff": parity}, "int8_max_abs_diff": int8_diff,
                    "keys_int8_max_abs_diff": keys_int8_diff, **fusion_metrics},
        "torch_version": torch.__version__,
        **(lexicon_fields(SUBDIR, lexicon) if lexicon is not None else {}),
    }
    return entry


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pathfusion export naming", description=__doc__.splitlines()[0])
    parser.add_argument("--run-best", type=Path, default=Path("data/runs/naming/best"),
                        help="a naming run's best/ folder (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("models"), help="models folder (default: %(default)s)")
    parser.add_argument("--id", default=None, help="model id recorded in the manifest")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS,
                        help="the corpus whose train names give the name lexicon (default: %(default)s)")
    parser.add_argument("--no-lexicon", action="store_true",
                        help="ship no name lexicon: the runtime then keeps names with made-up subtokens")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    if not args.no_lexicon and not (args.corpus / "train.jsonl.gz").is_file():
        print(f"pathfusion export naming: error: the name lexicon is built from {args.corpus / 'train.jsonl.gz'}, "
              "which is not there: build the corpus (make corpus), pass --corpus DIR, or --no-lexicon", file=sys.stderr)
        return 1
    try:
        check_inputs(args.run_best, args.out)
        lexicon = None if args.no_lexicon else build_lexicon(args.corpus)
        entry = export_naming(args.run_best, args.out, args.id, lexicon=lexicon)
        write_manifest_entry(args.out, entry, name="naming")
    except (ExportError, FileNotFoundError, ValueError) as exc:
        print(f"pathfusion export naming: error: {exc}", file=sys.stderr)
        return 1
    print(f"exported naming head {entry['id']} → {args.out / SUBDIR} (parity {entry['metrics']['parity']['max_abs_diff']:.2g}, "
          f"int8 max |diff| {entry['metrics']['int8_max_abs_diff']:.2g}; reads {entry['embedder_id']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
