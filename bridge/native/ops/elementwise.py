"""Elementwise ops: unary math, arithmetic, remainders, casts, comparisons, where and logical ops (any layout;
operands are broadcast-aligned by the layout pass)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from bridge.native.codegen import OpContext, lit
from bridge.native.ir import Node, Value, static_size
from bridge.native.registry import CheckFn, ConverterFn, LayoutPolicy, converter

ANY = LayoutPolicy.ANY


# ---------------------------------------------------------------------------------------- one-line unary ops

@dataclass(frozen=True)
class Unary:
    """A same-shape converter that is one TF expression of its input: `template` holds `{x}` where the input
    (`self`) goes. `schema` is the ATen schema (default `aten::<name>(Tensor self) -> Tensor`)."""

    target: str
    template: str
    emits: tuple[str, ...]
    schema: str = ""
    check: CheckFn | None = None

    @property
    def name(self) -> str:
        """The op name in the target (`relu` of `aten.relu.default`)."""
        return self.target.split(".")[1]

    @property
    def doc(self) -> str:
        """The converter's docstring: the ATen schema."""
        return self.schema or f"aten::{self.name}(Tensor self) -> Tensor"


def register_unary(module: str, table: Iterable[Unary]) -> None:
    """Register a converter for each entry of `table`, as defined in family `module` (pass `__name__`: the
    supported-ops document lists a converter under its module)."""
    for entry in table:
        converter(entry.target, layout=ANY, emits=entry.emits, check=entry.check)(unary_converter(entry, module))


def unary_converter(entry: Unary, module: str) -> ConverterFn:
    """The converter function of one table entry, named and documented like a hand-written one."""
    def convert(ctx: OpContext, node: Node) -> str:
        return entry.template.format(x=ctx.t("self"))
    convert.__doc__ = entry.doc
    convert.__name__ = convert.__qualname__ = entry.name
    convert.__module__ = module
    return convert


def bool_only(node: Node) -> str | None:
    """Check of the bitwise ops: they convert on bool tensors only, as logical ops (TF.js has no integer
    bitwise ops but BitwiseAnd)."""
    dtypes = {value.dtype for _, value in node.tensor_args()}
    return None if dtypes == {"bool"} else f"on {'/'.join(sorted(dtypes))} tensors; only bool ones convert"


# `self` is {x}; the schema is `aten::<name>(Tensor self) -> Tensor` unless given.
register_unary(__name__, [
    Unary("aten.neg.default", "tf.math.negative({x})", ("Neg",)),
    Unary("aten.exp.default", "tf.math.exp({x})", ("Exp",)),
    Unary("aten.log.default", "tf.math.log({x})", ("Log",)),
    Unary("aten.sqrt.default", "tf.math.sqrt({x})", ("Sqrt",)),
    Unary("aten.rsqrt.default", "tf.math.rsqrt({x})", ("Rsqrt",)),
    Unary("aten.abs.default", "tf.math.abs({x})", ("Abs",)),
    Unary("aten.log1p.default", "tf.math.log1p({x})", ("Log1p",)),
    Unary("aten.expm1.default", "tf.math.expm1({x})", ("Expm1",)),
    Unary("aten.floor.default", "tf.math.floor({x})", ("Floor",)),
    Unary("aten.ceil.default", "tf.math.ceil({x})", ("Ceil",)),
    Unary("aten.round.default", "tf.math.round({x})", ("Round",)),  # half to even, like PyTorch and TF.js
    Unary("aten.trunc.default", "tf.where({x} < 0, tf.math.ceil({x}), tf.math.floor({x}))",
          ("Less", "Ceil", "Floor", "SelectV2")),  # TF has no float Trunc op
    Unary("aten.sin.default", "tf.math.sin({x})", ("Sin",)),
    Unary("aten.cos.default", "tf.math.cos({x})", ("Cos",)),
    Unary("aten.erf.default", "tf.math.erf({x})", ("Erf",)),
    Unary("aten.sign.default", "tf.math.sign({x})", ("Sign",)),
    Unary("aten.reciprocal.default", "tf.math.reciprocal({x})", ("Reciprocal",)),
    Unary("aten.bitwise_not.default", "tf.math.logical_not({x})", ("LogicalNot",),
          "aten::bitwise_not(Tensor self) -> Tensor   (bool tensors only)", bool_only),
])


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


# ---------------------------------------------------------------------------------------- one-line binary ops

Operands = Callable[[OpContext], "tuple[str, str]"]


def promoted(a: str = "self", b: str = "other") -> Operands:
    """Operands `a` and `b`, each cast to the output dtype where PyTorch promoted it (scalars as literals)."""
    return lambda ctx: (operand(ctx, a), operand(ctx, b))


SELF_OTHER = promoted()


def alpha_scaled(a: str, b: str) -> Operands:
    """Operands `a` and `alpha * b` (add, sub, rsub), promoted like `promoted`."""
    return lambda ctx: (operand(ctx, a), _scaled(ctx, b))


def as_is(ctx: OpContext) -> tuple[str, str]:
    """Tensors `self` and `other` as they are (the bool-only bitwise ops)."""
    return ctx.t("self"), ctx.t("other")


@dataclass(frozen=True)
class Binary:
    """A converter that is one TF expression of two operands: `template` holds `{a}` and `{b}`, spelled by
    `operands`. Every target in `targets` gets the converter `name`, documented by `schema` (the ATen schema)."""

    name: str
    targets: tuple[str, ...]
    template: str
    emits: tuple[str, ...]
    schema: str
    operands: Operands = SELF_OTHER
    check: CheckFn | None = None
    # the two operands' argument names, when `suffix_broadcast` needs them
    names: tuple[str, str] = ("self", "other")
    # TF.js 4.22's wasm kernel is slow (10-20x) when it broadcasts along aligned axes: see `suffix_shaped`
    suffix_broadcast: bool = False


def register_binary(module: str, table: Iterable[Binary]) -> None:
    """Register a converter for each entry of `table`, as defined in family `module` (pass `__name__`)."""
    for entry in table:
        converter(*entry.targets, layout=ANY, emits=entry.emits, check=entry.check)(binary_converter(entry, module))


def suffix_shaped(ctx: OpContext, name: str, expr: str) -> str:
    """Operand `name` (spelled `expr`) without its leading size-1 axes when what is left is a suffix of the
    output's shape, so it broadcasts as a trailing block. TF.js 4.22's wasm backend runs its comparison, logical,
    Maximum/Minimum and Pow kernels fast for equal shapes, scalars and such suffixes, and 10-20x slower when a
    size-1 axis is broadcast among aligned axes ([1, 1, 1, 128] against [1, 1, 128, 128]: 2.1-3.6 ms instead of
    0.15-0.5 ms as [128]; `node benchmarks/broadcast_forms.mjs`). Add, Sub, Mul and RealDiv broadcast fast anyway.
    Same values: a reshape that drops size-1 leading axes changes no broadcast result."""
    arg = ctx.node.args.get(name)
    if not isinstance(arg, Value):
        return expr
    dims, out = tuple(static_size(d) for d in ctx.dims(arg)), tuple(static_size(d) for d in ctx.out_dims())
    if None in dims or None in out or dims == out[len(out) - len(dims):]:
        return expr
    lead = 0
    while lead < len(dims) and dims[lead] == 1:
        lead += 1
    rest = dims[lead:]  # empty: a single element, which becomes a scalar
    if rest and rest != out[len(out) - len(rest):]:
        return expr  # a size-1 axis between others: no reshape makes it a suffix
    return f"tf.reshape({expr}, {list(rest)})"


def binary_converter(entry: Binary, module: str) -> ConverterFn:
    """The converter function of one table entry, named and documented like a hand-written one."""
    def convert(ctx: OpContext, node: Node) -> str:
        a, b = entry.operands(ctx)
        if entry.suffix_broadcast:
            a, b = (suffix_shaped(ctx, name, expr) for name, expr in zip(entry.names, (a, b)))
        return entry.template.format(a=a, b=b)
    convert.__doc__ = entry.schema
    convert.__name__ = convert.__qualname__ = entry.name
    convert.__module__ = module
    return convert


@converter("aten.pow.Tensor_Scalar", layout=ANY, emits=("Pow", "Square"))
def pow_scalar(ctx: OpContext, node: Node) -> str:
    """aten::pow.Tensor_Scalar(Tensor self, Scalar exponent) -> Tensor"""
    exponent = ctx.arg("exponent")
    if exponent == 2:
        return f"tf.math.square({operand(ctx, 'self')})"
    return f"tf.math.pow({operand(ctx, 'self')}, {operand(ctx, 'exponent')})"


@converter("aten.clamp.default", layout=ANY, emits=("ClipByValue", "Maximum", "Minimum", "Cast"))
def clamp(ctx: OpContext, node: Node) -> str:
    """aten::clamp(Tensor self, Scalar? min=None, Scalar? max=None) -> Tensor
    (the bounds are literals of the output dtype: an integer tensor clamped by integers stays integer, TF
    refuses float bounds for it; a float bound promotes an integer tensor to float, as in PyTorch)"""
    low, high, x = ctx.arg("min"), ctx.arg("max"), operand(ctx, "self")
    if low is not None and high is not None:
        return f"tf.clip_by_value({x}, {_bound(ctx, low)}, {_bound(ctx, high)})"
    if low is not None:
        return f"tf.maximum({x}, {_bound(ctx, low)})"
    return f"tf.minimum({x}, {_bound(ctx, high)})" if high is not None else x


def _bound(ctx: OpContext, value: object) -> str:
    """A clamp bound as a literal of the output dtype."""
    return lit(float(value)) if _is_float(ctx.out().dtype) else lit(int(value))  # type: ignore[call-overload]


@converter("aten.clamp.Tensor", layout=ANY, emits=("Maximum", "Minimum", "Cast"))
def clamp_tensor(ctx: OpContext, node: Node) -> str:
    """aten::clamp.Tensor(Tensor self, Tensor? min=None, Tensor? max=None) -> Tensor"""
    x = operand(ctx, "self")
    if ctx.has("min"):
        x = f"tf.maximum({x}, {operand(ctx, 'min')})"
    return f"tf.minimum({x}, {operand(ctx, 'max')})" if ctx.has("max") else x


@converter("aten.round.decimals", layout=ANY, emits=("Round", "Mul", "RealDiv"))
def round_decimals(ctx: OpContext, node: Node) -> str:
    """aten::round.decimals(Tensor self, *, int decimals) -> Tensor   (half to even at the given decimal)"""
    decimals, x = int(ctx.arg("decimals", 0)), ctx.t("self")
    if decimals >= 0:  # PyTorch's own order of operations, so ties land on the same side
        scale = lit(10.0 ** decimals)
        return f"tf.math.round({x} * {scale}) / {scale}"
    scale = lit(10.0 ** -decimals)
    return f"tf.math.round({x} / {scale}) * {scale}"


# ---------------------------------------------------------------------------------------- rounding division, fmod

def _magnitude(ctx: OpContext, name: str) -> str:
    """|operand| (a scalar's absolute value is taken here, so its literal keeps the output dtype)."""
    if ctx.has(name):
        return f"tf.math.abs({operand(ctx, name)})"
    value = ctx.arg(name)
    return lit(abs(float(value))) if _is_float(ctx.out().dtype) else lit(abs(int(value)))


@converter("aten.fmod.Tensor", "aten.fmod.Scalar", layout=ANY,
           emits=("FloorMod", "Abs", "Less", "Neg", "SelectV2", "Cast"))
def fmod(ctx: OpContext, node: Node) -> str:
    """aten::fmod.Tensor(Tensor self, Tensor other) -> Tensor
    (also fmod.Scalar(Tensor self, Scalar other); the result takes the dividend's sign: TF's truncatemod, which
    TF.js lacks, spelled as +-floormod(|self|, |other|))"""
    dividend = operand(ctx, "self")
    magnitude = f"tf.math.floormod(tf.math.abs({dividend}), {_magnitude(ctx, 'other')})"
    return f"tf.where({dividend} < 0, -{magnitude}, {magnitude})"


@converter("aten.div.Tensor_mode", layout=ANY,
           emits=("RealDiv", "FloorDiv", "Floor", "Ceil", "Less", "SelectV2", "Cast"))
def div_mode(ctx: OpContext, node: Node) -> str:
    """aten::div.Tensor_mode(Tensor self, Tensor other, *, str? rounding_mode) -> Tensor
    (rounding_mode None, 'floor' or 'trunc'; a scalar `other` is captured as this overload too)"""
    a, b, mode = operand(ctx, "self"), operand(ctx, "other"), ctx.arg("rounding_mode")
    if mode is None:
        return f"{a} / {b}"
    if mode == "floor":
        return f"tf.math.floordiv({a}, {b})"
    if _is_float(ctx.out().dtype):
        quotient = ctx.let(f"{a} / {b}", "quotient")
        return f"tf.where({quotient} < 0, tf.math.ceil({quotient}), tf.math.floor({quotient}))"
    # integers: the floor quotient, one up where it rounded a negative inexact quotient down
    floor = ctx.let(f"tf.math.floordiv({a}, {b})", "floor")
    inexact = f"tf.math.not_equal({floor} * {b}, {a})"
    return f"tf.where(tf.math.logical_and({floor} < 0, {inexact}), {floor} + 1, {floor})"


# ---------------------------------------------------------------------------------------- casts

def truth(expr: str, dtype: str) -> str:
    """A `dtype` tensor expression as bool, nonzero being true. Spelled as a comparison: TF.js's wasm Cast to
    bool truncates (0.5 -> false, 256 -> false) rather than testing for nonzero."""
    return expr if dtype == "bool" else f"tf.math.not_equal({expr}, 0)"


@converter("aten._to_copy.default", layout=ANY, emits=("Cast", "NotEqual"))
def to_copy(ctx: OpContext, node: Node) -> str:
    """aten::_to_copy(Tensor self, *, ScalarType? dtype=None, Layout? layout=None, Device? device=None,
    bool? pin_memory=None, bool non_blocking=False, MemoryFormat? memory_format=None) -> Tensor
    (a cast to the output dtype, or the input itself; int64 stays int64 in TF and is int32 in TF.js, like
    every int64 tensor of the generated model)"""
    x, source, dtype = ctx.t("self"), ctx.value("self").dtype, ctx.out().dtype
    if source == dtype:
        return x
    return truth(x, source) if dtype == "bool" else f"tf.cast({x}, tf.{dtype})"


# ---------------------------------------------------------------------------------------- comparisons and where

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


def negated_weight(weight: np.ndarray) -> np.ndarray:
    """-w: the factor of relu(-x) in a PReLU written as relu(x) + (-w) * relu(-x)."""
    return np.negative(weight)


def prelu_weight(ctx: OpContext, node: Node) -> Value | None:
    """The weight w when this where is `where(x > 0, x, w * x)` (how torch.export writes nn.PReLU) and nothing
    else reads the comparison or the product; else None."""
    cond, x, scaled = (node.args.get(k) for k in ("condition", "self", "other"))
    if not all(isinstance(v, Value) for v in (cond, x, scaled)) or x.dtype != "float32":
        return None
    gt, mul = cond.producer, scaled.producer
    if gt is None or gt.target != "aten.gt.Scalar" or gt.args.get("self") is not x or gt.args.get("other") != 0:
        return None
    if mul is None or mul.target != "aten.mul.Tensor":
        return None
    if not (ctx.sole_user(cond, node) and ctx.sole_user(scaled, node)):
        return None
    factors = [mul.args.get("self"), mul.args.get("other")]
    weights = [f for f in factors if isinstance(f, Value) and f.is_weight and f is not x]
    return weights[0] if len(weights) == 1 and any(f is x for f in factors) else None


@converter("aten.where.self", "aten.where.ScalarOther", "aten.where.ScalarSelf", layout=ANY,
           emits=("SelectV2", "NotEqual", "Relu", "Neg", "Mul", "AddV2"))
def where(ctx: OpContext, node: Node) -> str:
    """aten::where.self(Tensor condition, Tensor self, Tensor other) -> Tensor
    (also where.ScalarOther and where.ScalarSelf, with a scalar `other` or `self`; a PReLU,
    where(x > 0, x, w * x), is written relu(x) + (-w) * relu(-x), which the TF.js writer turns into one Prelu op,
    fused into the convolution before it: TF.js wasm's Greater + SelectV2 took 13 of 28 ms in a MobileNet-style net)"""
    weight = prelu_weight(ctx, node)
    if weight is not None:
        x = ctx.t("self")
        negated = ctx.transformed(weight, "negated", negated_weight)
        return f"tf.nn.relu({x}) + {negated} * tf.nn.relu(tf.negative({x}))"
    condition = truth(ctx.t("condition"), ctx.value("condition").dtype)
    return f"tf.where({condition}, {operand(ctx, 'self')}, {operand(ctx, 'other')})"


# ---------------------------------------------------------------------------------------- logical and bitwise ops

def as_bool(ctx: OpContext, name: str) -> str:
    """Tensor argument `name` as bool (PyTorch's logical ops take any dtype: nonzero is true)."""
    return truth(ctx.t(name), ctx.value(name).dtype)


@converter("aten.logical_not.default", layout=ANY, emits=("LogicalNot", "NotEqual"))
def logical_not(ctx: OpContext, node: Node) -> str:
    """aten::logical_not(Tensor self) -> Tensor"""
    return f"tf.math.logical_not({as_bool(ctx, 'self')})"


# ---------------------------------------------------------------------------------------- the binary table

def _comparisons() -> list[Binary]:
    """gt/lt/ge/le/eq/ne, Tensor and Scalar overloads: bool results of operands promoted as PyTorch does."""
    ops = {"gt": ("tf.math.greater", "Greater"), "lt": ("tf.math.less", "Less"),
           "ge": ("tf.math.greater_equal", "GreaterEqual"), "le": ("tf.math.less_equal", "LessEqual"),
           "eq": ("tf.math.equal", "Equal"), "ne": ("tf.math.not_equal", "NotEqual")}
    return [Binary(name, (f"aten.{name}.Tensor", f"aten.{name}.Scalar"), f"{function}({{a}}, {{b}})",
                   (op, "Cast", "Reshape"),
                   f"aten::{name}.Tensor(Tensor self, Tensor other) -> Tensor\n"
                   f"(also {name}.Scalar(Tensor self, Scalar other); the result is bool)", compare_operands,
                   suffix_broadcast=True)
            for name, (function, op) in ops.items()]


def _logicals() -> list[Binary]:
    """logical_<op> (any dtypes, nonzero is true) and bitwise_<op>.Tensor (bool tensors only) for and/or/xor;
    xor of bools is inequality (TF's logical_xor is 3 ops)."""
    ops = {"and": ("tf.math.logical_and", "LogicalAnd"), "or": ("tf.math.logical_or", "LogicalOr"),
           "xor": ("tf.math.not_equal", "NotEqual")}
    table = []
    for name, (function, op) in ops.items():
        template = f"{function}({{a}}, {{b}})"
        table.append(Binary(f"logical_{name}", (f"aten.logical_{name}.default",), template,
                            tuple(dict.fromkeys((op, "NotEqual", "Reshape"))),
                            f"aten::logical_{name}(Tensor self, Tensor other) -> Tensor",
                            lambda ctx: (as_bool(ctx, "self"), as_bool(ctx, "other")), suffix_broadcast=True))
        table.append(Binary(f"bitwise_{name}", (f"aten.bitwise_{name}.Tensor",), template, (op, "Reshape"),
                            f"aten::bitwise_{name}.Tensor(Tensor self, Tensor other) -> Tensor   (bool tensors only)",
                            as_is, bool_only, suffix_broadcast=True))
    return table


register_binary(__name__, [
    Binary("add", ("aten.add.Tensor",), "{a} + {b}", ("AddV2",),
           "aten::add.Tensor(Tensor self, Tensor other, *, Scalar alpha=1) -> Tensor", alpha_scaled("self", "other")),
    Binary("sub", ("aten.sub.Tensor",), "{a} - {b}", ("Sub",),
           "aten::sub.Tensor(Tensor self, Tensor other, *, Scalar alpha=1) -> Tensor", alpha_scaled("self", "other")),
    Binary("rsub", ("aten.rsub.Scalar",), "{a} - {b}", ("Sub",),
           "aten::rsub.Scalar(Tensor self, Scalar other, Scalar alpha=1) -> Tensor   (other - alpha * self)",
           alpha_scaled("other", "self")),
    Binary("mul", ("aten.mul.Tensor",), "{a} * {b}", ("Mul",), "aten::mul.Tensor(Tensor self, Tensor other) -> Tensor"),
    Binary("div", ("aten.div.Tensor",), "{a} / {b}", ("RealDiv",),
           "aten::div.Tensor(Tensor self, Tensor other) -> Tensor"),
    Binary("maximum", ("aten.maximum.default",), "tf.maximum({a}, {b})", ("Maximum", "Reshape"),
           "aten::maximum(Tensor self, Tensor other) -> Tensor", suffix_broadcast=True),
    Binary("minimum", ("aten.minimum.default",), "tf.minimum({a}, {b})", ("Minimum", "Reshape"),
           "aten::minimum(Tensor self, Tensor other) -> Tensor", suffix_broadcast=True),
    Binary("pow_tensor", ("aten.pow.Tensor_Tensor", "aten.pow.Scalar"), "tf.math.pow({a}, {b})",
           ("Pow", "Cast", "Reshape"),
           "aten::pow.Tensor_Tensor(Tensor self, Tensor exponent) -> Tensor   (also pow.Scalar(Scalar self, Tensor\n"
           "exponent))", promoted("self", "exponent"), names=("self", "exponent"), suffix_broadcast=True),
    # the result takes the divisor's sign, like TF's floormod
    Binary("remainder", ("aten.remainder.Tensor", "aten.remainder.Scalar"), "tf.math.floormod({a}, {b})",
           ("FloorMod", "Cast"), "aten::remainder.Tensor(Tensor self, Tensor other) -> Tensor\n"
           "(also remainder.Scalar(Tensor self, Scalar other); the result takes the divisor's sign, like TF's "
           "floormod)"),
    *_comparisons(),
    *_logicals(),
])
