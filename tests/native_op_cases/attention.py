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


class ProjectedAttention(nn.Module):
    """BERT/ViT/Whisper-style attention: q, k, v from linear layers, viewed to (1, S, H, D) and moved to
    (1, H, S, D) (`permute` as BERT writes it, else transpose(1, 2)), the heads joined back for an output
    projection. `mask`: a (1, S) 0/1 padding input follows; `memory`: keys and values come from a second input
    (cross-attention); `shared`: the query projection is read elsewhere too (so it must still be computed);
    `query_scale`: the query projection is scaled before the view and the attention's own scale is 1 (Whisper)."""

    def __init__(self, features: int = 24, heads: int = 3, bias: bool = True, permute: bool = True,
                 mask: bool = False, causal: bool = False, memory: bool = False, shared: bool = False,
                 query_scale: float | None = None) -> None:
        super().__init__()
        self.heads, self.permute, self.mask, self.causal, self.memory, self.shared = (
            heads, permute, mask, causal, memory, shared)
        self.query_scale = query_scale
        self.q, self.k, self.v = (nn.Linear(features, features, bias=bias) for _ in range(3))
        self.o = nn.Linear(features, features)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        t = t.view(t.shape[0], t.shape[1], self.heads, -1)
        return t.permute(0, 2, 1, 3) if self.permute else t.transpose(1, 2)

    def forward(self, x: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        source = rest[0] if self.memory else x
        keep = (rest[-1] > 0)[:, None, None, :] if self.mask else None
        query = self.q(x)
        scaled = query if self.query_scale is None else query * self.query_scale
        y = F.scaled_dot_product_attention(self._split(scaled), self._split(self.k(source)),
                                           self._split(self.v(source)), attn_mask=keep, is_causal=self.causal,
                                           scale=None if self.query_scale is None else 1.0)
        out = self.o(y.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1))
        return out + query if self.shared else out


def projected(**kw: object) -> type[nn.Module]:
    """A ProjectedAttention factory for a case table (OpCase.make takes no arguments)."""
    return lambda: ProjectedAttention(**kw)  # type: ignore[return-value]


ONE = {"x": "source"}
TWO = {"in0": "source", "in1": "source"}
# (case id, ProjectedAttention options, input shapes, int inputs, layouts, dynamic axes); the per-head projected
# form is used for all but the last two (tests/test_native_attention_forms.py checks which form each gets)
PROJECTED_CASES = [
    ("sdpa-projected-padding-mask", {"mask": True}, [(1, 7, 24), (1, 7)], (1,), TWO, {}),
    ("sdpa-projected-causal-no-bias", {"bias": False, "permute": False, "causal": True}, [(1, 6, 24)], (), ONE, {}),
    ("sdpa-projected-cross-attention", {"memory": True}, [(1, 7, 24), (1, 5, 24)], (), TWO, {}),
    ("sdpa-projected-dynamic-length", {}, [(1, 6, 24)], (), ONE, {"x": {1: "length"}}),
    ("sdpa-projected-scaled-query", {"query_scale": 0.3, "bias": False}, [(1, 6, 24)], (), ONE, {}),
    ("sdpa-projection-read-elsewhere", {"shared": True}, [(1, 7, 24)], (), ONE, {}),
    ("sdpa-projected-batch-2", {"mask": True}, [(2, 7, 24), (2, 7)], (1,), TWO, {}),
]

CASES = [
    # the per-head form (one plain matmul per head, the mask as an additive bias; bridge/native/ops/attention.py)
    OpCase("sdpa-per-head-padding-mask", PaddedHeads, [(1, 4, 7, 8), (1, 4, 7, 8), (1, 4, 7, 6), (1, 7)], (SDPA,),
           layouts=SOURCE, ints=(3,)),
    OpCase("sdpa-per-head-causal", CausalHeads, [(2, 3, 6, 8), (2, 3, 6, 8), (2, 3, 6, 8)], (SDPA,),
           layouts={"in0": "source", "in1": "source", "in2": "source"}),
    OpCase("sdpa-bool-mask-fully-masked-rows", BoolMaskAttention, [(2, 3, 5, 8), (2, 3, 6, 8), (2, 3, 6, 4), (2, 6)],
           (SDPA,), layouts=SOURCE, ints=(3,)),
] + [OpCase(id_, projected(**kw), shapes, (SDPA,), layouts=layouts, ints=ints, dynamic=dynamic)
     for id_, kw, shapes, ints, layouts, dynamic in PROJECTED_CASES]
