"""The generative naming head (model_export/naming_pack.py, name_decoder.py, train_naming.py)
and the GPU session's returns (gpu_job.int8_rows, pack_folder), on a tiny BERT and a
synthetic corpus whose names can be read off the code."""

from __future__ import annotations

import dataclasses
import gzip
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from pathfusion.model_export import gpu_job, train_naming
from pathfusion.model_export.name_decoder import DecoderShape, NameDecoder, beam_search, greedy
from pathfusion.model_export.naming_pack import (
    NameTokens,
    NamingExamples,
    NamingPackSpec,
    pack_split,
    source_text,
)
from pathfusion.model_export.search_pairs import (
    Pairs,
    load_tokenizer,
    project_batches,
    tokenizer_sha256,
)
from pathfusion.model_export.train_naming import NamingTrainConfig, build_vocabulary, length_batches
from pathfusion.server.name_generator import label_of_pieces, label_pieces
from tests.helpers.models import write_tiny_bert

WORDS = ["read", "write", "parse", "config", "file", "url", "json", "cache", "user", "token",
         "list", "sort", "socket", "image", "matrix", "queue"]


def _record(split: str, project: str, i: int, rng: random.Random) -> dict[str, object]:
    first, second, other = rng.sample(WORDS, 3)
    code = (f"def METHOD_NAME(value, {other}_count):\n"
            f"    result = {first}_{second}(value)\n"
            f"    return result + {other}_count\n")
    return {"id": f"{split}-{project}-{i}", "project": project, "naming": True, "search": True,
            "qualname": f"{first}_{second}", "label": f"{first}|{second}", "masked_code": code,
            "docstring_summary": f"{first} the {second} with {other}",
            "code_without_docstring": code.replace("METHOD_NAME", f"{first}_{second}")}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("naming-corpus")
    rng = random.Random(0)
    for split, n in {"train": 320, "valid": 64, "test": 64}.items():
        rows = [_record(split, f"{split}proj{i % 4}", i, rng) for i in range(n)]
        rows.append({"id": "unnamed", "project": "x", "naming": False, "label": "", "masked_code": ""})
        with gzip.open(root / f"{split}.jsonl.gz", "wt", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
    return root


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide BERT with MiniLM's tokenizer (random weights, seeded)."""
    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert-naming"))


@pytest.fixture(scope="module")
def names(tiny_model: Path) -> NameTokens:
    return NameTokens(load_tokenizer(tiny_model / "tokenizer.json"))


def test_names_round_trip_through_wordpieces(names: NameTokens) -> None:
    for label in ("get|file|name", "to|json", "getcwd", "parse|v2|url", "x"):
        ids = names.target_ids(label, limit=12)
        assert ids[-1] == names.sep_id and names.sep_id not in ids[:-1]
        assert names.name_of_ids(ids) == label
    assert len(names.target_ids("a|b|c|d|e|f|g|h|i|j|k|l|m", limit=6)) == 6  # cut, still ends
    assert label_of_pieces(["load", "##s", "config", "[UNK]"]) == "loads|config|<UNK>"


def test_pack_masks_the_name_and_keeps_labels(corpus: Path, tiny_model: Path, names: NameTokens,
                                              tmp_path: Path) -> None:
    tokenizer_file = tiny_model / "tokenizer.json"
    spec = NamingPackSpec(tokenizer_sha256(tokenizer_file), max_source_tokens=16, max_target_tokens=12)
    meta = pack_split(corpus, "train", spec, tokenizer_file, tmp_path / "train.npz", progress=False)
    examples = NamingExamples.load(tmp_path / "train.npz")
    assert meta["examples"] == len(examples) == 320 and meta["projects"] == 4  # the unnamed record is left out
    assert examples.source.lengths().max() == 16  # cut, keeping the final [SEP]
    assert all(examples.source[i][-1] == names.sep_id for i in range(len(examples)))
    mask_id = load_tokenizer(tokenizer_file).token_to_id("[MASK]")
    assert all(mask_id in examples.source[i].tolist() for i in range(len(examples)))
    assert source_text("def METHOD_NAME(): METHOD_NAME()") == "def [MASK](): [MASK]()"
    for i in (0, 17, 319):
        assert names.name_of_ids(examples.target[i]) == examples.labels[i]
    picked = examples.take(np.array([5, 2]))
    assert picked.labels == [examples.labels[5], examples.labels[2]]
    assert picked.source[0].tolist() == examples.source[5].tolist() and picked.meta["cut_from"] == 320


def _decoder(names: NameTokens, vocab: list[int], hidden: int = 32) -> NameDecoder:
    torch.manual_seed(0)
    return NameDecoder(hidden, vocab, 30522, names.cls_id, names.sep_id, names.unk_id,
                       DecoderShape(layers=1, heads=2, feed_forward=64, max_length=6, dropout=0.0))


def test_pointer_produces_wordpieces_outside_the_vocabulary(names: NameTokens) -> None:
    """A target wordpiece outside K is produced by copying when the source holds it, and
    becomes [UNK] when it cannot be produced at all; next-token probabilities sum to one."""
    hello, world, other = (label_pieces(names.tokenizer, w)[0] for w in ("hello", "world", "zebra"))
    decoder = _decoder(names, [names.cls_id, names.sep_id, names.unk_id, hello]).eval()
    weight = torch.randn(30522, 32)[decoder.vocab_ids].T
    source = torch.tensor([[names.cls_id, world, hello, names.sep_id, 0]])
    pad = torch.tensor([[False, False, False, False, True]])
    target = torch.tensor([[world, other, names.sep_id]])
    assert decoder.producible(target, source, pad).tolist() == [[world, names.unk_id, names.sep_id]]
    memory = torch.randn(1, 5, 32)
    with torch.no_grad():
        log_probs = decoder.next_log_probs(torch.tensor([[names.cls_id]]), memory, source, pad, weight)
    probs = log_probs.exp()[0]
    assert abs(float(probs.sum()) - 1) < 1e-4
    assert probs[world] > 1e-6 and probs[other] < 1e-6  # copyable vs neither in K nor in the source
    assert probs[names.cls_id] < 1e-6 and probs[0] < 1e-6  # [CLS] only starts; padding never copies
    loss = decoder.loss(memory, source, pad, target, torch.zeros_like(target, dtype=torch.bool), weight)
    assert torch.isfinite(loss)


def test_the_cached_step_is_the_whole_prefix_step(names: NameTokens) -> None:
    """Reading one wordpiece at a time with the earlier ones' keys and values gives every
    step's log-probabilities of reading the whole prefix — copied out-of-vocabulary inputs and
    a function shared by a beam (memory of batch 1) included."""
    torch.manual_seed(0)
    vocab = [names.cls_id, names.sep_id, names.unk_id, *range(5000, 5040)]
    decoder = _decoder(names, vocab).eval()
    hidden = 32
    memory = torch.randn(1, 15, hidden)
    source = torch.randint(6000, 7000, (1, 15))
    pad = torch.zeros(1, 15, dtype=torch.bool)
    pad[0, -2:] = True
    table = torch.randn(hidden, len(vocab))
    cross = decoder.cross_keys(memory)
    tokens = torch.cat([torch.full((4, 1), names.cls_id), torch.randint(5000, 5040, (4, 5))], dim=1)
    tokens[1, 2] = source[0, 4]  # copied from the source: not in the vocabulary
    past = torch.zeros(decoder.shape.layers, 2, 4, 0, hidden)
    with torch.no_grad():
        for step in range(tokens.shape[1]):
            got, present = decoder.next_log_probs_cached(tokens[:, step:step + 1], torch.tensor([step]), past,
                                                         memory, source, pad, table, cross)
            past = torch.cat([past, present], dim=3)
            want = decoder.next_log_probs(tokens[:, :step + 1], memory, source, pad, table, cross)
            finite = torch.isfinite(want)
            assert torch.equal(torch.isfinite(got), finite)
            assert torch.allclose(got[finite], want[finite], atol=1e-4)


def test_beam_search_ranks_by_probability_and_agrees_with_greedy(names: NameTokens) -> None:
    vocab = [names.cls_id, names.sep_id, names.unk_id] + [label_pieces(names.tokenizer, w)[0] for w in WORDS]
    decoder = _decoder(names, vocab).eval()
    weight = torch.randn(30522, 32)[decoder.vocab_ids].T
    source = torch.tensor([[names.cls_id, *vocab[3:9], names.sep_id]])
    pad = torch.zeros_like(source, dtype=torch.bool)
    memory = torch.randn(1, source.shape[1], 32)
    found = beam_search(decoder, memory, source, pad, weight, beam=4, results=4)
    assert 1 <= len(found) <= 4 and [s for _, s in found] == sorted((s for _, s in found), reverse=True)
    for ids, score in found:  # each score is the sum of the step log-probabilities of its ids
        tokens, total = [names.cls_id], 0.0
        for token in [*ids, names.sep_id][:decoder.shape.max_length]:
            with torch.no_grad():
                total += float(decoder.next_log_probs(torch.tensor([tokens]), memory, source, pad, weight)[0, token])
            tokens.append(token)
        assert abs(total - score) < 1e-3
    best_of_one = beam_search(decoder, memory, source, pad, weight, beam=1, results=1)
    if best_of_one:
        assert best_of_one[0][0] == greedy(decoder, memory, source, pad, weight)[0]


def _config(tiny_model: Path, **overrides: object) -> NamingTrainConfig:
    values: dict[str, object] = {
        "base": str(tiny_model), "batch_size": 16, "lr": 1e-3, "decoder_lr": 3e-3, "warmup_steps": 5,
        "epochs": 4, "search_weight": 0.5, "search_batch": 16, "vocab_size": 64, "layers": 1, "heads": 2,
        "feed_forward": 64, "dropout": 0.1, "max_source_tokens": 48, "eval_every": 20, "valid_examples": 64,
        "valid_groups": 1, "device": "cpu", "threads": 1, "log_every": 5, "eval_batch": 32, **overrides}
    return NamingTrainConfig.from_overrides([f"{k}={v}" for k, v in values.items()])


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_training_learns_names_resumes_exactly_and_keeps_search(corpus: Path, tiny_model: Path,
                                                                tmp_path: Path) -> None:
    packs = {"naming_pack": tmp_path / "naming", "search_pack": tmp_path / "search"}
    whole = train_naming.train(corpus, tmp_path / "whole", _config(tiny_model), progress=False, **packs)
    assert whole["finished"] and whole["step"] == 4 * (320 // 16)
    valid = [e for e in _log(tmp_path / "whole") if e["event"] == "valid"]
    assert valid[0]["step"] == 0 and "mrr" in valid[0]["search"]
    assert max(e["naming"]["f1"] for e in valid) > valid[0]["naming"]["f1"] + 0.3  # names are learnt
    losses = [e["loss"] for e in _log(tmp_path / "whole") if e["event"] == "train"]
    assert losses[-1] < losses[0] / 2

    run = tmp_path / "resumed"
    paused = train_naming.train(corpus, run, _config(tiny_model, max_steps=23), progress=False, **packs)
    assert not paused["finished"] and paused["step"] == 23
    # Resumed with activation checkpointing (a memory setting, changeable on resume): the same gradients.
    resumed = train_naming.train(corpus, run, _config(tiny_model, gradient_checkpointing=True), progress=False,
                                 **packs)
    assert resumed["finished"] and any(e["event"] == "resumed" for e in _log(run))
    assert json.loads((run / "config.json").read_text())["gradient_checkpointing"]
    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(run / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)

    decoder = train_naming.load_decoder(tmp_path / "whole" / "best")
    assert (tmp_path / "whole" / "best" / "model.safetensors").is_file()
    assert decoder.vocab_ids.tolist() == json.loads((tmp_path / "whole" / "best" / "decoder.json").read_text())[
        "vocab_ids"]


def test_a_chunked_run_reads_the_search_pairs_after_the_earlier_chunk(corpus: Path, tiny_model: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``search_first=k``: the run's steps take batches k, k+1 … of the first seeded pass (the
    pairs an earlier chunk of k steps did not read), the checkpoint keeps the place, and a
    start past the pass is refused before anything is trained or validated."""
    packs = {"naming_pack": tmp_path / "naming", "search_pack": tmp_path / "search"}
    taken: list[np.ndarray] = []
    real_loss = train_naming.batch_loss

    def recording_loss(searcher: object, pairs: object, batch: np.ndarray, *rest: object, **named: object) -> object:
        taken.append(batch)
        return real_loss(searcher, pairs, batch, *rest, **named)

    monkeypatch.setattr(train_naming, "batch_loss", recording_loss)
    config = _config(tiny_model, search_first=2, max_steps=3, valid_groups=0, select_on="f1", eval_every=50)
    train_naming.train(corpus, tmp_path / "run", config, progress=False, **packs)
    pairs = Pairs.load(tmp_path / "search" / "train.npz")
    expected = project_batches(pairs.project, config.search_batch, config.project_chunk, config.seed + 1000)
    assert len(taken) == 3 and all(np.array_equal(a, b) for a, b in zip(taken, expected[2:5], strict=True))
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["state"]
    assert (state["search_epoch"], state["search_position"]) == (0, 5)
    with pytest.raises(ValueError, match=f"search_first={len(expected)}: the search pairs make only"):
        train_naming.train(corpus, tmp_path / "past", dataclasses.replace(config, search_first=len(expected)),
                           progress=False, **packs)
    assert not (tmp_path / "past" / "best").exists()  # refused before the first validation's minutes


def test_frozen_encoder_stays_unchanged(corpus: Path, tiny_model: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    config = _config(tiny_model, freeze_encoder=True, search_weight=0, max_steps=6, valid_groups=0, select_on="f1",
                     eval_every=3)
    train_naming.train(corpus, tmp_path / "run", config, tmp_path / "naming", tmp_path / "search", progress=False)
    before = load_file(str(tiny_model / "model.safetensors"))
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(state[f"bert.{k}"], v) for k, v in before.items() if f"bert.{k}" in state)


def test_bf16_on_the_cpu_only_when_asked_and_computed_natively(corpus: Path, tiny_model: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from pathfusion.model_export import run_files

    cpu = torch.device("cpu")
    a, b = torch.randn(4, 8), torch.randn(8, 4)
    with run_files.bf16_autocast(cpu)():        # the default: bf16 on a GPU only, fp32 on the CPU
        assert (a @ b).dtype == torch.float32
    with run_files.bf16_autocast(cpu, gpu=True, cpu=False)():
        assert (a @ b).dtype == torch.float32
    if run_files.native_cpu_bf16():
        with run_files.bf16_autocast(cpu, gpu=False, cpu=True)():
            assert (a @ b).dtype == torch.bfloat16
        config = _config(tiny_model, freeze_encoder=True, search_weight=0, max_steps=3, valid_groups=0,
                         select_on="f1", eval_every=3, cpu_bf16=True)
        result = train_naming.train(corpus, tmp_path / "bf16", config, tmp_path / "naming", tmp_path / "search",
                                    progress=False)
        assert result["step"] == 3 and json.loads((tmp_path / "bf16" / "config.json").read_text())["cpu_bf16"]
    # where bf16 would be emulated (slower than fp32), a run asking for it is refused, saying why
    monkeypatch.setattr(run_files, "native_cpu_bf16", lambda: False)
    with pytest.raises(ValueError, match="natively"):
        run_files.bf16_autocast(cpu, cpu=True)
    assert train_naming.main(["--corpus", str(corpus), "--run", str(tmp_path / "refused"), "--no-progress",
                              "--pack", str(tmp_path / "naming"), "--search-pack", str(tmp_path / "search"),
                              "--set", f"base={tiny_model}", "cpu_bf16=true", "max_steps=1"]) == 1


def test_vocabulary_and_length_batches(names: NameTokens) -> None:
    from pathfusion.model_export.search_pairs import Ragged

    targets = Ragged.build([[5000, 102], [5000, 6000, 102], [7000, 102]])
    vocab = build_vocabulary(targets, 2, names)
    assert vocab[:3] == [names.cls_id, names.sep_id, names.unk_id] and vocab[3:] == [5000, 6000]
    lengths = np.arange(100)
    batches = length_batches(lengths, 8, seed=1, pool=4)
    assert sorted(np.concatenate(batches).tolist()) == list(range(100))
    assert [b.tolist() for b in batches] == [b.tolist() for b in length_batches(lengths, 8, seed=1, pool=4)]
    assert all(len(b) <= 8 for b in batches)


def test_bad_naming_overrides_are_refused() -> None:
    with pytest.raises(ValueError, match="known keys"):
        NamingTrainConfig.from_overrides(["nope=1"])
    with pytest.raises(ValueError, match="select_on"):
        NamingTrainConfig.from_overrides(["select_on=loss"])
    for item, says in (("epochs=0", "epochs must be at least 1"), ("decoder_lr=0", "decoder_lr must be above 0"),
                       ("dropout=1.5", "dropout is a share"), ("valid_groups=-1", "valid_groups must be 0 or more"),
                       ("eval_every=0", "eval_every"), ("log_every=0", "log_every")):
        with pytest.raises(ValueError, match=says):
            NamingTrainConfig.from_overrides([item])
    # What the CPU fusion plan runs with (docs/training.md): naming only, no search validation.
    plan = NamingTrainConfig.from_overrides(["freeze_encoder=true", "search_weight=0", "valid_groups=0", "lr=0",
                                             "fusion_lr=6e-4", "warmup_steps=0"])
    assert (plan.search_weight, plan.valid_groups, plan.lr) == (0.0, 0, 0.0)


def test_int8_rows_round_trip_to_what_the_export_stores() -> None:
    """Weights returned as int8 rows re-quantise, in the exported orientation (Linear
    weights transposed), to the very same int8 values and scales."""
    torch.manual_seed(0)
    state = {"encoder.layer.0.attention.self.query.weight": torch.randn(300, 256),
             "embeddings.word_embeddings.weight": torch.randn(400, 200),
             "encoder.layer.0.attention.self.query.bias": torch.randn(300)}
    packed = gpu_job.int8_rows(state)
    assert packed["encoder.layer.0.attention.self.query.weight::int8"].dtype == torch.int8
    assert "encoder.layer.0.attention.self.query.bias" in packed  # small: travels as it is
    restored = gpu_job.from_int8_rows(packed)
    assert set(restored) == set(state)

    def export_int8(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # compact_onnx's rule
        scale = np.abs(matrix).max(axis=1) / 127.0
        return np.clip(np.rint(matrix / scale[:, None]), -127, 127).astype(np.int8), scale

    for name, exported in (("encoder.layer.0.attention.self.query.weight", lambda t: t.numpy().T),
                           ("embeddings.word_embeddings.weight", lambda t: t.numpy())):
        q_orig, s_orig = export_int8(exported(state[name]))
        q_back, s_back = export_int8(exported(restored[name]))
        assert np.array_equal(q_orig, q_back) and np.allclose(s_orig, s_back, rtol=1e-6)


def test_session_returns_travel_in_parts(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    (folder / "best").mkdir(parents=True)
    (folder / "best" / "weights.bin").write_bytes(bytes(range(256)) * 2000)
    (folder / "log.jsonl").write_text('{"event": "valid"}\n')
    parts = gpu_job.pack_folder(folder, "naming", tmp_path / "out")
    assert len(parts) == 1 and parts[0].name == "naming.tar.part00"
    back = gpu_job.unpack_folder(tmp_path / "out", "naming", tmp_path / "back")
    assert (back / "best" / "weights.bin").read_bytes() == bytes(range(256)) * 2000
    assert (back / "log.jsonl").read_text() == '{"event": "valid"}\n'


def test_a_run_continues_from_another_runs_best(corpus: Path, tiny_model: Path, tmp_path: Path) -> None:
    """``init=<best/>`` starts from that run's encoder and decoder: its first validation
    scores what the first run's best scored, and a bad folder is refused."""
    packs = {"naming_pack": tmp_path / "naming", "search_pack": tmp_path / "search"}
    first = _config(tiny_model, search_weight=0, valid_groups=0, select_on="f1", max_steps=30, eval_every=10)
    train_naming.train(corpus, tmp_path / "first", first, progress=False, **packs)
    best_f1 = max(e["naming"]["f1"] for e in _log(tmp_path / "first") if e["event"] == "valid")
    assert best_f1 > 0.2
    again = _config(tiny_model, search_weight=0, valid_groups=0, select_on="f1", max_steps=2, eval_every=10,
                    init=str(tmp_path / "first" / "best"), vocab_size=5, layers=2)  # the folder's win
    train_naming.train(corpus, tmp_path / "again", again, progress=False, **packs)
    start = next(e for e in _log(tmp_path / "again") if e["event"] == "valid")
    assert start["step"] == 0 and start["naming"]["f1"] == best_f1
    with pytest.raises(FileNotFoundError, match="naming run's best"):
        train_naming.train(corpus, tmp_path / "bad", _config(tiny_model, init=str(tiny_model)), progress=False,
                           **packs)


def test_two_processes_under_torchrun_follow_one_process(corpus: Path, tmp_path: Path) -> None:
    """``torchrun --nproc_per_node 2`` (gloo, CPU) gives one process's loss curve and weights:
    each process trains its share of every batch, the naming loss is a global mean and the
    search loss sees every in-batch negative.  Batches of 11 over 320 functions leave shares of
    6 and 5 and one batch of a single function (one process borrows a row with weight 0)."""
    import os
    import subprocess
    import sys

    base = write_tiny_bert(tmp_path / "bert", dropout=0.0)  # no dropout: the two runs must agree
    settings = {"base": str(base), "batch_size": 11, "search_batch": 10, "dropout": 0.0, "epochs": 1,
                "eval_every": 1000, "log_every": 1, "valid_groups": 1}
    packs = {"naming_pack": tmp_path / "naming", "search_pack": tmp_path / "search"}
    one = train_naming.train(corpus, tmp_path / "one", _config(base, **settings), progress=False, **packs)
    assert one["finished"] and one["step"] == 30  # 29 batches of 11 and one of 1

    overrides = [f"{key}={value}" for key, value in {**_config(base, **settings).__dict__}.items()
                 if key in settings or key in ("lr", "decoder_lr", "warmup_steps", "search_weight", "vocab_size",
                                               "layers", "heads", "feed_forward", "max_source_tokens",
                                               "valid_examples", "device", "threads", "eval_batch")]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "pathfusion.model_export.train_naming", "--", "--corpus", str(corpus), "--run", str(tmp_path / "two"),
               "--pack", str(packs["naming_pack"]), "--search-pack", str(packs["search_pack"]), "--no-progress",
               "--set", *overrides]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]

    def curve(run: Path, key: str) -> list[float]:
        return [e[key] for e in _log(run) if e["event"] == "train"]

    start = next(e for e in _log(tmp_path / "two") if e["event"] == "start")
    assert start["processes"] == 2
    for key in ("step_loss", "search_loss"):
        single, double = curve(tmp_path / "one", key), curve(tmp_path / "two", key)
        assert len(single) == len(double) == 30
        assert single[-1] < single[0]  # it learns
        assert np.allclose(single, double, rtol=1e-3, atol=1e-4), (key, single, double)
    a = _without_key_biases(torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=False)["model"])
    b = _without_key_biases(torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=False)["model"])
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)


def _without_key_biases(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with the attention *key* biases zeroed.  Why: softmax ignores what a key bias
    adds (the same to every score of a query), so their gradient is zero in exact arithmetic and
    rounding noise alone moves them — which Adam scales up to learning-rate-sized steps, in an
    order that depends on how the CPU sums (seen on an AMD EPYC: 1.1e-4 apart there, every other
    weight within 1e-6)."""
    out = dict(state)
    for key, value in state.items():
        if key.endswith("in_proj_bias"):
            third = value.shape[0] // 3
            out[key] = torch.cat([value[:third], torch.zeros_like(value[third:2 * third]), value[2 * third:]])
        elif key.endswith(".key.bias"):
            out[key] = torch.zeros_like(value)
    return out
