"""Recurrent layers: lstm and gru (stacked, bidirectional, batch_first). A static sequence length is unrolled
over the time steps into plain MatMul/Sigmoid/Tanh lines (the fastest form in TF.js, whose graph executor costs
~10 us per op: the unrolled code is written for the fewest ops per step); a dynamic one becomes a tf.while_loop
over a generated step method, whose outputs are written into a TensorArray (lowered by the TF.js writer to v1
control flow, which TF.js runs with executeAsync).

Unrolled, per layer: the input projection of every step is one MatMul before the loop with the biases folded in
(LSTM: b_ih + b_hh; GRU: the same for r and z, n keeps b_hn inside r * (W_hn h + b_hn)); its rows come from a
few Splits and Unpacks, never a slice per step; each step is one MatMul of h for all gates (a GRU: one for r, z
and one for n), one Split of the gates, one Sigmoid over LSTM's i, f, o (gates stored in the order i, f, o, g) or
GRU's r, z; the outputs are stacked once. Stacked unidirectional layers run as one flat wavefront
(`_wavefront`): T + L - 1 steps, every layer's state side by side in one row, one MatMul per step by a block
weight and elementwise lines that serve every layer at once: 11 ops a step for any number of layers. The block
weight is zero where a layer's state does not feed a layer (4 (L - 1)^2 blocks of H x H for an LSTM,
4 L^2 - 6 L + 3 for a GRU); the TF.js writer stores it without those blocks (bridge/tfjs/zero_blocks.py); the two directions of a bidirectional layer share one loop
(`_both_directions`). Weights are stored transposed to [in, gates] ("in_out"): never `transpose_b=True`, which
TF.js 4.22's wasm backend computes wrongly once fused with a bias."""

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
        hidden = [_gru_hidden(ctx, node, info, k) for k in ks]
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
            states = [_gru_cell(ctx, f"{x_rz} + {h_rz}", x_n, h_n, states[0], h, stag)]
        seen.append(states)
    forward = ctx.let(f"tf.stack([{', '.join(s[0] for s in seen)}], 0)[:, :, 0]", f"{tag}_forward")
    backward = ctx.let(f"tf.stack([{', '.join(s[0] for s in reversed(seen))}], 0)[:, :, 1]", f"{tag}_backward")
    out = ctx.let(f"tf.concat([{forward}, {backward}], -1)", f"{tag}_out")
    finals = [[ctx.let(f"{state}[:, {d}]", f"{tag}_final{i}_d{d}") for i, state in enumerate(seen[-1])]
              for d in range(2)]
    return out, finals


def _gru_hidden(ctx: OpContext, node: Node, info: _Rnn, k: int) -> tuple[str, str | None]:
    """Params group `k`'s GRU hidden weight for all three gates [H, 3H] and its bias: zero for r and z (their
    hidden biases are folded into the input projection), b_hn for n."""
    params = node.args["params"][k * info.per_direction:(k + 1) * info.per_direction]
    h = info.hidden
    w = _in_out(ctx, params[1], "in_out", lambda a: a)
    if info.per_direction == 2:
        return w, None
    b = ctx.transformed(params[3], "gru_hidden_bias",
                        lambda b_hh: np.concatenate([np.zeros(2 * h, b_hh.dtype), gru_hn_bias(b_hh)]),
                        lambda e: _no_runtime_weights(node))
    return w, b


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


def _gru_cell(ctx: OpContext, rz_in: str, x_n: str, h_n: str, hprev: str, h: int, tag: str) -> str:
    """The GRU update from the pre-activation of r and z (`rz_in`, input and hidden parts summed) and the n gate's
    input part x_n and hidden part h_n = W_hn h + b_hn: r and z from one Sigmoid; n = tanh(x_n + r * h_n);
    h' = n + z * (h - n), which is (1 - z) * n + z * h."""
    rz = ctx.let(f"tf.sigmoid({rz_in})", f"{tag}_rz")
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
    return [_gru_cell(ctx, f"{xw[0]} + tf.linalg.matmul({hprev}, {wts.w_hh})", xw[1], f"({hn})", hprev, h, tag)]


# -- stacked unidirectional layers over a static length: one flat wavefront

# Column groups of the flat layout, each [L][H] (layer l's block of group k at columns (k L + l) H): LSTM gates
# i, f, o, g; GRU r, z, the n gate's input part (W_in x + b_in) and its hidden part (W_hn h + b_hn).
LSTM_GROUPS = 4
GRU_GROUPS = 4
_GRU_INPUT_GROUPS = (0, 1, 2)  # where the r, z, n rows of a GRU input weight go
_GRU_HIDDEN_GROUPS = (0, 1, 3)  # where the r, z, n rows of a GRU hidden weight go


def _group_cols(layers: int, h: int, group: int, layer: int) -> slice:
    start = (group * layers + layer) * h
    return slice(start, start + h)


def flat_block_weight(info: _Rnn, arrays: list[np.ndarray]) -> np.ndarray:
    """The flat wavefront's hidden weight [L H, 4 L H] from PyTorch's params (per layer w_ih, w_hh[, b_ih, b_hh]):
    layer l's rows hold its own hidden weights in its blocks and layer l + 1's input weights in that layer's, so
    one MatMul of the layers' states side by side gives every layer's gates; the other blocks are zero (a layer's
    state feeds only itself and the layer above)."""
    layers, h, per, lstm_kind = info.layers, info.hidden, info.per_direction, info.gates == 4
    w = np.zeros((layers * h, 4 * layers * h), arrays[0].dtype)
    for layer in range(layers):
        rows = slice(layer * h, (layer + 1) * h)
        sources = [(arrays[layer * per + 1], layer, False)]
        if layer + 1 < layers:
            sources.append((arrays[(layer + 1) * per], layer + 1, True))
        for weight, target, is_input in sources:
            if lstm_kind:
                blocks, groups = linear_to_in_out(lstm_ifog(weight)), range(4)
            else:
                blocks, groups = linear_to_in_out(weight), _GRU_INPUT_GROUPS if is_input else _GRU_HIDDEN_GROUPS
            for k, group in enumerate(groups):
                w[rows, _group_cols(layers, h, group, target)] = blocks[:, k * h:(k + 1) * h]
    return w


def flat_bias(info: _Rnn, arrays: list[np.ndarray]) -> np.ndarray:
    """The flat wavefront's bias [4 L H]: per layer, LSTM: b_ih + b_hh of every gate; GRU: b_ir + b_hr, b_iz + b_hz,
    b_in (input part of n) and b_hn (hidden part, inside the reset product)."""
    layers, h, per = info.layers, info.hidden, info.per_direction
    bias = np.zeros(4 * layers * h, arrays[0].dtype)
    for layer in range(layers):
        b_ih, b_hh = arrays[layer * per + 2], arrays[layer * per + 3]
        if info.gates == 4:
            parts = np.split(lstm_bias(b_ih, b_hh), 4)
        else:
            parts = [*np.split(gru_input_bias(b_ih, b_hh), 3), gru_hn_bias(b_hh)]
        for group, part in enumerate(parts):
            bias[_group_cols(layers, h, group, layer)] = part
    return bias


def _no_runtime_weights(node: Node) -> str:
    from bridge.errors import ConversionError
    raise ConversionError(f"{node.target}: recurrent weights must be parameters, not computed tensors",
                          stage="rebuild-tf", details=[node.where()], hint="try the ONNX route")


def _wave(node: Node, info: _Rnn) -> bool:
    """Whether the layers run as one wavefront: a static length, one direction, more than one layer, weights
    that are parameters (they are stored as one block weight)."""
    return (info.steps is not None and info.directions == 1 and info.layers > 1
            and all(v.is_weight for v in node.args["params"]))


def _flat_projection(ctx: OpContext, node: Node, info: _Rnn) -> str:
    """Layer 0's input projection of every step in the flat layout, [T, B, 4 L H], every layer's bias included:
    one MatMul by layer 0's own input weights, padded with zeros into the other layers' blocks at run time (a
    Pad of the product, not zeros stored in a weight)."""
    params, h, layers = node.args["params"], info.hidden, info.layers
    if info.gates == 4:
        w_ih = _in_out(ctx, params[0], "lstm_ifog_in_out", lstm_ifog)
        groups = 4
        pad = "[[0, 0], [0, 0], [0, {rest}], [0, 0]]"
    else:
        w_ih = _in_out(ctx, params[0], "in_out", lambda a: a)
        groups = 3
        pad = "[[0, 0], [0, 1], [0, {rest}], [0, 0]]"  # the n gate's hidden group gets nothing from x
    x = _time_major(ctx, info)
    product = f"tf.linalg.matmul(tf.reshape({x}, [-1, {info.features}]), {w_ih})"
    padded = f"tf.pad(tf.reshape({product}, [-1, {groups}, 1, {h}]), {pad.format(rest=layers - 1)})"
    flat = f"tf.reshape({padded}, {ctx.shape_list([info.length, info.batch, 4 * layers * h])})"
    if info.per_direction == 4:
        bias = ctx.combined(params, f"{'lstm' if info.gates == 4 else 'gru'}_flat_bias",
                            lambda *a: flat_bias(info, list(a)), lambda *a: _no_runtime_weights(node))
        flat = f"{flat} + {bias}"
    return ctx.let(flat, "flat_xw")


def _wavefront(ctx: OpContext, node: Node, info: _Rnn, states0: list[str]) -> tuple[str, list[list[str]]]:
    """Every layer of a unidirectional stack in one unrolled loop over T + L - 1 diagonal steps: at step d, layer
    l computes time d - l from the states of step d - 1. The layers' states sit side by side in one row, [B, L H],
    and each step is one MatMul of that row by the block weight (`flat_block_weight`) plus the step's row of the
    projection: the gates of every layer at once, grouped so that one set of elementwise lines serves every layer
    and yields the next step's MatMul input as it is (no Unpack, Concat or Reshape per step). Layers that have
    not started keep their initial state (the first L - 1 steps); those done only compute values nothing reads.
    Returns the top layer's time-major output and each layer's final states. `states0`: [L, B, H] each."""
    assert info.steps is not None
    steps, layers, h = info.steps, info.layers, info.hidden
    width = layers * h
    w_block = ctx.combined(node.args["params"], f"{'lstm' if info.gates == 4 else 'gru'}_flat_block",
                           lambda *a: flat_block_weight(info, list(a)), lambda *a: _no_runtime_weights(node))
    rows = _rows(ctx, _flat_projection(ctx, node, info), steps, "flat_rows")
    start = [ctx.let(f"tf.reshape(tf.transpose({s}, [1, 0, 2]), {ctx.shape_list([info.batch, width])})",
                     f"flat_init{i}") for i, s in enumerate(states0)]
    states = start
    seen: list[list[str]] = []
    for d in range(steps + layers - 1):
        tag = f"d{d}"
        gates = ctx.let(f"tf.linalg.matmul({states[0]}, {w_block}) + {rows[min(d, steps - 1)]}", f"{tag}_gates")
        if info.gates == 4:
            new = _lstm_cell(ctx, gates, states[1], width, tag)
        else:
            rz, xn, hn = _cols(ctx, gates, [2 * width, width, width], f"{tag}_parts")
            new = [_gru_cell(ctx, rz, xn, hn, states[0], width, tag)]
        if d < layers - 1:  # layers above d have not started: they keep their initial state
            cut = (d + 1) * h
            new = [ctx.let(f"tf.concat([{n}[:, :{cut}], {s}[:, {cut}:]], 1)", f"{tag}_kept{i}")
                   for i, (n, s) in enumerate(zip(new, start))]
        states = new
        seen.append(states)
    top = ctx.let(f"tf.stack([{', '.join(s[0] for s in seen[layers - 1:])}], 0)[:, :, {(layers - 1) * h}:]",
                  "wave_out")
    finals = [[ctx.let(f"{state}[:, {layer * h}:{(layer + 1) * h}]", f"wave_final{i}_l{layer}")
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
