"""Recurrent layers: lstm and gru (stacked, bidirectional, batch_first). A static sequence length is unrolled
over the time steps into plain MatMul/Sigmoid/Tanh lines (the fastest form in TF.js, whose graph executor costs
~10 us per op: the unrolled code is written for the fewest ops per step); a dynamic one becomes a tf.while_loop
over a generated step method, whose outputs are written into a TensorArray (lowered by the TF.js writer to v1
control flow, which TF.js runs with executeAsync).

Unrolled, per layer: the input projection of every step is one MatMul before the loop with the biases folded in
(LSTM: b_ih + b_hh; GRU: the same for r and z, n keeps b_hn inside r * (W_hn h + b_hn)); its rows come from a
few Splits and Unpacks, never a slice per step; each step is one MatMul of h for all gates (a GRU: one for r, z
and one for n), one Split of the gates, one Sigmoid over LSTM's i, f, o (gates stored in the order i, f, o, g) or
GRU's r, z; the outputs are stacked once. Stacked unidirectional layers run as one wavefront (`_wavefront`):
T + L - 1 steps whose elementwise lines serve every layer at once; the two directions of a bidirectional layer
share one loop the same way (`_both_directions`). Weights are stored transposed to [in, gates]
("in_out"): never `transpose_b=True`, which TF.js 4.22's wasm backend computes wrongly once fused with a bias."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

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


# -- weights: gate rows reordered, stored [in, gates] ("in_out"), biases folded where that is exact

def lstm_ifog(w: np.ndarray) -> np.ndarray:
    """LSTM gate blocks (axis 0) from PyTorch's order i, f, g, o to i, f, o, g: the three sigmoid gates first."""
    i, f, g, o = np.split(w, 4, axis=0)
    return np.concatenate([i, f, o, g], axis=0)


def lstm_bias(b_ih: np.ndarray, b_hh: np.ndarray) -> np.ndarray:
    """Both LSTM biases as one (every gate is a plain sum of the two), gates ordered i, f, o, g."""
    return lstm_ifog(b_ih + b_hh)


def gru_input_bias(b_ih: np.ndarray, b_hh: np.ndarray) -> np.ndarray:
    """The GRU input projection's bias: b_ih plus the hidden bias of r and z (plain sums); n keeps only b_in, its
    hidden bias b_hn sits inside the reset product r * (W_hn h + b_hn)."""
    h = b_ih.shape[0] // 3
    return b_ih + np.concatenate([b_hh[:2 * h], np.zeros(h, b_hh.dtype)])


def gru_hn_bias(b_hh: np.ndarray) -> np.ndarray:
    """b_hn, the part of the GRU hidden bias added inside the reset product."""
    return b_hh[2 * (b_hh.shape[0] // 3):]


@dataclass(frozen=True)
class _Weights:
    """One (layer, direction)'s weights as TF expressions: the input projection (all gates, biases folded) and
    the hidden ones (LSTM: one [H, 4H]; GRU: r,z [H, 2H] and n [H, H] with b_hn)."""

    w_ih: str
    b_ih: str | None
    w_hh: str
    w_hn: str | None = None
    b_hn: str | None = None


def _tf_ifog(expr: str, h: int) -> str:
    """lstm_ifog in TF, for weights computed at run time (gate blocks on axis 0)."""
    return f"tf.concat([{expr}[:{2 * h}], {expr}[{3 * h}:], {expr}[{2 * h}:{3 * h}]], 0)"


def _in_out(ctx: OpContext, v: Value, variant: str, fn: Callable[[np.ndarray], np.ndarray],
            tf_fn: Callable[[str], str] = lambda e: e) -> str:
    """A weight matrix transformed by `fn` and stored [in, out]; `tf_fn` does `fn` in TF when it is computed."""
    return ctx.transformed(v, variant, lambda a: linear_to_in_out(fn(a)), lambda e: f"tf.transpose({tf_fn(e)})")


def _lstm_weights(ctx: OpContext, values: list[Value], h: int) -> _Weights:
    w_ih, w_hh = (_in_out(ctx, v, "lstm_ifog_in_out", lstm_ifog, lambda e: _tf_ifog(e, h)) for v in values[:2])
    bias = None
    if len(values) == 4:
        bias = ctx.combined(values[2:], "lstm_bias_sum_ifog", lstm_bias, lambda a, b: _tf_ifog(f"({a} + {b})", h))
    return _Weights(w_ih, bias, w_hh)


def _gru_weights(ctx: OpContext, values: list[Value], h: int) -> _Weights:
    w_ih = _in_out(ctx, values[0], "in_out", lambda a: a)
    w_hz = _in_out(ctx, values[1], "rz_in_out", lambda a: a[:2 * h], lambda e: f"{e}[:{2 * h}]")
    w_hn = _in_out(ctx, values[1], "n_in_out", lambda a: a[2 * h:], lambda e: f"{e}[{2 * h}:]")
    bias = b_hn = None
    if len(values) == 4:
        bias = ctx.combined(values[2:], "gru_input_bias", gru_input_bias,
                            lambda a, b: f"{a} + tf.concat([{b}[:{2 * h}], tf.zeros([{h}], {b}.dtype)], 0)")
        b_hn = ctx.transformed(values[3], "hn", gru_hn_bias, lambda e: f"{e}[{2 * h}:]")
    return _Weights(w_ih, bias, w_hz, w_hn, b_hn)


def _layer_weights(ctx: OpContext, node: Node, info: _Rnn) -> list[_Weights]:
    params = node.args["params"]
    groups = []
    for k in range(info.layers * info.directions):
        chunk = params[k * info.per_direction:(k + 1) * info.per_direction]
        groups.append((_lstm_weights if info.gates == 4 else _gru_weights)(ctx, chunk, info.hidden))
    return groups


def _projection(ctx: OpContext, x: str, width: int, wts: _Weights, info: _Rnn, tag: str,
                split: bool = True) -> list[str]:
    """The input projection of every step at once, time-major: LSTM [[T, B, 4H]]; GRU [[T, B, 2H], [T, B, H]]
    (the r,z part and the n part, split once here rather than per step; `split=False`: [[T, B, 3H]])."""
    flat = f"tf.linalg.matmul(tf.reshape({x}, [-1, {width}]), {wts.w_ih})"
    flat = f"{flat} + {wts.b_ih}" if wts.b_ih else flat
    proj = ctx.let(f"tf.reshape({flat}, {ctx.shape_list([info.length, info.batch, info.gate_width])})", f"{tag}_xw")
    if info.gates == 4 or not split:
        return [proj]
    parts = ctx.let(f"tf.split({proj}, [{2 * info.hidden}, {info.hidden}], -1)", f"{tag}_xw_parts")
    return [f"{parts}[0]", f"{parts}[1]"]


StepFn = Callable[[OpContext, list[str], list[str], _Weights, int, str], list[str]]


def _unroll(ctx: OpContext, node: Node, info: _Rnn, step_fn: StepFn, states0: list[str]) -> tuple[str, list[list[str]]]:
    """Run every layer and direction; returns the last layer's time-major output and each (layer, direction)'s
    final states. `states0`: the initial states, [L * D, B, H] each."""
    x, width = _time_major(ctx, info), info.features
    finals: list[list[str]] = []
    groups = _layer_weights(ctx, node, info)
    merged = (info.steps is not None and info.directions == 2 and all(v.is_weight for v in node.args["params"]))
    for layer in range(info.layers):
        if merged:
            x, states = _both_directions(ctx, node, info, x, width, layer, groups, states0)
            finals += states
            width = 2 * info.hidden
            continue
        outs = []
        for direction in range(info.directions):
            k = layer * info.directions + direction
            tag = f"l{layer}" + ("_reverse" if direction else "")
            proj = _projection(ctx, x, width, groups[k], info, tag)
            run = _steps if info.steps is not None else _loop
            out, states = run(ctx, info, step_fn, proj, [f"{s}[{k}]" for s in states0], groups[k], tag,
                              bool(direction))
            outs.append(out)
            finals.append(states)
        x = outs[0] if len(outs) == 1 else ctx.let(f"tf.concat([{', '.join(outs)}], -1)", f"l{layer}_out")
        width = info.hidden * info.directions
    output = f"tf.transpose({x}, [1, 0, 2])" if info.batch_first else x
    return output, finals


def _both_directions(ctx: OpContext, node: Node, info: _Rnn, x: str, width: int, layer: int,
                     groups: list[_Weights], states0: list[str]) -> tuple[str, list[list[str]]]:
    """Both directions of one layer in one unrolled loop: at step s the forward direction computes time s and the
    reverse one time T - 1 - s, their states side by side [B, 2, H] so one set of elementwise lines serves both
    (per step: one MatMul per direction, one Concat and one Reshape). Returns ([T, B, 2H], final states per
    direction)."""
    assert info.steps is not None
    steps, h, g, tag = info.steps, info.hidden, info.gate_width, f"l{layer}"
    lstm_kind = info.gates == 4
    ks = [2 * layer, 2 * layer + 1]
    rows = []
    for d, k in enumerate(ks):
        proj = _projection(ctx, x, width, groups[k], info, tag + ("_reverse" if d else ""), split=False)[0]
        rows.append(_rows(ctx, proj, steps, f"{tag}_rows{d}"))
    if lstm_kind:
        hidden = [(groups[k].w_hh, None) for k in ks]
    else:
        hidden = [_wave_weights(ctx, node, info, k, chained=False) for k in ks]
    states = [ctx.let(f"tf.transpose({s}[{ks[0]}:{ks[1] + 1}], [1, 0, 2])", f"{tag}_init{i}")
              for i, s in enumerate(states0)]
    seen: list[list[str]] = []
    for step in range(steps):
        stag = f"{tag}_s{step}"
        hs = ctx.let(f"tf.unstack({states[0]}, num=2, axis=1)", f"{stag}_hs")
        products = [f"tf.linalg.matmul({hs}[{d}], {w})" + (f" + {b}" if b else "") for d, (w, b) in enumerate(hidden)]
        here = [rows[0][step], rows[1][steps - 1 - step]]
        if lstm_kind:
            gates = ctx.let(f"tf.reshape(tf.concat([{here[0]} + {products[0]}, {here[1]} + {products[1]}], 1), "
                            f"{ctx.shape_list([info.batch, 2, g])})", f"{stag}_gates")
            states = _lstm_cell(ctx, gates, states[1], h, stag)
        else:
            bank = ctx.let(f"tf.reshape(tf.concat([{here[0]}, {products[0]}, {here[1]}, {products[1]}], 1), "
                           f"{ctx.shape_list([info.batch, 2, 2 * g])})", f"{stag}_bank")
            x_rz, x_n, h_rz, h_n = _cols(ctx, bank, [2 * h, h, 2 * h, h], f"{stag}_parts")
            states = [_gru_cell(ctx, x_rz, x_n, h_rz, h_n, states[0], h, stag)]
        seen.append(states)
    forward = ctx.let(f"tf.stack([{', '.join(s[0] for s in seen)}], 0)[:, :, 0]", f"{tag}_forward")
    backward = ctx.let(f"tf.stack([{', '.join(s[0] for s in reversed(seen))}], 0)[:, :, 1]", f"{tag}_backward")
    out = ctx.let(f"tf.concat([{forward}, {backward}], -1)", f"{tag}_out")
    finals = [[ctx.let(f"{state}[:, {d}]", f"{tag}_final{i}_d{d}") for i, state in enumerate(seen[-1])]
              for d in range(2)]
    return out, finals


def _steps(ctx: OpContext, info: _Rnn, step_fn: StepFn, proj: list[str], states: list[str], wts: _Weights,
           tag: str, reverse: bool) -> tuple[str, list[str]]:
    """One direction of one layer, unrolled: the projection's rows taken apart once (one Unpack), then a block of
    lines per time step, the hidden states stacked once at the end. Returns ([T, B, H], final states)."""
    assert info.steps is not None
    rows = [_rows(ctx, p, info.steps, f"{tag}_rows{i}") for i, p in enumerate(proj)]
    hs: list[str] = [""] * info.steps
    for t in (range(info.steps - 1, -1, -1) if reverse else range(info.steps)):
        states = step_fn(ctx, [r[t] for r in rows], states, wts, info.hidden, f"{tag}_t{t}")
        hs[t] = states[0]
    return ctx.let(f"tf.stack([{', '.join(hs)}], 0)", f"{tag}_out"), states


def _rows(ctx: OpContext, proj: str, steps: int, tag: str) -> list[str]:
    """The T rows [B, G] of a time-major [T, B, G] tensor, in about 2 sqrt(T) ops: a Split into chunks of
    ~sqrt(T) steps, one Unpack per chunk. (TF.js wasm copies a tensor's whole input for every slice it takes:
    one Unpack of all T rows copies the projection T times, a StridedSlice or Gather per step is one more op per
    step; measured slower both.)"""
    if steps < 16:
        rows = ctx.let(f"tf.unstack({proj}, num={steps})", tag)
        return [f"{rows}[{t}]" for t in range(steps)]
    size = round(steps ** 0.5)
    sizes = [min(size, steps - at) for at in range(0, steps, size)]
    chunks = ctx.let(f"tf.split({proj}, {sizes}, 0)", f"{tag}_chunks")
    out = []
    for k, n in enumerate(sizes):
        part = ctx.let(f"tf.unstack({chunks}[{k}], num={n})", f"{tag}_{k}")
        out += [f"{part}[{t}]" for t in range(n)]
    return out


def _loop(ctx: OpContext, info: _Rnn, step_fn: StepFn, proj: list[str], states: list[str], wts: _Weights,
          tag: str, reverse: bool) -> tuple[str, list[str]]:
    """One direction of one layer over a dynamic number of steps: a tf.while_loop calling a generated step
    method, which writes each step's hidden state into a TensorArray. Returns ([T, B, H], final states)."""
    count, parts = len(states), len(proj)
    steps = ctx.let(f"tf.shape({proj[0]})[0]", f"{tag}_steps")

    def body(params: list[str]) -> list[str]:
        xws, (n, t), rest = params[:parts], params[parts:parts + 2], params[parts + 2:]
        carried, outputs = rest[:count], rest[count]
        at = ctx.let(f"{n} - 1 - {t}", f"{tag}_at") if reverse else t
        new = step_fn(ctx, [f"tf.gather({xw}, {at})" for xw in xws], carried, wts, info.hidden, tag)
        return [f"{t} + 1", *new, f"{outputs}.write({at}, {new[0]})"]

    names = ["state_h", "state_c"][:count]
    layer = tag[1:].split("_")[0]
    doc = f"One time step of layer {layer}{', reverse direction' if reverse else ''} (dynamic sequence length)."
    step = ctx.method(f"{tag}_step", [*(f"xw{i}" for i in range(parts)), "steps", "t", *names, "outputs"], doc,
                      body)
    loop_vars = ", ".join(f"v{i}" for i in range(count + 2))
    ta = f"tf.TensorArray({proj[0]}.dtype, size={steps}, element_shape=[None, {info.hidden}])"
    loop = ctx.let(f"tf.while_loop(lambda {loop_vars}: v0 < {steps}, lambda {loop_vars}: "
                   f"{step}({', '.join(proj)}, {steps}, {loop_vars}), [tf.constant(0), {', '.join(states)}, {ta}])",
                   f"{tag}_loop")
    finals = [ctx.let(f"{loop}[{i + 1}]", f"{tag}_final{i}") for i in range(count)]
    return ctx.let(f"{loop}[{count + 1}].stack()", f"{tag}_out"), finals


def _cols(ctx: OpContext, x: str, sizes: list[int], tag: str) -> list[str]:
    """Column groups of a [..., sum(sizes)] tensor, with one Split."""
    parts = ctx.let(f"tf.split({x}, {sizes}, -1)", tag)
    return [f"{parts}[{i}]" for i in range(len(sizes))]


def _lstm_cell(ctx: OpContext, g: str, cprev: str, h: int, tag: str) -> list[str]:
    """The LSTM update from the gate pre-activations `g` [..., 4H] (ordered i, f, o, g): one Sigmoid over i, f, o
    (the three split apart after it), one Tanh for g. Returns [h, c]."""
    ifo, cand = _cols(ctx, g, [3 * h, h], f"{tag}_parts")
    i, f, o = _cols(ctx, ctx.let(f"tf.sigmoid({ifo})", f"{tag}_ifo"), [h, h, h], f"{tag}_ifo_parts")
    c = ctx.let(f"{f} * {cprev} + {i} * tf.tanh({cand})", f"{tag}_c")
    return [ctx.let(f"{o} * tf.tanh({c})", f"{tag}_h"), c]


def _gru_cell(ctx: OpContext, x_rz: str, x_n: str, h_rz: str, h_n: str, hprev: str, h: int, tag: str) -> str:
    """The GRU update from its input parts (x_rz, x_n) and hidden parts (h_rz; h_n = W_hn h + b_hn): r and z from
    one Sigmoid; n = tanh(x_n + r * h_n); h' = n + z * (h - n), which is (1 - z) * n + z * h."""
    rz = ctx.let(f"tf.sigmoid({x_rz} + {h_rz})", f"{tag}_rz")
    r, z = _cols(ctx, rz, [h, h], f"{tag}_rz_parts")
    n = ctx.let(f"tf.tanh({x_n} + {r} * {h_n})", f"{tag}_n")
    return ctx.let(f"{n} + {z} * ({hprev} - {n})", f"{tag}_h")


def _lstm_step(ctx: OpContext, xw: list[str], states: list[str], wts: _Weights, h: int, tag: str) -> list[str]:
    """One LSTM step: one MatMul for every gate of h, added to this step's row of the input projection."""
    hprev, cprev = states
    g = ctx.let(f"{xw[0]} + tf.linalg.matmul({hprev}, {wts.w_hh})", f"{tag}_gates")
    return _lstm_cell(ctx, g, cprev, h, tag)


def _gru_step(ctx: OpContext, xw: list[str], states: list[str], wts: _Weights, h: int, tag: str) -> list[str]:
    """One GRU step: a MatMul for r,z and one for n (with b_hn) of h; the input parts are the projection's rows."""
    hprev = states[0]
    hn = f"tf.linalg.matmul({hprev}, {wts.w_hn})" + (f" + {wts.b_hn}" if wts.b_hn else "")
    return [_gru_cell(ctx, xw[0], xw[1], f"tf.linalg.matmul({hprev}, {wts.w_hh})", f"({hn})", hprev, h, tag)]


# -- stacked unidirectional layers over a static length: one wavefront

def _wave_weights(ctx: OpContext, node: Node, info: _Rnn, layer: int, chained: bool = True) -> tuple[str, str | None]:
    """The weight (and bias) layer `layer`'s hidden state is multiplied by in one wavefront step: its own hidden
    weights, then (below the top layer) the next layer's input weights, side by side [H, 2G] (no zero blocks):
    h_l @ [W_hh_l | W_ih_l+1]. Biases: the next layer's input bias (both its biases folded as in its own
    projection) and, for a GRU, b_hn of this layer in the n columns of the hidden part. `chained=False`: the
    hidden part only, of params group `layer` (a (layer, direction) index)."""
    params, per, h, gates = node.args["params"], info.per_direction, info.hidden, info.gates
    mine = params[layer * per:(layer + 1) * per]
    above = params[(layer + 1) * per:(layer + 2) * per] if chained and layer + 1 < info.layers else []
    order = lstm_ifog if gates == 4 else (lambda a: a)

    def hidden_part(b_hh: np.ndarray) -> np.ndarray:  # the bias of the hidden part: GRU's b_hn in the n columns
        return (np.zeros(4 * h, b_hh.dtype) if gates == 4
                else np.concatenate([np.zeros(2 * h, b_hh.dtype), gru_hn_bias(b_hh)]))
    input_bias = lstm_bias if gates == 4 else gru_input_bias
    kind = "lstm" if gates == 4 else "gru"
    if above:
        w = ctx.combined([mine[1], above[0]], f"{kind}_wave_hh_ih_next",
                         lambda w_hh, w_ih: np.concatenate([linear_to_in_out(order(w_hh)),
                                                            linear_to_in_out(order(w_ih))], 1),
                         lambda a, b: _no_runtime_weights(node))
    else:
        w = ctx.combined([mine[1]], f"{kind}_wave_hh", lambda w_hh: linear_to_in_out(order(w_hh)),
                         lambda a: _no_runtime_weights(node))
    if per == 2 or (not above and gates == 4):
        return w, None
    if above:
        b = ctx.combined([mine[3], above[2], above[3]], f"{kind}_wave_bias_next",
                         lambda b_hh, b_ih, b_hh_next: np.concatenate([hidden_part(b_hh),
                                                                       input_bias(b_ih, b_hh_next)]),
                         lambda *a: _no_runtime_weights(node))
    else:
        b = ctx.combined([mine[3]], f"{kind}_wave_bias", hidden_part, lambda a: _no_runtime_weights(node))
    return w, b


def _concat(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else f"tf.concat([{', '.join(parts)}], 1)"


def _no_runtime_weights(node: Node) -> str:
    from bridge.errors import ConversionError
    raise ConversionError(f"{node.target}: recurrent weights must be parameters, not computed tensors",
                          stage="rebuild-tf", details=[node.where()], hint="try the ONNX route")


def _wave(node: Node, info: _Rnn) -> bool:
    """Whether the layers run as one wavefront: a static length, one direction, more than one layer, weights
    that are parameters (they are stored side by side)."""
    return (info.steps is not None and info.directions == 1 and info.layers > 1
            and all(v.is_weight for v in node.args["params"]))


def _wavefront(ctx: OpContext, node: Node, info: _Rnn, states0: list[str]) -> tuple[str, list[list[str]]]:
    """Every layer of a unidirectional stack in one unrolled loop over T + L - 1 diagonal steps: at step d,
    layer l computes time d - l, reading its own state and the state layer l - 1 left at step d - 1. The layers'
    states sit side by side, [B, L, H], so one set of Sigmoid/Tanh/Mul lines serves every layer: per step, one
    MatMul per layer (h_l @ [W_hh_l | W_ih_l+1]), one Concat of [x_t, those products] and one Reshape give each
    layer its input and hidden parts, [B, L, 2G]. Layers that have not started keep their initial state (the
    first L - 1 steps); those done only compute values nothing reads. Returns the top layer's time-major output
    and each layer's final states. `states0`: the initial states, [L, B, H] each."""
    assert info.steps is not None
    steps, layers, h, g = info.steps, info.layers, info.hidden, info.gate_width
    lstm_kind = info.gates == 4
    x = _time_major(ctx, info)
    params = node.args["params"][:info.per_direction]
    first = (_lstm_weights if lstm_kind else _gru_weights)(ctx, params, h)
    flat = f"tf.linalg.matmul(tf.reshape({x}, [-1, {info.features}]), {first.w_ih})"
    flat = f"{flat} + {first.b_ih}" if first.b_ih else flat
    proj = ctx.let(f"tf.reshape({flat}, {ctx.shape_list([info.length, info.batch, g])})", "l0_xw")
    rows = _rows(ctx, proj, steps, "l0_rows")
    weights = [_wave_weights(ctx, node, info, layer) for layer in range(layers)]
    start = [ctx.let(f"tf.transpose({s}, [1, 0, 2])", f"wave_init{i}") for i, s in enumerate(states0)]
    states, bank_shape = start, ctx.shape_list([info.batch, layers, 2 * g])
    seen: list[str] = []
    for d in range(steps + layers - 1):
        tag = f"d{d}"
        hs = ctx.let(f"tf.unstack({states[0]}, num={layers}, axis=1)", f"{tag}_hs")
        products = []
        for layer, (w, b) in enumerate(weights):
            product = f"tf.linalg.matmul({hs}[{layer}], {w})"
            products.append(f"{product} + {b}" if b else product)
        row = rows[min(d, steps - 1)]
        if lstm_kind:  # layer l's product covers gate columns [l G, (l + 2) G) of the row of every layer's
            # gates: the even products tile it, so do the step's input row and the odd ones; their sum is the gates
            evens, odds = products[0::2], [row] + products[1::2]
            shape = ctx.shape_list([info.batch, layers, g])
            gates = ctx.let(f"tf.reshape({_concat(evens)} + {_concat(odds)}, {shape})", f"{tag}_gates")
            new = _lstm_cell(ctx, gates, states[1], h, tag)
        else:  # per layer [x_rz, x_n | h_rz, h_n]: the input and hidden parts (n needs them apart)
            bank = ctx.let(f"tf.reshape(tf.concat([{row}, {', '.join(products)}], 1), {bank_shape})",
                           f"{tag}_bank")
            x_rz, x_n, h_rz, h_n = _cols(ctx, bank, [2 * h, h, 2 * h, h], f"{tag}_parts")
            new = [_gru_cell(ctx, x_rz, x_n, h_rz, h_n, states[0], h, tag)]
        if d < layers - 1:  # layers above d have not started: they keep their initial state
            new = [ctx.let(f"tf.concat([{n}[:, :{d + 1}], {s}[:, {d + 1}:]], 1)", f"{tag}_kept{i}")
                   for i, (n, s) in enumerate(zip(new, start))]
        states = new
        seen.append(states)
    top = ctx.let(f"tf.stack([{', '.join(s[0] for s in seen[layers - 1:])}], 0)[:, :, {layers - 1}]", "wave_out")
    finals = [[ctx.let(f"{state}[:, {layer}]", f"wave_final{i}_l{layer}")
               for i, state in enumerate(seen[layer + steps - 1])] for layer in range(layers)]
    output = f"tf.transpose({top}, [1, 0, 2])" if info.batch_first else top
    return output, finals


RNN_EMITS = ("MatMul", "AddV2", "Sigmoid", "Tanh", "Mul", "Sub", "SplitV", "Unpack", "Pack", "ConcatV2",
             "StridedSlice", "Transpose", "Reshape")


@converter("aten.lstm.input", layout=LayoutPolicy.SOURCE, emits=RNN_EMITS, check=lambda n: _check(4, n))
def lstm(ctx: OpContext, node: Node) -> list[str]:
    """aten::lstm.input(Tensor input, Tensor[] hx, Tensor[] params, bool has_biases, int num_layers, float dropout,
    bool train, bool bidirectional, bool batch_first) -> (Tensor, Tensor, Tensor)"""
    info = _rnn(node, 4)
    h0, c0 = ctx.ts("hx")
    if _wave(node, info):
        output, finals = _wavefront(ctx, node, info, [h0, c0])
    else:
        output, finals = _unroll(ctx, node, info, _lstm_step, [h0, c0])
    return [output, f"tf.stack([{', '.join(s[0] for s in finals)}], 0)",
            f"tf.stack([{', '.join(s[1] for s in finals)}], 0)"]


@converter("aten.gru.input", layout=LayoutPolicy.SOURCE, emits=RNN_EMITS, check=lambda n: _check(3, n))
def gru(ctx: OpContext, node: Node) -> list[str]:
    """aten::gru.input(Tensor input, Tensor hx, Tensor[] params, bool has_biases, int num_layers, float dropout,
    bool train, bool bidirectional, bool batch_first) -> (Tensor, Tensor)"""
    info = _rnn(node, 3)
    h0 = ctx.t("hx")
    if _wave(node, info):
        output, finals = _wavefront(ctx, node, info, [h0])
    else:
        output, finals = _unroll(ctx, node, info, _gru_step, [h0])
    return [output, f"tf.stack([{', '.join(s[0] for s in finals)}], 0)"]


# torch.cond lives in its own family module; imported here so it registers with the built-ins
from bridge.native.ops import control  # noqa: E402,F401
