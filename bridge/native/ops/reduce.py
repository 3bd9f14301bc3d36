"""Reductions over dims (axis-mapped: they work in any layout), arg-reductions and cumulative ops."""

from __future__ import annotations

import math

from bridge.native.codegen import OpContext, lit
from bridge.native.ir import Layout, Node
from bridge.native.layout import reduce_rule, same_layout
from bridge.native.registry import ConverterFn, LayoutPolicy, converter

AXES = LayoutPolicy.AXES


def _dims(ctx: OpContext) -> list[int]:
    """The reduced source dims (every dim when `dim` is None or [])."""
    dims = ctx.arg("dim")
    rank = ctx.value("self").rank
    if dims is None or dims == []:
        dims = list(range(rank))
    dims = [dims] if isinstance(dims, int) else dims
    return sorted({d % rank for d in dims}) if rank else []


def _axes(ctx: OpContext) -> list[int]:
    """The reduced physical (TF) axes."""
    return sorted(ctx.axis(d, "self") for d in _dims(ctx))


def _keep(ctx: OpContext) -> bool:
    return bool(ctx.arg("keepdim", False))


def _self_as_out(ctx: OpContext) -> str:
    """`self`, cast to the output dtype when PyTorch changes it (dtype=..., ints summed to int64, bools)."""
    expr, dtype = ctx.t("self"), ctx.out().dtype
    return expr if ctx.value("self").dtype == dtype else f"tf.cast({expr}, tf.{dtype})"


def _reduce(function: str, ctx: OpContext, expr: str | None = None) -> str:
    x = ctx.t("self") if expr is None else expr
    return f"{function}({x}, axis={_axes(ctx)}, keepdims={_keep(ctx)})"


def _count(ctx: OpContext) -> str | int:
    """How many elements each reduction reads: a literal when the reduced dims are static."""
    shape = ctx.value("self").shape
    sizes = [shape[d] for d in _dims(ctx)]
    if all(isinstance(s, int) for s in sizes):
        return math.prod(sizes)  # type: ignore[arg-type]
    return f"tf.reduce_prod(tf.gather(tf.shape({ctx.t('self')}), {_axes(ctx)}))"


def _squeeze(ctx: OpContext, kept: str) -> str:
    """A keepdims=True result with the reduced axes dropped unless PyTorch keeps them."""
    return kept if _keep(ctx) else f"tf.squeeze({kept}, axis={_axes(ctx)})"


def _plain_reduction(name: str, function: str, schema: str) -> ConverterFn:
    """A converter applying TF reduction `function` over the node's dims, named and documented like a
    hand-written one."""
    def convert(ctx: OpContext, node: Node) -> str:
        return _reduce(function, ctx)
    convert.__doc__ = schema
    convert.__name__ = convert.__qualname__ = name
    return convert


# name, targets, TF function, TF op, schema
_PLAIN_REDUCTIONS = [
    ("mean", ("aten.mean.dim", "aten.mean.default"), "tf.reduce_mean", "Mean",
     "aten::mean.dim(Tensor self, int[1]? dim, bool keepdim=False, *, ScalarType? dtype=None) -> Tensor"),
    ("sum_", ("aten.sum.dim_IntList", "aten.sum.default"), "tf.reduce_sum", "Sum",
     "aten::sum.dim_IntList(Tensor self, int[1]? dim, bool keepdim=False, *, ScalarType? dtype=None) -> Tensor"),
    ("amax", ("aten.amax.default",), "tf.reduce_max", "Max",
     "aten::amax(Tensor self, int[1] dim=[], bool keepdim=False) -> Tensor"),
    ("amin", ("aten.amin.default",), "tf.reduce_min", "Min",
     "aten::amin(Tensor self, int[1] dim=[], bool keepdim=False) -> Tensor"),
    ("max_all", ("aten.max.default",), "tf.reduce_max", "Max", "aten::max(Tensor self) -> Tensor"),
    ("min_all", ("aten.min.default",), "tf.reduce_min", "Min", "aten::min(Tensor self) -> Tensor"),
]
for _name, _targets, _function, _op, _schema in _PLAIN_REDUCTIONS:
    converter(*_targets, layout=AXES, rule=reduce_rule, emits=(_op,))(_plain_reduction(_name, _function, _schema))


@converter("aten.prod.dim_int", "aten.prod.default", layout=AXES, rule=reduce_rule, emits=("Prod", "Cast"))
def prod(ctx: OpContext, node: Node) -> str:
    """aten::prod.dim_int(Tensor self, int dim, bool keepdim=False, *, ScalarType? dtype=None) -> Tensor   (also
    prod(Tensor self, *, ScalarType? dtype=None))"""
    return _reduce("tf.reduce_prod", ctx, _self_as_out(ctx))


# ------------------------------------------------------------------------------- arg-reductions (int64 indices)

def arg_rule(node: Node, layout: Layout) -> Layout | None:
    """argmax/argmin: a given dim is a reduction; dim=None indexes the flattened tensor, which must be flattened
    in PyTorch order (None: the input is restored to PyTorch order)."""
    return None if node.args.get("dim") is None else reduce_rule(node, layout)


def _arg_reduce(function: str, ctx: OpContext) -> str:
    dim, dtype = ctx.arg("dim"), ctx.out().dtype
    if dim is None:  # the input is in PyTorch order (arg_rule): the index into the flattened tensor
        found = f"{function}(tf.reshape({ctx.t('self')}, [-1]), axis=0, output_type=tf.{dtype})"
        rank = ctx.value("self").rank
        return f"tf.reshape({found}, {[1] * rank})" if _keep(ctx) and rank else found
    axis = ctx.axis(int(dim), "self")
    found = f"{function}({ctx.t('self')}, axis={axis}, output_type=tf.{dtype})"
    return f"tf.expand_dims({found}, axis={axis})" if _keep(ctx) else found


@converter("aten.argmax.default", layout=AXES, rule=arg_rule, emits=("ArgMax",))
def argmax(ctx: OpContext, node: Node) -> str:
    """aten::argmax(Tensor self, int? dim=None, bool keepdim=False) -> Tensor"""
    return _arg_reduce("tf.math.argmax", ctx)


@converter("aten.argmin.default", layout=AXES, rule=arg_rule, emits=("ArgMin",))
def argmin(ctx: OpContext, node: Node) -> str:
    """aten::argmin(Tensor self, int? dim=None, bool keepdim=False) -> Tensor"""
    return _arg_reduce("tf.math.argmin", ctx)


def _values_indices(reduce_fn: str, arg_fn: str, ctx: OpContext) -> list[str | None]:
    """[values, indices] of a max/min over one dim (indices None when nothing reads them)."""
    axis = ctx.axis(int(ctx.arg("dim")), "self")
    x = ctx.t("self")
    values = f"{reduce_fn}({x}, axis=[{axis}], keepdims={_keep(ctx)})"
    if ctx.node.outputs[1] is None:
        return [values, None]
    index = f"{arg_fn}({x}, axis={axis}, output_type=tf.{ctx.out(1).dtype})"
    if _keep(ctx):
        index = f"tf.expand_dims({index}, axis={axis})"
    return [values, index]


@converter("aten.max.dim", layout=AXES, rule=reduce_rule, emits=("Max", "ArgMax"))
def max_dim(ctx: OpContext, node: Node) -> list[str | None]:
    """aten::max.dim(Tensor self, int dim, bool keepdim=False) -> (Tensor values, Tensor indices)"""
    return _values_indices("tf.reduce_max", "tf.math.argmax", ctx)


@converter("aten.min.dim", layout=AXES, rule=reduce_rule, emits=("Min", "ArgMin"))
def min_dim(ctx: OpContext, node: Node) -> list[str | None]:
    """aten::min.dim(Tensor self, int dim, bool keepdim=False) -> (Tensor values, Tensor indices)"""
    return _values_indices("tf.reduce_min", "tf.math.argmin", ctx)


# ------------------------------------------------------------------------------------------ statistics, norms

def _variance(ctx: OpContext) -> tuple[str, str]:
    """(variance, mean kept-dims local) over `dim` with PyTorch's `correction` (default 1: unbiased)."""
    x = ctx.t("self")
    correction = ctx.arg("correction", 1)
    mean_kept = ctx.let(f"tf.reduce_mean({x}, axis={_axes(ctx)}, keepdims=True)", "mean")
    total = _reduce("tf.reduce_sum", ctx, f"tf.math.squared_difference({x}, {mean_kept})")
    count = _count(ctx)
    if isinstance(count, int):
        return f"{total} / {lit(float(max(count - correction, 0)))}", mean_kept
    dof = f"tf.maximum(tf.cast({count}, {x}.dtype) - {lit(float(correction))}, 0.0)"
    return f"{total} / {dof}", mean_kept


@converter("aten.var.correction", layout=AXES, rule=reduce_rule, emits=("Mean", "SquaredDifference", "Sum", "RealDiv"))
def var(ctx: OpContext, node: Node) -> str:
    """aten::var.correction(Tensor self, int[1]? dim=None, *, Scalar? correction=None, bool keepdim=False) -> Tensor"""
    return _variance(ctx)[0]


@converter("aten.std.correction", layout=AXES, rule=reduce_rule,
           emits=("Mean", "SquaredDifference", "Sum", "RealDiv", "Sqrt"))
def std(ctx: OpContext, node: Node) -> str:
    """aten::std.correction(Tensor self, int[1]? dim=None, *, Scalar? correction=None, bool keepdim=False) -> Tensor"""
    return f"tf.sqrt({_variance(ctx)[0]})"


@converter("aten.var_mean.correction", layout=AXES, rule=reduce_rule,
           emits=("Mean", "SquaredDifference", "Sum", "RealDiv", "Squeeze"))
def var_mean(ctx: OpContext, node: Node) -> list[str]:
    """aten::var_mean.correction(Tensor self, int[1]? dim=None, *, Scalar? correction=None, bool keepdim=False)
    -> (Tensor, Tensor)"""
    variance, mean_kept = _variance(ctx)
    return [variance, _squeeze(ctx, mean_kept)]


@converter("aten.linalg_vector_norm.default", layout=AXES, rule=reduce_rule,
           emits=("Abs", "Square", "Sum", "Sqrt", "Max", "Min", "Pow", "NotEqual", "Cast"))
def vector_norm(ctx: OpContext, node: Node) -> str:
    """aten::linalg_vector_norm(Tensor self, Scalar ord=2, int[1]? dim=None, bool keepdim=False, *,
    ScalarType? dtype=None) -> Tensor"""
    x, order = _self_as_out(ctx), float(ctx.arg("ord", 2))
    if order == 2:
        return f"tf.sqrt({_reduce('tf.reduce_sum', ctx, f'tf.square({x})')})"
    if order == 1:
        return _reduce("tf.reduce_sum", ctx, f"tf.abs({x})")
    if order == math.inf:
        return _reduce("tf.reduce_max", ctx, f"tf.abs({x})")
    if order == -math.inf:
        return _reduce("tf.reduce_min", ctx, f"tf.abs({x})")
    if order == 0:
        return _reduce("tf.reduce_sum", ctx, f"tf.cast(tf.not_equal({x}, 0), {x}.dtype)")
    powered = _reduce("tf.reduce_sum", ctx, f"tf.pow(tf.abs({x}), {lit(order)})")
    return f"tf.pow({powered}, {lit(1.0 / order)})"


@converter("aten.logsumexp.default", layout=AXES, rule=reduce_rule,
           emits=("Max", "Abs", "Equal", "SelectV2", "ZerosLike", "Sub", "Exp", "Sum", "Log", "AddV2"))
def logsumexp(ctx: OpContext, node: Node) -> str:
    """aten::logsumexp(Tensor self, int[1] dim, bool keepdim=False) -> Tensor"""
    x = ctx.t("self")
    peak = ctx.let(f"tf.reduce_max({x}, axis={_axes(ctx)}, keepdims=True)", "max")
    # as PyTorch does: an infinite max (all -inf, or a +inf) is not subtracted, so no inf - inf = nan
    peak = ctx.let(f"tf.where(tf.equal(tf.abs({peak}), float('inf')), tf.zeros_like({peak}), {peak})", "shift")
    total = _reduce("tf.reduce_sum", ctx, f"tf.exp({x} - {peak})")
    return f"tf.math.log({total}) + {_squeeze(ctx, peak)}"


# ------------------------------------------------------------------------------------------ logical reductions

def _as_bool(ctx: OpContext) -> str:
    x = ctx.t("self")
    return x if ctx.value("self").dtype == "bool" else f"tf.not_equal({x}, 0)"


def _logical(function: str, ctx: OpContext) -> str:
    found = _reduce(function, ctx, _as_bool(ctx))
    dtype = ctx.out().dtype  # bool, except uint8 in -> uint8 out
    return found if dtype == "bool" else f"tf.cast({found}, tf.{dtype})"


@converter("aten.any.dim", "aten.any.dims", "aten.any.default", layout=AXES, rule=reduce_rule,
           emits=("Any", "NotEqual"))
def any_(ctx: OpContext, node: Node) -> str:
    """aten::any.dim(Tensor self, int dim, bool keepdim=False) -> Tensor   (also any.dims(Tensor self,
    int[1]? dim=None, bool keepdim=False) and any(Tensor self))"""
    return _logical("tf.reduce_any", ctx)


@converter("aten.all.dim", "aten.all.dims", "aten.all.default", layout=AXES, rule=reduce_rule,
           emits=("All", "NotEqual"))
def all_(ctx: OpContext, node: Node) -> str:
    """aten::all.dim(Tensor self, int dim, bool keepdim=False) -> Tensor   (also all.dims(Tensor self,
    int[1]? dim=None, bool keepdim=False) and all(Tensor self))"""
    return _logical("tf.reduce_all", ctx)


# ------------------------------------------------------------------------------------------ cumulative ops

@converter("aten.cumsum.default", layout=AXES, rule=same_layout, emits=("Cumsum", "Cast"))
def cumsum(ctx: OpContext, node: Node) -> str:
    """aten::cumsum(Tensor self, int dim, *, ScalarType? dtype=None) -> Tensor"""
    return f"tf.math.cumsum({_self_as_out(ctx)}, axis={ctx.axis(int(ctx.arg('dim')), 'self')})"


@converter("aten.cumprod.default", layout=AXES, rule=same_layout, emits=("Cumprod", "Cast"))
def cumprod(ctx: OpContext, node: Node) -> str:
    """aten::cumprod(Tensor self, int dim, *, ScalarType? dtype=None) -> Tensor"""
    return f"tf.math.cumprod({_self_as_out(ctx)}, axis={ctx.axis(int(ctx.arg('dim')), 'self')})"
