"""Names written wordpiece by wordpiece: the generative naming head at run time (no torch).

The embedder's graph reads the function with its own name masked (``[MASK]``) and gives its
token states; the decoder-step graph (``models/naming``, ``pathfusion export naming``) then
gives, for each name prefix, the log-probability of every next wordpiece — generated from
the vocabulary or copied from the function's own text.  :meth:`NameGenerator.beam_search`
keeps the ``beam`` best prefixes per step (a wordpiece never directly repeated), exactly as
the training code's
``pathfusion.model_export.name_decoder.beam_search`` does (a test holds the two to the same names and
scores).  A name ends at ``[SEP]``; a wordpiece without ``##`` starts a new subtoken
(:func:`label_of_pieces`), so ``load`` ``config`` → ``load|config`` → ``load_config``.

The head only makes sense over the encoder it was trained with: the manifest records that
embedder's id, and :meth:`NameGenerator.load` refuses another (the server then falls back to
code2vec's names, when the folder has code2vec).

Probabilities: a name's model probability is the product of its wordpieces' (the beam
score, exponentiated), summed over wordpiece spellings of the same name
(:meth:`NameGenerator.candidates`).  Names are *ranked* with a bonus per subtoken
(:data:`LENGTH_BONUS`), so what :meth:`NameGenerator.names` returns, and the editor shows, is
the calibrated probability of :mod:`pathfusion.server.name_confidence` (:data:`CALIBRATION`),
which follows the ranking.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .code2vec import CurrentName
from .embedder import OnnxEmbedder
from .models import ModelError, load_manifest, model_entry, model_file, providers
from .name_candidates import Candidates, Vocabulary
from .name_confidence import Calibration, leftover
from .name_words import NameWords
from .naming_fusion import NamingFusion
from .onnx_session import create_session
from .paths import METHOD_NAME

ENTRY_NAME = "naming"
LENGTH_BONUS = 1.0
"""Names are ranked by ``log p + LENGTH_BONUS × subtokens``: a sequence model's probability
favours short common names (``run`` for ``run_until_complete_cb``: precision 0.36, recall
0.24 on held-out code), and users gain little from them.  Chosen on validation (the smallest
bonus within 0.005 F1 of the best, ``python -m pathfusion.model_export.naming_policy``): 1.0
for the previous head; 1.5 for ``pathfusion-namer-attention-1`` on 400 validation functions,
then 1.0 again with names made of words (:mod:`pathfusion.server.name_words`), on 400 and
on 4,000 validation functions (F1 0.383 against 0.386 at 1.5, exact match 0.137 against
0.126; docs/results.md, "Names made of words").  The probability shown follows this ranking
(:data:`CALIBRATION`)."""
CALIBRATION = Calibration(slope=0.82, none_logit=1.95)
"""How rank scores become the probabilities shown (:mod:`pathfusion.server.name_confidence`),
fitted on validation for ``pathfusion-namer-attention-g128`` with its lexicon and
:data:`LENGTH_BONUS` (``python -m pathfusion.model_export.naming_policy``, docs/results.md;
``pathfusion-namer-attention-j1``'s was slope 0.94, none_logit 1.65, ``-1``'s 0.92 / 1.8)."""
CACHE_SIZE = 4096
"""Functions whose names are kept (least recently used dropped first)."""
MASK_TEXT = "[MASK]"
UNKNOWN = "<UNK>"
FIX = "re-export it with `pathfusion export naming`"


def source_text(masked_source: str) -> str:
    """The masked function as the head's encoder reads it (training packs it the same way)."""
    return masked_source.replace(METHOD_NAME, MASK_TEXT)


def label_of_pieces(pieces: Sequence[str]) -> str:
    """Wordpieces → ``|``-joined subtokens: a piece without ``##`` starts a new subtoken; a
    special token (``[UNK]``) stands for a subtoken that cannot be spelt (``<UNK>``)."""
    subtokens: list[str] = []
    for piece in pieces:
        if piece.startswith("##") and subtokens:
            subtokens[-1] += piece[2:]
        elif piece.startswith("["):
            subtokens.append(UNKNOWN)
        else:
            subtokens.append(piece.removeprefix("##"))
    return "|".join(subtokens)


def label_pieces(tokenizer: Any, label: str) -> list[int]:
    """``a|b`` → the wordpiece ids the head writes for it (the inverse of
    :func:`label_of_pieces`): each subtoken's pieces, its first without ``##``.  A subtoken
    the tokenizer splits into words (digits, punctuation) is glued back with ``##`` pieces;
    one without such a piece is ``[UNK]``."""
    unknown = int(tokenizer.token_to_id("[UNK]"))
    ids: list[int] = []
    for subtoken in label.split("|"):
        if not subtoken:
            continue
        pieces = tokenizer.encode(subtoken, add_special_tokens=False)
        for n, (i, piece) in enumerate(zip(pieces.ids, pieces.tokens, strict=True)):
            if n == 0 or piece.startswith("##"):
                ids.append(int(i))
            else:
                glued = tokenizer.token_to_id("##" + piece)
                ids.append(int(glued) if glued is not None else unknown)
    return ids


def stutters(label: str) -> bool:
    """Whether a subtoken directly repeats (``conn_conn``): the decoder's stutter across
    wordpieces (``con ##n con ##n``), which the beam's ban on a wordpiece following itself
    cannot see, and which the length bonus would rank up.  0.03 % of the train split's names
    have one (``crypt_crypt``); such candidates are dropped.  A word coming back later
    (``to_string_to_string``) is the lexicon's business: :meth:`NameWords.admits
    <pathfusion.server.name_words.NameWords.admits>`."""
    parts = label.split("|")
    return any(a == b for a, b in itertools.pairwise(parts))


def rank_score(label: str, probability: float, bonus: float = LENGTH_BONUS) -> float:
    """What names are ordered by: log-probability plus ``bonus`` per subtoken."""
    return math.log(max(probability, 1e-300)) + bonus * len(label.split("|"))


def shown(found: Sequence[tuple[str, float]], top_k: int, current: CurrentName | None = None,
          current_label: str | None = None, calibration: Calibration = CALIBRATION
          ) -> tuple[list[tuple[str, float]], CurrentName | None]:
    """The first ``top_k`` of the ranked names ``found`` (model probabilities) with their
    calibrated probabilities, computed over all of ``found`` (the beam's results) so that a
    list shorter than the beam shows the same numbers; ``current`` (the name ``current_label`` scored) gains its own on the same
    scale: the listed number when the beam found that name too."""
    scores = [rank_score(label, prob) for label, prob in found]
    rest = leftover([prob for _, prob in found])
    names = list(zip([label for label, _ in found], calibration.confidences(scores, rest), strict=True))
    if current is not None and current_label is not None:
        confidence = dict(names).get(current_label)
        if confidence is None:
            confidence = calibration.of_another(rank_score(current_label, current.probability), scores, rest)
        current = dataclasses.replace(current, confidence=confidence)
    return names[:max(0, top_k)], current


@dataclass(frozen=True)
class HeadConfig:
    bos_id: int
    eos_id: int
    max_length: int
    max_source_tokens: int
    vocab_ids: tuple[int, ...]
    """The wordpieces the decoder generates (its output columns), in the graph's order."""


def has_naming_head(models_dir: Path) -> bool:
    """Whether ``models_dir``'s manifest lists a naming head (no file is checked here)."""
    try:
        manifest = json.loads((Path(models_dir) / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and isinstance(manifest.get("models"), dict) and \
        ENTRY_NAME in manifest["models"]


class NameGenerator:
    """A :class:`~pathfusion.server.code2vec.Predictor` over the embedder's token states and the decoder."""

    def __init__(self, embedder: OnnxEmbedder, session: Any, keys_session: Any, config: HeadConfig, model_id: str,
                 beam: int = 5, fusion: NamingFusion | None = None, words: NameWords | None = None) -> None:
        self.embedder = embedder
        self.fusion = fusion
        self.words = words
        """The lexicon a name's subtokens must come from (:mod:`pathfusion.server.name_words`);
        None for a head exported without one: every name is kept."""
        self.session = session
        self.keys_session = keys_session
        self.config = config
        self.model_id = model_id
        self.beam = beam
        self.vocabulary = Vocabulary.of(config.vocab_ids)
        self._cache: OrderedDict[tuple[str, str | None, int],
                                 tuple[list[tuple[str, float]], CurrentName | None]] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def load(cls, models_dir: Path, embedder: Any, device: str = "auto", threads: int | None = 1,
             verify: bool = True) -> NameGenerator:
        """The ``naming`` head of ``models_dir`` over ``embedder`` (which must be the ONNX
        embedder it was trained with)."""
        manifest = load_manifest(models_dir, verify=verify, models=(ENTRY_NAME,))
        entry = model_entry(manifest, ENTRY_NAME, models_dir)
        if not isinstance(embedder, OnnxEmbedder):
            raise ModelError("the generative naming head needs the ONNX embedder (pathfusion.llmBackend: onnx)")
        wanted = str(entry.get("embedder_id"))
        if embedder.model_id != wanted:
            raise ModelError(f"the naming head in {models_dir} reads the embedder {wanted!r}, not "
                             f"{embedder.model_id!r}; re-export them together")
        config_path = model_file(Path(models_dir), str(entry.get("config") or ""))
        try:
            raw = json.loads(config_path.read_text(encoding="utf-8"))
            config = HeadConfig(int(raw["bos_id"]), int(raw["eos_id"]), int(raw["max_length"]),
                                int(raw["max_source_tokens"]), tuple(int(i) for i in raw["vocab_ids"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{config_path} is not a valid naming head config ({exc!r}); {FIX}") from exc
        graph = model_file(Path(models_dir), str(entry.get("onnx") or ""))
        keys = model_file(Path(models_dir), str(entry.get("keys_onnx") or ""))
        session = create_session(graph, providers(device), threads, fix=FIX)
        if {o.name for o in session.get_outputs()} != {"generated", "copied", "present"}:
            raise ModelError(f"{graph} is an older export of the naming head (a step graph without the "
                             f"key/value cache and the two-part output); {FIX}")
        keys_session = create_session(keys, providers(device), threads, fix=FIX)
        fusion = NamingFusion.load(Path(models_dir), entry, device, threads)
        words = None
        if entry.get("lexicon"):
            lexicon = model_file(Path(models_dir), str(entry["lexicon"]))
            try:
                words = NameWords.load(lexicon)
            except (OSError, ValueError) as exc:
                raise ModelError(f"{lexicon} is not a valid name lexicon ({exc}); rebuild it with "
                                 "`python -m pathfusion.model_export.name_lexicon`") from exc
        return cls(embedder, session, keys_session, config, str(entry.get("id") or ENTRY_NAME), fusion=fusion,
                   words=words)

    @property
    def info(self) -> dict[str, Any]:
        """What ``pathfusion.status`` shows of the naming model."""
        return {"name": "naming head", "id": self.model_id, "embedder": self.embedder.model_id, "beam": self.beam,
                "reads": self.fusion.variant if self.fusion is not None else "llm",
                "lexicon": len(self.words.words) if self.words is not None else None}

    # -- the Predictor interface ----------------------------------------------------------
    def predict(self, functions: Sequence[Any], top_k: int = 5,
                sources: Sequence[str] | None = None) -> list[list[tuple[str, float]]]:
        """For each function (its masked source in ``sources``, whose path contexts a fusion
        head extracts itself), up to ``top_k`` (label, probability), most probable first."""
        if sources is None or len(sources) != len(functions):
            raise ModelError("the generative naming head needs each function's masked source")
        return [self.names(source, top_k)[0] if source.strip() else [] for source in sources]

    def predict_with_current(self, sources: Sequence[str], current: Sequence[str], top_k: int = 5
                             ) -> tuple[list[list[tuple[str, float]]], list[CurrentName | None]]:
        """:meth:`predict`, and the probability the head gives each function's *current*
        name (``current``: labels, ``a|b``) — scored in the same beam run, one extra row per
        step.  Why: a suggestion helps only when it is clearly more likely than the name
        already there (``pathfusion.server.feature_hover``)."""
        out = [self.names(source, top_k, label) if source.strip() else ([], None)
               for source, label in zip(sources, current, strict=True)]
        return [names for names, _ in out], [p for _, p in out]

    def prefetch(self, sources: Sequence[str], current: Sequence[str], top_k: int) -> None:
        """Compute and cache the names of ``sources`` (masked; ``current``: their names as
        labels) ahead of the hovers that will ask for them with the same ``top_k``."""
        for source, label in zip(sources, current, strict=True):
            if source.strip():
                self.names(source, top_k, label)

    def names(self, masked_source: str, top_k: int = 5, current: str | None = None
              ) -> tuple[list[tuple[str, float]], CurrentName | None]:
        """The ``top_k`` names of one function with their calibrated probabilities, best
        first, and how likely ``current`` is (None without it)."""
        found, scored = self.candidates(masked_source, top_k, current)
        return shown(found, top_k, scored, current)

    def candidates(self, masked_source: str, top_k: int = 5, current: str | None = None
                   ) -> tuple[list[tuple[str, float]], CurrentName | None]:
        """Every name the beam kept for one function (``max(beam, top_k)`` searched), ranked,
        with the model's own probabilities, and that of ``current`` — what :meth:`names`
        calibrates, and what ``naming_policy`` fits the calibration on.  Cached per (source,
        current name, ``top_k``): a hover, the rename actions asked for right after it, and
        an opened file's prefetch share one beam search."""
        key = (masked_source, current, top_k)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return list(cached[0]), cached[1]
        result = self._names(masked_source, top_k, current)
        with self._lock:
            self._cache[key] = result
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return list(result[0]), result[1]

    def _names(self, masked_source: str, top_k: int, current: str | None
               ) -> tuple[list[tuple[str, float]], CurrentName | None]:
        ids, states = self.embedder.token_states(source_text(masked_source))
        mask = None
        if self.fusion is not None:  # the memory of a fusion head: token states and path contexts
            states, ids, mask = self.fusion.fuse(ids, states, masked_source)
        tokenizer = self.embedder.tokenizer
        forced = None
        if current:
            forced = [*label_pieces(tokenizer, current)[:self.config.max_length - 1], self.config.eos_id]
        found, forced_score = self.search(ids, states, self.beam, max(self.beam, top_k), forced, mask)
        merged: dict[str, float] = {}
        for pieces, score in found:
            label = label_of_pieces([tokenizer.id_to_token(int(i)) or "[UNK]" for i in pieces])
            if not label or UNKNOWN in label.split("|") or stutters(label):
                continue
            merged[label] = merged.get(label, 0.0) + math.exp(score)
        if self.words is not None:  # names with a made-up subtoken (``routeer``) dropped: name_words
            merged = {label: merged[label] for label in self.words.kept(merged, masked_source)}
        ranked = sorted(merged.items(), key=lambda item: -rank_score(*item))
        scored = None if forced is None or forced_score is None else \
            CurrentName(min(1.0, math.exp(forced_score)), len(forced))
        return [(label, min(1.0, prob)) for label, prob in ranked], scored

    # -- decoding ---------------------------------------------------------------------------
    def cross_keys(self, memory: np.ndarray) -> np.ndarray:
        """Each decoder layer's cross-attention keys and values of one function's memory:
        computed once per function, read by every beam step."""
        try:
            return np.asarray(self.keys_session.run(["cross"], {"memory": memory[None].astype(np.float32)})[0])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"the naming head failed: {exc}") from exc

    def step(self, last: np.ndarray, position: int, past: np.ndarray | None, memory: np.ndarray,
             source: np.ndarray, cross: np.ndarray, candidates: Candidates, mask: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """One wordpiece ``last`` ``[n]`` after prefixes whose keys and values are ``past``
        (``[layers, 2, n, position, H]``; None at position 0): ``[n, C]`` log-probabilities
        over ``candidates``' columns, and the keys and values with this wordpiece appended."""
        if past is None:
            layers, _, _, _, hidden = cross.shape
            past = np.zeros((layers, 2, len(last), 0, hidden), dtype=np.float32)
        feeds = {"token": last.astype(np.int64)[:, None], "position": np.asarray([position], dtype=np.int64),
                 "past": past,
                 "memory": memory[None].astype(np.float32, copy=False),  # one function for every row
                 "source": source[None].astype(np.int64, copy=False),
                 "attention_mask": (np.ones((1, len(source)), dtype=np.int64) if mask is None
                                    else mask[None].astype(np.int64, copy=False)),
                 "cross": cross}
        try:
            generated, copied, present = self.session.run(["generated", "copied", "present"], feeds)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"the naming head failed: {exc}") from exc
        return candidates.log_probs(generated, copied), np.concatenate([past, present], axis=3)

    def beam_search(self, source: np.ndarray, memory: np.ndarray, beam: int = 5,
                    results: int = 5) -> list[tuple[list[int], float]]:
        """The ``results`` most likely wordpiece sequences (without ``[SEP]``) with their
        log-probabilities, best first — ``pathfusion.model_export.name_decoder.beam_search`` in numpy."""
        return self.search(source, memory, beam, results)[0]

    def search(self, source: np.ndarray, memory: np.ndarray, beam: int, results: int,
               forced: list[int] | None = None, mask: np.ndarray | None = None
               ) -> tuple[list[tuple[list[int], float]], float | None]:
        """:meth:`beam_search`, plus the log-probability of the sequence ``forced`` (ending
        with ``[SEP]``), read from an extra row that follows it step by step (``mask``: the
        memory positions a fusion left out; all are read by default)."""
        bos = self.config.bos_id
        cross = self.cross_keys(memory)
        candidates = Candidates.of(self.vocabulary, source)
        live: list[tuple[list[int], float]] = [([bos], 0.0)]
        finished: list[tuple[list[int], float]] = []
        forced_score: float | None = None if forced is None else 0.0
        searching = True
        past: np.ndarray | None = None  # the rows' self-attention keys and values
        for step in range(self.config.max_length):
            forcing = forced is not None and step < len(forced)
            if not searching and not forcing:
                break
            rows = [ids for ids, _ in live] if searching else []
            if forcing:
                assert forced is not None
                rows.append([bos, *forced[:step]])
            log_probs, past = self.step(np.asarray([ids[-1] for ids in rows]), step, past, memory, source, cross,
                                        candidates, mask)
            parents: list[int] = []
            if forcing:
                assert forced is not None and forced_score is not None
                forced_score += candidates.log_prob_of(log_probs[-1], forced[step])
                log_probs = log_probs[:-1]
            if searching:
                live, parents, searching = self._extend(live, finished, log_probs, candidates, beam, results)
            # the next step's rows, whose keys and values go on: the live prefixes, then the forced one
            keep = (parents if searching else []) + (
                [len(rows) - 1] if forced is not None and step + 1 < len(forced) else [])
            past = past[:, :, keep]
        if len(finished) < results:
            finished += [(ids[1:], score) for ids, score in live[:results - len(finished)]]
        finished.sort(key=lambda item: -item[1])
        return finished[:results], forced_score

    def _extend(self, live: list[tuple[list[int], float]], finished: list[tuple[list[int], float]],
                log_probs: np.ndarray, candidates: Candidates, beam: int, results: int
                ) -> tuple[list[tuple[list[int], float]], list[int], bool]:
        """One step of the beam: the new live prefixes, the row each came from, and whether
        to go on (names that end are appended to ``finished``)."""
        bos, eos = self.config.bos_id, self.config.eos_id
        for row, (ids, _) in enumerate(live):
            # a wordpiece never follows itself (``load_load``): as in training's search
            column = candidates.column(ids[-1]) if ids[-1] != bos else None
            if column is not None:
                log_probs[row, column] = -np.inf
        scores = log_probs + np.asarray([s for _, s in live], dtype=np.float32)[:, None]
        flat = scores.ravel()
        count = min(beam * 2, flat.size)
        top = np.argpartition(-flat, count - 1)[:count]
        top = top[np.lexsort((top, -flat[top]))]  # by score, ties by index (as torch.topk here)
        extended: list[tuple[list[int], float, int]] = []
        for index in top.tolist():
            row, column = divmod(index, scores.shape[1])
            token = int(candidates.ids[column])
            ids = live[row][0] + [token]
            if token == eos:
                finished.append((ids[1:-1], float(flat[index])))
            else:
                extended.append((ids, float(flat[index]), row))
        kept = extended[:beam]
        live = [(ids, score) for ids, score, _ in kept]
        best_live = live[0][1] if live else float("-inf")
        going_on = bool(live) and not (
            len(finished) >= results and min(s for _, s in sorted(finished, key=lambda x: -x[1])[:results]) >= best_live)
        return live, [row for _, _, row in kept], going_on
