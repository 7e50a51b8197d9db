"""The encoder and the shipped naming head trained together on a lent GPU, over epochs of the
search pairs (issues 10 and 11).

Why: on the CPU, 80-step chunks of the joint run move validation less than it can resolve
(``docs/results.md``, "A third chunk"); what is left for issue 10's standard-library targets
is whole epochs of the 189,222 search pairs with the encoder unfrozen — and the shipped head
must train with it, since it reads the encoder's token states.  Each run is
``pathfusion train naming`` from what ships (``init=shipped``: the j1 encoder and the
``attention`` head), as on the CPU route; the runs differ in one setting each
(:data:`RUNS`): the train code length of the search pairs, 128 wordpieces (the CPU's speed
lever, what every shipped encoder trained on) or the served 256 (the hypothesis of
``docs/training.md``: an encoder never trained on a function's end cannot read it).

``prepare`` (here)
    the search pack at the longest code length (the shorter ones are cut from it there,
    :meth:`~pathfusion.model_export.search_pairs.Pairs.cut_code`, identical to packing them),
    stored as an uncompressed ``.npz`` inside xz (14 MB where the zlib ``.npz`` is 19.6 MB, so
    that more naming functions fit); the masked sources of the first ``naming_train``
    functions of the train split's seeded order (seed 2025: all of them read by the shipped
    head before) and of the 2,000 validation functions of every earlier run; the shipped
    head's probe mappings; the tree-sitter wheels — checked against the 64 MiB a job carries.
``session`` (there)
    the shipped head rebuilt once with the probe mappings found here (the device's torch is
    another version), the naming and context packs with its tokenizer and context vocabulary
    (all cores), one search pack per code length, every run of :data:`RUNS` side by side on the one GPU, each told to
    stop (``stop_at``) in time to be returned by ``--deadline-s``; returns the run with the
    best validation score (naming F1 + search MRR, the runs' own ``select_on``) — one run's
    encoder (int8 rows) and fp16 heads are 45 MB of the 64 MiB a job returns — and every run's log.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .context_pack import save_records
from .fusion_job import pack_carried
from .gpu_job import (
    CARRY_LIMIT,
    download_wheels,
    ignore_in_git,
    return_logs,
    return_run,
    side_by_side,
    tracked_bytes,
)
from .naming_pack import NamingExamples, naming_records, seeded_choice
from .run_files import best_validation
from .search_pairs import Pairs

SEED = 2025
NAMING_SPLITS = ("train", "valid")
SEARCH_SPLITS = ("train", "valid")
RUNS: dict[str, tuple[str, ...]] = {
    "code256": ("search_code_tokens=256",),
    "code128": ("search_code_tokens=128",),
}
"""The runs of one session, side by side: each one's settings beyond :data:`COMMON`."""
COMMON = ("variant=attention", "freeze_encoder=false", "search_weight=1", "select_on=f1+mrr",
          "lr=5e-5", "decoder_lr=1e-4", "fusion_lr=4e-4", "warmup_steps=100", "batch_size=64", "epochs=3",
          "eval_every=500", "valid_examples=2000", "valid_groups=2", "threads=4")
"""Every run's settings (``init``, the shipped head, is rebuilt once by the session): the
encoder at the rate of the feasibility run and the first GPU session, the head (which has
read every train function) at the gentler rates of the CPU chunks, 64 functions + 256 search
pairs a step, three passes of the 48,000 carried functions (2,250 steps)."""
PROBES_FILE = "head-probes.json"
"""The shipped head's probe mappings, found here (:class:`~pathfusion.model_export.head_from_export.ProbeCache`)."""
RETURN_RESERVE_S = 75.0
"""Seconds a run needs after its last step: the final validation, the checkpoint, ``best/``
and the returned files."""


def carried_pack(pairs: Pairs, path: Path) -> int:
    """``pairs`` as an uncompressed ``.npz`` inside xz at ``path``; returns its bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(lzma.compress(pairs.npz_bytes(compressed=False), preset=9 | lzma.PRESET_EXTREME))
    return path.stat().st_size


def uncarry_pack(path: Path, target: Path) -> Path:
    """The inverse of :func:`carried_pack`: ``target`` (an ``.npz`` that :meth:`Pairs.load` reads)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(lzma.decompress(path.read_bytes()))
    return target


def prepare(repo: Path, carry: Path, corpus: Path, search_pack: Path, naming_pack: Path, naming_train: int,
            naming_valid: int = 2000, wheels: bool = True, naming_first: int = 0) -> dict[str, Any]:
    """Fill ``carry/joint`` (git-ignored) for :func:`session`; refused over 64 MiB in all.
    ``naming_first``: the train functions are positions ``naming_first …`` of the seeded order
    (a later session carries the ones after an earlier one's; the first took 0–48,000).
    ``wheels=False`` leaves the tree-sitter wheels out (tests: no package index)."""
    ignore_in_git(repo, carry)
    folder = carry / "joint"
    shutil.rmtree(folder, ignore_errors=True)
    sizes: dict[str, Any] = {}
    for split in SEARCH_SPLITS:
        pairs = Pairs.load(search_pack / f"{split}.npz")
        sizes[f"search_{split}"] = {"pairs": len(pairs), "code_tokens": pairs.meta["spec"]["max_code_tokens"],
                                    "bytes": carried_pack(pairs, folder / "search" / f"{split}.npz.xz")}
    for split, count, first in (("train", naming_train, naming_first), ("valid", naming_valid, 0)):
        total = len(NamingExamples.load(naming_pack / f"{split}.npz"))
        wanted = set(seeded_choice(total, count, SEED, first=first).tolist())
        kept = save_records((r for i, r in enumerate(naming_records(corpus, split)) if i in wanted),
                            folder / f"{split}.jsonl.xz")
        sizes[f"naming_{split}"] = {"functions": kept, "bytes": (folder / f"{split}.jsonl.xz").stat().st_size}
    _shipped_head(repo / "models", folder / "work-head", folder / PROBES_FILE)
    shutil.rmtree(folder / "work-head")
    if wheels:
        download_wheels(carry / "wheels")
    total_bytes = tracked_bytes(repo) + sum(p.stat().st_size for part in (folder, carry / "wheels")
                                            for p in part.rglob("*") if p.is_file())
    info = {**sizes, "mib": round(total_bytes / 2**20, 2)}
    (folder / "prepare.json").write_text(json.dumps(info, indent=1) + "\n")
    if total_bytes > CARRY_LIMIT:
        raise ValueError(f"repository + carry = {total_bytes / 2**20:.2f} MiB > 64 MiB; pass a smaller --naming-train")
    return info


def _shipped_head(models: Path, out: Path, probes: Path) -> dict[str, Any]:
    """``init=shipped``'s folder, rebuilt with the probe mappings kept in ``probes`` (found
    and kept there when missing): the device's torch may name exported nodes otherwise."""
    from .head_from_export import ProbeCache, build

    return build(models, out, ProbeCache(probes))


def search_packs(folder: Path, work: Path, lengths: Sequence[int]) -> dict[int, Path]:
    """One search pack folder per train code length, the shorter cut from the carried one."""
    carried = uncarry_pack(folder / "search" / "train.npz.xz", work / "search-carried" / "train.npz")
    train = Pairs.load(carried)
    valid = Pairs.load(uncarry_pack(folder / "search" / "valid.npz.xz", work / "search-carried" / "valid.npz"))
    packs = {}
    for length in sorted(set(lengths)):
        target = work / f"search-{length}"
        if length == train.meta["spec"]["max_code_tokens"]:
            (target / "train.npz").parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(carried, target / "train.npz")
        else:
            train.cut_code(length).save(target / "train.npz")
        valid.cut_code(length).save(target / "valid.npz")  # the same pairs; the spec names the train length
        packs[length] = target
    return packs


def code_length(settings: Sequence[str]) -> int:
    """The ``search_code_tokens`` a run's settings name (128, the config's default, if none)."""
    for item in settings:
        key, _, value = item.partition("=")
        if key == "search_code_tokens":
            return int(value)
    return 128


def run_command(name: str, settings: Sequence[str], work: Path, search: Path, stop_at: float,
                overrides: Sequence[str]) -> list[str]:
    """One run's ``pathfusion train naming`` (:data:`COMMON`, its settings, then ``overrides``)."""
    return [sys.executable, "-m", "pathfusion.model_export.train_naming", "--run", str(work / name),
            "--pack", str(work / "pack"), "--search-pack", str(search), "--no-progress", "--no-resume",
            "--set", "device=cuda", *COMMON, *settings, f"stop_at={stop_at:.0f}", *overrides]


def session(carry: Path, out: Path, deadline_s: float, work: Path = Path("/tmp/pathfusion-joint"),
            runs: dict[str, tuple[str, ...]] | None = None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """On the device (module docstring): pack, train the runs side by side, return the best."""
    from pathfusion.server.context_vocab import VOCAB_FILE, ContextVocab

    started = time.time()
    runs = runs or RUNS
    folder = carry / "joint"
    work.mkdir(parents=True, exist_ok=True)
    init = work / "shipped-head"
    head = _shipped_head(Path("models"), init, folder / PROBES_FILE)
    result: dict[str, Any] = {"head": {k: head[k] for k in ("naming_id", "embedder_id", "decoder_max_abs_diff",
                                                             "fusion_max_abs_diff")}}
    # packed with the runs' own tokenizer and context vocabulary (the packs are keyed on them)
    result["packed"] = pack_carried(folder, work / "pack", init / "tokenizer.json", ContextVocab.load(init / VOCAB_FILE),
                                    NAMING_SPLITS)
    packs = search_packs(folder, work, [code_length(s) for s in runs.values()])
    result["pack_seconds"] = round(time.time() - started, 1)
    stop_at = started + deadline_s - RETURN_RESERVE_S
    result["stop_at_s"] = round(stop_at - started, 1)
    commands = {name: run_command(name, (f"init={init}", *settings), work,
                                  packs[code_length(settings)], stop_at, overrides)
                for name, settings in runs.items()}
    result["exit_codes"] = side_by_side(commands, work)
    result["train_seconds"] = round(time.time() - started, 1)
    result["best"] = {name: {k: v for k, v in best_validation(work / name).items() if k != "event"} for name in runs}
    scored = [name for name in runs if result["best"][name]]
    out.mkdir(parents=True, exist_ok=True)
    if scored:
        chosen = max(scored, key=lambda name: result["best"][name]["score"])
        result["returned"] = chosen
        try:
            return_run(work / chosen, chosen, out, work / f"{chosen}.out")
        except Exception as exc:  # the logs must come back even so
            result["return_error"] = repr(exc)
    result["seconds"] = round(time.time() - started, 1)
    return_logs(work, list(runs), result, out)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pathfusion.model_export.joint_job",
                                     description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prepare", help="here: search pack, naming sources, wheels → --carry/joint")
    p.add_argument("--carry", type=Path, default=Path("gpu_carry"))
    p.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    p.add_argument("--search-pack", type=Path, default=Path("data/embedder-pairs-256"),
                   help="packed with the longest train code length of RUNS "
                        "(pathfusion train embedder --only pack --pack DIR --set max_code_tokens=256)")
    p.add_argument("--naming-pack", type=Path, default=Path("data/naming-pairs"))
    p.add_argument("--naming-train", type=int, default=48_000)
    p.add_argument("--naming-first", type=int, default=0,
                   help="carry positions FIRST… of the train split's seeded order (2026-11-29's session: 0)")
    s = sub.add_parser("session", help="on the device: the runs side by side → --out")
    s.add_argument("--carry", type=Path, default=Path("gpu_carry"))
    s.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_out")))
    s.add_argument("--deadline-s", type=float, default=540.0,
                   help="seconds from the start by which everything is written (the command's limit, less slack)")
    s.add_argument("--work", type=Path, default=Path("/tmp/pathfusion-joint"))
    s.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every run (tests)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        if args.step == "prepare":
            info = prepare(Path.cwd(), args.carry.resolve(), args.corpus, args.search_pack, args.naming_pack,
                           args.naming_train, naming_first=args.naming_first)
        else:
            info = session(args.carry, args.out, args.deadline_s, args.work, overrides=args.set)
    except (ValueError, FileNotFoundError, subprocess.CalledProcessError) as exc:
        print(f"joint_job: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
