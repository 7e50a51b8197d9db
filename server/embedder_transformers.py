"""The ``transformers`` backend of the LLM embedder: any local Hugging Face model folder
through ``AutoTokenizer`` and ``AutoModel`` (``local_files_only=True``,
``trust_remote_code=False``).

Why a module of its own: it is an explicit, optional backend (``pathfusion.llmBackend:
transformers``).  torch and transformers come with the ``train`` extra; this module is
imported only when the backend is selected (:func:`pathfusion.server.embedder.load_embedder`) and
imports them only when an embedder is built, so nothing else in the server loads torch.
Selected without them, :class:`TransformersEmbedder` raises
:class:`~pathfusion.server.embedder.EmbedderError` naming the extra and how to install it.

Batching is the ONNX backend's (:mod:`pathfusion.server.embedder`): sorted by token length, each batch
padded to its own longest text, embeddings put back in the caller's order.

Pooling of :class:`TransformersEmbedder` (``pooling=None`` chooses):

* encoders (BERT, RoBERTa, MiniLM, …): **mean** over the real tokens, or what the folder's
  sentence-transformers ``1_Pooling/config.json`` says (``mean`` / ``cls``);
* decoders — ``config.is_decoder``, a ``model_type`` in :data:`CAUSAL_LM_TYPES`, an
  architecture named ``…ForCausalLM``/``…LMHeadModel``, or ``AutoModel`` returning a causal
  LM — the hidden state of the **last real token**: in a causal model only that token has
  attended to the whole text, while a mean is dominated by early tokens that saw little of
  it (SGPT, E5-Mistral, gte-Qwen use last-token pooling).  Padding is forced to the right and
  the last real token is located with the attention mask, so padding never shifts the
  positions of an absolute-position model (GPT-2).  No EOS token is appended: the text is
  tokenised as the model's tokenizer does by default.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .embedder import (
    EmbedderError,
    _check_batch_size,
    _check_texts,
    _Identified,
    _normalise,
    _sorted_batches,
)

log = logging.getLogger("pathfusion.server.embedder")  # one logger for both backends

POOLINGS = ("mean", "last", "cls")
DEFAULT_MAX_LENGTH = 512
"""Token limit of :class:`TransformersEmbedder` when the folder does not give one."""
INSTALL = "pip install 'pathfusion[train]' (in a checkout: pip install -e '.[train]')"

CAUSAL_LM_TYPES = frozenset({
    "bloom", "codegen", "cohere", "deepseek_v2", "deepseek_v3", "falcon", "gemma", "gemma2",
    "gemma3", "gemma3_text", "gpt2", "gpt_bigcode", "gpt_neo", "gpt_neox", "gptj", "granite",
    "llama", "mistral", "mixtral", "mpt", "olmo", "olmo2", "opt", "phi", "phi3", "qwen2",
    "qwen2_moe", "qwen3", "qwen3_moe", "stablelm", "starcoder2",
})
"""``model_type`` values of decoder-only (causal) language models."""


def _resolve_torch_device(torch: Any, device: str) -> str:
    device = (device or "auto").lower()
    if device not in ("auto", "cpu", "cuda"):
        raise EmbedderError(f"unknown device {device!r}; expected one of auto, cpu, cuda")
    available = bool(torch.cuda.is_available())
    if device == "cuda" and not available:
        log.warning("device 'cuda' requested but torch sees no CUDA GPU; using the CPU")
    return "cuda" if device in ("auto", "cuda") and available else "cpu"


def _sentence_transformers_settings(folder: Path) -> tuple[str | None, int | None]:
    """(pooling, max_seq_length) from a sentence-transformers folder's configs, if any."""
    pooling = None
    max_length = None
    try:
        pool = json.loads((folder / "1_Pooling" / "config.json").read_text(encoding="utf-8"))
        if pool.get("pooling_mode_lasttoken"):
            pooling = "last"
        elif pool.get("pooling_mode_cls_token"):
            pooling = "cls"
        elif pool.get("pooling_mode_mean_tokens"):
            pooling = "mean"
    except (OSError, ValueError, AttributeError):
        pass
    try:
        sbert = json.loads((folder / "sentence_bert_config.json").read_text(encoding="utf-8"))
        if isinstance(sbert.get("max_seq_length"), int):
            max_length = sbert["max_seq_length"]
    except (OSError, ValueError, AttributeError):
        pass
    return pooling, max_length


def is_decoder_config(config: Any) -> bool:
    """Whether a transformers config describes a decoder-only (causal) language model."""
    if getattr(config, "is_encoder_decoder", False):
        return False
    if getattr(config, "is_decoder", False):
        return True
    if getattr(config, "model_type", None) in CAUSAL_LM_TYPES:
        return True
    architectures = getattr(config, "architectures", None) or []
    return any(str(name).endswith(("ForCausalLM", "LMHeadModel")) for name in architectures)


class TransformersEmbedder(_Identified):
    """A local Hugging Face model folder through transformers (see the module docstring)."""

    def __init__(self, model_path: Path | str, device: str = "auto", pooling: str | None = None,
                 *, max_length: int | None = None, threads: int | None = None) -> None:
        folder = Path(model_path).expanduser()
        if not str(model_path).strip() or not folder.exists():
            raise EmbedderError(f"LLM model path {folder} does not exist; set pathfusion.llmModelPath "
                                f"to a local Hugging Face model folder")
        if not folder.is_dir():
            raise EmbedderError(f"LLM model path {folder} is not a folder; expected a Hugging Face "
                                f"model folder (with config.json)")
        if not (folder / "config.json").is_file():
            raise EmbedderError(f"{folder} has no config.json: it is not a Hugging Face model "
                                f"folder (save one with save_pretrained, or download it with "
                                f"`huggingface-cli download … --local-dir`)")
        if pooling is not None and pooling not in POOLINGS:
            raise EmbedderError(f"unknown pooling {pooling!r}; expected one of {', '.join(POOLINGS)}")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            import torch
            from transformers import AutoConfig, AutoModel, AutoTokenizer
        except ImportError as exc:
            raise EmbedderError(f"the transformers backend needs torch and transformers, which come "
                                f"with the train extra: {INSTALL} ({exc})") from exc
        if threads is not None:
            torch.set_num_threads(int(threads))
        self._torch = torch
        self.device = _resolve_torch_device(torch, device)
        common = {"local_files_only": True, "trust_remote_code": False}
        try:
            config = AutoConfig.from_pretrained(str(folder), **common)
        except Exception as exc:
            raise EmbedderError(f"cannot read {folder / 'config.json'}: {exc}") from exc
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder), **common)
        except Exception as exc:
            raise EmbedderError(f"cannot load the tokenizer of {folder}: {exc} (the folder needs "
                                f"tokenizer files, e.g. tokenizer.json)") from exc
        dtype = torch.float32 if self.device == "cpu" else "auto"
        try:
            model = AutoModel.from_pretrained(str(folder), config=config, dtype=dtype, **common)
        except Exception as exc:
            raise EmbedderError(f"cannot load the model in {folder}: {exc} (only architectures "
                                f"built into transformers are supported; trust_remote_code stays "
                                f"off)") from exc
        self._lm_class = type(model).__name__.endswith(("ForCausalLM", "LMHeadModel"))
        decoder = is_decoder_config(config) or self._lm_class
        st_pooling, st_max_length = _sentence_transformers_settings(folder)
        self.is_decoder = decoder
        self.pooling = pooling or st_pooling or ("last" if decoder else "mean")
        limit = getattr(tokenizer, "model_max_length", None)
        if max_length is None:
            max_length = st_max_length or DEFAULT_MAX_LENGTH
            if isinstance(limit, int) and 0 < limit < max_length:
                max_length = limit
        self.max_length = int(max_length)
        tokenizer.padding_side = "right"
        if tokenizer.pad_token is None:
            fallback = tokenizer.eos_token or tokenizer.unk_token
            if fallback is not None:
                tokenizer.pad_token = fallback
        self._can_pad = tokenizer.pad_token is not None
        self._tokenizer = tokenizer
        self._model = model.to(self.device).eval()
        self._dim = int(getattr(config, "hidden_size", 0) or getattr(config, "n_embd", 0)
                        or getattr(config, "d_model", 0))
        if not self._dim:
            raise EmbedderError(f"{folder / 'config.json'} gives no hidden size; cannot embed with it")
        # The resolved folder identifies the weights: another folder is another model (the
        # workspace index is rebuilt when the id changes).
        self._model_id = f"transformers:{folder.resolve()}"
        self.path = folder

    def _hidden(self, batch: dict[str, Any]) -> Any:
        if self._lm_class:  # AutoModel gave a causal LM: take its last layer's hidden states
            return self._model(**batch, output_hidden_states=True).hidden_states[-1]
        return self._model(**batch).last_hidden_state

    def _pool(self, hidden: Any, mask: Any) -> Any:
        torch = self._torch
        hidden = hidden.float()
        if self.pooling == "cls":
            return hidden[:, 0]
        if self.pooling == "last":
            positions = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0)
            last = (positions * mask).argmax(dim=1)
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        texts = _check_texts(texts)
        batch_size = _check_batch_size(batch_size) if self._can_pad else 1
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        if not texts:
            return out
        torch = self._torch
        encoded = self._tokenizer(texts, truncation=True, max_length=self.max_length)
        ids: list[list[int]] = encoded["input_ids"]
        lengths = [len(row) for row in ids]
        keys = [key for key in ("input_ids", "attention_mask", "token_type_ids") if key in encoded]
        with torch.inference_mode():
            for batch in _sorted_batches(lengths, batch_size):
                features = [{key: encoded[key][i] for key in keys} for i in batch]
                padded = self._tokenizer.pad(features, padding=True, return_tensors="pt")
                if "attention_mask" not in padded:
                    padded["attention_mask"] = torch.ones_like(padded["input_ids"])
                tensors = {key: value.to(self.device) for key, value in padded.items()}
                hidden = self._hidden(tensors)
                pooled = self._pool(hidden, tensors["attention_mask"])
                out[batch] = pooled.cpu().numpy()
        return _normalise(out)
