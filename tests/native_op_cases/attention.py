"""Attention cases: scaled_dot_product_attention with a boolean mask (True = attend), as transformers' decoders
pass a causal + padding mask. A query row whose mask allows no key must give zeros, as PyTorch does (>= 2.5),
not an average of every value."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from tests.native_op_cases.base import A, OpCase

SDPA = A + "scaled_dot_product_attention.default"
SOURCE = {"in0": "source", "in1": "source", "in2": "source"}


class BoolMaskAttention(nn.Module):
    """sdpa under a (batch, 1, queries, keys) bool mask: a padding mask from an int input (0 = padding), with
    query 2 of every batch and query 0 of the second batch allowed no key at all."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(q.shape[-2])[None, None, :, None]
        batch = torch.arange(q.shape[0])[:, None, None, None]
        keep = (pad > 0)[:, None, None, :] & (rows != 2) & ~((batch == 1) & (rows == 0))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep)


class PaddedHeads(nn.Module):
    """BERT-style attention: (1, heads, length, head size) from a (1, length) 0/1 padding mask, heads made
    distinct (each scaled differently), so a per-head form that mixes up heads or masks differs."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        heads = torch.arange(1, q.shape[1] + 1, dtype=q.dtype)[None, :, None, None]
        keep = (pad > 0)[:, None, None, :]
        return F.scaled_dot_product_attention(q * heads, k, v * heads, attn_mask=keep)


class CausalHeads(nn.Module):
    """GPT-style causal attention over (2, heads, length, head size), heads made distinct."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        heads = torch.arange(1, q.shape[1] + 1, dtype=q.dtype)[None, :, None, None]
        return F.scaled_dot_product_attention(q * heads, k, v + heads, is_causal=True)


CASES = [
    # the per-head form (one plain matmul per head, the mask as an additive bias; bridge/native/ops/attention.py)
    OpCase("sdpa-per-head-padding-mask", PaddedHeads, [(1, 4, 7, 8), (1, 4, 7, 8), (1, 4, 7, 6), (1, 7)], (SDPA,),
           layouts=SOURCE, ints=(3,)),
    OpCase("sdpa-per-head-causal", CausalHeads, [(2, 3, 6, 8), (2, 3, 6, 8), (2, 3, 6, 8)], (SDPA,),
           layouts={"in0": "source", "in1": "source", "in2": "source"}),
    OpCase("sdpa-bool-mask-fully-masked-rows", BoolMaskAttention, [(2, 3, 5, 8), (2, 3, 6, 8), (2, 3, 6, 4), (2, 6)],
           (SDPA,), layouts=SOURCE, ints=(3,)),
]
