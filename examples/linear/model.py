"""The linear model from the tutorial bridge grew from: y = sum(a * x, axis=1) + b, two slopes and one intercept."""

import torch
from torch import nn


class LinearModel(nn.Module):
    """y = sum(a * x, 1) + b with learnable a (shape [2]) and b (shape [1])."""

    def __init__(self, a: tuple[float, float] = (0.5, -1.5), b: float = 0.25) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a, dtype=torch.float32))
        self.b = nn.Parameter(torch.tensor([b], dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sum(self.a * x, dim=1) + self.b
