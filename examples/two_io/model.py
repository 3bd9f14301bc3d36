"""A model with two inputs (an image and a feature vector) and two outputs (class scores and a regression value)."""

import torch
from torch import nn


class TwoInTwoOut(nn.Module):
    """Image branch + vector branch, joined; returns (scores, value)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.vec = nn.Linear(6, 8)
        self.scores = nn.Linear(16, 4)
        self.value = nn.Linear(16, 1)

    def forward(self, image: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        joined = torch.cat([torch.flatten(self.conv(image), 1), torch.relu(self.vec(features))], dim=1)
        return self.scores(joined), torch.sigmoid(self.value(joined))
