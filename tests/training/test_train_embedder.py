"""Fine-tuning the embedder (model_export/train_embedder.py, search_pairs.py) on a tiny BERT
and a synthetic corpus: packing, batching, the loss, resume = uninterrupted, export parity."""

from __future__ import annotations

import dataclasses
import gzip
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pathfusion.model_export import train_embedder
from pathfusion.model_export.export_embedder import (
    export_minilm,
    load_reference,
    reference_embeddings,
    write_manifest_entry,
)
from pathfusion.model_export.search_pairs import (
    PackSpec,
    Pairs,
    Ragged,
    chosen_for_anonymisation,
    pack_split,
    project_batches,
    tokenizer_sha256,
)
from pathfusion.model_export.train_embedder import (
    EmbedderTrainConfig,
    contrastive_loss,
    duplicate_mask,
)
from pathfusion.server.embedder import OnnxEmbedder
from tests.helpers.models import write_tiny_bert

WORDS = ["read", "write", "parse", "config", "file", "url", "json", "cache", "user", "token",
         "list", "sort", "socket", "image", "matrix", "queue"]


def _record(split: str, project: str, i: int, rng: random.Random) -> dict[str, object]:
    words = rng.sample(WORDS, 3)
    name = "_".join(words[:2])
    code = (f"def {name}(value, {words[2]}_count):\n"
            f"    result = {words[0]}_{words[1]}(value)\n"
            f"    return result + {words[2]}_count\n")
    qualname = f"Store.{name}" if i % 2 else name  # every other one a method
    return {"id": f"{split}-{project}-{i}", "project": project, "search": True, "qualname": qualname,
            "docstring_summary": f"{words[0]} the {words[1]} with {words[2]}",
            "code_without_docstring": code}


def _write_corpus(root: Path, sizes: dict[str, int]) -> None:
    rng = random.Random(0)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in sizes.items():
        rows = [_record(split, f"{split}proj{i % 5}", i, rng) for i in range(n)]
        rows.append({"id": "nodoc", "project": "x", "search": False, "docstring_summary": None,
                     "code_without_docstring": "def f(): pass"})
        with gzip.open(root / f"{split}.jsonl.gz", "wt", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide BERT with MiniLM's tokenizer (random weights, seeded)."""
    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    _write_corpus(root, {"train": 300, "valid": 120, "test": 120})
    return root


def test_ragged_roundtrip_and_padding() -> None:
    ragged = Ragged.build([[101, 7, 102], [101, 102], [101, 5, 6, 7, 102]])
    assert len(ragged) == 3 and list(ragged[2]) == [101, 5, 6, 7, 102]
    ids, mask = ragged.batch([1, 2], pad_id=0)
    assert ids.tolist() == [[101, 102, 0, 0, 0], [101, 5, 6, 7, 102]]
    assert mask.tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]


def test_pack_cuts_lengths_and_anonymises_a_share(corpus: Path, tiny_model: Path, tmp_path: Path) -> None:
    spec = PackSpec(tokenizer_sha256(tiny_model / "tokenizer.json"), max_query_tokens=6,
                    max_code_tokens=12, eval_code_tokens=20, anonymise_share=0.5)
    train_meta = pack_split(corpus, "train", spec, tiny_model / "tokenizer.json", tmp_path / "train.npz",
                            progress=False)
    valid_meta = pack_split(corpus, "valid", spec, tiny_model / "tokenizer.json", tmp_path / "valid.npz",
                            progress=False)
    train, valid = Pairs.load(tmp_path / "train.npz"), Pairs.load(tmp_path / "valid.npz")
    assert train_meta["pairs"] == len(train) == 300  # the pair without a docstring is left out
    assert valid_meta["pairs"] == len(valid) == 120
    assert train.query.lengths().max() <= 6 and train.code.lengths().max() <= 12
    assert valid.code.lengths().max() <= 20 and valid.code.lengths().max() > 12
    assert all(train.code[i][-1] == 102 for i in range(len(train)))  # [SEP] kept when cut
    # The anonymised share is chosen by id (not order), about half here; none in valid.
    expected = [chosen_for_anonymisation(f"train-trainproj{i % 5}-{i}", 0.5, spec.seed) for i in range(300)]
    assert train.anonymised.tolist() == expected and 100 < sum(expected) < 200
    assert not valid.anonymised.any() and valid.anon is not None and train.anon is None
    from tokenizers import Tokenizer
    tokenizer = Tokenizer.from_file(str(tiny_model / "tokenizer.json"))
    anonymous = tokenizer.decode(list(valid.anon[0]))
    assert "func" in anonymous and "var1" in anonymous
    plain = tokenizer.decode(list(valid.code[0]))
    assert "func" not in plain and "value" in plain and not plain.startswith("class")
    # A method is packed as the server embeds it: under its class's header (not when anonymised).
    assert tokenizer.decode(list(valid.code[1])).startswith("class store : def ")
    assert "store" not in tokenizer.decode(list(valid.anon[1]))


def test_project_batches_cover_each_pair_once_with_project_chunks() -> None:
    project = np.repeat(np.arange(10), 40)
    batches = project_batches(project, batch_size=64, chunk=16, seed=3)
    flat = np.concatenate(batches)
    assert all(len(b) == 64 for b in batches) and len(batches) == 400 // 64
    assert len(set(flat.tolist())) == len(flat)
    # Each batch is made of 4 runs of 16 same-project pairs (the chunks).
    for batch in batches:
        projects = project[batch]
        runs = np.flatnonzero(np.diff(projects)) + 1
        assert len(np.unique(projects)) <= 5 and len(runs) <= 8
    assert [b.tolist() for b in project_batches(project, 64, 16, seed=3)] == [b.tolist() for b in batches]
    assert [b.tolist() for b in project_batches(project, 64, 16, seed=4)] != [b.tolist() for b in batches]


def test_contrastive_loss_prefers_matching_pairs_and_masks_duplicates() -> None:
    eye = torch.eye(4)
    assert contrastive_loss(eye, eye, 20.0, symmetric=True) < 1e-3
    assert contrastive_loss(eye, eye.flip(0), 20.0, symmetric=True) > 10
    # Rows 0 and 1 have the same code: without the mask the loss cannot go to zero.
    codes = torch.stack([eye[0], eye[0], eye[2], eye[3]])
    queries = codes.clone()
    assert contrastive_loss(queries, codes, 20.0, symmetric=False) > 0.3  # 2 rows × ln 2 / 4
    same = torch.from_numpy(duplicate_mask(Ragged.build([[1, 2], [1, 2], [3], [4]]), [0, 1, 2, 3]))
    assert same.tolist()[0] == [False, True, False, False]
    assert contrastive_loss(queries, codes, 20.0, symmetric=False, not_negative=same) < 1e-3


def _config(tiny_model: Path, **overrides: object) -> EmbedderTrainConfig:
    config = EmbedderTrainConfig(base=str(tiny_model), batch_size=32, lr=1e-3, warmup_steps=2, epochs=2,
                                 project_chunk=8, max_query_tokens=16, max_code_tokens=48,
                                 eval_code_tokens=64, eval_every=4, valid_groups=1, threads=1,
                                 device="cpu", eval_batch=32, log_every=1)
    return EmbedderTrainConfig(**{**config.__dict__, **overrides})


def _log(run: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_training_learns_resumes_exactly_and_exports(corpus: Path, tiny_model: Path, tmp_path: Path) -> None:
    pack = tmp_path / "pack"
    whole = train_embedder.train(corpus, tmp_path / "whole", _config(tiny_model), pack, progress=False)
    assert whole["finished"] and whole["steps"] == 2 * (300 // 32)
    log = _log(tmp_path / "whole")
    valid = [e for e in log if e["event"] == "valid"]
    assert valid[0]["step"] == 0 and len(valid) >= 4
    assert max(e["mrr"] for e in valid[1:]) > valid[0]["mrr"]  # training helps the held-out pairs
    train_losses = [e["loss"] for e in log if e["event"] == "train"]
    assert train_losses[-1] < train_losses[0]
    assert 0 < whole["test"]["mrr"] <= 1 and "mrr_anonymised" in whole["test"]

    # Interrupted after 5 steps and resumed: the same weights as the uninterrupted run.
    run = tmp_path / "resumed"
    paused = train_embedder.train(corpus, run, _config(tiny_model, max_steps=5), pack, progress=False)
    assert not paused["finished"] and paused["step"] == 5
    # Resumed with gradient checkpointing (a memory setting): the same gradients.
    resumed = train_embedder.train(corpus, run, _config(tiny_model, gradient_checkpointing=True), pack,
                                   progress=False)
    assert resumed["finished"] and any(e["event"] == "resumed" for e in _log(run))
    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(run / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.allclose(a[key], b[key], atol=1e-6) for key in a)
    def scores(result: dict) -> dict:
        return {k: v for k, v in result["test"].items() if k != "seconds"}
    assert scores(resumed) == scores(whole)

    # best/ exports as the served ONNX embedder with fp32 parity.
    entry = export_minilm(tmp_path / "models", quantize=True, model_dir=run / "best", model_id="tiny-code")
    write_manifest_entry(tmp_path / "models", entry)
    assert entry["id"] == "tiny-code" and entry["metrics"]["parity"]["max_abs_diff"] <= 1e-4
    served = OnnxEmbedder.load(tmp_path / "models", device="cpu", quantized=False)
    assert served.model_id == "tiny-code" and served.dim == 32
    texts = ["read the config with user", "def parse_json(value):\n    return value"]
    model, tokenizer = load_reference(run / "best")
    want = reference_embeddings(model, tokenizer, texts)
    assert np.abs(served.embed(texts) - want).max() <= 1e-4


def test_bf16_steps_on_the_cpu_only_where_computed_natively(corpus: Path, tiny_model: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from pathfusion.model_export import run_files

    pack = tmp_path / "pack"
    config = _config(tiny_model, cpu_bf16=True, max_steps=3, eval_every=100)
    if run_files.native_cpu_bf16():
        result = train_embedder.train(corpus, tmp_path / "bf16", config, pack, progress=False)
        losses = [e["loss"] for e in _log(tmp_path / "bf16") if e["event"] == "train"]
        assert result["step"] == 3 and all(np.isfinite(losses))
        fp32 = train_embedder.train(corpus, tmp_path / "fp32", _config(tiny_model, max_steps=3, eval_every=100),
                                    pack, progress=False)
        fp32_losses = [e["loss"] for e in _log(tmp_path / "fp32") if e["event"] == "train"]
        assert fp32["step"] == 3 and losses != fp32_losses            # bf16 really computed the steps
        assert np.allclose(losses, fp32_losses, rtol=0.05)            # ... and close to fp32
    monkeypatch.setattr(run_files, "native_cpu_bf16", lambda: False)
    with pytest.raises(ValueError, match="natively"):
        train_embedder.train(corpus, tmp_path / "refused", config, pack, progress=False)


def test_bad_overrides_are_refused() -> None:
    with pytest.raises(ValueError, match="known keys"):
        EmbedderTrainConfig.from_overrides(["nope=1"])
    with pytest.raises(ValueError, match="true or false"):
        EmbedderTrainConfig.from_overrides(["symmetric=maybe"])
    assert EmbedderTrainConfig.from_overrides(["batch_size=64", "symmetric=false"]).batch_size == 64
    # Settings no run can use are refused before the data is packed, naming the field.
    for item, says in (("epochs=0", "epochs must be at least 1"), ("lr=-1", "lr must be above 0"),
                       ("anonymise_share=1.5", "anonymise_share is a share"), ("anonymise_share=nan", "share"),
                       ("checkpoint_minutes=0", "checkpoint_minutes"), ("max_steps=-2", "max_steps must be 0 or more"),
                       ("max_code_tokens=0", "max_code_tokens")):
        with pytest.raises(ValueError, match=says):
            EmbedderTrainConfig.from_overrides([item])
    assert EmbedderTrainConfig.from_overrides(["warmup_steps=0", "anonymise_share=0", "max_steps=0"]).warmup_steps == 0


@pytest.mark.parametrize("storage", ["rows", "dynamic"])
def test_shipped_int8_graph_rebuilds_as_the_fine_tuning_base(tiny_model: Path, tmp_path: Path, storage: str) -> None:
    """The base a GPU job rebuilds from the repository's int8 graph (either int8 form):
    every weight within one quantisation step of the original, embeddings close to the
    served graph's."""
    from safetensors.numpy import load_file

    from pathfusion.model_export.onnx_to_hf import ConversionError, build, state_dict

    models = tmp_path / "models"
    write_manifest_entry(models, export_minilm(models, quantize=True, model_dir=tiny_model, keep_fp32=False,
                                               int8_storage=storage))
    served = OnnxEmbedder.load(models, device="cpu", threads=1)
    assert served.one_per_run  # on the CPU every graph embeds one text per run
    texts = ["read the config", "def f(x):\n    return x + 1", "sort users by login"]
    alone = np.stack([served.embed([text])[0] for text in texts])
    np.testing.assert_array_equal(served.embed(texts, batch_size=8), alone)
    if storage == "rows":  # the per-row graph also batches correctly (what CUDA does)
        served.one_per_run = False
        np.testing.assert_allclose(served.embed(texts, batch_size=8), alone, atol=1e-5)
    report = build(models, tmp_path / "base")
    original = load_file(str(tiny_model / "model.safetensors"))
    rebuilt = load_file(str(tmp_path / "base" / "model.safetensors"))
    assert set(rebuilt) == set(original) - {k for k in original if k.startswith("pooler.")}
    for name, weights in rebuilt.items():
        want = original[name]
        assert weights.shape == want.shape, name
        step = np.abs(want).max() / 127 if want.ndim == 2 else 0.0  # int8 per channel, uint8 tables
        assert np.abs(weights - want).max() <= step * 0.51 + 1e-7, name
    assert report["min_cosine_to_int8_graph"] > 0.98
    model, _ = load_reference(tmp_path / "base")
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 32
    bogus = tmp_path / "bogus.onnx"
    shutil.copy2(next((models / "embedder").glob("*.onnx")), bogus)
    assert state_dict(bogus)  # the same graph converts
    with pytest.raises(ConversionError):
        import onnx
        graph = onnx.load(str(bogus))
        del graph.graph.initializer[:]
        onnx.save(graph, str(bogus))
        state_dict(bogus)


def test_a_smoothed_int8_graph_rebuilds_as_the_model_itself(tiny_model: Path, tmp_path: Path) -> None:
    """A graph re-quantised by smooth_quant multiplies weight rows by s: the rebuilt base
    divides them back, so fine-tuning starts from the model's own weights."""
    from safetensors.numpy import load_file

    from pathfusion.model_export.onnx_to_hf import build
    from pathfusion.model_export.smooth_quant import requantize

    models, smoothed = tmp_path / "models", tmp_path / "smoothed"
    write_manifest_entry(models, export_minilm(models, quantize=True, model_dir=tiny_model, keep_fp32=False))
    texts = ["read the config", "def f(x):\n    return x + 1", "sort users by login", "def METHOD_NAME(a):\n    pass"]
    entry = requantize(models, smoothed, texts * 5)
    assert entry["smoothing"]["activations"] > 0
    report = build(smoothed, tmp_path / "base")
    original = load_file(str(tiny_model / "model.safetensors"))
    rebuilt = load_file(str(tmp_path / "base" / "model.safetensors"))
    for name, weights in rebuilt.items():
        scale = np.abs(original[name]).max()
        assert np.abs(weights - original[name]).max() <= 0.05 * scale + 1e-6, name
    assert report["min_cosine_to_int8_graph"] > 0.98


def test_gpu_job_returns_the_best_weights_in_small_parts(corpus: Path, tiny_model: Path, tmp_path: Path) -> None:
    """The device side of the GPU route on the CPU: packs in a carry folder → train → parts
    of ≤ 15 MiB (here forced small) → collected back into a folder that loads."""
    from safetensors.numpy import load_file

    from pathfusion.model_export import gpu_job

    carry = tmp_path / "carry"
    cfg = _config(tiny_model)
    spec = cfg.pack_spec(tokenizer_sha256(tiny_model / "tokenizer.json"))
    for split in ("train", "valid", "test"):
        pack_split(corpus, split, spec, tiny_model / "tokenizer.json", carry / f"{split}.npz", progress=False)
    small = Pairs.load(carry / "train.npz").head(100)
    assert len(small) == 100 and small.meta["cut_from"] == 300 and list(small.code[99]) == list(
        Pairs.load(carry / "train.npz").code[99])
    out = tmp_path / "out"
    overrides = [f"{k}={v}" for k, v in cfg.__dict__.items()] + ["max_steps=3"]
    result = gpu_job.run(carry, out, tmp_path / "run", overrides, models=tmp_path / "none", corpus=corpus)
    assert result["step"] == 3
    parts = gpu_job.split_file(tmp_path / "run" / "best" / "model.safetensors", tmp_path / "parts", part_bytes=200_000)
    assert len(parts) > 3 and all(p.stat().st_size <= 200_000 for p in parts)
    assert {p.name for p in out.iterdir()} == {"embedder.tar.part00"}  # the session's format
    collected = gpu_job.collect(out, tmp_path / "collected")
    target = Path(collected["embedder"]) / "best"
    assert {"log.jsonl", "config.json", "result.json"} <= {p.name for p in (target.parent).iterdir()}
    want = load_file(str(tmp_path / "run" / "best" / "model.safetensors"))
    got = load_file(str(target / "model.safetensors"))
    assert set(got) == set(want)
    # int8 rows on the way: each row within half a quantisation step of its largest value
    assert all(np.abs(got[k] - want[k]).max() <= np.abs(want[k]).max() / 127 + 1e-6 for k in want)
    model, _ = load_reference(target)
    assert model.config.hidden_size == 32


def test_a_resumed_run_keeps_what_it_trains_and_takes_where_and_how_long(tmp_path: Path) -> None:
    """The saved config wins for what a run trains; the invocation's run controls (and the
    fields named with ``also``) win for where and how long it runs."""
    from pathfusion.model_export.run_files import resumed_config
    from pathfusion.model_export.train_naming import NamingTrainConfig

    saved = tmp_path / "config.json"
    started = EmbedderTrainConfig(lr=1e-4, epochs=2, threads=2, time_budget_min=30.0)
    saved.write_text(json.dumps(dataclasses.asdict(started)))
    now = EmbedderTrainConfig(lr=9.0, epochs=9, threads=1, time_budget_min=0.0, cpu_bf16=True,
                              gradient_checkpointing=True)
    resumed = resumed_config(saved, now)
    assert type(resumed) is EmbedderTrainConfig
    assert (resumed.lr, resumed.epochs) == (1e-4, 2)
    assert (resumed.threads, resumed.time_budget_min, resumed.cpu_bf16, resumed.gradient_checkpointing) == (
        1, 0.0, True, True)
    assert resumed_config(saved, now, also=("lr",)).lr == 9.0  # a field named in ``also`` follows the command

    naming = tmp_path / "naming.json"
    naming.write_text(json.dumps(dataclasses.asdict(NamingTrainConfig(variant="concat", amp=True))))
    again = resumed_config(naming, NamingTrainConfig(variant="llm", amp=False, eval_batch=3), also=("amp",))
    assert (again.variant, again.amp, again.eval_batch) == ("concat", False, 3)


def test_a_pack_cut_shorter_is_the_pack_packed_shorter(corpus: Path, tiny_model: Path, tmp_path: Path) -> None:
    """``Pairs.cut_code``: a GPU job carries one pack (the longest code) and cuts the others
    there; the cut must be what packing at that length gives, or runs would refuse it (spec)
    or train on other ids. The carried form (uncompressed ``.npz`` inside xz) loads the same."""
    from pathfusion.model_export.joint_job import carried_pack, uncarry_pack

    tokenizer = tiny_model / "tokenizer.json"
    long_spec = PackSpec(tokenizer_sha256(tokenizer), max_code_tokens=40, anonymise_share=0.5)
    short_spec = dataclasses.replace(long_spec, max_code_tokens=24)
    pack_split(corpus, "train", long_spec, tokenizer, tmp_path / "long.npz", progress=False)
    pack_split(corpus, "train", short_spec, tokenizer, tmp_path / "short.npz", progress=False)
    pack_split(corpus, "valid", long_spec, tokenizer, tmp_path / "valid.npz", progress=False)
    long, short = Pairs.load(tmp_path / "long.npz"), Pairs.load(tmp_path / "short.npz")
    assert (long.code.lengths() > 24).sum() > 50  # the cut is exercised
    cut = long.cut_code(24)
    assert cut.meta == short.meta
    for field in ("query", "code"):
        assert np.array_equal(getattr(cut, field).ids, getattr(short, field).ids)
        assert np.array_equal(getattr(cut, field).offsets, getattr(short, field).offsets)
    assert np.array_equal(cut.anonymised, short.anonymised) and np.array_equal(cut.project, short.project)
    assert np.array_equal(long.cut_code(40).code.ids, long.code.ids)
    with pytest.raises(ValueError, match="cuts only down from its 40"):
        long.cut_code(64)
    pack_split(corpus, "valid", short_spec, tokenizer, tmp_path / "valid-short.npz", progress=False)
    valid, valid_short = Pairs.load(tmp_path / "valid.npz").cut_code(24), Pairs.load(tmp_path / "valid-short.npz")
    assert valid.meta == valid_short.meta and np.array_equal(valid.code.ids, valid_short.code.ids)
    assert valid.anon is not None and valid_short.anon is not None
    assert np.array_equal(valid.anon.ids, valid_short.anon.ids)
    carried_pack(short, tmp_path / "carried.npz.xz")
    back = Pairs.load(uncarry_pack(tmp_path / "carried.npz.xz", tmp_path / "back" / "train.npz"))
    assert back.meta == short.meta and np.array_equal(back.code.ids, short.code.ids)
    assert np.array_equal(back.query.offsets, short.query.offsets)


def test_stop_at_ends_a_run_at_a_wall_clock_time(corpus: Path, tiny_model: Path, tmp_path: Path) -> None:
    """A job with a fixed command limit tells its runs when to stop (``stop_at``); the run
    stops at the first step past it, checkpointed, and can be resumed."""
    import time

    result = train_embedder.train(corpus, tmp_path / "run", _config(tiny_model, stop_at=time.time() - 1),
                                  tmp_path / "pack", progress=False)
    assert not result["finished"] and result["step"] == 1
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    resumed = train_embedder.train(corpus, tmp_path / "run", _config(tiny_model, max_steps=3), tmp_path / "pack",
                                   progress=False)
    assert resumed["step"] == 3
