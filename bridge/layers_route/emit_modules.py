"""Emitters for torch.nn modules with a TF.js layer counterpart: convolutions, Linear, normalization, Embedding,
pooling, upsampling, padding, activations, Dropout, Flatten and Identity. Each refuses (with the reason) the
options whose TF.js layer would compute something else."""

from __future__ import annotations

from typing import Any

from torch import nn

from bridge.layers_route.builder import KT, Builder, Refused, module_emitter, plain
from bridge.layers_route.custom_ops import nearest_taps
from bridge.layers_route.emit_functions import (
    flatten_tensor,
    pool_padding,
    resize_bilinear,
)

# ---------------------------------------------------------------------------------------------- helpers


def trainable(module: nn.Module) -> bool:
    """False when every parameter of `module` is frozen (requires_grad False): its layer is then not trainable."""
    params = list(module.parameters())
    return not params or any(p.requires_grad for p in params)


def _pair(value: Any, n: int = 2) -> tuple[int, ...]:
    return tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value),) * n


def _x(ctx: Builder, args: tuple[Any, ...]) -> KT:
    return ctx.tensor_arg(args[0])


def _conv_padding(module: nn.Module, sizes: tuple[int | None, ...]) -> tuple[str, tuple[int, ...]]:
    """('same' | 'valid', explicit zero padding per spatial axis) for a PyTorch convolution."""
    if module.padding_mode != "zeros":
        raise Refused(type(module).__name__, f"padding_mode={module.padding_mode!r} (Keras pads with zeros only)")
    k, s, d = (_pair(module.kernel_size, len(sizes)), _pair(module.stride, len(sizes)),
               _pair(module.dilation, len(sizes)))
    if isinstance(module.padding, str):
        if module.padding == "valid":
            return "valid", (0,) * len(sizes)
        pads = tuple(d_ * (k_ - 1) for k_, d_ in zip(k, d))
        if any(p % 2 for p in pads):
            raise Refused(type(module).__name__, "padding='same' with an even kernel (PyTorch pads the odd pixel at "
                                                 "the end, as TF does, but only for stride 1): not converted")
        return "same", tuple(p // 2 for p in pads)
    p = _pair(module.padding, len(sizes))
    if all(v == 0 for v in p):
        return "valid", p
    if all(s_ == 1 and 2 * p_ == d_ * (k_ - 1) for s_, p_, d_, k_ in zip(s, p, d, k)):
        return "same", p
    return "explicit", p


def _check_stride_dilation(module: nn.Module, n: int) -> None:
    if any(s > 1 for s in _pair(module.stride, n)) and any(d > 1 for d in _pair(module.dilation, n)):
        raise Refused(type(module).__name__, "stride > 1 together with dilation > 1 (Keras and TF.js convolutions "
                                             "take one or the other)")


# ---------------------------------------------------------------------------------------------- convolutions

@module_emitter(nn.Conv2d)
def conv2d(ctx: Builder, module: nn.Conv2d, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    """Conv2d -> Conv2D (groups 1) or DepthwiseConv2D (groups == in_channels); explicit padding -> ZeroPadding2D."""
    x = ctx.channels_last(_x(ctx, args))
    _check_stride_dilation(module, 2)
    depthwise = module.groups == module.in_channels and module.groups > 1
    if module.groups != 1 and not depthwise:
        raise Refused("Conv2d", f"groups={module.groups} (TF.js has no grouped convolution; depthwise, groups == "
                                "in_channels, is converted)")
    mode, pads = _conv_padding(module, x.torch_shape[2:])
    if mode == "explicit":
        x = ctx.add1("ZeroPadding2D", {"padding": [[pads[0], pads[0]], [pads[1], pads[1]]]}, [x],
                     _padded(x.torch_shape, pads), x.perm, hint=f"{ctx.path}_pad")
        mode = "valid"
    config: dict[str, Any] = {"kernel_size": list(_pair(module.kernel_size)), "strides": list(_pair(module.stride)),
                              "padding": mode, "dilation_rate": list(_pair(module.dilation)),
                              "use_bias": module.bias is not None}
    if depthwise:
        config["depth_multiplier"] = module.out_channels // module.in_channels
        out = ctx.add1("DepthwiseConv2D", config, [x], ctx.out_shape(), x.perm, shared=ctx.path,
                       trainable=trainable(module))
        _link_once(ctx, ["weight"], ["depthwise_kernel"], "depthwise_filter", {"in_channels": module.in_channels})
    else:
        config["filters"] = module.out_channels
        out = ctx.add1("Conv2D", config, [x], ctx.out_shape(), x.perm, shared=ctx.path, trainable=trainable(module))
        _link_once(ctx, ["weight"], ["kernel"], "oihw_to_hwio")
    if module.bias is not None:
        _link_once(ctx, ["bias"], ["bias"], "identity")
    return out


def _link_once(ctx: Builder, torch_leaves: list[str], tfjs_leaves: list[str], transform: str,
               params: dict[str, Any] | None = None) -> None:
    """Link the module's weights on its first call only (later calls share the layer)."""
    if ctx.layers[-1].shared_with is None:
        ctx.link(torch_leaves, tfjs_leaves, transform, params=params)


def _padded(shape: tuple[int | None, ...], pads: tuple[int, ...]) -> tuple[int | None, ...]:
    spatial = [None if s is None else s + 2 * p for s, p in zip(shape[2:], pads)]
    return (*shape[:2], *spatial)


@module_emitter(nn.Conv1d)
def conv1d(ctx: Builder, module: nn.Conv1d, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    """Conv1d -> Conv1D (channels-last); explicit padding -> a custom zero-pad step (TF.js has no ZeroPadding1D)."""
    x = ctx.channels_last(_x(ctx, args))
    _check_stride_dilation(module, 1)
    if module.groups != 1:
        raise Refused("Conv1d", f"groups={module.groups} (TF.js has no grouped or depthwise 1-D convolution)")
    mode, pads = _conv_padding(module, x.torch_shape[2:])
    if mode == "explicit":
        padded = (*x.torch_shape[:2], None if x.torch_shape[2] is None else x.torch_shape[2] + 2 * pads[0])
        x = ctx.custom("pad", [x], {"paddings": ((0, 0), (pads[0], pads[0]), (0, 0)), "value": 0.0}, x.perm,
                       torch_shape=padded)
        mode = "valid"
    config = {"filters": module.out_channels, "kernel_size": [int(module.kernel_size[0])],
              "strides": [int(module.stride[0])], "padding": mode, "dilation_rate": [int(module.dilation[0])],
              "use_bias": module.bias is not None}
    out = ctx.add1("Conv1D", config, [x], ctx.out_shape(), x.perm, shared=ctx.path, trainable=trainable(module))
    _link_once(ctx, ["weight"], ["kernel"], "oiw_to_wio")
    if module.bias is not None:
        _link_once(ctx, ["bias"], ["bias"], "identity")
    return out


@module_emitter(nn.ConvTranspose2d)
def conv_transpose2d(ctx: Builder, module: nn.ConvTranspose2d, args: tuple[Any, ...], kwargs: dict[str, Any]
                     ) -> KT:
    """ConvTranspose2d -> Conv2DTranspose ('valid', the full output) + Cropping2D for PyTorch's padding and
    output_padding."""
    if len(args) > 1 or kwargs.get("output_size") is not None:
        raise Refused("ConvTranspose2d", "an output_size argument")
    x = ctx.channels_last(_x(ctx, args))
    if module.groups != 1 or any(d != 1 for d in _pair(module.dilation)):
        raise Refused("ConvTranspose2d", "groups or dilation other than 1 (not in TF.js's Conv2DTranspose)")
    if module.padding_mode != "zeros":
        raise Refused("ConvTranspose2d", f"padding_mode={module.padding_mode!r}")
    k, s = _pair(module.kernel_size), _pair(module.stride)
    p, op = _pair(module.padding), _pair(module.output_padding)
    sizes = x.torch_shape[2:]
    full = tuple(None if n is None else n * s_ + max(k_ - s_, 0) for n, k_, s_ in zip(sizes, k, s))
    crops = []
    for k_, s_, p_, op_ in zip(k, s, p, op):
        after = s_ + max(k_ - s_, 0) - k_ + p_ - op_
        if after < 0:
            raise Refused("ConvTranspose2d", "output_padding larger than the padding (TF.js's Conv2DTranspose cannot "
                                             "grow its output)")
        crops.append([p_, after])
    config = {"filters": module.out_channels, "kernel_size": list(k), "strides": list(s), "padding": "valid",
              "use_bias": module.bias is not None}
    out_shape = ctx.out_shape()
    full_shape = (out_shape[0], out_shape[1], *full)
    y = ctx.add1("Conv2DTranspose", config, [x], full_shape, x.perm, shared=ctx.path, trainable=trainable(module))
    _link_once(ctx, ["weight"], ["kernel"], "iohw_to_hwoi")
    if module.bias is not None:
        _link_once(ctx, ["bias"], ["bias"], "identity")
    if any(c != [0, 0] for c in crops):
        y = ctx.add1("Cropping2D", {"cropping": crops}, [y], out_shape, x.perm, hint=f"{ctx.path}_crop")
    return y


# ---------------------------------------------------------------------------------------------- dense, norms

@module_emitter(nn.Linear)
def linear(ctx: Builder, module: nn.Linear, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    """Linear -> Dense on the last axis; after a kept channels-last flatten, the kernel's rows are permuted."""
    x = ctx.tensor_arg(args[0])
    order = x.flat_order
    if order is None and x.perm[-1] != x.rank - 1:
        x = ctx.with_last(x, -1)
    out = ctx.add1("Dense", {"units": module.out_features, "use_bias": module.bias is not None}, [x], ctx.out_shape(),
                   x.perm, shared=ctx.path, trainable=trainable(module))
    if order is not None:
        dims, perm = order
        _link_once(ctx, ["weight"], ["kernel"], "linear_to_in_out_permuted_rows", {"dims": dims, "perm": perm})
    else:
        _link_once(ctx, ["weight"], ["kernel"], "linear_to_in_out")
    if module.bias is not None:
        _link_once(ctx, ["bias"], ["bias"], "identity")
    return out


@module_emitter(nn.BatchNorm1d, nn.BatchNorm2d)
def batch_norm(ctx: Builder, module: nn.modules.batchnorm._BatchNorm, args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> KT:
    """BatchNorm -> BatchNormalization over the channel axis: TF momentum = 1 - PyTorch momentum, same epsilon,
    running statistics as the non-trainable moving_mean / moving_variance."""
    name = type(module).__name__
    if not module.track_running_stats:
        raise Refused(name, "track_running_stats=False (Keras always normalizes with moving statistics at "
                            "inference)")
    if module.momentum is None:
        raise Refused(name, "momentum=None (a cumulative moving average: Keras keeps an exponential one)")
    x = plain(ctx.tensor_arg(args[0]))
    if isinstance(module, nn.BatchNorm2d):
        x = ctx.channels_last(x)
    config = {"axis": x.keras_axis(1), "momentum": 1.0 - float(module.momentum), "epsilon": float(module.eps),
              "center": module.affine, "scale": module.affine}
    out = ctx.add1("BatchNormalization", config, [x], ctx.out_shape(), x.perm, shared=ctx.path,
                   trainable=trainable(module))
    if ctx.layers[-1].shared_with is None:
        if module.affine:
            ctx.link(["weight"], ["gamma"], "identity")
            ctx.link(["bias"], ["beta"], "identity")
        ctx.link(["running_mean"], ["moving_mean"], "identity")
        ctx.link(["running_var"], ["moving_variance"], "identity")
        ctx.skipped.append(f"{ctx.path}.num_batches_tracked")
        ctx.batch_norms.append((ctx.path, float(module.momentum)))
        if not module.affine:
            ctx.notes.append(f"{ctx.path}: BatchNorm without affine weights predicts in TF.js, but tfjs-layers "
                             "4.22 cannot fit it (its training path reads gamma and beta)")
    return out


@module_emitter(nn.LayerNorm)
def layer_norm(ctx: Builder, module: nn.LayerNorm, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    """LayerNorm over the last k axes -> LayerNormalization over the same Keras axes (PyTorch's order kept)."""
    x = plain(ctx.tensor_arg(args[0]))
    k = len(module.normalized_shape)
    tail = tuple(range(x.rank - k, x.rank))
    if tuple(x.perm[-k:]) != tail:
        x = ctx.canonical(x)
    affine = module.elementwise_affine
    has_bias = affine and module.bias is not None
    config = {"axis": -1 if k == 1 else list(range(x.rank - k, x.rank)), "epsilon": float(module.eps),
              "center": has_bias, "scale": affine}
    out = ctx.add1("LayerNormalization", config, [x], ctx.out_shape(), x.perm, shared=ctx.path,
                   trainable=trainable(module))
    if affine:
        _link_once(ctx, ["weight"], ["gamma"], "identity")
    if has_bias:
        _link_once(ctx, ["bias"], ["beta"], "identity")
    return out


@module_emitter(nn.Embedding)
def embedding(ctx: Builder, module: nn.Embedding, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    """Embedding -> Embedding (int32 ids)."""
    x = plain(ctx.tensor_arg(args[0]))
    if module.max_norm is not None:
        raise Refused("Embedding", "max_norm (PyTorch renormalizes rows in place on lookup; TF.js does not)")
    if module.scale_grad_by_freq:
        raise Refused("Embedding", "scale_grad_by_freq (TF.js's gradient is not scaled)")
    if module.padding_idx is not None:
        ctx.notes.append(f"{ctx.path}: padding_idx={module.padding_idx} is not trained in PyTorch, but TF.js trains "
                         "that row like any other")
    out = ctx.add1("Embedding", {"input_dim": module.num_embeddings, "output_dim": module.embedding_dim}, [x],
                   ctx.out_shape(), (*x.perm, x.rank), shared=ctx.path, trainable=trainable(module))
    _link_once(ctx, ["weight"], ["embeddings"], "identity")
    return out


# ---------------------------------------------------------------------------------------------- pooling

def pool2d(ctx: Builder, x: KT, kind: str, kernel: Any, stride: Any, padding: Any, ceil_mode: bool,
           count_include_pad: bool = True, dilation: Any = 1) -> KT:
    """Max / average pooling of a 4-D map -> MaxPooling2D / AveragePooling2D (padding 'valid' or 'same' where
    it places the windows as PyTorch does; average pooling with counted zero padding -> ZeroPadding2D first)."""
    x = ctx.channels_last(x)
    k = _pair(kernel)
    s = _pair(stride) if stride not in (None, [], ()) else k
    p = _pair(padding)
    if any(d != 1 for d in _pair(dilation)):
        raise Refused(f"{kind}_pool2d", "dilation > 1 (Keras pooling has none)")
    sizes = x.torch_shape[2:]
    modes = [pool_padding(n, k_, s_, p_, ceil_mode) for n, k_, s_, p_ in zip(sizes, k, s, p)]
    if kind == "avg" and any(v > 0 for v in p) and count_include_pad:
        padded = (*x.torch_shape[:2], *[None if n is None else n + 2 * v for n, v in zip(sizes, p)])
        x = ctx.add1("ZeroPadding2D", {"padding": [[p[0], p[0]], [p[1], p[1]]]}, [x], padded, x.perm,
                     hint=f"{ctx.path}_pad")
        modes = [pool_padding(n, k_, s_, 0, ceil_mode) for n, k_, s_ in zip(x.torch_shape[2:], k, s)]
    if None in modes or len(set(modes)) != 1:
        raise Refused(f"{kind}_pool2d", f"kernel {k}, stride {s}, padding {p}, ceil_mode={ceil_mode} on size "
                                        f"{sizes}: neither 'valid' nor 'same' puts the windows where PyTorch does")
    class_name = "MaxPooling2D" if kind == "max" else "AveragePooling2D"
    return ctx.add1(class_name, {"pool_size": list(k), "strides": list(s), "padding": modes[0]}, [x],
                    ctx.out_shape(), x.perm)


def pool1d(ctx: Builder, x: KT, kind: str, kernel: Any, stride: Any, padding: Any, ceil_mode: bool) -> KT:
    """Max / average pooling of a 3-D sequence -> MaxPooling1D / AveragePooling1D."""
    x = ctx.channels_last(x)
    k, p = _pair(kernel, 1)[0], _pair(padding, 1)[0]
    s = _pair(stride, 1)[0] if stride not in (None, [], ()) else k
    mode = pool_padding(x.torch_shape[2], k, s, p, ceil_mode)
    if mode is None or (kind == "avg" and p > 0):
        raise Refused(f"{kind}_pool1d", f"kernel {k}, stride {s}, padding {p}: no Keras padding mode matches")
    class_name = "MaxPooling1D" if kind == "max" else "AveragePooling1D"
    return ctx.add1(class_name, {"pool_size": [k], "strides": [s], "padding": mode}, [x], ctx.out_shape(), x.perm)


@module_emitter(nn.MaxPool2d)
def max_pool2d(ctx: Builder, module: nn.MaxPool2d, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    if module.return_indices:
        raise Refused("MaxPool2d", "return_indices=True")
    return pool2d(ctx, _x(ctx, args), "max", module.kernel_size, module.stride, module.padding, module.ceil_mode,
                  dilation=module.dilation)


@module_emitter(nn.AvgPool2d)
def avg_pool2d(ctx: Builder, module: nn.AvgPool2d, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    if module.divisor_override is not None:
        raise Refused("AvgPool2d", "divisor_override")
    return pool2d(ctx, _x(ctx, args), "avg", module.kernel_size, module.stride, module.padding, module.ceil_mode,
                  module.count_include_pad)


@module_emitter(nn.MaxPool1d)
def max_pool1d(ctx: Builder, module: nn.MaxPool1d, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    if module.return_indices or _pair(module.dilation, 1)[0] != 1:
        raise Refused("MaxPool1d", "return_indices or dilation")
    return pool1d(ctx, _x(ctx, args), "max", module.kernel_size, module.stride, module.padding, module.ceil_mode)


@module_emitter(nn.AvgPool1d)
def avg_pool1d(ctx: Builder, module: nn.AvgPool1d, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    return pool1d(ctx, _x(ctx, args), "avg", module.kernel_size, module.stride, module.padding, module.ceil_mode)


def adaptive_pool(ctx: Builder, x: KT, kind: str, output_size: Any) -> KT:
    """Adaptive pooling to size 1 -> global pooling (then Reshape to keep PyTorch's size-1 axes); to a size that
    divides the input -> plain pooling with kernel = stride = input / output."""
    spatial = x.rank - 2
    sizes = _pair(output_size, spatial) if output_size is not None else (1,) * spatial
    x = ctx.channels_last(x)
    if all(s == 1 for s in sizes):
        cls = {("avg", 2): "GlobalAveragePooling2D", ("max", 2): "GlobalMaxPooling2D",
               ("avg", 1): "GlobalAveragePooling1D", ("max", 1): "GlobalMaxPooling1D"}[(kind, spatial)]
        channels = x.torch_shape[1]
        pooled = ctx.add1(cls, {}, [x], (x.torch_shape[0], channels), (0, 1), hint=f"{ctx.path}_global")
        return ctx.add1("Reshape", {"target_shape": [1] * spatial + [channels]}, [pooled], ctx.out_shape(), x.perm)
    inputs = x.torch_shape[2:]
    if any(n is None or n % s for n, s in zip(inputs, sizes)):
        raise Refused(f"adaptive_{kind}_pool", f"output size {sizes} does not divide the input size {inputs}")
    kernel = [n // s for n, s in zip(inputs, sizes)]  # type: ignore[operator]
    if spatial == 2:
        return pool2d(ctx, x, kind, kernel, kernel, 0, False)
    return pool1d(ctx, x, kind, kernel, kernel, 0, False)


@module_emitter(nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool1d)
def adaptive_avg(ctx: Builder, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    return adaptive_pool(ctx, _x(ctx, args), "avg", module.output_size)


@module_emitter(nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool1d)
def adaptive_max(ctx: Builder, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    if module.return_indices:
        raise Refused(type(module).__name__, "return_indices=True")
    return adaptive_pool(ctx, _x(ctx, args), "max", module.output_size)


# ---------------------------------------------------------------------------------------------- resampling, padding

@module_emitter(nn.Upsample)
def upsample(ctx: Builder, module: nn.Upsample, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    """Upsample / interpolate, nearest and bilinear -> custom steps gathering PyTorch's source pixels. Not
    UpSampling2D: tfjs-backend-cpu 4.22's ResizeNearestNeighborGrad indexes the incoming gradient with the input's
    batch stride (wrong gradients for a batch > 1), and its bilinear gradient ignores half-pixel centres."""
    return upsample_tensor(ctx, _x(ctx, args), module.mode, module.align_corners)


def upsample_tensor(ctx: Builder, x: KT, mode: str, align_corners: bool | None) -> KT:
    """Shared by nn.Upsample and F.interpolate."""
    if x.rank != 4:
        raise Refused("upsample", f"a {x.rank}-D input (only 4-D image maps)")
    x = ctx.channels_last(x)
    out = ctx.out_shape()
    if mode == "nearest":
        if any(i is None or o is None for i, o in zip(x.torch_shape[2:], out[2:])):
            raise Refused("upsample", "nearest from or to a dynamic size")
        rows, cols = (nearest_taps(int(i), int(o)) for i, o in zip(x.torch_shape[2:], out[2:]))  # type: ignore[arg-type]
        return ctx.custom("resize_nearest", [x], {"rows": rows, "cols": cols}, x.perm)
    if mode == "bilinear":
        return resize_bilinear(ctx, x, out, bool(align_corners))
    raise Refused("upsample", f"mode={mode!r} (nearest and bilinear are converted)")


@module_emitter(nn.ZeroPad2d)
def zero_pad2d(ctx: Builder, module: nn.ZeroPad2d, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    """ZeroPad2d (left, right, top, bottom) -> ZeroPadding2D ((top, bottom), (left, right))."""
    left, right, top, bottom = (int(v) for v in module.padding)
    if min(left, right, top, bottom) < 0:
        raise Refused("ZeroPad2d", "negative padding (cropping)")
    x = ctx.channels_last(_x(ctx, args))
    return ctx.add1("ZeroPadding2D", {"padding": [[top, bottom], [left, right]]}, [x], ctx.out_shape(), x.perm)


# ---------------------------------------------------------------------------------------------- activations

def activation_layer(ctx: Builder, x: KT, name: str, **params: Any) -> KT:
    """A layout-free activation by PyTorch name -> its Keras layer (or a custom step); the perm (and a kept
    flatten order) passes through."""
    keras: dict[str, tuple[str, dict[str, Any]]] = {
        "relu": ("ReLU", {}), "relu6": ("Activation", {"activation": "relu6"}),
        "sigmoid": ("Activation", {"activation": "sigmoid"}), "tanh": ("Activation", {"activation": "tanh"}),
        "silu": ("Activation", {"activation": "swish"}), "mish": ("Activation", {"activation": "mish"}),
        "selu": ("Activation", {"activation": "selu"}), "softsign": ("Activation", {"activation": "softsign"}),
        "gelu": ("Activation", {"activation": "gelu"}), "softplus": ("Activation", {"activation": "softplus"}),
    }
    if ctx.prefer_custom and name in _CUSTOM_ACTIVATIONS:
        plain(x)
        attrs = {"alpha": float(params.get("negative_slope", 0.01))} if name == "leaky_relu" else {}
        if name == "gelu" and params.get("approximate", "none") == "tanh":
            name = "gelu_tanh"
        if name == "elu" and float(params.get("alpha", 1.0)) != 1.0:
            raise Refused("elu", f"alpha={params['alpha']} (only alpha 1 is converted)")
        return ctx.custom(name, [x], attrs, x.perm)
    if name == "leaky_relu":
        return ctx.add1("LeakyReLU", {"alpha": float(params.get("negative_slope", 0.01))}, [x], ctx.out_shape(),
                        x.perm, order=x.flat_order)
    if name == "elu":
        if float(params.get("alpha", 1.0)) != 1.0:
            raise Refused("elu", f"alpha={params['alpha']} (TF.js's ELU layer has alpha 1 only)")
        return ctx.add1("ELU", {"alpha": 1.0}, [x], ctx.out_shape(), x.perm, order=x.flat_order)
    if name == "gelu" and params.get("approximate", "none") == "tanh":
        return ctx.custom("gelu_tanh", [x], {}, x.perm)
    if name == "softplus" and (float(params.get("beta", 1.0)) != 1.0 or float(params.get("threshold", 20.0)) < 20):
        raise Refused("softplus", "beta != 1 or threshold < 20 (Keras' softplus is the plain one)")
    if name == "hardtanh":
        return ctx.custom("clamp", [x], {"min": float(params["min_val"]), "max": float(params["max_val"])}, x.perm)
    if name == "hardsigmoid":
        return ctx.custom("hardsigmoid", [x], {}, x.perm)
    if name not in keras:
        raise Refused(name, "no TF.js activation computes it")
    class_name, config = keras[name]
    return ctx.add1(class_name, config, [x], ctx.out_shape(), x.perm, order=x.flat_order)


_CUSTOM_ACTIVATIONS = {"relu", "relu6", "sigmoid", "tanh", "silu", "gelu", "softplus", "elu", "leaky_relu"}

_ACTIVATION_MODULES: dict[type, str] = {
    nn.ReLU: "relu", nn.ReLU6: "relu6", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.SiLU: "silu", nn.Mish: "mish",
    nn.SELU: "selu", nn.Softsign: "softsign", nn.GELU: "gelu", nn.Softplus: "softplus", nn.LeakyReLU: "leaky_relu",
    nn.ELU: "elu", nn.Hardtanh: "hardtanh", nn.Hardsigmoid: "hardsigmoid",
}


@module_emitter(*_ACTIVATION_MODULES)
def activation_module(ctx: Builder, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    params = {k: getattr(module, k) for k in ("negative_slope", "alpha", "approximate", "beta", "threshold",
                                                "min_val", "max_val") if hasattr(module, k)}
    return activation_layer(ctx, _x(ctx, args), _ACTIVATION_MODULES[type(module)], **params)


@module_emitter(nn.Softmax, nn.LogSoftmax)
def softmax_module(ctx: Builder, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    from bridge.layers_route.emit_functions import softmax

    return softmax(ctx, _x(ctx, args), module.dim, log=isinstance(module, nn.LogSoftmax))


@module_emitter(nn.PReLU)
def prelu(ctx: Builder, module: nn.PReLU, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    """PReLU (1 slope, or C slopes on PyTorch axis 1) -> PReLU sharing every other axis."""
    x = plain(ctx.tensor_arg(args[0]))
    n = module.num_parameters
    channel = x.keras_axis(1) if n > 1 else None
    shared = [a for a in range(1, x.rank) if a != channel]
    alpha_shape = tuple(1 if a in shared else int(x.keras_shape[a] or n) for a in range(1, x.rank))
    out = ctx.add1("PReLU", {"shared_axes": shared or None}, [x], ctx.out_shape(), x.perm, shared=ctx.path,
                   trainable=trainable(module))
    _link_once(ctx, ["weight"], ["alpha"], "reshape", {"shape": alpha_shape, "torch_shape": (n,)})
    return out


# ---------------------------------------------------------------------------------------------- plumbing

@module_emitter(nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)
def dropout(ctx: Builder, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    """Dropout -> Dropout (active only while training); channel dropout (Dropout1d/2d) becomes element dropout,
    noted (TF.js has no SpatialDropout2D)."""
    x = ctx.tensor_arg(args[0])
    if module.p == 0:
        return x
    if not isinstance(module, nn.Dropout):
        ctx.notes.append(f"{ctx.path}: {type(module).__name__} drops elements, not whole channels, in TF.js")
    return ctx.add1("Dropout", {"rate": float(module.p)}, [x], ctx.out_shape(), x.perm, order=x.flat_order)


@module_emitter(nn.Identity)
def identity(ctx: Builder, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return args[0]


@module_emitter(nn.Flatten)
def flatten_module(ctx: Builder, module: nn.Flatten, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    return flatten_tensor(ctx, ctx.tensor_arg(args[0]), module.start_dim, module.end_dim)


@module_emitter(nn.Unflatten)
def unflatten_module(ctx: Builder, module: nn.Unflatten, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    from bridge.layers_route.emit_functions import reshape_tensor

    return reshape_tensor(ctx, ctx.tensor_arg(args[0]))
