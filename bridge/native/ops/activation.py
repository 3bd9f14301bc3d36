"""Activations (elementwise, any layout) and softmax/log_softmax (axis-mapped)."""

from __future__ import annotations

from bridge.native.codegen import OpContext, lit
from bridge.native.ir import Node
from bridge.native.layout import same_layout
from bridge.native.registry import LayoutPolicy, converter

ANY = LayoutPolicy.ANY


@converter("aten.relu.default", layout=ANY, emits=("Relu",))
def relu(ctx: OpContext, node: Node) -> str:
    """aten::relu(Tensor self) -> Tensor"""
    return f"tf.nn.relu({ctx.t('self')})"


@converter("aten.relu6.default", layout=ANY, emits=("Relu6",))
def relu6(ctx: OpContext, node: Node) -> str:
    """aten::relu6(Tensor self) -> Tensor"""
    return f"tf.nn.relu6({ctx.t('self')})"


@converter("aten.hardtanh.default", layout=ANY, emits=("Relu6", "ClipByValue"))
def hardtanh(ctx: OpContext, node: Node) -> str:
    """aten::hardtanh(Tensor self, Scalar min_val=-1, Scalar max_val=1) -> Tensor"""
    low, high = ctx.arg("min_val", -1), ctx.arg("max_val", 1)
    if (low, high) == (0, 6):
        return f"tf.nn.relu6({ctx.t('self')})"
    return f"tf.clip_by_value({ctx.t('self')}, {lit(float(low))}, {lit(float(high))})"


@converter("aten.leaky_relu.default", layout=ANY, emits=("LeakyRelu",))
def leaky_relu(ctx: OpContext, node: Node) -> str:
    """aten::leaky_relu(Tensor self, Scalar negative_slope=0.01) -> Tensor"""
    return f"tf.nn.leaky_relu({ctx.t('self')}, alpha={lit(float(ctx.arg('negative_slope', 0.01)))})"


@converter("aten.elu.default", layout=ANY, emits=("Elu", "Exp", "SelectV2"))
def elu(ctx: OpContext, node: Node) -> str:
    """aten::elu(Tensor self, Scalar alpha=1, Scalar scale=1, Scalar input_scale=1) -> Tensor"""
    alpha, scale, input_scale = (float(ctx.arg(k, 1)) for k in ("alpha", "scale", "input_scale"))
    x = ctx.t("self")
    if (alpha, scale, input_scale) == (1.0, 1.0, 1.0):
        return f"tf.nn.elu({x})"
    return f"{lit(scale)} * tf.where({x} > 0, {x}, {lit(alpha)} * (tf.exp({x} * {lit(input_scale)}) - 1.0))"


@converter("aten.gelu.default", layout=ANY, emits=("Erf", "Tanh", "Mul", "AddV2", "Pow"))
def gelu(ctx: OpContext, node: Node) -> str:
    """aten::gelu(Tensor self, *, str approximate='none') -> Tensor"""
    return f"tf.nn.gelu({ctx.t('self')}, approximate={ctx.arg('approximate', 'none') == 'tanh'})"


@converter("aten.silu.default", layout=ANY, emits=("Sigmoid", "Mul"))
def silu(ctx: OpContext, node: Node) -> str:
    """aten::silu(Tensor self) -> Tensor"""
    x = ctx.t("self")
    return f"{x} * tf.math.sigmoid({x})"


@converter("aten.sigmoid.default", layout=ANY, emits=("Sigmoid",))
def sigmoid(ctx: OpContext, node: Node) -> str:
    """aten::sigmoid(Tensor self) -> Tensor"""
    return f"tf.math.sigmoid({ctx.t('self')})"


@converter("aten.tanh.default", layout=ANY, emits=("Tanh",))
def tanh(ctx: OpContext, node: Node) -> str:
    """aten::tanh(Tensor self) -> Tensor"""
    return f"tf.math.tanh({ctx.t('self')})"


@converter("aten.hardswish.default", layout=ANY, emits=("Relu6", "AddV2", "Mul", "RealDiv"))
def hardswish(ctx: OpContext, node: Node) -> str:
    """aten::hardswish(Tensor self) -> Tensor"""
    x = ctx.t("self")
    return f"{x} * tf.nn.relu6({x} + 3.0) / 6.0"


@converter("aten.hardsigmoid.default", layout=ANY, emits=("Relu6", "AddV2", "RealDiv"))
def hardsigmoid(ctx: OpContext, node: Node) -> str:
    """aten::hardsigmoid(Tensor self) -> Tensor"""
    return f"tf.nn.relu6({ctx.t('self')} + 3.0) / 6.0"


@converter("aten.softmax.int", layout=LayoutPolicy.AXES, rule=same_layout, emits=("Softmax",))
def softmax(ctx: OpContext, node: Node) -> str:
    """aten::softmax.int(Tensor self, int dim, ScalarType? dtype=None) -> Tensor"""
    return f"tf.nn.softmax({ctx.t('self')}, axis={ctx.axis(ctx.arg('dim'), 'self')})"


@converter("aten.log_softmax.int", layout=LayoutPolicy.AXES, rule=same_layout, emits=("LogSoftmax",))
def log_softmax(ctx: OpContext, node: Node) -> str:
    """aten::log_softmax.int(Tensor self, int dim, ScalarType? dtype=None) -> Tensor"""
    return f"tf.nn.log_softmax({ctx.t('self')}, axis={ctx.axis(ctx.arg('dim'), 'self')})"
