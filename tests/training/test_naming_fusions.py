"""The naming fusions (issue 11): path-context ids (server/context_vocab.py,
model_export/context_pack.py), the fused memories (model_export/fusion_memory.py), a run of
each kind through ``pathfusion train naming``, and the GPU job's packing and returns
(model_export/fusion_job.py), on a tiny BERT and a synthetic corpus."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from pathfusion.model_export import fusion_job, gpu_job, train_naming
from pathfusion.model_export.context_pack import (
    ContextPack,
    context_pack_path,
    contexts_of_sources,
    load_records,
    save_records,
)
from pathfusion.model_export.fusion_memory import VARIANTS, FusedMemory, FusionShape
from pathfusion.model_export.naming_model import load_fusion
from pathfusion.model_export.train_naming import NamingTrainConfig
from pathfusion.server.context_vocab import VOCAB_FILE, ContextCounts, ContextVocab, split_context
from pathfusion.server.paths import contexts_of_text
from tests.helpers.models import write_tiny_bert

WORDS = ["read", "write", "parse", "config", "file", "url", "json", "cache", "user", "token"]


def _code(rng: random.Random) -> tuple[str, str]:
    first, second, other = rng.sample(WORDS, 3)
    # the name is readable from the code's structure: first is called on value, second on the result
    code = (f"def METHOD_NAME(value, {other}_count):\n"
            f"    result = {first}(value)\n"
            f"    {second}(result)\n"
            f"    return result + {other}_count\n")
    return f"{first}|{second}", code


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fusion-corpus")
    rng = random.Random(1)
    for split, n in {"train": 240, "valid": 48, "test": 16}.items():
        rows = []
        for i in range(n):
            label, code = _code(rng)
            rows.append({"id": f"{split}{i}", "project": f"{split}p{i % 3}", "naming": True, "search": False,
                         "label": label, "masked_code": code, "contexts": contexts_of_text(code)})
        with gzip.open(root / f"{split}.jsonl.gz", "wt", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
    return root


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert-fusion"))


def _vocab() -> ContextVocab:
    counts = ContextCounts()
    rng = random.Random(0)
    for _ in range(30):
        counts.add(contexts_of_text(_code(rng)[1]))
    return ContextVocab.build(counts, tokens=8, paths=12)


def test_context_ids_round_trip_and_refuse_other_files(tmp_path: Path) -> None:
    vocab = _vocab()
    assert vocab.table_sizes() == (10, 14)
    code = _code(random.Random(5))[1]
    ids = vocab.of_source(code)
    texts = contexts_of_text(code)
    assert ids.shape == (len(texts), 3) and ids.dtype == np.uint16
    for (start, path, end), row in zip(map(split_context, texts), ids, strict=True):  # known → its id, else 1
        assert row[1] == (vocab.paths.index(path) + 2 if path in vocab.paths else 1)
        assert row[0] == (vocab.tokens.index(start) + 2 if start in vocab.tokens else 1)
        assert row[2] == (vocab.tokens.index(end) + 2 if end in vocab.tokens else 1)
    assert (ids == 1).any() and (ids > 1).any()
    # lines ended by lone CRs (an editor may send them) parse as the server parses documents
    assert np.array_equal(vocab.of_source(code.replace("\n", "\r")), ids)
    vocab.save(tmp_path / VOCAB_FILE)
    again = ContextVocab.load(tmp_path / VOCAB_FILE)
    assert again == vocab and np.array_equal(again.of_source(code), ids)
    assert (tmp_path / VOCAB_FILE).read_bytes() == (vocab.save(tmp_path / "b.gz") or (tmp_path / "b.gz").read_bytes())
    (tmp_path / "bad.gz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="not a context vocabulary"):
        ContextVocab.load(tmp_path / "bad.gz")
    assert split_context("a,b^c/d,<STR>") == ("a", "b^c/d", "<STR>")


def test_context_packs_from_a_process_pool_match_one_process(tmp_path: Path) -> None:
    vocab = _vocab()
    rng = random.Random(3)
    sources = [_code(rng)[1] for _ in range(9)] + ["x = 1\n"]  # the last: no function, no contexts
    pooled = contexts_of_sources(sources, vocab, processes=2, chunk=3)
    single = contexts_of_sources(sources, vocab, processes=1)
    assert np.array_equal(pooled.ids, single.ids) and np.array_equal(pooled.offsets, single.offsets)
    assert pooled.counts()[-1] == 0 and len(pooled) == 10
    ids, mask = pooled.batch([9, 0])
    assert ids.shape[0] == 2 and mask[0].sum() == 0 and mask[1].sum() == pooled.counts()[0]
    assert np.array_equal(ids[1, :pooled.counts()[0]], vocab.of_source(sources[0]))
    pooled.save(tmp_path / "c.npz")
    assert len(ContextPack.load(tmp_path / "c.npz", vocab, 10)) == 10
    with pytest.raises(ValueError, match="holds 10 functions"):
        ContextPack.load(tmp_path / "c.npz", vocab, 11)
    with pytest.raises(ValueError, match="another context vocabulary"):
        ContextPack.load(tmp_path / "c.npz", ContextVocab(vocab.tokens[:-1], vocab.paths))


def _batch(shape: FusionShape, seed: int = 0) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    states = torch.randn(3, 7, shape.hidden, generator=generator)
    source = torch.randint(999, 2000, (3, 7), generator=generator)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[1, 5:] = True
    contexts = torch.randint(1, 9, (3, 4, 3), generator=generator)
    context_pad = torch.zeros(3, 4, dtype=torch.bool)
    context_pad[0, 2:] = True
    context_pad[2, :] = True  # a function without contexts
    contexts[2] = 0
    return states, source, pad, contexts, context_pad


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_gives_the_decoder_a_memory(variant: str) -> None:
    torch.manual_seed(0)
    shape = FusionShape(variant, token_rows=10, path_rows=10, context_dim=8, hidden=12, heads=2, feed_forward=16,
                        dropout=0.0)
    fusion = FusedMemory(shape).eval()
    states, source, pad, contexts, context_pad = _batch(shape)
    memory, copy_source, memory_pad = fusion(states, source, pad, contexts, context_pad)
    assert torch.isfinite(memory).all()
    expected = {"llm": 7, "code2vec": 4, "concat": 11, "weighted": 7, "attention": 7}[variant]
    assert memory.shape == (3, expected, 12) and copy_source.shape == memory_pad.shape == (3, expected)
    if variant in ("llm", "attention"):  # the identity at the start: a decoder trained over llm keeps its behaviour
        assert torch.allclose(memory, states, atol=1e-6) and torch.equal(copy_source, source)
    if variant == "weighted":
        assert torch.allclose(memory, states, atol=1e-6)  # W c starts at zero
    if variant in ("code2vec", "concat"):
        assert bool((copy_source[:, -4:] < 999).all())  # context positions are never copied
        assert not bool(memory_pad[2, -4])  # a function without contexts still has one position to attend
    if variant != "llm":  # the contexts change the memory once the fusion has learnt anything
        for parameter in fusion.parameters():
            torch.nn.init.normal_(parameter, std=0.2)
        other = torch.where(contexts > 0, contexts % 9 + 1, contexts)  # other ids, same padding
        changed = fusion(states, source, pad, other, context_pad)[0]
        moved = fusion(states, source, pad, contexts, context_pad)[0]
        assert not torch.allclose(changed, moved)


def _config(tiny_model: Path, **overrides: object) -> NamingTrainConfig:
    base = {"base": str(tiny_model), "batch_size": 16, "lr": 5e-4, "decoder_lr": 3e-3, "warmup_steps": 5,
            "epochs": 5, "search_weight": 0.0, "valid_groups": 0, "select_on": "f1", "vocab_size": 40, "layers": 1,
            "heads": 2, "feed_forward": 64, "dropout": 0.0, "max_source_tokens": 48, "eval_every": 25,
            "valid_examples": 48, "device": "cpu", "threads": 2, "log_every": 5, "context_dim": 8,
            "context_tokens": 30, "context_paths": 60}
    base.update(overrides)
    return NamingTrainConfig(**base)  # type: ignore[arg-type]


def _valid_f1(run: Path) -> list[float]:
    return [e["naming"]["f1"] for e in map(json.loads, (run / "log.jsonl").read_text().splitlines())
            if e["event"] == "valid"]


def test_a_code2vec_only_run_learns_names_from_path_contexts(corpus: Path, tiny_model: Path, tmp_path: Path) -> None:
    """No token states at all: what it learns comes through the path contexts."""
    config = _config(tiny_model, variant="code2vec", freeze_encoder=True, context_dim=32, fusion_lr=1e-2, decoder_lr=1e-2, epochs=8,
                     eval_every=30)
    train_naming.train(corpus, tmp_path / "c2v", config, tmp_path / "naming", tmp_path / "search", progress=False)
    scores = _valid_f1(tmp_path / "c2v")
    assert max(scores) > scores[0] + 0.3
    assert (tmp_path / "naming" / VOCAB_FILE).is_file()
    assert context_pack_path(tmp_path / "naming", "train").is_file()
    best = tmp_path / "c2v" / "best"
    assert ContextVocab.load(best / VOCAB_FILE) == ContextVocab.load(tmp_path / "naming" / VOCAB_FILE)
    assert load_fusion(best, 32).shape.variant == "code2vec"


def test_a_fusion_continues_a_decoder_and_resumes(corpus: Path, tiny_model: Path, tmp_path: Path) -> None:
    """``init_decoder`` starts every variant from one decoder: an ``attention`` fusion starts
    as that decoder (same first validation as the ``llm`` run's best), then a paused and
    resumed run ends with an uninterrupted one's weights, fusion included."""
    packs = (tmp_path / "naming", tmp_path / "search")
    train_naming.train(corpus, tmp_path / "llm", _config(tiny_model, epochs=3, freeze_encoder=True), *packs,
                       progress=False)
    llm_best = max(_valid_f1(tmp_path / "llm"))
    fused = _config(tiny_model, variant="attention", init_decoder=str(tmp_path / "llm" / "best"), epochs=2,
                    freeze_encoder=True)
    train_naming.train(corpus, tmp_path / "whole", fused, *packs, progress=False)
    assert _valid_f1(tmp_path / "whole")[0] == llm_best
    train_naming.train(corpus, tmp_path / "paused", _config(tiny_model, **{**fused.__dict__, "max_steps": 7}), *packs,
                       progress=False)
    train_naming.train(corpus, tmp_path / "paused", fused, *packs, progress=False)
    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "paused" / "checkpoint.pt", weights_only=False)["model"]
    assert any(k.startswith("fusion.") for k in a)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_a_run_continues_a_fusion_head_on_the_functions_it_never_saw(corpus: Path, tiny_model: Path,
                                                                      tmp_path: Path) -> None:
    """``init`` + ``train_first``: the continuation starts as the earlier head (same first
    validation as its best), reads the earlier head's context vocabulary (none is counted
    anew) and trains on the seeded positions after ``train_first`` only."""
    first = _config(tiny_model, variant="attention", freeze_encoder=True, epochs=2, train_take=160)
    train_naming.train(corpus, tmp_path / "first", first, tmp_path / "naming", tmp_path / "search", progress=False)
    start = json.loads((tmp_path / "first" / "log.jsonl").read_text().splitlines()[0])
    assert start["train_examples"] == 160
    rest = _config(tiny_model, variant="attention", freeze_encoder=True, epochs=1, train_first=160,
                   init=str(tmp_path / "first" / "best"))
    train_naming.train(corpus, tmp_path / "rest", rest, tmp_path / "naming2", tmp_path / "search", progress=False)
    events = [json.loads(line) for line in (tmp_path / "rest" / "log.jsonl").read_text().splitlines()]
    assert events[0]["train_examples"] == 80 and events[0]["steps_per_epoch"] == 5
    assert _valid_f1(tmp_path / "rest")[0] == max(_valid_f1(tmp_path / "first"))
    assert not (tmp_path / "naming2" / VOCAB_FILE).exists()
    vocab = ContextVocab.load(tmp_path / "first" / "best" / VOCAB_FILE)
    pack = ContextPack.load(context_pack_path(tmp_path / "naming2", "train"), vocab, 240)
    seen = train_naming._train_subset(240, first)
    chosen = train_naming._train_subset(240, rest)
    assert len(chosen) == 80 and not set(seen.tolist()) & set(chosen.tolist())
    part = pack.take(chosen[::-1])
    ids, mask = part.batch([0, 79])
    whole_ids, whole_mask = pack.batch([int(chosen[-1]), int(chosen[0])])
    width = min(ids.shape[1], whole_ids.shape[1])
    assert np.array_equal(ids[:, :width], whole_ids[:, :width]) and np.array_equal(mask.sum(1), whole_mask.sum(1))
    assert part.meta["examples"] == 80 and part.meta["contexts"] == int(pack.counts()[chosen].sum())
    with pytest.raises(ValueError, match="no function"):
        train_naming._train_subset(240, _config(tiny_model, train_first=240))


def test_the_last_step_of_a_run_becomes_a_folder_the_exports_read(corpus: Path, tiny_model: Path,
                                                                    tmp_path: Path) -> None:
    """``last_step``: the checkpoint's encoder, decoder and fusion — not best/'s — in a folder
    that ``init``/the exports load; a folder without a checkpoint is refused."""
    from safetensors.torch import load_file

    from pathfusion.model_export import last_step

    run = tmp_path / "run"
    # Steps too small to change a validation: best/ stays step 0, the checkpoint is step 4.
    config = _config(tiny_model, variant="attention", max_steps=4, lr=1e-6, decoder_lr=1e-6, fusion_lr=1e-6)
    train_naming.train(corpus, run, config, tmp_path / "naming", tmp_path / "search", progress=False)
    events = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert (events[-1]["step"], events[-1]["best_step"]) == (4, 0)
    assert last_step.main([str(run), "--out", str(tmp_path / "last")]) == 0
    saved = torch.load(run / "checkpoint.pt", weights_only=False)["model"]
    decoder = train_naming.load_decoder(tmp_path / "last")
    assert all(torch.equal(v, saved[f"decoder.{k}"]) for k, v in decoder.state_dict().items())
    assert not all(torch.equal(v, saved[f"decoder.{k}"])
                   for k, v in train_naming.load_decoder(run / "best").state_dict().items())
    fusion = torch.load(tmp_path / "last" / "fusion.pt", weights_only=False)
    assert fusion and all(torch.equal(v, saved[f"fusion.{k}"]) for k, v in fusion.items())
    encoder = load_file(str(tmp_path / "last" / "model.safetensors"))
    assert all(torch.equal(v, saved[f"bert.{k}"]) for k, v in encoder.items() if f"bert.{k}" in saved)
    assert sum(f"bert.{k}" in saved for k in encoder) > 10
    assert last_step.main([str(tmp_path / "run-missing"), "--out", str(tmp_path / "x")]) == 1
    assert not (tmp_path / "x").exists()


def test_bad_fusion_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="variant must be one of"):
        NamingTrainConfig.from_overrides(["variant=sum"])
    with pytest.raises(ValueError, match="freeze_encoder=true"):
        NamingTrainConfig.from_overrides(["variant=code2vec", "search_weight=0"])
    with pytest.raises(ValueError, match="train_first must be 0 or more, not -1"):
        NamingTrainConfig.from_overrides(["train_first=-1"])
    with pytest.raises(ValueError, match="train_take must be 0 or more, not -5"):
        NamingTrainConfig.from_overrides(["train_take=-5"])
    with pytest.raises(ValueError, match="batch_size must be at least 1, not 0"):
        NamingTrainConfig.from_overrides(["batch_size=0"])
    with pytest.raises(ValueError, match="search_batch must be at least 2"):
        NamingTrainConfig.from_overrides(["search_weight=0.5", "search_batch=1"])


def test_the_gpu_job_packs_carried_sources_as_the_corpus_route_does(corpus: Path, tiny_model: Path,
                                                                     tmp_path: Path) -> None:
    """Carried records → the same naming and context packs as packing the corpus, and a
    returned fusion run comes back with its heads in fp32."""
    from pathfusion.model_export.naming_pack import NamingExamples, naming_records

    carry = tmp_path / "carry"
    vocab = _vocab()
    vocab.save(carry / "fusion" / VOCAB_FILE)
    for split in fusion_job.SPLITS:
        records = list(naming_records(corpus, "valid" if split == "heldout" else split))
        assert save_records(records, carry / "fusion" / f"{split}.jsonl.xz") == len(records)
    loaded = list(load_records(carry / "fusion" / "heldout.jsonl.xz"))
    assert loaded == [{k: r[k] for k in ("masked_code", "label", "project")} for r in records]
    sizes = fusion_job.pack_carried(carry / "fusion", tmp_path / "pack", tiny_model / "tokenizer.json", processes=2)
    assert sizes == {"train": 240, "valid": 48, "heldout": 48}
    carried = NamingExamples.load(tmp_path / "pack" / "train.npz")
    direct_records = list(naming_records(corpus, "train"))
    assert carried.labels == [r["label"] for r in direct_records]
    contexts = ContextPack.load(context_pack_path(tmp_path / "pack", "train"), vocab, 240)
    assert np.array_equal(contexts.ids[:contexts.offsets[1]], vocab.of_source(direct_records[0]["masked_code"]))

    run = tmp_path / "runs" / "concat"
    config = _config(tiny_model, variant="concat", freeze_encoder=True, max_steps=3, eval_every=2,
                     max_source_tokens=256)
    train_naming.train(corpus, run, config, tmp_path / "pack", tmp_path / "search", progress=False)
    assert fusion_job.best_valid(run)["step"] in (0, 2, 3)
    parts = gpu_job.return_run(run, "concat", tmp_path / "out", encoder=False)
    assert parts and all(p.stat().st_size <= gpu_job.PART_BYTES for p in parts)
    back = gpu_job.collect(tmp_path / "out", tmp_path / "back")
    best = Path(back["concat"]) / "best"
    assert not (best / "model.safetensors").exists() and (best / VOCAB_FILE).is_file()
    original = torch.load(run / "best" / "fusion.pt")
    restored = torch.load(best / "fusion.pt")
    assert all(restored[k].dtype == torch.float32 and torch.allclose(restored[k], original[k], atol=1e-2)
               for k in original)


def test_prepare_carries_unseen_functions_and_the_corpus_routes_vocabulary(corpus: Path, tiny_model: Path,
                                                                            tmp_path: Path) -> None:
    """``fusion_job.prepare``: the train functions after the shipped subset in the seeded
    permutation (positions 100–149 of it, so none of the first 100), the validation functions of the first session, the
    held-out projects' first naming functions, the shipped decoder in fp16 — and the very
    context vocabulary that the CPU route (``ensure_vocab``) builds from the same corpus."""
    import subprocess

    from pathfusion.model_export.context_pack import ensure_vocab
    from pathfusion.model_export.name_decoder import DecoderShape, NameDecoder
    from pathfusion.model_export.naming_model import load_decoder, save_decoder
    from pathfusion.model_export.naming_pack import NamingPackSpec, naming_records, pack_split
    from pathfusion.model_export.search_pairs import tokenizer_sha256

    tokenizer_file = tiny_model / "tokenizer.json"
    spec = NamingPackSpec(tokenizer_sha256(tokenizer_file))
    for split in ("train", "valid"):
        pack_split(corpus, split, spec, tokenizer_file, tmp_path / "pack" / f"{split}.npz", progress=False)
    decoder = NameDecoder(32, [101, 102, 100, *range(2000, 2040)], 30522, 101, 102, 100, DecoderShape(1, 2, 16, 6, 0.0))
    save_decoder(decoder, tmp_path / "init", _config(tiny_model))
    project = tmp_path / "heldout" / "demo"
    project.mkdir(parents=True)
    (project / "mod.py").write_text("\n\n".join(_code(random.Random(i))[1].replace("METHOD_NAME", f"do_{i}")
                                                 for i in range(4)))
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    info = fusion_job.prepare(repo, repo / "carry", corpus, tmp_path / "pack", tmp_path / "init", train=50,
                              tokens=20, paths=30, valid=10, heldout=3, heldout_projects=tmp_path / "heldout",
                              shipped_subset=100, wheels=False)
    assert (info["train"], info["valid"], info["heldout"]) == (50, 10, 3)
    order = np.random.default_rng(fusion_job.SEED).permutation(240)
    records = list(naming_records(corpus, "train"))
    carried = list(load_records(repo / "carry" / "fusion" / "train.jsonl.xz"))
    assert [r["masked_code"] for r in carried] == [records[i]["masked_code"] for i in sorted(order[100:150])]
    valid = list(naming_records(corpus, "valid"))
    assert [r["label"] for r in load_records(repo / "carry" / "fusion" / "valid.jsonl.xz")] == \
        [valid[i]["label"] for i in sorted(np.random.default_rng(fusion_job.SEED).permutation(48)[:10])]
    held = list(load_records(repo / "carry" / "fusion" / "heldout.jsonl.xz"))
    assert [r["label"] for r in held] == ["do|0", "do|1", "do|2"] and "METHOD_NAME" in held[0]["masked_code"]
    carried_vocab = ContextVocab.load(repo / "carry" / "fusion" / VOCAB_FILE)
    assert carried_vocab == ensure_vocab(tmp_path / "cpu-route", corpus, 20, 30)
    init = load_decoder(repo / "carry" / "fusion" / "init")
    assert all(torch.allclose(a, b, atol=1e-2) for a, b in zip(init.state_dict().values(),
                                                                decoder.state_dict().values(), strict=True))
    assert "/carry/" in (repo / ".git" / "info" / "exclude").read_text()


def test_side_by_side_runs_every_job_and_keeps_each_ones_output(tmp_path: Path) -> None:
    import sys

    jobs = {"a": [sys.executable, "-c", "import time; time.sleep(0.3); print('first')"],
            "b": [sys.executable, "-c", "import sys; print('second'); sys.exit(3)"]}
    assert gpu_job.side_by_side(jobs, tmp_path / "work") == {"a": 0, "b": 3}
    assert (tmp_path / "work" / "a.out").read_text() == "first\n"
    assert (tmp_path / "work" / "b.out").read_text() == "second\n"
