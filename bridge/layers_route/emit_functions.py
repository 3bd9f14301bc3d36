"""Emitters for the glue between modules: fx ``call_function`` / ``call_method`` nodes (arithmetic, merges,
reshapes and permutes, reductions, indexing, functional activations and pooling). A glue op with a Keras layer
becomes that layer; one in the custom-op table becomes a custom step; anything else is refused by the walk.
"""

from __future__ import annotations

import builtins
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from bridge.layers_route.builder import (
    KT,
    Builder,
    DynamicInt,
    Refused,
    Stack,
    WeightRef,
    function_emitter,
    plain,
)
from bridge.layers_route.custom_ops import bilinear_taps
from bridge.layers_route.weight_links import flat_order

Shape = tuple[int | None, ...]

# ---------------------------------------------------------------------------------------------- shared helpers


def pool_padding(size: int | None, kernel: int, stride: int, padding: int, ceil_mode: bool) -> str | None:
    """'valid' or 'same' when Keras pooling puts its windows exactly where PyTorch's (kernel, stride, padding,
    ceil_mode) does on an axis of `size`; None when neither does."""
    if padding == 0 and (not ceil_mode or (size is not None and (size - kernel) % stride == 0)):
        return "valid"
    if size is None:
        return None
    torch_out = (size + 2 * padding - kernel + (stride - 1 if ceil_mode else 0)) // stride + 1
    tf_out = -(-size // stride)
    total = max((tf_out - 1) * stride + kernel - size, 0)
    if torch_out == tf_out and total // 2 == padding:
        return "same"
    return None


def align(ctx: Builder, tensors: Sequence[KT]) -> list[KT]:
    """Operands of an elementwise op in one layout: equal ranks share the first operand's perm, mixed ranks go to
    PyTorch's order (where trailing-axis broadcasting means the same on both sides)."""
    if len({t.rank for t in tensors}) == 1:
        return [ctx.permute(plain(t), tensors[0].perm) for t in tensors]
    return [ctx.canonical(plain(t)) for t in tensors]


def _same_batch(ctx: Builder) -> bool:
    """True when the current node's output keeps its first input's batch size on axis 0 in both runs."""
    assert ctx.node is not None
    source = ctx.node.args[0]
    if not isinstance(source, fx.Node):
        return False
    for values in (ctx.captured.values, ctx.captured.probe_values):
        a, b = values[source], values[ctx.node]
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or b.dim() == 0 \
                or a.shape[0] != b.shape[0]:
            return False
    return True


def reshape_tensor(ctx: Builder, x: KT) -> KT:
    """A reshape keeping the batch axis -> Reshape of the other axes (at most one of them dynamic)."""
    out = ctx.out_shape()
    if out == x.torch_shape:
        return x
    if not _same_batch(ctx):
        raise Refused("reshape", f"{list(x.torch_shape)} -> {list(out)} moves the batch axis (a layers model keeps "
                                 "the batch as axis 0)")
    if sum(d is None for d in out[1:]) > 1:
        raise Refused("reshape", f"to {list(out)}: more than one dynamic size")
    x = ctx.canonical(x)
    target = [-1 if d is None else int(d) for d in out[1:]]
    return ctx.add1("Reshape", {"target_shape": target}, [x], out, tuple(range(len(out))), dtype=x.dtype)


def _flat_order(x: KT) -> np.ndarray:
    """For a tensor held in perm `x.perm`, the PyTorch feature index at each position of its Keras flattening."""
    return flat_order([int(d) for d in x.torch_shape[1:]], x.perm)  # type: ignore[arg-type]


_PASS_MODULES = (nn.Dropout, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.Sigmoid, nn.Tanh, nn.SiLU, nn.Mish,
                 nn.SELU, nn.Softsign, nn.Identity)
_PASS_FUNCTIONS = {F.relu, torch.relu, F.dropout, torch.sigmoid, torch.tanh, F.silu, F.leaky_relu, F.elu, F.relu6}
_PASS_METHODS = {"relu", "sigmoid", "tanh"}


def dense_only(ctx: Builder, node: fx.Node) -> bool:
    """True when every consumer of `node` is a Linear, possibly behind layout-free activations and dropout (so a
    flattened channels-last map can keep its order and the Linear's rows are permuted instead)."""
    users = list(node.users)
    if not users:
        return False
    for user in users:
        if not user.args or user.args[0] is not node:
            return False
        if user.op == "call_module":
            module = ctx.captured.graph_module.get_submodule(str(user.target))
            if isinstance(module, nn.Linear):
                continue
            if isinstance(module, _PASS_MODULES) and dense_only(ctx, user):
                continue
        elif user.op == "call_function" and user.target in _PASS_FUNCTIONS and dense_only(ctx, user) or user.op == "call_method" and user.target in _PASS_METHODS and dense_only(ctx, user):
            continue
        return False
    return True


def flatten_tensor(ctx: Builder, x: KT, start: int = 1, end: int = -1) -> KT:
    """Flatten from `start` to `end`: of a channels-last map feeding only Dense layers -> Flatten in the NHWC
    order (the Dense rows are permuted); otherwise in PyTorch's order."""
    start, end = start % x.rank, end % x.rank
    if start == 0:
        raise Refused("flatten", "flattening the batch axis")
    if start >= end:
        return x
    if end != x.rank - 1 or any(d is None for d in x.torch_shape[1:]):
        return reshape_tensor(ctx, x)
    plain(x)
    out = ctx.out_shape()
    order = _flat_order(x)
    identity = bool(np.array_equal(order, np.arange(order.size)))
    assert ctx.node is not None
    if not identity and dense_only(ctx, ctx.node):
        # flat_order carries how the map was held: (its PyTorch sizes, its perm); the Dense rows follow it.
        return ctx.add1("Flatten", {}, [x], out, (0, 1), order=(tuple(int(d) for d in x.torch_shape[1:]), x.perm))
    x = ctx.canonical(x) if not identity else x
    return ctx.add1("Flatten", {}, [x], out, (0, 1))


def softmax(ctx: Builder, x: KT, dim: int | None, log: bool = False) -> KT:
    """Softmax / log-softmax along PyTorch axis `dim` -> Softmax (or log_softmax activation) on the Keras last
    axis (a Permute first when that axis is elsewhere)."""
    if dim is None:
        raise Refused("softmax", "an implicit dim")
    x = ctx.with_last(plain(x), dim)
    if ctx.prefer_custom:
        return ctx.custom("log_softmax" if log else "softmax", [x], {}, x.perm)
    if log:
        return ctx.add1("Activation", {"activation": "log_softmax"}, [x], ctx.out_shape(), x.perm)
    return ctx.add1("Softmax", {"axis": -1}, [x], ctx.out_shape(), x.perm)


def resize_bilinear(ctx: Builder, x: KT, out: Shape, align_corners: bool) -> KT:
    """Bilinear resize of a 4-D map to PyTorch's output size -> a custom step gathering PyTorch's source taps
    (tfjs-backend-cpu's ResizeBilinearGrad ignores half-pixel centres, so tf.image.resizeBilinear would train
    wrongly)."""
    if any(d is None for d in out[2:]):
        raise Refused("interpolate", "bilinear to a dynamic size")
    x = ctx.channels_last(x)
    if any(d is None for d in x.torch_shape[2:]):
        raise Refused("interpolate", "bilinear from a dynamic size")
    rows, cols = (bilinear_taps(int(i), int(o), align_corners)  # type: ignore[arg-type]
                  for i, o in zip(x.torch_shape[2:], out[2:]))
    return ctx.custom("resize_bilinear", [x], {"rows": rows, "cols": cols}, x.perm)


def _drop_axes(perm: tuple[int, ...], removed: Sequence[int]) -> tuple[int, ...]:
    """`perm` without the PyTorch axes `removed`, the rest renumbered."""
    gone = sorted(set(removed))
    return tuple(p - sum(r < p for r in gone) for p in perm if p not in gone)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ---------------------------------------------------------------------------------------------- arithmetic

def _binary(ctx: Builder, op: str, a: Any, b: Any) -> Any:
    """add / sub / mul / div on tensors, weights and numbers."""
    if not any(isinstance(v, (KT, WeightRef)) for v in (a, b)):
        return _python_binary(op, a, b)
    if isinstance(a, DynamicInt) or isinstance(b, DynamicInt):
        raise Refused(op, "arithmetic with a dynamic size")
    if isinstance(a, KT) and a is b and op in ("add", "mul"):
        # tfjs-layers disposes a tensor after its first consumer when one layer takes it twice (Multiply([h, h])
        # fails with "Tensor is disposed"): x + x and x * x are one-input steps instead.
        return _rescale(ctx, a, "mul", 2.0, tensor_first=True) if op == "add" else ctx.custom("square", [a], {},
                                                                                                 a.perm)
    if isinstance(a, KT) and isinstance(b, KT):
        x, y = align(ctx, [a, b])
        keras = {"add": "Add", "mul": "Multiply"}.get(op)
        if keras and x.rank == y.rank and not ctx.prefer_custom:
            return ctx.add1(keras, {}, [x, y], ctx.out_shape(), x.perm)
        return ctx.custom(op, [x, y], {}, x.perm)
    if isinstance(a, KT) and _number(b):
        return _rescale(ctx, a, op, float(b), tensor_first=True)
    if isinstance(b, KT) and _number(a):
        return _rescale(ctx, b, op, float(a), tensor_first=False)
    tensor = next((v for v in (a, b) if isinstance(v, KT)), None)
    if tensor is None:
        raise Refused(op, "arithmetic on parameters alone (fold it into a parameter)")
    return ctx.custom(op, [plain(tensor) if v is tensor else v for v in (a, b)], {}, tensor.perm)


def _rescale(ctx: Builder, x: KT, op: str, c: float, tensor_first: bool) -> KT:
    """x op c (or c op x) -> Rescaling(scale, offset) where it is affine, else a custom step."""
    affine = {("add", True): (1.0, c), ("add", False): (1.0, c), ("sub", True): (1.0, -c), ("sub", False): (-1.0, c),
              ("mul", True): (c, 0.0), ("mul", False): (c, 0.0)}
    if op == "div" and tensor_first:
        affine[("div", True)] = (1.0 / c, 0.0)
    if (op, tensor_first) in affine and not ctx.prefer_custom:
        scale, offset = affine[(op, tensor_first)]
        return ctx.add1("Rescaling", {"scale": scale, "offset": offset}, [x], ctx.out_shape(), x.perm,
                        order=x.flat_order)
    return ctx.custom(op, [x, c] if tensor_first else [c, x], {}, plain(x).perm)


def _python_binary(op: str, a: Any, b: Any) -> Any:
    fn = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv,
          "floordiv": operator.floordiv}[op]
    values = [v.example if isinstance(v, DynamicInt) else v for v in (a, b)]
    result = fn(*values)
    return DynamicInt(result) if any(isinstance(v, DynamicInt) for v in (a, b)) else result


def _binary_emitter(op: str, reverse: bool = False) -> Any:
    def emit(ctx: Builder, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        a, b = args[0], args[1] if len(args) > 1 else kwargs.get("other")
        if kwargs.get("alpha", 1) != 1:
            raise Refused(op, "an alpha argument")
        return _binary(ctx, op, b, a) if reverse else _binary(ctx, op, a, b)
    return emit


function_emitter(operator.add, operator.iadd, torch.add, "add", "add_", "__add__")(_binary_emitter("add"))
function_emitter("__radd__")(_binary_emitter("add", reverse=True))
function_emitter(operator.sub, operator.isub, torch.sub, "sub", "sub_", "__sub__")(_binary_emitter("sub"))
function_emitter("__rsub__", torch.rsub)(_binary_emitter("sub", reverse=True))
function_emitter(operator.mul, operator.imul, torch.mul, "mul", "mul_", "__mul__")(_binary_emitter("mul"))
function_emitter("__rmul__")(_binary_emitter("mul", reverse=True))
function_emitter(operator.truediv, operator.itruediv, torch.div, "div", "div_", "__truediv__")(
    _binary_emitter("div"))
function_emitter("__rtruediv__")(_binary_emitter("div", reverse=True))


@function_emitter(operator.floordiv)
def floordiv(ctx: Builder, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if any(isinstance(v, (KT, WeightRef)) for v in args):
        raise Refused("floordiv", "integer division of tensors")
    return _python_binary("floordiv", args[0], args[1])


@function_emitter(operator.neg, torch.neg, "neg")
def neg(ctx: Builder, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x = args[0]
    if not isinstance(x, KT):
        return DynamicInt(-x.example) if isinstance(x, DynamicInt) else -x
    if ctx.prefer_custom:
        return ctx.custom("neg", [plain(x)], {}, x.perm)
    return ctx.add1("Rescaling", {"scale": -1.0, "offset": 0.0}, [x], ctx.out_shape(), x.perm, order=x.flat_order)


@function_emitter(torch.maximum, torch.minimum, torch.max, torch.min, "maximum", "minimum")
def min_max(ctx: Builder, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    assert ctx.node is not None
    name = getattr(ctx.node.target, "__name__", str(ctx.node.target))
    if name in ("max", "min") and (len(args) == 1 or not isinstance(args[1], (KT, WeightRef))):
        return reduce_emitter("amax" if name == "max" else "amin", tuple_result=True)(ctx, args, kwargs)
    a, b = args[0], args[1]
    op = "maximum" if name in ("max", "maximum") else "minimum"
    if isinstance(a, KT) and a is b and op in ("add", "mul"):
        # tfjs-layers disposes a tensor after its first consumer when one layer takes it twice (Multiply([h, h])
        # fails with "Tensor is disposed"): x + x and x * x are one-input steps instead.
        return _rescale(ctx, a, "mul", 2.0, tensor_first=True) if op == "add" else ctx.custom("square", [a], {},
                                                                                                 a.perm)
    if isinstance(a, KT) and isinstance(b, KT):
        x, y = align(ctx, [a, b])
        if x.rank == y.rank and not ctx.prefer_custom:
            return ctx.add1("Maximum" if op == "maximum" else "Minimum", {}, [x, y], ctx.out_shape(), x.perm)
        return ctx.custom(op, [x, y], {}, x.perm)
    tensor = next(v for v in (a, b) if isinstance(v, KT))
    return ctx.custom(op, [plain(v) if isinstance(v, KT) else v for v in (a, b)], {}, tensor.perm)


@function_emitter(torch.matmul, torch.bmm, operator.matmul, "matmul", "bmm", "__matmul__")
def matmul(ctx: Builder, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    """Matrix products (rank >= 2, batch dims broadcast) -> a custom matmul step, operands in PyTorch's order."""
    a, b = args[0], args[1]
    operands = [ctx.canonical(plain(v)) if isinstance(v, KT) else v for v in (a, b)]
    for value in operands:
        rank = value.rank if isinstance(value, KT) else (value.array.ndim if isinstance(value, WeightRef) else 0)
        if rank < 2:
            raise Refused("matmul", "a 1-D or scalar operand (use a Linear, or unsqueeze)")
    if not isinstance(operands[0], KT):
        raise Refused("matmul", "a parameter as the left operand")
    out = ctx.out_shape()
    return ctx.custom("matmul", operands, {}, tuple(range(len(out))))


# ---------------------------------------------------------------------------------------------- unary math

_UNARY_CUSTOM = {torch.exp: "exp", torch.log: "log", torch.sqrt: "sqrt", torch.rsqrt: "rsqrt", torch.abs: "abs",
                 torch.sin: "sin", torch.cos: "cos", torch.erf: "erf", torch.square: "square",
                 torch.reciprocal: "reciprocal", "exp": "exp", "log": "log", "sqrt": "sqrt", "rsqrt": "rsqrt",
                 "abs": "abs", "sin": "sin", "cos": "cos", "erf": "erf", "square": "square",
                 "reciprocal": "reciprocal"}


@function_emitter(*_UNARY_CUSTOM)
def unary_custom(ctx: Builder, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    assert ctx.node is not None
    x = plain(ctx.tensor_arg(args[0]))
    return ctx.custom(_UNARY_CUSTOM[ctx.node.target], [x], {}, x.perm)


@function_emitter(torch.pow, operator.pow, "pow", "__pow__")
def power(ctx: Builder, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    base, exponent = args[0], args[1]
    if not isinstance(base, KT):
        if isinstance(exponent, KT):
            raise Refused("pow", "a tensor exponent")
        return base ** exponent
    if not _number(exponent):
        raise Refused("pow", "a tensor exponent")
    x = plain(base)
    if float(exponent) == 2.0:
        return ctx.custom("square", [x], {}, x.perm)
    if float(exponent) == 0.5:
        return ctx.custom("sqrt", [x], {}, x.perm)
    return ctx.custom("pow_scalar", [x], {"exponent": float(exponent)}, x.perm)


@function_emitter(torch.clamp, torch.clip, "clamp", "clip", "clamp_min", "clamp_max")
def clamp(ctx: Builder, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    assert ctx.node is not None
    x = plain(ctx.tensor_arg(args[0]))
    name = str(getattr(ctx.node.target, "__name__", ctx.node.target))
    low = kwargs.get("min", args[1] if len(args) > 1 and name != "clamp_max" else None)
    high = kwargs.get("max", args[2] if len(args) > 2 else (args[1] if name == "clamp_max" else None))
    if any(isinstance(v, (KT, WeightRef)) for v in (low, high)):
        raise Refused("clamp", "tensor bounds")
    if low is None and high is None:
        return x
    return ctx.custom("clamp", [x], {"min": None if low is None else float(low),
                                     "max": None if high is None else float(high)}, x.perm)


# ---------------------------------------------------------------------------------------------- activations

def _activation(name: str, **defaults: Any) -> Any:
    def emit(ctx: Builder, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
        from bridge.layers_route.emit_modules import activation_layer

        params = dict(defaults)
        keys = list(defaults)
        for i, value in enumerate(args[1:]):
            if i < len(keys):
                params[keys[i]] = value
        params.update({k: v for k, v in kwargs.items() if k != "inplace"})
        return activation_layer(ctx, ctx.tensor_arg(args[0]), name, **params)
    return emit


function_emitter(F.relu, torch.relu, "relu", "relu_")(_activation("relu"))
function_emitter(F.relu6)(_activation("relu6"))
function_emitter(torch.sigmoid, F.sigmoid, "sigmoid")(_activation("sigmoid"))
function_emitter(torch.tanh, F.tanh, "tanh")(_activation("tanh"))
function_emitter(F.silu)(_activation("silu"))
function_emitter(F.mish)(_activation("mish"))
function_emitter(F.selu, torch.selu)(_activation("selu"))
function_emitter(F.softsign)(_activation("softsign"))
function_emitter(F.gelu)(_activation("gelu", approximate="none"))
function_emitter(F.softplus)(_activation("softplus", beta=1.0, threshold=20.0))
function_emitter(F.leaky_relu)(_activation("leaky_relu", negative_slope=0.01))
function_emitter(F.elu)(_activation("elu", alpha=1.0))
function_emitter(F.hardtanh)(_activation("hardtanh", min_val=-1.0, max_val=1.0))
function_emitter(F.hardsigmoid)(_activation("hardsigmoid"))


@function_emitter(F.softmax, torch.softmax, "softmax", F.log_softmax, torch.log_softmax, "log_softmax")
def softmax_fn(ctx: Builder, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    assert ctx.node is not None
    dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
    name = str(getattr(ctx.node.target, "__name__", ctx.node.target))
    return softmax(ctx, ctx.tensor_arg(args[0]), dim, log="log" in name)


@function_emitter(F.dropout)
def dropout_fn(ctx: Builder, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    x = ctx.tensor_arg(args[0])
    p = float(kwargs.get("p", args[1] if len(args) > 1 else 0.5))
    if p == 0:
        return x
    return ctx.add1("Dropout", {"rate": p}, [x], ctx.out_shape(), x.perm, order=x.flat_order)


# ---------------------------------------------------------------------------------------------- shapes, layouts

@function_emitter(torch.flatten, "flatten")
def flatten_fn(ctx: Builder, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    start = kwargs.get("start_dim", args[1] if len(args) > 1 else 0)
    end = kwargs.get("end_dim", args[2] if len(args) > 2 else -1)
    return flatten_tensor(ctx, ctx.tensor_arg(args[0]), int(start), int(end))


@function_emitter(torch.reshape, "view", "reshape", "squeeze", "unsqueeze", torch.squeeze, torch.unsqueeze,
                  "unflatten", torch.unflatten, "expand_as")
def reshape_fn(ctx: Builder, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    assert ctx.node is not None
    if ctx.node.target == "expand_as":
        x = ctx.tensor_arg(args[0])
        if x.torch_shape != ctx.out_shape():
            raise Refused("expand_as", "a real broadcast (let the elementwise op broadcast instead)")
        return x
    if isinstance(args[0], Stack) and len(args[0].items) == 1 and args[0].items[0].torch_shape == ctx.out_shape():
        return args[0].items[0]  # h_n.squeeze(0) / h_n.view(batch, hidden) of a one-layer RNN
    return reshape_tensor(ctx, ctx.tensor_arg(args[0]))


@function_emitter("permute", torch.permute)
def permute_fn(ctx: Builder, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    """A permute only relabels axes: no layer, the layout absorbs it."""
    x = plain(ctx.tensor_arg(args[0]))
    dims = kwargs.get("dims", args[1:] if len(args) > 2 or not isinstance(args[1], (tuple, list)) else args[1])
    return _relabel(ctx, x, [int(d) % x.rank for d in dims])


@function_emitter("transpose", torch.transpose, "t", torch.t)
def transpose_fn(ctx: Builder, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    x = plain(ctx.tensor_arg(args[0]))
    d0, d1 = (int(args[1]) % x.rank, int(args[2]) % x.rank) if len(args) > 2 else (0, 1)
    order = list(range(x.rank))
    order[d0], order[d1] = order[d1], order[d0]
    return _relabel(ctx, x, order)


def _relabel(ctx: Builder, x: KT, order: Sequence[int]) -> KT:
    """PyTorch's new axis j is old axis order[j]: the Keras tensor stays, its perm is renumbered."""
    inverse = [0] * len(order)
    for new, old in enumerate(order):
        inverse[old] = new
    return KT(x.id, tuple(inverse[p] for p in x.perm), ctx.out_shape(), x.dtype)


@function_emitter("contiguous", "clone", "detach", "float", torch.clone, "type_as", "to")
def passthrough(ctx: Builder, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    """Copies and casts to the same dtype are identities."""
    x = ctx.tensor_arg(args[0])
    if ctx.out_dtype() != x.dtype:
        raise Refused("cast", f"a cast from {x.dtype} to {ctx.out_dtype()}")
    return x


@function_emitter("size")
def size_fn(ctx: Builder, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    assert ctx.node is not None
    value, probe = ctx.captured.values[ctx.node], ctx.captured.probe_values[ctx.node]
    return value if value == probe else DynamicInt(value)


@function_emitter("dim")
def dim_fn(ctx: Builder, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    return ctx.tensor_arg(args[0]).rank


@function_emitter(builtins.getattr)
def getattr_fn(ctx: Builder, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x, attr = args[0], args[1]
    if isinstance(x, KT) and attr in ("shape", "ndim"):
        return size_fn(ctx, args, kwargs)
    raise Refused(f"getattr {attr}", "only .shape / .ndim of a tensor")


@function_emitter(operator.getitem)
def getitem(ctx: Builder, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Indexing: of a tuple (a module's outputs), of a stacked recurrent state, or a tensor slice (a custom
    slice step)."""
    container, index = args[0], args[1]
    if isinstance(container, (tuple, list)):
        return container[index]
    if isinstance(container, Stack):
        if isinstance(index, int):
            return container.items[index]
        if isinstance(index, slice):
            return Stack(container.items[index])
        raise Refused("getitem", "indexing a stacked recurrent state by more than one axis")
    if isinstance(container, DynamicInt) or not isinstance(container, KT):
        value = ctx.captured.values[ctx.node]  # type: ignore[index]
        return value
    return _slice(ctx, plain(container), index if isinstance(index, tuple) else (index,))


def _slice(ctx: Builder, x: KT, index: tuple[Any, ...]) -> KT:
    if any(isinstance(i, (KT, WeightRef, DynamicInt)) for i in index):
        raise Refused("getitem", "indexing with tensors or dynamic sizes")
    if index.count(Ellipsis) > 1 or any(i is None for i in index):
        raise Refused("getitem", "None (new axes) in an index: use unsqueeze")
    if Ellipsis in index:
        at = index.index(Ellipsis)
        index = index[:at] + (slice(None),) * (x.rank - len(index) + 1) + index[at + 1:]
    cuts, squeeze = [], []
    for axis, item in enumerate(index):
        if isinstance(item, slice):
            if item.step not in (None, 1):
                raise Refused("getitem", "a slice step other than 1")
            if item.start in (None, 0) and item.stop is None:
                continue
            cuts.append((axis, item.start, item.stop))
        elif isinstance(item, int):
            cuts.append((axis, item, item + 1 if item != -1 else None))
            squeeze.append(axis)
        else:
            raise Refused("getitem", f"an index of type {type(item).__name__}")
    if any(axis == x.perm[0] for axis, _, _ in cuts):
        raise Refused("getitem", "slicing the batch axis")
    if not cuts:
        return x
    attrs = {"cuts": tuple((x.keras_axis(a), s, e) for a, s, e in cuts),
             "squeeze": tuple(sorted(x.keras_axis(a) for a in squeeze))}
    return ctx.custom("slice", [x], attrs, _drop_axes(x.perm, squeeze))


@function_emitter(torch.chunk, "chunk", torch.split, "split", torch.unbind, "unbind")
def split_fn(ctx: Builder, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[KT, ...]:
    """chunk / split / unbind -> one custom slice step per piece (sizes read from the run)."""
    assert ctx.node is not None
    x = plain(ctx.tensor_arg(args[0]))
    name = str(getattr(ctx.node.target, "__name__", ctx.node.target))
    dim = int(kwargs.get("dim", args[2] if len(args) > 2 else (args[1] if name == "unbind" and len(args) > 1
                                                                 else 0))) % x.rank
    if dim == x.perm[0]:
        raise Refused(name, "splitting the batch axis")
    pieces = ctx.captured.values[ctx.node]
    out, start = [], 0
    for i, piece in enumerate(pieces):
        size = 1 if name == "unbind" else int(piece.shape[dim])
        cut = {"cuts": ((x.keras_axis(dim), start, start + size),),
               "squeeze": (x.keras_axis(dim),) if name == "unbind" else ()}
        perm = _drop_axes(x.perm, [dim]) if name == "unbind" else x.perm
        shape = ctx.captured.shape(ctx.node, piece, ctx.captured.probe_values[ctx.node][i])
        out.append(ctx.custom("slice", [x], cut, perm, torch_shape=shape))
        start += size
    return tuple(out)


@function_emitter(torch.cat, torch.concat, torch.concatenate)
def cat(ctx: Builder, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    tensors = [ctx.tensor_arg(t) for t in args[0]]
    dim = int(kwargs.get("dim", args[1] if len(args) > 1 else 0))
    parts = align(ctx, tensors)
    axis = parts[0].keras_axis(dim)
    if axis == 0:
        raise Refused("cat", "concatenating along the batch axis")
    return ctx.add1("Concatenate", {"axis": axis}, parts, ctx.out_shape(), parts[0].perm)


# ---------------------------------------------------------------------------------------------- reductions

def reduce_emitter(op: str, tuple_result: bool = False) -> Any:
    def emit(ctx: Builder, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        x = plain(ctx.tensor_arg(args[0]))
        dims = kwargs.get("dim", args[1] if len(args) > 1 else None)
        keepdim = bool(kwargs.get("keepdim", args[2] if len(args) > 2 else False))
        if dims is None:
            raise Refused(op, "a reduction over every axis, the batch included")
        axes = sorted({int(d) % x.rank for d in (dims if isinstance(dims, (tuple, list)) else [dims])})
        if x.perm[0] in axes:
            raise Refused(op, "a reduction over the batch axis")
        shape = ctx.out_shape(0) if tuple_result else ctx.out_shape()
        result = _global_pool(ctx, x, op, axes, keepdim, shape) or ctx.custom(
            op, [x], {"axes": tuple(sorted(x.keras_axis(a) for a in axes)), "keepdims": keepdim},
            x.perm if keepdim else _drop_axes(x.perm, axes), torch_shape=shape)
        if tuple_result:
            assert ctx.node is not None
            if any(u.op != "call_function" or u.target is not operator.getitem or u.args[1] != 0
                   for u in ctx.node.users):
                raise Refused(f"torch.{op[1:]}", "the indices of a max/min over an axis")
            return (result, None)
        return result
    return emit


def _global_pool(ctx: Builder, x: KT, op: str, axes: list[int], keepdim: bool, shape: Shape) -> KT | None:
    """A mean / max over the spatial axes of a 4-D map, or over the steps of a 3-D sequence -> global pooling."""
    if op not in ("mean", "amax") or ctx.prefer_custom:
        return None
    kind = "Average" if op == "mean" else "Max"
    if x.rank == 4 and axes == [2, 3]:
        x = ctx.channels_last(x)
        pooled = ctx.add1(f"Global{kind}Pooling2D", {}, [x], shape if not keepdim else shape[:2], (0, 1))
        return ctx.add1("Reshape", {"target_shape": [1, 1, int(shape[1])]}, [pooled], shape, x.perm) \
            if keepdim else pooled  # type: ignore[arg-type]
    if x.rank == 3 and len(axes) == 1 and x.keras_axis(axes[0]) == 1 and not keepdim:
        return ctx.add1(f"Global{kind}Pooling1D", {}, [x], shape, _drop_axes(x.perm, axes))
    return None


function_emitter(torch.mean, "mean")(reduce_emitter("mean"))
function_emitter(torch.sum, "sum")(reduce_emitter("sum"))
function_emitter(torch.amax, "amax")(reduce_emitter("amax"))
function_emitter(torch.amin, "amin")(reduce_emitter("amin"))
function_emitter("max")(lambda ctx, args, kwargs: min_max_method(ctx, args, kwargs, "amax"))
function_emitter("min")(lambda ctx, args, kwargs: min_max_method(ctx, args, kwargs, "amin"))


def min_max_method(ctx: Builder, args: tuple[Any, ...], kwargs: dict[str, Any], op: str) -> Any:
    if len(args) > 1 and isinstance(args[1], (KT, WeightRef)):
        return min_max(ctx, args, kwargs)
    return reduce_emitter(op, tuple_result=True)(ctx, args, kwargs)


# ---------------------------------------------------------------------------------------------- functional layers

@function_emitter(F.pad)
def pad(ctx: Builder, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    """F.pad with zeros of a 4-D map's spatial axes -> ZeroPadding2D; other constant pads -> a custom step."""
    x = plain(ctx.tensor_arg(args[0]))
    pads = [int(p) for p in (kwargs.get("pad", args[1] if len(args) > 1 else ()))]
    mode = kwargs.get("mode", args[2] if len(args) > 2 else "constant")
    value = float(kwargs.get("value", args[3] if len(args) > 3 else 0.0) or 0.0)
    if mode != "constant" or min(pads) < 0:
        raise Refused("pad", f"mode={mode!r} or negative padding (only constant padding is converted)")
    pairs = {x.rank - 1 - i: (pads[2 * i], pads[2 * i + 1]) for i in range(len(pads) // 2)}
    if 0 in pairs and pairs[0] != (0, 0):
        raise Refused("pad", "padding the batch axis")
    if x.rank == 4 and value == 0.0 and set(pairs) <= {2, 3} and pairs.get(1, (0, 0)) == (0, 0):
        x = ctx.channels_last(x)
        top, bottom = pairs.get(2, (0, 0))
        left, right = pairs.get(3, (0, 0))
        return ctx.add1("ZeroPadding2D", {"padding": [[top, bottom], [left, right]]}, [x], ctx.out_shape(), x.perm)
    paddings = tuple(pairs.get(p, (0, 0)) for p in x.perm)
    return ctx.custom("pad", [x], {"paddings": paddings, "value": value}, x.perm)


@function_emitter(F.interpolate)
def interpolate(ctx: Builder, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    from bridge.layers_route.emit_modules import upsample_tensor

    mode = kwargs.get("mode", args[3] if len(args) > 3 else "nearest")
    return upsample_tensor(ctx, ctx.tensor_arg(args[0]), mode, kwargs.get("align_corners"))


@function_emitter(F.adaptive_avg_pool2d, F.adaptive_avg_pool1d)
def adaptive_avg_fn(ctx: Builder, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    from bridge.layers_route.emit_modules import adaptive_pool

    return adaptive_pool(ctx, ctx.tensor_arg(args[0]), "avg", kwargs.get("output_size", args[1]))


@function_emitter(F.adaptive_max_pool2d, F.adaptive_max_pool1d)
def adaptive_max_fn(ctx: Builder, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    from bridge.layers_route.emit_modules import adaptive_pool

    if kwargs.get("return_indices"):
        raise Refused("adaptive_max_pool", "return_indices=True")
    return adaptive_pool(ctx, ctx.tensor_arg(args[0]), "max", kwargs.get("output_size", args[1]))


def _pool_args(args: tuple[Any, ...], kwargs: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    found = dict(zip(names, args[1:]))
    found.update({k: v for k, v in kwargs.items() if k in names})
    return found


@function_emitter(F.max_pool2d)
def max_pool2d_fn(ctx: Builder, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    from bridge.layers_route.emit_modules import pool2d

    a = _pool_args(args, kwargs, ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"))
    if a.get("return_indices"):
        raise Refused("max_pool2d", "return_indices=True")
    return pool2d(ctx, ctx.tensor_arg(args[0]), "max", a["kernel_size"], a.get("stride"), a.get("padding", 0),
                  bool(a.get("ceil_mode", False)), dilation=a.get("dilation", 1))


@function_emitter(F.avg_pool2d)
def avg_pool2d_fn(ctx: Builder, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    from bridge.layers_route.emit_modules import pool2d

    a = _pool_args(args, kwargs, ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                                  "divisor_override"))
    if a.get("divisor_override") is not None:
        raise Refused("avg_pool2d", "divisor_override")
    return pool2d(ctx, ctx.tensor_arg(args[0]), "avg", a["kernel_size"], a.get("stride"), a.get("padding", 0),
                  bool(a.get("ceil_mode", False)), bool(a.get("count_include_pad", True)))
