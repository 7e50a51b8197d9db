"""``pathfusion train naming``: the embedder fine-tuned end to end with a generative naming head.

Why end to end: a decoder over the *frozen* pooled MiniLM vector reached F1 0.096 on unseen
projects, the same decoder with MiniLM fine-tuned under it 0.18 (issue 11).  The decoder
(:mod:`pathfusion.model_export.name_decoder`) reads the embedder's token states of the masked function
and writes the name wordpiece by wordpiece, copying from the source where it helps.

One encoder serves search and naming (the size budget has room for one): with
``search_weight > 0`` each step adds the contrastive search loss of
:mod:`pathfusion.model_export.train_embedder` on a batch of search pairs, so that fine-tuning for names
keeps (or improves) what search learned; validation reports naming F1 (greedy, code2vec
subtoken metric) and search MRR, and ``select_on`` says which picks ``best/``.

Why one module of ~500 lines: the loop of one run — resuming, the (data-parallel) step,
validation, checkpoints, stopping — reads as one; the model and its losses are in
:mod:`pathfusion.model_export.naming_model`, the memory the decoder reads (token states, path
contexts or a fusion) in :mod:`pathfusion.model_export.fusion_memory`, the contexts' ids in
:mod:`pathfusion.model_export.context_pack`, the process group in
:mod:`pathfusion.model_export.distributed`.

Built to be interrupted like the embedder's run: ``data/runs/naming`` holds ``config.json``,
``checkpoint.pt`` (every ``checkpoint_minutes``; model, optimiser, scheduler, positions, RNG),
``best/`` (the encoder as a Hugging Face folder, ``decoder.pt`` and ``decoder.json``) and
``log.jsonl``; the same command resumes.  The same command runs on a GPU (``device=cuda``,
bf16 autocast): one code path.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pathfusion.server.context_vocab import VOCAB_FILE, ContextVocab

from .code2vec import resolve_device
from .context_pack import ensure_context_pack, ensure_vocab
from .distributed import Distributed
from .export_embedder import MeanPooledEncoder, load_reference
from .fusion_memory import FUSION_META, FusedMemory, FusionShape
from .head_from_export import build as build_head
from .name_decoder import DecoderShape, NameDecoder
from .naming_model import (
    DECODER_FILE,
    DECODER_META,
    NamingModel,
    batch_tensors,
    context_tensors,
    load_decoder,
    load_fusion,
    naming_scores,
    save_decoder,
    save_fusion,
)
from .naming_pack import (
    NameTokens,
    NamingExamples,
    NamingPackSpec,
    ensure_pack,
    naming_records,
    seeded_choice,
)
from .run_files import (
    RunControls,
    atomic_torch_save,
    bf16_autocast,
    check_ranges,
    enable_checkpointing,
    log_event,
    optimise,
    out_of_time,
    resumed_config,
    running_mean,
    set_fields,
)
from .search_pairs import (
    PackSpec,
    Pairs,
    ensure_packs,
    load_tokenizer,
    project_batches,
    tokenizer_sha256,
)
from .train_embedder import (
    DEFAULT_CORPUS,
    DEFAULT_MODELS,
    DEFAULT_PACK,
    batch_loss,
    evaluate,
    lr_lambda,
    resolve_base,
    save_best,
)

DEFAULT_RUN = Path("data/runs/naming")
DEFAULT_NAMING_PACK = Path("data/naming-pairs")
__all__ = ["DECODER_FILE", "DECODER_META", "NamingModel", "NamingTrainConfig", "load_decoder", "save_decoder",
           "train"]  # the model's parts live in naming_model; importable from here as before


@dataclasses.dataclass
class NamingTrainConfig(RunControls):
    """Every hyper-parameter of a run (and, from :class:`RunControls`, where and how long it
    runs); saved as ``config.json`` and read back on resume."""

    base: str = "shipped"
    """The encoder to start from (as in ``EmbedderTrainConfig.base``)."""
    init: str = ""
    """A naming run's ``best/`` folder to continue from: its encoder *and* decoder (``base``,
    ``vocab_size`` and the decoder's shape are then the folder's).  How a later session, on
    a GPU or the CPU, trains the shipped head further instead of starting a new one;
    ``shipped`` rebuilds that folder from ``models/`` (:mod:`pathfusion.model_export.head_from_export`),
    so a new machine needs no earlier run."""
    batch_size: int = 128
    lr: float = 5e-5
    """Encoder learning rate (the decoder's is ``decoder_lr``)."""
    decoder_lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_steps: int = 200
    epochs: int = 1
    freeze_encoder: bool = False
    variant: str = "llm"
    """What the decoder reads (:data:`pathfusion.model_export.fusion_memory.VARIANTS`): the
    token states, the path contexts, or a fusion of both."""
    init_decoder: str = ""
    """A folder with ``decoder.pt`` + ``decoder.json`` to start the decoder from (the encoder
    still from ``base``): every fusion variant starts from the shipped head's decoder."""
    fusion_lr: float = 2e-3
    """Learning rate of the fusion (the context encoder starts from scratch, where the
    decoder usually continues: code2vec itself trained its embeddings at 1e-2)."""
    context_dim: int = 128
    context_tokens: int = 12000
    """Token and path vocabularies of the context encoder (built from the train split once;
    a pack's ``contexts.json.gz`` wins)."""
    context_paths: int = 20000
    train_first: int = 0
    train_take: int = 0
    """With ``train_first``: train on positions ``train_first … train_first + train_take`` (0: to
    the end) of the train split's seeded permutation (seed ``seed``, as
    :func:`~pathfusion.model_export.naming_pack.seeded_choice`) instead of the whole split — how a
    run continues the shipped head on the functions its earlier runs never saw (the shipped head:
    positions 0–170,000 jointly with the encoder, 170,000–300,000 in the fusion session)."""
    search_weight: float = 1.0
    """Weight of the contrastive search loss added each step (0: naming only)."""
    search_first: int = 0
    """The search stream starts at this batch of its first seeded pass (one batch per step), so
    that a run continuing another in chunks (``train_first``) reads pairs the earlier chunks did
    not: after a chunk of 80 steps from 0, the next one sets 80."""
    search_batch: int = 256
    search_code_tokens: int = 128
    """Train code length of the search pack (its ``max_code_tokens``): 128 is the CPU's speed
    lever; the served 256 is worth trying where length costs little (a GPU)."""
    search_scale: float = 20.0
    project_chunk: int = 32
    vocab_size: int = 8000
    """Generator vocabulary: the commonest wordpieces of train names (others are copied)."""
    layers: int = 2
    heads: int = 6
    feed_forward: int = 1536
    dropout: float = 0.1
    max_source_tokens: int = 256
    max_target_tokens: int = 12
    seed: int = 2025
    eval_every: int = 200
    valid_examples: int = 2000
    valid_groups: int = 2
    select_on: str = "f1+mrr"
    """``f1`` or ``f1+mrr`` (naming F1 plus search MRR) picks ``best/``."""
    amp: bool = True
    """bf16 autocast on a GPU (on the CPU only with ``cpu_bf16`` as well, where it runs a
    frozen-encoder step ≈ 1.8× faster on this project's machines; a run control)."""
    eval_batch: int = 128
    log_every: int = 20

    @classmethod
    def from_overrides(cls, overrides: Sequence[str], base: NamingTrainConfig | None = None) -> NamingTrainConfig:
        config = dataclasses.replace(base) if base is not None else cls()
        set_fields(config, overrides)
        if config.select_on not in ("f1", "f1+mrr"):
            raise ValueError(f"select_on must be f1 or f1+mrr, not {config.select_on!r}")
        if config.search_weight > 0 and config.search_batch < 2:
            raise ValueError(f"search_batch must be at least 2 (in-batch negatives), not {config.search_batch}")
        check_ranges(config, at_least_one=("epochs", "batch_size", "eval_every", "valid_examples", "vocab_size", "layers", "heads",
                                           "feed_forward", "max_source_tokens", "max_target_tokens", "context_dim",
                                           "context_tokens", "context_paths", "project_chunk"),
                     positive=("decoder_lr", "search_scale", "search_code_tokens"),
                     non_negative=("lr", "fusion_lr", "warmup_steps", "weight_decay", "search_weight", "valid_groups",
                                   "train_first", "train_take", "search_first"),
                     shares=("dropout",))
        FusionShape(config.variant)  # refuses an unknown variant before anything is loaded
        if config.variant == "code2vec" and not config.freeze_encoder and config.search_weight == 0:
            raise ValueError("variant=code2vec reads no token states: train it with freeze_encoder=true "
                             "(or search_weight > 0 to train the encoder for search alone)")
        return config

    def decoder_shape(self) -> DecoderShape:
        return DecoderShape(self.layers, self.heads, self.feed_forward, self.max_target_tokens, self.dropout)


def build_vocabulary(targets: Any, size: int, names: NameTokens) -> list[int]:
    """The ``size`` commonest target wordpieces (ties by id), plus ``[CLS]``, ``[SEP]``, ``[UNK]``."""
    counts = Counter(int(i) for i in targets.ids)
    specials = [names.cls_id, names.sep_id, names.unk_id]
    common = [i for i, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if i not in specials]
    return specials + common[:size]


def length_batches(lengths: np.ndarray, batch_size: int, seed: int, pool: int = 64) -> list[np.ndarray]:
    """Shuffled batches of examples of similar length (less padding): a seeded permutation
    cut into pools of ``pool`` batches, each sorted by length, the batches shuffled."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    batches = []
    span = batch_size * pool
    for start in range(0, len(order), span):
        chunk = order[start:start + span]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


@dataclasses.dataclass
class RunState:
    epoch: int = 0
    position: int = 0
    search_epoch: int = 0
    search_position: int = 0
    step: int = 0
    best: float = -1.0
    best_step: int = -1
    seconds: float = 0.0
    examples_seen: int = 0


def resolve_init(init: str, run: Path, models: Path) -> Path:
    """The ``best/`` folder that ``init`` names (``shipped`` is rebuilt once into the run
    from the exported head in ``models``)."""
    if init != "shipped":
        return Path(init)
    folder = run / "shipped-head"
    if not (folder / DECODER_META).is_file():
        report = build_head(models, folder)
        log_event(run, {"event": "init", "from": str(models / "naming"), **report})
    return folder


def _cycle_search(batches_of: Callable[[int], list[np.ndarray]], state: RunState) -> Iterator[np.ndarray]:
    """The search batches from the state's place on (a checkpoint stores it), pass after pass."""
    while True:
        batches = batches_of(state.search_epoch)
        while state.search_position < len(batches):
            state.search_position += 1  # counted when taken, so that a checkpoint never repeats it
            yield batches[state.search_position - 1]
        state.search_epoch += 1
        state.search_position = 0


def _search_batches(projects: np.ndarray, config: NamingTrainConfig) -> Callable[[int], list[np.ndarray]]:
    """The search batches of each pass (seeded by the pass)."""
    return lambda epoch: project_batches(projects, config.search_batch, config.project_chunk, config.seed + 1000 + epoch)


def save_head(folder: Path, searcher: MeanPooledEncoder, tokenizer_dir: Path, decoder: NameDecoder,
              fusion: FusedMemory, config: NamingTrainConfig, context_vocab: ContextVocab | None) -> None:
    """``folder`` as a run's ``best/``: the encoder (with ``tokenizer_dir``'s tokenizer), the
    decoder, the fusion and its context vocabulary — what ``init`` and the exports read."""
    save_best(searcher, tokenizer_dir, folder)
    save_decoder(decoder, folder, config)
    save_fusion(fusion, folder)
    if context_vocab is not None:
        context_vocab.save(folder / VOCAB_FILE)


def first_search_position(config: NamingTrainConfig, batches: int) -> int:
    """Where a new run's search stream starts, refused when past the first pass's ``batches``."""
    if config.search_first >= batches:
        raise ValueError(f"search_first={config.search_first}: the search pairs make only {batches} batches "
                         f"of {config.search_batch} a pass")
    return config.search_first


def train(corpus: Path, run: Path, config: NamingTrainConfig, naming_pack: Path = DEFAULT_NAMING_PACK,
          search_pack: Path = DEFAULT_PACK, resume: bool = True, progress: bool = True,
          models: Path = DEFAULT_MODELS) -> dict[str, Any]:
    """Train (or resume) a run; returns the run's state (``finished`` when the schedule ended).
    Under ``torchrun`` each process trains its share of every batch (:mod:`pathfusion.model_export.distributed`);
    the main process alone validates and writes the run's files."""
    parallel = Distributed.from_environment()
    try:
        return _train(corpus, run, config, naming_pack, search_pack, resume, progress, models, parallel)
    finally:
        parallel.stop()


def _train(corpus: Path, run: Path, config: NamingTrainConfig, naming_pack: Path, search_pack: Path, resume: bool,
           progress: bool, models: Path, parallel: Distributed) -> dict[str, Any]:
    run.mkdir(parents=True, exist_ok=True)
    config_path, checkpoint_path = run / "config.json", run / "checkpoint.pt"
    resuming = resume and config_path.is_file() and checkpoint_path.is_file()
    device = parallel.start(resolve_device(config.device))
    parallel.barrier()  # every process has looked at the run folder before the main one changes it
    progress = progress and parallel.main
    if resuming:
        config = resumed_config(config_path, config, also=("amp",))
    elif parallel.main:
        checkpoint_path.unlink(missing_ok=True)
        (run / "log.jsonl").unlink(missing_ok=True)
    if parallel.main:
        config_path.write_text(json.dumps(dataclasses.asdict(config), indent=1) + "\n")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    autocast = bf16_autocast(device, gpu=config.amp, cpu=config.amp and config.cpu_bf16)

    model_dir = resolve_init(config.init, run, models) if config.init else resolve_base(config.base, run, models)
    if config.init and not (model_dir / DECODER_META).is_file():
        raise FileNotFoundError(f"init={config.init}: no {DECODER_META} there (expected a naming run's best/ folder)")
    bert, tokenizer = load_reference(model_dir)
    tokenizer_file = model_dir / "tokenizer.json"
    pad_id = int(tokenizer.pad_token_id or 0)
    names = NameTokens(load_tokenizer(tokenizer_file))
    spec = NamingPackSpec(tokenizer_sha256(tokenizer_file), config.max_source_tokens, config.max_target_tokens)
    if parallel.active and not parallel.main:
        parallel.barrier()  # the main process builds any missing pack first
    train_set = NamingExamples.load(ensure_pack(corpus, naming_pack, "train", spec, tokenizer_file))
    valid_set = NamingExamples.load(ensure_pack(corpus, naming_pack, "valid", spec, tokenizer_file))
    context_vocab = train_contexts = valid_contexts = None
    if FusionShape(config.variant).uses_contexts:
        context_vocab = (ContextVocab.load(model_dir / VOCAB_FILE) if (model_dir / VOCAB_FILE).is_file()
                         else ensure_vocab(naming_pack, corpus, config.context_tokens, config.context_paths))
        train_contexts, valid_contexts = (
            ensure_context_pack(naming_pack, split, _masked_sources(corpus, split), context_vocab, len(examples))
            for split, examples in (("train", train_set), ("valid", valid_set)))
    if config.train_first or config.train_take:
        chosen = _train_subset(len(train_set), config)
        train_set = train_set.take(chosen)
        train_contexts = train_contexts.take(chosen) if train_contexts is not None else None
    search_train = search_valid = None
    if config.search_weight > 0 or (config.select_on == "f1+mrr" and config.valid_groups > 0):
        packs = ensure_packs(corpus, search_pack, PackSpec(tokenizer_sha256(tokenizer_file),
                                                           max_code_tokens=config.search_code_tokens),
                             tokenizer_file, splits=("train", "valid"))
        search_valid = Pairs.load(packs["valid"])
        if config.search_weight > 0:
            search_train = Pairs.load(packs["train"])
    search_batches = None if search_train is None else _search_batches(search_train.project, config)
    first_search = first_search_position(config, len(search_batches(0))) if search_batches is not None else 0
    if parallel.active and parallel.main:
        parallel.barrier()

    hidden = int(bert.config.hidden_size)
    if config.init or config.init_decoder:
        decoder = load_decoder(Path(config.init_decoder) if config.init_decoder else model_dir)
        vocab = decoder.vocab_ids.tolist()
    else:
        vocab = build_vocabulary(train_set.target, config.vocab_size, names)
        decoder = NameDecoder(hidden, vocab, int(bert.config.vocab_size), names.cls_id, names.sep_id, names.unk_id,
                              config.decoder_shape())
    fusion = _fusion(config, model_dir, hidden, context_vocab)
    model = NamingModel(bert, decoder, fusion).to(device)
    step_model = parallel.wrap(model, device)  # the same module under DDP when there are several processes
    searcher = MeanPooledEncoder(bert)
    if config.freeze_encoder:
        bert.requires_grad_(False)
    elif config.gradient_checkpointing:
        enable_checkpointing(bert)
    groups = [{"params": list(decoder.parameters()), "lr": config.decoder_lr}]
    if any(True for _ in fusion.parameters()):
        groups.append({"params": list(fusion.parameters()), "lr": config.fusion_lr})
    if not config.freeze_encoder:
        groups.append({"params": list(bert.parameters()), "lr": config.lr})
    optimiser = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    steps_per_epoch = len(train_set) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_set)} naming examples is less than one batch of {config.batch_size}")
    total = steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lr_lambda(config.warmup_steps, total))
    state = RunState()
    chosen_valid = seeded_choice(len(valid_set), config.valid_examples, config.seed)

    def validate() -> dict[str, Any]:
        if not parallel.main:
            return {}
        started = time.perf_counter()
        result: dict[str, Any] = {"naming": naming_scores(model, valid_set, chosen_valid, names, pad_id, device,
                                                          config.eval_batch, autocast, valid_contexts)}
        score = float(result["naming"]["f1"])
        if search_valid is not None and config.valid_groups > 0:
            with autocast():
                result["search"] = evaluate(searcher, search_valid, config.valid_groups, pad_id, device,
                                            config.eval_batch)
            if config.select_on == "f1+mrr":
                score += float(result["search"]["mrr"])
        improved = score > state.best
        if improved:
            state.best, state.best_step = score, state.step
            save_head(run / "best", searcher, model_dir, decoder, fusion, config, context_vocab)
        log_event(run, {"event": "valid", "step": state.step, "epoch": state.epoch, "score": round(score, 4),
                        "best": improved, "examples_seen": state.examples_seen,
                        "train_seconds": round(state.seconds, 1), "valid_seconds": round(time.perf_counter() - started, 1),
                        **result}, echo=not progress)
        model.train()
        if config.freeze_encoder:
            bert.eval()
        return result

    if resuming:
        saved_ckpt = torch.load(checkpoint_path, map_location=device, weights_only=False)
        model.load_state_dict(saved_ckpt["model"])
        optimiser.load_state_dict(saved_ckpt["optimiser"])
        scheduler.load_state_dict(saved_ckpt["scheduler"])
        state = RunState(**saved_ckpt["state"])
        torch.set_rng_state(saved_ckpt["torch_rng"])
        if parallel.main:
            log_event(run, {"event": "resumed", **dataclasses.asdict(state)})
    elif parallel.main:
        log_event(run, {"event": "start", "train_examples": len(train_set), "valid_examples": len(chosen_valid),
                        "vocabulary": len(vocab), "steps_per_epoch": steps_per_epoch, "device": str(device),
                        "threads": torch.get_num_threads(), "config": dataclasses.asdict(config),
                        "search_pairs": len(search_train) if search_train is not None else 0,
                        "processes": parallel.world})
    if not resuming:
        validate()

    def checkpoint() -> None:
        if not parallel.main:
            return
        atomic_torch_save({"model": model.state_dict(), "optimiser": optimiser.state_dict(),
                           "scheduler": scheduler.state_dict(), "state": dataclasses.asdict(state),
                           "torch_rng": torch.get_rng_state()}, checkpoint_path)

    search_stream = None
    if search_batches is not None:
        if not resuming:
            state.search_position = first_search
        search_stream = _cycle_search(search_batches, state)
    started = last_checkpoint = time.time()
    stopped = False
    running = math.nan
    model.train()
    if config.freeze_encoder:
        bert.eval()
    while state.epoch < config.epochs and not stopped:
        batches = length_batches(train_set.source.lengths(), config.batch_size, config.seed + state.epoch)
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(batches), initial=state.position, desc=f"epoch {state.epoch + 1}/{config.epochs}",
                       unit="batch", file=sys.stderr, dynamic_ncols=True)
        while state.position < len(batches):
            if config.max_steps and state.step >= config.max_steps:
                stopped = True
                break
            step_started = time.perf_counter()
            rows = batches[state.position]
            local, real = parallel.share(rows)
            source, mask = batch_tensors(train_set.source, local, pad_id, device)
            target, target_mask = batch_tensors(train_set.target, local, pad_id, device)
            contexts, context_mask = context_tensors(train_contexts, local, device)
            with autocast():
                nll, wordpieces = step_model(source, mask, target, target_mask == 0, contexts, context_mask)
                if not real:
                    nll, wordpieces = nll * 0, wordpieces * 0
                backward_loss, loss = parallel.global_mean(nll, wordpieces)
                search_loss = torch.zeros((), device=device)
                if search_stream is not None and search_train is not None:
                    search_loss = batch_loss(searcher, search_train, next(search_stream), pad_id, device,
                                             config.search_scale, True, parallel)
            total_loss = backward_loss + config.search_weight * search_loss
            optimise(total_loss, model.parameters(), optimiser, scheduler)
            state.step += 1
            state.position += 1
            state.examples_seen += len(rows)
            state.seconds += time.perf_counter() - step_started
            running = running_mean(running, float(loss.detach()))
            if state.step % config.log_every == 0 and parallel.main:
                log_event(run, {"event": "train", "step": state.step, "epoch": state.epoch, "loss": round(running, 4),
                                "step_loss": round(float(loss), 5),
                                "search_loss": round(float(search_loss.detach()), 5),
                                "examples_per_second": round(state.examples_seen / max(state.seconds, 1e-9), 1)},
                          echo=False)
            if state.step % config.eval_every == 0:
                validate()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{running:.3f}")
            if time.time() - last_checkpoint > config.checkpoint_minutes * 60:
                checkpoint()
                last_checkpoint = time.time()
            if parallel.any(out_of_time(config, started)):
                stopped = True
                break
        if bar is not None:
            bar.close()
        if not stopped:
            state.epoch += 1
            state.position = 0
    if state.step % config.eval_every:
        validate()
    checkpoint()
    if parallel.main:
        log_event(run, {"event": "paused" if stopped else "finished", **dataclasses.asdict(state)})
    parallel.barrier()  # the checkpoint is written before any process reports
    return {"finished": not stopped, **dataclasses.asdict(state)}


def _masked_sources(corpus: Path, split: str) -> Callable[[], Iterator[str]]:
    """The split's masked sources in the naming pack's order (read only if a context pack is missing)."""
    return lambda: (record["masked_code"] for record in naming_records(corpus, split))


def _train_subset(count: int, config: NamingTrainConfig) -> np.ndarray:
    """The train positions ``train_first``/``train_take`` name (see the config), refused when empty."""
    take = config.train_take or count - config.train_first
    chosen = seeded_choice(count, take, config.seed, first=config.train_first)
    if len(chosen) == 0:
        raise ValueError(f"train_first={config.train_first} train_take={config.train_take}: no function of "
                         f"the {count} in the train split")
    return chosen


def _fusion(config: NamingTrainConfig, model_dir: Path, hidden: int, vocab: ContextVocab | None) -> FusedMemory:
    """The run's fusion: the ``init`` folder's (which must be of ``variant``), else a new one."""
    if config.init and (model_dir / FUSION_META).is_file():
        fusion = load_fusion(model_dir, hidden)
        if fusion.shape.variant != config.variant:
            raise ValueError(f"init={config.init} holds a {fusion.shape.variant} fusion, not variant={config.variant}")
        return fusion
    rows = vocab.table_sizes() if vocab is not None else (0, 0)
    return FusedMemory(FusionShape(config.variant, rows[0], rows[1], config.context_dim, hidden, config.heads,
                                   config.feed_forward, config.dropout))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pathfusion train naming", description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--run", type=Path, default=DEFAULT_RUN)
    parser.add_argument("--pack", type=Path, default=DEFAULT_NAMING_PACK, help="naming pack (default: %(default)s)")
    parser.add_argument("--search-pack", type=Path, default=DEFAULT_PACK)
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides (see NamingTrainConfig)")
    parser.add_argument("--no-resume", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--only", choices=("pack",), help="only pack the naming examples (train, valid, test)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    random.seed(0)
    try:
        config = NamingTrainConfig.from_overrides(args.set)
        if args.only == "pack":
            tokenizer_file = resolve_base(config.base, args.run, args.models) / "tokenizer.json"
            spec = NamingPackSpec(tokenizer_sha256(tokenizer_file), config.max_source_tokens,
                                  config.max_target_tokens)
            for split in ("train", "valid", "test"):
                path = ensure_pack(args.corpus, args.pack, split, spec, tokenizer_file, progress=not args.no_progress)
                print(f"{split}: {path} ({path.stat().st_size / 2**20:.1f} MiB)")
            return 0
        result = train(args.corpus, args.run, config, args.pack, args.search_pack, resume=not args.no_resume,
                       progress=not args.no_progress, models=args.models)
    except (ValueError, FileNotFoundError) as exc:
        print(f"pathfusion train naming: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
