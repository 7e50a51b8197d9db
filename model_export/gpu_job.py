"""Fine-tune the embedder on a lent GPU: pack here, train there, bring the weights back.

A remote job (``docs/training.md``, "GPU route") gets a copy of the repository plus at most
64 MiB in all, has no package index, and returns at most 8 files of at most 16 MiB.  So:

``prepare`` (here)
    the packed pairs (:mod:`model_export.search_pairs`) — the train pack cut to what fits —
    and wheels of the two packages the device image lacks (tree-sitter, tree-sitter-python)
    into a carry folder ignored by git; prints the one command to run there.
``run`` (there)
    installs the carried wheels, rebuilds the base from the repository's own int8 embedder
    (:mod:`model_export.onnx_to_hf`; the fp32 weights are too big to carry), runs
    :func:`model_export.train_embedder.train` with the same config as the CPU route but
    ``device=cuda``, then writes the best weights as fp16 safetensors cut into ≤ 15 MiB
    parts, with the run's config, log and final scores, into ``$OUT``.
``collect`` (here)
    joins the parts back into a Hugging Face folder (fp32) that
    ``pathfusion export embedder --model-dir`` ships.

The CPU and GPU routes share the code, the data, the base and the config: only the device
and the wall time differ (``train_embedder``'s docstring).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PART_BYTES = 15 * 2**20
"""Below the 16 MiB a returned file may weigh."""
CARRY_LIMIT = 64 * 2**20
WHEELS = ("tree-sitter", "tree-sitter-python")
DEVICE_PYTHON = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64")


def split_file(path: Path, out: Path, part_bytes: int = PART_BYTES) -> list[Path]:
    """``path`` cut into ``<name>.partNN`` files of at most ``part_bytes`` under ``out``."""
    data = path.read_bytes()
    out.mkdir(parents=True, exist_ok=True)
    parts = []
    for number, start in enumerate(range(0, max(1, len(data)), part_bytes)):
        part = out / f"{path.name}.part{number:02d}"
        part.write_bytes(data[start:start + part_bytes])
        parts.append(part)
    return parts


def join_parts(folder: Path, name: str, target: Path) -> None:
    parts = sorted(folder.glob(f"{name}.part[0-9][0-9]"))
    if not parts:
        raise FileNotFoundError(f"no {name}.partNN files in {folder}")
    with open(target, "wb") as fh:
        for part in parts:
            fh.write(part.read_bytes())


def tracked_bytes(repo: Path) -> int:
    """Bytes of the files that travel with the repository (tracked + untracked-not-ignored)."""
    listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=repo, check=True, capture_output=True).stdout
    return sum((repo / name).stat().st_size for name in listing.decode().split("\0")
               if name and (repo / name).is_file())


def prepare(repo: Path, carry: Path, pack: Path, train_pairs: int | None) -> dict[str, Any]:
    """Fill ``carry`` (inside ``repo``, git-ignored) with packs and wheels; checks the size."""
    from .search_pairs import Pairs

    carry.mkdir(parents=True, exist_ok=True)
    exclude = repo / ".git" / "info" / "exclude"
    entry = f"/{carry.relative_to(repo).as_posix()}/"
    if exclude.parent.is_dir() and entry not in exclude.read_text(encoding="utf-8", errors="replace").split():
        with open(exclude, "a", encoding="utf-8") as fh:
            fh.write(entry + "\n")
    for split in ("train", "valid", "test"):
        source = pack / f"{split}.npz"
        if not source.is_file():
            raise FileNotFoundError(f"{source} not found: run `pathfusion train embedder --only pack` first")
        if split == "train" and train_pairs is not None:
            Pairs.load(source).head(train_pairs).save(carry / "train.npz")
        else:
            shutil.copy2(source, carry / source.name)
    wheels = carry / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "--python-version", DEVICE_PYTHON, "--implementation", "cp", "-d", str(wheels)]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    from importlib.metadata import version

    subprocess.run([*command, *(f"{name}=={version(name)}" for name in WHEELS)], check=True)
    total = tracked_bytes(repo) + sum(p.stat().st_size for p in carry.rglob("*") if p.is_file())
    if total > CARRY_LIMIT:
        raise ValueError(f"repository + carry = {total / 2**20:.1f} MiB > 64 MiB; pass a smaller --train-pairs")
    return {"carry": str(carry), "mib": round(total / 2**20, 1),
            "train_pairs": Pairs.meta_of(carry / "train.npz")["pairs"]}


def run(carry: Path, out: Path, run_dir: Path, overrides: Sequence[str], models: Path = Path("models"),
        corpus: Path = Path("data/corpus")) -> dict[str, Any]:
    """On the device: train, then write the returnable files into ``out`` (``overrides``
    after ``device=cuda``, so a test can say ``device=cpu``)."""
    import torch
    from safetensors.torch import load_file, save_file

    from .train_embedder import EmbedderTrainConfig, train

    config = EmbedderTrainConfig.from_overrides(["device=cuda", *overrides])
    result = train(corpus, run_dir, config, carry, progress=False, models=models)
    best = run_dir / "best"
    weights = {k: v.half().contiguous() for k, v in load_file(str(best / "model.safetensors")).items()}
    half = run_dir / "model.fp16.safetensors"
    save_file(weights, str(half))
    out.mkdir(parents=True, exist_ok=True)
    split_file(half, out)
    shutil.copy2(best / "config.json", out / "config.json")
    shutil.copy2(run_dir / "log.jsonl", out / "log.jsonl")
    (out / "result.json").write_text(json.dumps({**result, "torch": torch.__version__}, indent=1) + "\n")
    return result


def collect(files: Path, target: Path, models: Path) -> Path:
    """The returned files → a Hugging Face folder (fp32 weights, the shipped tokenizer)."""
    import torch
    from safetensors.torch import load_file, save_file

    from .onnx_to_hf import write_tokenizer_files

    target.mkdir(parents=True, exist_ok=True)
    joined = target / "model.fp16.safetensors"
    join_parts(files, "model.fp16.safetensors", joined)
    weights = {k: v.to(torch.float32).contiguous() for k, v in load_file(str(joined)).items()}
    save_file(weights, str(target / "model.safetensors"))
    joined.unlink()
    shutil.copy2(files / "config.json", target / "config.json")
    write_tokenizer_files(models, target)
    for name in ("log.jsonl", "result.json"):
        if (files / name).is_file():
            shutil.copy2(files / name, target / name)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_export.gpu_job", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prepare", help="here: packs + wheels into the carry folder")
    p.add_argument("--carry", type=Path, default=Path("gpu_carry"))
    p.add_argument("--pack", type=Path, default=Path("data/embedder-pairs"))
    p.add_argument("--train-pairs", type=int, default=None, help="cut the train pack (default: all of it)")
    r = sub.add_parser("run", help="on the device: train and write the weights into --out")
    r.add_argument("--carry", type=Path, default=Path("gpu_carry"))
    r.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_out")))
    r.add_argument("--run", type=Path, default=Path("/tmp/pathfusion-embedder-run"))
    r.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    c = sub.add_parser("collect", help="here: the returned files → a Hugging Face folder")
    c.add_argument("files", type=Path)
    c.add_argument("--to", type=Path, default=Path("data/runs/embedder-gpu/best"))
    c.add_argument("--models", type=Path, default=Path("models"))
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        if args.step == "prepare":
            info = prepare(Path.cwd(), args.carry.resolve(), args.pack, args.train_pairs)
            print(json.dumps(info, indent=1))
            print("device command: python3 -m pip install -q --no-index --no-deps --target /tmp/site "
                  f"{args.carry}/wheels/*.whl && PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 python3 -m "
                  f"model_export.gpu_job run --carry {args.carry}")
        elif args.step == "run":
            print(json.dumps(run(args.carry, args.out, args.run, args.set), indent=1))
        else:
            print(collect(args.files, args.to, args.models))
    except (ValueError, FileNotFoundError, subprocess.CalledProcessError) as exc:
        print(f"gpu_job: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
