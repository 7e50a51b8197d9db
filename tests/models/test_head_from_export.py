"""An exported naming head turned back into a run's ``best/`` folder
(model_export/head_from_export.py): the rebuilt torch head computes what the shipped int8
graphs compute, names as the runtime does, exports again to the same graphs, and a models
folder it cannot read is refused with the reason."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pathfusion.server.context_vocab import VOCAB_FILE, ContextVocab
from pathfusion.server.embedder import OnnxEmbedder
from pathfusion.server.name_generator import NameGenerator, source_text

from .test_naming_fusion_runtime import OTHER, SOURCE, _fusion_best

torch = pytest.importorskip("torch")


def _exported(best: Path, search_models: Path, folder: Path, model_id: str) -> Path:
    """``search_models`` plus ``best`` exported as it ships (int8 rows)."""
    from pathfusion.model_export.export_embedder import write_manifest_entry
    from pathfusion.model_export.export_naming import export_naming

    models = folder / "models"
    shutil.copytree(search_models, models)
    write_manifest_entry(models, export_naming(best, models, model_id), name="naming")
    return models


def _names(models: Path, masked: str) -> list[tuple[str, float]]:
    embedder = OnnxEmbedder.load(models, device="cpu", threads=1)
    return NameGenerator.load(models, embedder, "cpu").names(masked, 4)[0]


def test_a_fusion_head_rebuilt_from_its_int8_graphs_names_as_the_runtime_does(
        naming_run_best: Path, search_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pathfusion.model_export.export_embedder import load_reference
    from pathfusion.model_export.head_from_export import REPORT_FILE, build
    from pathfusion.model_export.name_decoder import beam_search
    from pathfusion.model_export.naming_model import load_fusion
    from pathfusion.model_export.train_naming import load_decoder

    original = _fusion_best(naming_run_best, tmp_path / "original", "attention")
    models = _exported(original, search_models, tmp_path, "int8-attention")
    report = build(models, tmp_path / "rebuilt")
    rebuilt = tmp_path / "rebuilt"
    assert report["variant"] == "attention" and report["naming_id"] == "int8-attention"
    assert report["decoder_max_abs_diff"] <= 1e-4 and report["fusion_max_abs_diff"] <= 1e-4
    assert json.loads((rebuilt / REPORT_FILE).read_text()) == report
    assert (rebuilt / VOCAB_FILE).read_bytes() == (original / VOCAB_FILE).read_bytes()
    assert_probes_carry(models, tmp_path, rebuilt, monkeypatch)

    # the weights are the original's up to the export's int8 rounding (one step per row), not equal
    before, after = load_decoder(original).state_dict(), load_decoder(rebuilt).state_dict()
    weight = "layers.layers.0.self_attn.in_proj_weight"  # big enough to be stored int8
    step = before[weight].abs().amax(dim=0, keepdim=True) / 127  # stored transposed: one scale per input
    assert not torch.equal(before[weight], after[weight])
    assert ((before[weight] - after[weight]).abs() <= step * 0.51 + 1e-7).all()
    assert set(before) == set(after)

    # the rebuilt torch head finds the names the runtime finds over the int8 graphs
    bert, _ = load_reference(rebuilt)
    decoder, fusion = load_decoder(rebuilt).eval(), load_fusion(rebuilt, 384).eval()
    table = bert.embeddings.word_embeddings.weight[decoder.vocab_ids].T
    embedder = OnnxEmbedder.load(models, device="cpu", threads=1)
    generator = NameGenerator.load(models, embedder, "cpu")
    vocab = ContextVocab.load(rebuilt / VOCAB_FILE)
    for masked in (SOURCE, OTHER):
        ids, states = embedder.token_states(source_text(masked))
        memory, source, mask = generator.fusion.fuse(ids, states, masked)
        found = generator.search(source, memory, 4, 4, None, mask)[0]
        contexts = torch.as_tensor(vocab.of_source(masked).astype(np.int64))[None]
        token_ids = torch.as_tensor(ids)[None]
        with torch.no_grad():
            want_memory, want_source, want_pad = fusion(torch.as_tensor(states)[None], token_ids,
                                                        torch.zeros_like(token_ids, dtype=torch.bool), contexts,
                                                        torch.zeros(contexts.shape[:2], dtype=torch.bool))
        assert np.allclose(memory, want_memory[0].numpy(), atol=1e-4)
        want = beam_search(decoder, want_memory, want_source, want_pad, table, beam=4, results=4)
        assert [pieces for pieces, _ in found] == [pieces for pieces, _ in want]


def assert_probes_carry(models: Path, tmp_path: Path, rebuilt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Probe mappings found here and kept in a file rebuild the same head where probing is
    impossible (a machine whose torch names exported nodes otherwise): no probe is exported."""
    from pathfusion.model_export import head_from_export
    from pathfusion.model_export.head_from_export import ProbeCache, build

    kept = tmp_path / "probes.json"
    build(models, tmp_path / "first", ProbeCache(kept))
    assert kept.is_file() and len(json.loads(kept.read_text())) == 2  # the decoder's graphs and the fusion's

    def refuse(*_: object) -> None:
        raise AssertionError("probed although the mappings were kept")

    monkeypatch.setattr(head_from_export, "probe_mappings", refuse)
    build(models, tmp_path / "carried", ProbeCache(kept))
    for name in ("decoder.pt", "fusion.pt"):
        want, got = torch.load(rebuilt / name), torch.load(tmp_path / "carried" / name)
        assert set(want) == set(got) and all(torch.equal(want[k], got[k]) for k in want)


def test_a_rebuilt_head_exports_again_to_what_was_shipped(naming_models: Path, tmp_path: Path) -> None:
    """An ``llm`` head (no fusion graph): rebuilt, then exported again, it names every
    function as the shipped graphs do (the int8 rounding of int8-exact weights changes little)."""
    from pathfusion.model_export.export_embedder import write_manifest_entry
    from pathfusion.model_export.export_naming import export_naming
    from pathfusion.model_export.head_from_export import build

    report = build(naming_models, tmp_path / "rebuilt")
    assert report["variant"] == "llm" and report["fusion_max_abs_diff"] is None
    assert not (tmp_path / "rebuilt" / "fusion.json").exists()
    again = tmp_path / "again"
    shutil.copytree(naming_models, again)
    write_manifest_entry(again, export_naming(tmp_path / "rebuilt", again, "again"), name="naming")
    for masked in (SOURCE, OTHER):
        shipped, exported = _names(naming_models, masked), _names(again, masked)
        assert [name for name, _ in shipped] == [name for name, _ in exported]
        assert np.allclose([p for _, p in shipped], [p for _, p in exported], atol=0.02)


def test_what_cannot_be_rebuilt_is_refused_and_nothing_is_written(naming_models: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import onnx

    from pathfusion.model_export.head_from_export import main
    from pathfusion.model_export.onnx_to_hf import ConversionError

    out = tmp_path / "out"
    no_head = tmp_path / "no-head"
    shutil.copytree(naming_models, no_head)
    manifest = json.loads((no_head / "manifest.json").read_text())
    del manifest["models"]["naming"]
    (no_head / "manifest.json").write_text(json.dumps(manifest))
    assert main(["--models", str(no_head), "--out", str(out)]) == 1
    assert "lists no naming head" in capsys.readouterr().err and not out.exists()

    other = tmp_path / "other-embedder"
    shutil.copytree(naming_models, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["models"]["naming"]["embedder_id"] = "some-other-embedder"
    (other / "manifest.json").write_text(json.dumps(manifest))
    assert main(["--models", str(other), "--out", str(out)]) == 1
    assert "reads some-other-embedder" in capsys.readouterr().err and not out.exists()

    # a step graph whose linear weight is missing (another exporter's naming, say)
    broken = tmp_path / "broken"
    shutil.copytree(naming_models, broken)
    graph_path = broken / "naming" / json.loads((broken / "manifest.json").read_text())["models"]["naming"]["onnx"] \
        .split("/", 1)[1]
    graph = onnx.load(str(graph_path))
    victim = next(init for init in graph.graph.initializer if init.name.startswith("onnx::MatMul"))
    victim.name = "renamed_" + victim.name.replace("onnx::", "")
    onnx.save(graph, str(graph_path))
    from pathfusion.model_export.head_from_export import build

    with pytest.raises(ConversionError, match="no constant"):
        build(broken, out)
    assert not out.exists()


def test_train_naming_init_shipped_continues_the_exported_head(naming_models: Path, tmp_path: Path) -> None:
    """``init=shipped`` rebuilds the head of ``models/`` once into the run and continues it:
    the run starts from the rebuilt weights, and resuming does not rebuild."""
    import gzip
    import random

    from pathfusion.model_export import train_naming

    from ..training.test_train_naming import _record

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rng = random.Random(0)
    for split, n in {"train": 64, "valid": 16}.items():
        with gzip.open(corpus / f"{split}.jsonl.gz", "wt", encoding="utf-8") as fh:
            fh.writelines(json.dumps(_record(split, f"{split}proj{i % 2}", i, rng)) + "\n" for i in range(n))
    config = train_naming.NamingTrainConfig.from_overrides([
        "init=shipped", "freeze_encoder=true", "search_weight=0", "valid_groups=0", "select_on=f1", "batch_size=16",
        "max_steps=1", "eval_every=10", "valid_examples=16", "device=cpu", "threads=1", "warmup_steps=1"])
    run = tmp_path / "run"
    result = train_naming.train(corpus, run, config, tmp_path / "naming", tmp_path / "search", progress=False,
                                models=naming_models)
    assert result["step"] == 1
    events = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    init = next(e for e in events if e["event"] == "init")
    assert init["naming_id"] == "tiny-namer" and init["decoder_max_abs_diff"] <= 1e-4
    rebuilt = torch.load(run / "shipped-head" / "decoder.pt")
    trained = torch.load(run / "checkpoint.pt", weights_only=False)["model"]
    start = torch.load(run / "best" / "decoder.pt")  # best/ = the start: validated before the first step
    assert all(torch.equal(start[k], v) for k, v in rebuilt.items())
    assert any(not torch.equal(trained[f"decoder.{k}"], v) for k, v in rebuilt.items())
    stamp = (run / "shipped-head" / "decoder.pt").stat().st_mtime_ns
    train_naming.train(corpus, run, dataclasses.replace(config, max_steps=2), tmp_path / "naming",
                       tmp_path / "search", progress=False, models=naming_models)
    assert (run / "shipped-head" / "decoder.pt").stat().st_mtime_ns == stamp
    assert sum(e["event"] == "init" for e in map(json.loads, (run / "log.jsonl").read_text().splitlines())) == 1
