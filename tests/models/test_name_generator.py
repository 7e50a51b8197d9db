"""The generative naming head at run time (server/name_generator.py): the exported decoder
step against torch, beam search against the training code's, the manifest's pairing with its
embedder, and the model hub serving it (with code2vec as the fallback)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from pathfusion.server.code2vec import (
    LEAST_OFFERED_CONFIDENCE,
    UNLIKELY_CURRENT_NAME,
    Code2VecModel,
    CurrentName,
    Suggestion,
    suggest_for_document,
)
from pathfusion.server.feature_hover import hover_markdown
from pathfusion.server.embedder import EmbedderError, OnnxEmbedder
from pathfusion.server.models import ModelError
from pathfusion.server.name_confidence import Calibration, leftover
from pathfusion.server.name_generator import (
    LENGTH_BONUS,
    NameGenerator,
    label_of_pieces,
    label_pieces,
    rank_score,
    shown,
    source_text,
)
from pathfusion.server.parsing import Document
from pathfusion.server.runtime import ModelHub
from pathfusion.server.settings import Settings

torch = pytest.importorskip("torch")

SOURCE = '''def METHOD_NAME(self, path):
    """Read the configuration file at path."""
    with open(path) as fh:
        return json.load(fh)
'''


def test_stuttering_names_are_recognised() -> None:
    from pathfusion.server.name_generator import stutters

    assert stutters("conn|conn") and stutters("get|value|value") and stutters("a|b|b|c")
    assert not stutters("conn") and not stutters("get|conn|get") and not stutters("")


def test_wordpieces_become_labels() -> None:
    assert label_of_pieces(["load", "config"]) == "load|config"
    assert label_of_pieces(["get", "##c", "##wd"]) == "getcwd"
    assert label_of_pieces(["##x", "y"]) == "x|y"  # a stray continuation still names something
    assert label_of_pieces(["read", "[UNK]"]) == "read|<UNK>"
    assert source_text("def METHOD_NAME(x):\n    return METHOD_NAME(x - 1)") == \
        "def [MASK](x):\n    return [MASK](x - 1)"


def test_runtime_beam_search_is_the_training_beam_search(naming_run_best: Path, search_models: Path,
                                                         tmp_path: Path) -> None:
    """With the fp32 decoder graph, the numpy beam search finds the very names, in the same
    order and with the same scores, as the torch one over the same token states."""
    from pathfusion.model_export.export_embedder import load_reference, write_manifest_entry
    from pathfusion.model_export.export_naming import export_naming
    from pathfusion.model_export.name_decoder import beam_search
    from pathfusion.model_export.train_naming import load_decoder

    models = tmp_path / "models"
    shutil.copytree(search_models, models)
    entry = export_naming(naming_run_best, models, "fp32-namer", int8=False)
    assert entry["metrics"]["parity"]["max_abs_diff"] <= 1e-4 and entry["onnx"] == "naming/decoder.onnx"
    write_manifest_entry(models, entry, name="naming")
    embedder = OnnxEmbedder.load(models, device="cpu", threads=1)
    generator = NameGenerator.load(models, embedder, "cpu")
    ids, states = embedder.token_states(source_text(SOURCE))
    assert states.shape == (len(ids), 384) and ids[0] == 101 and ids[-1] == 102
    found = generator.beam_search(ids, states, beam=4, results=4)

    bert, _ = load_reference(naming_run_best)
    decoder = load_decoder(naming_run_best).eval()
    table = bert.embeddings.word_embeddings.weight[decoder.vocab_ids].T
    source = torch.as_tensor(ids)[None]
    want = beam_search(decoder, torch.as_tensor(states)[None], source, torch.zeros_like(source, dtype=torch.bool),
                       table, beam=4, results=4)
    assert [pieces for pieces, _ in found] == [pieces for pieces, _ in want]
    assert np.allclose([s for _, s in found], [s for _, s in want], atol=1e-3)

    # The current name, scored on its own row of the same beam run (keys and values cached
    # row by row, rows dropped as the beam ends), is torch's teacher-forced log-probability.
    for pieces in (want[0][0], want[-1][0], [int(i) for i in ids[3:6]]):
        forced = [*pieces[:generator.config.max_length - 1], decoder.eos_id]
        _, score = generator.search(ids, states, 4, 4, forced)
        tokens = torch.as_tensor([[decoder.bos_id, *forced]])
        with torch.no_grad():
            expected = sum(float(decoder.next_log_probs(tokens[:, :n + 1], torch.as_tensor(states)[None], source,
                                                        torch.zeros_like(source, dtype=torch.bool), table)[0, forced[n]])
                           for n in range(len(forced)))
        assert score == pytest.approx(expected, abs=1e-3)


def test_an_export_without_the_key_value_cache_is_refused(naming_models: Path, tmp_path: Path) -> None:
    """A decoder graph exported before the cache (whole prefixes in, no ``past``) gets a
    message that says to re-export, not a failure at the first hover."""
    import onnx
    from onnx import TensorProto, helper

    from pathfusion.server.models import sha256_file

    models = tmp_path / "models"
    shutil.copytree(naming_models, models)
    manifest = json.loads((models / "manifest.json").read_text())
    entry = manifest["models"]["naming"]
    graph = helper.make_graph([helper.make_node("Identity", ["memory"], ["log_probs"])], "old-step",
                              [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["b", "t"]),
                               helper.make_tensor_value_info("memory", TensorProto.FLOAT, ["b", "s", 384])],
                              [helper.make_tensor_value_info("log_probs", TensorProto.FLOAT, ["b", "s", 384])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(models / entry["onnx"]))
    entry["files"][entry["onnx"]] = sha256_file(models / entry["onnx"])
    (models / "manifest.json").write_text(json.dumps(manifest))
    embedder = OnnxEmbedder.load(models, device="cpu", threads=1)
    with pytest.raises(ModelError, match="older export of the naming head.*pathfusion export naming"):
        NameGenerator.load(models, embedder, "cpu")


def test_names_are_ranked_probabilities(naming_models: Path) -> None:
    embedder = OnnxEmbedder.load(naming_models, device="cpu", threads=1)
    generator = NameGenerator.load(naming_models, embedder, "cpu")
    names, none = generator.names(SOURCE, top_k=3)
    assert 1 <= len(names) <= 3 and none is None
    found, _ = generator.candidates(SOURCE, top_k=3)  # the model's own probabilities
    ranks = [rank_score(label, p) for label, p in found]  # ranked with the length bonus
    assert ranks == sorted(ranks, reverse=True) and all(0 < p <= 1 for _, p in found)
    # What is shown follows the ranking, so a list never reads "1. x 3 %, 2. y 7 %".
    assert [label for label, _ in names] == [label for label, _ in found][:3]
    shown_probabilities = [p for _, p in names]
    assert shown_probabilities == sorted(shown_probabilities, reverse=True) and all(0 < p < 1 for p in shown_probabilities)
    assert generator.names(SOURCE, top_k=1)[0] == names[:1]  # computed over all the beam's names, not top_k
    assert rank_score("a|b", 0.1) - rank_score("a", 0.1) == pytest.approx(LENGTH_BONUS)
    assert rank_score("a|b", 0.1 / math.exp(LENGTH_BONUS) * 1.01) > rank_score("a", 0.1)  # a longer, specific name wins
    assert all(label and "<UNK>" not in label.split("|") for label, _ in names)
    assert len({label for label, _ in names}) == len(names)
    assert generator.predict([[], []], top_k=2, sources=[SOURCE, "   "])[1] == []
    with pytest.raises(ModelError, match="masked source"):
        generator.predict([[]], top_k=2)


def test_a_head_over_another_embedder_is_refused(naming_models: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(naming_models, models)
    manifest = json.loads((models / "manifest.json").read_text())
    manifest["models"]["naming"]["embedder_id"] = "some-other-embedder"
    (models / "manifest.json").write_text(json.dumps(manifest))
    embedder = OnnxEmbedder.load(models, device="cpu", threads=1)
    with pytest.raises(ModelError, match="re-export them together"):
        NameGenerator.load(models, embedder, "cpu")
    # The server's naming then falls back to code2vec, saying why.
    model, reason = ModelHub().naming_or_code2vec(Settings(models_dir=str(models), device="cpu"))
    assert isinstance(model, Code2VecModel) and reason is not None and "some-other-embedder" in reason


def test_an_embedder_without_token_states_is_explained(naming_models: Path) -> None:
    embedder = OnnxEmbedder.load(naming_models, device="cpu", threads=1)
    embedder._states = None  # as an export made before the naming head
    with pytest.raises(EmbedderError, match="token_states"):
        embedder.token_states("def f(): pass")


def test_the_hub_serves_generated_names_by_default(naming_models: Path) -> None:
    hub = ModelHub()
    settings = Settings(models_dir=str(naming_models), device="cpu")
    model = hub.naming(settings)
    assert isinstance(model, NameGenerator) and model.model_id == "tiny-namer"
    assert hub.naming_or_code2vec(settings) == (model, None)
    assert isinstance(hub.naming(Settings(models_dir=str(naming_models), device="cpu", fusion_variant="code2vec")),
                      Code2VecModel)
    doc = Document("import json\n\n\ndef load_settings(path):\n    with open(path) as fh:\n"
                             "        return json.load(fh)\n")
    (suggestion,) = suggest_for_document(doc, model, top_k=3)
    assert suggestion.name == "load_settings" and 1 <= len(suggestion.suggestions) <= 3
    rendered, label, probability = suggestion.suggestions[0]
    assert rendered == "_".join(label.split("|")) and 0 < probability <= 1


def test_the_current_name_is_scored_in_the_same_beam_run(naming_models: Path) -> None:
    """A current name among the suggestions gets its suggestion's probability (one spelling
    of it); the wordpieces scored are the name's and its end; the spelling round-trips."""
    embedder = OnnxEmbedder.load(naming_models, device="cpu", threads=1)
    generator = NameGenerator.load(naming_models, embedder, "cpu")
    names, _ = generator.candidates(SOURCE, top_k=5)
    listed, _ = generator.names(SOURCE, top_k=5)
    tokenizer = embedder.tokenizer
    for (label, probability), (_, confidence) in zip(names, listed, strict=True):
        again, scored = generator.candidates(SOURCE, top_k=5, current=label)
        assert again == names and scored is not None
        assert scored.probability <= probability + 1e-6  # one spelling; the suggestion sums its spellings
        _, shown_current = generator.names(SOURCE, top_k=5, current=label)
        assert shown_current is not None and shown_current.shown == confidence  # as the list shows it
        assert scored.wordpieces == min(len(label_pieces(tokenizer, label)) + 1, generator.config.max_length)
        assert scored.per_wordpiece == pytest.approx(np.log(scored.probability) / scored.wordpieces)
    for label in ("read|configuration", "getcwd", "parse|v2|url"):
        assert label_of_pieces([tokenizer.id_to_token(i) for i in label_pieces(tokenizer, label)]) == label
    predictions, current = generator.predict_with_current([SOURCE, " "], [names[0][0], "x"], top_k=2)
    assert predictions[1] == [] and current[1] is None
    assert current[0] is not None and current[0].probability <= names[0][1] + 1e-6
    assert current[0].shown == predictions[0][0][1]


def test_shown_probabilities_generalise_the_models_own() -> None:
    """The calibration is a softmax, at one temperature, of the rank scores beside a "none of
    these" logit that grows with the model's left-over probability: with slope 1, no length
    bonus and no constant it gives back the model's own probabilities; otherwise it keeps the
    ranking's order, sums to at most 1, stays near 1 where the model is sure, and puts a name
    the beam did not find (the current one) on the same scale."""
    probabilities = [0.3, 0.2, 0.05]
    same = Calibration(1.0, 0.0).confidences([math.log(p) for p in probabilities], leftover(probabilities))
    assert same == pytest.approx(probabilities)
    found = [("is|jedi|import|position", 0.03), ("is|jedi|import", 0.07), ("is|import", 0.15)]
    ranks = [rank_score(label, p) for label, p in found]
    assert ranks == sorted(ranks, reverse=True)  # as the generator ranks them: longer names first here
    calibration = Calibration(0.9, 1.85)
    names, current = shown(found, 2, CurrentName(0.01, 3), "get|import", calibration)
    assert [label for label, _ in names] == ["is|jedi|import|position", "is|jedi|import"]
    values = calibration.confidences(ranks, leftover([p for _, p in found]))
    assert [p for _, p in names] == values[:2] and values == sorted(values, reverse=True) and sum(values) < 1
    assert current is not None and 0 < current.shown < values[-1] and current.probability == 0.01
    _, listed = shown(found, 2, CurrentName(0.15, 3), "is|import", calibration)
    assert listed is not None and listed.shown == values[2]  # the number the full list gives it
    sure = calibration.confidences([rank_score("close", 0.99), rank_score("write", 0.005)], leftover([0.99, 0.005]))
    assert sure[0] > 0.9  # a one-word name the model is sure of is shown as sure
    assert calibration.confidences([], 1.0) == [] and leftover([0.7, 0.6]) > 0
    # every name of the beam dropped (made-up words, repeats): the current name is still
    # scored, against "none of these" alone
    nothing, alone = shown([], 5, CurrentName(0.01, 2), "do|it", calibration)
    assert nothing == [] and alone is not None and 0 < alone.shown < 1
    assert alone.shown == pytest.approx(math.exp(calibration.slope * rank_score("do|it", 0.01) - calibration.none_logit))


def _suggestion(current: CurrentName | None, current_rank: int | None = None) -> Suggestion:
    return Suggestion("f", "f", 1, "f", [("load_config", "load|config", 0.3), ("f", "f", 0.2), ("read", "read", 0.05)],
                      current_rank=current_rank, current=current)


def test_suggestions_wait_for_an_unlikely_current_name() -> None:
    """A likely current name (per wordpiece at least the floor) gets no suggestion, in hover
    and rename actions alike; an unlikely one gets the names more likely than it; a model
    that cannot score names keeps the old rule (``hoverMinConfidence``)."""
    floor = UNLIKELY_CURRENT_NAME
    likely = _suggestion(CurrentName(math.exp(floor * 2 * 0.99), 2), current_rank=2)  # per wordpiece just above
    assert likely.current is not None and likely.current.per_wordpiece > floor
    assert likely.worth_offering() == [] and hover_markdown(likely, min_confidence=0.99) is None
    unlikely = _suggestion(CurrentName(math.exp(floor * 2 * 1.01), 2))
    assert [s[0] for s in unlikely.worth_offering()] == ["load_config", "read"][:len(unlikely.worth_offering())]
    assert all(s[2] > unlikely.current.probability for s in unlikely.worth_offering())  # type: ignore[union-attr]
    text = hover_markdown(unlikely, min_confidence=0.5)
    assert text is not None and "`load_config`" in text and "not in the top 3 (" in text
    # Compared on the scale shown: a name listed above the current one is offered.
    calibrated = _suggestion(CurrentName(math.exp(floor * 4 * 1.01), 4, confidence=0.1))
    assert [s[0] for s in calibrated.worth_offering()] == ["load_config"]  # not `read` (0.05 < 0.1)
    assert "(10.0%)" in (hover_markdown(calibrated, min_confidence=0.5) or "")
    closed = _suggestion(None, current_rank=None)  # code2vec: all suggestions stand
    assert len(closed.worth_offering()) == 3 and hover_markdown(closed, 0.5) is not None
    assert hover_markdown(_suggestion(None, current_rank=1), 0.25) is None  # confident top = current


def test_names_too_unlikely_themselves_are_not_offered() -> None:
    """Past the current name's floor, a name is offered only with a calibrated probability of
    at least ``LEAST_OFFERED_CONFIDENCE``: `onerror` → `q` at 0.3 % is no suggestion, in hover
    and rename actions alike (both read ``worth_offering``)."""
    least = LEAST_OFFERED_CONFIDENCE
    unlikely = CurrentName(math.exp(UNLIKELY_CURRENT_NAME * 3 * 1.5), 3, confidence=0.0005)
    noise = Suggestion("onerror", "onerror", 1, "onerror",
                       [("run", "run", least * 0.26), ("call", "call", least * 0.24), ("q", "q", 0.003)], current=unlikely)
    assert noise.worth_offering() == [] and hover_markdown(noise, min_confidence=0.5) is None
    mixed = Suggestion("onerror", "onerror", 1, "onerror",
                       [("log_error", "log|error", 0.3), ("report", "report", least), ("q", "q", least * 0.99)],
                       current=unlikely)
    assert [s[0] for s in mixed.worth_offering()] == ["log_error", "report"]  # the floor itself is enough
    text = hover_markdown(mixed, min_confidence=0.5)
    assert text is not None and "`log_error`" in text
    assert noise.worth_offering(least=0.0) != []  # the floor alone kept them out


class _CountingSession:
    """An onnxruntime session that counts its runs."""

    def __init__(self, session: object) -> None:
        self.session, self.runs = session, 0

    def run(self, *args: object, **kwargs: object) -> object:
        self.runs += 1
        return self.session.run(*args, **kwargs)  # type: ignore[attr-defined]


def test_an_opened_files_names_are_prefetched_for_its_hovers(naming_models: Path) -> None:
    """What ``prefetch`` computed, a hover with the same function, name and count reads from
    the cache without running the decoder; another count is computed anew."""
    embedder = OnnxEmbedder.load(naming_models, device="cpu", threads=1)
    generator = NameGenerator.load(naming_models, embedder, "cpu")
    counting = _CountingSession(generator.session)
    generator.session = counting
    generator.prefetch([SOURCE, " "], ["read|config", "x"], 10)
    assert counting.runs > 0
    before = counting.runs
    names, current = generator.names(SOURCE, 10, "read|config")
    assert counting.runs == before and current is not None
    fresh = NameGenerator.load(naming_models, embedder, "cpu")
    assert fresh.names(SOURCE, 10, "read|config") == (names, current)
    generator.names(SOURCE, 3, "read|config")
    assert counting.runs > before
