"""The fixed benchmark models, defined here with seeded random weights (no downloads, no torchvision).

Each entry of MODELS builds a module in eval mode and gives its input specs, so benchmarks and slow tests convert
exactly the same networks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with batch norm and a shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
    """ResNet-18 layout (11.7 M parameters at 1000 classes)."""

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        widths, blocks, cin = (64, 128, 256, 512), [], 64
        for i, width in enumerate(widths):
            blocks += [BasicBlock(cin, width, 1 if i == 0 else 2), BasicBlock(width, width, 1)]
            cin = width
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(512, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 project, residual when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                   nn.ReLU6(), nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 layout (3.5 M parameters at 1000 classes)."""

    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6()]
        cin = 32
        for expand, cout, repeats, stride in self.SETTINGS:
            for i in range(repeats):
                layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
                cin = cout
        layers += [nn.Conv2d(cin, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


class TransformerEncoder(nn.Module):
    """4 layers, hidden 256, 4 heads, token ids and an attention mask (1 = attend, 0 = padding)."""

    def __init__(self, vocab: int = 1000, hidden: int = 256, heads: int = 4, layers: int = 4, seq: int = 128) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.position = nn.Parameter(torch.randn(1, seq, hidden) * 0.02)
        layer = nn.TransformerEncoderLayer(hidden, heads, hidden * 4, dropout=0.0, activation="gelu",
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(hidden, 2)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids) + self.position[:, : ids.shape[1]]
        x = self.encoder(x, src_key_padding_mask=mask == 0)
        return self.head(x[:, 0])


class LSTMClassifier(nn.Module):
    """Embedding, a 2-layer LSTM, a linear head on the last step."""

    def __init__(self, vocab: int = 1000, embed: int = 64, hidden: int = 128, classes: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(ids))
        return self.head(out[:, -1])


class GRUClassifier(nn.Module):
    """Embedding, a 2-layer GRU, a linear head on the last step (LSTMClassifier's layout with a GRU)."""

    def __init__(self, vocab: int = 1000, embed: int = 64, hidden: int = 128, classes: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.gru = nn.GRU(embed, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(self.embed(ids))
        return self.head(out[:, -1])


class UNet(nn.Module):
    """A small U-Net: two down steps, transposed-conv up steps, skip concatenations."""

    def __init__(self, cin: int = 3, classes: int = 2, width: int = 16) -> None:
        super().__init__()
        self.d1, self.d2 = self._block(cin, width), self._block(width, width * 2)
        self.mid = self._block(width * 2, width * 4)
        self.u2 = nn.ConvTranspose2d(width * 4, width * 2, 2, 2)
        self.c2 = self._block(width * 4, width * 2)
        self.u1 = nn.ConvTranspose2d(width * 2, width, 2, 2)
        self.c1 = self._block(width * 2, width)
        self.out = nn.Conv2d(width, classes, 1)

    @staticmethod
    def _block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                             nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = self.d1(x)
        s2 = self.d2(nn.functional.max_pool2d(s1, 2))
        m = self.mid(nn.functional.max_pool2d(s2, 2))
        y = self.c2(torch.cat([self.u2(m), s2], 1))
        return self.out(self.c1(torch.cat([self.u1(y), s1], 1)))


# ---------------------------------------------------------------------------------------------------- issue 17
# Model classes where onnxruntime-web was ahead, at realistic sizes: transformers' modeling code built from configs
# (never from_pretrained: nothing downloads), and the zoo's hand-written networks scaled up. The wrappers come from
# benchmarks/zoo_models.py (imported lazily: it imports this module).

BERT_VOCAB = 30522  # bert-base-uncased's vocabulary, as the 6-layer x 384 sentence encoders (MiniLM-L6) keep it


def sentence_encoder() -> nn.Module:
    """A 6-layer x 384 sentence encoder (all-MiniLM-L6-v2's shape: 12 heads, intermediate 1536; 22.7 M
    parameters): transformers' BertModel, last_hidden_state."""
    from transformers import BertConfig, BertModel

    from benchmarks.zoo_models import TextModel

    config = BertConfig(vocab_size=BERT_VOCAB, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                        intermediate_size=1536, max_position_embeddings=512)
    return TextModel(BertModel(config, add_pooling_layer=False))


def vit_tiny() -> nn.Module:
    """ViT-tiny (DeiT-tiny's shape: 12 layers x 192, 3 heads, intermediate 768, patch 16 at 224x224; 5.5 M
    parameters): transformers' ViTModel, last_hidden_state."""
    from transformers import ViTConfig, ViTModel

    from benchmarks.zoo_models import PixelModel

    config = ViTConfig(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768,
                       patch_size=16, image_size=224)
    return PixelModel(ViTModel(config, add_pooling_layer=False))


def speech_encoder() -> nn.Module:
    """Whisper-tiny's encoder (4 layers x 384, 6 heads, ffn 1536, 80 mel bins, 3000 frames -> 1500 positions;
    8.2 M parameters): transformers' WhisperEncoder, last_hidden_state."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from benchmarks.zoo_models import FeaturesModel

    config = WhisperConfig(d_model=384, encoder_layers=4, encoder_attention_heads=6, encoder_ffn_dim=1536,
                           num_mel_bins=80, max_source_positions=1500)
    return FeaturesModel(WhisperEncoder(config))


def pixel_shuffle_sr() -> nn.Module:
    """ESPCN at its paper's widths (64, 32), 3x: the zoo's PixelShuffleSR scaled up."""
    from benchmarks.zoo_models import PixelShuffleSR

    return PixelShuffleSR(scale=3, widths=(64, 32))


def convtranspose_gan() -> nn.Module:
    """DCGAN-style generator, latent 100, 512 -> 256 -> 128 -> 3 channels up to 32x32: the zoo's generator."""
    from benchmarks.zoo_models import ConvTransposeGenerator

    return ConvTransposeGenerator(latent=100, width=512)


def depthwise_prelu() -> nn.Module:
    """Depthwise-separable convs with PReLU at width 32 on 224x224: the zoo's DepthwisePReLU scaled up."""
    from benchmarks.zoo_models import DepthwisePReLU

    return DepthwisePReLU(width=32, classes=8)


@dataclass(frozen=True)
class BenchModel:
    """A benchmark model: how to build it and its input specs (bridge --input syntax).

    `cnn`: one of the CNNs of the original targets (native vs ONNX conversion speed, no Transpose with NHWC input).
    `family`: the model class a latency target holds to a ratio TF.js wasm / onnxruntime-web wasm
    (run.LATENCY_LIMITS: "cnn", "sentence_encoder", "vit", "speech_encoder", "recurrent"); "" for none.
    `heavy`: too slow for the plain-JavaScript backends: its TF.js cpu and webgl runs are skipped.
    `long_run`: seconds a run: timed with the plan's fewer `long_warmup` + `long_repeats` runs."""

    name: str
    build: Callable[[], nn.Module]
    inputs: tuple[str, ...]
    cnn: bool = False
    family: str = ""
    heavy: bool = False
    long_run: bool = False


def seeded(factory: Callable[[], nn.Module], seed: int = 0) -> Callable[[], nn.Module]:
    """Wrap a factory so the weights are the same on every run, batch norms get non-trivial statistics, and the
    module is in eval mode."""

    def build() -> nn.Module:
        torch.manual_seed(seed)
        module = factory()
        with torch.no_grad():
            for m in module.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.1, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.1, 0.1)
        return module.eval()

    return build


MODELS = {
    "mobilenet_v2": BenchModel("mobilenet_v2", seeded(MobileNetV2), ("x:1x3x224x224",), cnn=True, family="cnn"),
    "resnet18": BenchModel("resnet18", seeded(ResNet18), ("x:1x3x224x224",), cnn=True, family="cnn"),
    "transformer": BenchModel("transformer", seeded(TransformerEncoder),
                              ("ids:1x128:int64:0..999", "mask:1x128:int64:1..1")),
    "lstm": BenchModel("lstm", seeded(LSTMClassifier), ("ids:1x64:int64:0..999",), family="recurrent"),
    "unet": BenchModel("unet", seeded(UNet), ("x:1x3x128x128",), cnn=True, family="cnn"),
    # issue 17: the model classes where onnxruntime-web was ahead
    "sentence_encoder": BenchModel("sentence_encoder", seeded(sentence_encoder),
                                   (f"input_ids:1x128:int64:0..{BERT_VOCAB - 1}", "attention_mask:1x128:int64:1..1"),
                                   family="sentence_encoder", heavy=True),
    "vit_tiny": BenchModel("vit_tiny", seeded(vit_tiny), ("pixel_values:1x3x224x224",), family="vit", heavy=True),
    "speech_encoder": BenchModel("speech_encoder", seeded(speech_encoder), ("input_features:1x80x3000",),
                                 family="speech_encoder", heavy=True, long_run=True),
    "gru": BenchModel("gru", seeded(GRUClassifier), ("ids:1x64:int64:0..999",), family="recurrent"),
    # convolutional kinds with no latency target of their own (issue 17 holds "the CNNs where it already is")
    "pixel_shuffle_sr": BenchModel("pixel_shuffle_sr", seeded(pixel_shuffle_sr), ("x:1x3x128x128",)),
    "convtranspose_gan": BenchModel("convtranspose_gan", seeded(convtranspose_gan), ("z:1x100",)),
    "depthwise_prelu": BenchModel("depthwise_prelu", seeded(depthwise_prelu), ("x:1x3x224x224",)),
}
