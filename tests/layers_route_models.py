"""The layers-route model table: small PyTorch networks covering the layer kinds a trainable TF.js layers model
holds (convolutions with BatchNorm, Dense/LayerNorm, Embedding + LSTM, GRU, a transformer encoder, a custom
module), each with example inputs and a target batch for the train-step check."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class Case:
    """A table entry: the module factory, its example inputs (PyTorch layout), the batch's targets (class indices
    for cross entropy, else a regression target), learning rates per optimizer, and where it runs."""

    name: str
    make: Callable[[], nn.Module]
    inputs: Callable[[torch.Generator], list[torch.Tensor]]
    target: Callable[[torch.Generator], torch.Tensor]
    lr: dict[str, float] = field(default_factory=lambda: {"sgd": 0.1, "adam": 1e-3})
    dynamic_axes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    browser: bool = False


class CnnClassifier(nn.Module):
    """Conv/BatchNorm/ReLU/pool blocks, a flatten of the NHWC map into a Linear (its rows permuted), dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.BatchNorm2d(12, momentum=0.3), nn.LeakyReLU(0.1),
            nn.Conv2d(12, 12, 3, padding=1, groups=12), nn.ReLU6())
        self.drop = nn.Dropout(0.25)
        self.fc = nn.Linear(12 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(torch.flatten(self.features(x), 1)))


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(10, 32), nn.GELU(), nn.LayerNorm(32), nn.Dropout(0.1), nn.Linear(32, 16),
                                 nn.Tanh(), nn.BatchNorm1d(16), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TextLstm(nn.Module):
    """Embedding -> 2-layer LSTM -> the last layer's final hidden state -> Linear (a text classifier)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 12)
        self.lstm = nn.LSTM(12, 16, num_layers=2, batch_first=True, dropout=0.1)
        self.head = nn.Linear(16, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(self.embed(ids))
        return self.head(h[-1])


class GruRegressor(nn.Module):
    """GRU over a float sequence (time-major, batch_first=False), the last step's output -> Linear (MSE)."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(6, 10, batch_first=False)
        self.out = nn.Linear(10, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq, _ = self.gru(x.transpose(0, 1))
        return self.out(seq[-1])


class TinyTransformer(nn.Module):
    """Embedding + a post-norm TransformerEncoderLayer (attention decomposed into layers) + mean pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(40, 16)
        self.encoder = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.1, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(ids)).mean(dim=1))


class RMSNorm(nn.Module):
    """No TF.js layer computes this: it becomes one generated custom layer holding its trainable weight."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class ScaledSwish(nn.Module):
    """A buffer (non-trainable) and elementwise math: another custom layer."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("scale", torch.linspace(0.5, 1.5, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x * self.scale) - 0.1 * x.abs()


class CustomPart(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 24)
        self.norm = RMSNorm(24)
        self.act = ScaledSwish(24)
        self.fc2 = nn.Linear(24, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.norm(self.fc1(x))))


class TinyUNet(nn.Module):
    """An image-to-image net: its output stays an NHWC map. Covers AvgPool2d, ConvTranspose2d, nearest Upsample,
    torch.cat on channels, PReLU and AdaptiveAvgPool2d (a squeeze-excitation gate, broadcast-multiplied)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.PReLU(8))
        self.pool = nn.AvgPool2d(2)
        self.mid = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose2d(8, 8, 3, stride=2, padding=1, output_padding=1)
        self.skip = nn.Upsample(scale_factor=2, mode="nearest")
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, 8, 1), nn.Sigmoid())
        self.head = nn.Conv2d(24, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.down(x)
        p = self.pool(d)
        m = self.mid(p)
        g = m * self.gate(m)
        return self.head(torch.cat([d, self.up(g), self.skip(p)], dim=1))


class SeqConv(nn.Module):
    """Conv1d over a (batch, channels, length) signal (explicit padding: a custom pad step), MaxPool1d, global
    pooling, and a Softmax output: cross entropy then uses the probabilities as they are."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(6, 8, 3, padding=1)
        self.conv2 = nn.Conv1d(8, 8, 3, padding=2)
        self.pool = nn.MaxPool1d(2)
        self.gap = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(8, 3)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(torch.relu(self.conv1(x)))
        h = torch.relu(self.conv2(h))
        return self.softmax(self.fc(self.gap(h).flatten(1)))


def _randn(*shape: int) -> Callable[[torch.Generator], list[torch.Tensor]]:
    return lambda g: [torch.randn(*shape, generator=g)]


def _ids(high: int, *shape: int) -> Callable[[torch.Generator], list[torch.Tensor]]:
    return lambda g: [torch.randint(0, high, shape, generator=g)]


def _classes(n: int, batch: int) -> Callable[[torch.Generator], torch.Tensor]:
    return lambda g: torch.randint(0, n, (batch,), generator=g)


def _regression(*shape: int) -> Callable[[torch.Generator], torch.Tensor]:
    return lambda g: torch.randn(*shape, generator=g)


def _with_bn_stats(make: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    """Non-trivial BatchNorm statistics and affine weights, so inference actually uses them."""
    def build() -> nn.Module:
        module = make()
        g = torch.Generator().manual_seed(1)
        for sub in module.modules():
            if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                sub.running_mean.copy_(torch.rand(sub.num_features, generator=g) - 0.5)
                sub.running_var.copy_(torch.rand(sub.num_features, generator=g) + 0.5)
                sub.weight.data.copy_(torch.rand(sub.num_features, generator=g) + 0.5)
                sub.bias.data.copy_(torch.rand(sub.num_features, generator=g) - 0.5)
        return module
    return build


MODELS: list[Case] = [
    Case("cnn_bn", _with_bn_stats(CnnClassifier), _randn(6, 3, 16, 16), _classes(5, 6), browser=True),
    Case("mlp", _with_bn_stats(Mlp), _randn(8, 10), _classes(3, 8), browser=True),
    Case("lstm_text", TextLstm, _ids(50, 5, 7), _classes(4, 5)),
    Case("gru", GruRegressor, _randn(4, 9, 6), _regression(4, 2)),
    Case("transformer", TinyTransformer, _ids(40, 3, 6), _classes(3, 3)),
    Case("custom_part", CustomPart, _randn(6, 8), _regression(6, 4), browser=True),
    Case("unet", _with_bn_stats(TinyUNet), _randn(3, 3, 8, 8), _regression(3, 4, 8, 8)),
    Case("seq_conv", SeqConv, _randn(5, 6, 12), _classes(3, 5)),
]
