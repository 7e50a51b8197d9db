"""The joint GPU job (model_export/joint_job.py) on a tiny BERT and a synthetic corpus: what
``prepare`` carries, the packs ``session`` derives from it (which ``pathfusion train naming``
must accept and which must equal packing the corpus at that length), and how it chooses."""

from __future__ import annotations

import gzip
import json
import random
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pathfusion.model_export import joint_job
from pathfusion.model_export.context_pack import load_records
from pathfusion.model_export.naming_pack import NamingPackSpec, naming_records
from pathfusion.model_export.naming_pack import pack_split as pack_naming
from pathfusion.model_export.run_files import best_validation
from pathfusion.model_export.search_pairs import (
    PackSpec,
    Pairs,
    ensure_packs,
    pack_split,
    tokenizer_sha256,
)
from tests.helpers.models import write_tiny_bert

WORDS = ["read", "write", "parse", "config", "file", "url", "json", "cache", "user", "token", "sort", "queue"]


def _record(split: str, i: int, rng: random.Random) -> dict[str, object]:
    first, second, other = rng.sample(WORDS, 3)
    body = "".join(f"    {first}_{n} = {second}(value, {n})\n" for n in range(rng.randint(1, 12)))
    code = f"def {first}_{second}(value, {other}_count):\n{body}    return value + {other}_count\n"
    return {"id": f"{split}{i}", "project": f"{split}p{i % 4}", "naming": True, "search": True,
            "label": f"{first}|{second}", "masked_code": code.replace(f"{first}_{second}(", "METHOD_NAME(", 1),
            "qualname": f"{first}_{second}", "docstring_summary": f"{first} the {second} of {other}",
            "code_without_docstring": code}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("joint-corpus")
    rng = random.Random(3)
    for split, n in {"train": 90, "valid": 30}.items():
        with gzip.open(root / f"{split}.jsonl.gz", "wt", encoding="utf-8") as fh:
            fh.writelines(json.dumps(_record(split, i, rng)) + "\n" for i in range(n))
    return root


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert-joint"))


def _prepared(corpus: Path, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """``prepare`` over packs of the corpus at 40 code tokens (the shipped head's rebuild,
    tested in tests/models/test_head_from_export.py, replaced by a recorded call)."""
    tokenizer = tiny_model / "tokenizer.json"
    spec = PackSpec(tokenizer_sha256(tokenizer), max_code_tokens=40, eval_code_tokens=48)
    for split in ("train", "valid"):
        pack_split(corpus, split, spec, tokenizer, tmp_path / "search" / f"{split}.npz", progress=False)
        pack_naming(corpus, split, NamingPackSpec(tokenizer_sha256(tokenizer)), tokenizer,
                    tmp_path / "naming" / f"{split}.npz", progress=False)
    rebuilt: list[tuple[Path, Path]] = []
    monkeypatch.setattr(joint_job, "_shipped_head",
                        lambda models, out, probes: rebuilt.append((models, probes)) or out.mkdir(parents=True))
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    info = joint_job.prepare(repo, repo / "carry", corpus, tmp_path / "search", tmp_path / "naming",
                             naming_train=25, naming_valid=10, wheels=False)
    assert rebuilt == [(repo / "models", repo / "carry" / "joint" / joint_job.PROBES_FILE)]
    return info


def test_prepare_carries_the_search_pack_and_a_seeded_share_of_naming_functions(
        corpus: Path, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = _prepared(corpus, tiny_model, tmp_path, monkeypatch)
    folder = tmp_path / "repo" / "carry" / "joint"
    assert (info["naming_train"]["functions"], info["naming_valid"]["functions"]) == (25, 10)
    assert info["search_train"] == {"pairs": 90, "code_tokens": 40, "bytes": (folder / "search" / "train.npz.xz").stat().st_size}
    train = list(naming_records(corpus, "train"))
    chosen = sorted(np.random.default_rng(joint_job.SEED).permutation(90)[:25])
    assert [r["label"] for r in load_records(folder / "train.jsonl.xz")] == [train[i]["label"] for i in chosen]
    back = Pairs.load(joint_job.uncarry_pack(folder / "search" / "train.npz.xz", tmp_path / "back.npz"))
    original = Pairs.load(tmp_path / "search" / "train.npz")
    assert back.meta == original.meta and np.array_equal(back.code.ids, original.code.ids)
    assert "/carry/" in (tmp_path / "repo" / ".git" / "info" / "exclude").read_text()

    joint_job.prepare(tmp_path / "repo", tmp_path / "repo" / "carry", corpus, tmp_path / "search", tmp_path / "naming",
                      naming_train=25, naming_valid=10, wheels=False, naming_first=25)  # the next session's share
    later = sorted(np.random.default_rng(joint_job.SEED).permutation(90)[25:50])
    assert [r["label"] for r in load_records(folder / "train.jsonl.xz")] == [train[i]["label"] for i in later]

    monkeypatch.setattr(joint_job, "CARRY_LIMIT", 1000)
    with pytest.raises(ValueError, match="> 64 MiB; pass a smaller --naming-train"):
        joint_job.prepare(tmp_path / "repo", tmp_path / "repo" / "carry", corpus, tmp_path / "search",
                          tmp_path / "naming", naming_train=25, naming_valid=10, wheels=False)


def test_the_session_derives_the_packs_each_run_accepts(corpus: Path, tiny_model: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """One carried pack (40 code tokens) → a folder per run's length that ``ensure_packs``
    (what ``train naming`` calls) accepts for that length, equal to packing the corpus so."""
    _prepared(corpus, tiny_model, tmp_path, monkeypatch)
    tokenizer = tiny_model / "tokenizer.json"
    packs = joint_job.search_packs(tmp_path / "repo" / "carry" / "joint", tmp_path / "work", [40, 24, 24])
    assert set(packs) == {24, 40}
    for length, folder in packs.items():
        spec = PackSpec(tokenizer_sha256(tokenizer), max_code_tokens=length, eval_code_tokens=48)
        ensure_packs(corpus, folder, spec, tokenizer, splits=("train", "valid"))  # refuses another spec
        direct = tmp_path / f"direct-{length}.npz"
        pack_split(corpus, "train", spec, tokenizer, direct, progress=False)
        assert np.array_equal(Pairs.load(folder / "train.npz").code.ids, Pairs.load(direct).code.ids)
    assert Pairs.load(packs[24] / "train.npz").code.lengths().max() == 24


def test_run_commands_and_the_choice_of_run(tmp_path: Path) -> None:
    assert joint_job.code_length(("init=x", "search_code_tokens=256")) == 256
    assert joint_job.code_length(()) == 128
    command = joint_job.run_command("code256", ("init=/w/head", "search_code_tokens=256"), Path("/w"),
                                    Path("/w/search-256"), 1234.4, ["device=cpu"])
    settings = command[command.index("--set") + 1:]
    assert settings[0] == "device=cuda" and settings[-1] == "device=cpu"  # a test's overrides win
    assert {"init=/w/head", "search_code_tokens=256", "stop_at=1234", *joint_job.COMMON} <= set(settings)
    assert command[command.index("--search-pack") + 1] == "/w/search-256"

    run = tmp_path / "run"
    run.mkdir()
    events = [{"event": "valid", "step": 0, "score": 1.0, "best": True},
              {"event": "valid", "step": 5, "score": 1.2, "best": True},
              {"event": "valid", "step": 9, "score": 1.1, "best": False}, {"event": "paused", "step": 9}]
    (run / "log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    assert best_validation(run)["step"] == 5
    assert best_validation(tmp_path / "none") == {}


def test_a_session_returns_every_runs_log_and_its_result(tmp_path: Path) -> None:
    """``gpu_job.return_logs`` (every GPU session's last step): each run's log, config and the
    end of its output, with the session's result, come back as one part ``collect`` unpacks."""
    from pathfusion.model_export import gpu_job

    work = tmp_path / "work"
    for name in ("code128", "code256"):
        (work / name).mkdir(parents=True)
        (work / name / "log.jsonl").write_text(json.dumps({"event": "valid", "run": name}) + "\n")
        (work / name / "config.json").write_text("{}\n")
        (work / f"{name}.out").write_bytes(b"x" * 250_000 + name.encode())
    result = {"returned": "code128", "exit_codes": {"code128": 0, "code256": 1}}
    gpu_job.return_logs(work, ["code128", "code256"], result, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["logs.tar.part00", "session.json"]
    assert json.loads((tmp_path / "out" / "session.json").read_text()) == result
    logs = Path(gpu_job.collect(tmp_path / "out", tmp_path / "back")["logs"])
    assert json.loads((logs / "code256.log.jsonl").read_text())["run"] == "code256"
    out = (logs / "code256.out").read_bytes()
    assert len(out) == 200_000 and out.endswith(b"code256")  # the end of a long output
    assert json.loads((logs / "session.json").read_text()) == result
