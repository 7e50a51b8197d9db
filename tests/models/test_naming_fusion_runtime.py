"""A naming head exported from a fusion variant (issue 11) at run time: the fusion graph against
torch, the runtime's beam search over the fused memory against the training code's, the
contexts extracted from the masked source as training did, and what the export refuses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pathfusion.server.context_vocab import VOCAB_FILE, ContextCounts, ContextVocab
from pathfusion.server.embedder import OnnxEmbedder
from pathfusion.server.models import ModelError
from pathfusion.server.name_generator import NameGenerator, source_text
from pathfusion.server.paths import contexts_of_text

torch = pytest.importorskip("torch")

SOURCE = '''def METHOD_NAME(self, path):
    """Read the configuration file at path."""
    with open(path) as fh:
        return json.load(fh)
'''
OTHER = '''def METHOD_NAME(items, key):
    for item in items:
        if item.key == key:
            return item
    return None
'''


def _fusion_best(naming_run_best: Path, folder: Path, variant: str) -> Path:
    """``naming_run_best`` plus a random (not identity) fusion of ``variant`` and its vocabulary."""
    from pathfusion.model_export.fusion_memory import FusedMemory, FusionShape
    from pathfusion.model_export.naming_model import save_fusion

    best = folder / "best"
    shutil.copytree(naming_run_best, best)
    counts = ContextCounts()
    counts.add(contexts_of_text(SOURCE))  # OTHER's contexts stay mostly unknown (id 1)
    vocab = ContextVocab.build(counts, tokens=20, paths=40)
    vocab.save(best / VOCAB_FILE)
    torch.manual_seed(3)
    rows = vocab.table_sizes()
    fusion = FusedMemory(FusionShape(variant, rows[0], rows[1], 16, 384, 6, 64, 0.0))
    with torch.no_grad():
        for parameter in fusion.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    save_fusion(fusion, best)
    return best


@pytest.mark.parametrize("variant", ["attention", "concat", "weighted"])
def test_a_fusion_head_names_as_the_training_code_does(variant: str, naming_run_best: Path, search_models: Path,
                                                       tmp_path: Path) -> None:
    from pathfusion.model_export.export_embedder import load_reference, write_manifest_entry
    from pathfusion.model_export.export_naming import export_naming
    from pathfusion.model_export.name_decoder import beam_search
    from pathfusion.model_export.naming_model import load_fusion
    from pathfusion.model_export.train_naming import load_decoder

    best = _fusion_best(naming_run_best, tmp_path, variant)
    models = tmp_path / "models"
    shutil.copytree(search_models, models)
    entry = export_naming(best, models, "fp32-fusion", int8=False)
    assert entry["variant"] == variant and entry["fusion_onnx"] == "naming/fusion.onnx"
    assert entry["metrics"]["fusion_max_abs_diff"] <= 1e-4
    write_manifest_entry(models, entry, name="naming")
    embedder = OnnxEmbedder.load(models, device="cpu", threads=1)
    generator = NameGenerator.load(models, embedder, "cpu")
    assert generator.info["reads"] == variant and generator.fusion is not None

    bert, _ = load_reference(best)
    decoder = load_decoder(best).eval()
    fusion = load_fusion(best, 384).eval()
    table = bert.embeddings.word_embeddings.weight[decoder.vocab_ids].T
    for masked in (SOURCE, OTHER, "value = 1\n"):  # the last: no function, so no path context at all
        ids, states = embedder.token_states(source_text(masked))
        memory, source, mask = generator.fusion.fuse(ids, states, masked)
        found = generator.search(source, memory, 4, 4, None, mask)[0]
        contexts = torch.as_tensor(ContextVocab.load(best / VOCAB_FILE).of_source(masked).astype(np.int64))
        context_pad = torch.zeros(1, max(1, len(contexts)), dtype=torch.bool)
        if len(contexts) == 0:
            contexts, context_pad = torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 1, dtype=torch.bool)
        token_ids = torch.as_tensor(ids)[None]
        with torch.no_grad():
            want_memory, want_source, want_pad = fusion(torch.as_tensor(states)[None], token_ids,
                                                        torch.zeros_like(token_ids, dtype=torch.bool), contexts[None],
                                                        context_pad)
        assert np.allclose(memory, want_memory[0].numpy(), atol=1e-4)
        assert np.array_equal(source, want_source[0].numpy()) and np.array_equal(mask, (~want_pad[0]).numpy())
        want = beam_search(decoder, want_memory, want_source, want_pad, table, beam=4, results=4)
        assert [pieces for pieces, _ in found] == [pieces for pieces, _ in want]
        assert np.allclose([s for _, s in found], [s for _, s in want], atol=1e-3)
    names, _ = generator.names(SOURCE, 3)
    assert names and all(0 < p <= 1 for _, p in names)


def test_eval_and_export_know_the_variant_and_a_broken_vocabulary_is_refused(
        naming_run_best: Path, search_models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pathfusion.model_export import evaluate
    from pathfusion.model_export.export_embedder import write_manifest_entry
    from pathfusion.model_export.export_naming import ExportError, export_naming

    models = tmp_path / "models"
    shutil.copytree(search_models, models)
    with pytest.raises(ExportError, match="code2vec-only"):
        export_naming(_fusion_best(naming_run_best, tmp_path / "c2v", "code2vec"), models, "c2v")
    write_manifest_entry(models, export_naming(_fusion_best(naming_run_best, tmp_path / "att", "attention"), models,
                                               "att"), name="naming")
    project = tmp_path / "projects" / "demo"
    project.mkdir(parents=True)
    (project / "mod.py").write_text(SOURCE.replace("METHOD_NAME", "read_config") + "\n\n" +
                                    OTHER.replace("METHOD_NAME", "find_item"))
    run = ["naming", "--projects", str(tmp_path / "projects"), "--models", str(models), "--device", "cpu", "--json"]
    assert evaluate.main([*run, "--variant", "attention"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["examples"] == 2 and result["naming_head"]["reads"] == "attention"
    assert evaluate.main([*run, "--variant", "llm"]) == 1
    assert "holds the 'attention' naming head, not 'llm'" in capsys.readouterr().err
    (models / "naming" / VOCAB_FILE).write_bytes(b"\x1f\x8b broken")
    with pytest.raises(ModelError, match="contexts.json.gz"):
        NameGenerator.load(models, OnnxEmbedder.load(models, device="cpu", threads=1), "cpu", verify=False)
