"""Normalisations: batch norm (inference, and batch statistics), instance norm, layer norm, group norm."""

from __future__ import annotations

from bridge.native.codegen import OpContext
from bridge.native.ir import Layout, Node, Value
from bridge.native.ops._common import first_tensor
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


def _check_batch_stats(node: Node) -> str | None:
    return None if first_tensor(node).rank >= 2 else "input of rank < 2"


@converter("aten._native_batch_norm_legit.no_stats", layout=LayoutPolicy.CHANNELS_LAST, check=_check_batch_stats,
           emits=("Mean", "SquaredDifference", "StopGradient", "Rsqrt", "Mul", "AddV2", "Sub"))
def batch_norm_batch_stats(ctx: OpContext, node: Node) -> list[str | None]:
    """aten::_native_batch_norm_legit.no_stats(Tensor input, Tensor? weight, Tensor? bias, bool training,
    float momentum, float eps) -> (Tensor, Tensor, Tensor)   (BatchNorm with track_running_stats=False: the
    statistics of the batch itself; outputs: normalised input, per-channel mean, per-channel 1/std)

    Channels are the last TF axis (NHWC / NWC, or [N, C] in PyTorch order): statistics over every other axis."""
    x = ctx.t()
    eps = float(ctx.arg("eps", 1e-5))
    axes = list(range(ctx.value().rank - 1))
    moments = ctx.let(f"tf.nn.moments({x}, axes={axes})", "moments")
    scale = ctx.t("weight") if ctx.has("weight") else "None"
    offset = ctx.t("bias") if ctx.has("bias") else "None"
    return [f"tf.nn.batch_normalization({x}, {moments}[0], {moments}[1], {offset}, {scale}, {eps!r})",
            f"{moments}[0]", f"tf.math.rsqrt({moments}[1] + {eps!r})"]


def _check_instance_norm(node: Node) -> str | None:
    x = first_tensor(node)
    if x.rank < 3:
        return "input without spatial axes"
    if not node.args.get("use_input_stats", True) and not (isinstance(node.args.get("running_mean"), Value)
                                                           and isinstance(node.args.get("running_var"), Value)):
        return "use_input_stats=False without running statistics"
    return None


@converter("aten.instance_norm.default", layout=LayoutPolicy.CHANNELS_LAST, check=_check_instance_norm,
           emits=("Mean", "Sub", "Square", "Rsqrt", "Mul", "AddV2"))
def instance_norm(ctx: OpContext, node: Node) -> str:
    """aten::instance_norm(Tensor input, Tensor? weight, Tensor? bias, Tensor? running_mean, Tensor? running_var,
    bool use_input_stats, float momentum, float eps, bool cudnn_enabled) -> Tensor

    InstanceNorm1d/2d/3d: per sample and channel over the spatial axes (TF axes 1..rank-2 of NWC / NHWC), or with
    the running statistics when use_input_stats is False (track_running_stats=True in eval)."""
    x = ctx.t()
    eps = float(ctx.arg("eps", 1e-5))
    if not ctx.arg("use_input_stats", True):
        scale = ctx.t("weight") if ctx.has("weight") else "None"
        offset = ctx.t("bias") if ctx.has("bias") else "None"
        return (f"tf.nn.batch_normalization({x}, {ctx.t('running_mean')}, {ctx.t('running_var')}, {offset}, "
                f"{scale}, {eps!r})")
    # spelled out (Sub, Square, Mean): TF's CPU graph optimiser fuses the batch_normalization-over-moments
    # pattern with an affine scale into _MklFusedInstanceNorm, an op TF.js does not have
    axes = list(range(1, ctx.value().rank - 1))
    centred = ctx.let(f"{x} - tf.reduce_mean({x}, axis={axes}, keepdims=True)", "centred")
    expr = (f"{centred} * tf.math.rsqrt(tf.reduce_mean(tf.square({centred}), axis={axes}, keepdims=True) + "
            f"{eps!r})")
    if ctx.has("weight"):
        expr = f"{expr} * {ctx.t('weight')}"
    if ctx.has("bias"):
        expr = f"{expr} + {ctx.t('bias')}"
    return expr


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
    return None if first_tensor(node).shape[1] is not None else "dynamic channel size"


@converter("aten.group_norm.default", layout=LayoutPolicy.CHANNELS_LAST, check=_check_group_norm,
           emits=("Reshape", "Mean", "SquaredDifference", "Rsqrt", "Mul", "AddV2", "Sub"))
def group_norm(ctx: OpContext, node: Node) -> str:
    """aten::group_norm(Tensor input, int num_groups, Tensor? weight=None, Tensor? bias=None, float eps=1e-05,
    bool cudnn_enabled=True) -> Tensor"""
    x = ctx.t()
    groups = int(ctx.arg("num_groups"))
    physical = list(ctx.dims())
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
