"""Continuous batching for Chatterbox's T3: one decode step for every running sequence.

Upstream `T3.inference` decodes one request (one CFG pair) with the shared conditionals. Here each
sequence owns its rows (two for classifier-free guidance, one without it or on turbo), its
conditionals, its sampling settings and its own `torch.Generator`, so a seeded request samples the
same tokens alone or batched. The batch keeps one key/value cache for all rows, left-padded with
an attention mask; position ids count each row's real tokens (T3's learned speech position
embeddings are added per sequence before the transformer). A sequence joins after a prefill of
its own rows and leaves (finished, paused or cancelled) by slicing its rows out; a paused
sequence keeps its rows' cache and joins again later. Only model-worker processes import this.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TopKLogitsWarper,
    TopPLogitsWarper,
)


@dataclass(frozen=True)
class Sampling:
    temperature: float
    cfg_weight: float
    repetition_penalty: float
    min_p: float = 0.0
    top_p: float = 1.0
    top_k: int = 0


@dataclass(eq=False)
class Sequence:
    """One text chunk's speech-token generation."""
    embeds: torch.Tensor                # (rows, prompt_len, dim): conditionals, text and start token(s)
    sampling: Sampling
    generator: torch.Generator
    cap: int                            # most speech tokens to generate
    turbo: bool = False
    tokens: list[int] = field(default_factory=list)    # sampled so far (the stop token is not kept)
    finished: bool = False
    # decoding state
    kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None   # own rows' cache while outside a batch
    length: int = 0                     # real positions in the cache
    logits: torch.Tensor | None = None  # (rows, vocab) for the next token

    @property
    def rows(self) -> int:
        return self.embeds.size(0)


class T3Batch:
    """The running sequences of one model worker and their shared cache."""

    def __init__(self, t3: Any, stop_token: int, start_token: int, step_fn: Any = None):
        self.t3 = t3
        self.stop_token = stop_token
        self.start_token = start_token
        self.members: list[Sequence] = []
        self.cache: DynamicCache | None = None   # every layer's (rows, heads, L, d) keys and values
        self.mask: torch.Tensor | None = None    # (rows, L) 1 = real position
        self._decode = step_fn or self._forward

    # -- membership ---------------------------------------------------------------------------------
    def run(self, sequences: list[Sequence]) -> None:
        """Make `sequences` the batch (others leave with their cache), then decode one token each."""
        for seq in [s for s in self.members if s not in sequences]:
            self._leave(seq, keep=not seq.finished)
        for seq in sequences:
            if seq not in self.members and not seq.finished:
                if seq.kv is None:
                    self._prefill(seq)
                self._join(seq)
        self._sample_all()
        running = [s for s in self.members if not s.finished]
        for seq in [s for s in self.members if s.finished]:
            self._leave(seq, keep=False)
        if running:
            self._step(running)

    def discard(self, seq: Sequence) -> None:
        """A cancelled or failed sequence: drop its rows and everything it holds."""
        if seq in self.members:
            self._leave(seq, keep=False)
        seq.kv = None
        seq.logits = None

    def clear(self) -> None:
        for seq in list(self.members):
            self._leave(seq, keep=True)

    def _row_slices(self) -> list[slice]:
        out, start = [], 0
        for seq in self.members:
            out.append(slice(start, start + seq.rows))
            start += seq.rows
        return out

    def _leave(self, seq: Sequence, keep: bool) -> None:
        index = self.members.index(seq)
        rows = self._row_slices()[index]
        layers = self.cache.layers
        if keep:
            pad = self.mask.size(1) - seq.length
            seq.kv = [(layer.keys[rows, :, pad:].clone(), layer.values[rows, :, pad:].clone()) for layer in layers]
        else:
            seq.kv = None
        self.members.pop(index)
        if not self.members:
            self.cache, self.mask = None, None
            return
        kept = torch.tensor([i for i in range(self.mask.size(0)) if not rows.start <= i < rows.stop],
                            device=self.mask.device)
        self.mask = self.mask.index_select(0, kept)
        drop = int((self.mask.sum(0) == 0).long().cumprod(0).sum())   # leading columns nobody uses
        self.mask = self.mask[:, drop:]
        for layer in layers:
            layer.keys = layer.keys.index_select(0, kept)[:, :, drop:]
            layer.values = layer.values.index_select(0, kept)[:, :, drop:]

    def _join(self, seq: Sequence) -> None:
        own_mask = torch.ones(seq.rows, seq.length, dtype=torch.long, device=seq.kv[0][0].device)
        if not self.members:
            self.cache, self.mask = DynamicCache(ddp_cache_data=seq.kv), own_mask
        else:
            width = max(self.mask.size(1), seq.length)
            self.mask = torch.cat([_left_pad(self.mask, width), _left_pad(own_mask, width)])
            for layer, (keys, values) in zip(self.cache.layers, seq.kv, strict=True):
                layer.keys = torch.cat([_left_pad(layer.keys, width, dim=2), _left_pad(keys, width, dim=2)])
                layer.values = torch.cat([_left_pad(layer.values, width, dim=2), _left_pad(values, width, dim=2)])
        seq.kv = None
        self.members.append(seq)

    # -- the model ----------------------------------------------------------------------------------
    def _prefill(self, seq: Sequence) -> None:
        out = self.t3.tfmr(inputs_embeds=seq.embeds, use_cache=True)
        cache = out.past_key_values
        seq.kv = [(layer.keys, layer.values) for layer in cache.layers]
        seq.length = seq.embeds.size(1)
        seq.logits = self.t3.speech_head(out.last_hidden_state[:, -1]).float()

    def _step(self, running: list[Sequence]) -> None:
        embeds = torch.cat([self._next_embed(seq) for seq in running])          # (rows, 1, dim)
        positions = torch.cat([torch.full((seq.rows, 1), seq.length, dtype=torch.long) for seq in running])
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        hidden = self._decode(embeds, positions.to(embeds.device), self.mask, self.cache)
        logits = self.t3.speech_head(hidden).float()
        start = 0
        for seq in running:
            seq.logits = logits[start:start + seq.rows]
            seq.length += 1
            start += seq.rows

    def _forward(self, embeds: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor,
                 cache: DynamicCache) -> torch.Tensor:
        """One decode step; the cache grows by one position in place. Returns the last hidden states."""
        out = self.t3.tfmr(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                           past_key_values=cache, use_cache=True)
        return out.last_hidden_state[:, -1]

    def _next_embed(self, seq: Sequence) -> torch.Tensor:
        token = torch.tensor([[seq.tokens[-1]]], device=seq.embeds.device)
        embed = self.t3.speech_emb(token)
        if not seq.turbo:
            # upstream: the first sampled token sits at speech position 1 (the start token at 0)
            embed = embed + self.t3.speech_pos_emb.get_fixed_embedding(len(seq.tokens))
        return embed.expand(seq.rows, -1, -1).to(seq.embeds.dtype)

    # -- sampling -----------------------------------------------------------------------------------
    def _sample_all(self) -> None:
        for seq in self.members:
            if seq.logits is None or seq.finished:
                continue
            token = sample(seq, self.start_token)
            seq.logits = None
            if token == self.stop_token or token is None:
                seq.finished = True
                continue
            seq.tokens.append(token)
            if len(seq.tokens) >= seq.cap:
                seq.finished = True


def sample(seq: Sequence, start_token: int) -> int | None:
    """One token for `seq`, as upstream's loops do (CFG, repetition penalty, temperature, min_p,
    top_p; turbo: temperature, top_k, top_p, repetition penalty), drawn from its own generator."""
    s = seq.sampling
    logits = seq.logits[:1]
    if seq.rows == 2:
        logits = logits + s.cfg_weight * (logits - seq.logits[1:2])
    history = torch.tensor([seq.tokens if seq.turbo and seq.tokens else [start_token, *seq.tokens]],
                           device=logits.device)
    if seq.turbo:
        if s.temperature != 1.0:
            logits = logits / s.temperature
        if s.top_k > 0:
            logits = TopKLogitsWarper(s.top_k)(history, logits)
        if s.top_p < 1.0:
            logits = TopPLogitsWarper(s.top_p)(history, logits)
        if s.repetition_penalty != 1.0:
            logits = RepetitionPenaltyLogitsProcessor(s.repetition_penalty)(history, logits)
        if torch.all(logits == -float("inf")):
            return None
    else:
        logits = RepetitionPenaltyLogitsProcessor(float(s.repetition_penalty))(history, logits)
        if s.temperature != 1.0:
            logits = logits / s.temperature
        logits = MinPLogitsWarper(min_p=s.min_p)(history, logits)
        logits = TopPLogitsWarper(top_p=s.top_p)(history, logits)
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs.cpu(), 1, generator=seq.generator))


def _left_pad(tensor: torch.Tensor, width: int, dim: int = 1) -> torch.Tensor:
    missing = width - tensor.size(dim)
    if missing <= 0:
        return tensor
    pad = [0, 0] * (tensor.dim() - dim - 1) + [missing, 0]
    return F.pad(tensor, pad)
