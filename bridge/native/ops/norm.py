"""Normalisations: batch norm (inference), layer norm, group norm."""

from __future__ import annotations

from bridge.native.codegen import OpContext
from bridge.native.ir import Layout, Node
from bridge.native.ops._common import first_tensor, static_dims
from bridge.native.registry import LayoutPolicy, converter


@converter("aten._native_batch_norm_legit_no_training.default", layout=LayoutPolicy.CHANNELS_LAST,
           emits=("FusedBatchNormV3", "Mul", "AddV2", "Rsqrt", "Sub"))
def batch_norm(ctx: OpContext, node: Node) -> list[str | None]:
    """aten::_native_batch_norm_legit_no_training(Tensor input, Tensor? weight, Tensor? bias, Tensor running_mean,
    Tensor running_var, float momentum, float eps) -> (Tensor, Tensor, Tensor)   (BatchNorm in eval mode)"""
    scale = ctx.t("weight") if ctx.has("weight") else "None"
    offset = ctx.t("bias") if ctx.has("bias") else "None"
    expr = (f"tf.nn.batch_normalization({ctx.t()}, {ctx.t('running_mean')}, {ctx.t('running_var')}, "
            f"{offset}, {scale}, {float(ctx.arg('eps'))!r})")
    return [expr, None, None]


def _layer_norm_rule(node: Node, layout: Layout) -> Layout | None:
    """Layer norm normalises the trailing axes: fine in any layout that keeps them last, in order."""
    k = len(node.args["normalized_shape"])
    rank = layout.rank
    return layout if layout.perm[rank - k:] == tuple(range(rank - k, rank)) else None


@converter("aten.layer_norm.default", layout=LayoutPolicy.AXES, rule=_layer_norm_rule,
           emits=("Mean", "SquaredDifference", "Rsqrt", "Mul", "AddV2", "Sub"))
def layer_norm(ctx: OpContext, node: Node) -> str:
    """aten::layer_norm(Tensor input, SymInt[] normalized_shape, Tensor? weight=None, Tensor? bias=None,
    float eps=1e-05, bool cudnn_enable=True) -> Tensor"""
    k = len(ctx.arg("normalized_shape"))
    axes = list(range(-k, 0))
    x = ctx.t()
    scale = ctx.t("weight") if ctx.has("weight") else "None"
    offset = ctx.t("bias") if ctx.has("bias") else "None"
    return (f"tf.nn.batch_normalization({x}, *tf.nn.moments({x}, axes={axes}, keepdims=True), {offset}, {scale}, "
            f"{float(ctx.arg('eps', 1e-5))!r})")


def _check_group_norm(node: Node) -> str | None:
    return None if static_dims(first_tensor(node).shape[1:]) else "dynamic spatial or channel size"


@converter("aten.group_norm.default", layout=LayoutPolicy.CHANNELS_LAST, check=_check_group_norm,
           emits=("Reshape", "Mean", "SquaredDifference", "Rsqrt", "Mul", "AddV2", "Sub"))
def group_norm(ctx: OpContext, node: Node) -> str:
    """aten::group_norm(Tensor input, int num_groups, Tensor? weight=None, Tensor? bias=None, float eps=1e-05,
    bool cudnn_enabled=True) -> Tensor"""
    x = ctx.t()
    groups = int(ctx.arg("num_groups"))
    physical = list(ctx.layout().physical_shape(ctx.value().shape))
    grouped_shape = physical[:-1] + [groups, physical[-1] // groups]
    grouped = ctx.let(f"tf.reshape({x}, {ctx.shape_list(grouped_shape)})", "grouped")
    axes = list(range(1, len(grouped_shape) - 2)) + [len(grouped_shape) - 1]
    normed = ctx.let(f"tf.nn.batch_normalization({grouped}, *tf.nn.moments({grouped}, axes={axes}, keepdims=True), "
                     f"None, None, {float(ctx.arg('eps', 1e-5))!r})", "normed")
    expr = f"tf.reshape({normed}, {ctx.shape_list(physical)})"
    if ctx.has("weight"):
        expr += f" * {ctx.t('weight')}"
    if ctx.has("bias"):
        expr += f" + {ctx.t('bias')}"
    return expr
