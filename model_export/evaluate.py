"""``pathfusion eval naming|search``: score the *exported* models on held-out code.

Why the ONNX model and not the torch one: what ships is what is measured.  Two sources of
examples:

* ``--projects DIR``: any folder with one sub-folder per project.  Files and functions go
  through the corpus rules (``pathfusion.model_export.corpus.skip_reason``; non-dunder functions of at
  least 3 lines) and the serving extractor (``sample(200)``, deterministic) — exactly what
  the editor computes for code the model has never seen.
* ``--corpus data/corpus --split test``: the deduplicated, project-disjoint split.  A
  function stored with more than 200 contexts gets a fixed subset seeded by its position in
  the split (the same subset the training run's evaluation uses).

Search: the docstring/code pairs of the folder, or of the split's records that have one
(first docstring paragraph of ≥ 3 words as the query, the function without its docstring
as the code, ``--anonymise`` for AdvTest-style identifiers), ranked with the variant's
query encoder (or the embedder's query side) and, with ``--ranking hybrid`` (the default), the
index's lexical scores (name bonus, BM25, prior).

Why one module of ~410 lines: naming and search are scored through the same loading of
the exported models and the same corpus readers; the two halves share them.

Metrics are defined in :mod:`pathfusion.model_export.metrics`.  No torch is imported here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pathfusion.server.code2vec import Code2VecModel, Predictor
from pathfusion.server.embedder import Embedder, load_embedder
from pathfusion.server.fusion import FusionRuntime
from pathfusion.server.lexical import bm25_matrix, lexical_bonus, name_prior, query_features
from pathfusion.server.models import ModelError, default_models_dir
from pathfusion.server.name_generator import NameGenerator, has_naming_head
from pathfusion.server.parsing import (
    Document,
    FunctionInfo,
    SourceError,
    decode_source,
    search_text,
)
from pathfusion.server.paths import (
    MAX_CONTEXTS,
    context_space,
    contexts_of_text,
    mask_source,
    name_label,
    split_subtokens,
)

from .anonymise import FUNCTION_NAME, anonymise
from .corpus import docstring_summary, read_jsonl_gz, skip_reason
from .metrics import (
    SEARCH_SEED,
    NamingScores,
    legal_names,
    mrr_of_scores,
    protocol_group,
    protocol_pairs,
    ranks_of_scores,
)

VARIANTS = ("code2vec", "llm", "concat", "weighted", "attention")
NAMING_VARIANTS = ("default", *VARIANTS)
"""``code2vec`` scores naming with the shipped code2vec model (its own softmax head) and
search with the fusion export's ``code2vec`` variant; the others are fusion variants
(``pathfusion export fusion``)."""


@dataclass
class NamingExample:
    label: str
    contexts: list[str]
    masked: str
    """The masked source the LLM sees for naming (docs/design.md §2)."""


@dataclass
class SearchExample:
    query: str
    code: str
    """The function as written, docstring removed, under its class's header (docs/design.md §2)."""
    contexts: list[str]
    name: str = ""
    """The function's name as the server's lexical ranking sees it (``func`` when anonymised)."""
    qualname: str = ""
    written: str = ""
    """The qualified name as written, also when anonymised: for reports (``--ranks``), never
    for ranking."""


def _project_functions(root: Path) -> Iterator[tuple[Document, FunctionInfo]]:
    """Every function of the corpus-eligible files under ``root``'s project folders."""
    if not root.is_dir():
        raise ValueError(f"{root}: not a directory (expected one sub-folder per project)")
    for project in sorted(p for p in root.iterdir() if p.is_dir()):
        yield from project_functions(project)


def project_functions(project: Path) -> Iterator[tuple[Document, FunctionInfo]]:
    """Every function of the corpus-eligible files of one project folder."""
    for dirpath, dirnames, filenames in os.walk(project):
        dirnames.sort()
        for filename in sorted(filenames):
            path = Path(dirpath, filename)
            relative = path.relative_to(project).as_posix()
            if not filename.endswith(".py"):
                continue
            try:
                data = path.read_bytes()
            except OSError:
                continue
            if skip_reason(relative, data[:2048]) is not None:
                continue
            try:
                doc = Document(decode_source(data, origin=str(path)))
            except SourceError:
                continue
            for func in doc.functions():
                yield doc, func


def iter_project_examples(root: Path) -> Iterator[NamingExample]:
    """The naming functions under ``root``'s project folders (corpus rules)."""
    for doc, func in _project_functions(root):
        label = name_label(func.name)
        dunder = func.name.startswith("__") and func.name.endswith("__")
        if not label or dunder or func.line_count < 3:
            continue
        contexts = context_space(func.node, doc.source, func.name).sample(MAX_CONTEXTS)
        yield NamingExample(label, [c.to_text() for c in contexts], mask_source(func.source, func.name))


def search_example(query: str, code: str, name: str, qualname: str, anonymised: bool,
                   with_contexts: bool = True) -> SearchExample:
    """One docstring/code pair, the code as the server's search sees it (its class's header
    over a method: :func:`pathfusion.server.parsing.search_text`); anonymised: identifiers
    renamed in the code (:mod:`pathfusion.model_export.anonymise`), no class header, and the
    name the lexical ranking sees is ``func``.  The path contexts are the function's own."""
    written = qualname
    if anonymised:
        code = anonymise(code)
        name = qualname = FUNCTION_NAME
    contexts = contexts_of_text(code) if with_contexts else []
    return SearchExample(query, code if anonymised else search_text(code, qualname), contexts, name, qualname,
                         written)


def project_pair_sources(root: Path) -> list[tuple[str, str, str, str]]:
    """``(query, code without docstring, name, qualname)`` of every docstring/code pair under
    ``root``'s project folders (corpus rules), in file order."""
    sources: list[tuple[str, str, str, str]] = []
    for _, func in _project_functions(root):
        query = docstring_summary(func.docstring)
        if query is not None:
            sources.append((query, func.source_without_docstring, func.name, func.qualname))
    return sources


def iter_project_pairs(root: Path, anonymised: bool = False, with_contexts: bool = True) -> list[SearchExample]:
    """Docstring/code pairs under ``root`` (corpus rules), optionally anonymised;
    ``with_contexts=False`` as in :func:`iter_split_pairs`."""
    return [search_example(query, code, name, qualname, anonymised, with_contexts)
            for query, code, name, qualname in project_pair_sources(root)]


def iter_split_pairs(corpus: Path, split: str, anonymised: bool = False,
                     with_contexts: bool = True) -> list[SearchExample]:
    """The docstring/code pairs of a corpus split (records with ``search``), in file order;
    :func:`evaluate_search` shuffles them with the protocol's seed.  ``with_contexts=False``
    leaves out the path contexts (only the fusion variants read them)."""
    path = corpus / f"{split}.jsonl.gz"
    if not path.is_file():
        raise ValueError(f"{path} not found; build the corpus first (make corpus)")
    pairs: list[SearchExample] = []
    for record in read_jsonl_gz(path):
        if not record.get("search") or not record.get("docstring_summary"):
            continue
        pairs.append(search_example(record["docstring_summary"], record["code_without_docstring"],
                                    record["name"], record["qualname"], anonymised, with_contexts))
    return pairs


def iter_split_examples(corpus: Path, split: str) -> Iterator[NamingExample]:
    path = corpus / f"{split}.jsonl.gz"
    if not path.exists():
        raise ValueError(f"{path} not found; run `make corpus` first")
    index = 0
    for record in read_jsonl_gz(path):
        if not record["naming"]:
            continue
        contexts = record["contexts"]
        if len(contexts) > MAX_CONTEXTS:
            chosen = np.sort(np.random.default_rng(index).choice(len(contexts), MAX_CONTEXTS, replace=False))
            contexts = [contexts[i] for i in chosen]
        index += 1
        yield NamingExample(record["label"], contexts, record["masked_code"])


def evaluate_naming(
    examples: Iterable[NamingExample], model: Predictor, known: Iterable[str], limit: int | None = None,
    with_predictions: bool = False,
) -> dict[str, Any]:
    """Naming metrics of ``model`` (code2vec or a fusion predictor) on ``examples``;
    ``with_predictions``: also ``predictions``, one row per function (its name and the first
    five names the model ranks, as scored)."""
    scores = NamingScores()
    rows: list[dict[str, Any]] = []
    in_vocab, out_of_vocab = NamingScores(), NamingScores()
    vocabulary = set(known)
    batch: list[NamingExample] = []
    seconds = 0.0

    def flush() -> None:
        nonlocal seconds
        started = time.perf_counter()
        predictions = model.predict([e.contexts for e in batch], top_k=10, sources=[e.masked for e in batch])
        seconds += time.perf_counter() - started
        for example, ranked in zip(batch, predictions, strict=True):
            candidates = [label for label, _ in ranked]
            scores.add(example.label, candidates)
            if with_predictions:
                rows.append({"gold": example.label,
                             "predicted": legal_names(candidates)[:5]})
            (in_vocab if example.label in vocabulary else out_of_vocab).add(example.label, candidates)
        batch.clear()

    for count, example in enumerate(examples):
        if limit is not None and count >= limit:
            break
        batch.append(example)
        if len(batch) == 256:
            flush()
    if batch:
        flush()
    result: dict[str, Any] = dict(scores.result())
    result["model_ms_per_function"] = round(seconds / max(1, scores.examples) * 1000, 3)
    # Why the split: a whole-name classifier can only be exactly right on gold names in its
    # target vocabulary; the rest earn partial subtoken credit at best.
    result["gold_in_vocabulary"] = {"share": round(in_vocab.examples / max(1, scores.examples), 4),
                                    **in_vocab.result()}
    result["gold_out_of_vocabulary"] = out_of_vocab.result()
    result["samples"] = [{"gold": g, "predicted": p} for g, p in scores.samples[:10]]
    if with_predictions:
        result["predictions"] = rows
    return result


RANKINGS = ("hybrid", "dense")
"""``hybrid``: vector cosine + the lexical bonus of the function's name + its BM25 bonus
over the group's functions + the private-helper prior, exactly the score ``pathfusion.search``
ranks by (:func:`pathfusion.server.lexical.lexical_bonus`, :func:`pathfusion.server.lexical.bm25_matrix`,
:func:`pathfusion.server.lexical.name_prior`); ``dense``: cosine only."""
SEARCH_VARIANTS = ("default", "embedder", *VARIANTS)
"""``default``: the search space the server builds from the models folder
(:func:`pathfusion.server.index.search_model_from_settings`); ``embedder``: the LLM embedding alone."""


@dataclass
class SearchSpace:
    """Code and query vectors of one search space (unit rows), for docstring-free code."""

    name: str
    runtime: FusionRuntime | None
    embedder: Embedder

    def codes(self, pairs: Sequence[SearchExample]) -> np.ndarray:
        llm = _unit(self.embedder.embed([p.code for p in pairs]))
        if self.runtime is None:
            return llm
        return self.runtime.search_vectors(llm, self.runtime.code2vec.code_vectors([p.contexts for p in pairs]))

    def queries(self, texts: Sequence[str]) -> np.ndarray:
        if self.runtime is None:
            return _unit(self.embedder.embed(list(texts)))
        return self.runtime.query_vectors(list(texts))


def _unit(vectors: Any) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def lexical_matrix(queries: Sequence[str], pairs: Sequence[SearchExample]) -> np.ndarray:
    """``[len(queries), len(pairs)]`` lexical bonuses, computed as the server computes them."""
    names = [(p.name, p.qualname, split_subtokens(p.name)) for p in pairs]
    out = np.zeros((len(queries), len(pairs)), dtype=np.float64)
    for row, query in enumerate(queries):
        query = query.strip()
        exact_form, tokens = query_features(query)
        if not exact_form and not tokens:
            continue
        for column, (name, qualname, name_tokens) in enumerate(names):
            out[row, column] = lexical_bonus(query, exact_form, tokens, name, qualname, name_tokens)
    return out


def hybrid_terms(pairs: Sequence[SearchExample], dense: np.ndarray) -> np.ndarray:
    """``[len(pairs), len(pairs)]``: what the served ranking adds to the cosines ``dense`` of
    the pairs' queries (rows) against their codes (columns) — the name's lexical bonus, BM25
    over the query's nearest functions and the name's prior, as ``pathfusion.search`` adds them."""
    texts = [p.query for p in pairs]
    priors = np.asarray([name_prior(p.name) for p in pairs], dtype=np.float64)
    bm25 = bm25_matrix(texts, [p.name for p in pairs], [p.code for p in pairs], dense)
    return lexical_matrix(texts, pairs) + bm25 + priors[None, :]


def evaluate_search(pairs: Sequence[SearchExample], space: SearchSpace, limit: int | None = None,
                    seed: int = SEARCH_SEED, ranking: str | Sequence[str] = "hybrid",
                    with_ranks: bool = False) -> dict[str, Any]:
    """MRR of ``space`` under the CodeSearchNet protocol: pairs shuffled with ``seed``, cut
    into groups of 1,000 (one group of all pairs when there are fewer — then the task is
    easier, and the result says so with ``group``), ranked by ``ranking``.  Several rankings
    share one embedding pass: ``mrr`` is the first's, ``by_ranking`` holds each.
    ``with_ranks``: also ``ranks``, one row per scored pair under the first ranking (its
    query, function, rank and the function ranked first for it)."""
    rankings = [ranking] if isinstance(ranking, str) else list(ranking)
    if not rankings or any(r not in RANKINGS for r in rankings):
        raise ValueError(f"ranking must be one of {', '.join(RANKINGS)}, not {ranking!r}")
    chosen = protocol_pairs(pairs, limit, seed=seed)
    if not chosen:
        raise ValueError("no docstring/code pairs found (functions whose docstring's first paragraph has ≥ 3 words)")
    group = protocol_group(len(chosen))
    started = time.perf_counter()
    codes = space.codes(chosen)
    seconds = time.perf_counter() - started
    queries = space.queries([p.query for p in chosen])

    def scorer(name: str) -> Any:
        def scores(start: int) -> np.ndarray:
            block = slice(start, start + group)
            dense = queries[block].astype(np.float64) @ codes[block].astype(np.float64).T
            if name == "dense":
                return dense
            return dense + hybrid_terms(chosen[block], dense)
        return scores

    # The first ranking's ranks are listed only when asked; its MRR is then their mean, so that
    # no ranking is scored twice (the hybrid one computes BM25 for every query).
    listed = ranks_of_scores(scorer(rankings[0]), len(chosen), group) if with_ranks else None
    by_ranking = {}
    for name in rankings:
        if listed is not None and name == rankings[0]:
            by_ranking[name] = round(float((1.0 / listed[0]).mean()), 4)
        else:
            by_ranking[name] = round(mrr_of_scores(scorer(name), len(chosen), group), 4)
    result = {"mrr": by_ranking[rankings[0]], "pairs": len(chosen), "groups": len(chosen) // group,
              "group": group, "ranking": rankings[0], "by_ranking": by_ranking, "space": space.name,
              "model_ms_per_function": round(seconds / len(chosen) * 1000, 3)}
    if listed is not None:
        ranks, firsts = listed
        result["ranks"] = [{"query": chosen[i].query, "qualname": chosen[i].written or chosen[i].qualname,
                            "rank": int(rank), "first": chosen[int(first)].written or chosen[int(first)].qualname}
                           for i, (rank, first) in enumerate(zip(ranks, firsts, strict=True))]
    return result


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """``rows`` as JSON lines, written whole or not at all (a temporary file renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text("".join(json.dumps(row) + "\n" for row in rows))
    partial.replace(path)


def load_search_space(variant: str, models: Path | None, device: str, graph: str = "default") -> SearchSpace:
    """The search space ``variant`` names (:data:`SEARCH_VARIANTS`); ``graph`` picks the
    embedder's ``int8`` or ``fp32`` graph (``default``: as the server does)."""
    from types import SimpleNamespace

    from pathfusion.server.index import search_model_from_settings

    quantized = None if graph == "default" else graph == "int8"
    embedder = load_embedder("onnx", models, device=device, quantized=quantized)
    if variant == "embedder":
        return SearchSpace("embedder", None, embedder)
    if variant == "default":
        settings = SimpleNamespace(models_dir=models, device=device, fusion_variant="default")
        served = search_model_from_settings(settings, embedder)
        runtime = served if isinstance(served, FusionRuntime) else None
        return SearchSpace(f"default ({served.model_id})", runtime, embedder)
    return SearchSpace(variant, load_runtime(variant, models, device), embedder)


def load_predictor(variant: str, models: Path | None, device: str) -> tuple[Predictor, list[str]]:
    """The naming model of ``variant`` and the names a closed vocabulary could produce
    (code2vec's targets, when the folder has code2vec: the in/out-of-vocabulary split of the
    results is against them for every model, so that the rows compare).  ``default`` is what
    the server serves: the generative naming head when the folder has one, else code2vec."""
    folder = Path(models) if models is not None else default_models_dir()
    if variant == "default" and not has_naming_head(folder):
        variant = "code2vec"
    if variant == "code2vec":
        code2vec = Code2VecModel.load(folder, device=device, threads=os.cpu_count() or 1)
        return code2vec, code2vec.targets
    if not has_naming_head(folder):
        raise ValueError(f"{folder} has no naming head; export one (pathfusion export naming) or pass --models")
    embedder = load_embedder("onnx", folder, device=device)
    generator = NameGenerator.load(folder, embedder, device, threads=os.cpu_count() or 1)
    held = generator.info["reads"]
    if variant != "default" and variant != held:
        raise ValueError(f"{folder} holds the {held!r} naming head, not {variant!r}: export that variant's run "
                         "into a models folder (pathfusion export naming --run-best RUN/best --out DIR) "
                         "and pass --models DIR")
    targets_file = folder / "code2vec" / "targets.json"
    targets = Code2VecModel.load(folder, device=device).targets if targets_file.is_file() else []
    return generator, targets


def load_runtime(variant: str, models: Path | None, device: str,
                 code2vec: Code2VecModel | None = None) -> FusionRuntime:
    code2vec = code2vec or Code2VecModel.load(models, device=device, threads=os.cpu_count() or 1)
    embedder = load_embedder("onnx", models, device=device)
    return FusionRuntime.load(embedder, code2vec, models, variant, device, threads=os.cpu_count() or 1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pathfusion eval", description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=("naming", "search"))
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--projects", type=Path, help="folder with one sub-folder per project")
    source.add_argument("--corpus", type=Path, help="corpus folder (with --split)")
    parser.add_argument("--split", default="test", choices=("train", "valid", "test"))
    parser.add_argument("--variant", default=None, choices=SEARCH_VARIANTS,
                        help="naming: default (what the server serves), code2vec (the closed-vocabulary "
                             "baseline) or the generative head's variant (llm, concat, weighted, attention: "
                             "the --models folder must hold a head of that variant); search: default (what "
                             "the server serves), embedder (the LLM alone) or a fusion projection")
    parser.add_argument("--ranking", default=["hybrid"], choices=RANKINGS, nargs="+",
                        help="search: hybrid (as pathfusion.search ranks; default) and/or dense (cosine "
                             "only); several share one embedding pass, mrr is the first's")
    parser.add_argument("--anonymise", action="store_true", help="search: anonymise identifiers in the code")
    parser.add_argument("--ranks", type=Path, default=None,
                        help="search: write one JSON line per scored pair (query, qualname, rank under the "
                             "first --ranking, the function ranked first) to this file")
    parser.add_argument("--predictions", type=Path, default=None,
                        help="naming: write one JSON line per function (gold name, the model's first five "
                             "names) to this file")
    parser.add_argument("--embedder-graph", default="default", choices=("default", "int8", "fp32"),
                        help="search: the embedder graph to use (default: as the server picks; fp32 "
                             "needs an export that kept it)")
    parser.add_argument("--models", type=Path, default=None)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.task == "naming" and args.ranks is not None:
            raise ValueError("--ranks lists search ranks: for naming, --predictions FILE lists each function's names")
        if args.task == "search" and args.predictions is not None:
            raise ValueError("--predictions lists naming predictions: for search, --ranks FILE lists each pair's rank")
        if args.task == "naming":
            variant = args.variant or "default"
            if variant not in NAMING_VARIANTS:
                raise ValueError(f"naming has no variant {variant!r}; choose one of {', '.join(NAMING_VARIANTS)}")
            model, targets = load_predictor(variant, args.models, args.device)
            examples = (iter_project_examples(args.projects) if args.projects
                        else iter_split_examples(args.corpus, args.split))
            result = evaluate_naming(examples, model, targets, args.limit,
                                     with_predictions=args.predictions is not None)
            if args.predictions is not None:
                write_jsonl(args.predictions, result.pop("predictions"))
        else:
            space = load_search_space(args.variant or "default", args.models, args.device, args.embedder_graph)
            pairs = (iter_project_pairs(args.projects, args.anonymise, with_contexts=space.runtime is not None)
                     if args.projects else
                     iter_split_pairs(args.corpus, args.split, args.anonymise, with_contexts=space.runtime is not None))
            result = evaluate_search(pairs, space, args.limit, ranking=args.ranking, with_ranks=args.ranks is not None)
            result["anonymised"] = args.anonymise
            if args.ranks is not None:
                write_jsonl(args.ranks, result.pop("ranks"))
    except (ModelError, ValueError) as exc:
        print(f"pathfusion eval: error: {exc}", file=sys.stderr)
        return 1
    if args.task == "naming" and isinstance(model, NameGenerator):
        result["naming_head"] = model.info
    result = {"task": args.task, "variant": args.variant or "default",
              "source": str(args.projects) if args.projects else f"{args.corpus}:{args.split}", **result}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for key, value in result.items():
            if key != "samples":
                print(f"{key:>24}: {value}")
        for sample in result.get("samples", []):
            print(f"    gold {sample['gold']:<30} predicted {sample['predicted']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
