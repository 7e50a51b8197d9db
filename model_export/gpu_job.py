"""Fine-tune the embedder on a lent GPU: pack here, train there, bring the weights back.

A remote job (``docs/training.md``, "GPU route") gets a copy of the repository plus at most
64 MiB in all, has no package index, and returns at most 8 files of at most 16 MiB.  So:

``prepare`` (here)
    the packed pairs (:mod:`pathfusion.model_export.search_pairs`) — the train pack cut to what fits —
    and wheels of the two packages the device image lacks (tree-sitter, tree-sitter-python)
    into a carry folder ignored by git; prints the one command to run there.
``run`` (there)
    installs the carried wheels, rebuilds the base from the repository's own int8 embedder
    (:mod:`pathfusion.model_export.onnx_to_hf`; the fp32 weights are too big to carry), runs
    :func:`pathfusion.model_export.train_embedder.train` with the same config as the CPU route but
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


def ignore_in_git(repo: Path, carry: Path) -> None:
    """``carry`` (inside ``repo``) created and listed in ``.git/info/exclude``: it travels
    only when a device call names it in ``carry``, and is never committed."""
    carry.mkdir(parents=True, exist_ok=True)
    exclude = repo / ".git" / "info" / "exclude"
    entry = f"/{carry.relative_to(repo).as_posix()}/"
    listed = exclude.read_text(encoding="utf-8", errors="replace").split() if exclude.is_file() else []
    if exclude.parent.is_dir() and entry not in listed:
        with open(exclude, "a", encoding="utf-8") as fh:
            fh.write(entry + "\n")


def download_wheels(wheels: Path) -> None:
    """The device image lacks tree-sitter: wheels of this machine's versions for its Python."""
    shutil.rmtree(wheels, ignore_errors=True)
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "--python-version", DEVICE_PYTHON, "--implementation", "cp", "-d", str(wheels)]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    from importlib.metadata import version

    subprocess.run([*command, *(f"{name}=={version(name)}" for name in WHEELS)], check=True)


def prepare(repo: Path, carry: Path, pack: Path, train_pairs: int | None, naming_pack: Path | None = None,
            naming_train: int = 150_000, naming_valid: int = 2000, seed: int = 2025) -> dict[str, Any]:
    """Fill ``carry`` (inside ``repo``, git-ignored) with packs and wheels; checks the size.

    ``naming_pack``: also a seeded random ``naming_train`` examples of its train split (all
    projects, not the alphabetically first) and ``naming_valid`` of its valid split, under
    ``carry/naming``."""

    from .naming_pack import NamingExamples, seeded_choice
    from .search_pairs import Pairs

    ignore_in_git(repo, carry)
    for split in ("train", "valid", "test"):
        source = pack / f"{split}.npz"
        if not source.is_file():
            raise FileNotFoundError(f"{source} not found: run `pathfusion train embedder --only pack` first")
        if split == "train" and train_pairs is not None:
            Pairs.load(source).head(train_pairs).save(carry / "train.npz")
        else:
            shutil.copy2(source, carry / source.name)
    if naming_pack is not None:
        for split, count in (("train", naming_train), ("valid", naming_valid)):
            examples = NamingExamples.load(naming_pack / f"{split}.npz")
            chosen = seeded_choice(len(examples), count, seed)
            examples.take(chosen).save(carry / "naming" / f"{split}.npz")
    download_wheels(carry / "wheels")
    total = tracked_bytes(repo) + sum(p.stat().st_size for p in carry.rglob("*") if p.is_file())
    if total > CARRY_LIMIT:
        raise ValueError(f"repository + carry = {total / 2**20:.1f} MiB > 64 MiB; pass a smaller --train-pairs")
    return {"carry": str(carry), "mib": round(total / 2**20, 1),
            "train_pairs": Pairs.meta_of(carry / "train.npz")["pairs"]}


INT8_MIN_ELEMENTS = 65536
"""As :data:`pathfusion.model_export.compact_onnx.MIN_ELEMENTS`: smaller tensors travel in fp32."""


def int8_rows(state: dict[str, Any]) -> dict[str, Any]:
    """A BERT state dict with its large matrices as int8 + one scale per row *of the exported
    graph* — embeddings per torch row, ``Linear`` weights (``[out, in]``, exported transposed)
    per torch column — so that ``pathfusion export embedder --int8 rows`` re-quantises them
    to the very same values: the weights come back at a quarter of their fp32 size."""
    import torch

    out: dict[str, Any] = {}
    for name, tensor in state.items():
        tensor = tensor.detach().float().cpu()
        if tensor.ndim != 2 or tensor.numel() < INT8_MIN_ELEMENTS:
            out[name] = tensor.contiguous()
            continue
        axis = 1 if "embeddings" in name else 0  # the axis reduced over: one scale per kept index
        scale = tensor.abs().amax(dim=axis) / 127.0
        scale[scale == 0] = 1.0
        shaped = scale[:, None] if axis == 1 else scale[None, :]
        out[f"{name}::int8"] = torch.clamp(torch.round(tensor / shaped), -127, 127).to(torch.int8).contiguous()
        out[f"{name}::scale{axis}"] = scale.contiguous()
    return out


def from_int8_rows(packed: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`int8_rows` (fp32 tensors)."""
    out: dict[str, Any] = {}
    for name, tensor in packed.items():
        if "::" not in name:
            out[name] = tensor.float()
        elif name.endswith("::int8"):
            base = name[:-len("::int8")]
            axis = 1 if f"{base}::scale1" in packed else 0
            scale = packed[f"{base}::scale{axis}"]
            out[base] = tensor.float() * (scale[:, None] if axis == 1 else scale[None, :])
    return out


def pack_folder(folder: Path, name: str, out: Path) -> list[Path]:
    """``folder`` as an uncompressed tar cut into returnable parts (``<name>.tar.partNN``)."""
    import tarfile

    staging = folder.parent / f"{name}.tar"
    with tarfile.open(staging, "w") as tar:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=str(path.relative_to(folder)))
    parts = split_file(staging, out)
    staging.unlink()
    return parts


def unpack_folder(files: Path, name: str, target: Path) -> Path:
    import tarfile

    joined = files / f"{name}.tar"
    join_parts(files, f"{name}.tar", joined)
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(joined) as tar:
        tar.extractall(target, filter="data")
    joined.unlink()
    return target


def returnable_encoder(best: Path, staging: Path) -> None:
    """``best`` (a Hugging Face folder) → ``staging`` with int8-row weights and its small files."""
    from safetensors.torch import load_file, save_file

    staging.mkdir(parents=True, exist_ok=True)
    save_file(int8_rows(load_file(str(best / "model.safetensors"))), str(staging / "model.int8.safetensors"))
    for path in best.iterdir():
        if path.is_file() and path.name != "model.safetensors":
            shutil.copy2(path, staging / path.name)


def restore_encoder(folder: Path) -> None:
    """In place: ``model.int8.safetensors`` → fp32 ``model.safetensors`` (a loadable folder)."""
    from safetensors.torch import load_file, save_file

    packed = folder / "model.int8.safetensors"
    save_file(from_int8_rows(load_file(str(packed))), str(folder / "model.safetensors"))
    packed.unlink()


def session(carry: Path, out: Path, minutes: float, work: Path = Path("/tmp/pathfusion-gpu"),
            overrides: Sequence[str] = ()) -> dict[str, Any]:
    """On the device: the embedder's contrastive run and the naming run side by side on the
    one GPU (each within ``minutes``), then their best weights, logs and results into ``out``
    as ``embedder.tar.partNN`` and ``naming.tar.partNN`` (int8-row encoders, fp16 decoder)."""
    import torch

    jobs = {
        "embedder": [sys.executable, "-m", "pathfusion.model_export.train_embedder", "--run", str(work / "embedder"),
                     "--pack", str(carry), "--no-progress", "--no-resume", "--set", "device=cuda", "epochs=2",
                     "eval_every=100", "valid_groups=2", f"time_budget_min={minutes}", *overrides],
        "naming": [sys.executable, "-m", "pathfusion.model_export.train_naming", "--run", str(work / "naming"),
                   "--pack", str(carry / "naming"), "--search-pack", str(carry), "--no-progress", "--no-resume",
                   "--set", "device=cuda", "epochs=1", "eval_every=300", "valid_groups=2",
                   f"time_budget_min={minutes}", *overrides],
    }
    codes = side_by_side(jobs, work)
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"exit_codes": codes, "torch": torch.__version__,
                              "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    for name in jobs:
        try:
            result[name] = [p.name for p in return_run(work / name, name, out, work / f"{name}.out")]
        except Exception as exc:  # one job's failure must not lose the other's weights
            result[name] = f"failed to pack: {exc!r}"
    (out / "session.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def cast_floats(source: Path, target: Path, dtype: Any) -> None:
    """The state dict saved at ``source``, its floating-point tensors cast to ``dtype``, saved
    at ``target`` (may be ``source``): how heads travel in fp16 and come back in fp32."""
    import torch

    state = torch.load(source, map_location="cpu")
    torch.save({k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}, target)


HALVED = ("decoder.pt", "fusion.pt")
"""Heads that travel back in fp16 (and are made fp32 again by :func:`collect`)."""


def side_by_side(jobs: dict[str, list[str]], work: Path) -> dict[str, int]:
    """Run every command of ``jobs`` at once (one GPU, several trainings), each one's output in
    ``work/<name>.out``; returns their exit codes once all have ended."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    work.mkdir(parents=True, exist_ok=True)
    processes = {}
    for name, command in jobs.items():
        log = open(work / f"{name}.out", "w")  # noqa: SIM115 (closed after the process ends, below)
        processes[name] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env), log)
    codes = {}
    for name, (process, log) in processes.items():
        codes[name] = process.wait()
        log.close()
    return codes


def return_run(run_dir: Path, name: str, out: Path, stdout: Path | None = None, encoder: bool = True) -> list[Path]:
    """One run folder → ``out/<name>.tar.partNN``: ``best/`` with its encoder as int8 rows
    (unless ``encoder`` is False: a run that kept the shipped encoder frozen), its heads
    (:data:`HALVED`) in fp16 and its other small files, the run's config, log and result —
    the one format in which every GPU job returns a run (:func:`collect` reads it back)."""
    import torch

    staging = run_dir.parent / f"{name}-return"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "best").mkdir(parents=True)
    best = run_dir / "best"
    if encoder and (best / "model.safetensors").is_file():
        returnable_encoder(best, staging / "best")
    for path in sorted(best.iterdir()) if best.is_dir() else []:
        if path.name in HALVED:
            cast_floats(path, staging / "best" / path.name, torch.float16)
        elif path.is_file() and path.suffix in (".json", ".gz") and not (staging / "best" / path.name).exists():
            shutil.copy2(path, staging / "best" / path.name)
    for file in ("log.jsonl", "config.json", "final.json", "result.json"):
        if (run_dir / file).is_file():
            shutil.copy2(run_dir / file, staging / file)
    if stdout is not None and stdout.is_file():
        shutil.copy2(stdout, staging / "stdout.txt")
    return pack_folder(staging, name, out)


def return_logs(work: Path, runs: Sequence[str], result: dict[str, Any], out: Path) -> None:
    """Each run's ``log.jsonl``, ``config.json`` and last output (``work/<run>/…``,
    ``work/<run>.out``) and ``result`` as ``session.json`` into ``out`` as ``logs.tar.partNN``,
    ``session.json`` beside it: what a session returns whatever became of the weights."""
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    for run in runs:
        for name in ("log.jsonl", "config.json"):
            if (work / run / name).is_file():
                shutil.copy2(work / run / name, logs / f"{run}.{name}")
        if (work / f"{run}.out").is_file():
            (logs / f"{run}.out").write_bytes((work / f"{run}.out").read_bytes()[-200_000:])
    (logs / "session.json").write_text(json.dumps(result, indent=1) + "\n")
    pack_folder(logs, "logs", out)
    (out / "session.json").write_text(json.dumps(result, indent=1) + "\n")


def collect(files: Path, target: Path) -> dict[str, str]:
    """Here: the returned ``embedder.tar.partNN`` / ``naming.tar.partNN`` (of ``run`` or
    ``session``) → ``target/<name>`` run folders whose ``best/`` is a loadable Hugging Face
    folder (fp32, from the int8 rows)."""
    done = {}
    for first in sorted(files.glob("*.tar.part00")):
        name = first.name[:-len(".tar.part00")]
        folder = unpack_folder(files, name, target / name)
        if (folder / "best" / "model.int8.safetensors").is_file():
            restore_encoder(folder / "best")
        for head in HALVED:
            if (folder / "best" / head).is_file():
                import torch

                cast_floats(folder / "best" / head, folder / "best" / head, torch.float32)
        done[name] = str(folder)
    return done


def run(carry: Path, out: Path, run_dir: Path, overrides: Sequence[str], models: Path = Path("models"),
        corpus: Path = Path("data/corpus")) -> dict[str, Any]:
    """On the device: train, then write the returnable files into ``out`` (``overrides``
    after ``device=cuda``, so a test can say ``device=cpu``)."""
    import torch

    from .train_embedder import EmbedderTrainConfig, train

    config = EmbedderTrainConfig.from_overrides(["device=cuda", *overrides])
    result = train(corpus, run_dir, config, carry, progress=False, models=models)
    (run_dir / "result.json").write_text(json.dumps({**result, "torch": torch.__version__}, indent=1) + "\n")
    out.mkdir(parents=True, exist_ok=True)
    return_run(run_dir, "embedder", out)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pathfusion.model_export.gpu_job", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prepare", help="here: packs + wheels into the carry folder")
    p.add_argument("--carry", type=Path, default=Path("gpu_carry"))
    p.add_argument("--pack", type=Path, default=Path("data/embedder-pairs"))
    p.add_argument("--train-pairs", type=int, default=None, help="cut the train pack (default: all of it)")
    p.add_argument("--naming-pack", type=Path, default=None, help="also carry naming examples from this pack")
    p.add_argument("--naming-train", type=int, default=150_000)
    s = sub.add_parser("session", help="on the device: embedder and naming runs side by side → --out")
    s.add_argument("--carry", type=Path, default=Path("gpu_carry"))
    s.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_out")))
    s.add_argument("--minutes", type=float, default=7.0)
    s.add_argument("--work", type=Path, default=Path("/tmp/pathfusion-gpu"))
    s.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for both runs (tests)")
    r = sub.add_parser("run", help="on the device: train and write the weights into --out")
    r.add_argument("--carry", type=Path, default=Path("gpu_carry"))
    r.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_out")))
    r.add_argument("--run", type=Path, default=Path("/tmp/pathfusion-embedder-run"))
    r.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    c = sub.add_parser("collect", help="here: the returned files → run folders under --to (best/ loadable)")
    c.add_argument("files", type=Path)
    c.add_argument("--to", type=Path, default=Path("data/runs/gpu"))
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        if args.step == "prepare":
            info = prepare(Path.cwd(), args.carry.resolve(), args.pack, args.train_pairs, args.naming_pack,
                           args.naming_train)
            print(json.dumps(info, indent=1))
            print("device command: python3 -m pip install -q --no-index --no-deps --target /tmp/site "
                  f"{args.carry}/wheels/*.whl && PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 python3 -m "
                  f"pathfusion.model_export.gpu_job run --carry {args.carry}")
        elif args.step == "session":
            print(json.dumps(session(args.carry, args.out, args.minutes, args.work, args.set), indent=1))
        elif args.step == "run":
            print(json.dumps(run(args.carry, args.out, args.run, args.set), indent=1))
        else:
            print(json.dumps(collect(args.files, args.to), indent=1))
    except (ValueError, FileNotFoundError, subprocess.CalledProcessError) as exc:
        print(f"gpu_job: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
