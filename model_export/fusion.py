"""The fusions of the LLM embedding ``l`` and the code2vec code vector ``c`` (paper eqs. 3–5,
docs/design.md §4), each with a naming head and a search projection.

Why code2vec enters as its code vector: the code2vec encoder is trained once on the whole
naming corpus (373k functions) and frozen; its code vector is what the exported
``code2vec.onnx`` already computes, so a fusion graph needs only ``l`` and ``c`` as inputs and
the server runs each network once per function.  The LLM is frozen too (it is the shipped
embedder).  Only the fusion, the heads and the query encoder are trained here.

Variants (``VARIANTS``):

* ``code2vec`` — ``c`` alone; ``llm`` — ``l`` alone (the single-source baselines, given the
  same heads so that the comparison isolates the inputs);
* ``concat`` — ``[l; c]`` (eq. 3);
* ``weighted`` — ``w1·P1(l) + w2·P2(c)`` with linear projections to a common width and
  learnable weights ``w = softmax(a)`` (eq. 4; the softmax keeps the weights positive and
  readable as shares — they are reported);
* ``attention`` — the two projected vectors as a sequence of two tokens ``[P1(l), P2(c)]``,
  multi-head self-attention (residual + LayerNorm) then a feed-forward layer (residual +
  LayerNorm), mean of the two tokens (eq. 5).

One :class:`FusionModel` holds **two** fusion modules of the same variant: one feeds the
naming head (trained on the masked-name embeddings, docs/design.md §2) and one feeds the search
projection (trained on the as-written embeddings).  Sharing one fusion between the two
tasks would force one module to serve two different input distributions (``l`` of masked
code vs of code as written); keeping them separate is the honest baseline and costs only
the fusion's parameters.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

VARIANTS = ("code2vec", "llm", "concat", "weighted", "attention")
FUSIONS = ("concat", "weighted", "attention")


@dataclass
class FusionConfig:
    """Everything that shapes a :class:`FusionModel` (saved with each run and export)."""

    variant: str
    llm_dim: int = 384
    code_dim: int = 384
    width: int = 256
    """Common width of the projections (weighted, attention) and of the naming feature."""
    heads: int = 4
    search_dim: int = 256
    targets: int = 10000
    dropout: float = 0.2
    top_k: int = 10

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown fusion variant {self.variant!r}; expected one of {', '.join(VARIANTS)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FusionConfig:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


class SelfAttention(nn.Module):
    """Multi-head self-attention over a short token sequence.

    Hand-written rather than ``nn.MultiheadAttention`` because the latter's eval-mode fast
    path (``_native_multi_head_attention``) has no ONNX export."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.scale = (width // heads) ** -0.5
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, length, width = tokens.shape
        q, k, v = self.qkv(tokens).reshape(batch, length, 3, self.heads, width // self.heads).permute(
            2, 0, 3, 1, 4).unbind(0)
        scores = (q @ k.transpose(-1, -2)) * self.scale
        weights = self.dropout(torch.softmax(scores, dim=-1))
        return self.out((weights @ v).transpose(1, 2).reshape(batch, length, width))


class Fusion(nn.Module):
    """``(l, c) → representation [B, out_dim]`` for one variant."""

    def __init__(self, config: FusionConfig) -> None:
        super().__init__()
        self.variant = config.variant
        width = config.width
        if config.variant == "code2vec":
            self.out_dim = config.code_dim
        elif config.variant == "llm":
            self.out_dim = config.llm_dim
        elif config.variant == "concat":
            self.out_dim = config.llm_dim + config.code_dim
        else:
            self.project_llm = nn.Linear(config.llm_dim, width)
            self.project_code = nn.Linear(config.code_dim, width)
            self.out_dim = width
        if config.variant == "weighted":
            self.weight_logits = nn.Parameter(torch.zeros(2))
        if config.variant == "attention":
            self.attention = SelfAttention(width, config.heads, config.dropout)
            self.norm1 = nn.LayerNorm(width)
            self.feed_forward = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Dropout(config.dropout),
                                              nn.Linear(2 * width, width))
            self.norm2 = nn.LayerNorm(width)

    def weights(self) -> torch.Tensor:
        """The weighted variant's (w1, w2); for reports."""
        return torch.softmax(self.weight_logits, dim=0)

    def forward(self, llm: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        if self.variant == "code2vec":
            return code
        if self.variant == "llm":
            return llm
        if self.variant == "concat":
            return torch.cat([llm, code], dim=-1)
        p_llm, p_code = self.project_llm(llm), self.project_code(code)
        if self.variant == "weighted":
            w = self.weights()
            return w[0] * p_llm + w[1] * p_code
        tokens = torch.stack([p_llm, p_code], dim=1)  # [B, 2, width]
        attended = self.attention(tokens)
        tokens = self.norm1(tokens + attended)
        tokens = self.norm2(tokens + self.feed_forward(tokens))
        return tokens.mean(dim=1)


class FusionModel(nn.Module):
    """Naming: fusion → dropout → linear + tanh (``width``) → softmax over the target names.
    Search: fusion → linear → L2-normalised vector in the space shared with the query encoder."""

    def __init__(self, config: FusionConfig) -> None:
        super().__init__()
        self.config = config
        self.naming_fusion = Fusion(config)
        self.search_fusion = Fusion(config)
        self.dropout = nn.Dropout(config.dropout)
        # The same two-layer head for every variant (a ``width`` bottleneck before the
        # softmax): the comparison then isolates the inputs, and the largest matrix
        # (width × targets) has one size whatever the fusion's output width.
        self.naming_head = nn.Sequential(nn.Linear(self.naming_fusion.out_dim, config.width), nn.Tanh(),
                                         nn.Dropout(config.dropout), nn.Linear(config.width, config.targets))
        self.search_head = nn.Linear(self.search_fusion.out_dim, config.search_dim)

    def naming_logits(self, llm: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        return self.naming_head(self.dropout(self.naming_fusion(llm, code)))

    def search_vector(self, llm: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        vector = self.search_head(self.dropout(self.search_fusion(llm, code)))
        return nn.functional.normalize(vector, dim=-1)


class FusionExport(nn.Module):
    """The exported graph: ``llm``, ``code`` → ``top_ids``, ``top_probs`` (naming) and
    ``search_vector``.  The server feeds the masked-code embedding for naming and the
    as-written one for search, each run reading only the outputs it needs."""

    def __init__(self, model: FusionModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, llm: torch.Tensor, code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        probabilities = torch.softmax(self.model.naming_logits(llm, code), dim=-1)
        top_p, top_ids = torch.topk(probabilities, self.model.config.top_k, dim=-1)
        return top_ids, top_p, self.model.search_vector(llm, code)
