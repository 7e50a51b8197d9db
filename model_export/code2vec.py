"""code2vec (Alon et al., POPL 2019) in torch, faithful to the paper.

Each context (start token, path, end token) is embedded as ``[e_tok(s); e_path(p);
e_tok(t)]`` (3 × 128 = 384), passed through dropout and a fully connected ``tanh(W·c)``
(384 → 384, no bias), scored against one global attention vector ``a``; padded contexts are
masked out of the softmax.  The code vector is the attention-weighted sum of the combined
context vectors, and a softmax over the target-name vocabulary (``code · Tᵀ``) is trained
with cross-entropy (paper eq. 1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass
class Code2VecConfig:
    """Every hyper-parameter of the model and its training, in one place.

    Saved beside each checkpoint (``config.json``) so a run can be resumed and reproduced.
    """

    token_vocab: int = 40_000
    path_vocab: int = 60_000
    target_vocab: int = 15_000
    min_count: int = 2
    embed_dim: int = 128
    code_dim: int = 384
    dropout: float = 0.25
    max_contexts: int = 200
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    epochs: int = 8
    patience: int = 2
    seed: int = 13
    threads: int = 2
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu`` or ``cuda``."""
    max_train_examples: int | None = None
    eval_every: int = 0
    """Evaluate on the validation split every N steps as well as at each epoch end (0: only
    at epoch ends)."""
    max_valid_examples: int = 10_000
    time_budget_min: float | None = None
    """Stop (as after an epoch) once this many minutes of training have passed."""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class Code2Vec(nn.Module):
    """The code2vec network; ``forward`` returns (code vector, attention, logits)."""

    def __init__(self, n_tokens: int, n_paths: int, n_targets: int, config: Code2VecConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.embed_dim
        self.token_embedding = nn.Embedding(n_tokens, dim, padding_idx=0)
        self.path_embedding = nn.Embedding(n_paths, dim, padding_idx=0)
        self.dropout = nn.Dropout(config.dropout)
        self.transform = nn.Linear(3 * dim, config.code_dim, bias=False)
        self.attention = nn.Parameter(torch.empty(config.code_dim))
        self.targets = nn.Linear(config.code_dim, n_targets, bias=False)
        nn.init.xavier_uniform_(self.transform.weight)
        nn.init.normal_(self.attention, std=config.code_dim ** -0.5)
        nn.init.xavier_uniform_(self.targets.weight)
        nn.init.normal_(self.token_embedding.weight, std=0.1)
        nn.init.normal_(self.path_embedding.weight, std=0.1)

    def encode(
        self, contexts: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(code vector [B, D], attention [B, C], combined contexts [B, C, D]).

        ``contexts`` is int64 [B, C, 3] (start, path, end ids), ``mask`` float [B, C].
        An example with no context at all gets a zero code vector (uniform attention over
        padding, which is all zeros).
        """
        starts = self.token_embedding(contexts[..., 0])
        paths = self.path_embedding(contexts[..., 1])
        ends = self.token_embedding(contexts[..., 2])
        combined = torch.tanh(self.transform(self.dropout(torch.cat([starts, paths, ends], dim=-1))))
        scores = combined @ self.attention
        scores = scores.masked_fill(mask <= 0, -1e9)
        weights = torch.softmax(scores, dim=-1) * mask
        code = torch.einsum("bc,bcd->bd", weights, combined)
        return code, weights, combined

    def forward(
        self, contexts: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        code, weights, _ = self.encode(contexts, mask)
        return code, weights, self.targets(code)


class Code2VecExport(nn.Module):
    """The graph we export: ids + mask → code vector, attention, top-k ids and probabilities."""

    def __init__(self, model: Code2Vec, top_k: int = 10) -> None:
        super().__init__()
        self.model = model
        self.top_k = top_k

    def forward(
        self, starts: torch.Tensor, paths: torch.Tensor, ends: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        contexts = torch.stack([starts, paths, ends], dim=-1)
        code, weights, logits = self.model(contexts, mask)
        probabilities = torch.softmax(logits, dim=-1)
        top_p, top_ids = torch.topk(probabilities, self.top_k, dim=-1)
        return code, weights, top_ids, top_p


def resolve_device(name: str) -> torch.device:
    """The torch device for a config's ``device`` (``auto`` prefers CUDA when present)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda requested but torch sees no CUDA device")
    return torch.device(name)
