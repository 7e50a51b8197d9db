"""The naming fusions on a lent GPU (issue 11): carry masked sources, derive packs there, train
every variant side by side, score them on unseen code, return the best.

``prepare`` (here)
    one pass over the corpus' train split: counts every path context for the context
    vocabulary (:class:`pathfusion.server.context_vocab.ContextVocab`) and keeps the masked
    source, name and project of ``train`` functions the shipped head never saw (the
    complement of the seeded 170,000 the first GPU session carried), then the same 2,000
    validation functions that session validated on and the first 2,000 naming functions of
    the held-out projects (``eval naming --projects``' order); with the shipped decoder
    (fp16) as the common starting point and the tree-sitter wheels, under ``carry/``.
``session`` (there)
    packs wordpieces and path contexts from the carried sources (all cores), trains each
    variant of :data:`pathfusion.model_export.fusion_memory.VARIANTS` as its own
    ``pathfusion train naming`` process on the one GPU for the same minutes (same functions,
    same order, same start), scores every variant's ``best/`` on the held-out functions
    (greedy, the code2vec subtoken metric), and returns the logs, the scores and the best
    variant's and ``llm``'s weights (:func:`pathfusion.model_export.gpu_job.return_run`).

Why every variant over the *frozen* shipped encoder: the encoder is shared with search, and
the size budget has room for one; the shipped encoder was fine-tuned end to end under the
``llm`` decoder (F1 0.23 → 0.33 on validation), so what the path contexts add is measured on
top of that — the `llm` row is the same training without them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pathfusion.server.context_vocab import VOCAB_FILE, ContextCounts, ContextVocab

from .context_pack import (
    ContextPack,
    context_pack_path,
    contexts_of_sources,
    load_records,
    save_records,
)
from .gpu_job import (
    CARRY_LIMIT,
    cast_floats,
    download_wheels,
    ignore_in_git,
    return_logs,
    return_run,
    side_by_side,
    tracked_bytes,
)
from .naming_pack import naming_records, seeded_choice
from .run_files import best_validation

SHIPPED_SUBSET = 170_000
"""How many train functions (a seeded random choice, seed 2025) the shipped head trained on."""
SEED = 2025
HELDOUT = Path("data/heldout/stdlib")
SPLITS = ("train", "valid", "heldout")


def prepare(repo: Path, carry: Path, corpus: Path, naming_pack: Path, init: Path, train: int, tokens: int,
            paths: int, valid: int = 2000, heldout: int = 2000, heldout_projects: Path = HELDOUT,
            shipped_subset: int = SHIPPED_SUBSET, wheels: bool = True) -> dict[str, Any]:
    """Fill ``carry`` (git-ignored) for :func:`session`; checks what travels against 64 MiB.
    ``wheels=False`` leaves the tree-sitter wheels out (tests: no package index)."""
    import torch

    from .evaluate import iter_project_examples
    from .naming_model import DECODER_FILE, DECODER_META
    from .naming_pack import NamingExamples

    ignore_in_git(repo, carry)
    folder = carry / "fusion"
    train_count = len(NamingExamples.load(naming_pack / "train.npz"))
    valid_count = len(NamingExamples.load(naming_pack / "valid.npz"))
    wanted = set(seeded_choice(train_count, train, SEED, first=shipped_subset).tolist())
    counts = ContextCounts()
    kept: list[dict[str, Any]] = []
    seen = 0
    for index, record in enumerate(naming_records(corpus, "train")):
        counts.add(record["contexts"])
        seen += 1
        if index in wanted:
            kept.append(record)
    if seen != train_count:
        raise ValueError(f"{corpus}: {seen} train naming functions, the naming pack {train_count}; repack")
    vocab = ContextVocab.build(counts, tokens, paths)
    vocab.save(folder / VOCAB_FILE)
    coverage = _coverage(counts, vocab)
    save_records(kept, folder / "train.jsonl.xz")
    valid_wanted = set(seeded_choice(valid_count, valid, SEED).tolist())
    save_records((r for i, r in enumerate(naming_records(corpus, "valid")) if i in valid_wanted),
                 folder / "valid.jsonl.xz")
    held = []
    for example in iter_project_examples(heldout_projects):
        held.append({"masked_code": example.masked, "label": example.label, "project": heldout_projects.name})
        if len(held) >= heldout:
            break
    save_records(held, folder / "heldout.jsonl.xz")
    (folder / "init").mkdir(parents=True, exist_ok=True)
    cast_floats(init / DECODER_FILE, folder / "init" / DECODER_FILE, torch.float16)
    (folder / "init" / DECODER_META).write_bytes((init / DECODER_META).read_bytes())
    if wheels:
        download_wheels(carry / "wheels")
    total = tracked_bytes(repo) + sum(p.stat().st_size for part in (folder, carry / "wheels")
                                      for p in part.rglob("*") if p.is_file())
    info = {"train": len(kept), "valid": len(valid_wanted), "heldout": len(held), "coverage": coverage,
            "mib": round(total / 2**20, 1)}
    (folder / "prepare.json").write_text(json.dumps(info, indent=1) + "\n")
    if total > CARRY_LIMIT:
        raise ValueError(f"repository + carry = {total / 2**20:.1f} MiB > 64 MiB; pass a smaller --train")
    return info


def _coverage(counts: ContextCounts, vocab: ContextVocab) -> dict[str, float]:
    """Share of train token and path occurrences the vocabulary covers."""
    def share(counter: Any, kept: Sequence[str]) -> float:
        total = sum(counter.values())
        return round(sum(counter[k] for k in kept) / max(1, total), 4)

    return {"tokens": share(counts.tokens, vocab.tokens), "paths": share(counts.paths, vocab.paths),
            "distinct_tokens": len(counts.tokens), "distinct_paths": len(counts.paths)}


def pack_carried(folder: Path, pack: Path, tokenizer_file: Path, vocab: ContextVocab | None = None,
                 splits: Sequence[str] = SPLITS, processes: int | None = None) -> dict[str, int]:
    """The carried sources (``folder/<split>.jsonl.xz``) → naming packs and context packs
    under ``pack`` (what ``pathfusion train naming`` reads), with ``vocab`` (default: the
    one carried in ``folder``)."""
    from .naming_pack import NamingPackSpec, pack_records
    from .search_pairs import tokenizer_sha256

    vocab = vocab or ContextVocab.load(folder / VOCAB_FILE)
    vocab.save(pack / VOCAB_FILE)
    spec = NamingPackSpec(tokenizer_sha256(tokenizer_file))
    sizes = {}
    for split in splits:
        records = list(load_records(folder / f"{split}.jsonl.xz"))
        pack_records(records, spec, tokenizer_file, {"split": split}).save(pack / f"{split}.npz")
        contexts_of_sources([r["masked_code"] for r in records], vocab, processes).save(context_pack_path(pack, split))
        sizes[split] = len(records)
    return sizes


def variant_command(variant: str, work: Path, carry: Path, minutes: float, overrides: Sequence[str]) -> list[str]:
    """One variant's ``pathfusion train naming``: the frozen shipped encoder, the shipped
    decoder to start from, naming only, validated every 300 steps, for ``minutes``."""
    return [sys.executable, "-m", "pathfusion.model_export.train_naming", "--run", str(work / variant),
            "--pack", str(work / "pack"), "--no-progress", "--no-resume", "--set", "device=cuda", f"variant={variant}",
            f"base={work / 'base'}", f"init_decoder={carry / 'fusion' / 'init'}", "freeze_encoder=true",
            "search_weight=0", "select_on=f1", "valid_groups=0", "epochs=1", "eval_every=300", "threads=3",
            f"time_budget_min={minutes}", *overrides]


def score_heldout(work: Path, variants: Sequence[str], device: str) -> dict[str, Any]:
    """Greedy naming scores of each variant's ``best/`` on the carried held-out functions
    (over the one frozen encoder every variant read)."""
    import torch

    from .export_embedder import load_reference
    from .naming_model import NamingModel, load_decoder, load_fusion, naming_scores
    from .naming_pack import NameTokens, NamingExamples
    from .run_files import bf16_autocast
    from .search_pairs import load_tokenizer

    pack = work / "pack"
    examples = NamingExamples.load(pack / "heldout.npz")
    contexts = ContextPack.load(context_pack_path(pack, "heldout"), ContextVocab.load(pack / VOCAB_FILE),
                                len(examples))
    names = NameTokens(load_tokenizer(work / "base" / "tokenizer.json"))
    target = torch.device(device)
    autocast = bf16_autocast(target)
    bert, tokenizer = load_reference(work / "base")
    bert = bert.to(target)
    scores: dict[str, Any] = {}
    for variant in variants:
        best = work / variant / "best"
        if not (best / "decoder.json").is_file():
            scores[variant] = "no best/ folder"
            continue
        model = NamingModel(bert, load_decoder(best), load_fusion(best, int(bert.config.hidden_size))).to(target)
        scores[variant] = naming_scores(model, examples, np.arange(len(examples)), names,
                                        int(tokenizer.pad_token_id or 0), target, 128, autocast, contexts)
    return scores


def best_valid(run: Path) -> dict[str, Any]:
    """The best validation of a run (naming F1 picks it): its step, functions seen and naming scores."""
    event = best_validation(run)
    return {"step": event["step"], "examples_seen": event["examples_seen"], **event["naming"]} if event else {}


def session(carry: Path, out: Path, minutes: float, work: Path = Path("/tmp/pathfusion-fusion"),
            variants: Sequence[str] | None = None, overrides: Sequence[str] = (), device: str = "cuda"
            ) -> dict[str, Any]:
    """On the device (module docstring): pack, train every variant side by side, score, return."""
    import torch

    from .fusion_memory import VARIANTS
    from .train_embedder import resolve_base

    variants = list(variants or VARIANTS)
    started = time.time()
    work.mkdir(parents=True, exist_ok=True)
    base = resolve_base("shipped", work, Path("models"))
    result: dict[str, Any] = {"packed": pack_carried(carry / "fusion", work / "pack", base / "tokenizer.json")}
    result["pack_seconds"] = round(time.time() - started, 1)
    # asked only now: the extraction pool above forks, and a forked CUDA context is unusable
    result["torch"], result["gpu"] = torch.__version__, (torch.cuda.get_device_name(0) if torch.cuda.is_available()
                                                         else None)
    result["exit_codes"] = side_by_side({v: variant_command(v, work, carry, minutes, overrides) for v in variants},
                                        work)
    result["train_seconds"] = round(time.time() - started, 1)
    result["valid"] = {variant: best_valid(work / variant) for variant in variants}
    try:
        result["heldout"] = score_heldout(work, variants, device)
    except Exception as exc:  # the weights must come back even if scoring fails
        result["heldout"] = f"failed: {exc!r}"
    ranked = sorted((v for v in variants if result["valid"][v]), key=lambda v: -result["valid"][v]["f1"])
    fusions = [v for v in ranked if v not in ("llm", "code2vec")]
    returned = list(dict.fromkeys([*fusions[:1], *ranked[:1], *(["llm"] if "llm" in ranked else [])]))[:2]
    result["returned"] = returned
    out.mkdir(parents=True, exist_ok=True)
    for variant in returned:
        try:
            return_run(work / variant, variant, out, work / f"{variant}.out", encoder=False)
        except Exception as exc:
            result[f"return_{variant}"] = f"failed: {exc!r}"
    result["seconds"] = round(time.time() - started, 1)
    return_logs(work, variants, result, out)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pathfusion.model_export.fusion_job", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prepare", help="here: carried sources, context vocabulary, shipped decoder, wheels")
    p.add_argument("--carry", type=Path, default=Path("gpu_carry"))
    p.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    p.add_argument("--naming-pack", type=Path, default=Path("data/naming-pairs"))
    p.add_argument("--init", type=Path, default=Path("data/runs/gpu-2026-11-27/naming/best"),
                   help="the start decoder: a run's best/ folder (decoder.pt + decoder.json); on a new machine "
                        "python -m pathfusion.model_export.head_from_export --out DIR rebuilds one from models/")
    p.add_argument("--train", type=int, default=130_000, help="train functions to carry (130,000 fit beside a 39.6 MiB tree)")
    p.add_argument("--tokens", type=int, default=12_000)
    p.add_argument("--paths", type=int, default=20_000)
    s = sub.add_parser("session", help="on the device: every variant side by side → --out")
    s.add_argument("--carry", type=Path, default=Path("gpu_carry"))
    s.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_out")))
    s.add_argument("--minutes", type=float, default=5.0)
    s.add_argument("--work", type=Path, default=Path("/tmp/pathfusion-fusion"))
    s.add_argument("--variants", nargs="*", default=None)
    s.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every run (tests)")
    s.add_argument("--device", default="cuda", help="where the held-out functions are scored (tests: cpu)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        if args.step == "prepare":
            info = prepare(Path.cwd(), args.carry.resolve(), args.corpus, args.naming_pack, args.init, args.train,
                           args.tokens, args.paths)
        else:
            info = session(args.carry, args.out, args.minutes, args.work, args.variants, args.set, args.device)
    except (ValueError, FileNotFoundError, subprocess.CalledProcessError) as exc:
        print(f"fusion_job: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
