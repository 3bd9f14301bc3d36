"""What every native op case is made of: the OpCase record and the small wrapper modules the cases use. Case
tables live beside this file, one module per op family, each exporting CASES (collected by __init__)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn

ATOL, RTOL = 1e-5, 1e-4


class Fn(nn.Module):
    """A module wrapping a function of its inputs (for ops without a layer)."""

    def __init__(self, fn: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.fn(*xs)


class WithParam(nn.Module):
    """fn(x, p) with a learnable parameter p of the given shape (broadcasting against weights)."""

    def __init__(self, shape: tuple[int, ...], fn: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.randn(shape))
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x, self.p)


class Rnn(nn.Module):
    """A recurrent layer (a real submodule, so eval() reaches it) and what is done with its outputs; `state` says
    how many initial-state inputs follow x (0: default zeros, 1: GRU's h0, 2: LSTM's (h0, c0))."""

    def __init__(self, rnn: nn.Module, post: Callable[..., torch.Tensor] = lambda y, *_: y, state: int = 0) -> None:
        super().__init__()
        self.rnn, self.post, self.state = rnn, post, state

    def forward(self, x: torch.Tensor, *states: torch.Tensor) -> torch.Tensor:
        hx = None if not states else states[0] if self.state == 1 else tuple(states)
        return self.post(*self.rnn(x, hx))


def bn(channels: int, kind: type[nn.Module] = nn.BatchNorm2d) -> nn.Module:
    """A batch norm with non-trivial running statistics and affine parameters."""
    layer = kind(channels)
    with torch.no_grad():
        layer.running_mean.uniform_(-1, 1)
        layer.running_var.uniform_(0.5, 2.0)
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_(-0.5, 0.5)
    return layer


@dataclass
class OpCase:
    """One op case: the module to rebuild, its input shapes, the ATen targets it must exercise."""

    id: str
    make: Callable[[], nn.Module]
    shapes: list[tuple[int, ...]]
    covers: tuple[str, ...]
    layouts: dict[str, str] = field(default_factory=dict)
    ints: tuple[int, ...] = ()  # input positions holding int64 indices (values < 4)
    atol: float = ATOL
    rtol: float = RTOL
    max_transposes: int | None = None
    tfjs_atol: float | None = None  # TF.js's own kernels, when they round differently from TF's (say why)
    dynamic: dict[str, dict[int, str]] = field(default_factory=dict)  # input name -> {axis: dim name} kept symbolic


A = "aten."
IMG = (2, 4, 8, 8)
