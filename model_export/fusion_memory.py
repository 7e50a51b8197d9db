"""What the naming decoder reads: the LLM's token states, code2vec's path-context vectors, or a
fusion of both (issue 11; the paper's eqs. 3–5 redefined for a decoder).

Every variant turns ``(states [B, S, H], source [B, S], pad [B, S], contexts [B, C, 3],
context_pad [B, C])`` into one ``(memory [B, M, H], source [B, M], pad [B, M])`` that
:class:`~pathfusion.model_export.name_decoder.NameDecoder` attends over and copies from, so the decoder,
its beam search and its exported step graph are the same for all of them:

``llm``
    the token states alone (today's head).
``code2vec``
    the context vectors alone, ``tanh(W · [e_start; e_path; e_end])`` (code2vec's; ≈ code2seq's
    encoder): nothing to copy from.
``concat`` (eq. 3)
    both sets as one memory, each position tagged with a learned source embedding; copies
    only from the token positions.
``weighted`` (eq. 4)
    per token position, a learned gate mixes the token state with code2vec's code vector
    (attention-pooled contexts, code2vec's own pooling): ``m_s = l_s + g_s ⊙ W c``,
    ``g_s = σ(U [l_s; c])`` per dimension.
``attention`` (eq. 5)
    multi-head cross-attention from the token states to the contexts, then a feed-forward
    block, both residual: the token states enriched with the contexts they attend to.

``weighted`` and ``attention`` keep the token positions (copying is unchanged) and start as
the identity (zero-initialised output layers, a closed gate), so that a decoder trained
over ``llm`` starts from its own behaviour and the contexts are added, not substituted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .name_decoder import multi_head_attention

VARIANTS = ("llm", "code2vec", "concat", "weighted", "attention")
FUSION_FILE = "fusion.pt"
FUSION_META = "fusion.json"


@dataclass(frozen=True)
class FusionShape:
    variant: str = "llm"
    token_rows: int = 0
    path_rows: int = 0
    context_dim: int = 128
    hidden: int = 384
    heads: int = 6
    feed_forward: int = 1536
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, not {self.variant!r}")

    @property
    def uses_contexts(self) -> bool:
        return self.variant != "llm"

    @property
    def uses_states(self) -> bool:
        return self.variant != "code2vec"

    def to_json(self) -> dict[str, object]:
        return asdict(self)


class ContextEncoder(nn.Module):
    """code2vec's context vectors: embeddings of the start token, path and end token,
    concatenated, then ``tanh(W ·)`` into the decoder's width."""

    def __init__(self, shape: FusionShape) -> None:
        super().__init__()
        self.tokens = nn.Embedding(shape.token_rows, shape.context_dim, padding_idx=0)
        self.paths = nn.Embedding(shape.path_rows, shape.context_dim, padding_idx=0)
        self.project = nn.Linear(3 * shape.context_dim, shape.hidden, bias=False)
        self.dropout = nn.Dropout(shape.dropout)
        nn.init.normal_(self.tokens.weight, std=0.1)
        nn.init.normal_(self.paths.weight, std=0.1)
        with torch.no_grad():
            self.tokens.weight[0].zero_()
            self.paths.weight[0].zero_()

    def forward(self, contexts: torch.Tensor) -> torch.Tensor:
        parts = torch.cat([self.tokens(contexts[..., 0]), self.paths(contexts[..., 1]), self.tokens(contexts[..., 2])],
                          dim=-1)
        return torch.tanh(self.project(self.dropout(parts)))


def seen_contexts(context_pad: torch.Tensor) -> torch.Tensor:
    """``context_pad`` with its first column unblocked in rows that have no context at all:
    attention over an all-blocked row is undefined (NaN); the padding row's vector is zero."""
    empty = context_pad.all(dim=-1, keepdim=True)
    first = (torch.cumsum(torch.ones_like(context_pad[0], dtype=torch.int64), 0) == 1)[None, :]  # no shape baked in
    return context_pad & ~(empty & first)


class FusedMemory(nn.Module):
    """One variant's memory for the decoder (module docstring)."""

    def __init__(self, shape: FusionShape) -> None:
        super().__init__()
        self.shape = shape
        hidden = shape.hidden
        self.contexts = ContextEncoder(shape) if shape.uses_contexts else None
        if shape.variant == "concat":
            self.source_type = nn.Parameter(torch.zeros(2, hidden))
        if shape.variant == "weighted":
            self.pool = nn.Linear(hidden, 1, bias=False)  # code2vec's attention vector
            self.code = nn.Linear(hidden, hidden)
            self.gate = nn.Linear(2 * hidden, hidden)
            nn.init.zeros_(self.code.weight)
            nn.init.zeros_(self.code.bias)
            nn.init.constant_(self.gate.bias, -2.0)
        if shape.variant == "attention":
            self.attention_norm = nn.LayerNorm(hidden)
            self.query = nn.Linear(hidden, hidden)
            self.key_value = nn.Linear(hidden, 2 * hidden)
            self.attended = nn.Linear(hidden, hidden)
            self.feed_norm = nn.LayerNorm(hidden)
            self.feed_in = nn.Linear(hidden, shape.feed_forward)
            self.feed_out = nn.Linear(shape.feed_forward, hidden)
            for layer in (self.attended, self.feed_out):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, states: torch.Tensor | None, source: torch.Tensor, pad: torch.Tensor,
                contexts: torch.Tensor | None, context_pad: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        variant = self.shape.variant
        if variant == "llm":
            assert states is not None
            return states, source, pad
        assert contexts is not None and context_pad is not None and self.contexts is not None
        context_pad = seen_contexts(context_pad)
        vectors = self.contexts(contexts)
        if variant == "code2vec":
            return vectors, torch.zeros_like(context_pad, dtype=source.dtype), context_pad
        assert states is not None
        vectors = vectors.to(states.dtype)
        if variant == "concat":
            memory = torch.cat([states + self.source_type[0], vectors + self.source_type[1]], dim=1)
            nothing = torch.zeros_like(context_pad, dtype=source.dtype)  # ids below FIRST_COPYABLE_ID: never copied
            return memory, torch.cat([source, nothing], dim=1), torch.cat([pad, context_pad], dim=1)
        if variant == "weighted":
            weights = torch.softmax(self.pool(vectors).squeeze(-1).float().masked_fill(context_pad, float("-inf")), -1)
            code = (weights.to(vectors.dtype)[:, None, :] @ vectors) + torch.zeros_like(states)  # [B, S, H]
            gate = torch.sigmoid(self.gate(torch.cat([states, code], dim=-1)))
            return states + gate * self.code(code), source, pad
        h = self.attention_norm(states)
        keys, values = self.key_value(vectors).chunk(2, dim=-1)
        attended = multi_head_attention(self.query(h), keys, values, self.shape.heads, context_pad[:, None, None, :],
                              self.shape.dropout, self.training)
        memory = states + self.attended(attended)
        feed = nn.functional.dropout(torch.relu(self.feed_in(self.feed_norm(memory))), self.shape.dropout,
                                     self.training)
        memory = memory + self.feed_out(feed)
        return memory, source, pad

