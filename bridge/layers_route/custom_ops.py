"""The ops a generated custom layer may hold: one table, each entry with its TensorFlow (Python) and TF.js
(JavaScript) spelling, so the Keras class bridge checks in Python and the JavaScript class it ships compute the
same thing. Anything outside this table is refused before a layer is written.

Operands are Keras-side tensors (the layer's inputs, its weights, earlier steps) or scalar constants; axes in
`attrs` are Keras axes (already moved through the tensor's layout by the emitter).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# `kind` says how an op treats layouts: "elementwise" (any layout, operands share it), "reduce" (axes remapped),
# "last_axis" (works on the Keras last axis), "canonical" (operands in PyTorch's own axis order), "axes" (axes
# remapped), "image" (NHWC).


@dataclass(frozen=True)
class OpDef:
    """One op: how many tensor operands it takes, its layout kind, and its two spellings. `py(operands, attrs)`
    returns a tf value; `js(operands, attrs)` returns a JavaScript expression over operand expressions."""

    name: str
    arity: int
    kind: str
    py: Callable[[Sequence[Any], Mapping[str, Any]], Any]
    js: Callable[[Sequence[str], Mapping[str, Any]], str]
    helper: str | None = None  # a prelude function of custom_layers.js the JavaScript spelling calls


def js_literal(value: Any) -> str:
    """A JSON-able value (numbers, lists, None, booleans) as a JavaScript literal."""
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(js_literal(v) for v in value) + "]"
    return json.dumps(value)


def _tf() -> Any:
    import tensorflow as tf

    return tf


def _unary(name: str, js_fn: str, py_fn: Callable[[Any], Any]) -> OpDef:
    return OpDef(name, 1, "elementwise", lambda a, _: py_fn(a[0]), lambda a, _: f"tf.{js_fn}({a[0]})")


def _binary(name: str, js_fn: str, py_fn: Callable[[Any, Any], Any]) -> OpDef:
    return OpDef(name, 2, "elementwise", lambda a, _: py_fn(a[0], a[1]), lambda a, _: f"tf.{js_fn}({a[0]}, {a[1]})")


def _reduce(name: str, js_fn: str, py_name: str) -> OpDef:
    def py(a: Sequence[Any], attrs: Mapping[str, Any]) -> Any:
        return getattr(_tf().math, py_name)(a[0], axis=list(attrs["axes"]), keepdims=bool(attrs["keepdims"]))

    def js(a: Sequence[str], attrs: Mapping[str, Any]) -> str:
        return f"tf.{js_fn}({a[0]}, {js_literal(list(attrs['axes']))}, {js_literal(bool(attrs['keepdims']))})"

    return OpDef(name, 1, "reduce", py, js)


def _gelu_tanh_py(x: Any) -> Any:
    tf = _tf()
    return 0.5 * x * (1.0 + tf.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def _clamp_py(a: Sequence[Any], attrs: Mapping[str, Any]) -> Any:
    """Clamp to [min, max]; a bound of None is open (so no infinity has to be stored in JSON)."""
    tf = _tf()
    x = a[0]
    if attrs["min"] is not None:
        x = tf.maximum(x, float(attrs["min"]))
    if attrs["max"] is not None:
        x = tf.minimum(x, float(attrs["max"]))
    return x


def _clamp_js(a: Sequence[str], attrs: Mapping[str, Any]) -> str:
    low, high = attrs["min"], attrs["max"]
    if low is not None and high is not None:
        return f"tf.clipByValue({a[0]}, {js_literal(float(low))}, {js_literal(float(high))})"
    if low is not None:
        return f"tf.maximum({a[0]}, {js_literal(float(low))})"
    return f"tf.minimum({a[0]}, {js_literal(float(high))})"


def _slice_py(a: Sequence[Any], attrs: Mapping[str, Any]) -> Any:
    x = a[0]
    index: list[Any] = [slice(None)] * len(x.shape)
    for axis, start, stop in attrs["cuts"]:
        index[axis] = slice(start, stop)
    out = x[tuple(index)]
    squeeze = list(attrs["squeeze"])
    return _tf().squeeze(out, axis=squeeze) if squeeze else out


def _pad_py(a: Sequence[Any], attrs: Mapping[str, Any]) -> Any:
    return _tf().pad(a[0], [list(p) for p in attrs["paddings"]], constant_values=float(attrs["value"]))


def _resize_py(a: Sequence[Any], attrs: Mapping[str, Any]) -> Any:
    """Bilinear resize of an NHWC map as two gathers per axis, weighted (see `bilinear_taps`)."""
    tf = _tf()
    x = a[0]
    for axis, (low, high, weight) in ((1, attrs["rows"]), (2, attrs["cols"])):
        shape = [1, 1, 1, 1]
        shape[axis] = len(weight)
        w = tf.reshape(tf.constant(weight, tf.float32), shape)
        x = tf.gather(x, list(low), axis=axis) * (1.0 - w) + tf.gather(x, list(high), axis=axis) * w
    return x


def _resize_js(a: Sequence[str], attrs: Mapping[str, Any]) -> str:
    rows, cols = attrs["rows"], attrs["cols"]
    return f"resizeBilinear(tf, {a[0]}, {js_literal([list(v) for v in rows])}, {js_literal([list(v) for v in cols])})"


RESIZE_HELPER = """\
/** Bilinear resize of an NHWC map: per spatial axis, rows `low` and `high` of the input mixed by `weight` (PyTorch's
 * source coordinates, computed when the model was converted). Gathers rather than tf.image.resizeBilinear, whose
 * cpu gradient ignores half-pixel centres. */
function resizeBilinear(tf, x, rows, cols) {
  let out = x;
  for (const [axis, [low, high, weight]] of [[1, rows], [2, cols]]) {
    const shape = [1, 1, 1, 1];
    shape[axis] = weight.length;
    const w = tf.reshape(tf.tensor1d(weight), shape);
    const a = tf.gather(out, tf.tensor1d(low, 'int32'), axis);
    const b = tf.gather(out, tf.tensor1d(high, 'int32'), axis);
    out = tf.add(tf.mul(a, tf.sub(1, w)), tf.mul(b, w));
  }
  return out;
}
"""


def bilinear_taps(size_in: int, size_out: int, align_corners: bool) -> tuple[tuple[int, ...], tuple[int, ...],
                                                                          tuple[float, ...]]:
    """PyTorch's bilinear source taps along one axis: (lower index, upper index, upper weight) per output."""
    low, high, weight = [], [], []
    for o in range(size_out):
        if align_corners:
            src = o * (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
        else:
            src = max((o + 0.5) * size_in / size_out - 0.5, 0.0)
        i0 = min(math.floor(src), size_in - 1)
        low.append(i0)
        high.append(min(i0 + 1, size_in - 1))
        weight.append(float(src - i0))
    return tuple(low), tuple(high), tuple(weight)


def nearest_taps(size_in: int, size_out: int) -> tuple[int, ...]:
    """PyTorch's 'nearest' source index along one axis for each output position."""
    return tuple(min(math.floor(o * size_in / size_out), size_in - 1) for o in range(size_out))


def _nearest_py(a: Sequence[Any], attrs: Mapping[str, Any]) -> Any:
    tf = _tf()
    return tf.gather(tf.gather(a[0], list(attrs["rows"]), axis=1), list(attrs["cols"]), axis=2)


def _nearest_js(a: Sequence[str], attrs: Mapping[str, Any]) -> str:
    rows, cols = js_literal(list(attrs["rows"])), js_literal(list(attrs["cols"]))
    return f"tf.gather(tf.gather({a[0]}, tf.tensor1d({rows}, 'int32'), 1), tf.tensor1d({cols}, 'int32'), 2)"


SLICE_HELPER = """\
/** `x` cut along each [axis, start, stop] of `cuts` (Python slice bounds: null for open, negative from the end),
 * the other axes whole; then `squeeze` axes dropped (an integer index in PyTorch). */
function sliceAxes(tf, x, cuts, squeeze) {
  const begin = x.shape.map(() => 0);
  const size = x.shape.map(() => -1);
  const bound = (i, n, fallback) => (i === null ? fallback : Math.min(Math.max(i < 0 ? i + n : i, 0), n));
  for (const [axis, start, stop] of cuts) {
    const n = x.shape[axis];
    begin[axis] = bound(start, n, 0);
    size[axis] = Math.max(bound(stop, n, n) - begin[axis], 0);
  }
  const out = tf.slice(x, begin, size);
  return squeeze.length > 0 ? tf.squeeze(out, squeeze) : out;
}
"""


def _slice_js(a: Sequence[str], attrs: Mapping[str, Any]) -> str:
    cuts = [[int(axis), start, stop] for axis, start, stop in attrs["cuts"]]
    return f"sliceAxes(tf, {a[0]}, {js_literal(cuts)}, {js_literal(list(attrs['squeeze']))})"


OPS: dict[str, OpDef] = {op.name: op for op in [
    _unary("neg", "neg", lambda x: -x),
    _unary("exp", "exp", lambda x: _tf().exp(x)),
    _unary("log", "log", lambda x: _tf().math.log(x)),
    _unary("sqrt", "sqrt", lambda x: _tf().sqrt(x)),
    _unary("rsqrt", "rsqrt", lambda x: _tf().math.rsqrt(x)),
    _unary("abs", "abs", lambda x: _tf().abs(x)),
    _unary("sin", "sin", lambda x: _tf().sin(x)),
    _unary("cos", "cos", lambda x: _tf().cos(x)),
    _unary("tanh", "tanh", lambda x: _tf().tanh(x)),
    _unary("sigmoid", "sigmoid", lambda x: _tf().sigmoid(x)),
    _unary("relu", "relu", lambda x: _tf().nn.relu(x)),
    _unary("square", "square", lambda x: _tf().square(x)),
    _unary("reciprocal", "reciprocal", lambda x: _tf().math.reciprocal(x)),
    _unary("erf", "erf", lambda x: _tf().math.erf(x)),
    _unary("softplus", "softplus", lambda x: _tf().math.softplus(x)),
    OpDef("gelu_tanh", 1, "elementwise", lambda a, _: _gelu_tanh_py(a[0]),
          lambda a, _: f"tf.mul(tf.mul({a[0]}, 0.5), tf.add(1, tf.tanh(tf.mul({math.sqrt(2.0 / math.pi)!r}, "
                       f"tf.add({a[0]}, tf.mul(0.044715, tf.pow({a[0]}, 3)))))))"),
    OpDef("gelu", 1, "elementwise", lambda a, _: _tf().nn.gelu(a[0], approximate=False),
          lambda a, _: f"tf.mul(tf.mul({a[0]}, 0.5), tf.add(1, tf.erf(tf.div({a[0]}, Math.SQRT2))))"),
    OpDef("silu", 1, "elementwise", lambda a, _: a[0] * _tf().sigmoid(a[0]),
          lambda a, _: f"tf.mul({a[0]}, tf.sigmoid({a[0]}))"),
    _unary("elu", "elu", lambda x: _tf().nn.elu(x)),
    _unary("relu6", "relu6", lambda x: _tf().nn.relu6(x)),
    OpDef("leaky_relu", 1, "elementwise", lambda a, at: _tf().nn.leaky_relu(a[0], alpha=float(at["alpha"])),
          lambda a, at: f"tf.leakyRelu({a[0]}, {js_literal(float(at['alpha']))})"),
    OpDef("hardsigmoid", 1, "elementwise", lambda a, _: _tf().nn.relu6(a[0] + 3.0) / 6.0,
          lambda a, _: f"tf.div(tf.relu6(tf.add({a[0]}, 3)), 6)"),
    OpDef("clamp", 1, "elementwise", _clamp_py, _clamp_js),
    OpDef("pow_scalar", 1, "elementwise", lambda a, at: _tf().pow(a[0], float(at["exponent"])),
          lambda a, at: f"tf.pow({a[0]}, {js_literal(float(at['exponent']))})"),
    _binary("add", "add", lambda x, y: x + y),
    _binary("sub", "sub", lambda x, y: x - y),
    _binary("mul", "mul", lambda x, y: x * y),
    _binary("div", "div", lambda x, y: x / y),
    _binary("maximum", "maximum", lambda x, y: _tf().maximum(x, y)),
    _binary("minimum", "minimum", lambda x, y: _tf().minimum(x, y)),
    _reduce("mean", "mean", "reduce_mean"),
    _reduce("sum", "sum", "reduce_sum"),
    _reduce("amax", "max", "reduce_max"),
    _reduce("amin", "min", "reduce_min"),
    OpDef("softmax", 1, "last_axis", lambda a, _: _tf().nn.softmax(a[0], axis=-1), lambda a, _: f"tf.softmax({a[0]})"),
    OpDef("log_softmax", 1, "last_axis", lambda a, _: _tf().nn.log_softmax(a[0], axis=-1),
          lambda a, _: f"tf.logSoftmax({a[0]})"),
    OpDef("matmul", 2, "canonical", lambda a, _: _tf().linalg.matmul(a[0], a[1]),
          lambda a, _: f"tf.matMul({a[0]}, {a[1]})"),
    OpDef("slice", 1, "axes", _slice_py, _slice_js, helper=SLICE_HELPER),
    OpDef("pad", 1, "axes", _pad_py,
          lambda a, at: f"tf.pad({a[0]}, {js_literal([list(p) for p in at['paddings']])}, "
                        f"{js_literal(float(at['value']))})"),
    OpDef("resize_bilinear", 1, "image", _resize_py, _resize_js, helper=RESIZE_HELPER),
    OpDef("resize_nearest", 1, "image", _nearest_py, _nearest_js),
]}
