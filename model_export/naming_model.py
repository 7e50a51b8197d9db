"""The naming model of a training run: the encoder with the decoder over its token states, its
naming loss (the summed NLL that data parallelism adds up), the greedy
validation score, and how its decoder is saved beside the encoder in a run's ``best/``.

Why apart from :mod:`pathfusion.model_export.train_naming`: the export
(:mod:`pathfusion.model_export.export_naming`) and the tests read decoders back without the
run's loop, and the loop reads better without the model's details."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .metrics import NamingScores
from .name_decoder import DecoderShape, NameDecoder, greedy
from .naming_pack import NameTokens, NamingExamples
from .run_files import atomic_torch_save

DECODER_FILE = "decoder.pt"
DECODER_META = "decoder.json"


class NamingModel(torch.nn.Module):
    """The encoder (a transformers BERT model) and the decoder that reads its token states."""

    def __init__(self, bert: Any, decoder: NameDecoder) -> None:
        super().__init__()
        self.bert = bert
        self.decoder = decoder
        if getattr(bert, "pooler", None) is not None:  # neither mean pooling nor the decoder reads it, and
            bert.pooler.requires_grad_(False)           # DDP refuses parameters that never get a gradient

    def vocab_table(self) -> torch.Tensor:
        """The encoder's word embeddings of the decoder's vocabulary, ``[H, K]`` (tied: gradients reach them)."""
        return self.bert.embeddings.word_embeddings.weight[self.decoder.vocab_ids].T

    def memory(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state

    def forward(self, source: torch.Tensor, mask: torch.Tensor, target: torch.Tensor, target_pad: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed NLL, target wordpieces) of a batch: ``forward`` so that DDP sees the step."""
        memory = self.memory(source, mask)
        return self.decoder.nll(memory, source, mask == 0, target, target_pad, self.vocab_table())

    def loss(self, source: torch.Tensor, mask: torch.Tensor, target: torch.Tensor, target_pad: torch.Tensor
             ) -> torch.Tensor:
        """Mean NLL per target wordpiece."""
        total, count = self(source, mask, target, target_pad)
        return total / count.clamp(min=1)


def batch_tensors(ragged: Any, indices: np.ndarray, pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    ids, mask = ragged.batch(indices, pad_id)
    return torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)


@torch.no_grad()
def naming_scores(model: NamingModel, examples: NamingExamples, indices: np.ndarray, names: NameTokens,
                  pad_id: int, device: torch.device, batch: int, autocast: Any) -> dict[str, Any]:
    """Greedy-decoded names of ``indices`` scored with the code2vec subtoken metric."""
    model.eval()
    scores = NamingScores()
    order = indices[np.argsort(examples.source.lengths()[indices], kind="stable")]
    for start in range(0, len(order), batch):
        rows = order[start:start + batch]
        ids, mask = batch_tensors(examples.source, rows, pad_id, device)
        with autocast():
            memory = model.memory(ids, mask)
            decoded = greedy(model.decoder, memory, ids, mask == 0, model.vocab_table())
        for row, pieces in zip(rows, decoded, strict=True):
            scores.add(examples.labels[row], [names.name_of_ids(pieces)])
    return {**scores.result(), "samples": scores.samples[:5]}


def save_decoder(decoder: NameDecoder, folder: Path, config: Any) -> None:
    """``decoder.pt`` (weights) and ``decoder.json`` (vocabulary, shape, special ids, the
    ``max_source_tokens`` of ``config``, a :class:`~pathfusion.model_export.train_naming.NamingTrainConfig`):
    what the export and a continued run read back."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in decoder.state_dict().items() if k not in ("vocab_ids", "full_to_vocab")}
    atomic_torch_save(state, folder / DECODER_FILE)
    meta = {"hidden": decoder.hidden, "vocab_ids": decoder.vocab_ids.tolist(),
            "full_vocab": int(decoder.full_to_vocab.shape[0]), "bos_id": decoder.bos_id,
            "eos_id": decoder.eos_id, "unk_id": decoder.unk_id, "shape": dataclasses.asdict(decoder.shape),
            "max_source_tokens": config.max_source_tokens}
    (folder / DECODER_META).write_text(json.dumps(meta) + "\n")


def load_decoder(folder: Path) -> NameDecoder:
    meta = json.loads((folder / DECODER_META).read_text())
    decoder = NameDecoder(meta["hidden"], meta["vocab_ids"], meta["full_vocab"], meta["bos_id"], meta["eos_id"],
                          meta["unk_id"], DecoderShape(**meta["shape"]))
    decoder.load_state_dict(torch.load(folder / DECODER_FILE, map_location="cpu"), strict=False)
    return decoder
