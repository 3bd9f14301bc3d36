"""Attention: scaled_dot_product_attention as matmul -> (mask) -> softmax -> matmul, in PyTorch axis order."""

from __future__ import annotations

import math

from bridge.native.codegen import OpContext, lit
from bridge.native.ir import Node, Value
from bridge.native.registry import LayoutPolicy, converter

_LOWEST = "-3.4028234663852886e38"  # masked scores: finite, so WebGL stays happy; softmax gives exact zeros


def _check_sdpa(node: Node) -> str | None:
    query = node.args["query"]
    if float(node.args.get("dropout_p", 0.0)) != 0.0:
        return "dropout_p > 0 (PyTorch applies attention dropout even in eval mode)"
    if node.args.get("enable_gqa", False):
        return "enable_gqa"
    if query.shape[-1] is None:
        return "dynamic head size"
    return None


def _length(ctx: OpContext, name: str) -> str:
    """The sequence length (axis -2) of `name`: a literal, or computed from the inputs' sizes."""
    value = ctx.value(name)
    size = value.sizes[-2]
    return ctx.size(size) if size is not None else f"tf.shape({ctx.t(name)})[-2]"


@converter("aten.scaled_dot_product_attention.default", layout=LayoutPolicy.SOURCE, check=_check_sdpa,
           emits=("BatchMatMulV2", "Mul", "Softmax", "SelectV2", "AddV2", "Range", "GreaterEqual", "Any"))
def scaled_dot_product_attention(ctx: OpContext, node: Node) -> str:
    """aten::scaled_dot_product_attention(Tensor query, Tensor key, Tensor value, Tensor? attn_mask=None,
    float dropout_p=0.0, bool is_causal=False, *, float? scale=None, bool enable_gqa=False) -> Tensor
    (a query whose boolean mask row allows no key gives zeros, as PyTorch does since 2.5: a causal decoder with a
    padding mask has such rows, where a softmax over equally masked scores would average every value instead)"""
    query = ctx.value("query")
    scale = ctx.arg("scale") or 1.0 / math.sqrt(query.shape[-1])
    scores = ctx.let(f"tf.linalg.matmul({ctx.t('query')}, {ctx.t('key')}, transpose_b=True) * {lit(float(scale))}",
                     "scores")
    mask = node.args.get("attn_mask")
    if isinstance(mask, Value):
        masked = f"tf.where({ctx.t('attn_mask')}, {scores}, {_LOWEST})" if mask.dtype == "bool" \
            else f"{scores} + {ctx.t('attn_mask')}"
        scores = ctx.let(masked, "masked")
    if ctx.arg("is_causal", False):
        length, source = (_length(ctx, name) for name in ("query", "key"))
        # PyTorch's causal mask is top-left aligned: query i sees keys 0..i
        scores = ctx.let(f"tf.where(tf.range({length})[:, None] >= tf.range({source})[None, :], {scores}, "
                         f"{_LOWEST})", "causal")
    attended = f"tf.linalg.matmul(tf.nn.softmax({scores}, axis=-1), {ctx.t('value')})"
    if isinstance(mask, Value) and mask.dtype == "bool":
        attended = ctx.let(attended, "attended")
        return (f"tf.where(tf.reduce_any({ctx.t('attn_mask')}, axis=-1, keepdims=True), {attended}, "
                f"tf.zeros_like({attended}))")
    return attended
