"""Attention: scaled_dot_product_attention as matmul -> (mask) -> softmax -> matmul, in PyTorch axis order.

Written in the forms TF.js's wasm backend runs fastest (measured in benchmarks/attn_micro.mjs, TF.js 4.22):
its BatchMatMul takes XNNPACK's fast path only for a batch of 1 without adjoint flags, and runs every other
batch matmul (a batch of heads, or `adj_y`) through a naive loop 5-25x slower, while a Transpose, a Split and a
Concat of the same tensors cost little. So when the number of heads (times the batch) is known, the scores and the
weighted values are one plain matmul per head: K is transposed once, Q, K^T, P and V are split per head, the head
results concatenated. Masks are added as a bias (0 or -1e30) rather than selected with tf.where: TF.js's `where`
broadcasts its operands with Tile, which is slow, where an Add broadcasts in the kernel. Both forms are exact:
the per-head matmuls compute the same sums, and a score plus 0 is the score, a score plus -1e30 an exact zero
after the softmax."""

from __future__ import annotations

import math

from bridge.native.codegen import OpContext, lit
from bridge.native.ir import Node, Value
from bridge.native.registry import LayoutPolicy, converter

_LOWEST = "-3.4028234663852886e38"  # masked scores: finite, so WebGL stays happy; softmax gives exact zeros
# Added to masked float32 scores: finite even after adding any score below 1e37, so a row that allows no key
# stays finite (then zeroed), and exp(score - 1e30 - max) is an exact 0 for every other row.
_MASK_BIAS = "-1e30"
MAX_SPLIT_HEADS = 64  # above this many heads (times the batch), one batch matmul: op count would dominate


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


def split_heads(query: Value, key: Value, value: Value) -> int | None:
    """How many (batch x head) matrices the per-head form splits into, or None to keep one batch matmul: the
    leading axes must be known and the same for query, key and value (no broadcasting), float32, more than 1."""
    lead = query.shape[:-2]
    if query.dtype != "float32" or value.shape[-1] is None or any(d is None for d in lead):
        return None
    if key.shape[:-2] != lead or value.shape[:-2] != lead:
        return None
    count = math.prod(int(d) for d in lead)
    return count if 1 < count <= MAX_SPLIT_HEADS else None


def _per_head(ctx: OpContext, a: str, b: str, heads: int, hint: str) -> str:
    """[heads, m, k] x [heads, k, n] as one plain matmul per head, concatenated back to [heads, m, n]."""
    return ctx.let(f"tf.concat([tf.linalg.matmul(a, b) for a, b in zip(tf.split({a}, {heads}), "
                   f"tf.split({b}, {heads}))], axis=0)", hint)


@converter("aten.scaled_dot_product_attention.default", layout=LayoutPolicy.SOURCE, check=_check_sdpa,
           emits=("BatchMatMulV2", "Mul", "Softmax", "SelectV2", "AddV2", "Range", "GreaterEqual", "Any", "Split",
                  "ConcatV2", "Transpose", "Reshape", "Cast", "LogicalNot", "Less"))
def scaled_dot_product_attention(ctx: OpContext, node: Node) -> str:
    """aten::scaled_dot_product_attention(Tensor query, Tensor key, Tensor value, Tensor? attn_mask=None,
    float dropout_p=0.0, bool is_causal=False, *, float? scale=None, bool enable_gqa=False) -> Tensor
    (a query whose boolean mask row allows no key gives zeros, as PyTorch does since 2.5: a causal decoder with a
    padding mask has such rows, where a softmax over equally masked scores would average every value instead)"""
    query, key, value = (ctx.value(n) for n in ("query", "key", "value"))
    scale = ctx.arg("scale") or 1.0 / math.sqrt(query.shape[-1])
    heads = split_heads(query, key, value)
    fast = query.dtype == "float32"  # additive masks: -1e30 is not finite in float16
    q, k, v = ctx.t("query"), ctx.t("key"), ctx.t("value")
    if heads is None:
        scores = f"tf.linalg.matmul({q}, {k}, transpose_b=True)"
    else:
        head, dv = query.shape[-1], value.shape[-1]
        kt = f"tf.transpose(tf.reshape({k}, [{heads}, -1, {head}]), [0, 2, 1])"
        flat = _per_head(ctx, f"tf.reshape({q}, [{heads}, -1, {head}])", kt, heads, "scores")
        lead = ", ".join(str(int(d)) for d in query.shape[:-2])
        scores = f"tf.reshape({flat}, [{lead}, -1, {_length(ctx, 'key')}])"
    scores = ctx.let(f"{scores} * {lit(float(scale))}", "scores")
    mask = node.args.get("attn_mask")
    bool_mask = isinstance(mask, Value) and mask.dtype == "bool"
    if isinstance(mask, Value):
        m = ctx.t("attn_mask")
        if not bool_mask:
            masked = f"{scores} + {m}"
        elif fast:
            masked = f"{scores} + tf.cast(tf.logical_not({m}), {scores}.dtype) * {_MASK_BIAS}"
        else:
            masked = f"tf.where({m}, {scores}, {_LOWEST})"
        scores = ctx.let(masked, "masked")
    if ctx.arg("is_causal", False):
        length, source = (_length(ctx, name) for name in ("query", "key"))
        # PyTorch's causal mask is top-left aligned: query i sees keys 0..i
        if fast:
            scores = ctx.let(f"{scores} + tf.cast(tf.range({length})[:, None] < tf.range({source})[None, :], "
                             f"{scores}.dtype) * {_MASK_BIAS}", "causal")
        else:
            scores = ctx.let(f"tf.where(tf.range({length})[:, None] >= tf.range({source})[None, :], {scores}, "
                             f"{_LOWEST})", "causal")
    probs = f"tf.nn.softmax({scores}, axis=-1)"
    if heads is None:
        attended = f"tf.linalg.matmul({probs}, {v})"
    else:
        flat = _per_head(ctx, f"tf.reshape({probs}, [{heads}, -1, {_length(ctx, 'key')}])",
                         f"tf.reshape({v}, [{heads}, -1, {dv}])", heads, "attended")
        attended = f"tf.reshape({flat}, [{lead}, -1, {dv}])"
    if bool_mask:
        attended = ctx.let(attended, "attended")
        allowed = f"tf.reduce_any({ctx.t('attn_mask')}, axis=-1, keepdims=True)"
        if fast:
            return f"{attended} * tf.cast({allowed}, {attended}.dtype)"
        return f"tf.where({allowed}, {attended}, tf.zeros_like({attended}))"
    return attended
