"""A multi-layer perceptron on flat feature vectors."""

import torch
from torch import nn


class MLP(nn.Module):
    """Three linear layers with GELU and a softmax over classes."""

    def __init__(self, in_features: int = 32, hidden: int = 64, classes: int = 5) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.Tanh(),
                                 nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=-1)
