"""Attention for padding-free training batches without a GPU: causal SDPA run once per packed example.

A padding-free micro-batch is one row of concatenated examples whose position_ids restart at 0 for each
one. On CUDA, flash-attention's varlen kernel takes that directly. Transformers' `sdpa` path instead builds
a block-diagonal (T x T) mask over the whole row and runs masked attention on it: the cost grows with the
square of the row, not the sum of the squares of the examples, and masked CPU SDPA is the slow kernel (its
backward was 49% of a LoRA step on SmolLM2 with 8 examples of ~250 tokens packed). Here each example is
sliced out and given to unmasked causal SDPA, which is exact: a token sees only its own example's earlier
tokens, as under the block-diagonal mask.

Registered with transformers' AttentionInterface as ``sdpa_varlen``; any batch that is not one packed row
(padded batches, generation) falls through to plain `sdpa`, mask and all.
"""
from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "sdpa_varlen"


def packed_example_bounds(position_ids: torch.Tensor | None) -> list[tuple[int, int]] | None:
    """[(start, end)] of the examples in one packed row, or None when the batch is not one packed row
    (position_ids rising by one and restarting only at 0)."""
    if position_ids is None or position_ids.dim() != 2 or position_ids.shape[0] != 1:
        return None
    pos = position_ids[0]
    if pos.numel() < 2 or pos[0] != 0:
        return None
    step = pos[1:] - pos[:-1]
    restart = pos[1:] == 0
    if not bool(((step == 1) | restart).all()):
        return None
    starts = [0] + (torch.nonzero(restart).flatten() + 1).tolist()
    if len(starts) == 1:
        return None  # one example: plain causal SDPA already does the right thing
    return list(zip(starts, starts[1:] + [pos.numel()]))


def sdpa_varlen_attention_forward(module, query, key, value, attention_mask, position_ids=None, **kwargs):
    bounds = packed_example_bounds(position_ids)
    # Only when queries and keys are the same row (training, full prefill), not with a KV cache.
    if bounds is None or query.shape[2] != key.shape[2]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    kwargs.pop("is_causal", None)
    outputs = [sdpa_attention_forward(module, query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], None,
                                      is_causal=True, **kwargs)[0] for a, b in bounds]
    return torch.cat(outputs, dim=1), None  # (batch, tokens, heads, head_dim), as sdpa returns


AttentionInterface.register(NAME, sdpa_varlen_attention_forward)
AttentionMaskInterface.register(NAME, sdpa_mask)  # what the fall-through path needs
