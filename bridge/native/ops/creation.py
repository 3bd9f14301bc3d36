"""Tensors created from nothing or from another tensor's shape: full (what nn.LSTM/GRU's default zero states,
torch.zeros/ones/new_zeros... capture as), full_like (zeros_like, ones_like), arange, scalar_tensor, and
triu/tril (causal masks)."""

from __future__ import annotations

from typing import Any

from bridge.native.codegen import OpContext, lit
from bridge.native.ir import Node, Value
from bridge.native.layout import same_layout
from bridge.native.registry import LayoutPolicy, converter


def _typed(value: Any, dtype: str) -> Any:
    """A python scalar in the kind of `dtype` (bool, float or int)."""
    if dtype == "bool":
        return bool(value)
    return float(value) if dtype.startswith(("float", "bfloat")) else int(value)


@converter("aten.full.default", layout=LayoutPolicy.SOURCE, emits=("Fill", "Pack"))
def full(ctx: OpContext, node: Node) -> str:
    """aten::full(SymInt[] size, Scalar fill_value, *, ScalarType? dtype=None, Layout? layout=None,
    Device? device=None, bool? pin_memory=None) -> Tensor"""
    size = list(ctx.arg("size", []))
    dtype = ctx.out().dtype
    value = _typed(ctx.arg("fill_value"), dtype)
    dims = f"[{', '.join(lit(d) for d in size)}]" if not any(isinstance(d, Value) for d in size) else \
        f"tf.stack([{', '.join(ctx.sym(d) for d in size)}])"
    return f"tf.fill({dims}, tf.constant({lit(value)}, tf.{dtype}))"


@converter("aten.full_like.default", layout=LayoutPolicy.AXES, rule=same_layout, emits=("Fill", "Shape"))
def full_like(ctx: OpContext, node: Node) -> str:
    """aten::full_like(Tensor self, Scalar fill_value, *, ScalarType? dtype=None, Layout? layout=None,
    Device? device=None, bool? pin_memory=None, MemoryFormat? memory_format=None) -> Tensor   (also what
    zeros_like and ones_like capture as; laid out like `self`)"""
    dtype = ctx.out().dtype
    value = _typed(ctx.arg("fill_value"), dtype)
    shape = ctx.out_physical_shape()
    dims = lit(list(shape)) if all(d is not None for d in shape) else f"tf.shape({ctx.t('self')})"
    return f"tf.fill({dims}, tf.constant({lit(value)}, tf.{dtype}))"


@converter("aten.scalar_tensor.default", layout=LayoutPolicy.SOURCE, emits=("Const",))
def scalar_tensor(ctx: OpContext, node: Node) -> str:
    """aten::scalar_tensor(Scalar s, *, ScalarType? dtype=None, Layout? layout=None, Device? device=None,
    bool? pin_memory=None) -> Tensor"""
    dtype = ctx.out().dtype
    return f"tf.constant({lit(_typed(ctx.arg('s'), dtype))}, tf.{dtype})"


def _check_arange(node: Node) -> str | None:
    ends = [node.args.get(k) for k in ("start", "end", "step")]
    if any(isinstance(v, Value) for v in ends) and any(isinstance(v, float) for v in ends):
        return "dynamic range with float bounds"
    out = node.outputs[0]
    if any(isinstance(v, float) for v in ends) and (out is None or out.shape[0] is None):
        return "float range of unknown length"
    return None


@converter("aten.arange.default", "aten.arange.start", "aten.arange.start_step", layout=LayoutPolicy.SOURCE,
           check=_check_arange, emits=("Range", "Cast", "Mul", "AddV2"))
def arange(ctx: OpContext, node: Node) -> str:
    """aten::arange.start_step(Scalar start, Scalar end, Scalar step=1, *, ScalarType? dtype=None,
    Layout? layout=None, Device? device=None, bool? pin_memory=None) -> Tensor   (also arange(Scalar end) and
    arange.start(Scalar start, Scalar end); a Range, constant-folded when the ends are static)"""
    start, end, step = ctx.arg("start", 0), ctx.arg("end"), ctx.arg("step", 1)
    dtype = ctx.out().dtype
    if any(isinstance(v, float) for v in (start, end, step)):  # PyTorch's start + i * step over a known length
        n = ctx.out().shape[0]
        work = dtype if dtype.startswith(("float", "bfloat")) else "float32"
        expr = f"tf.range({n}, dtype=tf.{work})"
        if step != 1:
            expr = f"{expr} * {lit(float(step))}"
        if start != 0:
            expr = f"{expr} + {lit(float(start))}"
        return expr if work == dtype else f"tf.cast({expr}, tf.{dtype})"

    def bound(v: Any) -> str:
        return f"tf.cast({ctx.sym(v)}, tf.{dtype})" if isinstance(v, Value) else lit(int(v))

    args = ([bound(start)] if start != 0 or step != 1 else []) + [bound(end)] + ([bound(step)] if step != 1 else [])
    return f"tf.range({', '.join(args)}, dtype=tf.{dtype})"


def _band(ctx: OpContext, upper: bool) -> str:
    """x with the elements off the band zeroed: kept where col - row >= k (triu) or <= k (tril), on the last
    two source axes wherever they are stored."""
    x, value = ctx.t("self"), ctx.value("self")
    rank, k = value.rank, int(ctx.arg("diagonal", 0))
    parts = []
    for dim in (rank - 2, rank - 1):
        axis, size = ctx.axis(dim, "self"), value.shape[dim]
        shape = [1] * rank
        shape[axis] = -1
        n = lit(size) if size is not None else f"tf.shape({x})[{axis}]"
        parts.append(f"tf.reshape(tf.range({n}), {shape})")
    rows, cols = parts
    keep = ctx.let(f"{cols} - {rows} {'>=' if upper else '<='} {k}", "band")
    return f"tf.where({keep}, {x}, tf.zeros_like({x}))"


@converter("aten.triu.default", layout=LayoutPolicy.AXES, rule=same_layout,
           emits=("Range", "Reshape", "Sub", "GreaterEqual", "SelectV2", "ZerosLike"))
def triu(ctx: OpContext, node: Node) -> str:
    """aten::triu(Tensor self, int diagonal=0) -> Tensor   (a row/column index comparison and a select: TF's
    MatrixBandPart cannot keep a band that starts above the diagonal, which causal masks need)"""
    return _band(ctx, upper=True)


@converter("aten.tril.default", layout=LayoutPolicy.AXES, rule=same_layout,
           emits=("Range", "Reshape", "Sub", "LessEqual", "SelectV2", "ZerosLike"))
def tril(ctx: OpContext, node: Node) -> str:
    """aten::tril(Tensor self, int diagonal=0) -> Tensor"""
    return _band(ctx, upper=False)
