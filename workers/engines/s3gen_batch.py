"""S3Gen's flow (speech tokens -> mel frames) for the windows of several sequences in one call.

Upstream `CausalMaskedDiffWithXvec.inference` takes a batch, but it concatenates each row's voice
prompt and tokens as whole tensors, so every row must have a prompt of the same length, and its
encoder lets the pre-lookahead convolution of a row's last tokens read the padding of longer rows.
Here each row is its own prompt tokens followed by its window, right-padded to the longest row:

- the encoder masks padded frames in its attention (upstream's masks); its only look-ahead (the
  pre-lookahead layer, three tokens) reads zeros past a row's end, as it does alone, because padded
  frames are zeroed before it; every later layer looks left only (the upsampling convolution) or
  is masked (attention);
- the CFM decoder gets per-row masks, voice prompt features, speaker embeddings and starting
  noise; its convolutions are causal and its attention is masked, so padding never reaches a real
  frame.

A row's mel frames therefore match the row computed alone up to float rounding. HiFiGAN is not
batched here: its excitation source draws random phases and noise for the whole batch at once
(a row's audio would depend on its neighbours) and it carries a per-row `cache_source`.
Only model-worker processes import this module.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class FlowRow:
    """One sequence's window: its tokens (context, new tokens, lookahead) and its voice."""
    tokens: torch.Tensor            # (n,) long
    gen: dict                       # S3Gen reference dict: prompt_token, prompt_feat, embedding, ...
    noise: torch.Tensor             # (1, 80, 2 * (prompt tokens + n)) starting noise of the flow


def _pad_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """(B, size) True where a row has a frame."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


def encode(encoder: Any, xs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Upstream UpsampleConformerEncoder.forward (full-context decoding) with padded frames zeroed
    before the pre-lookahead layer. Returns (B, 2T, C) and the (B, 1, 2T) frame mask."""
    from chatterbox.models.s3gen.utils.mask import add_optional_chunk_mask

    masks = _pad_mask(lengths, xs.size(1)).unsqueeze(1)                     # (B, 1, T)
    if encoder.global_cmvn is not None:
        xs = encoder.global_cmvn(xs)
    xs, pos_emb, masks = encoder.embed(xs, masks)
    chunk_masks = add_optional_chunk_mask(xs, masks, encoder.use_dynamic_chunk, encoder.use_dynamic_left_chunk,
                                          0, encoder.static_chunk_size, -1)
    xs = encoder.pre_lookahead_layer(xs * masks.transpose(1, 2).to(xs.dtype))
    xs = encoder.forward_layers(xs, chunk_masks, pos_emb, masks)
    xs, lengths = encoder.up_layer(xs.transpose(1, 2).contiguous(), lengths)
    xs = xs.transpose(1, 2).contiguous()
    masks = _pad_mask(lengths, xs.size(1)).unsqueeze(1)
    xs, pos_emb, masks = encoder.up_embed(xs, masks)
    chunk_masks = add_optional_chunk_mask(xs, masks, encoder.use_dynamic_chunk, encoder.use_dynamic_left_chunk,
                                          0, encoder.static_chunk_size * encoder.up_layer.stride, -1)
    xs = encoder.forward_up_layers(xs, chunk_masks, pos_emb, masks)
    if encoder.normalize_before:
        xs = encoder.after_norm(xs)
    return xs, masks


def flow_mels(flow: Any, rows: list[FlowRow], n_timesteps: int, meanflow: bool = False) -> list[torch.Tensor]:
    """Mel frames (1, 80, 2n) of each row's tokens, all rows in one encoder and one CFM pass."""
    device = flow.input_embedding.weight.device
    prompts = [row.gen["prompt_token"].reshape(-1).to(device) for row in rows]
    lengths = torch.tensor([p.numel() + row.tokens.numel() for p, row in zip(prompts, rows, strict=True)],
                           device=device)
    size = int(lengths.max())
    token = torch.zeros(len(rows), size, dtype=torch.long, device=device)
    for i, (prompt, row) in enumerate(zip(prompts, rows, strict=True)):
        token[i, :lengths[i]] = torch.cat([prompt, row.tokens.to(device)])
    embedding = torch.cat([torch.atleast_2d(row.gen["embedding"]).to(device) for row in rows])
    embedding = flow.spk_embed_affine_layer(F.normalize(embedding, dim=1))
    mask = _pad_mask(lengths, size).unsqueeze(-1).to(embedding.dtype)
    h, frame_mask = encode(flow.encoder, flow.input_embedding(token) * mask, lengths)
    h = flow.encoder_proj(h)
    frames = h.size(1)
    conds = torch.zeros(len(rows), 80, frames, device=device, dtype=h.dtype)
    noise = torch.zeros(len(rows), 80, frames, device=device, dtype=h.dtype)
    prompt_mels = []
    for i, row in enumerate(rows):
        feat = row.gen["prompt_feat"].reshape(-1, 80)
        prompt_mels.append(feat.size(0))
        conds[i, :, :feat.size(0)] = feat.T.to(device=device, dtype=h.dtype)
        noise[i, :, :row.noise.size(2)] = row.noise[0].to(device=device, dtype=h.dtype)
    feat, _ = flow.decoder(mu=h.transpose(1, 2).contiguous(), mask=frame_mask.to(h.dtype), spks=embedding,
                           cond=conds, n_timesteps=n_timesteps, noised_mels=noise, meanflow=meanflow)
    return [feat[i:i + 1, :, prompt_mels[i]: 2 * int(lengths[i])] for i in range(len(rows))]
