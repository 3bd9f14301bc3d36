"""Recurrent layers over a static length (unrolled), beyond the core cases: LSTM and GRU with 1 or 2 layers,
bidirectional or not, batch first or time major, with or without an initial state, with or without biases. Every
output is compared (the sequence, and the final states folded into it), atol 1e-5 / rtol 1e-4 like every op case,
in TF and in TF.js (Node, wasm). The must-fail twins (wrong gate order, b_hn dropped) are in
tests/test_native_recurrent.py."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from tests.native_op_cases.base import A, OpCase, Rnn


def _all_outputs(kind: str, batch_first: bool) -> Callable[[torch.Tensor, object], torch.Tensor]:
    """The output sequence with every final state folded in, each (layer, direction) weighted differently, so a
    wrong h_n or c_n shows up in the one output compared."""
    def post(y: torch.Tensor, state: object) -> torch.Tensor:
        states = state if kind == "lstm" else (state,)
        extra = 0.0
        for k, s in enumerate(states):  # type: ignore[union-attr]
            weights = torch.arange(1, s.shape[0] + 1, dtype=s.dtype)[:, None, None] * (k + 1)
            extra = extra + (s * weights).sum(0).mean(-1, keepdim=True)
        return y + (extra[:, None] if batch_first else extra[None])
    return post


def _case(kind: str, layers: int, bidirectional: bool, batch_first: bool, state: bool, bias: bool,
          steps: int = 5, batch: int = 2, features: int = 4, hidden: int = 3) -> OpCase:
    cls = nn.LSTM if kind == "lstm" else nn.GRU
    name = "-".join([kind, f"{layers}layer", "bi" if bidirectional else "uni", "bf" if batch_first else "tm",
                     "state" if state else "zeros", "bias" if bias else "nobias"])
    x = (batch, steps, features) if batch_first else (steps, batch, features)
    h = (layers * (2 if bidirectional else 1), batch, hidden)
    shapes = [x] + ([h] * (2 if kind == "lstm" else 1) if state else [])
    return OpCase(f"rnn-{name}", lambda: Rnn(cls(features, hidden, num_layers=layers, bidirectional=bidirectional,
                                                 batch_first=batch_first, bias=bias), _all_outputs(kind, batch_first),
                                             state=(2 if kind == "lstm" else 1) if state else 0),
                  shapes, (A + f"{kind}.input",))


CASES = [
    _case(kind, layers, bi, bf, state, bias)
    for kind in ("lstm", "gru")
    for layers, bi, bf, state, bias in [
        (1, False, True, False, True),
        (1, False, False, True, False),
        (1, True, True, True, True),
        (2, False, True, True, True),
        (2, False, False, False, False),
        (2, True, False, True, True),
        (2, True, True, False, False),
    ]
]
