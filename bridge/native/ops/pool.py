"""Pooling and resizing, channels-last: max pooling (also dilated, and the with_indices forms when only the values
are used), average pooling (every ceil_mode / count_include_pad / divisor_override combination: a VALID average over
the zero-padded input rescaled by PyTorch's per-position divisors), adaptive avg/max pooling (divisible sizes by pooling ops, others by per-window slices),
nearest/bilinear upsampling (also to a size computed from a dynamic one), pixel_shuffle. 1-D pools (kept whole by capture, NWC) run as 2-D ones on
tf.expand_dims(x, 1) ([N, 1, W, C]), squeezed back.

TF.js (wasm) computes a SAME-padded window op wrongly when a stride exceeds its kernel: such pools get explicit
padding and VALID instead.

Over a dynamic spatial size (`x:1x3x?x?`): max and average pooling in every ceil_mode / count_include_pad
combination (pads before a VALID pool; with ceil_mode the trailing pad is computed from the output's symbolic size,
and an average that counts only some of its window divides by a pooled mask of the counted positions), global
adaptive pooling (output size 1: a mean or max over the axes), and resizing to a size computed from a dynamic one
(a size tensor; whole scale factors only). Dilated max pooling and other adaptive sizes need static sizes."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from bridge.native.codegen import OpContext, lit
from bridge.native.ir import Dim, Node
from bridge.native.ops._common import (Padding, dynamic_window_padding, first_tensor, ntuple,
                                       producer_through_relayouts, static_dims, window_padding)
from bridge.native.ops.conv import conv_rows_for_pixel_shuffle
from bridge.native.registry import LayoutPolicy, converter

_FLOAT32_LOWEST = "-3.4028234663852886e38"  # padding for max pooling (finite: safe on WebGL)
_MAX_DILATED_WINDOW = 49  # a dilated max pool is a max over one strided slice per window element
_MAX_ADAPTIVE_WINDOWS = 64  # non-divisible adaptive pooling: one slice per output position and axis


def _spatial(shape: Sequence[Dim]) -> tuple[Dim, ...]:
    """The spatial sizes of an [N, C, H, W] shape, or (1, W) for [N, C, W] (1-D pools run as 2-D)."""
    return tuple(shape[2:]) if len(shape) == 4 else (1, *shape[2:])


def _pair(value: Any, n: int, fill: int) -> tuple[int, ...]:
    """A pooling argument as a 2-tuple; 1-D pools (`n` = 1) get `fill` on the leading unit axis."""
    return ntuple(value, 2) if n == 2 else (fill, *ntuple(value, 1))


def _pool_geometry(node: Node) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(kernel, stride, padding, dilation) as 2-D, with PyTorch's defaults (stride = kernel when empty)."""
    n = first_tensor(node).rank - 2
    kernel = _pair(node.args["kernel_size"], n, 1)
    stride = _pair(node.args.get("stride") or node.args["kernel_size"], n, 1)
    return kernel, stride, _pair(node.args.get("padding", 0), n, 0), _pair(node.args.get("dilation", 1), n, 1)


def _pool_padding(node: Node) -> Padding:
    kernel, stride, padding, dilation = _pool_geometry(node)
    if _dynamic(node):
        return dynamic_window_padding(stride, [(p, p) for p in padding], kernel, dilation)
    out = node.outputs[0]
    assert out is not None
    return window_padding(_spatial(first_tensor(node).shape), _spatial(out.shape), kernel, stride, dilation, padding)


def _input_2d(ctx: OpContext) -> str:
    """Input `self` as a 4-D NHWC tensor (NWC gets a unit H axis)."""
    x = ctx.t("self")
    return ctx.let(f"tf.expand_dims({x}, 1)", "2d") if ctx.value("self").rank == 3 else x


def _output_nd(ctx: OpContext, expr: str) -> str:
    """`expr` (4-D) back to the input's rank."""
    return f"tf.squeeze({expr}, axis=1)" if ctx.value("self").rank == 3 else expr


def _check_rank(node: Node) -> str | None:
    x = first_tensor(node)
    n = 1 if "1d" in node.target else 2
    if x.rank != n + 2:
        return f"input of rank {x.rank} (unbatched?): only [N, C, {'W' if n == 1 else 'H, W'}] converts"
    return None


def _check_static(node: Node) -> str | None:
    return _check_rank(node) or ("dynamic spatial size" if _dynamic(node) else None)


def _dynamic(node: Node) -> bool:
    """True when the input's spatial size is known only at run time."""
    return not static_dims(first_tensor(node).shape[2:])


def _dynamic_pads(ctx: OpContext, x: str) -> list[tuple[int, str]]:
    """Per spatial axis of the NHWC 2-D view `x`: (PyTorch's leading pad, the trailing pad as TF source) that make
    a VALID window op give exactly the output's symbolic size: (out - 1) * stride + kernel - size - before, at
    least 0 (ceil_mode's extra window; below 0 the last window ends before the padding, and VALID drops it)."""
    kernel, stride, padding, _ = _pool_geometry(ctx.node)
    pads = []
    for axis, (k, st, p, out) in enumerate(zip(kernel, stride, padding, _spatial(ctx.out().sizes)), start=1):
        if isinstance(out, int) and out == 1 and k == 1 and p == 0:  # the unit axis of a 1-D pool
            pads.append((0, "0"))
            continue
        pads.append((p, f"tf.maximum(({ctx.size(out)} - 1) * {st} + {k} - tf.shape({x})[{axis}] - {p}, 0)"))
    return pads


def _pads_literal(pads: Sequence[tuple[int, str]]) -> str:
    return "[[0, 0], " + ", ".join(f"[{before}, {after}]" for before, after in pads) + ", [0, 0]]"


def _dynamic_exact(node: Node) -> bool:
    """True when PyTorch's own pads before a VALID pool (or TF's SAME) give its result at every size: no
    ceil_mode, and an average that counts the padding, has none, or is TF's SAME (stride 1)."""
    if node.args.get("ceil_mode", False):
        return False
    if "max_pool" in node.target or node.args.get("count_include_pad", True):
        return True
    return not any(_pool_geometry(node)[2]) or _pool_padding(node).mode == "SAME"


def _indices_read(node: Node) -> str | None:
    """PyTorch's argmax indices (flat h*W + w per channel plane) are not produced: refuse a node whose indices
    output is read (capture leaves an extra output nothing reads as None)."""
    if len(node.outputs) > 1 and node.outputs[1] is not None:
        return "the indices output is used (only the pooled values convert)"
    return None


# -------------------------------------------------------------------------------------------------- max pooling

def _check_max(node: Node) -> str | None:
    reason = _check_rank(node) or _indices_read(node)
    if reason:
        return reason
    kernel, _, _, dilation = _pool_geometry(node)
    if _dynamic(node):
        return "dilated max pooling over a dynamic spatial size" if dilation != (1, 1) else None
    if dilation != (1, 1) and kernel[0] * kernel[1] > _MAX_DILATED_WINDOW:
        return f"dilated max pooling with a window over {_MAX_DILATED_WINDOW} elements"
    return None


def _max_pool(ctx: OpContext, node: Node) -> str:
    """Max pooling as the node's geometry says (dilated: max over one strided slice per window element, since TF's
    MaxPool has no dilation). Never SAME with a stride over its kernel (TF.js wasm), nor with dilation."""
    kernel, stride, _, dilation = _pool_geometry(node)
    if _dynamic(node) and not _dynamic_exact(node):
        x = ctx.let(f"tf.pad({_input_2d(ctx)}, {_pads_literal(_dynamic_pads(ctx, _input_2d(ctx)))}, "
                    f"constant_values={_FLOAT32_LOWEST})", "pad")
        return _output_nd(ctx, f"tf.nn.max_pool2d({x}, ksize={list(kernel)}, strides={list(stride)}, "
                               "padding=\"VALID\")")
    pad = _pool_padding(node)
    if pad.mode == "SAME" and (dilation != (1, 1) or any(s > k for s, k in zip(stride, kernel))):
        pad = Padding("EXPLICIT", pad.pads)
    x = _input_2d(ctx)
    if pad.mode == "EXPLICIT":
        x = ctx.let(f"tf.pad({x}, {pad.tf_pad(4)}, constant_values={_FLOAT32_LOWEST})", "pad")
    if dilation == (1, 1):
        expr = f"tf.nn.max_pool2d({x}, ksize={list(kernel)}, strides={list(stride)}, padding={pad.literal()})"
        return _output_nd(ctx, expr)
    outs = _spatial(ctx.out().shape)
    slices = []
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            h0, w0 = i * dilation[0], j * dilation[1]
            h1, w1 = h0 + (outs[0] - 1) * stride[0] + 1, w0 + (outs[1] - 1) * stride[1] + 1
            slices.append(f"{x}[:, {h0}:{h1}:{stride[0]}, {w0}:{w1}:{stride[1]}, :]")
    return _output_nd(ctx, f"tf.reduce_max(tf.stack([{', '.join(slices)}]), axis=0)")


_MAX_EMITS = ("MaxPool", "PadV2", "StridedSlice", "Pack", "Max", "ExpandDims", "Squeeze", "Shape", "Maximum",
              "Sub", "AddV2", "Mul")


@converter("aten.max_pool2d.default", "aten.max_pool1d.default", layout=LayoutPolicy.CHANNELS_LAST,
           emits=_MAX_EMITS, check=_check_max)
def max_pool(ctx: OpContext, node: Node) -> str:
    """aten::max_pool2d(Tensor self, int[2] kernel_size, int[2] stride=[], int[2] padding=0, int[2] dilation=1,
    bool ceil_mode=False) -> Tensor   (also aten::max_pool1d, int[1] arguments)"""
    return _max_pool(ctx, node)


@converter("aten.max_pool2d_with_indices.default", "aten.max_pool1d_with_indices.default",
           layout=LayoutPolicy.CHANNELS_LAST, emits=_MAX_EMITS, check=_check_max)
def max_pool_with_indices(ctx: OpContext, node: Node) -> list[str | None]:
    """aten::max_pool2d_with_indices(Tensor self, int[2] kernel_size, int[2] stride=[], int[2] padding=0,
    int[2] dilation=1, bool ceil_mode=False) -> (Tensor, Tensor)   (return_indices=True; also
    aten::max_pool1d_with_indices; only the values output converts)"""
    return [_max_pool(ctx, node), None]


# ---------------------------------------------------------------------------------------------- average pooling

def _axis_divisors(size: int, out: int, kernel: int, stride: int, pad: int, include_pad: bool) -> list[int]:
    """PyTorch's avg_pool divisor along one axis, per output position: the window clipped to the padded input
    (count_include_pad; a ceil_mode window running past the padding counts only up to it) or to the input."""
    divisors = []
    for i in range(out):
        start = i * stride - pad
        end = min(start + kernel, size + pad)
        divisors.append(end - start if include_pad else min(end, size) - max(start, 0))
    return divisors


def _avg_scales(node: Node) -> tuple[list[float], list[float]] | None:
    """Per-axis factors turning TF's VALID average over the zero-padded input (sum / kernel area) into PyTorch's
    average (sum / divisor): kernel / divisor per axis (PyTorch's divisor is the product of the per-axis ones).
    None when they are all 1."""
    kernel, stride, torch_pads, _ = _pool_geometry(node)
    sizes = [int(s) for s in _spatial(first_tensor(node).shape)]  # type: ignore[arg-type]
    outs = [int(s) for s in _spatial(node.outputs[0].shape)]  # type: ignore[union-attr,arg-type]
    include = bool(node.args.get("count_include_pad", True))
    scales = [[k / d for d in _axis_divisors(size, out, k, s, p, include)]
              for size, out, k, s, p in zip(sizes, outs, kernel, stride, torch_pads)]
    return None if all(f == 1.0 for axis in scales for f in axis) else (scales[0], scales[1])


def _check_avg(node: Node) -> str | None:
    return _check_rank(node)


def _counted(ctx: OpContext, x: str, padded: str, pads: Sequence[tuple[int, str]]) -> str:
    """A [1, H', W', 1] mask over `padded` (the NHWC 2-D view `x` padded by `pads`): 1.0 where PyTorch's divisor
    counts a position (the input, and its padding with count_include_pad), 0.0 elsewhere (ceil_mode's extra)."""
    include = bool(ctx.arg("count_include_pad", True))
    axes = []
    for axis, (before, _) in enumerate(pads, start=1):
        index = ctx.let(f"tf.range(tf.shape({padded})[{axis}])", "index")
        size = f"tf.shape({x})[{axis}]"
        low, high = (0, f"{size} + {2 * before}") if include else (before, f"{size} + {before}")
        axes.append(f"tf.cast(tf.logical_and({index} >= {low}, {index} < {high}), tf.float32)")
    return ctx.let(f"{axes[0]}[None, :, None, None] * {axes[1]}[None, None, :, None]", "counted")


def _dynamic_avg_pool(ctx: OpContext, node: Node) -> str:
    """Average pooling over a dynamic size where the divisor varies by position (ceil_mode, or the padding left
    out): the window sums of the zero-padded input over the window sums of the mask of counted positions."""
    kernel, stride, _, _ = _pool_geometry(node)
    x = _input_2d(ctx)
    pads = _dynamic_pads(ctx, x)
    padded = ctx.let(f"tf.pad({x}, {_pads_literal(pads)})", "pad")
    pool = f'ksize={list(kernel)}, strides={list(stride)}, padding="VALID"'
    mean = ctx.let(f"tf.nn.avg_pool2d({padded}, {pool})", "window_mean")
    if node.args.get("divisor_override") is not None:
        return _output_nd(ctx, _avg_divisor_override(node, mean))
    share = f"tf.nn.avg_pool2d({_counted(ctx, x, padded, pads)}, {pool})"
    return _output_nd(ctx, f"{mean} / {share}")


def _avg_divisor_override(node: Node, expr: str) -> str:
    """divisor_override: PyTorch divides each window's sum by it."""
    kernel, _, _, _ = _pool_geometry(node)
    override = node.args.get("divisor_override")
    return expr if override is None else f"{expr} * {lit(kernel[0] * kernel[1] / float(override))}"


@converter("aten.avg_pool2d.default", "aten.avg_pool1d.default", layout=LayoutPolicy.CHANNELS_LAST,
           emits=("AvgPool", "Pad", "Mul", "ExpandDims", "Squeeze", "Shape", "StridedSlice", "Maximum", "Sub",
                  "AddV2", "Pack", "Range", "GreaterEqual", "Less", "LogicalAnd", "Cast", "RealDiv"),
           check=_check_avg)
def avg_pool(ctx: OpContext, node: Node) -> str:
    """aten::avg_pool2d(Tensor self, int[2] kernel_size, int[2] stride=[], int[2] padding=0, bool ceil_mode=False,
    bool count_include_pad=True, int? divisor_override=None) -> Tensor   (also aten::avg_pool1d, int[1]
    arguments, no divisor_override; every ceil_mode / count_include_pad combination)"""
    if _dynamic(node) and not _dynamic_exact(node):
        return _dynamic_avg_pool(ctx, node)
    kernel, stride, _, _ = _pool_geometry(node)
    pad = _pool_padding(node)
    # over a dynamic size every window here is whole, or TF's SAME excludes the padding: no divisors
    scales = _avg_scales(node) if node.args.get("divisor_override") is None and not _dynamic(node) else None
    x = _input_2d(ctx)
    # TF's SAME average excludes the padding, as count_include_pad=False does, but TF.js wasm mis-pads SAME when a
    # stride exceeds its kernel; every other padding is explicit zeros before a VALID pool, rescaled by divisor.
    same = pad.mode == "SAME" and not node.args.get("count_include_pad", True) and \
        not any(s > k for s, k in zip(stride, kernel)) and node.args.get("divisor_override") is None
    if pad.mode == "EXPLICIT" or (pad.mode == "SAME" and not same):
        x = ctx.let(f"tf.pad({x}, {pad.tf_pad(4)})", "pad")
    padding = '"SAME"' if same else '"VALID"'
    expr = f"tf.nn.avg_pool2d({x}, ksize={list(kernel)}, strides={list(stride)}, padding={padding})"
    if scales is not None and not same:
        rows, cols = scales
        factors = [_constant(f, shape) for f, shape in ((rows, [1, len(rows), 1, 1]), (cols, [1, 1, len(cols), 1]))
                   if any(v != 1.0 for v in f)]
        expr = " * ".join([ctx.let(expr, "window_mean"), *factors])
    return _output_nd(ctx, _avg_divisor_override(node, expr))


def _constant(values: list[float], shape: list[int]) -> str:
    """A float32 constant of `shape`, or a scalar literal when every value is the same."""
    if len(set(values)) == 1:
        return lit(float(values[0]))
    return f"tf.constant({lit([float(v) for v in values])}, shape={shape}, dtype=tf.float32)"


# ---------------------------------------------------------------------------------------------- adaptive pooling

def _adaptive_sizes(node: Node) -> tuple[list[int], list[int]]:
    """(input spatial sizes, output sizes) as 2-D; None in output_size keeps that size."""
    x = first_tensor(node)
    outs = _adaptive_requested(node)
    sizes = [int(s) for s in _spatial(x.shape)]  # type: ignore[arg-type]
    return sizes, [s if o is None else o for s, o in zip(sizes, outs)]


def _adaptive_requested(node: Node) -> tuple[int | None, ...]:
    """output_size as 2-D (1-D pools get a leading 1); None keeps that input size."""
    requested = node.args["output_size"]
    return (1, *_ints_or_none(requested, 1)) if first_tensor(node).rank == 3 else _ints_or_none(requested, 2)


def _global(node: Node) -> bool:
    """True for an adaptive pool to size 1 on every spatial axis (a reduction, whatever the input size)."""
    return all(o == 1 for o in _adaptive_requested(node))


def _ints_or_none(value: Any, n: int) -> tuple[int | None, ...]:
    """output_size as an n-tuple, keeping None entries."""
    if isinstance(value, (list, tuple)):
        items = tuple(None if v is None else int(v) for v in value)
        return items * n if len(items) == 1 else items
    return (int(value),) * n


def _check_adaptive(node: Node) -> str | None:
    reason = _check_rank(node) or _indices_read(node)
    if reason or _global(node):
        return reason
    if _dynamic(node):
        return "dynamic spatial size (only output size 1 converts over one)"
    sizes, outs = _adaptive_sizes(node)
    if any(s % o and o > _MAX_ADAPTIVE_WINDOWS for s, o in zip(sizes, outs)):
        return (f"adaptive pooling from {sizes} to {outs} (not divisible, over {_MAX_ADAPTIVE_WINDOWS} windows "
                f"on an axis)")
    return None


def _adaptive(ctx: OpContext, node: Node, kind: str) -> str:
    """Adaptive `kind` ('avg' | 'max') pooling: one reduction when global, one pooling op when both axes divide,
    else axis by axis (windows are rectangles, so both reductions separate), PyTorch's windows
    [floor(i*in/out), ceil((i+1)*in/out)) as slices reduced and concatenated on a non-divisible axis."""
    reduce, pool = ("tf.reduce_mean", "tf.nn.avg_pool2d") if kind == "avg" else ("tf.reduce_max", "tf.nn.max_pool2d")
    rank = ctx.value("self").rank
    if _global(node):
        return f"{reduce}({ctx.t('self')}, axis={list(range(1, rank - 1))}, keepdims=True)"
    sizes, outs = _adaptive_sizes(node)
    x = _input_2d(ctx)
    if all(s % o == 0 for s, o in zip(sizes, outs)):
        window = [s // o for s, o in zip(sizes, outs)]
        return _output_nd(ctx, f"{pool}({x}, ksize={window}, strides={window}, padding=\"VALID\")")
    steps = []
    for axis, (size, out) in enumerate(zip(sizes, outs), start=1):
        if size == out:
            continue
        if size % out == 0:
            window = [size // out if a == axis else 1 for a in (1, 2)]
            steps.append(lambda e, w=window: f"{pool}({e}, ksize={w}, strides={w}, padding=\"VALID\")")
            continue
        lead = ":, " * axis
        bounds = [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]
        steps.append(lambda e, a=axis, lead=lead, b=bounds: "tf.concat([" + ", ".join(
            f"{reduce}({e}[{lead}{lo}:{hi}], axis={a}, keepdims=True)" for lo, hi in b) + f"], axis={a})")
    for step in steps[:-1]:
        x = ctx.let(step(x), "pooled")
    return _output_nd(ctx, steps[-1](x))


_ADAPTIVE_EMITS = ("StridedSlice", "ConcatV2", "ExpandDims", "Squeeze")


@converter("aten.adaptive_avg_pool2d.default", "aten.adaptive_avg_pool1d.default", layout=LayoutPolicy.CHANNELS_LAST,
           emits=("Mean", "AvgPool", *_ADAPTIVE_EMITS), check=_check_adaptive)
def adaptive_avg_pool(ctx: OpContext, node: Node) -> str:
    """aten::adaptive_avg_pool2d(Tensor self, SymInt[2] output_size) -> Tensor   (also aten::adaptive_avg_pool1d,
    int[1] output_size)"""
    return _adaptive(ctx, node, "avg")


@converter("aten.adaptive_max_pool2d.default", "aten.adaptive_max_pool1d.default", layout=LayoutPolicy.CHANNELS_LAST,
           emits=("Max", "MaxPool", *_ADAPTIVE_EMITS), check=_check_adaptive)
def adaptive_max_pool(ctx: OpContext, node: Node) -> list[str | None]:
    """aten::adaptive_max_pool2d(Tensor self, int[2] output_size) -> (Tensor, Tensor)   (also
    aten::adaptive_max_pool1d, int[1] output_size; only the values output converts)"""
    return [_adaptive(ctx, node, "max"), None]


def _check_resize(node: Node) -> str | None:
    sizes = first_tensor(node).shape[2:]
    out = node.outputs[0]
    assert out is not None
    scales = node.args.get("scale_factors")
    if not static_dims(sizes) or not static_dims(out.shape[2:]):
        # PyTorch samples at 1 / scale_factor, TF at input / output size: the same only for whole factors
        if scales and any(not float(f).is_integer() for f in scales):
            return "a fractional scale factor over a dynamic spatial size"
        return None
    if scales and any(abs(o / s - f) > 1e-9 for o, s, f in zip(out.shape[2:], sizes, scales)):
        return "a scale factor that does not give an integer output size"
    return None


def _resize_size(ctx: OpContext) -> str:
    """The output's spatial size: a literal, or computed from the inputs' sizes (e.g. another feature map's)."""
    out = ctx.out()
    if static_dims(out.shape[2:]):
        return str(list(out.shape[2:]))
    return "tf.stack([" + ", ".join(ctx.size(size) for size in out.sizes[2:]) + "])"


@converter("aten.upsample_nearest2d.vec", layout=LayoutPolicy.CHANNELS_LAST,
           emits=("ResizeNearestNeighbor", "Pack"), check=_check_resize)
def upsample_nearest2d(ctx: OpContext, node: Node) -> str:
    """aten::upsample_nearest2d.vec(Tensor input, SymInt[]? output_size, float[]? scale_factors) -> Tensor"""
    size = _resize_size(ctx)
    return (f"tf.compat.v1.image.resize_nearest_neighbor({ctx.t()}, {size}, align_corners=False, "
            f"half_pixel_centers=False)")


@converter("aten.upsample_bilinear2d.vec", layout=LayoutPolicy.CHANNELS_LAST, emits=("ResizeBilinear", "Pack"),
           check=_check_resize)
def upsample_bilinear2d(ctx: OpContext, node: Node) -> str:
    """aten::upsample_bilinear2d.vec(Tensor input, SymInt[]? output_size, bool align_corners,
    float[]? scale_factors) -> Tensor"""
    size = _resize_size(ctx)
    corners = bool(ctx.arg("align_corners", False))
    return (f"tf.compat.v1.image.resize_bilinear({ctx.t()}, {size}, align_corners={corners}, "
            f"half_pixel_centers={not corners})")


@converter("aten.pixel_shuffle.default", layout=LayoutPolicy.CHANNELS_LAST,
           emits=("GatherV2", "DepthToSpace", "Conv2D", "BiasAdd", "Unpack", "Reshape", "ConcatV2"))
def pixel_shuffle(ctx: OpContext, node: Node) -> str:
    """aten::pixel_shuffle(Tensor self, int upscale_factor) -> Tensor

    PyTorch reads input channel c*r*r + i*r + j; TF's DepthToSpace reads (i*r + j)*C + c: a channel gather
    reorders them (no transpose). Right after a conv2d (ESPCN) the conv's filters are reordered instead, one conv
    per output row (bridge.native.ops.conv.conv_rows_for_pixel_shuffle)."""
    r = int(ctx.arg("upscale_factor"))
    producer = producer_through_relayouts(ctx, ctx.value("self"), ctx.node)
    rows = conv_rows_for_pixel_shuffle(ctx, producer, r) if producer is not None and r > 1 else None
    if rows is not None:
        return rows
    channels = ctx.out().shape[1]
    order = np.arange(channels * r * r).reshape(channels, r * r).T.ravel().tolist()
    return f"tf.nn.depth_to_space(tf.gather({ctx.t('self')}, {order}, axis=-1), {r})"
