"""Elementwise arithmetic (any layout; operands are broadcast-aligned by the layout pass)."""

from __future__ import annotations

from bridge.native.codegen import OpContext, lit
from bridge.native.ir import Node, Value
from bridge.native.registry import LayoutPolicy, converter

ANY = LayoutPolicy.ANY


def operand(ctx: OpContext, name: str) -> str:
    """A tensor operand cast to the output dtype when PyTorch promoted it, or a scalar literal."""
    arg = ctx.node.args.get(name)
    out_dtype = ctx.out().dtype
    if isinstance(arg, Value):
        expr = ctx.t(name)
        return expr if arg.dtype == out_dtype else f"tf.cast({expr}, tf.{out_dtype})"
    if out_dtype.startswith(("float", "bfloat")) and not isinstance(arg, bool):
        return lit(float(arg))
    return lit(arg)


def _scaled(ctx: OpContext, name: str) -> str:
    alpha = ctx.arg("alpha", 1)
    other = operand(ctx, name)
    return other if alpha == 1 else f"{other} * {lit(alpha)}"


@converter("aten.add.Tensor", layout=ANY, emits=("AddV2",))
def add(ctx: OpContext, node: Node) -> str:
    """aten::add.Tensor(Tensor self, Tensor other, *, Scalar alpha=1) -> Tensor"""
    return f"{operand(ctx, 'self')} + {_scaled(ctx, 'other')}"


@converter("aten.sub.Tensor", layout=ANY, emits=("Sub",))
def sub(ctx: OpContext, node: Node) -> str:
    """aten::sub.Tensor(Tensor self, Tensor other, *, Scalar alpha=1) -> Tensor"""
    return f"{operand(ctx, 'self')} - {_scaled(ctx, 'other')}"


@converter("aten.rsub.Scalar", layout=ANY, emits=("Sub",))
def rsub(ctx: OpContext, node: Node) -> str:
    """aten::rsub.Scalar(Tensor self, Scalar other, Scalar alpha=1) -> Tensor   (other - alpha * self)"""
    alpha = ctx.arg("alpha", 1)
    scaled = operand(ctx, "self") if alpha == 1 else f"{operand(ctx, 'self')} * {lit(alpha)}"
    return f"{operand(ctx, 'other')} - {scaled}"


@converter("aten.mul.Tensor", layout=ANY, emits=("Mul",))
def mul(ctx: OpContext, node: Node) -> str:
    """aten::mul.Tensor(Tensor self, Tensor other) -> Tensor"""
    return f"{operand(ctx, 'self')} * {operand(ctx, 'other')}"


@converter("aten.div.Tensor", layout=ANY, emits=("RealDiv",))
def div(ctx: OpContext, node: Node) -> str:
    """aten::div.Tensor(Tensor self, Tensor other) -> Tensor"""
    return f"{operand(ctx, 'self')} / {operand(ctx, 'other')}"


@converter("aten.maximum.default", layout=ANY, emits=("Maximum",))
def maximum(ctx: OpContext, node: Node) -> str:
    """aten::maximum(Tensor self, Tensor other) -> Tensor"""
    return f"tf.maximum({operand(ctx, 'self')}, {operand(ctx, 'other')})"


@converter("aten.minimum.default", layout=ANY, emits=("Minimum",))
def minimum(ctx: OpContext, node: Node) -> str:
    """aten::minimum(Tensor self, Tensor other) -> Tensor"""
    return f"tf.minimum({operand(ctx, 'self')}, {operand(ctx, 'other')})"


@converter("aten.pow.Tensor_Scalar", layout=ANY, emits=("Pow", "Square"))
def pow_scalar(ctx: OpContext, node: Node) -> str:
    """aten::pow.Tensor_Scalar(Tensor self, Scalar exponent) -> Tensor"""
    exponent = ctx.arg("exponent")
    if exponent == 2:
        return f"tf.math.square({operand(ctx, 'self')})"
    return f"tf.math.pow({operand(ctx, 'self')}, {operand(ctx, 'exponent')})"


@converter("aten.clamp.default", layout=ANY, emits=("ClipByValue", "Maximum", "Minimum"))
def clamp(ctx: OpContext, node: Node) -> str:
    """aten::clamp(Tensor self, Scalar? min=None, Scalar? max=None) -> Tensor"""
    low, high, x = ctx.arg("min"), ctx.arg("max"), ctx.t("self")
    if low is not None and high is not None:
        return f"tf.clip_by_value({x}, {lit(float(low))}, {lit(float(high))})"
    if low is not None:
        return f"tf.maximum({x}, {lit(float(low))})"
    return f"tf.minimum({x}, {lit(float(high))})" if high is not None else x


_UNARY = {
    "aten.neg.default": ("tf.math.negative", "Neg"),
    "aten.exp.default": ("tf.math.exp", "Exp"),
    "aten.log.default": ("tf.math.log", "Log"),
    "aten.sqrt.default": ("tf.math.sqrt", "Sqrt"),
    "aten.rsqrt.default": ("tf.math.rsqrt", "Rsqrt"),
    "aten.abs.default": ("tf.math.abs", "Abs"),
}


def _unary(function: str, tf_op: str, target: str) -> None:
    def convert(ctx: OpContext, node: Node) -> str:
        return f"{function}({ctx.t('self')})"
    convert.__doc__ = f"aten::{target.split('.')[1]}(Tensor self) -> Tensor"
    convert.__name__ = target.split(".")[1]
    converter(target, layout=ANY, emits=(tf_op,))(convert)


for _target, (_function, _op) in _UNARY.items():
    _unary(_function, _op, _target)


# ---------------------------------------------------------------------------------------- comparisons and where

_COMPARE = {"gt": ("tf.math.greater", "Greater"), "lt": ("tf.math.less", "Less"),
            "ge": ("tf.math.greater_equal", "GreaterEqual"), "le": ("tf.math.less_equal", "LessEqual"),
            "eq": ("tf.math.equal", "Equal"), "ne": ("tf.math.not_equal", "NotEqual")}


def _is_float(dtype: str) -> bool:
    return dtype.startswith(("float", "bfloat"))


def compare_operands(ctx: OpContext) -> tuple[str, str]:
    """`self` and `other` of a comparison in one dtype, as PyTorch promotes them (a float operand, or a
    non-integral scalar, makes the comparison float)."""
    args = {name: ctx.node.args.get(name) for name in ("self", "other")}
    tensors = [a for a in args.values() if isinstance(a, Value)]
    floats = [v.dtype for v in tensors if _is_float(v.dtype)]
    fractional = any(isinstance(a, float) and not float(a).is_integer() for a in args.values())
    dtype = floats[0] if floats else ("float32" if fractional else tensors[0].dtype)

    def expr(name: str, arg: object) -> str:
        if isinstance(arg, Value):
            return ctx.t(name) if arg.dtype == dtype else f"tf.cast({ctx.t(name)}, tf.{dtype})"
        if _is_float(dtype):
            return lit(float(arg))  # type: ignore[arg-type]
        return lit(bool(arg)) if dtype == "bool" else lit(int(arg))  # type: ignore[call-overload]

    return expr("self", args["self"]), expr("other", args["other"])


def _comparison(name: str, function: str, tf_op: str) -> None:
    def convert(ctx: OpContext, node: Node) -> str:
        left, right = compare_operands(ctx)
        return f"{function}({left}, {right})"
    convert.__doc__ = (f"aten::{name}.Tensor(Tensor self, Tensor other) -> Tensor\n"
                       f"(also {name}.Scalar(Tensor self, Scalar other); the result is bool)")
    convert.__name__ = name
    converter(f"aten.{name}.Tensor", f"aten.{name}.Scalar", layout=ANY, emits=(tf_op, "Cast"))(convert)


for _name, (_function, _op) in _COMPARE.items():
    _comparison(_name, _function, _op)


@converter("aten.where.self", "aten.where.ScalarOther", "aten.where.ScalarSelf", layout=ANY,
           emits=("SelectV2", "Cast"))
def where(ctx: OpContext, node: Node) -> str:
    """aten::where.self(Tensor condition, Tensor self, Tensor other) -> Tensor
    (also where.ScalarOther and where.ScalarSelf, with a scalar `other` or `self`)"""
    condition = ctx.t("condition")
    if ctx.value("condition").dtype != "bool":
        condition = f"tf.cast({condition}, tf.bool)"
    return f"tf.where({condition}, {operand(ctx, 'self')}, {operand(ctx, 'other')})"
