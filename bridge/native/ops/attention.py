"""Attention: scaled_dot_product_attention as matmul -> (mask) -> softmax -> matmul, in PyTorch axis order.

Written in the forms TF.js's wasm backend runs fastest (measured with kernel micro-benchmarks and benchmarks/attn_ab.mjs, TF.js 4.22):
its BatchMatMul takes XNNPACK's fast path only for a batch of 1 without adjoint flags, and runs every other
batch matmul (a batch of heads, or `adj_y`) through a naive loop 5-25x slower, while a Transpose, a Split and a
Concat of the same tensors cost little. So when the number of heads (times the batch) is known, the scores and the
weighted values are one plain matmul per head: K is transposed once, Q, K^T, P and V are split per head, the head
results concatenated. Masks are added as a bias (0 or -1e9) rather than selected with tf.where: TF.js's `where`
broadcasts its operands with Tile, which is slow, where an Add broadcasts in the kernel. Both forms are exact:
the per-head matmuls compute the same sums, and a score plus 0 is the score, a score plus -1e9 an exact zero
after the softmax.

Heads from the projections: when query, key and value each come straight from a linear layer (times a constant, as
Whisper scales its queries), viewed to [1, S, H, D] and transposed to [1, H, S, D] (how BERT, ViT and Whisper write
self-attention), with batch 1 and nothing else reading them, each head is projected on its own: x @ W[:, head
columns] + b[head], one fused matmul + bias per head, the weight columns split from the stored weight (the writer
stores the pieces, bridge.tfjs.const_splits). Then no head is ever split out of an activation: TF.js 4.22's wasm
`slice` (behind Split, SplitV, Unpack) copies the whole input tensor out of the wasm heap once per piece (measured:
43 MB of copies a run in a 6-layer sentence encoder, and a full garbage collection each run), and the head
Transposes go too. Each head's key is transposed explicitly ([S, D] -> [D, S]): the writer keeps that Transpose from
being folded into the scores matmul as `transpose_b` (bridge.tfjs.explicit_transposes), because TF.js wasm runs a
flagged matmul in its naive loop. The heads' results are concatenated along the features, which is the [1, S, H * D]
order the output projection reads after its own transpose and view. Exact: every head sees the same sums in the same
order as the full projection's matmul computes for its columns."""

from __future__ import annotations

import math
from dataclasses import dataclass

from bridge.native.codegen import OpContext, lit
from bridge.native.ir import Node, Value
from bridge.native.layout import permutation
from bridge.native.ops._common import producer_through_relayouts
from bridge.native.registry import LayoutPolicy, converter
from bridge.native.weights import linear_to_in_out

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


_VIEWS = ("aten.view.default", "aten.reshape.default", "aten._unsafe_view.default")
_PERMUTES = ("aten.transpose.int", "aten.permute.default")


@dataclass(frozen=True)
class Projection:
    """An attention operand computed as linear(x).view(1, S, H, D).transpose(1, 2): the linear's input
    ([1, S, E], PyTorch layout) and parameters (weight [H * D, E], bias [H * D] or None)."""

    x: Value
    weight: Value
    bias: Value | None
    heads: int
    scale: float | None = None  # linear(x) * scale before the view (Whisper scales its queries so)


def projection_of(ctx: OpContext, name: str, heads: int) -> Projection | None:
    """Argument `name` of the attention node as a Projection with `heads` heads, or None when it is not one
    (another chain of ops, a batch other than 1, a layout other than PyTorch's, or an intermediate read
    elsewhere)."""
    value = ctx.value(name)
    transpose = producer_through_relayouts(ctx, value, ctx.node)
    if transpose is None or transpose.target not in _PERMUTES or permutation(transpose, 4) != [0, 2, 1, 3]:
        return None
    viewed = transpose.args["self"]
    view = producer_through_relayouts(ctx, viewed, transpose)
    if view is None or view.target not in _VIEWS or viewed.rank != 4 or viewed.shape[0] != 1:
        return None
    if viewed.shape[2] != heads or viewed.shape[3] is None:
        return None
    projected = view.args["self"]
    linear = producer_through_relayouts(ctx, projected, view)
    scale = None
    if linear is not None and linear.target == "aten.mul.Tensor" and _is_number(linear.args.get("other")):
        scale, scaled = float(linear.args["other"]), linear
        linear = producer_through_relayouts(ctx, scaled.args["self"], scaled)
    if linear is None or linear.target != "aten.linear.default" or projected.rank != 3:
        return None
    x, weight, bias = linear.args["input"], linear.args["weight"], linear.args.get("bias")
    if x.layout is None or not x.layout.is_source or x.shape[0] != 1 or not weight.is_weight:
        return None
    if projected.shape[-1] != heads * viewed.shape[3] or (isinstance(bias, Value) and not bias.is_weight):
        return None
    return Projection(x, weight, bias if isinstance(bias, Value) else None, heads, scale)


def _is_number(arg: object) -> bool:
    return isinstance(arg, (int, float)) and not isinstance(arg, bool)


def _flat_inputs(ctx: OpContext, projections: tuple[Projection, ...]) -> dict[int, str]:
    """id(x) -> a local holding x as [S, E], one per distinct projection input (self-attention has one)."""
    flat: dict[int, str] = {}
    for projection in projections:
        if id(projection.x) not in flat:
            features = projection.x.shape[-1]
            flat[id(projection.x)] = ctx.let(f"tf.reshape({ctx.expr(projection.x)}, [-1, {features}])", "flat_input")
    return flat


def _projected_heads(ctx: OpContext, projection: Projection, x: str, hint: str, *, transposed: bool = False) -> str:
    """A local holding the list of the projection's heads of `x` (its input as [S, E]), each [S, D] (with
    `transposed`, [D, S])."""
    kernel = ctx.transformed(projection.weight, "in_out", linear_to_in_out, lambda e: f"tf.transpose({e})")
    columns = f"tf.split({kernel}, {projection.heads}, axis=1)"
    if projection.bias is None:
        head, items = f"tf.linalg.matmul({x}, w)", f"w in {columns}"
    else:
        head = f"tf.nn.bias_add(tf.linalg.matmul({x}, w), b)"
        items = f"w, b in zip({columns}, tf.split({ctx.expr(projection.bias)}, {projection.heads}))"
    head = head if projection.scale is None else f"{head} * {lit(projection.scale)}"
    head = f"tf.transpose({head})" if transposed else head
    return ctx.let(f"[{head} for {items}]", f"{hint}_heads")


def _per_head_projected(ctx: OpContext, projections: tuple[Projection, Projection, Projection], scale: float,
                        mask: object, causal: bool) -> str:
    """The per-head form with each head projected on its own (module doc): no Split of an activation, no head
    Transposes but each key's own, the heads' results concatenated along the features and returned as
    [1, H, S, Dv]. Query rows a boolean mask allows no key are zeroed here, before the heads are moved, so the
    move and the caller's move back meet and grappler removes both."""
    query, key, value = projections
    flat = _flat_inputs(ctx, projections)
    q = _projected_heads(ctx, query, flat[id(query.x)], "query")
    kt = _projected_heads(ctx, key, flat[id(key.x)], "key", transposed=True)
    v = _projected_heads(ctx, value, flat[id(value.x)], "value")
    bias = _bias(ctx, mask, causal, "tf.float32", squeeze=True)
    attended = _attend_each_head(ctx, q, kt, v, scale, bias, axis=1)
    if isinstance(mask, Value) and mask.dtype == "bool":
        rows = f"tf.reshape(tf.cast({_allowed_rows(ctx)}, tf.float32), [-1, 1])"
        attended = ctx.let(f"{attended} * {rows}", "attended_rows")
    dv = ctx.value("value").shape[-1]
    return f"tf.transpose(tf.reshape({attended}, [1, -1, {query.heads}, {dv}]), [0, 2, 1, 3])"


def _allowed_rows(ctx: OpContext) -> str:
    """Where the boolean mask allows some key: [..., queries, 1]."""
    return f"tf.reduce_any({ctx.t('attn_mask')}, axis=-1, keepdims=True)"


def _projections(ctx: OpContext, heads: int) -> tuple[Projection, Projection, Projection] | None:
    """Query, key and value as projections with `heads` heads each, or None unless all three are."""
    found = tuple(projection_of(ctx, name, heads) for name in ("query", "key", "value"))
    if any(p is None for p in found):
        return None
    return found  # type: ignore[return-value]


def _one_bias_for_all_heads(mask: object) -> bool:
    """True when the mask (if any) is the same for every (batch, head) matrix: no leading axis but of size 1."""
    return not isinstance(mask, Value) or all(d == 1 for d in mask.shape[:-2])


def _bias(ctx: OpContext, mask: object, causal: bool, dtype: str, squeeze: bool = False) -> str | None:
    """The masks as one additive bias of type `dtype` (a TF expression; 0 where allowed, -1e9 where not), or None
    without masks; with `squeeze`, a mask's leading axes (all of size 1) are dropped, so the bias is 2-D."""
    terms = []
    if isinstance(mask, Value):
        m = ctx.t("attn_mask")
        term = f"tf.cast(tf.logical_not({m}), {dtype}) * {_MASK_BIAS}" if mask.dtype == "bool" else m
        if squeeze and mask.rank > 2:
            term = ctx.let(term, "mask_bias")
            term = f"tf.reshape({term}, tf.shape({term})[-2:])"
        terms.append(term)
    if causal:
        length, source = (_length(ctx, name) for name in ("query", "key"))
        # PyTorch's causal mask is top-left aligned: query i sees keys 0..i
        terms.append(f"tf.cast(tf.range({length})[:, None] < tf.range({source})[None, :], {dtype}) * "
                     f"{_MASK_BIAS}")
    return " + ".join(terms) if terms else None


def _attend_each_head(ctx: OpContext, queries: str, keys_t: str, values: str, scale: float, bias: str | None, *,
                      axis: int) -> str:
    """softmax(q_h k_h^T * scale + bias) v_h for every head of the three lists (keys already transposed), the
    results concatenated along `axis`; one bias (if any) serves every head."""
    add = "" if bias is None else f" + {ctx.let(bias, 'bias')}"
    return ctx.let(f"tf.concat([tf.linalg.matmul(tf.nn.softmax(tf.linalg.matmul(a, b) * {lit(scale)}{add}, "
                   f"axis=-1), c) for a, b, c in zip({queries}, {keys_t}, {values})], axis={axis})", "attended")


def _per_head_softmax(ctx: OpContext, heads: int, scale: float, mask: object, causal: bool) -> str:
    """The whole attention one head at a time (softmax(q_h k_h^T * scale + bias) v_h), heads concatenated once
    at the end: no split of the probabilities, no concat of the scores. Only when one bias serves every head."""
    query, value = ctx.value("query"), ctx.value("value")
    head, dv = query.shape[-1], value.shape[-1]
    q = f"tf.reshape({ctx.t('query')}, [{heads}, -1, {head}])"
    kt = f"tf.transpose(tf.reshape({ctx.t('key')}, [{heads}, -1, {head}]), [0, 2, 1])"
    v = f"tf.reshape({ctx.t('value')}, [{heads}, -1, {dv}])"
    bias = _bias(ctx, mask, causal, f"{ctx.t('query')}.dtype", squeeze=True)
    flat = _attend_each_head(ctx, _heads(q, heads), _heads(kt, heads), _heads(v, heads), scale, bias, axis=0)
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
        bias = _bias(ctx, mask, causal, f"{scores}.dtype")
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
           emits=("BatchMatMulV2", "MatMul", "BiasAdd", "Mul", "Softmax", "SelectV2", "AddV2", "Range", "GreaterEqual",
                  "Any", "Split", "ConcatV2", "Transpose", "Reshape", "Cast", "LogicalNot", "Less"))
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
    projections = _projections(ctx, heads) if heads is not None and query.shape[0] == 1 else None
    if causal and (query.shape[-2] is None or key.shape[-2] is None):
        projections = None  # a dynamic causal mask's lengths are read from the (then computed) query and key
    if projections is not None and _one_bias_for_all_heads(mask):
        return _per_head_projected(ctx, projections, float(scale), mask, causal)
    if heads is not None and _one_bias_for_all_heads(mask):
        attended = _per_head_softmax(ctx, heads, float(scale), mask, causal)
    else:
        attended = _batched(ctx, heads, float(scale), mask, causal, fast)
    if bool_mask:
        attended = ctx.let(attended, "attended")
        allowed = _allowed_rows(ctx)
        if fast:
            return f"{attended} * tf.cast({allowed}, {attended}.dtype)"
        return f"tf.where({allowed}, {attended}, tf.zeros_like({attended}))"
    return attended
