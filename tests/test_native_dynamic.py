"""Native route with dynamic dimensions: torch.export's symbolic sizes carried through the IR, the layout pass and
the generated tf_model.py (`tf.shape(input)[axis]` arithmetic wherever a size is symbolic).

Table-driven: library text models (HuggingFace transformers modeling code built from small configs, random
weights, no downloads) with a dynamic batch and sequence length, and fully convolutional nets with a dynamic image
size, each checked against PyTorch at several sizes per dynamic dim in the generated TF model and in TF.js in Node
(wasm and cpu). Tolerances: atol 2e-5 / rtol 1e-4 (float32; measured errors are ~1e-6). Also: symbolic size
rendering, zero-size concatenation, and typed errors for failures while TensorFlow builds the generated model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import sympy
import torch
import torch.nn as nn
import torch.nn.functional as F

from bridge.errors import ConversionError
from bridge.native import BUILTINS, ConverterRegistry, LayoutPolicy, rebuild_tf
from bridge.native.codegen import OpContext
from bridge.native.ir import Node
from bridge.native.sizes import render_size
from tests.native_web_check import Tolerance, check_node, check_tf, rebuild, write_web_model

TOL = Tolerance(atol=2e-5, rtol=1e-4)


def _ids(batch: int, length: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 999, size=(batch, length)).astype(np.int64)


# ------------------------------------------------------------------------------------ library text models

def _require_transformers() -> None:
    pytest.importorskip("transformers", reason="transformers is not installed (it is in the test extra)")


class LastHidden(nn.Module):
    """`model(input_ids=...).<field>` of a transformers model, as a plain tensor-in, tensor-out module."""

    def __init__(self, model: nn.Module, field_name: str) -> None:
        super().__init__()
        self.model, self.field_name = model, field_name

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return getattr(self.model(input_ids=input_ids), self.field_name)


class MaskedLastHidden(LastHidden):
    """The same with a padding mask (1 = token, 0 = padding) as a second input."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return getattr(self.model(input_ids=input_ids, attention_mask=attention_mask), self.field_name)


def _bert_model() -> nn.Module:
    from transformers import BertConfig, BertModel

    return BertModel(BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=256))


def bert() -> nn.Module:
    return LastHidden(_bert_model(), "last_hidden_state")


def bert_masked() -> nn.Module:
    return MaskedLastHidden(_bert_model(), "last_hidden_state")


def gpt2_lm() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=1000, n_embd=32, n_layer=2, n_head=2, n_positions=256, bos_token_id=0,
                        eos_token_id=0)
    return LastHidden(GPT2LMHeadModel(config), "logits")  # causal attention over a KV cache that starts empty


def distilbert() -> nn.Module:
    from transformers import DistilBertConfig, DistilBertModel

    config = DistilBertConfig(vocab_size=1000, dim=64, n_layers=3, n_heads=4, hidden_dim=128,
                              max_position_embeddings=512)
    return LastHidden(DistilBertModel(config), "last_hidden_state")


def gpt2_wide() -> nn.Module:
    from transformers import GPT2Config, GPT2Model

    config = GPT2Config(vocab_size=1000, n_embd=128, n_layer=4, n_head=4, n_positions=512, bos_token_id=0,
                        eos_token_id=0)
    return LastHidden(GPT2Model(config), "last_hidden_state")


@dataclass(frozen=True)
class TextCase:
    id: str
    build: Callable[[], nn.Module]
    shapes: tuple[tuple[int, int], ...]  # (batch, length) per input set; the first is the export example
    masked: bool = False  # a second input, attention_mask: the first sequence padded after half its length
    slow: bool = False

    @property
    def names(self) -> list[str]:
        return ["input_ids", "attention_mask"] if self.masked else ["input_ids"]

    def input_set(self, batch: int, length: int, seed: int) -> list[np.ndarray]:
        ids = _ids(batch, length, seed)
        if not self.masked:
            return [ids]
        mask = np.ones_like(ids)
        mask[0, max(1, length // 2):] = 0
        return [ids, mask]


TEXT_MODELS = [
    TextCase("bert-masked", bert_masked, ((2, 7), (3, 5), (1, 130), (2, 33)), masked=True),
    TextCase("gpt2-lm", gpt2_lm, ((2, 7), (3, 5), (1, 130), (2, 33))),
    TextCase("bert", bert, ((2, 7), (1, 1), (1, 200)), slow=True),
    TextCase("distilbert", distilbert, ((2, 9), (1, 3), (2, 64), (1, 300)), slow=True),
    TextCase("gpt2-wide", gpt2_wide, ((2, 9), (1, 2), (3, 48), (1, 257)), slow=True),
]


@pytest.mark.node
@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.slow else [])
                                  for c in TEXT_MODELS])
def test_text_model_with_dynamic_batch_and_length(case: TextCase, tmp_path: Path) -> None:
    _require_transformers()
    torch.manual_seed(0)
    module = case.build().eval()
    sets = [case.input_set(b, t, seed) for seed, (b, t) in enumerate(case.shapes)]
    dynamic = {name: {0: f"{name}_batch", 1: f"{name}_length"} for name in case.names}  # as route_native names them
    result = rebuild(module, sets[0], tmp_path / "tf", case.names, dynamic)
    assert all(port.web_shape == (None, None) for port in result.inputs)
    check_tf(result, module, sets, TOL)
    worst = check_node(result, module, sets, write_web_model(result, tmp_path / "web"), TOL)
    assert set(worst) == {"wasm", "cpu"}


# ------------------------------------------------------------------------------------- fully convolutional

class FullyConv(nn.Module):
    """Every conv geometry the dynamic-size padding must get right: 3x3 'same', strided, depthwise, dilated,
    an even kernel with padding='same' (PyTorch pads the odd pixel after), group norm, both transposed-conv
    forms, a 1x1 head; no pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.dilated = nn.Conv2d(16, 16, 3, padding=2, dilation=2)
        self.even = nn.Conv2d(16, 16, 4, padding="same")
        self.norm = nn.GroupNorm(4, 16)
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.up2 = nn.ConvTranspose2d(8, 8, 3, stride=2, padding=1, output_padding=1)
        self.head = nn.Conv2d(8, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.down(self.stem(x)))
        y = self.norm(self.even(self.dilated(self.dw(y)) + y))
        return self.head(self.up2(F.relu(self.up(y))))


class PatchEmbed(nn.Module):
    """A ViT-style stem over any image size: strided conv, flatten(2).transpose (the NHWC map is already in
    token order: no transpose), layer norm, a linear, then mean over the tokens; plus the pooled map."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, 16, 4, stride=4)
        self.norm = nn.LayerNorm(16)
        self.fc = nn.Linear(16, 8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.proj(x)
        tokens = self.fc(self.norm(y.flatten(2).transpose(1, 2)))
        return tokens.mean(1), y.mean((2, 3))


@dataclass(frozen=True)
class ImageCase:
    id: str
    build: Callable[[], nn.Module]
    sizes: tuple[tuple[int, int, int], ...]  # (batch, height, width) per input set
    dynamic: dict[int, str] = field(default_factory=lambda: {2: "height", 3: "width"})
    transposes: int = 0  # Transpose ops left in the traced TF graph


IMAGE_MODELS = [
    ImageCase("fully-conv", FullyConv, ((1, 32, 24), (1, 17, 41), (1, 64, 64))),
    ImageCase("fully-conv-batch", FullyConv, ((2, 16, 16), (3, 9, 30), (1, 40, 12)),
              dynamic={0: "batch", 2: "height", 3: "width"}),
    ImageCase("patch-embed", PatchEmbed, ((1, 32, 32), (1, 16, 48), (1, 64, 40))),
]


@pytest.mark.node
@pytest.mark.parametrize("case", IMAGE_MODELS, ids=lambda c: c.id)
def test_image_model_with_dynamic_size(case: ImageCase, tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = case.build().eval()
    for layer in module.modules():
        if isinstance(layer, nn.BatchNorm2d):
            layer.running_mean.uniform_(-0.5, 0.5)
            layer.running_var.uniform_(0.5, 1.5)
    rng = np.random.default_rng(0)
    sets = [[rng.standard_normal((b, 3, h, w)).astype(np.float32)] for b, h, w in case.sizes]
    result = rebuild(module, sets[0], tmp_path / "tf", ["x"], {"x": case.dynamic})
    assert result.transposes == case.transposes, result.tf_ops
    check_tf(result, module, sets, TOL)
    check_node(result, module, sets, write_web_model(result, tmp_path / "web"), TOL)


# ------------------------------------------------------------------------------------ sizes, zero-size tensors

S0, S1 = sympy.symbols("s0 s1", integer=True, positive=True)
SYMBOLS = {S0: "a", S1: "b"}
def _eval_size(text: str, a: int, b: int) -> int:
    return int(eval(text, {"tf": _IntTF}, {"a": a, "b": b}))  # noqa: S307 - our own generated arithmetic


class _IntTF:
    """The few tf functions generated size arithmetic uses, on python ints."""

    maximum = staticmethod(max)
    minimum = staticmethod(min)


def test_symbolic_sizes_render_as_arithmetic_on_input_sizes() -> None:
    from torch.utils._sympy.functions import CeilDiv, FloorDiv, PythonMod

    cases = [
        (7, lambda a, b: 7),
        (S0, lambda a, b: a),
        (S0 * S1, lambda a, b: a * b),
        (2 * S1 + 1, lambda a, b: 2 * b + 1),
        (FloorDiv(S0 - 1, 2) + 1, lambda a, b: (a - 1) // 2 + 1),
        (CeilDiv(S0, 3), lambda a, b: -(-a // 3)),
        (PythonMod(S1, 4), lambda a, b: b % 4),
        (sympy.Max(S0, S1) - sympy.Min(S0, 3), lambda a, b: max(a, b) - min(a, 3)),
        (S0 ** 2, lambda a, b: a * a),
    ]
    for expr, want in cases:
        text = render_size(expr, SYMBOLS)
        for a, b in ((1, 1), (5, 3), (130, 17)):
            assert _eval_size(text, a, b) == want(a, b), (expr, text)
    with pytest.raises(ConversionError, match="not a dimension of any model input"):
        render_size(sympy.Symbol("u0") + 1, SYMBOLS)
    with pytest.raises(ConversionError, match="cannot compute the symbolic size"):
        render_size(sympy.Rational(1, 2) * S0, SYMBOLS)


class EmptyCache(nn.Module):
    """A cache that starts as a 1-D empty tensor (torch.cat skips it) and an empty slice along the cat axis."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("cache", torch.zeros(0))
        self.proj = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keys = torch.cat([self.cache, self.proj(x)], dim=-2)
        empty = keys[:, :0]
        return torch.cat([empty, keys, x[:, :0]], dim=1) * 2


def test_zero_size_tensors_in_cat_are_dropped(tmp_path: Path) -> None:
    module = EmptyCache().eval()
    sets = [[np.random.default_rng(i).standard_normal((2, t, 8)).astype(np.float32)] for i, t in enumerate((4, 9, 1))]
    result = rebuild(module, sets[0], tmp_path, ["x"], {"x": {1: "length"}})
    check_tf(result, module, sets, TOL)
    assert "tf.concat" not in result.model_py.read_text()  # every other input was empty


# ------------------------------------------------------------------------------------- typed TF failures

def _bad_registry(emit: Callable[[OpContext], str]) -> ConverterRegistry:
    registry = ConverterRegistry("test", fallback=BUILTINS)

    @registry.converter("aten.relu.default", layout=LayoutPolicy.ANY, emits=("Relu",))
    def relu(ctx: OpContext, node: Node) -> str:
        """aten::relu(Tensor self) -> Tensor   (broken on purpose)"""
        return emit(ctx)

    return registry


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(x))


BAD_CONVERTERS = [
    ("tf-trace", lambda ctx: f"tf.concat([{ctx.t('self')}, tf.zeros([3])], axis=0)",
     "TensorFlow failed while tracing the generated model at act"),
    ("python-bug", lambda ctx: ctx.arg("no_such_argument")["x"],
     "generating TensorFlow code for aten.relu.default failed: TypeError"),
]


@pytest.mark.parametrize("emit,message", [c[1:] for c in BAD_CONVERTERS], ids=[c[0] for c in BAD_CONVERTERS])
def test_failures_while_building_the_tf_model_are_typed(emit: Callable[[OpContext], str], message: str,
                                                        tmp_path: Path) -> None:
    with pytest.raises(ConversionError) as info:
        rebuild_tf(Block().eval(), [torch.randn(2, 4)], tmp_path, converters=_bad_registry(emit))
    err = info.value
    assert err.stage == "tf" and message in err.message, str(err)
    assert "ONNX route" in (err.hint or "")
    text = "\n".join(err.details)
    assert "act" in text  # the module path (TF node name or the node's place)
    if emit is BAD_CONVERTERS[0][1]:
        assert "tf_model.py:" in text and "tf.concat" in text  # the generated line TF refused


# ------------------------------------------------------------------------------------- through the public API

@pytest.mark.node
@pytest.mark.parametrize("browser", [False, pytest.param(True, marks=[pytest.mark.slow, pytest.mark.browser])])
def test_gpt2_through_bridge_convert(browser: bool, tmp_path: Path) -> None:
    """`bridge.convert(route="native")` with `input_ids:?x?` and sample sets up to 130 tokens: every stage that
    runs passes (browser stages too when asked and Chromium is installed)."""
    _require_transformers()
    import bridge
    from bridge.stages.result import Status

    torch.manual_seed(0)
    module = gpt2_lm().eval()
    samples = [{"input_ids": _ids(b, t, seed)} for seed, (b, t) in enumerate(((2, 7), (3, 5), (1, 130)))]
    result = bridge.convert(module, ["input_ids:?x?:int64:0..999"], tmp_path / "out", route="native",
                            browser=browser, sample_inputs=samples, samples=3)
    ran = {stage.name: stage for stage in result.stages if stage.status is not Status.SKIPPED}
    assert {"capture", "tf", "savedmodel", "tfjs-graph", "tfjs-node-wasm", "tfjs-node-cpu"} <= set(ran)
    assert all(stage.status is Status.PASS for stage in ran.values()), {n: s.status for n, s in ran.items()}
    assert result.ok


class CausalAttention(nn.Module):
    """is_causal attention over a dynamic length (the mask is built from the run-time lengths)."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(8, 24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).reshape(x.shape[0], x.shape[1], 3, 2, 4).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).flatten(2)


class DynamicSplit(nn.Module):
    """split_with_sizes and chunk along dynamic and static axes."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        head, tail = x.split([x.shape[1] - 2, 2], dim=1)
        left, right = x.chunk(2, dim=2)
        return head.sum(1) + tail.mean(1), left * right


@dataclass(frozen=True)
class SmallCase:
    id: str
    build: Callable[[], nn.Module]
    lengths: tuple[int, ...]  # of axis 1 of a (2, length, 8) input, dynamic


SMALL_MODELS = [
    SmallCase("causal-attention", CausalAttention, (6, 1, 40)),
    SmallCase("split-chunk", DynamicSplit, (5, 3, 20)),
]


@pytest.mark.parametrize("case", SMALL_MODELS, ids=lambda c: c.id)
def test_small_model_with_dynamic_length(case: SmallCase, tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = case.build().eval()
    rng = np.random.default_rng(0)
    sets = [[rng.standard_normal((2, t, 8)).astype(np.float32)] for t in case.lengths]
    result = rebuild(module, sets[0], tmp_path, ["x"], {"x": {1: "length"}})
    check_tf(result, module, sets, TOL)


# ---------------------------------------------------------------------------------------------------------------
# Captures that hold only at the example's size are refused before anything is built

class PadsToEven(nn.Module):
    """Pads the last axis to an even length with a Python int computed from the size: strict torch.export keeps
    the axis symbolic but freezes the pad it computed for the example (0 at 8)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = 1 if int(x.shape[-1]) % 2 else 0
        return F.pad(x, (0, pad)) * 2


class Doubles(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


@pytest.mark.parametrize("model,lengths,refused", [
    (PadsToEven, (8, 12), False),        # every sample takes the example's branch: the capture holds
    (PadsToEven, (8, 7), True),          # 7 is odd: the frozen pad would give length 7, PyTorch gives 8
    (Doubles, (8, 7), False),
])
def test_captures_that_hold_only_at_the_example_size_are_refused(model: type[nn.Module], lengths: tuple[int, ...],
                                                                 refused: bool, tmp_path: Path) -> None:
    from bridge.errors import CaptureError

    module = model().eval()
    samples = [torch.randn(1, n) for n in lengths]
    reference = [[tuple(module(s).shape)] for s in samples]
    shapes = [{"x": tuple(s.shape)} for s in samples]
    build = lambda: rebuild_tf(module, [samples[0]], tmp_path, input_names=["x"], dynamic_dims={"x": {1: "n"}},  # noqa: E731
                               sample_shapes=shapes, reference_shapes=reference)
    if not refused:
        model_tf = build()
        for sample, want in zip(samples, reference):
            assert tuple(model_tf.run([sample.numpy()])[model_tf.outputs[0].name].shape) == want[0]
        return
    with pytest.raises(CaptureError, match="fixes the dynamic dimension|example's sizes only|Guard failed"):
        build()
    assert not (tmp_path / "tf_model.py").exists()


class EvenOnly(nn.Module):
    """Branches on a size's parity with a SymInt (no int()): torch.export records the guard `x.size()[1] % 2 == 0`
    for an even example and the captured program holds only for even lengths."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] % 2 == 0:
            return x.reshape(x.shape[0], -1, 2).sum(-1)
        return x


@pytest.mark.parametrize("lengths,refused", [((8, 12, 30), False), ((8, 12, 7), True)])
def test_samples_that_break_a_recorded_guard_are_refused(lengths: tuple[int, ...], refused: bool,
                                                         tmp_path: Path) -> None:
    from bridge.errors import CaptureError

    module = EvenOnly().eval()
    samples = [torch.randn(1, n) for n in lengths]
    build = lambda: rebuild_tf(module, [samples[0]], tmp_path, input_names=["x"], dynamic_dims={"x": {1: "n"}},  # noqa: E731
                               sample_shapes=[{"x": tuple(s.shape)} for s in samples],
                               reference_shapes=[[tuple(module(s).shape)] for s in samples])
    if not refused:
        build()
        return
    with pytest.raises(CaptureError) as caught:
        build()
    assert "sample 2 (1x7)" in "\n".join(caught.value.details) and "% 2 == 0" in "\n".join(caught.value.details)


@pytest.mark.parametrize("reference,mismatch", [
    ([[(1, 8)], [(1, 7)]], None),
    ([[(1, 8)], [(1, 8)]], "sample 1: output 0 would have shape [1, 7], PyTorch's has [1, 8]"),
])
def test_output_shapes_are_evaluated_at_each_sample(reference: list[list[tuple[int, ...]]],
                                                    mismatch: str | None) -> None:
    from bridge.native.capture import capture, output_shape_mismatches

    captured = capture(Doubles().eval(), (torch.randn(1, 8),), keep=[], dynamic_dims={0: {1: "n"}})
    found = output_shape_mismatches(captured.program, ["x"], [{"x": (1, 8)}, {"x": (1, 7)}], reference)
    assert found == ([] if mismatch is None else [mismatch])
