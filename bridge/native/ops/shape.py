"""Shape ops: reshape/view/flatten, permute/transpose (free: only the layout changes), unsqueeze/squeeze, cat,
embedding, sym_size, slicing, padding (constant, reflect, replicate) and the layout pass's own `bridge.relayout`."""

from __future__ import annotations

from bridge.native.codegen import OpContext
from bridge.native.ir import Layout, Node, Value
from bridge.native.layout import (RELAYOUT, broadcast_rule, conversion_steps, drop_axes, permute_rule, reshape_rule,
                                  same_layout, scalar_rule, select_rule, unsqueeze_rule)
from bridge.native.registry import LayoutPolicy, converter

AXES = LayoutPolicy.AXES


@converter("aten.view.default", "aten.reshape.default", "aten._unsafe_view.default", "aten.flatten.using_ints",
           layout=AXES, rule=reshape_rule, emits=("Reshape",))
def reshape(ctx: OpContext, node: Node) -> str:
    """aten::view(Tensor(a) self, SymInt[] size) -> Tensor(a)   (also reshape, _unsafe_view and
    flatten.using_ints(Tensor self, int start_dim=0, int end_dim=-1))"""
    x, src, out = ctx.t("self"), ctx.value("self"), ctx.out()
    if tuple(src.shape) == tuple(out.shape) and src.layout == out.layout:
        return x
    assert out.layout is not None
    sizes = node.args.get("size", node.args.get("shape"))
    if out.layout.is_source and sizes is not None:
        return f"tf.reshape({x}, {ctx.shape_list(sizes)})"
    return f"tf.reshape({x}, {ctx.shape_list(ctx.out_dims())})"


@converter("aten.permute.default", "aten.transpose.int", "aten.t.default", layout=AXES, rule=permute_rule,
           emits=())
def permute(ctx: OpContext, node: Node) -> str:
    """aten::permute(Tensor(a) self, int[] dims) -> Tensor(a)   (also transpose.int and t): no TF op, the layout
    pass records the new axis order"""
    return ctx.t("self")


@converter("aten.unsqueeze.default", layout=AXES, rule=unsqueeze_rule, emits=("ExpandDims",))
def unsqueeze(ctx: OpContext, node: Node) -> str:
    """aten::unsqueeze(Tensor(a) self, int dim) -> Tensor(a)"""
    out = ctx.out()
    assert out.layout is not None
    return f"tf.expand_dims({ctx.t('self')}, axis={out.layout.axis(ctx.arg('dim'))})"


def _squeeze_rule(node: Node, layout: Layout) -> Layout | None:
    return drop_axes(layout, set(_squeezed(node)))


def _squeezed(node: Node) -> list[int]:
    src = node.args["self"]
    dims = node.args.get("dim", [i for i, d in enumerate(src.shape) if d == 1])
    dims = [dims] if isinstance(dims, int) else dims
    return [d % src.rank for d in dims if src.shape[d % src.rank] == 1]


@converter("aten.squeeze.dims", "aten.squeeze.dim", "aten.squeeze.default", layout=AXES, rule=_squeeze_rule,
           emits=("Squeeze",))
def squeeze(ctx: OpContext, node: Node) -> str:
    """aten::squeeze.dims(Tensor(a) self, int[] dim) -> Tensor(a)   (also .dim and .default)"""
    axes = sorted(ctx.axis(d, "self") for d in _squeezed(node))
    return f"tf.squeeze({ctx.t('self')}, axis={axes})" if axes else ctx.t("self")


def _cat_parts(node: Node) -> list[Value]:
    """The inputs of a cat that hold data: PyTorch skips 1-D empty tensors (the legacy rule an empty cache such
    as `torch.tensor([])` relies on) and tensors empty along the cat axis add nothing; TF refuses the first."""
    out = node.outputs[0]
    assert out is not None
    dim = int(node.args.get("dim", 0)) % max(out.rank, 1)
    return [v for v in node.args["tensors"]
            if not (v.rank == 1 and v.shape[0] == 0 and out.rank != 1)
            and not (v.rank == out.rank and v.shape[dim] == 0)]


def _cat_rule(node: Node, layout: Layout) -> Layout | None:
    """Laid out like the first input, unless that is a (skipped) empty 1-D tensor: then PyTorch order."""
    out = node.outputs[0]
    assert out is not None
    return layout if layout.rank == out.rank else Layout.source(out.rank)


@converter("aten.cat.default", layout=AXES, rule=_cat_rule, emits=("ConcatV2", "Identity", "Fill"))
def cat(ctx: OpContext, node: Node) -> str:
    """aten::cat(Tensor[] tensors, int dim=0) -> Tensor   (empty inputs dropped: see _cat_parts)"""
    out = ctx.out()
    parts = _cat_parts(node)
    if not parts:  # every input empty: the (empty) result
        return f"tf.zeros({ctx.shape_list(ctx.out_dims())}, tf.{out.dtype})"
    exprs = [ctx.expr(v) for v in parts]
    if len(parts) == 1:
        return f"tf.identity({exprs[0]})"
    assert out.layout is not None
    axis = out.layout.axis(int(ctx.arg("dim", 0)))
    return f"tf.concat([{', '.join(exprs)}], axis={axis})"


@converter("aten.embedding.default", layout=LayoutPolicy.SOURCE, emits=("GatherV2",))
def embedding(ctx: OpContext, node: Node) -> str:
    """aten::embedding(Tensor weight, Tensor indices, SymInt padding_idx=-1, bool scale_grad_by_freq=False,
    bool sparse=False) -> Tensor"""
    return f"tf.gather({ctx.t('weight')}, {ctx.t('indices')})"


@converter("aten.sym_size.int", layout=AXES, rule=scalar_rule, emits=("Shape", "StridedSlice"))
def sym_size(ctx: OpContext, node: Node) -> str:
    """aten::sym_size.int(Tensor self, int dim) -> SymInt   (a dynamic dimension)"""
    return f"tf.shape({ctx.t('self')})[{ctx.axis(ctx.arg('dim'), 'self')}]"


@converter(RELAYOUT, layout=LayoutPolicy.SOURCE, emits=("Transpose", "Reshape"))
def relayout(ctx: OpContext, node: Node) -> str:
    """bridge.relayout(Tensor input, Layout layout): the layout pass's conversion, as reshapes and transposes
    (reshapes over several dynamic axes take their symbolic sizes)"""
    value = ctx.value("input")
    assert value.layout is not None
    expr = ctx.t("input")
    for step in conversion_steps(value.layout, node.args["layout"], value.sizes):
        if step.kind == "reshape":
            expr = f"tf.reshape({expr}, {ctx.shape_list(step.arg)})"
        else:
            expr = f"tf.transpose({expr}, {list(step.arg)})"
    return expr


def _pad_rule(node: Node, layout: Layout) -> Layout | None:
    return layout if layout.flat is None else None


Pad = int | Value  # a pad amount: a constant, or computed from a dynamic size (Swin pads to its window)


def _pad_list(node: Node) -> list[Pad]:
    return [p if isinstance(p, Value) else int(p) for p in node.args.get("pad", node.args.get("padding", []))]


def _check_constant_pad(node: Node) -> str | None:
    return "negative padding (cropping)" if any(isinstance(p, int) and p < 0 for p in _pad_list(node)) else None


def _check_pad(node: Node) -> str | None:
    if any(isinstance(p, Value) for p in _pad_list(node)):
        return "padding computed from a dynamic size"
    return _check_constant_pad(node)


def _pad_pairs(ctx: OpContext, node: Node) -> list[list[Pad]]:
    """PyTorch's (before, after) pads, from the last axis backwards, as TF paddings on the stored axes."""
    pad, rank = _pad_list(node), ctx.value("self").rank
    pairs: list[list[Pad]] = [[0, 0] for _ in range(rank)]
    for i in range(len(pad) // 2):
        pairs[ctx.axis(rank - 1 - i, "self")] = [pad[2 * i], pad[2 * i + 1]]
    return pairs


def _pads_text(ctx: OpContext, pairs: list[list[Pad]]) -> str:
    """TF paddings in the generated source: a literal, with the expression of each symbolic pad in place."""
    return "[" + ", ".join(f"[{ctx.sym(before)}, {ctx.sym(after)}]" for before, after in pairs) + "]"


@converter("aten.constant_pad_nd.default", layout=AXES, rule=_pad_rule, emits=("PadV2", "Pad", "Pack"),
           check=_check_constant_pad)
def constant_pad_nd(ctx: OpContext, node: Node) -> str:
    """aten::constant_pad_nd(Tensor self, SymInt[] pad, Scalar value=0) -> Tensor   (F.pad, mode='constant';
    pads are (before, after) pairs from the last axis backwards, mapped to TF axes here; a pad computed from a
    dynamic size is computed in the generated code, and must not be negative there)"""
    value = float(ctx.arg("value", 0))
    extra = f", constant_values={value!r}" if value else ""
    return f"tf.pad({ctx.t('self')}, {_pads_text(ctx, _pad_pairs(ctx, node))}{extra})"


@converter("aten.reflection_pad1d.default", "aten.reflection_pad2d.default", "aten.reflection_pad3d.default",
           layout=AXES, rule=_pad_rule, emits=("MirrorPad",), check=_check_pad)
def reflection_pad(ctx: OpContext, node: Node) -> str:
    """aten::reflection_pad2d(Tensor self, SymInt[4] padding) -> Tensor   (also reflection_pad1d and
    reflection_pad3d; F.pad mode='reflect', Conv2d padding_mode='reflect')"""
    return f'tf.pad({ctx.t("self")}, {_pad_pairs(ctx, node)}, mode="REFLECT")'


@converter("aten.replication_pad1d.default", "aten.replication_pad2d.default", "aten.replication_pad3d.default",
           layout=AXES, rule=_pad_rule, emits=("GatherV2", "Range", "ClipByValue"), check=_check_pad)
def replication_pad(ctx: OpContext, node: Node) -> str:
    """aten::replication_pad2d(Tensor self, SymInt[4] padding) -> Tensor   (also replication_pad1d and
    replication_pad3d; F.pad mode='replicate', Conv2d padding_mode='replicate'). TF has no edge mode: each
    padded axis is a gather of the clamped range [-before, size + after)"""
    x, value = ctx.t("self"), ctx.value("self")
    pairs = _pad_pairs(ctx, node)
    shape = ctx.layout("self").physical_shape(value.shape)
    padded = [(axis, pair) for axis, pair in enumerate(pairs) if pair != [0, 0]]
    for i, (axis, (before, after)) in enumerate(padded):
        if shape[axis] is not None:
            span = f"tf.range({-before}, {shape[axis] + after}), 0, {shape[axis] - 1}"
        else:
            size = f"tf.shape({x})[{axis}]"
            span = f"tf.range({-before}, {size} + {after}), 0, {size} - 1"
        expr = f"tf.gather({x}, tf.clip_by_value({span}), axis={axis})"
        x = expr if i == len(padded) - 1 else ctx.let(expr, "edge")
    return x


_INT64_MAX = 2**63 - 1


@converter("aten.slice.Tensor", layout=AXES, rule=same_layout, emits=("StridedSlice",))
def slice_(ctx: OpContext, node: Node) -> str:
    """aten::slice.Tensor(Tensor(a) self, int dim=0, SymInt? start=None, SymInt? end=None, SymInt step=1)
    -> Tensor(a)"""
    value = ctx.value("self")
    start, end, step = ctx.arg("start"), ctx.arg("end"), int(ctx.arg("step", 1))
    text = ("" if start in (None, 0) else ctx.sym(start)) + ":" + \
        ("" if end is None or (isinstance(end, int) and end >= _INT64_MAX) else ctx.sym(end)) + \
        ("" if step == 1 else f":{step}")
    items = [":"] * value.rank
    items[ctx.axis(int(ctx.arg("dim", 0)), "self")] = text
    return f"{ctx.t('self')}[{', '.join(items)}]"


@converter("aten.select.int", layout=AXES, rule=select_rule, emits=("StridedSlice",))
def select(ctx: OpContext, node: Node) -> str:
    """aten::select.int(Tensor(a) self, int dim, SymInt index) -> Tensor(a)"""
    items = [":"] * ctx.value("self").rank
    items[ctx.axis(int(ctx.arg("dim")), "self")] = ctx.sym(ctx.arg("index"))
    return f"{ctx.t('self')}[{', '.join(items)}]"


def _split_sizes(node: Node) -> list[int]:
    value = node.args["self"]
    length = value.shape[int(node.args.get("dim", 0)) % value.rank]
    if "split_sizes" in node.args:
        return [int(s) for s in node.args["split_sizes"]]
    size = int(node.args["split_size"])
    return [size] * (length // size) + ([length % size] if length % size else [])


def _check_split(node: Node) -> str | None:
    value = node.args["self"]
    dim = int(node.args.get("dim", 0)) % value.rank
    if value.shape[dim] is None and any(o is None for o in node.outputs):
        return "split along a dynamic axis with unused pieces"
    return None


@converter("aten.split.Tensor", "aten.split_with_sizes.default", layout=AXES, rule=same_layout,
           emits=("SplitV", "Pack"), check=_check_split)
def split(ctx: OpContext, node: Node) -> list[str | None]:
    """aten::split.Tensor(Tensor(a -> *) self, SymInt split_size, int dim=0) -> Tensor(a)[]   (also
    split_with_sizes(Tensor self, SymInt[] split_sizes, int dim=0); along a dynamic axis the pieces' sizes come
    from torch.export's symbolic sizes)"""
    dim = int(ctx.arg("dim", 0)) % ctx.value("self").rank
    axis = ctx.axis(dim, "self")
    if ctx.value("self").shape[dim] is None:
        sizes = f"tf.stack([{', '.join(ctx.size(o.sizes[dim]) for o in node.outputs if o is not None)}])"
    else:
        sizes = str(_split_sizes(node))
    parts = ctx.let(f"tf.split({ctx.t('self')}, {sizes}, axis={axis})", "parts")
    return [f"{parts}[{i}]" for i in range(len(node.outputs))]


def _broadcast_shape(ctx: OpContext, sizes: list[int], expr: str) -> str:
    """A physical target shape for expand: the output's sizes (dynamic ones computed from the inputs' shapes);
    where torch.export knows nothing, -1 keeps the input's dim (read at run time)."""
    out = ctx.out()
    assert out.layout is not None
    src = ctx.value("self")
    dims: list[str] = []
    offset = out.rank - src.rank
    for axis in out.layout.perm:
        size, known = sizes[axis], out.sizes[axis]
        if known is not None:
            dims.append(ctx.size(known))
        elif size == -1 and axis >= offset:
            dims.append(f"tf.shape({expr})[{src.layout.axis(axis - offset) if src.layout else axis - offset}]")
        else:
            dims.append(ctx.sym(size))
    return f"[{', '.join(dims)}]"


@converter("aten.expand.default", layout=AXES, rule=broadcast_rule, emits=("BroadcastTo",))
def expand(ctx: OpContext, node: Node) -> str:
    """aten::expand(Tensor(a) self, SymInt[] size, *, bool implicit=False) -> Tensor(a)"""
    x = ctx.t("self")
    value = ctx.value("self")
    if value.rank < ctx.out().rank:
        x = f"tf.reshape({x}, {ctx.shape_list([1] * (ctx.out().rank - value.rank) + list(value.shape))})"
    return f"tf.broadcast_to({x}, {_broadcast_shape(ctx, list(ctx.arg('size')), ctx.t('self'))})"


@converter("aten.repeat.default", layout=AXES, rule=broadcast_rule, emits=("Tile",))
def repeat(ctx: OpContext, node: Node) -> str:
    """aten::repeat(Tensor self, SymInt[] repeats) -> Tensor
    (a repeat count computed from a dynamic size, e.g. `batch * heads // heads`, makes the multiples a tf.stack)"""
    repeats = list(ctx.arg("repeats"))
    value, out = ctx.value("self"), ctx.out()
    x = ctx.t("self")
    if value.rank < out.rank:
        x = f"tf.reshape({x}, {ctx.shape_list([1] * (out.rank - value.rank) + list(value.shape))})"
    assert out.layout is not None
    multiples = [repeats[p] for p in out.layout.perm]
    if all(isinstance(r, int) for r in multiples):
        return f"tf.tile({x}, {multiples})"
    return f"tf.tile({x}, tf.stack([{', '.join(ctx.sym(r) for r in multiples)}]))"
