"""CPU cost of a naming-head training step over the frozen shipped encoder, per variant.

What the CPU route of the fusions pays (``docs/training.md``): real validation functions
(``data/naming-pairs/valid.npz``, their path contexts extracted as training does), the shipped
encoder rebuilt from ``models/`` (frozen, as the fusion runs train), a decoder of the shipped
shape, one optimiser step per batch of ``--batch`` functions, ``--threads`` torch threads.
Variants are timed alternately, ``--steps`` steps each per round, after one warm-up step.

``--precisions fp32,bf16`` times each variant in both, alternating too: ``bf16`` is the
forward pass under the CPU's bf16 autocast that ``--set cpu_bf16=true`` gives a training run
(:func:`pathfusion.model_export.run_files.bf16_autocast`; only where the CPU computes bf16
natively), reported as ``<variant>+bf16``.  Batches are consecutive validation functions, not
sorted by length as training's are, so every batch pads to about the longest length: the
cost per function is an upper bound on a training step's.

    .venv/bin/python benchmarks/train_naming_speed.py [--variants llm,attention] [--steps 3] [--rounds 2] \
        [--precisions fp32,bf16]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import save_json  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    import torch

    from pathfusion.model_export.context_pack import contexts_of_sources
    from pathfusion.model_export.export_embedder import load_reference
    from pathfusion.model_export.fusion_memory import FusedMemory, FusionShape
    from pathfusion.model_export.name_decoder import DecoderShape, NameDecoder
    from pathfusion.model_export.naming_model import NamingModel, batch_tensors, context_tensors
    from pathfusion.model_export.naming_pack import NamingExamples, naming_records
    from pathfusion.model_export.run_files import bf16_autocast
    from pathfusion.model_export.train_embedder import resolve_base
    from pathfusion.server.context_vocab import ContextVocab

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pack", type=Path, default=ROOT / "data" / "naming-pairs")
    parser.add_argument("--corpus", type=Path, default=ROOT / "data" / "corpus")
    parser.add_argument("--vocab", type=Path, default=ROOT / "models" / "naming" / "contexts.json.gz")
    parser.add_argument("--variants", default="llm,attention")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precisions", default="fp32", help="fp32 and/or bf16 (default: %(default)s)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "train_naming_speed.json")
    args = parser.parse_args(argv)
    precisions = args.precisions.split(",")
    if not precisions or set(precisions) - {"fp32", "bf16"}:
        parser.error(f"--precisions: fp32 and/or bf16, not {args.precisions!r}")
    autocasts = {p: bf16_autocast(torch.device("cpu"), cpu=p == "bf16") for p in precisions}  # refuses
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    examples = NamingExamples.load(args.pack / "valid.npz")
    count = args.batch * (args.steps * args.rounds + 1)
    sources = [r["masked_code"] for _, r in zip(range(count), naming_records(args.corpus, "valid"), strict=False)]
    vocab = ContextVocab.load(args.vocab)
    started = time.perf_counter()
    contexts = contexts_of_sources(sources, vocab, processes=1)
    extract_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        bert, tokenizer = load_reference(resolve_base("shipped", Path(tmp), ROOT / "models"))
    bert.requires_grad_(False)
    bert.eval()
    pad_id = int(tokenizer.pad_token_id or 0)
    rows_of = vocab.table_sizes()
    models = {}
    for variant in args.variants.split(","):
        decoder = NameDecoder(384, [101, 102, 100, *range(1000, 9000)], 30522, 101, 102, 100, DecoderShape())
        fusion = FusedMemory(FusionShape(variant, rows_of[0], rows_of[1], 128, 384))
        model = NamingModel(bert, decoder, fusion)
        optimiser = torch.optim.AdamW([*decoder.parameters(), *fusion.parameters()], lr=1e-4)
        models[variant] = (model, optimiser)

    def step(variant: str, precision: str, batch: np.ndarray) -> float:
        model, optimiser = models[variant]
        model.decoder.train()
        model.fusion.train()
        begun = time.perf_counter()
        source, mask = batch_tensors(examples.source, batch, pad_id, torch.device("cpu"))
        target, target_mask = batch_tensors(examples.target, batch, pad_id, torch.device("cpu"))
        context_ids, context_mask = context_tensors(contexts if model.fusion.shape.uses_contexts else None, batch,
                                                    torch.device("cpu"))
        with autocasts[precision]():
            loss = model.loss(source, mask, target, target_mask == 0, context_ids, context_mask)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        return time.perf_counter() - begun

    batches = [np.arange(i * args.batch, (i + 1) * args.batch) for i in range(args.steps * args.rounds + 1)]
    runs = [(variant, precision) for variant in models for precision in precisions]
    for variant, precision in runs:
        step(variant, precision, batches[0])  # warm-up
    seconds: dict[str, list[float]] = {}
    for round_ in range(args.rounds):
        for variant, precision in runs:
            name = variant if precision == "fp32" else f"{variant}+{precision}"
            for i in range(args.steps):
                seconds.setdefault(name, []).append(step(variant, precision, batches[1 + round_ * args.steps + i]))
    result = {"batch": args.batch, "threads": args.threads, "machine": platform.machine(),
              "extract_ms_per_function": round(extract_s / len(sources) * 1000, 3), "variants": {}}
    for variant, times in seconds.items():
        median = float(np.median(times))
        result["variants"][variant] = {"step_s_median": round(median, 2), "functions_per_s": round(args.batch / median, 1),
                                       "hours_per_130k": round(130_000 / (args.batch / median) / 3600, 1),
                                       "steps": len(times)}
    print(result)
    save_json(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
