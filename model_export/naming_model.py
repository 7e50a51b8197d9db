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

from .fusion_memory import FUSION_FILE, FUSION_META, FusedMemory, FusionShape
from .metrics import NamingScores
from .name_decoder import DecoderShape, NameDecoder, greedy
from .naming_pack import NameTokens, NamingExamples
from .run_files import atomic_torch_save

DECODER_FILE = "decoder.pt"
DECODER_META = "decoder.json"


class NamingModel(torch.nn.Module):
    """The encoder (a transformers BERT model), the fusion that builds the decoder's memory
    from its token states and/or the function's path contexts, and the decoder."""

    def __init__(self, bert: Any, decoder: NameDecoder, fusion: FusedMemory | None = None) -> None:
        super().__init__()
        self.bert = bert
        self.decoder = decoder
        self.fusion = fusion if fusion is not None else FusedMemory(FusionShape("llm", hidden=decoder.hidden))
        if getattr(bert, "pooler", None) is not None:  # neither mean pooling nor the decoder reads it, and
            bert.pooler.requires_grad_(False)           # DDP refuses parameters that never get a gradient

    def vocab_table(self) -> torch.Tensor:
        """The encoder's word embeddings of the decoder's vocabulary, ``[H, K]`` (tied: gradients reach them)."""
        return self.bert.embeddings.word_embeddings.weight[self.decoder.vocab_ids].T

    def memory(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state

    def fused(self, ids: torch.Tensor, mask: torch.Tensor, contexts: torch.Tensor | None = None,
              context_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The decoder's (memory, source ids, padding) for a batch: the variant's fusion of the
        token states (not computed where the variant reads contexts only) and the contexts."""
        states = self.memory(ids, mask) if self.fusion.shape.uses_states else None
        context_pad = None if context_mask is None else context_mask == 0
        return self.fusion(states, ids, mask == 0, contexts, context_pad)

    def forward(self, source: torch.Tensor, mask: torch.Tensor, target: torch.Tensor, target_pad: torch.Tensor,
                contexts: torch.Tensor | None = None, context_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed NLL, target wordpieces) of a batch: ``forward`` so that DDP sees the step."""
        memory, copy_source, pad = self.fused(source, mask, contexts, context_mask)
        return self.decoder.nll(memory, copy_source, pad, target, target_pad, self.vocab_table())

    def loss(self, source: torch.Tensor, mask: torch.Tensor, target: torch.Tensor, target_pad: torch.Tensor,
             contexts: torch.Tensor | None = None, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean NLL per target wordpiece."""
        total, count = self(source, mask, target, target_pad, contexts, context_mask)
        return total / count.clamp(min=1)


def batch_tensors(ragged: Any, indices: np.ndarray, pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    ids, mask = ragged.batch(indices, pad_id)
    return torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)


def context_tensors(pack: Any, indices: np.ndarray, device: torch.device
                    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(contexts ``[B, C, 3]``, mask ``[B, C]``) of ``indices`` from a
    :class:`~pathfusion.model_export.context_pack.ContextPack`, or (None, None) without one."""
    if pack is None:
        return None, None
    ids, mask = pack.batch(indices)
    return torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)


@torch.no_grad()
def naming_scores(model: NamingModel, examples: NamingExamples, indices: np.ndarray, names: NameTokens,
                  pad_id: int, device: torch.device, batch: int, autocast: Any, contexts: Any = None
                  ) -> dict[str, Any]:
    """Greedy-decoded names of ``indices`` scored with the code2vec subtoken metric
    (``contexts``: the examples' context pack, for variants that read path contexts)."""
    model.eval()
    scores = NamingScores()
    order = indices[np.argsort(examples.source.lengths()[indices], kind="stable")]
    for start in range(0, len(order), batch):
        rows = order[start:start + batch]
        ids, mask = batch_tensors(examples.source, rows, pad_id, device)
        context_ids, context_mask = context_tensors(contexts, rows, device)
        with autocast():
            memory, source, pad = model.fused(ids, mask, context_ids, context_mask)
            decoded = greedy(model.decoder, memory, source, pad, model.vocab_table())
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


def save_fusion(fusion: FusedMemory, folder: Path) -> None:
    """``fusion.pt`` and ``fusion.json`` (the variant and its shape) beside the decoder."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(fusion.state_dict(), folder / FUSION_FILE)
    (folder / FUSION_META).write_text(json.dumps(fusion.shape.to_json()) + "\n")


def load_fusion(folder: Path, hidden: int) -> FusedMemory:
    """The folder's fusion; a folder without one (a head trained before the fusions) is ``llm``."""
    if not (folder / FUSION_META).is_file():
        return FusedMemory(FusionShape("llm", hidden=hidden))
    fusion = FusedMemory(FusionShape(**json.loads((folder / FUSION_META).read_text())))
    fusion.load_state_dict(torch.load(folder / FUSION_FILE, map_location="cpu"))
    return fusion
