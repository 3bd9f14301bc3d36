"""Small PyTorch models more than one test module converts."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class TutorialLinear(nn.Module):
    """The seed tutorial's model: y = sum(a * x, 1) + b with learnable slopes a of shape [2] and intercept b [1]."""

    def __init__(self, a: Sequence[float] = (0.7, -1.3), b: float = 0.25) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(list(a)))
        self.b = nn.Parameter(torch.tensor([b]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sum(self.a * x, 1) + self.b
