"""Convolutions: conv1d, conv2d (grouped, depthwise, dilated, strided, 'same' and asymmetric padding),
conv_transpose2d (stride == kernel as 1x1 convs + reshapes; other geometries as one ordinary convolution per
output phase + reshapes when every output phase has as many outputs; else Conv2DBackpropInput). All run
channels-last; kernels are stored in TF layout (see bridge.native.weights)."""

from __future__ import annotations

from functools import partial

from bridge.native.codegen import OpContext
from bridge.native.ir import Node, Size, Value
from bridge.native.ops._common import Padding, dynamic_window_padding, first_tensor, ntuple, static_dims, window_padding
from bridge.native.registry import LayoutPolicy, converter
from bridge.native.weights import (Phase, depthwise_filter, iohw_to_hwoi, iohw_to_phase_filter,
                                   iohw_to_row_filters, oihw_to_hwio, oihw_to_shuffle_rows, oiw_to_wio, phase_taps,
                                   shuffle_rows_bias, tile_channels)


def _geometry(node: Node, n: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], int]:
    """(kernel, stride, dilation, groups) of a conv node with `n` spatial axes."""
    weight = node.args["weight"]
    kernel = tuple(int(k) for k in weight.shape[2:])
    return kernel, ntuple(node.args.get("stride", 1), n), ntuple(node.args.get("dilation", 1), n), \
        int(node.args.get("groups", 1))


def _leading_pads(node: Node, kernel: tuple[int, ...], dilation: tuple[int, ...]) -> tuple[int, ...]:
    padding = node.args.get("padding", 0)
    if padding == "valid":
        return (0,) * len(kernel)
    if padding == "same":
        return tuple((k - 1) * d // 2 for k, d in zip(kernel, dilation))
    return ntuple(padding, len(kernel))


def _padding(node: Node, n: int) -> Padding:
    kernel, stride, dilation, _ = _geometry(node, n)
    x, out = first_tensor(node), node.outputs[0]
    assert out is not None
    before = _leading_pads(node, kernel, dilation)
    if static_dims(x.shape[2:]) and static_dims(out.shape[2:]):
        return window_padding(x.shape[2:], out.shape[2:], kernel, stride, dilation, before)
    if node.args.get("padding") == "same":  # PyTorch puts the odd pad after
        after = tuple((k - 1) * d - b for k, d, b in zip(kernel, dilation, before))
    else:
        after = before
    return dynamic_window_padding(stride, list(zip(before, after)), kernel, dilation)


def _check_conv(n: int, node: Node) -> str | None:
    x = first_tensor(node)
    if x.shape[1] is None:
        return "dynamic channel size"
    if not isinstance(node.args.get("weight"), Value):
        return "kernel is not a tensor"
    kernel, stride, dilation, groups = _geometry(node, n)
    if max(stride) > 1 and max(dilation) > 1:
        return "stride > 1 together with dilation > 1 (TF convolutions do not support both)"
    if groups > 1 and groups == x.shape[1] and len(set(stride)) > 1:
        return "depthwise convolution with unequal strides"
    return None


def _padded_input(ctx: OpContext, pad: Padding, rank: int) -> str:
    x = ctx.t("input")
    if pad.mode != "EXPLICIT":
        return x
    return ctx.let(f"tf.pad({x}, {pad.tf_pad(rank)})", "pad")


def _with_bias(ctx: OpContext, expr: str) -> str:
    return f"tf.nn.bias_add({expr}, {ctx.t('bias')})" if ctx.has("bias") else expr


@converter("aten.conv2d.default", "aten.conv2d.padding", layout=LayoutPolicy.CHANNELS_LAST,
           emits=("Conv2D", "DepthwiseConv2dNative", "Pad", "BiasAdd", "Split", "ConcatV2"),
           check=partial(_check_conv, 2))
def conv2d(ctx: OpContext, node: Node) -> str:
    """aten::conv2d(Tensor input, Tensor weight, Tensor? bias=None, SymInt[2] stride=1, SymInt[2] padding=0,
    SymInt[2] dilation=1, SymInt groups=1) -> Tensor   (also the .padding overload with padding='same'/'valid')"""
    _, stride, dilation, groups = _geometry(node, 2)
    pad = _padding(node, 2)
    x = _padded_input(ctx, pad, 4)
    channels = ctx.value("input").shape[1]
    common = f"padding={pad.literal()}" + (f", dilations={list(dilation)}" if max(dilation) > 1 else "")
    if groups == 1:
        kernel = ctx.weight("weight", "hwio", oihw_to_hwio, lambda e: f"tf.transpose({e}, [2, 3, 1, 0])")
        return _with_bias(ctx, f"tf.nn.conv2d({x}, {kernel}, strides={list(stride)}, {common})")
    if groups == channels:
        kernel = ctx.weight("weight", "depthwise_hwcm", partial(depthwise_filter, in_channels=channels))
        return _with_bias(ctx, f"tf.nn.depthwise_conv2d({x}, {kernel}, strides=[1, {stride[0]}, {stride[1]}, 1], "
                               f"{common})")
    kernel = ctx.weight("weight", "hwio", oihw_to_hwio, lambda e: f"tf.transpose({e}, [2, 3, 1, 0])")
    grouped = (f"tf.concat([tf.nn.conv2d(xg, kg, strides={list(stride)}, {common}) for xg, kg in "
               f"zip(tf.split({x}, {groups}, axis=-1), tf.split({kernel}, {groups}, axis=-1))], axis=-1)")
    return _with_bias(ctx, grouped)


def _output_rows(ctx: OpContext, rows: str, count: int, grid: tuple[Size, Size], cols: int, channels: int) -> str:
    """The output [N, H'*count, W'*cols, channels] of `rows`, a TF list of `count` tensors [N, H', W',
    cols*channels] (output row phase a's at a, its column phases side by side in the channels): each laid out as
    one output row [N, H', 1, W'*cols*channels] by a reshape, the rows concatenated. Only Reshape and ConcatV2, no
    Transpose or DepthToSpace (a slow kernel in TF.js wasm); shared by the transposed-conv and pixel-shuffle forms."""
    h, w = grid
    if count == 1:
        return f"tf.reshape({rows}[0], {ctx.shape_list([-1, h, w * cols, channels])})"
    row = ctx.shape_list([-1, h, 1, w * cols * channels])
    return (f"tf.reshape(tf.concat([tf.reshape(r, {row}) for r in {rows}], axis=2), "
            f"{ctx.shape_list([-1, h * count, w * cols, channels])})")


CONV2D_TARGETS = ("aten.conv2d.default", "aten.conv2d.padding")


def conv_rows_for_pixel_shuffle(ctx: OpContext, conv: Node, r: int) -> str | None:
    """pixel_shuffle(r) of the output of `conv` (an ungrouped conv2d with parameter weights, read by nothing
    else) as r convolutions, one per output row phase (`oihw_to_shuffle_rows`), laid out by `_output_rows`: no
    channel gather and no DepthToSpace (slow kernels in TF.js wasm), the
    conv itself never computed. None when `conv` is not such a conv."""
    weight, bias = conv.args.get("weight"), conv.args.get("bias")
    if conv.target not in CONV2D_TARGETS or not isinstance(weight, Value) or not weight.is_weight:
        return None
    _, stride, dilation, groups = _geometry(conv, 2)
    if isinstance(bias, Value) and not bias.is_weight or groups != 1 or _check_conv(2, conv):
        return None
    pad = _padding(conv, 2)
    padding = str(pad.tf_pad(4)) if pad.mode == "EXPLICIT" else pad.literal()
    dilations = f", dilations={list(dilation)}" if max(dilation) > 1 else ""
    out = conv.outputs[0]
    assert out is not None
    channels = out.shape[1] // (r * r)
    h, w = out.sizes[2:]
    filters = ctx.transformed(weight, f"shuffle_rows_{r}", partial(oihw_to_shuffle_rows, r=r))
    y = f"tf.nn.conv2d({ctx.expr(conv.args['input'])}, f, strides={list(stride)}, padding={padding}{dilations})"
    if isinstance(bias, Value):
        biases = ctx.transformed(bias, f"shuffle_rows_{r}", partial(shuffle_rows_bias, r=r))
        y = f"tf.nn.bias_add({y}, b)"
        loop = f"for f, b in zip(tf.unstack({filters}), tf.unstack({biases}))"
    else:
        loop = f"for f in tf.unstack({filters})"
    return _output_rows(ctx, ctx.let(f"[{y} {loop}]", "rows"), r, (h, w), r, channels)


@converter("aten.conv1d.default", "aten.conv1d.padding", layout=LayoutPolicy.CHANNELS_LAST,
           emits=("Conv2D", "DepthwiseConv2dNative", "ExpandDims", "Squeeze", "Pad", "BiasAdd"),
           check=partial(_check_conv, 1))
def conv1d(ctx: OpContext, node: Node) -> str:
    """aten::conv1d(Tensor input, Tensor weight, Tensor? bias=None, SymInt[1] stride=1, SymInt[1] padding=0,
    SymInt[1] dilation=1, SymInt groups=1) -> Tensor"""
    _, stride, dilation, groups = _geometry(node, 1)
    pad = _padding(node, 1)
    x = _padded_input(ctx, pad, 3)
    channels = ctx.value("input").shape[1]
    if groups == 1:
        kernel = ctx.weight("weight", "wio", oiw_to_wio, lambda e: f"tf.transpose({e}, [2, 1, 0])")
        dilations = f", dilations={dilation[0]}" if dilation[0] > 1 else ""
        return _with_bias(ctx, f"tf.nn.conv1d({x}, {kernel}, stride={stride[0]}, padding={pad.literal()}{dilations})")
    if groups != channels:
        kernel = ctx.weight("weight", "wio", oiw_to_wio, lambda e: f"tf.transpose({e}, [2, 1, 0])")
        return _with_bias(ctx, f"tf.concat([tf.nn.conv1d(xg, kg, stride={stride[0]}, padding={pad.literal()}, "
                               f"dilations={dilation[0]}) for xg, kg in zip(tf.split({x}, {groups}, axis=-1), "
                               f"tf.split({kernel}, {groups}, axis=-1))], axis=-1)")
    kernel = ctx.weight("weight", "depthwise_1wcm",
                        lambda w: depthwise_filter(w[:, :, None, :], in_channels=channels))
    # the same stride on the added size-1 axis changes nothing there, and TF's CPU kernel (without oneDNN) takes
    # only equal strides
    return _with_bias(ctx, f"tf.squeeze(tf.nn.depthwise_conv2d(tf.expand_dims({x}, 1), {kernel}, "
                           f"strides=[1, {stride[0]}, {stride[0]}, 1], padding={pad.literal()}, "
                           f"dilations=[1, {dilation[0]}]), 1)")


def _check_transpose(node: Node) -> str | None:
    x = first_tensor(node)
    if x.shape[1] is None:
        return "dynamic channel size"
    stride, output_padding = ntuple(node.args.get("stride", 1), 2), ntuple(node.args.get("output_padding", 0), 2)
    if int(node.args.get("groups", 1)) != 1:
        return "grouped transposed convolution"
    if ntuple(node.args.get("dilation", 1), 2) != (1, 1):
        return "dilated transposed convolution"
    if any(op >= s for op, s in zip(output_padding, stride)):
        return "output_padding >= stride"
    return None


def _non_overlapping(ctx: OpContext) -> bool:
    """True when the transposed convolution tiles its output with disjoint kH x kW windows: stride == kernel, no
    padding or output_padding (groups 1 and dilation 1 are checked already)."""
    kernel = tuple(ctx.value("weight").shape[2:])
    return (kernel == ntuple(ctx.arg("stride", 1), 2) and not any(ntuple(ctx.arg("padding", 0), 2))
            and not any(ntuple(ctx.arg("output_padding", 0), 2)))


def _window_rows(ctx: OpContext) -> str:
    """Stride == kernel (kH x kW): out[n, i*kH + a, j*kW + b, o] = sum_c x[n, i, j, c] * W[c, o, a, b] + bias[o].
    Row a of every window is a 1x1 convolution to kW*out channels (b-major), laid out by `_output_rows`. Only
    Conv2D (bias fused), Reshape and ConcatV2: TF.js wasm runs these ~10x faster than Conv2DBackpropInput and also
    faster than DepthToSpace (a slow kernel there), and nothing is transposed."""
    weight = ctx.value("weight")
    cin, cout, kh, kw = weight.shape
    h, w = ctx.value("input").sizes[2:]
    filters = ctx.weight("weight", "row_filters", iohw_to_row_filters,
                         lambda e: f"tf.reshape(tf.transpose({e}, [2, 0, 3, 1]), [{kh}, 1, 1, {cin}, {kw * cout}])")
    x = ctx.t("input")
    bias = ctx.weight("bias", f"tile_{kw}", partial(tile_channels, reps=kw),
                      lambda e: f"tf.tile({e}, [{kw}])") if ctx.has("bias") else None

    def conv(kernel: str) -> str:
        y = f"tf.nn.conv2d({x}, {kernel}, strides=1, padding=\"VALID\")"
        return f"tf.nn.bias_add({y}, {bias})" if bias else y

    if kh == 1:
        return f"tf.reshape({conv(f'{filters}[0]')}, {ctx.shape_list([-1, h, w * kw, cout])})"
    return _output_rows(ctx, ctx.let(f"[{conv('row')} for row in tf.unstack({filters})]", "rows"), kh, (h, w), kw,
                        cout)


PhaseAxis = tuple[tuple[Phase, ...], list[tuple[int, int]], int]  # phases, (before, after) pads, outputs each


def _phase_geometry(ctx: OpContext) -> list[PhaseAxis] | None:
    """Per spatial axis, the output phases, the input padding that gives each phase out / stride outputs (a
    negative pad: inputs that phase never reads, cropped) and that count; None when some axis's output is not a
    whole number of strides, a phase has no tap, or the sizes or the weight are not static."""
    weight, x = ctx.value("weight"), ctx.value("input")
    if not weight.is_weight or not static_dims(x.shape[2:]):
        return None
    geometry: list[PhaseAxis] = []
    for size, k, s, p, op in zip(x.shape[2:], weight.shape[2:], ntuple(ctx.arg("stride", 1), 2),
                                 ntuple(ctx.arg("padding", 0), 2), ntuple(ctx.arg("output_padding", 0), 2)):
        out = (size - 1) * s - 2 * p + k + op
        if out <= 0 or out % s:
            return None
        phases = phase_taps(k, s, p)
        if any(not phase.taps for phase in phases):
            return None
        geometry.append((phases, [(-ph.start, out // s - 1 + len(ph.taps) - size + ph.start) for ph in phases],
                         out // s))
    return geometry


def _phase_input(x: str, size: tuple[int, int], pads: tuple[tuple[int, int], tuple[int, int]]
                 ) -> tuple[str, list[list[int]]]:
    """The input one phase reads (cropped where a pad is negative) and its explicit conv padding."""
    (top, bottom), (left, right) = pads
    crops = [max(0, -top), size[0] - max(0, -bottom), max(0, -left), size[1] - max(0, -right)]
    if crops != [0, size[0], 0, size[1]]:
        x = f"{x}[:, {crops[0]}:{crops[1]}, {crops[2]}:{crops[3]}, :]"
    return x, [[0, 0], [max(0, top), max(0, bottom)], [max(0, left), max(0, right)], [0, 0]]


def _phase_rows(ctx: OpContext, geometry: list[PhaseAxis]) -> str:
    """Any other transposed convolution whose output phases are equal in size: output phase (a, b) (rows
    sH q + a, columns sW p + b) is an ordinary convolution of the padded input by that phase's taps of the kernel
    (`iohw_to_phase_filter`: every weight stored once, no zeros); a row phase's column phases side by side in the
    channels, the rows laid out by `_output_rows`. TF.js wasm's
    Conv2DBackpropInput is a scalar loop; these run on its XNNPACK convolution (a DCGAN generator's three 4x4
    stride-2 layers, `benchmarks/run.py --models convtranspose_gan`)."""
    (rows, row_pads, q_h), (cols, col_pads, q_w) = geometry
    cout = ctx.value("weight").shape[1]
    x, size = ctx.t("input"), tuple(ctx.value("input").shape[2:])
    bias = ctx.t("bias") if ctx.has("bias") else None
    (sh, sw), (ph, pw) = ntuple(ctx.arg("stride", 1), 2), ntuple(ctx.arg("padding", 0), 2)
    geometry_name = f"s{sh}x{sw}_p{ph}x{pw}"
    out_rows = []
    for a, row in enumerate(rows):
        parts = []
        for b, col in enumerate(cols):
            kernel = ctx.weight("weight", f"phase_{a}_{b}_{geometry_name}",
                                partial(iohw_to_phase_filter, row=row, col=col))
            source, padding = _phase_input(x, size, (row_pads[a], col_pads[b]))
            y = f"tf.nn.conv2d({source}, {kernel}, strides=1, padding={padding})"
            parts.append(f"tf.nn.bias_add({y}, {bias})" if bias else y)
        out_rows.append(parts[0] if len(parts) == 1 else f"tf.concat([{', '.join(parts)}], axis=-1)")
    return _output_rows(ctx, ctx.let(f"[{', '.join(out_rows)}]", "rows"), len(rows), (q_h, q_w), len(cols), cout)


@converter("aten.conv_transpose2d.input", layout=LayoutPolicy.CHANNELS_LAST,
           emits=("Conv2D", "BiasAdd", "Reshape", "ConcatV2", "Unpack", "Conv2DBackpropInput", "StridedSlice", "Pack",
                  "Shape"),
           check=_check_transpose)
def conv_transpose2d(ctx: OpContext, node: Node) -> str:
    """aten::conv_transpose2d.input(Tensor input, Tensor weight, Tensor? bias=None, SymInt[2] stride=1,
    SymInt[2] padding=0, SymInt[2] output_padding=0, SymInt groups=1, SymInt[2] dilation=1) -> Tensor

    Stride == kernel (non-overlapping windows, the U-Net up-sampling step): 1x1 convolutions + reshapes (see
    _window_rows); equal output phases (a DCGAN's k4 s2 p1): one convolution per output phase (_phase_rows); other
    geometries: tf.nn.conv2d_transpose."""
    if _non_overlapping(ctx):
        return _window_rows(ctx)
    geometry = _phase_geometry(ctx)
    if geometry is not None:
        return _phase_rows(ctx, geometry)
    x = ctx.t("input")
    weight = ctx.value("weight")
    kernel_hw = weight.shape[2:]
    stride, padding = ntuple(ctx.arg("stride", 1), 2), ntuple(ctx.arg("padding", 0), 2)
    output_padding = ntuple(ctx.arg("output_padding", 0), 2)
    in_hw = ctx.value("input").sizes[2:]
    full = [(i - 1) * s + k + op for i, s, k, op in zip(in_hw, stride, kernel_hw, output_padding)]
    out_channels = weight.shape[1]
    kernel = ctx.weight("weight", "hwoi", iohw_to_hwoi, lambda e: f"tf.transpose({e}, [2, 3, 1, 0])")
    batch = ctx.value("input").shape[0]
    out_shape = ctx.let(f"[{batch if batch is not None else f'tf.shape({x})[0]'}, {ctx.size(full[0])}, "
                        f"{ctx.size(full[1])}, {out_channels}]", "out_shape")
    y = f"tf.nn.conv2d_transpose({x}, {kernel}, {out_shape}, strides={list(stride)}, padding=\"VALID\")"
    if any(padding):
        y = (f"{ctx.let(y, 'full')}[:, {padding[0]}:{ctx.size(full[0] - padding[0])}, "
             f"{padding[1]}:{ctx.size(full[1] - padding[1])}, :]")
    return _with_bias(ctx, y)

