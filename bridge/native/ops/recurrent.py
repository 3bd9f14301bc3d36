"""Recurrent layers: lstm and gru (stacked, bidirectional, batch_first). A static sequence length is unrolled
over the time steps into plain MatMul/Sigmoid/Tanh lines (the fastest form in TF.js); a dynamic one becomes a
tf.while_loop over a generated step method, whose outputs are written into a TensorArray (lowered by the TF.js
writer to v1 control flow, which TF.js runs with executeAsync). Weights keep PyTorch's gate order (LSTM i, f, g,
o; GRU r, z, n), stored transposed to [in, gates] ("in_out"): never `transpose_b=True`, which TF.js 4.22's wasm
backend computes wrongly once fused with a bias."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from bridge.native.codegen import OpContext
from bridge.native.ir import Node, Size, Value
from bridge.native.registry import LayoutPolicy, converter
from bridge.native.weights import linear_to_in_out

MAX_STEPS = 512  # unrolled code grows with the sequence; longer sequences go to the ONNX route


@dataclass(frozen=True)
class _Rnn:
    """The static facts of one recurrent node."""

    steps: int | None  # None: a dynamic sequence length (a loop)
    batch: Size
    length: Size
    features: int
    hidden: int
    layers: int
    directions: int
    per_direction: int  # params per (layer, direction): 4 with biases, 2 without
    batch_first: bool
    gates: int  # 4 for LSTM, 3 for GRU

    @property
    def gate_width(self) -> int:
        """Columns of the stacked gates (4H for LSTM, 3H for GRU)."""
        return self.gates * self.hidden


def _rnn(node: Node, gates: int) -> _Rnn:
    x = node.args["input"]
    params = node.args["params"]
    directions = 2 if node.args.get("bidirectional") else 1
    per = 4 if node.args.get("has_biases", True) else 2
    batch_first = bool(node.args.get("batch_first"))
    steps = x.shape[1] if batch_first else x.shape[0]
    length, batch = (x.sizes[1], x.sizes[0]) if batch_first else (x.sizes[0], x.sizes[1])
    return _Rnn(steps, batch, length, x.shape[2], params[1].shape[1], int(node.args["num_layers"]), directions,
                per, batch_first, gates)


def _check(gates: int, node: Node) -> str | None:
    x = node.args.get("input")
    params = node.args.get("params") or []
    if not isinstance(x, Value) or x.rank != 3:
        return "input is not a 3-D tensor"
    info = _rnn(node, gates)
    if info.steps is not None and info.steps > MAX_STEPS:
        return f"sequence longer than {MAX_STEPS} steps"
    if len(params) != info.layers * info.directions * info.per_direction:
        return "projections (proj_size) or an unexpected parameter list"
    if node.args.get("train") and float(node.args.get("dropout") or 0.0) > 0.0:
        return "training mode with dropout"
    if params[0].shape[0] != gates * info.hidden:
        return "unexpected weight shape"
    return None


def _time_major(ctx: OpContext, info: _Rnn) -> str:
    x = ctx.t("input")
    return ctx.let(f"tf.transpose({x}, [1, 0, 2])", "time_major") if info.batch_first else x


def _projection(ctx: OpContext, x: str, width: int, w: str, b: str | None, info: _Rnn, tag: str) -> str:
    """The input projection of every step at once: [T, B, gates*H]."""
    flat = f"tf.linalg.matmul(tf.reshape({x}, [-1, {width}]), {w})"
    flat = f"{flat} + {b}" if b else flat
    return ctx.let(f"tf.reshape({flat}, {ctx.shape_list([info.length, info.batch, info.gate_width])})",
                   f"{tag}_xw")


def _layer_inputs(ctx: OpContext, node: Node, info: _Rnn) -> list[list[str | None]]:
    """Per (layer, direction): [w_ih, w_hh, b_ih, b_hh] expressions (None without biases)."""
    params = [ctx.transformed(v, "in_out", linear_to_in_out, lambda e: f"tf.transpose({e})") if v.rank == 2
              else expr for v, expr in zip(node.args["params"], ctx.ts("params"))]
    groups = []
    for k in range(info.layers * info.directions):
        chunk = params[k * info.per_direction:(k + 1) * info.per_direction]
        groups.append(chunk + [None, None] if info.per_direction == 2 else chunk)
    return groups


StepFn = Callable[[OpContext, str, list[str], str, "str | None", int, str], list[str]]


def _unroll(ctx: OpContext, node: Node, info: _Rnn, step_fn: StepFn,
            initial: Callable[[int], list[str]]) -> tuple[str, list[list[str]]]:
    """Run every layer and direction; returns the last layer's time-major output and each (layer, direction)'s
    final states."""
    x, width = _time_major(ctx, info), info.features
    finals: list[list[str]] = []
    groups = _layer_inputs(ctx, node, info)
    for layer in range(info.layers):
        outs = []
        for direction in range(info.directions):
            k = layer * info.directions + direction
            w_ih, w_hh, b_ih, b_hh = groups[k]
            tag = f"l{layer}" + ("_reverse" if direction else "")
            proj = _projection(ctx, x, width, w_ih, b_ih, info, tag)  # type: ignore[arg-type]
            run = _steps if info.steps is not None else _loop
            out, states = run(ctx, info, step_fn, proj, initial(k), (w_hh, b_hh), tag, bool(direction))
            outs.append(out)
            finals.append(states)
        x = outs[0] if len(outs) == 1 else ctx.let(f"tf.concat([{', '.join(outs)}], -1)", f"l{layer}_out")
        width = info.hidden * info.directions
    output = f"tf.transpose({x}, [1, 0, 2])" if info.batch_first else x
    return output, finals


def _steps(ctx: OpContext, info: _Rnn, step_fn: StepFn, proj: str, states: list[str],
           hidden_weights: tuple[str, str | None], tag: str, reverse: bool) -> tuple[str, list[str]]:
    """One direction of one layer, unrolled: a block of lines per time step. Returns ([T, B, H], final states)."""
    assert info.steps is not None
    w_hh, b_hh = hidden_weights
    hs: list[str] = [""] * info.steps
    for t in (range(info.steps - 1, -1, -1) if reverse else range(info.steps)):
        states = step_fn(ctx, f"{proj}[{t}]", states, w_hh, b_hh, info.hidden, f"{tag}_t{t}")
        hs[t] = states[0]
    return ctx.let(f"tf.stack([{', '.join(hs)}], 0)", f"{tag}_out"), states


def _loop(ctx: OpContext, info: _Rnn, step_fn: StepFn, proj: str, states: list[str],
          hidden_weights: tuple[str, str | None], tag: str, reverse: bool) -> tuple[str, list[str]]:
    """One direction of one layer over a dynamic number of steps: a tf.while_loop calling a generated step
    method, which writes each step's hidden state into a TensorArray. Returns ([T, B, H], final states)."""
    w_hh, b_hh = hidden_weights
    count = len(states)
    steps = ctx.let(f"tf.shape({proj})[0]", f"{tag}_steps")

    def body(params: list[str]) -> list[str]:
        xw, n, t, *rest = params
        carried, outputs = rest[:count], rest[count]
        at = ctx.let(f"{n} - 1 - {t}", f"{tag}_at") if reverse else t
        new = step_fn(ctx, f"tf.gather({xw}, {at})", carried, w_hh, b_hh, info.hidden, tag)
        return [f"{t} + 1", *new, f"{outputs}.write({at}, {new[0]})"]

    names = ["state_h", "state_c"][:count]
    layer = tag[1:].split("_")[0]
    doc = f"One time step of layer {layer}{', reverse direction' if reverse else ''} (dynamic sequence length)."
    step = ctx.method(f"{tag}_step", ["xw", "steps", "t", *names, "outputs"], doc, body)
    loop_vars = ", ".join(f"v{i}" for i in range(count + 2))
    ta = f"tf.TensorArray({proj}.dtype, size={steps}, element_shape=[None, {info.hidden}])"
    loop = ctx.let(f"tf.while_loop(lambda {loop_vars}: v0 < {steps}, lambda {loop_vars}: "
                   f"{step}({proj}, {steps}, {loop_vars}), [tf.constant(0), {', '.join(states)}, {ta}])",
                   f"{tag}_loop")
    finals = [ctx.let(f"{loop}[{i + 1}]", f"{tag}_final{i}") for i in range(count)]
    return ctx.let(f"{loop}[{count + 1}].stack()", f"{tag}_out"), finals


def _lstm_step(ctx: OpContext, xw: str, states: list[str], w_hh: str, b_hh: str | None, h: int,
               tag: str) -> list[str]:
    """One LSTM step (PyTorch gate order i, f, g, o)."""
    hprev, cprev = states
    gates = f"{xw} + tf.linalg.matmul({hprev}, {w_hh})" + (f" + {b_hh}" if b_hh else "")
    g = ctx.let(gates, f"{tag}_gates")
    c = ctx.let(f"tf.sigmoid({g}[:, {h}:{2 * h}]) * {cprev} + tf.sigmoid({g}[:, :{h}]) * "
                f"tf.tanh({g}[:, {2 * h}:{3 * h}])", f"{tag}_c")
    return [ctx.let(f"tf.sigmoid({g}[:, {3 * h}:]) * tf.tanh({c})", f"{tag}_h"), c]


def _gru_step(ctx: OpContext, xw: str, states: list[str], w_hh: str, b_hh: str | None, h: int,
              tag: str) -> list[str]:
    """One GRU step (PyTorch gate order r, z, n; the hidden bias of n sits inside the reset product)."""
    hprev = states[0]
    hw = ctx.let(f"tf.linalg.matmul({hprev}, {w_hh})" + (f" + {b_hh}" if b_hh else ""),
                 f"{tag}_hw")
    x = ctx.let(xw, f"{tag}_xw")
    r = ctx.let(f"tf.sigmoid({x}[:, :{h}] + {hw}[:, :{h}])", f"{tag}_r")
    z = ctx.let(f"tf.sigmoid({x}[:, {h}:{2 * h}] + {hw}[:, {h}:{2 * h}])", f"{tag}_z")
    n = ctx.let(f"tf.tanh({x}[:, {2 * h}:] + {r} * {hw}[:, {2 * h}:])", f"{tag}_n")
    return [ctx.let(f"(1.0 - {z}) * {n} + {z} * {hprev}", f"{tag}_h")]


RNN_EMITS = ("MatMul", "AddV2", "Sigmoid", "Tanh", "Mul", "StridedSlice", "Pack", "ConcatV2", "Transpose",
             "Reshape", "Sub")


@converter("aten.lstm.input", layout=LayoutPolicy.SOURCE, emits=RNN_EMITS, check=lambda n: _check(4, n))
def lstm(ctx: OpContext, node: Node) -> list[str]:
    """aten::lstm.input(Tensor input, Tensor[] hx, Tensor[] params, bool has_biases, int num_layers, float dropout,
    bool train, bool bidirectional, bool batch_first) -> (Tensor, Tensor, Tensor)"""
    info = _rnn(node, 4)
    h0, c0 = ctx.ts("hx")
    output, finals = _unroll(ctx, node, info, _lstm_step, lambda k: [f"{h0}[{k}]", f"{c0}[{k}]"])
    return [output, f"tf.stack([{', '.join(s[0] for s in finals)}], 0)",
            f"tf.stack([{', '.join(s[1] for s in finals)}], 0)"]


@converter("aten.gru.input", layout=LayoutPolicy.SOURCE, emits=RNN_EMITS, check=lambda n: _check(3, n))
def gru(ctx: OpContext, node: Node) -> list[str]:
    """aten::gru.input(Tensor input, Tensor hx, Tensor[] params, bool has_biases, int num_layers, float dropout,
    bool train, bool bidirectional, bool batch_first) -> (Tensor, Tensor)"""
    info = _rnn(node, 3)
    h0 = ctx.t("hx")
    output, finals = _unroll(ctx, node, info, _gru_step, lambda k: [f"{h0}[{k}]"])
    return [output, f"tf.stack([{', '.join(s[0] for s in finals)}], 0)"]


# torch.cond lives in its own family module; imported here so it registers with the built-ins
from bridge.native.ops import control  # noqa: E402,F401
