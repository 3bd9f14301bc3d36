"""The model zoo's table: real architectures nobody on the project wrote, built small with seeded random weights.

Most entries are modeling code from `transformers` (built from small configs, never `from_pretrained`: nothing is
downloaded), wrapped so forward takes tensors and returns a tensor or a dict of tensors; the rest are hand-written
networks of common kinds (squeeze-excitation, depthwise + PReLU, pixel shuffle, a transposed-conv generator, a
spatial transformer, average pooling with ceil_mode / count_include_pad=False).

Each `ZooModel` has a static input variant and, where the model allows, a dynamic one (`?` dimensions), and per
variant the outcome the project expects: by default the native route with every stage passing; a model the
project knows it cannot take says what happens instead (falls back to the ONNX route, or fails a stage) and why,
so `tests/test_model_zoo.py` notices a regression as well as a fix. `benchmarks/model_zoo.py` runs the table.

Builders import transformers lazily, so reading the table (names, inputs, expectations) is cheap.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.models import seeded

VOCAB = 100  # token ids are drawn from 0..VOCAB-1
IDS = f"int64:0..{VOCAB - 1}"
MASK = "int64:0..1"  # random padding masks: 0 = padding, so the mask changes the numbers
TEXT_STATIC = (f"input_ids:2x16:{IDS}", f"attention_mask:2x16:{MASK}")
TEXT_DYNAMIC = (f"input_ids:?x?:{IDS}", f"attention_mask:?x?:{MASK}")
IDS_STATIC = (f"input_ids:2x16:{IDS}",)
IDS_DYNAMIC = (f"input_ids:?x?:{IDS}",)
MAX_POSITIONS = 256  # the default dynamic lengths go up to 128 (+2 for RoBERTa-style position offsets)
# --dynamic-sizes for image sides: traced at a typical size (64: every stage of a 32x-downsampling net is more
# than 1 pixel, so torch.export specializes no axis to 1), then an odd and a larger size
IMAGE_SIZES = ("64,47,96",)
# Models whose code branches on a size (Swin's window padding guards h % 2 == 0; MobileNetV2's TF-style padding
# turns sizes into Python ints, frozen for the example; torch.export bounds MobileNetV2's and ConvNeXt's side to
# >= 64): sides that are
# multiples of 32 from 64 up keep every branch the example took, which is what the captured program holds for (an
# odd side is refused by name at capture)
EVEN_IMAGE_SIZES = ("64,96,128",)
# Random weights at transformers' default scale (0.02) leave some heads' outputs near 1e-3 or below, where an
# absolute tolerance of 1e-4 checks little: these models get a larger one, so their outputs are of order 0.1-10.
WIDE_INIT = 0.1


# ---------------------------------------------------------------------------------------------------- the table

@dataclass(frozen=True)
class Expect:
    """The outcome the project expects of one variant.

    `route`: the route the conversion ends on ("native", or "onnx" when the native route is known to fail; then
    `native_reason` is a substring of the native failure). `failing`: stages known to fail or be inaccurate
    (empty: every stage passes). `error`: the typed error class when the conversion is known to raise.
    `why`: the reason, in words, for anything but a clean native pass."""

    route: str | None = "native"
    native_reason: str = ""
    failing: tuple[str, ...] = ()
    error: str = ""
    why: str = ""

    @property
    def clean(self) -> bool:
        """True when the expectation is a native conversion with every stage passing."""
        return self.route == "native" and not self.failing and not self.error


PASS = Expect()
# TF.js WebGPU on SwiftShader (this machine's only adapter) loses its device on the GQA decoders' graphs:
# "mapAsync ... A valid external Instance reference no longer exists" (WebGL and wasm pass)
WEBGPU_DEVICE_LOST = Expect(failing=("browser-webgpu",),
                            why="TF.js WebGPU on SwiftShader loses its device on this graph (WebGL, wasm pass)")


@dataclass(frozen=True)
class Variant:
    """One way to feed a model: its input specs (bridge --input syntax), --dynamic-sizes, and what to expect."""

    inputs: tuple[str, ...]
    dynamic_sizes: tuple[str, ...] = ()
    expect: Expect = PASS


@dataclass(frozen=True)
class ZooModel:
    """A model of the zoo: its name, family, where its code comes from, its builder and its input variants."""

    name: str
    family: str
    source: str
    build: Callable[[], nn.Module]
    variants: Mapping[str, Variant] = field(default_factory=dict)

    def variant(self, name: str) -> Variant:
        """The variant called `name` ("static" or "dynamic")."""
        return self.variants[name]


def _model(name: str, family: str, source: str, factory: Callable[[], nn.Module], static: Sequence[str],
           dynamic: Sequence[str] | None = None, *, static_expect: Expect = PASS, dynamic_expect: Expect = PASS,
           dynamic_sizes: Sequence[str] = ()) -> ZooModel:
    variants = {"static": Variant(tuple(static), expect=static_expect)}
    if dynamic is not None:
        variants["dynamic"] = Variant(tuple(dynamic), tuple(dynamic_sizes), dynamic_expect)
    return ZooModel(name, family, source, seeded(factory), variants)


# ---------------------------------------------------------------------------------------------------- wrappers

def _pick(output: Any, fields: Sequence[str]) -> torch.Tensor | dict[str, torch.Tensor]:
    """The named fields of a transformers output: one tensor for one field, else a dict in the given order."""
    if len(fields) == 1:
        return getattr(output, fields[0])
    return {name: getattr(output, name) for name in fields}


class TextModel(nn.Module):
    """`model(input_ids=..., attention_mask=...)`, returning the chosen output fields."""

    def __init__(self, model: nn.Module, fields: Sequence[str] = ("last_hidden_state",)) -> None:
        super().__init__()
        self.model, self.fields = model, tuple(fields)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        return _pick(self.model(input_ids=input_ids, attention_mask=attention_mask), self.fields)


class IdsModel(nn.Module):
    """`model(input_ids=...)` (a causal decoder over one unpadded prompt), returning the chosen output fields."""

    def __init__(self, model: nn.Module, fields: Sequence[str] = ("logits",)) -> None:
        super().__init__()
        self.model, self.fields = model, tuple(fields)

    def forward(self, input_ids: torch.Tensor) -> Any:
        return _pick(self.model(input_ids=input_ids), self.fields)


class PixelModel(nn.Module):
    """`model(pixel_values=..., **keywords)`, returning the chosen output fields."""

    def __init__(self, model: nn.Module, fields: Sequence[str] = ("last_hidden_state",), **keywords: Any) -> None:
        super().__init__()
        self.model, self.fields, self.keywords = model, tuple(fields), keywords

    def forward(self, pixel_values: torch.Tensor) -> Any:
        return _pick(self.model(pixel_values=pixel_values, **self.keywords), self.fields)


class AudioModel(nn.Module):
    """`model(input_values=...)` over a raw waveform, returning the chosen output fields."""

    def __init__(self, model: nn.Module, fields: Sequence[str] = ("last_hidden_state",)) -> None:
        super().__init__()
        self.model, self.fields = model, tuple(fields)

    def forward(self, input_values: torch.Tensor) -> Any:
        return _pick(self.model(input_values=input_values), self.fields)


class FeaturesModel(nn.Module):
    """`model(input_features=...)` over log-mel features (Whisper's encoder)."""

    def __init__(self, model: nn.Module, fields: Sequence[str] = ("last_hidden_state",)) -> None:
        super().__init__()
        self.model, self.fields = model, tuple(fields)

    def forward(self, input_features: torch.Tensor) -> Any:
        return _pick(self.model(input_features=input_features), self.fields)


# ---------------------------------------------------------------------------------------------------- text encoders

SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def bert() -> nn.Module:
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=VOCAB, max_position_embeddings=MAX_POSITIONS, **SMALL)
    return TextModel(BertModel(config), ("last_hidden_state", "pooler_output"))


def distilbert() -> nn.Module:
    from transformers import DistilBertConfig, DistilBertModel

    config = DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                              max_position_embeddings=MAX_POSITIONS)
    return TextModel(DistilBertModel(config))


def roberta() -> nn.Module:
    from transformers import RobertaConfig, RobertaModel

    config = RobertaConfig(vocab_size=VOCAB, max_position_embeddings=MAX_POSITIONS + 2, **SMALL)
    return TextModel(RobertaModel(config), ("last_hidden_state", "pooler_output"))


def albert() -> nn.Module:
    from transformers import AlbertConfig, AlbertModel

    config = AlbertConfig(vocab_size=VOCAB, embedding_size=16, max_position_embeddings=MAX_POSITIONS, **SMALL)
    return TextModel(AlbertModel(config), ("last_hidden_state", "pooler_output"))


def electra() -> nn.Module:
    from transformers import ElectraConfig, ElectraForSequenceClassification

    config = ElectraConfig(vocab_size=VOCAB, embedding_size=16, max_position_embeddings=MAX_POSITIONS,
                           num_labels=3, initializer_range=WIDE_INIT, **SMALL)
    return TextModel(ElectraForSequenceClassification(config), ("logits",))


def deberta_v2() -> nn.Module:
    from transformers import DebertaV2Config, DebertaV2Model

    config = DebertaV2Config(vocab_size=VOCAB, max_position_embeddings=MAX_POSITIONS, relative_attention=True,
                             position_buckets=16, max_relative_positions=-1, pos_att_type=["p2c", "c2p"],
                             position_biased_input=False, **SMALL)
    return TextModel(DebertaV2Model(config))


def mpnet() -> nn.Module:
    from transformers import MPNetConfig, MPNetModel

    config = MPNetConfig(vocab_size=VOCAB, max_position_embeddings=MAX_POSITIONS + 2, **SMALL)
    return TextModel(MPNetModel(config), ("last_hidden_state", "pooler_output"))


def t5_encoder() -> nn.Module:
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=VOCAB, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
                      relative_attention_num_buckets=8, relative_attention_max_distance=32)
    return TextModel(T5EncoderModel(config))


def bart_encoder() -> nn.Module:
    from transformers import BartConfig, BartModel

    config = BartConfig(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                        max_position_embeddings=MAX_POSITIONS)
    return TextModel(BartModel(config).get_encoder())


def marian_encoder() -> nn.Module:
    from transformers import MarianConfig, MarianMTModel

    config = MarianConfig(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=1,
                          encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                          decoder_ffn_dim=64, max_position_embeddings=MAX_POSITIONS, pad_token_id=VOCAB - 1,
                          decoder_start_token_id=VOCAB - 1)
    return TextModel(MarianMTModel(config).get_encoder())


# ---------------------------------------------------------------------------------------------------- decoders

def gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=MAX_POSITIONS,
                        bos_token_id=0, eos_token_id=0)
    return IdsModel(GPT2LMHeadModel(config))


def gpt2_masked() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=MAX_POSITIONS,
                        bos_token_id=0, eos_token_id=0)
    return TextModel(GPT2LMHeadModel(config), ("logits",))


def gpt_neo() -> nn.Module:
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    config = GPTNeoConfig(vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                          attention_types=[[["global", "local"], 1]], window_size=8,
                          max_position_embeddings=MAX_POSITIONS, bos_token_id=0, eos_token_id=0)
    return IdsModel(GPTNeoForCausalLM(config))


def opt() -> nn.Module:
    from transformers import OPTConfig, OPTForCausalLM

    config = OPTConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, ffn_dim=64,
                       word_embed_proj_dim=32, max_position_embeddings=MAX_POSITIONS, pad_token_id=1,
                       bos_token_id=0, eos_token_id=0)
    return IdsModel(OPTForCausalLM(config))


def bloom() -> nn.Module:
    from transformers import BloomConfig, BloomForCausalLM

    config = BloomConfig(vocab_size=VOCAB, hidden_size=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)
    return IdsModel(BloomForCausalLM(config))


def _llama_sizes() -> dict[str, Any]:
    return {"vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": MAX_POSITIONS,
            "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": None}


def llama() -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    return IdsModel(LlamaForCausalLM(LlamaConfig(**_llama_sizes())))


def qwen2() -> nn.Module:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    return IdsModel(Qwen2ForCausalLM(Qwen2Config(**_llama_sizes())))


def mistral() -> nn.Module:
    from transformers import MistralConfig, MistralForCausalLM

    return IdsModel(MistralForCausalLM(MistralConfig(sliding_window=8, **_llama_sizes())))


# ---------------------------------------------------------------------------------------------------- vision

VIT_SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
             "image_size": 32, "patch_size": 8, "num_channels": 3}


def vit() -> nn.Module:
    from transformers import ViTConfig, ViTModel

    return PixelModel(ViTModel(ViTConfig(**VIT_SMALL)), ("last_hidden_state", "pooler_output"))


def vit_any_size() -> nn.Module:
    """ViT with its position embeddings interpolated to the input's patch grid (any image size)."""
    from transformers import ViTConfig, ViTModel

    return PixelModel(ViTModel(ViTConfig(**VIT_SMALL)), ("last_hidden_state",), interpolate_pos_encoding=True)


def deit() -> nn.Module:
    from transformers import DeiTConfig, DeiTForImageClassificationWithTeacher

    model = DeiTForImageClassificationWithTeacher(DeiTConfig(num_labels=5, **VIT_SMALL))
    return PixelModel(model, ("logits", "cls_logits", "distillation_logits"))


def swin() -> nn.Module:
    from transformers import SwinConfig, SwinModel

    config = SwinConfig(image_size=32, patch_size=2, num_channels=3, embed_dim=16, depths=[1, 1], num_heads=[1, 2],
                        window_size=4, mlp_ratio=2.0)
    return PixelModel(SwinModel(config), ("last_hidden_state", "pooler_output"))


def convnext() -> nn.Module:
    from transformers import ConvNextConfig, ConvNextForImageClassification

    config = ConvNextConfig(num_channels=3, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], num_labels=5)
    return PixelModel(ConvNextForImageClassification(config), ("logits",))


def resnet() -> nn.Module:
    from transformers import ResNetConfig, ResNetModel

    config = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1],
                          layer_type="bottleneck")
    return PixelModel(ResNetModel(config), ("last_hidden_state", "pooler_output"))


def mobilenet_v2() -> nn.Module:
    from transformers import MobileNetV2Config, MobileNetV2Model

    config = MobileNetV2Config(num_channels=3, image_size=64, depth_multiplier=0.35, min_depth=8)
    return PixelModel(MobileNetV2Model(config), ("last_hidden_state", "pooler_output"))


def regnet() -> nn.Module:
    from transformers import RegNetConfig, RegNetModel

    config = RegNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1],
                          groups_width=8, layer_type="y")
    return PixelModel(RegNetModel(config), ("last_hidden_state", "pooler_output"))


def segformer() -> nn.Module:
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    config = SegformerConfig(num_channels=3, num_encoder_blocks=4, depths=[1, 1, 1, 1], sr_ratios=[4, 2, 1, 1],
                             hidden_sizes=[8, 16, 32, 64], num_attention_heads=[1, 1, 2, 2],
                             decoder_hidden_size=32, num_labels=3, initializer_range=WIDE_INIT)
    return PixelModel(SegformerForSemanticSegmentation(config), ("logits",))


def dpt() -> nn.Module:
    from transformers import DPTConfig, DPTForDepthEstimation

    config = DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=8, backbone_out_indices=[0, 1, 2, 3],
                       neck_hidden_sizes=[8, 16, 32, 64], fusion_hidden_size=16, head_in_index=-1,
                       initializer_range=0.14)  # the depth head's ReLUs leave ~1e-8 at 0.02, ~1 here
    return PixelModel(DPTForDepthEstimation(config), ("predicted_depth",))


# ---------------------------------------------------------------------------------------------------- audio

def _wav2vec2_sizes() -> dict[str, Any]:
    return {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
            "conv_dim": (16, 16, 16), "conv_stride": (5, 2, 2), "conv_kernel": (10, 3, 3),
            "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2, "vocab_size": 10}


def wav2vec2() -> nn.Module:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    return AudioModel(Wav2Vec2Model(Wav2Vec2Config(**_wav2vec2_sizes())), ("last_hidden_state", "extract_features"))


def hubert() -> nn.Module:
    from transformers import HubertConfig, HubertModel

    return AudioModel(HubertModel(HubertConfig(feat_extract_norm="layer", do_stable_layer_norm=True,
                                               **_wav2vec2_sizes())))


WHISPER_MELS, WHISPER_POSITIONS = 16, 50


def whisper_encoder() -> nn.Module:
    from transformers import WhisperConfig, WhisperModel

    config = WhisperConfig(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                           decoder_ffn_dim=64, num_mel_bins=WHISPER_MELS, max_source_positions=WHISPER_POSITIONS,
                           max_target_positions=32, pad_token_id=0, bos_token_id=0, eos_token_id=0,
                           decoder_start_token_id=0)
    return FeaturesModel(WhisperModel(config).get_encoder())


# ---------------------------------------------------------------------------------------------------- multimodal

def clip_text() -> nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(vocab_size=VOCAB, max_position_embeddings=MAX_POSITIONS, eos_token_id=VOCAB - 1,
                            bos_token_id=0, pad_token_id=1, **SMALL)
    return TextModel(CLIPTextModel(config), ("last_hidden_state", "pooler_output"))


def clip_vision() -> nn.Module:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    return PixelModel(CLIPVisionModel(CLIPVisionConfig(**VIT_SMALL)), ("last_hidden_state", "pooler_output"))


# ---------------------------------------------------------------------------------------------------- hand-written

class SEBlock(nn.Module):
    """A residual block with squeeze-excitation: global average pool, two 1x1 convs, a sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.squeeze = nn.Conv2d(channels, channels // reduction, 1)
        self.excite = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        gate = torch.sigmoid(self.excite(F.relu(self.squeeze(F.adaptive_avg_pool2d(y, 1)))))
        return F.relu(x + y * gate)


class SEResNet(nn.Module):
    """A small SE-ResNet: a strided stem, two SE blocks with a strided conv between, pooled linear head."""

    def __init__(self, width: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.block1 = SEBlock(width)
        self.down = nn.Conv2d(width, 2 * width, 3, 2, 1)
        self.block2 = SEBlock(2 * width)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block2(self.down(self.block1(self.stem(x))))
        return self.fc(y.mean((2, 3)))


class DepthwisePReLU(nn.Module):
    """MobileNet-v1-style separable convs with PReLU (per-channel and shared), ReLU6 and hardswish."""

    def __init__(self, width: int = 16, classes: int = 4) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, 2, 1), nn.BatchNorm2d(w), nn.PReLU(w))
        self.dw1 = nn.Sequential(nn.Conv2d(w, w, 3, 1, 1, groups=w), nn.BatchNorm2d(w), nn.PReLU())
        self.pw1 = nn.Sequential(nn.Conv2d(w, 2 * w, 1), nn.BatchNorm2d(2 * w), nn.ReLU6())
        self.dw2 = nn.Sequential(nn.Conv2d(2 * w, 2 * w, 5, 2, 2, groups=2 * w), nn.PReLU(2 * w))
        self.pw2 = nn.Sequential(nn.Conv2d(2 * w, 3 * w // 2, 1), nn.Hardswish())
        self.head = nn.Conv2d(3 * w // 2, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pw2(self.dw2(self.pw1(self.dw1(self.stem(x))))))


class PixelShuffleSR(nn.Module):
    """ESPCN-style 3x super-resolution: convs, then a conv to 3*r^2 channels and nn.PixelShuffle(r)."""

    def __init__(self, scale: int = 3, widths: tuple[int, int] = (32, 16)) -> None:
        super().__init__()
        w1, w2 = widths
        self.body = nn.Sequential(nn.Conv2d(3, w1, 5, padding=2), nn.Tanh(), nn.Conv2d(w1, w2, 3, padding=1),
                                  nn.Tanh(), nn.Conv2d(w2, 3 * scale * scale, 3, padding=1))
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.shuffle(self.body(x)))


class ConvTransposeGenerator(nn.Module):
    """DCGAN-style generator: a latent vector through a linear to 4x4, then transposed convs up to 32x32."""

    def __init__(self, latent: int = 16, width: int = 32) -> None:
        super().__init__()
        self.width = width
        self.fc = nn.Linear(latent, width * 4 * 4)
        self.net = nn.Sequential(
            nn.BatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width // 2), nn.ReLU(),
            nn.ConvTranspose2d(width // 2, width // 4, 4, 2, 1, bias=False), nn.BatchNorm2d(width // 4),
            nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(width // 4, 3, 4, 2, 1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(-1, self.width, 4, 4))


class SpatialTransformer(nn.Module):
    """A spatial transformer network: a localization net predicts an affine theta (initialised near identity),
    F.affine_grid + F.grid_sample (bilinear, zeros padding) warp the input, then a small classifier."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.loc = nn.Sequential(nn.Conv2d(1, 8, 5, padding=2), nn.MaxPool2d(2), nn.ReLU(),
                                 nn.Conv2d(8, 8, 3, padding=1), nn.MaxPool2d(2), nn.ReLU())
        self.theta = nn.Linear(8 * 7 * 7, 6)
        with torch.no_grad():
            self.theta.weight.mul_(0.01)
            self.theta.bias.copy_(torch.tensor([1.0, 0.1, 0.0, -0.1, 0.9, 0.05]))
        self.classify = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                      nn.Flatten(), nn.Linear(8, classes))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        theta = self.theta(self.loc(x).flatten(1)).view(-1, 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        warped = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return {"logits": self.classify(warped), "warped": warped}


class AvgPoolNet(nn.Module):
    """Average pooling in the forms the native route once refused: ceil_mode=True, count_include_pad=False,
    both, and a max pool with ceil_mode, between convs (odd input sides make the ceil windows partial)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.pool1 = nn.AvgPool2d(3, 2, padding=1, ceil_mode=True, count_include_pad=False)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.pool2 = nn.AvgPool2d(2, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1)
        self.pool3 = nn.AvgPool2d(3, 1, padding=1, count_include_pad=False)
        self.pool4 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool2(F.relu(self.conv2(self.pool1(F.relu(self.conv1(x))))))
        return self.head(self.pool4(self.pool3(F.relu(self.conv3(y)))))


# ---------------------------------------------------------------------------------------------------- the models

IMAGE_STATIC = ("pixel_values:1x3x32x32",)
IMAGE_DYNAMIC = ("pixel_values:1x3x?x?",)
WAVE_SAMPLES = 1600

ZOO: dict[str, ZooModel] = {m.name: m for m in [
    # text encoders
    _model("bert", "text encoder", "transformers BertModel", bert, TEXT_STATIC, TEXT_DYNAMIC),
    _model("distilbert", "text encoder", "transformers DistilBertModel", distilbert, TEXT_STATIC, TEXT_DYNAMIC),
    _model("roberta", "text encoder", "transformers RobertaModel", roberta, TEXT_STATIC, TEXT_DYNAMIC),
    _model("albert", "text encoder", "transformers AlbertModel", albert, TEXT_STATIC, TEXT_DYNAMIC),
    _model("electra", "text encoder", "transformers ElectraForSequenceClassification", electra, TEXT_STATIC,
           TEXT_DYNAMIC),
    _model("deberta_v2", "text encoder", "transformers DebertaV2Model", deberta_v2, TEXT_STATIC, TEXT_DYNAMIC),
    _model("mpnet", "text encoder", "transformers MPNetModel", mpnet, TEXT_STATIC, TEXT_DYNAMIC),
    _model("t5_encoder", "text encoder", "transformers T5EncoderModel", t5_encoder, TEXT_STATIC, TEXT_DYNAMIC),
    _model("bart_encoder", "text encoder", "transformers BartModel encoder", bart_encoder, TEXT_STATIC,
           TEXT_DYNAMIC),
    _model("marian_encoder", "text encoder", "transformers MarianMTModel encoder", marian_encoder, TEXT_STATIC,
           TEXT_DYNAMIC),
    # decoders
    _model("gpt2", "decoder", "transformers GPT2LMHeadModel", gpt2, IDS_STATIC, IDS_DYNAMIC),
    _model("gpt2_masked", "decoder", "transformers GPT2LMHeadModel + padding mask", gpt2_masked, TEXT_STATIC,
           TEXT_DYNAMIC),
    _model("gpt_neo", "decoder", "transformers GPTNeoForCausalLM", gpt_neo, IDS_STATIC, IDS_DYNAMIC),
    _model("opt", "decoder", "transformers OPTForCausalLM", opt, IDS_STATIC, IDS_DYNAMIC),
    _model("bloom", "decoder", "transformers BloomForCausalLM", bloom, IDS_STATIC, IDS_DYNAMIC),
    _model("llama", "decoder", "transformers LlamaForCausalLM", llama, IDS_STATIC, IDS_DYNAMIC,
           static_expect=WEBGPU_DEVICE_LOST, dynamic_expect=WEBGPU_DEVICE_LOST),
    _model("qwen2", "decoder", "transformers Qwen2ForCausalLM", qwen2, IDS_STATIC, IDS_DYNAMIC,
           static_expect=WEBGPU_DEVICE_LOST, dynamic_expect=WEBGPU_DEVICE_LOST),
    _model("mistral", "decoder", "transformers MistralForCausalLM", mistral, IDS_STATIC, IDS_DYNAMIC,
           static_expect=WEBGPU_DEVICE_LOST, dynamic_expect=WEBGPU_DEVICE_LOST),
    # vision
    _model("vit", "vision", "transformers ViTModel", vit, IMAGE_STATIC),
    _model("vit_any_size", "vision", "transformers ViTModel, interpolate_pos_encoding", vit_any_size,
           IMAGE_STATIC, IMAGE_DYNAMIC, dynamic_sizes=IMAGE_SIZES,
           dynamic_expect=Expect(route="onnx", native_reason="_operator.truediv", error="ExportError",
                                 why="bicubic resizing to a computed size decomposes into float scale factors "
                                     "(size / size), which the native route does not compute; onnx2tf cannot "
                                     "convert the ONNX export's Shape node")),
    _model("deit", "vision", "transformers DeiTForImageClassificationWithTeacher", deit, IMAGE_STATIC),
    _model("swin", "vision", "transformers SwinModel", swin, IMAGE_STATIC, IMAGE_DYNAMIC,
           dynamic_sizes=EVEN_IMAGE_SIZES,
           dynamic_expect=Expect(failing=("browser-webgpu",),
                                 why="TF.js WebGPU reads a computed reshape target back as zeros on SwiftShader "
                                     "(\"Size(16384) must match the product of shape 0,0,0,0\"); WebGL, wasm pass")),
    _model("convnext", "vision", "transformers ConvNextForImageClassification", convnext, ("pixel_values:1x3x64x64",),
           IMAGE_DYNAMIC, dynamic_sizes=EVEN_IMAGE_SIZES),
    _model("resnet", "vision", "transformers ResNetModel", resnet, ("pixel_values:1x3x64x64",), IMAGE_DYNAMIC,
           dynamic_sizes=IMAGE_SIZES),
    _model("mobilenet_v2", "vision", "transformers MobileNetV2Model", mobilenet_v2, ("pixel_values:1x3x64x64",),
           IMAGE_DYNAMIC, dynamic_sizes=EVEN_IMAGE_SIZES),
    _model("regnet", "vision", "transformers RegNetModel", regnet, ("pixel_values:1x3x64x64",), IMAGE_DYNAMIC,
           dynamic_sizes=IMAGE_SIZES),
    _model("segformer", "vision", "transformers SegformerForSemanticSegmentation", segformer,
           ("pixel_values:1x3x64x64",), IMAGE_DYNAMIC, dynamic_sizes=IMAGE_SIZES),
    _model("dpt", "vision", "transformers DPTForDepthEstimation", dpt, IMAGE_STATIC),
    # audio
    _model("wav2vec2", "audio", "transformers Wav2Vec2Model", wav2vec2, (f"input_values:1x{WAVE_SAMPLES}",),
           ("input_values:?x?",), dynamic_sizes=("1200,1777,4000",)),
    _model("hubert", "audio", "transformers HubertModel (layer-norm feature encoder)", hubert,
           (f"input_values:1x{WAVE_SAMPLES}",), ("input_values:?x?",), dynamic_sizes=("1200,1777,4000",)),
    _model("whisper_encoder", "audio", "transformers WhisperModel encoder", whisper_encoder,
           (f"input_features:1x{WHISPER_MELS}x{2 * WHISPER_POSITIONS}",),
           (f"input_features:?x{WHISPER_MELS}x{2 * WHISPER_POSITIONS}",)),
    # multimodal
    _model("clip_text", "multimodal", "transformers CLIPTextModel", clip_text, TEXT_STATIC, TEXT_DYNAMIC,
           dynamic_expect=Expect(failing=("browser-webgpu",),
                                 why="the pooler takes input_ids.argmax(-1); random ids tie, and TF.js WebGPU's ArgMax "
                                     "picks another of the tied positions on long rows (measured at 130 tokens)")),
    _model("clip_vision", "multimodal", "transformers CLIPVisionModel", clip_vision, IMAGE_STATIC,
           ("pixel_values:?x3x32x32",)),
    # hand-written common kinds
    _model("se_resnet", "hand-written", "squeeze-excitation ResNet", SEResNet, ("x:1x3x32x32",), ("x:1x3x?x?",),
           dynamic_sizes=IMAGE_SIZES),
    _model("depthwise_prelu", "hand-written", "depthwise separable convs + PReLU", DepthwisePReLU,
           ("x:1x3x32x32",), ("x:1x3x?x?",), dynamic_sizes=IMAGE_SIZES),
    _model("pixel_shuffle_sr", "hand-written", "ESPCN-style pixel-shuffle super-resolution", PixelShuffleSR,
           ("x:1x3x24x24",), ("x:1x3x?x?",), dynamic_sizes=("16,37,64",)),
    _model("convtranspose_gan", "hand-written", "DCGAN-style transposed-conv generator", ConvTransposeGenerator,
           ("z:2x16",), ("z:?x16",)),
    _model("spatial_transformer", "hand-written", "STN: affine_grid + grid_sample", SpatialTransformer,
           ("x:2x1x28x28",), ("x:?x1x28x28",)),
    _model("avgpool_ceil", "hand-written", "avg pool ceil_mode / count_include_pad=False", AvgPoolNet,
           ("x:1x3x31x29",), ("x:1x3x?x?",), dynamic_sizes=IMAGE_SIZES),
]}

FAST_MODEL = "depthwise_prelu"  # the smallest, quickest entry: what the default-tier runner test converts
VARIANTS = ("static", "dynamic")


def select(patterns: Sequence[str] = (), variants: Sequence[str] = VARIANTS) -> list[tuple[ZooModel, str]]:
    """The (model, variant) pairs whose model name matches any of `patterns` (globs; all when empty), in table
    order. An unknown name or variant is a ValueError naming the valid ones."""
    unknown = [v for v in variants if v not in VARIANTS]
    missing = [p for p in patterns if not any(fnmatch.fnmatchcase(name, p) for name in ZOO)]
    if unknown or missing:
        raise ValueError(f"unknown model(s) or variant(s): {', '.join(missing + unknown)} "
                         f"(models: {', '.join(ZOO)}; variants: {', '.join(VARIANTS)})")
    return [(model, v) for model in ZOO.values() if not patterns or any(fnmatch.fnmatchcase(model.name, p)
                                                                       for p in patterns)
            for v in variants if v in model.variants]
