"""The weight average of runs (model_export/soup.py) on a tiny BERT run folder: the averaged
tensors are the weighted sums, the result loads as a model, and what cannot be averaged is refused
before anything is written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pathfusion.model_export import soup
from tests.helpers.models import write_tiny_bert


def make_best(folder: Path, shift: float) -> Path:
    """A run's ``best/`` folder: a tiny BERT, a decoder and a fusion state, every float tensor + ``shift``."""
    write_tiny_bert(folder)
    encoder = load_file(str(folder / soup.ENCODER_FILE))
    save_file({k: v + shift if v.is_floating_point() else v for k, v in encoder.items()},
              str(folder / soup.ENCODER_FILE), metadata={"format": "pt"})
    torch.save({"out.weight": torch.full((3, 2), shift), "steps": torch.tensor([7])}, folder / "decoder.pt")
    torch.save({"gate": torch.tensor([1.0 + shift])}, folder / "fusion.pt")
    (folder / "decoder.json").write_text('{"hidden": 32}\n')
    return folder


def test_soup_is_the_weighted_sum_of_every_trained_tensor(tmp_path: Path) -> None:
    a = make_best(tmp_path / "a", 0.0)
    b = make_best(tmp_path / "b", 1.0)
    out = soup.soup([a, b], [0.25, 0.75], tmp_path / "soup")

    first, second, mixed = (load_file(str(f / soup.ENCODER_FILE)) for f in (a, b, out))
    assert set(mixed) == set(first)
    for key, tensor in mixed.items():
        if tensor.is_floating_point():
            torch.testing.assert_close(tensor, 0.25 * first[key] + 0.75 * second[key])
        else:
            assert torch.equal(tensor, first[key])
    decoder = torch.load(out / "decoder.pt")
    torch.testing.assert_close(decoder["out.weight"], torch.full((3, 2), 0.75))
    assert torch.equal(decoder["steps"], torch.tensor([7]))
    torch.testing.assert_close(torch.load(out / "fusion.pt")["gate"], torch.tensor([1.75]))
    assert (out / "decoder.json").read_bytes() == (a / "decoder.json").read_bytes()
    assert (out / "tokenizer.json").read_bytes() == (a / "tokenizer.json").read_bytes()
    assert not (tmp_path / "soup.partial").exists()

    from transformers import BertModel
    model = BertModel.from_pretrained(str(out))
    torch.testing.assert_close(model.embeddings.word_embeddings.weight.detach(),
                               0.25 * first["embeddings.word_embeddings.weight"]
                               + 0.75 * second["embeddings.word_embeddings.weight"])


def test_a_soup_of_one_run_with_itself_is_that_run(tmp_path: Path) -> None:
    a = make_best(tmp_path / "a", 0.5)
    b = tmp_path / "b"
    shutil.copytree(a, b)
    out = soup.soup([a, b], [0.3, 0.7], tmp_path / "soup")
    for key, tensor in load_file(str(out / soup.ENCODER_FILE)).items():
        torch.testing.assert_close(tensor, load_file(str(a / soup.ENCODER_FILE))[key], rtol=0, atol=1e-6)


@pytest.mark.parametrize("spoil, message", [
    (lambda b: (b / "decoder.json").write_text('{"hidden": 64}\n'), "differs from"),
    (lambda b: (b / "extra.txt").write_text("x"), "other files"),
    (lambda b: torch.save({"gate": torch.zeros(2)}, b / "fusion.pt"), "different shapes"),
    (lambda b: torch.save({"out.weight": torch.ones(3, 2), "steps": torch.tensor([8])}, b / "decoder.pt"),
     "not a float tensor"),
    (lambda b: torch.save({"other": torch.ones(1)}, b / "fusion.pt"), "other tensors"),
])
def test_runs_that_cannot_be_averaged_are_refused_and_nothing_is_written(tmp_path: Path, spoil, message) -> None:
    a = make_best(tmp_path / "a", 0.0)
    b = make_best(tmp_path / "b", 1.0)
    spoil(b)
    with pytest.raises(ValueError, match=message):
        soup.soup([a, b], [0.5, 0.5], tmp_path / "soup")
    assert not (tmp_path / "soup").exists()


def test_weights_must_be_one_per_run_and_sum_to_one(tmp_path: Path) -> None:
    a = make_best(tmp_path / "a", 0.0)
    b = make_best(tmp_path / "b", 1.0)
    with pytest.raises(ValueError, match="sum to"):
        soup.soup([a, b], [0.5, 0.6], tmp_path / "soup")
    with pytest.raises(ValueError, match="3 weights for 2 runs"):
        soup.soup([a, b], [0.2, 0.3, 0.5], tmp_path / "soup")
    with pytest.raises(ValueError, match="at least two"):
        soup.soup([a], [1.0], tmp_path / "soup")
    assert soup.main(["--run", str(a), "--run", str(tmp_path / "nowhere"), "--out", str(tmp_path / "soup")]) == 2
    assert not (tmp_path / "soup").exists()
    before = (a / soup.ENCODER_FILE).read_bytes()
    with pytest.raises(ValueError, match="is one of the runs"):  # an input is never overwritten
        soup.soup([a, b], [0.5, 0.5], a)
    assert (a / soup.ENCODER_FILE).read_bytes() == before
