"""Reductions over dims (axis-mapped: they work in any layout)."""

from __future__ import annotations

from bridge.native.codegen import OpContext
from bridge.native.ir import Node
from bridge.native.layout import reduce_rule
from bridge.native.registry import LayoutPolicy, converter


def _axes(ctx: OpContext) -> list[int]:
    dims = ctx.arg("dim")
    rank = ctx.value("self").rank
    if dims is None or dims == []:
        dims = list(range(rank))
    dims = [dims] if isinstance(dims, int) else dims
    return sorted(ctx.axis(d, "self") for d in dims)


def _reduce(function: str, ctx: OpContext) -> str:
    return f"{function}({ctx.t('self')}, axis={_axes(ctx)}, keepdims={bool(ctx.arg('keepdim', False))})"


@converter("aten.mean.dim", "aten.mean.default", layout=LayoutPolicy.AXES, rule=reduce_rule, emits=("Mean",))
def mean(ctx: OpContext, node: Node) -> str:
    """aten::mean.dim(Tensor self, int[1]? dim, bool keepdim=False, *, ScalarType? dtype=None) -> Tensor"""
    return _reduce("tf.reduce_mean", ctx)


@converter("aten.sum.dim_IntList", "aten.sum.default", layout=LayoutPolicy.AXES, rule=reduce_rule, emits=("Sum",))
def sum_(ctx: OpContext, node: Node) -> str:
    """aten::sum.dim_IntList(Tensor self, int[1]? dim, bool keepdim=False, *, ScalarType? dtype=None) -> Tensor"""
    return _reduce("tf.reduce_sum", ctx)


@converter("aten.amax.default", layout=LayoutPolicy.AXES, rule=reduce_rule, emits=("Max",))
def amax(ctx: OpContext, node: Node) -> str:
    """aten::amax(Tensor self, int[1] dim=[], bool keepdim=False) -> Tensor"""
    return _reduce("tf.reduce_max", ctx)


@converter("aten.amin.default", layout=LayoutPolicy.AXES, rule=reduce_rule, emits=("Min",))
def amin(ctx: OpContext, node: Node) -> str:
    """aten::amin(Tensor self, int[1] dim=[], bool keepdim=False) -> Tensor"""
    return _reduce("tf.reduce_min", ctx)
