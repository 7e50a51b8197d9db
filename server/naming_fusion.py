"""The naming head's fusion at run time (no torch): the hovered function's path contexts
joined with the embedder's token states into the memory the decoder reads (issue 11).

A head exported from a fusion variant (``concat``, ``weighted``, ``attention``;
``pathfusion.model_export.fusion_memory``) ships a third graph, ``naming/fusion.int8.onnx``,
and the context vocabulary ``naming/contexts.json.gz``.  Per function: the contexts of the
*masked* source — what the embedder reads too, extracted by the one extractor
(:meth:`~pathfusion.server.context_vocab.ContextVocab.of_source`), exactly as training did —
then one run of the graph.  A head without them (``llm``) reads the token states as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .context_vocab import ContextVocab
from .models import ModelError, model_file, providers
from .onnx_session import create_session

FIX = "re-export it with `pathfusion export naming`"
OUTPUTS = ["memory", "memory_source", "memory_mask"]


@dataclass(frozen=True)
class NamingFusion:
    """The fusion graph of a naming head and the context vocabulary it was trained with."""

    variant: str
    session: Any
    vocab: ContextVocab

    @classmethod
    def load(cls, models_dir: Path, entry: dict[str, Any], device: str, threads: int | None) -> NamingFusion | None:
        """The fusion that the manifest ``entry`` of the naming head names, or None (an ``llm`` head)."""
        if not entry.get("fusion_onnx"):
            return None
        graph = model_file(models_dir, str(entry["fusion_onnx"]))
        vocab_path = model_file(models_dir, str(entry.get("contexts") or ""))
        try:
            vocab = ContextVocab.load(vocab_path)
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{vocab_path}: {exc}; {FIX}") from exc
        session = create_session(graph, providers(device), threads, fix=FIX)
        if [o.name for o in session.get_outputs()] != OUTPUTS:
            raise ModelError(f"{graph} is not a naming fusion graph (outputs {OUTPUTS}); {FIX}")
        return cls(str(entry.get("variant") or "fusion"), session, vocab)

    def contexts(self, masked_source: str) -> tuple[np.ndarray, np.ndarray]:
        """(``[C, 3]`` ids, ``[C]`` mask) of the function's contexts; one padding context when
        it has none (training's padded batch gives such a function the same single column)."""
        ids = self.vocab.of_source(masked_source, np.int64)  # the graph's input type: no copy to cast
        if len(ids) == 0:
            return np.zeros((1, 3), dtype=np.int64), np.zeros(1, dtype=np.int64)
        return ids, np.ones(len(ids), dtype=np.int64)

    def fuse(self, source: np.ndarray, states: np.ndarray, masked_source: str
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One function's (memory ``[M, H]``, source ids ``[M]``, mask ``[M]``) from its token
        ids ``source`` ``[S]`` and states ``[S, H]``."""
        contexts, context_mask = self.contexts(masked_source)
        feeds = {"token_states": states[None].astype(np.float32, copy=False),
                 "source": source[None].astype(np.int64, copy=False),
                 "attention_mask": np.ones((1, len(source)), dtype=np.int64),
                 "contexts": contexts[None], "context_mask": context_mask[None]}
        try:
            memory, memory_source, memory_mask = self.session.run(OUTPUTS, feeds)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"the naming head's fusion failed: {exc}") from exc
        return np.asarray(memory[0]), np.asarray(memory_source[0]), np.asarray(memory_mask[0])
