"""Masked attention for batched decoding on CPU without copying the KV cache per layer and token.

SmolLM2 (like Llama-2-70B, Llama-3, Qwen) has fewer key/value heads than query heads (GQA: 3 vs 9). With
an attention mask, which every ragged batch has, transformers' `sdpa` path on CPU first repeats keys and
values to the query heads (`repeat_kv`): a fresh copy of the whole cache, three times its size, in every
layer at every decoded token. PyTorch's CPU SDPA takes the unrepeated tensors with ``enable_gqa=True``,
mask and all: identical outputs, 9.4x faster at 64 rows x 1,500 cached tokens (27 vs 254 ms per layer call,
one thread). Registered with transformers' AttentionInterface as ``sdpa_gqa``; without a mask, or when
the heads already match, it is plain `sdpa`.
"""
from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "sdpa_gqa"


def sdpa_gqa_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                               scaling: float | None = None, is_causal: bool | None = None, **kwargs):
    if attention_mask is None or key.shape[1] == query.shape[1] or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    # With a mask, `sdpa` never uses SDPA's causal flag either: the mask says everything.
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                                           dropout_p=dropout, scale=scaling, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, sdpa_gqa_attention_forward)
AttentionMaskInterface.register(NAME, sdpa_mask)
