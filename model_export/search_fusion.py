"""Search fusions over the shipped encoder: the LLM's code vector joined with code2vec's path
contexts, the context encoder trained jointly (issue 10, deliverable 5).

``python -m pathfusion.model_export.search_fusion`` trains and compares, on the cache of
:mod:`pathfusion.model_export.embed_corpus` (``--tasks search --anonymised train,valid,test``:
the shipped encoder's vectors of each pair's query, code as written and anonymised code):

``zero-shot``
    the encoder's own space: what search serves today (no training).
``llm``
    a learned projection of the code vector, ``normalize(A l)`` (``A`` starts as the
    identity): what a projection alone buys, so that a fusion's gain is the contexts'.
``concat`` (eq. 3)
    ``normalize(A l + W c)``: a linear map of ``[l; c]`` whose ``l`` block starts as the
    identity and ``c`` block at zero.
``weighted`` (eq. 4)
    ``normalize(w₁ A l + w₂ U c)`` with ``w = softmax(a)`` (shares, reported).
``attention`` (eq. 5)
    ``normalize(A l + O · MHA(A l → contexts))``: the code vector attends over the context
    vectors (``O`` starts at zero).

``c`` is code2vec's code vector (attention-pooled context vectors, ``tanh(W [e_s; e_p; e_e])``)
over the function's own path contexts, ids from the shipped naming head's context vocabulary
(:class:`~pathfusion.server.context_vocab.ContextVocab`, rows past ``tokens``/``paths`` share
the unknown id: a small table keeps the exported graph within the size budget).  The context
encoder is trained *jointly* with the fusion, from scratch — not a code2vec model trained
on its own on the same train split and frozen (the stacking bias of ``docs/results.md``).
Queries stay the encoder's query vectors, so an index keeps one query side.

Training: in-batch softmax (paper eq. 2, scale 20) on the train pairs, a share of them with
the anonymised code (identifiers carry nothing there: the contexts' structure must);
validation MRR (plain + anonymised, groups of 1,000) picks each variant's epoch; the test
pairs — and the held-out projects' (``embed_corpus --heldout``), when cached — are scored
once at the end.  Output: ``data/runs/search-fusion/<variant>/`` (``model.pt``,
``config.json``, ``log.jsonl``) and ``data/results/search-fusion.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pathfusion.server.atomic import write_atomic
from pathfusion.server.context_vocab import VOCAB_FILE, ContextVocab

from .context_pack import ContextPack, contexts_of_sources
from .embed_corpus import GROUP, load_field, read_selection, selection_path
from .fusion_memory import ContextEncoder, FusionShape, seen_contexts
from .metrics import mrr
from .run_files import set_fields

VARIANTS = ("llm", "concat", "weighted", "attention")
CACHE = Path("data/embeddings")
"""``embed_corpus``'s default ``--out``: the two commands run one after the other with their defaults."""
RUNS = Path("data/runs/search-fusion")
RESULTS = Path("data/results/search-fusion.json")


@dataclasses.dataclass
class SearchFusionConfig:
    """Every setting of one variant's run (saved as its ``config.json``)."""

    variant: str = "attention"
    tokens: int = 4000
    """Context-token rows kept of the naming vocabulary (commonest first; the rest: unknown)."""
    paths: int = 6000
    context_dim: int = 32
    width: int = 128
    """Width of the context vectors (code2vec's code vector)."""
    heads: int = 4
    dropout: float = 0.1
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-5
    epochs: int = 12
    patience: int = 3
    scale: float = 20.0
    anonymised_share: float = 0.2
    project_llm: bool = True
    """Whether ``A`` is trained (else it stays the identity: the contexts only add to the
    encoder's vector).  The ``llm`` variant always trains it."""
    seed: int = 7

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, not {self.variant!r}")


class SearchFusion(nn.Module):
    """One variant's code side (module docstring): ``(l [B, H], contexts [B, C, 3],
    context_pad [B, C]) → unit vectors [B, H]``."""

    def __init__(self, config: SearchFusionConfig, hidden: int = 384) -> None:
        super().__init__()
        self.config = config
        self.llm = nn.Linear(hidden, hidden, bias=False)
        with torch.no_grad():
            self.llm.weight.copy_(torch.eye(hidden))
        self.llm.weight.requires_grad_(config.project_llm or config.variant == "llm")
        variant = config.variant
        self.contexts: ContextEncoder | None = None
        if variant != "llm":
            shape = FusionShape("code2vec", config.tokens + 2, config.paths + 2, config.context_dim, config.width,
                                dropout=config.dropout)
            self.contexts = ContextEncoder(shape)
            self.pool = nn.Linear(config.width, 1, bias=False)  # code2vec's attention vector
        if variant == "concat":
            self.code = nn.Linear(config.width, hidden, bias=False)
            nn.init.zeros_(self.code.weight)
        if variant == "weighted":
            self.code = nn.Linear(config.width, hidden, bias=False)
            self.shares = nn.Parameter(torch.tensor([3.0, 0.0]))
        if variant == "attention":
            self.query = nn.Linear(hidden, config.width)
            self.key_value = nn.Linear(config.width, 2 * config.width)
            self.attended = nn.Linear(config.width, hidden, bias=False)
            nn.init.zeros_(self.attended.weight)

    def forward(self, llm: torch.Tensor, contexts: torch.Tensor, context_pad: torch.Tensor) -> torch.Tensor:
        vector = self.llm(llm)
        variant = self.config.variant
        if variant != "llm":
            assert self.contexts is not None
            pad = seen_contexts(context_pad)
            vectors = self.contexts(contexts)  # [B, C, W]
            if variant in ("concat", "weighted"):
                weights = self.pool(vectors).squeeze(-1).masked_fill(pad, float("-inf")).softmax(-1)
                code = torch.einsum("bc,bcw->bw", weights, vectors)
                if variant == "concat":
                    vector = vector + self.code(code)
                else:
                    shares = self.shares.softmax(0)
                    vector = shares[0] * vector + shares[1] * self.code(code)
            else:
                vector = vector + self.attended(self._attend(vector, vectors, pad))
        return nn.functional.normalize(vector, dim=-1)

    def _attend(self, vector: torch.Tensor, vectors: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        heads, width = self.config.heads, self.config.width
        batch = vector.shape[0]
        query = self.query(vector).view(batch, heads, 1, width // heads)
        key, value = self.key_value(vectors).split(width, dim=-1)
        key = key.view(batch, -1, heads, width // heads).transpose(1, 2)
        value = value.view(batch, -1, heads, width // heads).transpose(1, 2)
        logits = (query @ key.transpose(-1, -2)) / (width // heads) ** 0.5  # [B, heads, 1, C]
        weights = logits.masked_fill(pad[:, None, None, :], float("-inf")).softmax(-1)
        return (weights @ value).reshape(batch, width)


# -- data ------------------------------------------------------------------------------------
@dataclasses.dataclass
class SearchSplit:
    """One split's cached pairs: query, code and anonymised-code vectors and contexts."""

    query: np.ndarray
    code: np.ndarray
    anon: np.ndarray
    contexts: ContextPack
    anon_contexts: ContextPack

    def __len__(self) -> int:
        return len(self.query)

    def take(self, rows: np.ndarray) -> SearchSplit:
        """The pairs at ``rows``, in that order."""
        return SearchSplit(self.query[rows], self.code[rows], self.anon[rows], self.contexts.take(rows),
                           self.anon_contexts.take(rows))


def split_by_project(projects: Sequence[str], share: float, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Positions of pairs to fit on and to choose on: whole projects, in a seeded order, go to
    the choosing side until it holds ``share`` of the pairs — so that the epoch is chosen on
    projects the fusion never saw, as the held-out projects will be."""
    names = sorted(set(projects))
    np.random.default_rng(seed).shuffle(names)
    counts = {name: 0 for name in names}
    for project in projects:
        counts[project] += 1
    choose: set[str] = set()
    held = 0
    for name in names:
        if held >= share * len(projects):
            break
        choose.add(name)
        held += counts[name]
    if not choose or len(choose) == len(names):
        raise ValueError(f"cannot split {len(names)} projects into fitting and choosing sides at share {share}")
    inside = np.asarray([p in choose for p in projects])
    return np.flatnonzero(~inside), np.flatnonzero(inside)


def context_ids(pack: ContextPack, rows: np.ndarray, tokens: int, paths: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``rows``' context ids (tokens past ``tokens`` and paths past ``paths`` become unknown)
    and the padding mask."""
    ids, mask = pack.batch(rows)
    ids = ids.copy()
    limits = np.array([tokens + 1, paths + 1, tokens + 1])
    ids[ids > limits] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask == 0)


def load_split(cache: Path, split: str, vocab: ContextVocab, processes: int | None = None) -> SearchSplit:
    """The pairs of ``split`` whose three vectors are all cached (a prefix of the selection),
    with their contexts (extracted once into ``<cache>/<split>-search-contexts.npz``)."""
    fields = {field: load_field(cache, split, "search", field) for field in ("query", "code", "anon")}
    count = min(len(v) for v in fields.values())
    if count == 0:
        raise FileNotFoundError(f"{cache}: no {split} search vectors with their anonymised code; run "
                                "`python -m pathfusion.model_export.embed_corpus --tasks search --anonymised "
                                "train,valid,test --only embed` first")
    rows = read_selection(selection_path(cache, split, "search"))[:count]
    packs = []
    for field in ("code", "anon"):
        path = cache / f"{split}-search-{field}-contexts.npz"
        pack = ContextPack.load(path) if path.is_file() else None
        if pack is None or len(pack) < count:
            pack = contexts_of_sources([r[field] for r in rows], vocab, processes)
            pack.save(path)
        packs.append(pack.take(np.arange(count)))
    return SearchSplit(fields["query"][:count], fields["code"][:count], fields["anon"][:count], packs[0], packs[1])


# -- training --------------------------------------------------------------------------------
@torch.no_grad()
def code_vectors(model: SearchFusion, split: SearchSplit, anonymised: bool, batch: int = 500) -> np.ndarray:
    model.eval()
    llm, pack = (split.anon, split.anon_contexts) if anonymised else (split.code, split.contexts)
    out = []
    for start in range(0, len(split), batch):
        rows = np.arange(start, min(start + batch, len(split)))
        ids, pad = context_ids(pack, rows, model.config.tokens, model.config.paths)
        out.append(model(torch.from_numpy(llm[rows]), ids, pad).numpy())
    return np.concatenate(out) if out else np.zeros((0, llm.shape[1]), dtype=np.float32)


def scores(model: SearchFusion | None, split: SearchSplit) -> dict[str, float]:
    """Dense MRR, groups of 1,000, plain and anonymised (``model`` None: the zero-shot space)."""
    queries = split.query / np.linalg.norm(split.query, axis=1, keepdims=True)
    out = {}
    for name, anonymised in (("mrr", False), ("mrr_anonymised", True)):
        if model is None:
            codes = split.anon if anonymised else split.code
            codes = codes / np.linalg.norm(codes, axis=1, keepdims=True)
        else:
            codes = code_vectors(model, split, anonymised)
        out[name] = round(mrr(queries, codes, GROUP), 4)
    return out


def train_variant(config: SearchFusionConfig, train: SearchSplit, valid: SearchSplit, run: Path,
                  log: Any = print, init: Path | None = None) -> tuple[SearchFusion, dict[str, Any]]:
    """Train one variant; the epoch with the best validation MRR + anonymised MRR is kept
    (early stopping after ``patience`` epochs without a better one).  ``init``: a ``model.pt``
    of the same variant and shape to start from (e.g. the context encoder learnt on the train
    pairs, refitted on validation projects)."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = SearchFusion(config, train.code.shape[1])
    if init is not None:
        model.load_state_dict(torch.load(init, weights_only=True))
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr, weight_decay=config.weight_decay)
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=1) + "\n")
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"epoch": 0, **scores(model, valid)}
    best["score"] = best["mrr"] + best["mrr_anonymised"]
    history.append({"epoch": 0, **best})
    torch.save(model.state_dict(), run / "model.pt")
    queries = torch.from_numpy(train.query / np.linalg.norm(train.query, axis=1, keepdims=True))
    for epoch in range(1, config.epochs + 1):
        model.train()
        started, losses = time.perf_counter(), []
        order = rng.permutation(len(train))
        for start in range(0, len(order) - config.batch_size + 1, config.batch_size):
            rows = order[start:start + config.batch_size]
            anonymous = rng.random(len(rows)) < config.anonymised_share
            llm = np.where(anonymous[:, None], train.anon[rows], train.code[rows])
            plain_ids, plain_pad = context_ids(train.contexts, rows, config.tokens, config.paths)
            anon_ids, anon_pad = context_ids(train.anon_contexts, rows, config.tokens, config.paths)
            width = max(plain_ids.shape[1], anon_ids.shape[1])
            ids = torch.zeros((len(rows), width, 3), dtype=torch.int64)
            pad = torch.ones((len(rows), width), dtype=torch.bool)
            for row, use_anon in enumerate(anonymous):
                source_ids, source_pad = (anon_ids, anon_pad) if use_anon else (plain_ids, plain_pad)
                ids[row, :source_ids.shape[1]] = source_ids[row]
                pad[row, :source_pad.shape[1]] = source_pad[row]
            codes = model(torch.from_numpy(llm), ids, pad)
            logits = config.scale * queries[rows] @ codes.T
            loss = nn.functional.cross_entropy(logits, torch.arange(len(rows)))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
        result: dict[str, Any] = {"epoch": epoch, **scores(model, valid), "loss": round(float(np.mean(losses)), 4),
                  "seconds": round(time.perf_counter() - started, 1)}
        if config.variant == "weighted":
            result["shares"] = [round(float(x), 3) for x in model.shares.detach().softmax(0)]
        result["score"] = result["mrr"] + result["mrr_anonymised"]
        history.append(result)
        log(json.dumps({"variant": config.variant, **result}))
        if result["score"] > best["score"]:
            best = result
            torch.save(model.state_dict(), run / "model.pt")
        elif epoch - best["epoch"] >= config.patience:
            break
    (run / "log.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    model.load_state_dict(torch.load(run / "model.pt", weights_only=True))
    return model, {"best": best, "history": history}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pathfusion.model_export.search_fusion",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--runs", type=Path, default=RUNS)
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--vocab", type=Path, default=Path("models/naming") / VOCAB_FILE,
                        help="context vocabulary (default: the shipped naming head's)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--train-pairs", type=int, default=0, help="at most this many train pairs (0: all cached)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--fit", choices=("train", "valid"), default="train",
                        help="pairs the fusions learn from: the train pairs (which the encoder was fine-tuned on), "
                             "or the validation pairs of some projects with the epoch chosen on the other projects' "
                             "(vectors of code the encoder never trained on)")
    parser.add_argument("--init", type=Path, default=None,
                        help="a runs folder: each variant starts from <init>/<variant>/model.pt (same settings)")
    parser.add_argument("--choose-share", type=float, default=0.3,
                        help="with --fit valid: the share of validation pairs (whole projects) that choose the epoch")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="SearchFusionConfig overrides")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    template = SearchFusionConfig()
    set_fields(template, args.set)  # a bad setting fails here, before anything is loaded
    vocab = ContextVocab.load(args.vocab)
    names = ["train", "valid", "test"] + (["heldout"] if selection_path(args.cache, "heldout", "search").is_file() else [])
    # With --fit valid the train pairs are not used: they are not loaded.
    splits = {split: load_split(args.cache, split, vocab) for split in names if split != "train" or args.fit == "train"}
    if args.fit == "valid":
        valid = splits["valid"]
        projects = [r["project"] for r in read_selection(selection_path(args.cache, "valid", "search"))[:len(valid)]]
        fit, choose = split_by_project(projects, args.choose_share, template.seed)
        splits["train"], splits["valid"] = valid.take(fit), valid.take(choose)
        print(f"fitting on {len(set(projects[i] for i in fit))} validation projects, choosing on "
              f"{len(set(projects[i] for i in choose))}", flush=True)
    elif args.train_pairs:
        splits["train"] = splits["train"].take(np.arange(min(args.train_pairs, len(splits["train"]))))
    print({split: len(data) for split, data in splits.items()}, flush=True)
    result: dict[str, Any] = {"command": "python -m pathfusion.model_export.search_fusion " + " ".join(sys.argv[1:]),
                              "fit": args.fit, "init": None if args.init is None else str(args.init),
                              "pairs": {split: len(data) for split, data in splits.items()},
                              "zero-shot": {split: scores(None, splits[split]) for split in names if split != "train"},
                              "variants": {}}
    for variant in (v for v in args.variants.split(",") if v):
        config = dataclasses.replace(template, variant=variant)
        init = None if args.init is None else args.init / variant / "model.pt"
        model, trained = train_variant(config, splits["train"], splits["valid"], args.runs / variant, init=init)
        for split in names[2:]:  # once, after the choice on validation
            trained[split] = scores(model, splits[split])
        result["variants"][variant] = trained
        print(json.dumps({"variant": variant, "valid": trained["best"], **{s: trained[s] for s in names[2:]}}),
              flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.json, (json.dumps(result, indent=1) + "\n").encode("utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
