"""Pooling and resizing, channels-last: max_pool2d, avg_pool2d, adaptive_avg_pool2d, nearest/bilinear upsampling,
pixel_shuffle."""

from __future__ import annotations

import numpy as np

from bridge.native.codegen import OpContext
from bridge.native.ir import Node
from bridge.native.ops._common import Padding, first_tensor, ntuple, static_dims, window_padding
from bridge.native.registry import LayoutPolicy, converter

_FLOAT32_LOWEST = "-3.4028234663852886e38"  # padding for max pooling (finite: safe on WebGL)


def _pool_geometry(node: Node) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(kernel, stride, padding, dilation) with PyTorch's defaults (stride = kernel when empty)."""
    kernel = ntuple(node.args["kernel_size"], 2)
    stride = ntuple(node.args.get("stride") or kernel, 2)
    return kernel, stride, ntuple(node.args.get("padding", 0), 2), ntuple(node.args.get("dilation", 1), 2)


def _pool_padding(node: Node) -> Padding:
    kernel, stride, padding, dilation = _pool_geometry(node)
    out = node.outputs[0]
    assert out is not None
    return window_padding(first_tensor(node).shape[2:], out.shape[2:], kernel, stride, dilation, padding)


def _check_max(node: Node) -> str | None:
    if not static_dims(first_tensor(node).shape[2:]):
        return "dynamic spatial size"
    if _pool_geometry(node)[3] != (1, 1):
        return "dilated max pooling"
    return None


def _avg_padding(node: Node) -> Padding | None:
    """TF padding for an avg_pool2d node, or None when TF cannot reproduce PyTorch's divisors."""
    pad = _pool_padding(node)
    if pad.mode == "VALID":
        return pad
    torch_pads = _pool_geometry(node)[2]
    inside = all(after <= p for (_, after), p in zip(pad.pads, torch_pads))  # no ceil_mode overhang
    if node.args.get("count_include_pad", True):
        return Padding("EXPLICIT", pad.pads) if inside else None
    return pad if pad.mode == "SAME" else None


def _check_avg(node: Node) -> str | None:
    if not static_dims(first_tensor(node).shape[2:]):
        return "dynamic spatial size"
    if node.args.get("divisor_override") is not None:
        return "divisor_override"
    if _avg_padding(node) is None:
        return "padding TF average pooling cannot reproduce (ceil_mode overhang or count_include_pad=False)"
    return None


@converter("aten.max_pool2d.default", layout=LayoutPolicy.CHANNELS_LAST, emits=("MaxPool", "PadV2"),
           check=_check_max)
def max_pool2d(ctx: OpContext, node: Node) -> str:
    """aten::max_pool2d(Tensor self, int[2] kernel_size, int[2] stride=[], int[2] padding=0, int[2] dilation=1,
    bool ceil_mode=False) -> Tensor"""
    kernel, stride, _, _ = _pool_geometry(node)
    pad = _pool_padding(node)
    x = ctx.t("self")
    if pad.mode == "EXPLICIT":
        x = ctx.let(f"tf.pad({x}, {pad.tf_pad(4)}, constant_values={_FLOAT32_LOWEST})", "pad")
    return f"tf.nn.max_pool2d({x}, ksize={list(kernel)}, strides={list(stride)}, padding={pad.literal()})"


@converter("aten.avg_pool2d.default", layout=LayoutPolicy.CHANNELS_LAST, emits=("AvgPool", "Pad"),
           check=_check_avg)
def avg_pool2d(ctx: OpContext, node: Node) -> str:
    """aten::avg_pool2d(Tensor self, int[2] kernel_size, int[2] stride=[], int[2] padding=0, bool ceil_mode=False,
    bool count_include_pad=True, int? divisor_override=None) -> Tensor"""
    kernel, stride, _, _ = _pool_geometry(node)
    pad = _avg_padding(node)
    assert pad is not None
    x = ctx.t("self")
    if pad.mode == "EXPLICIT":
        x = ctx.let(f"tf.pad({x}, {pad.tf_pad(4)})", "pad")
    return f"tf.nn.avg_pool2d({x}, ksize={list(kernel)}, strides={list(stride)}, padding={pad.literal()})"


def _check_adaptive(node: Node) -> str | None:
    sizes = first_tensor(node).shape[2:]
    if not static_dims(sizes):
        return "dynamic spatial size"
    outs = ntuple(node.args["output_size"], 2)
    if any(o is not None and s % o for s, o in zip(sizes, outs)):
        return f"adaptive pooling from {list(sizes)} to {list(outs)} (not divisible)"
    return None


@converter("aten.adaptive_avg_pool2d.default", layout=LayoutPolicy.CHANNELS_LAST, emits=("Mean", "AvgPool"),
           check=_check_adaptive)
def adaptive_avg_pool2d(ctx: OpContext, node: Node) -> str:
    """aten::adaptive_avg_pool2d(Tensor self, SymInt[2] output_size) -> Tensor"""
    sizes = ctx.value("self").shape[2:]
    outs = [s if o is None else o for s, o in zip(sizes, ntuple(ctx.arg("output_size"), 2))]
    if outs == [1, 1]:
        return f"tf.reduce_mean({ctx.t('self')}, axis=[1, 2], keepdims=True)"
    window = [s // o for s, o in zip(sizes, outs)]
    return f"tf.nn.avg_pool2d({ctx.t('self')}, ksize={window}, strides={window}, padding=\"VALID\")"


def _check_resize(node: Node) -> str | None:
    sizes = first_tensor(node).shape[2:]
    out = node.outputs[0]
    assert out is not None
    if not static_dims(sizes) or not static_dims(out.shape[2:]):
        return "dynamic spatial size"
    scales = node.args.get("scale_factors")
    if scales and any(abs(o / s - f) > 1e-9 for o, s, f in zip(out.shape[2:], sizes, scales)):
        return "a scale factor that does not give an integer output size"
    return None


@converter("aten.upsample_nearest2d.vec", layout=LayoutPolicy.CHANNELS_LAST, emits=("ResizeNearestNeighbor",),
           check=_check_resize)
def upsample_nearest2d(ctx: OpContext, node: Node) -> str:
    """aten::upsample_nearest2d.vec(Tensor input, SymInt[]? output_size, float[]? scale_factors) -> Tensor"""
    size = list(ctx.out().shape[2:])
    return (f"tf.compat.v1.image.resize_nearest_neighbor({ctx.t()}, {size}, align_corners=False, "
            f"half_pixel_centers=False)")


@converter("aten.upsample_bilinear2d.vec", layout=LayoutPolicy.CHANNELS_LAST, emits=("ResizeBilinear",),
           check=_check_resize)
def upsample_bilinear2d(ctx: OpContext, node: Node) -> str:
    """aten::upsample_bilinear2d.vec(Tensor input, SymInt[]? output_size, bool align_corners,
    float[]? scale_factors) -> Tensor"""
    size = list(ctx.out().shape[2:])
    corners = bool(ctx.arg("align_corners", False))
    return (f"tf.compat.v1.image.resize_bilinear({ctx.t()}, {size}, align_corners={corners}, "
            f"half_pixel_centers={not corners})")


@converter("aten.pixel_shuffle.default", layout=LayoutPolicy.CHANNELS_LAST, emits=("GatherV2", "DepthToSpace"))
def pixel_shuffle(ctx: OpContext, node: Node) -> str:
    """aten::pixel_shuffle(Tensor self, int upscale_factor) -> Tensor

    PyTorch reads input channel c*r*r + i*r + j; TF's DepthToSpace reads (i*r + j)*C + c: a channel gather
    reorders them (no transpose)."""
    r = int(ctx.arg("upscale_factor"))
    channels = ctx.out().shape[1]
    order = np.arange(channels * r * r).reshape(channels, r * r).T.ravel().tolist()
    return f"tf.nn.depth_to_space(tf.gather({ctx.t('self')}, {order}, axis=-1), {r})"
