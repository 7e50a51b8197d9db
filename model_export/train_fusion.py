"""Train and compare the fusion variants on the cached embeddings (docs/design.md §4–5).

``python -m pathfusion.model_export.train_fusion`` runs the whole comparison, resumably:

1. **Query encoder selection** — on the ``concat`` variant, every query encoder of
   :data:`QUERY_GRID` (CodeSearchNet's NBoW / 1D-CNN / biRNN / self-attention with a pooling,
   plus ``llm``: a linear map of the LLM embedding of the query) is trained with the in-batch
   softmax of paper eq. 2; the best **validation** MRR picks the encoder.
2. **Every variant** (``code2vec``, ``llm``, ``concat``, ``weighted``, ``attention``) gets a
   naming head (early stopping on validation F1) and a search projection trained with the
   chosen query encoder (early stopping on validation MRR).
3. **Test** (once, never used for a choice): naming P/R/F1 (both definitions), exact match
   and top-5 on the test naming sample; search MRR under the CodeSearchNet protocol (groups
   of 1,000 consecutive pairs of the seeded shuffle) on the code as written and on the
   anonymised code; plus the zero-shot LLM (cosine of the raw query and code embeddings).

Inputs are :mod:`pathfusion.model_export.embed_corpus`'s cache: ``l`` (LLM, masked code for naming,
code as written for search), ``c`` (code2vec code vector of the frozen shipped model), the
query's LLM embedding and tokens.  Gold names outside the shipped target vocabulary are
left out of the training loss (they cannot be predicted) but stay in every evaluation.

Outputs: ``data/runs/fusion/<variant>/`` (``model.pt``, ``query.pt``, ``config.json``,
``log.jsonl``, ``test.json``), ``data/runs/fusion/query_selection.json`` and
``data/results/fusion.json`` (the table of ``docs/results.md``).

Why one module of ~460 lines: the fusions are compared on the same cached inputs, schedules
and selection rules; training, selection on validation and the single test scoring are kept
together so that no variant is treated differently.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pathfusion.server.atomic import write_atomic
from pathfusion.server.query import QueryVocab

from .embed_corpus import GROUP, load_field, read_selection, selection_path
from .fusion import VARIANTS, FusionConfig, FusionModel
from .metrics import NamingScores, mrr
from .query_encoder import QueryEncoder, QueryEncoderConfig, build_vocab

EMBEDDINGS = Path("data/embeddings")
RUNS = Path("data/runs/fusion")
RESULTS = Path("data/results/fusion.json")
QUERY_GRID: tuple[tuple[str, str], ...] = (
    ("nbow", "mean"), ("nbow", "attention"), ("cnn", "max"), ("birnn", "attention"),
    ("selfatt", "attention"), ("selfatt", "mean"), ("llm", "linear"),
)
SEED = 7


@dataclass
class TrainConfig:
    """Optimisation settings shared by every run (saved in each run's config.json)."""

    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-5
    naming_epochs: int = 30
    search_epochs: int = 15
    patience: int = 3
    temperature: float = 20.0
    """Fixed logit scale of the in-batch softmax (cosines are in [-1, 1])."""
    seed: int = SEED


# -- data ------------------------------------------------------------------------------------


@dataclass
class NamingData:
    llm: torch.Tensor
    code: torch.Tensor
    labels: list[str]
    targets: torch.Tensor
    """Target id per example; -1 when the gold name is outside the vocabulary."""


@dataclass
class SearchData:
    llm: torch.Tensor
    code: torch.Tensor
    query_llm: torch.Tensor
    queries: list[str]
    anon_llm: torch.Tensor | None = None
    anon_code: torch.Tensor | None = None


def _rows(out: Path, split: str, task: str) -> list[dict[str, Any]]:
    return read_selection(selection_path(out, split, task))


def load_naming(out: Path, split: str, target_ids: dict[str, int]) -> NamingData:
    """The naming sample of ``split`` as far as its LLM chunks exist."""
    rows = _rows(out, split, "naming")
    llm = load_field(out, split, "naming", "code")
    n = len(llm)
    code = np.load(out / f"{split}-naming-c2v.npy")[:n]
    labels = [r["label"] for r in rows[:n]]
    targets = torch.tensor([target_ids.get(label, -1) for label in labels], dtype=torch.long)
    return NamingData(torch.from_numpy(llm), torch.from_numpy(code), labels, targets)


def load_search(out: Path, split: str) -> SearchData:
    """The search pairs of ``split`` as far as both their code and query chunks exist."""
    rows = _rows(out, split, "search")
    llm = load_field(out, split, "search", "code")
    query = load_field(out, split, "search", "query")
    n = min(len(llm), len(query))
    if split == "test":
        n = (n // GROUP) * GROUP
    code = np.load(out / f"{split}-search-c2v.npy")[:n]
    data = SearchData(torch.from_numpy(llm[:n]), torch.from_numpy(code), torch.from_numpy(query[:n]),
                      [r["query"] or "" for r in rows[:n]])
    if split == "test":
        anon = load_field(out, split, "search", "anon")
        if len(anon) >= n:
            data.anon_llm = torch.from_numpy(anon[:n])
            data.anon_code = torch.from_numpy(np.load(out / f"{split}-search-c2v-anon.npy")[:n])
    return data


# -- query side ------------------------------------------------------------------------------


class LlmQuery(nn.Module):
    """The ``llm`` query encoder: a linear map of the query's LLM embedding into the search
    space (the embedding itself comes from the shipped embedder, like the code's)."""

    def __init__(self, llm_dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(llm_dim, out_dim)

    def forward(self, query_llm: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.linear(query_llm), dim=-1)


class QuerySide(nn.Module):
    """One interface over the two kinds of query encoder: ``(texts' ids+mask, query LLM
    embeddings) → vectors``."""

    def __init__(self, kind: str, pooling: str, vocab: QueryVocab | None, out_dim: int, llm_dim: int = 384) -> None:
        super().__init__()
        self.kind, self.pooling, self.vocab = kind, pooling, vocab
        self.config: QueryEncoderConfig | None = None
        self.encoder: nn.Module
        if kind == "llm":
            self.encoder = LlmQuery(llm_dim, out_dim)
        else:
            assert vocab is not None
            self.config = QueryEncoderConfig(kind=kind, pooling=pooling, vocab_size=len(vocab.tokens), out_dim=out_dim)
            self.encoder = QueryEncoder(self.config)

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.pooling}"

    def forward(self, texts: Sequence[str], query_llm: torch.Tensor) -> torch.Tensor:
        if self.kind == "llm":
            return self.encoder(query_llm)
        assert self.vocab is not None
        ids, mask = self.vocab.encode(texts)
        return self.encoder(torch.from_numpy(ids), torch.from_numpy(mask))


# -- metrics ---------------------------------------------------------------------------------


def naming_scores(logits: torch.Tensor, labels: Sequence[str], targets: Sequence[str]) -> dict[str, Any]:
    """code2vec/code2seq metrics of ``logits`` (see :mod:`pathfusion.model_export.metrics`)."""
    scores = NamingScores()
    top = torch.topk(logits, min(10, logits.shape[-1]), dim=-1).indices.tolist()
    for gold, ids in zip(labels, top, strict=True):
        scores.add(gold, [targets[i] for i in ids])
    return scores.result()


# -- training --------------------------------------------------------------------------------


def _batches(n: int, size: int, rng: random.Random) -> list[list[int]]:
    order = list(range(n))
    rng.shuffle(order)
    return [order[i:i + size] for i in range(0, n, size)]


def _log(path: Path, entry: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")
    print(json.dumps(entry), flush=True)


def train_naming(model: FusionModel, train: NamingData, valid: NamingData, targets: list[str],
                 cfg: TrainConfig, log: Path) -> dict[str, Any]:
    """Fit the naming fusion + head; keep the state with the best validation F1."""
    params = [*model.naming_fusion.parameters(), *model.naming_head.parameters()]
    optimiser = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    keep = torch.nonzero(train.targets >= 0).squeeze(1)
    rng = random.Random(cfg.seed)
    best: dict[str, Any] = {"f1": -1.0}
    best_state = None
    stale = 0
    for epoch in range(1, cfg.naming_epochs + 1):
        model.train()
        started, losses = time.time(), []
        for batch in _batches(len(keep), cfg.batch_size, rng):
            idx = keep[batch]
            logits = model.naming_logits(train.llm[idx], train.code[idx])
            loss = nn.functional.cross_entropy(logits, train.targets[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            result = naming_scores(model.naming_logits(valid.llm, valid.code), valid.labels, targets)
        _log(log, {"task": "naming", "epoch": epoch, "loss": float(np.mean(losses)), "valid_f1": result["f1"],
                   "seconds": round(time.time() - started, 1)})
        if result["f1"] > best["f1"]:
            best, stale = {**result, "epoch": epoch}, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return best


def train_search(model: FusionModel, query: QuerySide, train: SearchData, valid: SearchData,
                 cfg: TrainConfig, log: Path) -> dict[str, Any]:
    """Fit the search fusion + projection and the query encoder with the in-batch softmax
    (paper eq. 2); keep the state with the best validation MRR."""
    params = [*model.search_fusion.parameters(), *model.search_head.parameters(), *query.parameters()]
    optimiser = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = random.Random(cfg.seed)
    best: dict[str, Any] = {"mrr": -1.0}
    best_state: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]] | None = None
    stale = 0
    n = len(train.llm)
    for epoch in range(1, cfg.search_epochs + 1):
        model.train()
        query.train()
        started, losses = time.time(), []
        for batch in _batches(n, cfg.batch_size, rng):
            if len(batch) < 2:
                continue
            idx = torch.tensor(batch)
            codes = model.search_vector(train.llm[idx], train.code[idx])
            queries = query([train.queries[i] for i in batch], train.query_llm[idx])
            logits = cfg.temperature * queries @ codes.T
            loss = nn.functional.cross_entropy(logits, torch.arange(len(batch)))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        valid_mrr = evaluate_search(model, query, valid.llm, valid.code, valid)
        _log(log, {"task": "search", "query": query.name, "epoch": epoch, "loss": float(np.mean(losses)),
                   "valid_mrr": valid_mrr, "seconds": round(time.time() - started, 1)})
        if valid_mrr > best["mrr"]:
            best, stale = {"mrr": valid_mrr, "epoch": epoch}, 0
            best_state = ({k: v.detach().clone() for k, v in model.state_dict().items()},
                          {k: v.detach().clone() for k, v in query.state_dict().items()})
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state[0])
        query.load_state_dict(best_state[1])
    return best


def _encode_in_chunks(fn: Callable[[slice], torch.Tensor], n: int, size: int = 2048) -> torch.Tensor:
    return torch.cat([fn(slice(i, i + size)) for i in range(0, n, size)]) if n else torch.zeros(0)


def evaluate_search(model: FusionModel, query: QuerySide, llm: torch.Tensor, code: torch.Tensor,
                    data: SearchData) -> float:
    model.eval()
    query.eval()
    with torch.no_grad():
        codes = _encode_in_chunks(lambda s: model.search_vector(llm[s], code[s]), len(llm))
        queries = _encode_in_chunks(lambda s: query(data.queries[s], data.query_llm[s]), len(llm))
    return mrr(queries.numpy(), codes.numpy())


# -- the comparison --------------------------------------------------------------------------


@dataclass
class Datasets:
    naming: dict[str, NamingData]
    search: dict[str, SearchData]
    targets: list[str]
    vocab: QueryVocab


def load_datasets(out: Path, models: Path) -> Datasets:
    targets = json.loads((models / "code2vec" / "targets.json").read_text(encoding="utf-8"))
    target_ids = {label: i for i, label in enumerate(targets) if i > 1}
    naming = {split: load_naming(out, split, target_ids) for split in ("train", "valid", "test")}
    search = {split: load_search(out, split) for split in ("train", "valid", "test")}
    vocab = build_vocab(search["train"].queries)
    return Datasets(naming, search, targets, vocab)


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def new_query_side(kind: str, pooling: str, data: Datasets, search_dim: int) -> QuerySide:
    return QuerySide(kind, pooling, None if kind == "llm" else data.vocab, search_dim)


def select_query_encoder(data: Datasets, cfg: TrainConfig, runs: Path,
                         grid: Sequence[tuple[str, str]] = QUERY_GRID) -> dict[str, Any]:
    """Validation MRR of every query encoder of ``grid`` on the concat variant."""
    path = runs / "query_selection.json"
    done: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    for kind, pooling in grid:
        name = f"{kind}-{pooling}"
        if name in done["runs"]:
            continue
        _seed(cfg.seed)
        model = FusionModel(FusionConfig("concat", targets=len(data.targets)))
        query = new_query_side(kind, pooling, data, model.config.search_dim)
        started = time.time()
        best = train_search(model, query, data.search["train"], data.search["valid"], cfg, runs / "query_selection.log")
        done["runs"][name] = {**best, "seconds": round(time.time() - started, 1)}
        write_atomic(path, json.dumps(done, indent=1).encode())
    names = [f"{kind}-{pooling}" for kind, pooling in grid]
    done["best"] = max(names, key=lambda k: done["runs"][k]["mrr"])
    write_atomic(path, json.dumps(done, indent=1).encode())
    return done


def test_variant(model: FusionModel, query: QuerySide, data: Datasets) -> dict[str, Any]:
    """Every test metric of one trained variant."""
    model.eval()
    test_naming, test_search = data.naming["test"], data.search["test"]
    with torch.no_grad():
        naming = naming_scores(model.naming_logits(test_naming.llm, test_naming.code), test_naming.labels,
                               data.targets)
    result: dict[str, Any] = {"naming": naming, "search_examples": len(test_search.llm)}
    result["mrr"] = evaluate_search(model, query, test_search.llm, test_search.code, test_search)
    if test_search.anon_llm is not None and test_search.anon_code is not None:
        result["mrr_anonymised"] = evaluate_search(model, query, test_search.anon_llm, test_search.anon_code,
                                                   test_search)
    return result


def run_variant(variant: str, query_choice: tuple[str, str], data: Datasets, cfg: TrainConfig,
                runs: Path) -> dict[str, Any]:
    folder = runs / variant
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "test.json").exists():
        return json.loads((folder / "test.json").read_text())
    _seed(cfg.seed)
    model = FusionModel(FusionConfig(variant, targets=len(data.targets)))
    query = new_query_side(*query_choice, data, model.config.search_dim)
    log = folder / "log.jsonl"
    log.unlink(missing_ok=True)
    started = time.time()
    naming_best = train_naming(model, data.naming["train"], data.naming["valid"], data.targets, cfg, log)
    search_best = train_search(model, query, data.search["train"], data.search["valid"], cfg, log)
    seconds = time.time() - started
    torch.save(model.state_dict(), folder / "model.pt")
    torch.save(query.state_dict(), folder / "query.pt")
    if query.vocab is not None:
        query.vocab.save(folder / "query_vocab.json")
    config = {"fusion": model.config.to_dict(), "train": cfg.__dict__, "query": {
        "kind": query.kind, "pooling": query.pooling,
        "config": query.config.to_dict() if query.config is not None else None}}
    write_atomic(folder / "config.json", json.dumps(config, indent=1).encode())
    result = {"variant": variant, "valid": {"naming": naming_best, "search": search_best},
              "test": test_variant(model, query, data), "train_seconds": round(seconds, 1),
              "train_examples": {"naming": int((data.naming["train"].targets >= 0).sum()),
                                 "naming_all": len(data.naming["train"].labels),
                                 "search": len(data.search["train"].llm)}}
    if variant == "weighted":
        result["weights"] = {"naming": model.naming_fusion.weights().tolist(),
                             "search": model.search_fusion.weights().tolist()}
    write_atomic(folder / "test.json", json.dumps(result, indent=1).encode())
    return result


def zero_shot_llm(data: Datasets) -> dict[str, Any]:
    """Search with the raw LLM embeddings (no training): cosine of query and code."""
    test = data.search["test"]
    result = {"mrr": mrr(test.query_llm.numpy(), test.llm.numpy())}
    if test.anon_llm is not None:
        result["mrr_anonymised"] = mrr(test.query_llm.numpy(), test.anon_llm.numpy())
    result["valid_mrr"] = mrr(data.search["valid"].query_llm.numpy(), data.search["valid"].llm.numpy())
    return result


def shipped_code2vec(out: Path, models: Path) -> dict[str, Any]:
    """The shipped code2vec model with its own softmax head (trained on all 373k train
    functions) on the same test naming sample — the single-source naming baseline."""
    from pathfusion.server.code2vec import Code2VecModel

    model = Code2VecModel.load(models, threads=1)
    rows = _rows(out, "test", "naming")
    scores = NamingScores()
    predictions = model.predict([r["contexts"] for r in rows], top_k=10)
    for row, ranked in zip(rows, predictions, strict=True):
        scores.add(row["label"], [label for label, _ in ranked])
    return scores.result()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pathfusion.model_export.train_fusion", description=__doc__.split("\n")[0])
    parser.add_argument("--embeddings", type=Path, default=EMBEDDINGS)
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--runs", type=Path, default=RUNS)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--query-grid", default=",".join(f"{k}-{p}" for k, p in QUERY_GRID),
                        help="comma-separated kind-pooling query encoders to select from")
    parser.add_argument("--naming-epochs", type=int, default=TrainConfig.naming_epochs)
    parser.add_argument("--search-epochs", type=int, default=TrainConfig.search_epochs)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TrainConfig(naming_epochs=args.naming_epochs, search_epochs=args.search_epochs)
    grid = tuple(tuple(item.split("-", 1)) for item in args.query_grid.split(",") if item)
    args.runs.mkdir(parents=True, exist_ok=True)
    data = load_datasets(args.embeddings, args.models)
    sizes = {f"{task}-{split}": len(d.llm) for task, group in (("naming", data.naming), ("search", data.search))
             for split, d in group.items()}
    print("examples:", sizes, flush=True)
    selection = select_query_encoder(data, cfg, args.runs, grid)
    choice = tuple(selection["best"].split("-", 1))
    print(f"query encoder: {selection['best']}", flush=True)
    rows = {variant: run_variant(variant, (choice[0], choice[1]), data, cfg, args.runs) for variant in args.variants}
    summary = {"examples": sizes, "query_selection": selection, "variants": rows, "llm_zero_shot": zero_shot_llm(data),
               "code2vec_shipped": shipped_code2vec(args.embeddings, args.models), "train_config": cfg.__dict__}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.results, json.dumps(summary, indent=1).encode())
    print(f"results → {args.results}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
