"""The generative naming head: a transformer decoder that writes a method name wordpiece by
wordpiece, with a pointer that copies wordpieces from the function's own text.

Why generate: the closed 10k-name softmax of code2vec cannot produce 60 % of real names
(issue 11); names are sequences of subtokens (code2seq), and very often reuse the
function's own identifiers — hence the copy mechanism (pointer-generator, See et al. 2017).

Shapes: ``memory`` ``[B, S, H]`` is the embedder's token states of the masked source
(``source`` ``[B, S]`` its wordpiece ids, ``pad`` ``[B, S]`` True at padding); the decoder
reads ``tokens`` ``[B, T]`` (``[CLS]`` then the name so far) and gives, per position, the
probability of every next wordpiece:

``p(w) = g · softmax(h · E_Kᵀ)[w] + (1 − g) · Σ_{s : source_s = w} attention_s``

where ``E_K`` are the embedder's word embeddings of the generator's vocabulary ``K``
(passed transposed, ``vocab_table`` ``[H, K]``) (tied: training passes the rows of the encoder's own table, so the head adds
no output matrix of its own; the export holds them as a constant), ``attention`` a pointer over the copyable
source positions and ``g = σ(w_g · [h; context])``.  A wordpiece outside ``K`` is produced by
copying alone; as the decoder's *input* it is embedded as the mean of the token states where
it occurs in the source (so that the input embedding needs only ``E_K``, the same at export).

Everything here is plain torch over tensors so that one module is trained, validated and
exported (``pathfusion.model_export.export_naming``); the beam search of the torch-free runtime mirrors
:func:`beam_search` step for step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

FIRST_COPYABLE_ID = 999
"""BERT's uncased vocabulary keeps ``[PAD]``, ``[unusedN]``, ``[UNK]``, ``[CLS]``, ``[SEP]``
and ``[MASK]`` below id 999: such positions are never copied."""
EPSILON = 1e-9


@dataclass(frozen=True)
class DecoderShape:
    layers: int = 2
    heads: int = 6
    feed_forward: int = 1536
    max_length: int = 12
    dropout: float = 0.1


class NameDecoder(nn.Module):
    """Decoder + pointer; the word embeddings are passed in (tied to the encoder's)."""

    vocab_ids: torch.Tensor
    """``[K]`` the wordpiece ids the generator can write (a buffer)."""
    full_to_vocab: torch.Tensor
    """``[V]`` each wordpiece's index in ``vocab_ids``, or −1 (a buffer)."""

    def __init__(self, hidden: int, vocab_ids: Sequence[int], full_vocab: int, bos_id: int, eos_id: int,
                 unk_id: int, shape: DecoderShape = DecoderShape()) -> None:
        super().__init__()
        self.shape = shape
        self.hidden = hidden
        self.bos_id, self.eos_id, self.unk_id = bos_id, eos_id, unk_id
        ids = torch.as_tensor(list(vocab_ids), dtype=torch.long)
        if not {bos_id, eos_id, unk_id} <= set(ids.tolist()):
            raise ValueError("the generator vocabulary must hold [CLS], [SEP] and [UNK]")
        full_to_vocab = torch.full((full_vocab,), -1, dtype=torch.long)
        full_to_vocab[ids] = torch.arange(len(ids))
        self.register_buffer("vocab_ids", ids)
        self.register_buffer("full_to_vocab", full_to_vocab)
        self.position = nn.Embedding(shape.max_length + 1, hidden)
        self.input_norm = nn.LayerNorm(hidden)
        layer = nn.TransformerDecoderLayer(hidden, shape.heads, shape.feed_forward, shape.dropout,
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerDecoder(layer, shape.layers)
        self.output_norm = nn.LayerNorm(hidden)
        self.copy_query = nn.Linear(hidden, hidden)
        self.gate = nn.Linear(2 * hidden, 1)

    # -- pieces ---------------------------------------------------------------------------
    def copyable(self, source: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        return (source >= FIRST_COPYABLE_ID) & ~pad

    def embed_inputs(self, tokens: torch.Tensor, memory: torch.Tensor, source: torch.Tensor,
                     copyable: torch.Tensor, vocab_table: torch.Tensor, positions: torch.Tensor | None = None
                     ) -> torch.Tensor:
        """``[B, T]`` ids → ``[B, T, H]``: ``E[w]`` for ``w ∈ K``, else the mean of its source
        states; at ``positions`` ``[T]`` (default ``0 … T−1``)."""
        index = self.full_to_vocab[tokens]
        in_vocab = index >= 0
        # rows of E_K, read from its transpose: the exported graph then stores one copy of it
        rows = vocab_table.index_select(1, index.clamp(min=0).flatten()).T
        table = rows.reshape(tokens.shape[0], tokens.shape[1], rows.shape[-1])  # sizes read from the input
        match = ((source[:, None, :] == tokens[:, :, None]) & copyable[:, None, :]).to(memory.dtype)
        counts = match.sum(-1, keepdim=True)
        copied = (match @ memory) / counts.clamp(min=1)
        embedded = torch.where(in_vocab[..., None], table, copied)
        if positions is None:
            positions = _positions(tokens)
        return self.input_norm(embedded + self.position(positions)[None])

    def cross_keys(self, memory: torch.Tensor) -> torch.Tensor:
        """``[layers, 2, B, S, H]``: each layer's cross-attention keys and values of ``memory``.
        They depend on the function alone, so the runtime computes them once per function
        instead of once per beam step (the step's largest cost on long functions)."""
        hidden = memory.shape[-1]
        out = []
        for layer in self.layers.layers:
            w, b = layer.multihead_attn.in_proj_weight, layer.multihead_attn.in_proj_bias
            out.append(torch.stack([nn.functional.linear(memory, w[hidden:2 * hidden], b[hidden:2 * hidden]),
                                    nn.functional.linear(memory, w[2 * hidden:], b[2 * hidden:])]))
        return torch.stack(out)

    def states(self, tokens: torch.Tensor, memory: torch.Tensor, source: torch.Tensor, pad: torch.Tensor,
               vocab_table: torch.Tensor, cross: torch.Tensor | None = None) -> torch.Tensor:
        copyable = self.copyable(source, pad)
        hidden = self.embed_inputs(tokens, memory, source, copyable, vocab_table)
        positions = _positions(tokens)
        causal = positions[None, :] > positions[:, None]  # [T, T]: True where a later token would be seen
        for number, layer in enumerate(self.layers.layers):
            keys = None if cross is None else cross[number]
            hidden = _decoder_layer(layer, hidden, memory, causal, pad, self.shape.heads, keys)
        return self.output_norm(hidden)

    def parts(self, hidden: torch.Tensor, memory: torch.Tensor, source: torch.Tensor, pad: torch.Tensor,
              vocab_table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(generator log-probs over ``K`` ``[B,T,K]``, pointer attention ``[B,T,S]``, gate ``[B,T,1]``)."""
        logits = hidden @ vocab_table
        starts_only = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
        starts_only[int(self.full_to_vocab[self.bos_id])] = True  # [CLS] only starts; a constant once exported
        logits = logits.masked_fill(starts_only, float("-inf"))
        generated = torch.log_softmax(logits.float(), dim=-1)
        copyable = self.copyable(source, pad)
        scores = (self.copy_query(hidden) @ memory.transpose(1, 2)) / math.sqrt(self.hidden)
        scores = scores.float().masked_fill(~copyable[:, None, :], float("-inf"))
        none = ~copyable.any(-1)  # a source with nothing to copy: attention is all zeros
        attention = torch.softmax(scores.masked_fill(none[:, None, None], 0.0), dim=-1)
        attention = attention.masked_fill(none[:, None, None], 0.0)
        context = attention.to(memory.dtype) @ memory
        gate = torch.sigmoid(self.gate(torch.cat([hidden, context], dim=-1)).float())
        gate = torch.where(none[:, None, None], torch.ones_like(gate), gate)
        return generated, attention, gate

    # -- training -------------------------------------------------------------------------
    def producible(self, target: torch.Tensor, source: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """``target`` with every wordpiece neither in ``K`` nor copyable replaced by ``[UNK]``."""
        in_vocab = self.full_to_vocab[target] >= 0
        copyable = self.copyable(source, pad)
        in_source = ((source[:, None, :] == target[:, :, None]) & copyable[:, None, :]).any(-1)
        return torch.where(in_vocab | in_source, target, torch.full_like(target, self.unk_id))

    def loss(self, memory: torch.Tensor, source: torch.Tensor, pad: torch.Tensor, target: torch.Tensor,
             target_pad: torch.Tensor, vocab_table: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood per target wordpiece (teacher forcing)."""
        total, count = self.nll(memory, source, pad, target, target_pad, vocab_table)
        return total / count.clamp(min=1)

    def nll(self, memory: torch.Tensor, source: torch.Tensor, pad: torch.Tensor, target: torch.Tensor,
            target_pad: torch.Tensor, vocab_table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed negative log-likelihood, number of target wordpieces): the parts of the mean
        that data-parallel training adds up over processes before dividing."""
        target = self.producible(target, source, pad)
        bos = torch.full_like(target[:, :1], self.bos_id)
        tokens = torch.cat([bos, target[:, :-1]], dim=1)
        hidden = self.states(tokens, memory, source, pad, vocab_table)
        generated, attention, gate = self.parts(hidden, memory, source, pad, vocab_table)
        index = self.full_to_vocab[target]
        gen_prob = generated.gather(-1, index.clamp(min=0)[..., None]).squeeze(-1).exp() * (index >= 0)
        copy_prob = (attention * (source[:, None, :] == target[:, :, None])).sum(-1)
        prob = gate.squeeze(-1) * gen_prob + (1 - gate.squeeze(-1)) * copy_prob
        nll = -torch.log(prob + EPSILON)
        keep = (~target_pad).float()
        return (nll * keep).sum(), keep.sum()

    # -- decoding -------------------------------------------------------------------------
    def next_log_probs(self, tokens: torch.Tensor, memory: torch.Tensor, source: torch.Tensor,
                       pad: torch.Tensor, vocab_table: torch.Tensor, cross: torch.Tensor | None = None
                       ) -> torch.Tensor:
        """``[B, V]`` log-probabilities of the next wordpiece over the full vocabulary.
        ``memory``, ``source`` and ``pad`` may have a batch of 1 for ``B`` prefixes of one
        function (a beam): its keys and values are then projected once, not once per beam."""
        hidden = self.states(tokens, memory, source, pad, vocab_table, cross)[:, -1:]
        return self._full_log_probs(hidden, memory, source, pad, vocab_table, tokens)

    def next_log_probs_cached(self, token: torch.Tensor, position: torch.Tensor, past: torch.Tensor,
                              memory: torch.Tensor, source: torch.Tensor, pad: torch.Tensor,
                              vocab_table: torch.Tensor, cross: torch.Tensor | None = None
                              ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`next_parts_cached` spread over the full vocabulary as log-probabilities."""
        generated, copied, present = self.next_parts_cached(token, position, past, memory, source, pad, vocab_table,
                                                            cross)
        return self._spread(generated, copied, source, token), present

    def next_parts_cached(self, token: torch.Tensor, position: torch.Tensor, past: torch.Tensor,
                          memory: torch.Tensor, source: torch.Tensor, pad: torch.Tensor,
                          vocab_table: torch.Tensor, cross: torch.Tensor | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`next_log_probs` of the prefixes whose last wordpiece is ``token`` ``[B, 1]``
        (at ``position`` ``[1]``), the earlier ones read from ``past`` ``[layers, 2, B, t, H]``
        — each layer's self-attention keys and values of the prefix before it (``t`` may be
        0).  Returns the log-probabilities and ``[layers, 2, B, 1, H]``, this wordpiece's keys
        and values, which the caller appends to ``past`` for the next step.  Why: a step then
        reads one wordpiece through the layers instead of the whole prefix (pre-norm layers
        see only earlier positions, so the result is the same)."""
        copyable = self.copyable(source, pad)
        hidden = self.embed_inputs(token, memory, source, copyable, vocab_table, position)
        present = []
        for number, layer in enumerate(self.layers.layers):
            keys = None if cross is None else cross[number]
            hidden, kv = _decoder_layer_cached(layer, hidden, past[number], memory, pad, self.shape.heads, keys)
            present.append(kv)
        hidden = self.output_norm(hidden)
        generated, copied = self._step_parts(hidden, memory, source, pad, vocab_table)
        return generated, copied, torch.stack(present)

    def _step_parts(self, hidden: torch.Tensor, memory: torch.Tensor, source: torch.Tensor, pad: torch.Tensor,
                    vocab_table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``hidden`` ``[B, 1, H]`` → (probability of generating each vocabulary wordpiece
        ``[B, K]``, probability of copying each source position ``[B, S]``): the next
        wordpiece's distribution before it is spread over the full vocabulary.  Why apart:
        the runtime adds the copies to the generated wordpieces itself, over the vocabulary
        and the function's own wordpieces only, not over 30,522 columns at every step."""
        generated, attention, gate = self.parts(hidden, memory, source, pad, vocab_table)
        return gate[:, 0] * generated[:, 0].exp(), (1 - gate[:, 0]) * attention[:, 0]

    def _spread(self, generated: torch.Tensor, copied: torch.Tensor, source: torch.Tensor, tokens: torch.Tensor
                ) -> torch.Tensor:
        """:meth:`_step_parts` → ``[B, V]`` log-probabilities over the full vocabulary (the
        batch read from the input ``tokens``: an exported graph keeps it dynamic)."""
        batch = tokens.shape[0]
        prob = torch.zeros(batch, self.full_to_vocab.shape[0], device=generated.device)
        prob.scatter_add_(1, self.vocab_ids.expand(batch, -1), generated)  # distinct ids: add = set
        prob.scatter_add_(1, source.expand(batch, -1), copied)
        return torch.log(prob + EPSILON)

    def _full_log_probs(self, hidden: torch.Tensor, memory: torch.Tensor, source: torch.Tensor,
                        pad: torch.Tensor, vocab_table: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``hidden`` ``[B, 1, H]`` → ``[B, V]``: generation and copying over the full vocabulary."""
        generated, copied = self._step_parts(hidden, memory, source, pad, vocab_table)
        return self._spread(generated, copied, source, tokens)


def _positions(tokens: torch.Tensor) -> torch.Tensor:
    """``0 … T−1`` for ``tokens`` ``[B, T]``, computed from the tensor (a traced graph keeps
    ``T`` dynamic, where ``arange(tokens.shape[1])`` can freeze it)."""
    return torch.cumsum(torch.ones_like(tokens[0]), dim=0) - 1


def multi_head_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, heads: int, blocked: torch.Tensor,
               dropout: float, training: bool) -> torch.Tensor:
    """Scaled dot-product attention over ``heads`` heads; ``blocked`` broadcasts to ``[B, h, T, S]``."""
    def split(x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (heads, -1)).transpose(1, 2)

    q, k, v = split(query), split(key), split(value)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    weights = torch.softmax(scores.masked_fill(blocked, float("-inf")), dim=-1)
    weights = nn.functional.dropout(weights, dropout, training)
    return (weights @ v).transpose(1, 2).flatten(2)


def _decoder_layer(layer: nn.TransformerDecoderLayer, x: torch.Tensor, memory: torch.Tensor, causal: torch.Tensor,
                   pad: torch.Tensor, heads: int, cross: torch.Tensor | None = None) -> torch.Tensor:
    """``nn.TransformerDecoderLayer(norm_first=True, activation=relu)`` written out with shapes
    that stay dynamic in an exported graph (the module's own attention bakes the batch and
    length of the traced example into reshapes): same parameters, same arithmetic."""
    sa = layer.self_attn
    h = layer.norm1(x)
    q, k, v = nn.functional.linear(h, sa.in_proj_weight, sa.in_proj_bias).chunk(3, dim=-1)
    attended = multi_head_attention(q, k, v, heads, causal[None, None], sa.dropout, layer.training)
    x = x + layer.dropout1(sa.out_proj(attended))
    return _cross_and_feed_forward(layer, x, memory, pad, heads, cross)


def _decoder_layer_cached(layer: nn.TransformerDecoderLayer, x: torch.Tensor, past: torch.Tensor,
                          memory: torch.Tensor, pad: torch.Tensor, heads: int, cross: torch.Tensor | None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_decoder_layer` for one new position ``x`` ``[B, 1, H]`` after the positions whose
    self-attention keys and values are ``past`` ``[2, B, t, H]``; also returns the new
    position's ``[2, B, 1, H]``.  Nothing to mask: every earlier position may be seen."""
    sa = layer.self_attn
    h = layer.norm1(x)
    q, k, v = nn.functional.linear(h, sa.in_proj_weight, sa.in_proj_bias).chunk(3, dim=-1)
    keys, values = torch.cat([past[0], k], dim=1), torch.cat([past[1], v], dim=1)
    unblocked = torch.zeros((1, 1, 1, 1), dtype=torch.bool, device=x.device)  # broadcasts; no shape to freeze
    attended = multi_head_attention(q, keys, values, heads, unblocked, sa.dropout, layer.training)
    x = x + layer.dropout1(sa.out_proj(attended))
    return _cross_and_feed_forward(layer, x, memory, pad, heads, cross), torch.stack([k, v])


def _cross_and_feed_forward(layer: nn.TransformerDecoderLayer, x: torch.Tensor, memory: torch.Tensor,
                            pad: torch.Tensor, heads: int, cross: torch.Tensor | None) -> torch.Tensor:
    """The second and third blocks of a pre-norm decoder layer: cross-attention over the
    memory (keys and values given, or projected here), then the feed-forward."""
    training = layer.training
    p = layer.dropout.p
    hidden = x.shape[-1]
    ca = layer.multihead_attn
    h = layer.norm2(x)
    w, b = ca.in_proj_weight, ca.in_proj_bias
    q = nn.functional.linear(h, w[:hidden], b[:hidden])
    if cross is None:
        k = nn.functional.linear(memory, w[hidden:2 * hidden], b[hidden:2 * hidden])
        v = nn.functional.linear(memory, w[2 * hidden:], b[2 * hidden:])
    else:  # precomputed (NameDecoder.cross_keys)
        k, v = cross[0], cross[1]
    attended = multi_head_attention(q, k, v, heads, pad[:, None, None, :], ca.dropout, training)
    x = x + layer.dropout2(ca.out_proj(attended))
    h = layer.norm3(x)
    h = layer.linear2(nn.functional.dropout(torch.relu(layer.linear1(h)), p, training))
    return x + layer.dropout3(h)


def block_repeats(log_probs: torch.Tensor, tokens: torch.Tensor, bos_id: int) -> torch.Tensor:
    """``log_probs`` with each prefix's last wordpiece forbidden next (``load_load``,
    ``name_name``: a decoder's stutter that no real name has), except after ``[CLS]``."""
    last = tokens[:, -1]
    blocked = torch.zeros_like(log_probs, dtype=torch.bool)
    blocked[torch.arange(len(last)), last] = last != bos_id
    return log_probs.masked_fill(blocked, float("-inf"))


@torch.no_grad()
def greedy(decoder: NameDecoder, memory: torch.Tensor, source: torch.Tensor, pad: torch.Tensor,
           vocab_table: torch.Tensor) -> list[list[int]]:
    """Most likely wordpiece at each step, for a batch (validation during training)."""
    batch = memory.shape[0]
    tokens = torch.full((batch, 1), decoder.bos_id, dtype=torch.long, device=memory.device)
    done = torch.zeros(batch, dtype=torch.bool, device=memory.device)
    for _ in range(decoder.shape.max_length):
        step = block_repeats(decoder.next_log_probs(tokens, memory, source, pad, vocab_table), tokens,
                             decoder.bos_id).argmax(-1)
        step = torch.where(done, torch.full_like(step, decoder.eos_id), step)
        tokens = torch.cat([tokens, step[:, None]], dim=1)
        done |= step == decoder.eos_id
        if bool(done.all()):
            break
    out = []
    for row in tokens[:, 1:].tolist():
        out.append(row[:row.index(decoder.eos_id)] if decoder.eos_id in row else row)
    return out


@torch.no_grad()
def beam_search(decoder: NameDecoder, memory: torch.Tensor, source: torch.Tensor, pad: torch.Tensor,
                vocab_table: torch.Tensor, beam: int = 5, results: int = 5) -> list[tuple[list[int], float]]:
    """The ``results`` most likely names of ONE function (batch of 1) as (wordpieces, log-prob),
    best first; a name ends with ``[SEP]`` (not included, nor counted in its log-prob's ids)
    or, unfinished, at ``max_length`` wordpieces."""
    live: list[tuple[list[int], float]] = [([decoder.bos_id], 0.0)]
    finished: list[tuple[list[int], float]] = []
    for _ in range(decoder.shape.max_length):
        tokens = torch.as_tensor([ids for ids, _ in live], device=memory.device)
        log_probs = block_repeats(decoder.next_log_probs(tokens, memory, source, pad, vocab_table), tokens,
                                  decoder.bos_id)
        scores = log_probs + torch.as_tensor([s for _, s in live], device=memory.device)[:, None]
        top = torch.topk(scores.flatten(), min(beam * 2, scores.numel()))
        candidates = []
        for value, flat in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            row, token = divmod(flat, scores.shape[1])
            ids = live[row][0] + [token]
            if token == decoder.eos_id:
                finished.append((ids[1:-1], value))
            else:
                candidates.append((ids, value))
        live = candidates[:beam]
        best_live = live[0][1] if live else float("-inf")
        if len(finished) >= results and min(s for _, s in sorted(finished, key=lambda x: -x[1])[:results]) >= best_live:
            break
        if not live:
            break
    if len(finished) < results:  # names cut at max_length count too (as greedy's do)
        finished += [(ids[1:], score) for ids, score in live[:results - len(finished)]]
    finished.sort(key=lambda item: -item[1])
    return finished[:results]
