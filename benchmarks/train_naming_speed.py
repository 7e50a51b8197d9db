"""Naming-training throughput on the CPU, fp32 against bf16 autocast (``cpu_bf16``), on this machine.

Why: the CPU route of the naming fusions takes hours per variant, and where the CPU computes
bf16 natively (AVX512-BF16 / AMX) autocast is the lever on that cost.  Each round runs the
real ``pathfusion train naming`` for ``--steps`` optimiser steps of 128 functions — a
frozen encoder under a fusion head started from ``--init`` (a naming run's ``best/``), the
same batches in both modes (the same seed) — and reads the run's own ``examples_per_second``
(training steps only, validation excluded); the modes alternate ``--repeats`` times so that a
busy core slows both alike.  The first step losses of both modes are printed side by side.

    .venv/bin/python benchmarks/train_naming_speed.py [--variant attention] [--steps 6] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import print_rows, save_json  # noqa: E402
from pathfusion.model_export import train_naming  # noqa: E402
from pathfusion.model_export.run_files import native_cpu_bf16  # noqa: E402


def one_round(work: Path, args: argparse.Namespace, bf16: bool) -> dict[str, object]:
    """Train ``args.steps`` steps in a fresh run folder; its throughput and step losses."""
    run = Path(tempfile.mkdtemp(prefix="bf16-" if bf16 else "fp32-", dir=work))
    config = train_naming.NamingTrainConfig.from_overrides([
        f"variant={args.variant}", f"init={args.init}", "freeze_encoder=true", "search_weight=0",
        "select_on=f1", "valid_groups=0", f"valid_examples={args.valid_examples}", "train_first=300000",
        "epochs=1", f"max_steps={args.steps}", "eval_every=100000", f"threads={args.threads}", "log_every=1",
        "device=cpu", f"cpu_bf16={bf16}"])
    train_naming.train(args.corpus, run, config, naming_pack=args.pack, resume=False, progress=False)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    steps = [e for e in log if e["event"] == "train"]
    valid = [e for e in log if e["event"] == "valid"]
    return {"examples_per_second": steps[-1]["examples_per_second"],
            "step_losses": [e["step_loss"] for e in steps], "valid_f1": valid[0]["naming"]["f1"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="attention")
    parser.add_argument("--init", type=Path, default=None,
                        help="a naming run's best/ of that variant (default: the GPU session's)")
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--pack", type=Path, default=Path("data/naming-pairs"))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--valid-examples", type=int, default=128)
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "train_naming_speed.json")
    args = parser.parse_args(argv)
    if not native_cpu_bf16():
        print("this CPU does not compute bf16 natively: cpu_bf16 is refused here, nothing to compare")
        return 1
    args.init = args.init or Path(f"data/runs/gpu-fusion-2026-11-27/epoch3/{args.variant}/best")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rounds: dict[str, list[dict[str, object]]] = {"fp32": [], "bf16": []}
    with tempfile.TemporaryDirectory(prefix="pf-bench-naming-") as work:
        for _ in range(args.repeats):
            for mode in ("fp32", "bf16"):
                rounds[mode].append(one_round(Path(work), args, mode == "bf16"))
                print(f"  {mode}: {rounds[mode][-1]['examples_per_second']} functions/s", flush=True)
    speed = {mode: statistics.median(float(r["examples_per_second"]) for r in rs)  # type: ignore[arg-type]
             for mode, rs in rounds.items()}
    result = {"benchmark": "train_naming_speed", "cpus": os.cpu_count(), "threads": args.threads,
              "variant": args.variant, "init": str(args.init), "steps": args.steps, "batch": 128,
              "command": "python benchmarks/train_naming_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "functions_per_second": speed, "bf16_over_fp32": round(speed["bf16"] / speed["fp32"], 3),
              "rounds": rounds}
    print_rows([("fp32 (functions/s, median)", speed["fp32"]), ("bf16 (functions/s, median)", speed["bf16"]),
                ("bf16 / fp32", result["bf16_over_fp32"]),
                ("fp32 step losses", rounds["fp32"][0]["step_losses"]),
                ("bf16 step losses", rounds["bf16"][0]["step_losses"]),
                ("validation F1 at the start, fp32 / bf16",
                 f"{rounds['fp32'][0]['valid_f1']} / {rounds['bf16'][0]['valid_f1']}")])
    save_json(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
