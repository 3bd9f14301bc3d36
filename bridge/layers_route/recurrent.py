"""LSTM and GRU.

LSTM: PyTorch's cell is Keras' (gates i, f, g, o in both; sigmoid / tanh), so each layer becomes a stock TF.js
``LSTM`` (recurrent_activation written as sigmoid: TF.js defaults to hard_sigmoid). Keras keeps one bias, the sum
of PyTorch's bias_ih and bias_hh; both PyTorch biases receive the same gradient, so a training step moves each by
what TF.js moves the sum (the link is `shared_delta`), and weights coming back keep bias_hh and put the rest into
bias_ih.

GRU: PyTorch computes ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``: the reset gate multiplies the recurrent
*product* (Keras' ``reset_after=True``). tfjs-layers 4.22's GRU implements only ``reset_after=False``
(``r * h`` before the product), which is a different function, so a GRU becomes bridge's template custom layer
``BridgeGRU``: PyTorch's formula, Keras' GRU weight layout (kernel [in, 3H], recurrent_kernel [H, 3H], bias
[2, 3H], gates z, r, h), PyTorch's four tensors kept apart so training matches exactly.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from bridge.layers_route.builder import (
    KT,
    Builder,
    Refused,
    Stack,
    module_emitter,
    plain,
)
from bridge.layers_route.emit_modules import trainable


def _sequence_input(ctx: Builder, module: nn.RNNBase, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    """The input sequence as a Keras (batch, time, features) tensor; refuses initial states and options Keras
    lacks."""
    name = type(module).__name__
    if (len(args) > 1 and args[1] is not None) or kwargs.get("hx") is not None:
        raise Refused(name, "an initial state argument (Keras layers start from zeros here)")
    if module.bidirectional:
        raise Refused(name, "bidirectional=True (not converted yet: use two modules, one on the flipped input)")
    if getattr(module, "proj_size", 0):
        raise Refused(name, "proj_size (LSTM with projections has no Keras counterpart)")
    x = plain(ctx.tensor_arg(args[0]))
    if x.rank != 3:
        raise Refused(name, "an unbatched (2-D) input")
    return ctx.permute(x, (0, 1, 2) if module.batch_first else (1, 0, 2), f"{ctx.path}_input")


def _stack(module: nn.RNNBase, ctx: Builder, x: KT, layer: Any) -> tuple[KT, list[list[KT]]]:
    """Run `layer(ctx, l, seq)` for each layer with PyTorch's inter-layer dropout; returns the last sequence and
    the per-layer states."""
    seq, states = x, []
    for index in range(module.num_layers):
        if index > 0 and module.dropout > 0:
            seq = ctx.add1("Dropout", {"rate": float(module.dropout)}, [seq], seq.torch_shape, seq.perm,
                           hint=f"{ctx.path}_dropout_l{index}")
        seq, *state = layer(index, seq)
        states.append(state)
    return seq, states


@module_emitter(nn.LSTM)
def lstm(ctx: Builder, module: nn.LSTM, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """LSTM -> one Keras LSTM per layer (return_sequences and return_state)."""
    x = _sequence_input(ctx, module, args, kwargs)
    out_shape = ctx.out_shape(0)
    state_shape = ctx.out_shape(1, 0)[1:]
    hidden = module.hidden_size

    def layer(index: int, seq: KT) -> list[KT]:
        key = f"{ctx.path}#l{index}"
        config = {"units": hidden, "return_sequences": True, "return_state": True, "activation": "tanh",
                  "recurrent_activation": "sigmoid", "use_bias": module.bias, "unit_forget_bias": False}
        seq_shape = (*out_shape[:2], hidden)
        outs = ctx.add("LSTM", config, [seq], [(seq_shape, seq.perm, "float32", None),
                                               (state_shape, (0, 1), "float32", None),
                                               (state_shape, (0, 1), "float32", None)],
                       hint=ctx.path if module.num_layers == 1 else f"{ctx.path}_l{index}", shared=key,
                       trainable=trainable(module))
        spec = ctx.layers[-1]
        if spec.shared_with is None:
            ctx.link([f"weight_ih_l{index}"], ["kernel"], "lstm_kernel_to_keras", layer=spec.name)
            ctx.link([f"weight_hh_l{index}"], ["recurrent_kernel"], "lstm_kernel_to_keras", layer=spec.name)
            if module.bias:
                ctx.link([f"bias_ih_l{index}", f"bias_hh_l{index}"], ["bias"], "lstm_bias_to_keras",
                         layer=spec.name, shared_delta=True)
        return outs

    seq, states = _stack(module, ctx, x, layer)
    h = Stack(tuple(s[0] for s in states))
    c = Stack(tuple(s[1] for s in states))
    return KT(seq.id, seq.perm, out_shape, seq.dtype), (h, c)


@module_emitter(nn.GRU)
def gru(ctx: Builder, module: nn.GRU, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """GRU -> one BridgeGRU (template custom layer, PyTorch's formula) per layer."""
    x = _sequence_input(ctx, module, args, kwargs)
    out_shape = ctx.out_shape(0)
    state_shape = ctx.out_shape(1)[1:]
    hidden = module.hidden_size

    def layer(index: int, seq: KT) -> list[KT]:
        key = f"{ctx.path}#l{index}"
        seq_shape = (*out_shape[:2], hidden)
        config = {"units": hidden, "use_bias": module.bias}
        outs = ctx.add("BridgeGRU", config, [seq], [(seq_shape, seq.perm, "float32", None),
                                                     (state_shape, (0, 1), "float32", None)],
                       hint=ctx.path if module.num_layers == 1 else f"{ctx.path}_l{index}", shared=key,
                       template="gru", trainable=trainable(module))
        spec = ctx.layers[-1]
        if spec.shared_with is None:
            ctx.link([f"weight_ih_l{index}"], ["kernel"], "gru_kernel_to_keras", layer=spec.name)
            ctx.link([f"weight_hh_l{index}"], ["recurrent_kernel"], "gru_kernel_to_keras", layer=spec.name)
            if module.bias:
                ctx.link([f"bias_ih_l{index}", f"bias_hh_l{index}"], ["bias"], "gru_bias_to_keras", layer=spec.name)
        return outs

    seq, states = _stack(module, ctx, x, layer)
    return KT(seq.id, seq.perm, out_shape, seq.dtype), Stack(tuple(s[0] for s in states))
