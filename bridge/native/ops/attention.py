"""Attention: scaled_dot_product_attention as matmul -> (mask) -> softmax -> matmul, in PyTorch axis order.

Written in the forms TF.js's wasm backend runs fastest (measured with kernel micro-benchmarks and benchmarks/attn_ab.mjs, TF.js 4.22):
its BatchMatMul takes XNNPACK's fast path only for a batch of 1 without adjoint flags, and runs every other
batch matmul (a batch of heads, or `adj_y`) through a naive loop 5-25x slower, while a Transpose, a Split and a
Concat of the same tensors cost little. So when the number of heads (times the batch) is known, the scores and the
weighted values are one plain matmul per head: K is transposed once, Q, K^T, P and V are split per head, the head
results concatenated. Masks are added as a bias (0 or -1e9) rather than selected with tf.where: TF.js's `where`
broadcasts its operands with Tile, which is slow, where an Add broadcasts in the kernel. Both forms are exact:
the per-head matmuls compute the same sums, and a score plus 0 is the score, a score plus -1e9 an exact zero
after the softmax."""

from __future__ import annotations

import math

from bridge.native.codegen import OpContext, lit
from bridge.native.ir import Node, Value
from bridge.native.registry import LayoutPolicy, converter

_LOWEST = "-3.4028234663852886e38"  # masked scores: finite, so WebGL stays happy; softmax gives exact zeros
# Added to masked float32 scores. exp(score - 1e9 - max) is an exact 0 in float32 for any row whose scores lie
# within 1e9 of each other, as exp(-inf) is in PyTorch. A row that allows no key (then zeroed) stays finite on
# every TF.js backend with their single Softmax kernel: WebGL's max reduction starts from -1e20 and its softmax
# subtracts a log-sum-exp, which a bias near -1e20 or below turns into inf (bridge.tfjs.masked_softmax, which spells
# out softmaxes fed by such fills, leaves this one alone).
_MASK_BIAS = "-1e9"
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


def _heads(x: str, heads: int) -> str:
    """The (batch x head) matrices of `x`, a [heads, m, n] tensor, as a list of [1, m, n] tensors, in order."""
    return f"tf.split({x}, {heads})"


def _per_head(ctx: OpContext, a: str, b: str, heads: int, hint: str) -> str:
    """[heads, m, k] x [heads, k, n] as one plain matmul per head, concatenated back to [heads, m, n]."""
    return ctx.let(f"tf.concat([tf.linalg.matmul(a, b) for a, b in zip({_heads(a, heads)}, {_heads(b, heads)})], "
                   "axis=0)", hint)


def _one_bias_for_all_heads(mask: object) -> bool:
    """True when the mask (if any) is the same for every (batch, head) matrix: no leading axis but of size 1."""
    return not isinstance(mask, Value) or all(d == 1 for d in mask.shape[:-2])


def _bias(ctx: OpContext, mask: object, causal: bool, like: str, squeeze: bool = False) -> str | None:
    """The masks as one additive float32 bias (0 where allowed, -1e9 where not), or None without masks; with
    `squeeze`, a mask's leading axes (all of size 1) are dropped, so the bias is 2-D."""
    terms = []
    if isinstance(mask, Value):
        m = ctx.t("attn_mask")
        term = f"tf.cast(tf.logical_not({m}), {like}.dtype) * {_MASK_BIAS}" if mask.dtype == "bool" else m
        if squeeze and mask.rank > 2:
            term = ctx.let(term, "mask_bias")
            term = f"tf.reshape({term}, tf.shape({term})[-2:])"
        terms.append(term)
    if causal:
        length, source = (_length(ctx, name) for name in ("query", "key"))
        # PyTorch's causal mask is top-left aligned: query i sees keys 0..i
        terms.append(f"tf.cast(tf.range({length})[:, None] < tf.range({source})[None, :], {like}.dtype) * "
                     f"{_MASK_BIAS}")
    return " + ".join(terms) if terms else None


def _per_head_softmax(ctx: OpContext, heads: int, scale: float, mask: object, causal: bool) -> str:
    """The whole attention one head at a time (softmax(q_h k_h^T * scale + bias) v_h), heads concatenated once
    at the end: no split of the probabilities, no concat of the scores. Only when one bias serves every head."""
    query, value = ctx.value("query"), ctx.value("value")
    head, dv = query.shape[-1], value.shape[-1]
    q = f"tf.reshape({ctx.t('query')}, [{heads}, -1, {head}])"
    kt = f"tf.transpose(tf.reshape({ctx.t('key')}, [{heads}, -1, {head}]), [0, 2, 1])"
    v = f"tf.reshape({ctx.t('value')}, [{heads}, -1, {dv}])"
    bias = _bias(ctx, mask, causal, ctx.t("query"), squeeze=True)
    add = "" if bias is None else f" + {ctx.let(bias, 'bias')}"
    flat = ctx.let(f"tf.concat([tf.linalg.matmul(tf.nn.softmax(tf.linalg.matmul(a, b) * {lit(scale)}{add}, "
                   f"axis=-1), c) for a, b, c in zip({_heads(q, heads)}, {_heads(kt, heads)}, {_heads(v, heads)})], "
                   "axis=0)", "attended")
    lead = ", ".join(str(int(d)) for d in query.shape[:-2])
    return f"tf.reshape({flat}, [{lead}, -1, {dv}])"


def _batched(ctx: OpContext, heads: int | None, scale: float, mask: object, causal: bool, fast: bool) -> str:
    """Scores for every head in one tensor (one batch matmul, or per-head matmuls concatenated), masked, softmax,
    then the weighted values."""
    query, value = ctx.value("query"), ctx.value("value")
    q, k, v = ctx.t("query"), ctx.t("key"), ctx.t("value")
    if heads is None:
        scores = f"tf.linalg.matmul({q}, {k}, transpose_b=True)"
    else:
        head = query.shape[-1]
        kt = f"tf.transpose(tf.reshape({k}, [{heads}, -1, {head}]), [0, 2, 1])"
        flat = _per_head(ctx, f"tf.reshape({q}, [{heads}, -1, {head}])", kt, heads, "scores")
        lead = ", ".join(str(int(d)) for d in query.shape[:-2])
        scores = f"tf.reshape({flat}, [{lead}, -1, {_length(ctx, 'key')}])"
    scores = ctx.let(f"{scores} * {lit(scale)}", "scores")
    if fast:
        bias = _bias(ctx, mask, causal, scores)
        if bias is not None:
            scores = ctx.let(f"{scores} + {bias}", "masked")
    else:
        if isinstance(mask, Value):
            m = ctx.t("attn_mask")
            masked = f"tf.where({m}, {scores}, {_LOWEST})" if mask.dtype == "bool" else f"{scores} + {m}"
            scores = ctx.let(masked, "masked")
        if causal:
            length, source = (_length(ctx, name) for name in ("query", "key"))
            scores = ctx.let(f"tf.where(tf.range({length})[:, None] >= tf.range({source})[None, :], {scores}, "
                             f"{_LOWEST})", "causal")
    probs = f"tf.nn.softmax({scores}, axis=-1)"
    if heads is None:
        return f"tf.linalg.matmul({probs}, {v})"
    flat = _per_head(ctx, f"tf.reshape({probs}, [{heads}, -1, {_length(ctx, 'key')}])",
                     f"tf.reshape({v}, [{heads}, -1, {value.shape[-1]}])", heads, "attended")
    lead = ", ".join(str(int(d)) for d in query.shape[:-2])
    return f"tf.reshape({flat}, [{lead}, -1, {value.shape[-1]}])"


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
    fast = query.dtype == "float32"  # additive masks: -1e9 is not finite in float16
    mask = node.args.get("attn_mask")
    bool_mask = isinstance(mask, Value) and mask.dtype == "bool"
    causal = bool(ctx.arg("is_causal", False))
    if heads is not None and _one_bias_for_all_heads(mask):
        attended = _per_head_softmax(ctx, heads, float(scale), mask, causal)
    else:
        attended = _batched(ctx, heads, float(scale), mask, causal, fast)
    if bool_mask:
        attended = ctx.let(attended, "attended")
        allowed = f"tf.reduce_any({ctx.t('attn_mask')}, axis=-1, keepdims=True)"
        if fast:
            return f"{attended} * tf.cast({allowed}, {attended}.dtype)"
        return f"tf.where({allowed}, {attended}, tf.zeros_like({attended}))"
    return attended
