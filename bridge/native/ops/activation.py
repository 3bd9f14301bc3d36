"""Activations (elementwise, any layout) and softmax/log_softmax (axis-mapped)."""

from __future__ import annotations

from bridge.native.codegen import OpContext, lit
from bridge.native.ir import Node
from bridge.native.layout import same_layout
from bridge.native.ops.elementwise import Unary, register_unary
from bridge.native.registry import LayoutPolicy, converter

ANY = LayoutPolicy.ANY

# One-line activations of `self` ({x}); the schema is `aten::<name>(Tensor self) -> Tensor` unless given.
register_unary(__name__, [
    Unary("aten.relu.default", "tf.nn.relu({x})", ("Relu",)),
    Unary("aten.relu6.default", "tf.nn.relu6({x})", ("Relu6",)),
    Unary("aten.silu.default", "{x} * tf.math.sigmoid({x})", ("Sigmoid", "Mul")),
    Unary("aten.sigmoid.default", "tf.math.sigmoid({x})", ("Sigmoid",)),
    Unary("aten.tanh.default", "tf.math.tanh({x})", ("Tanh",)),
    Unary("aten.hardswish.default", "{x} * tf.nn.relu6({x} + 3.0) / 6.0", ("Relu6", "AddV2", "Mul", "RealDiv")),
    Unary("aten.hardsigmoid.default", "tf.nn.relu6({x} + 3.0) / 6.0", ("Relu6", "AddV2", "RealDiv")),
    # mish(x) = x * tanh(softplus(x)); TF's softplus matches PyTorch's threshold-20 one to float precision
    Unary("aten.mish.default", "{x} * tf.math.tanh(tf.math.softplus({x}))", ("Softplus", "Tanh", "Mul")),
])


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


@converter("aten.softplus.default", layout=ANY, emits=("Softplus", "Mul", "RealDiv", "Greater", "SelectV2"))
def softplus(ctx: OpContext, node: Node) -> str:
    """aten::softplus(Tensor self, Scalar beta=1, Scalar threshold=20) -> Tensor
    (x where beta * x > threshold, else log(1 + exp(beta * x)) / beta)"""
    beta, threshold, x = float(ctx.arg("beta", 1)), float(ctx.arg("threshold", 20)), ctx.t("self")
    if (beta, threshold) == (1.0, 20.0):  # TF's own cut-off gives the same values to float precision
        return f"tf.math.softplus({x})"
    scaled = x if beta == 1.0 else f"{x} * {lit(beta)}"
    smooth = f"tf.math.softplus({scaled})" if beta == 1.0 else f"tf.math.softplus({scaled}) / {lit(beta)}"
    return f"tf.where({scaled} > {lit(threshold)}, {x}, {smooth})"


@converter("aten.softmax.int", layout=LayoutPolicy.AXES, rule=same_layout, emits=("Softmax",))
def softmax(ctx: OpContext, node: Node) -> str:
    """aten::softmax.int(Tensor self, int dim, ScalarType? dtype=None) -> Tensor"""
    return f"tf.nn.softmax({ctx.t('self')}, axis={ctx.axis(ctx.arg('dim'), 'self')})"


@converter("aten.log_softmax.int", layout=LayoutPolicy.AXES, rule=same_layout, emits=("LogSoftmax",))
def log_softmax(ctx: OpContext, node: Node) -> str:
    """aten::log_softmax.int(Tensor self, int dim, ScalarType? dtype=None) -> Tensor"""
    return f"tf.nn.log_softmax({ctx.t('self')}, axis={ctx.axis(ctx.arg('dim'), 'self')})"
