"""Native route, whole models: each model in the table is rebuilt as generated TF source + SavedModel and compared
with PyTorch (atol 1e-5 / rtol 1e-4; deeper nets allow 1e-4 absolute for float32 summation order). CNNs with NHWC
input must rebuild with zero Transpose ops. Also: the unsupported-op report, the registry's rules, the SavedModel
signature, an end-to-end run through the TF.js writer in Node (wasm), and (slow) a ResNet-18 timing."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmarks.models import BasicBlock, ResNet18
from bridge.errors import CaptureError, ConversionError, UnsupportedOpsError
from bridge.native import BUILTINS, ConverterRegistry, LayoutPolicy, rebuild_tf
from bridge.native.codegen import OpContext
from bridge.native.ir import Node
from bridge.native.registry import load_builtins, supported_ops
from shared_models import TutorialLinear

load_builtins()
ATOL, RTOL = 1e-5, 1e-4


def _randomise_bn(module: nn.Module) -> nn.Module:
    """Give every batch norm non-trivial statistics so a wrong port would show."""
    gen = torch.Generator().manual_seed(3)
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                layer.running_mean.copy_(torch.rand(layer.num_features, generator=gen) - 0.5)
                layer.running_var.copy_(torch.rand(layer.num_features, generator=gen) + 0.5)
                layer.weight.copy_(torch.rand(layer.num_features, generator=gen) + 0.5)
                layer.bias.copy_(torch.rand(layer.num_features, generator=gen) - 0.5)
    return module.eval()


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.fc2(F.gelu(self.fc1(x))), dim=-1)


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = self.pool(F.relu(self.bn2(self.conv2(x))))
        return self.fc(torch.flatten(x, 1))


class TwoInTwoOut(nn.Module):
    """An image and a vector in; a score vector and a feature map out."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.proj = nn.Linear(5, 4)

    def forward(self, image: torch.Tensor, meta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = F.relu(self.conv(image))
        score = features.mean((2, 3)) + self.proj(meta)
        return score, features * torch.sigmoid(score)[:, :, None, None]


class ResidualCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.layer1 = nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 16, stride=2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layer1(self.stem(x))), 1))


class DepthwiseSeparable(nn.Module):
    """MobileNet-style: depthwise 3x3 + BN + ReLU6, pointwise 1x1 + BN + hardswish, squeeze-excite, classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.dw = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.pw = nn.Conv2d(8, 16, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.se_reduce, self.se_expand = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.bn1(self.dw(x)))
        x = F.hardswish(self.bn2(self.pw(x)))
        s = F.adaptive_avg_pool2d(x, 1)
        x = x * F.hardsigmoid(self.se_expand(F.relu(self.se_reduce(s))))
        return self.head(x.mean((2, 3)))


class TinyViT(nn.Module):
    """Patch embedding conv, one pre-norm transformer block (sdpa attention, GELU MLP), mean-pooled head."""

    def __init__(self, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.pos = nn.Parameter(torch.randn(1, 16, dim) * 0.1)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        n, t, d = x.shape
        q, k, v = (part.view(n, t, self.heads, d // self.heads).transpose(1, 2)
                   for part in self.qkv(self.norm1(x)).chunk(3, dim=-1))
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, t, d)
        x = x + self.proj(attn)
        x = x + self.mlp(self.norm2(x))
        return self.head(x.mean(1))


class ConvNeXtBlock(nn.Module):
    """ConvNeXt's block: depthwise 7x7, then permute to channels-last for LayerNorm + MLP, permute back, residual.
    With NHWC input both permutes are free and no Transpose is left."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1, self.pwconv2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        out = x + y.permute(0, 3, 1, 2)
        return {"features": out, "pooled": out.mean((2, 3))}


@dataclass
class ModelCase:
    id: str
    make: Callable[[], nn.Module]
    shapes: list[tuple[int, ...]]
    names: list[str]
    outputs: list[str] | None = None
    layouts: dict[str, str] = field(default_factory=dict)
    dynamic: dict[str, dict[int, str]] = field(default_factory=dict)
    transposes: int | None = None  # exact Transpose count expected in the traced TF graph
    atol: float = ATOL


class RecurrentTagger(nn.Module):
    """A bidirectional LSTM, a GRU on top, a where on the scores (the ops of issue 5's recurrent models)."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(6, 8, batch_first=True, bidirectional=True)
        self.gru = nn.GRU(16, 8, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        out, _ = self.gru(out)
        scores = self.head(out[:, -1])
        return torch.where(scores > 0, scores, scores * 0.1)


MODELS = [
    ModelCase("mlp", MLP, [(4, 8)], ["x"], ["probs"], transposes=0),
    ModelCase("recurrent-lstm-gru", RecurrentTagger, [(2, 5, 6)], ["x"], ["logits"], atol=1e-4),
    ModelCase("small-cnn-nhwc", SmallCNN, [(2, 3, 16, 16)], ["x"], ["logits"], transposes=0),
    ModelCase("small-cnn-nchw", SmallCNN, [(2, 3, 16, 16)], ["x"], ["logits"], layouts={"x": "nchw"}, transposes=1),
    ModelCase("small-cnn-dynamic-batch", SmallCNN, [(2, 3, 16, 16)], ["x"], ["logits"], dynamic={"x": {0: "batch"}},
              transposes=0),
    ModelCase("linear-model", TutorialLinear, [(1, 2)], ["x"], ["y"], transposes=0),
    ModelCase("two-in-two-out", TwoInTwoOut, [(2, 3, 8, 8), (2, 5)], ["image", "meta"], ["score", "gated"],
              transposes=0),
    ModelCase("residual-cnn", ResidualCNN, [(2, 3, 16, 16)], ["x"], ["logits"], transposes=0, atol=1e-4),
    ModelCase("depthwise-separable", DepthwiseSeparable, [(2, 8, 16, 16)], ["x"], ["logits"], transposes=0),
    ModelCase("convnext-block-dict-out", ConvNeXtBlock, [(2, 8, 12, 12)], ["x"], None, transposes=0),
    # patch flatten + transpose are free; attention's head split/merge needs 4 transposes (q, k, v, output), and K
    # is transposed once more so the per-head matmuls take TF.js wasm's fast path (no adjoint flag)
    ModelCase("tiny-vit", TinyViT, [(2, 3, 16, 16)], ["x"], ["logits"], transposes=5),
]


def count_tf_ops(model: object, op_type: str) -> int:
    """How many `op_type` nodes the generated model's traced graph holds."""
    graph = model.__call__.get_concrete_function().graph.as_graph_def()  # type: ignore[attr-defined]
    return sum(1 for node in graph.node if node.op == op_type)


def _build(case: ModelCase, tmp_path: Path):
    torch.manual_seed(0)
    module = _randomise_bn(case.make())
    gen = torch.Generator().manual_seed(1)
    inputs = [torch.randn(s, generator=gen) for s in case.shapes]
    result = rebuild_tf(module, inputs, tmp_path, input_names=case.names, output_names=case.outputs,
                        input_layouts=case.layouts, dynamic_dims=case.dynamic)
    return module, inputs, result


@pytest.mark.parametrize("case", MODELS, ids=[m.id for m in MODELS])
def test_model_case(case: ModelCase, tmp_path: Path) -> None:
    module, inputs, result = _build(case, tmp_path)
    with torch.no_grad():
        expected = module(*inputs)
    if isinstance(expected, dict):
        assert [o.name for o in result.outputs] == list(expected)  # the dict's keys name the outputs
        expected = list(expected.values())
    elif case.outputs:
        assert [o.name for o in result.outputs] == case.outputs
    expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
    got = result.run_torch_layout(*[t.numpy() for t in inputs])
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e.numpy(), atol=case.atol, rtol=RTOL)
    if case.transposes is not None:
        assert count_tf_ops(result.model, "Transpose") == case.transposes
    _check_saved_model(result, inputs, expected, case.atol)


def _check_saved_model(result, inputs: list[torch.Tensor], expected: list[torch.Tensor], atol: float) -> None:
    """The SavedModel's serving signature takes the user's input names and returns the user's output names."""
    import tensorflow as tf
    loaded = tf.saved_model.load(str(result.saved_model_dir))
    serving = loaded.signatures["serving_default"]
    assert sorted(serving.structured_input_signature[1]) == sorted(i.name for i in result.inputs)
    feeds = {info.name: tf.constant(info.move_to_web(t.numpy())) for info, t in zip(result.inputs, inputs)}
    outputs = serving(**feeds)
    assert set(outputs) == {o.name for o in result.outputs}
    for info, e in zip(result.outputs, expected):
        np.testing.assert_allclose(info.to_torch(outputs[info.name].numpy()), e.numpy(), atol=atol, rtol=RTOL)


def test_linear_model_on_tutorial_input(tmp_path: Path) -> None:
    module = TutorialLinear().eval()
    result = rebuild_tf(module, [torch.tensor([[0.6, 0.2]])], tmp_path, output_names=["y"])
    got = result.run({"x": np.array([[0.6, 0.2]], np.float32)})["y"]
    np.testing.assert_allclose(got, [0.7 * 0.6 - 1.3 * 0.2 + 0.25], atol=1e-6)
    source = result.model_py.read_text()
    assert 'w["a"]' in source and 'w["b"]' in source  # variables named after the state_dict keys


def test_dynamic_batch_runs_other_batch_sizes(tmp_path: Path) -> None:
    case = next(m for m in MODELS if m.id == "small-cnn-dynamic-batch")
    module, _, result = _build(case, tmp_path)
    assert result.inputs[0].web_shape[0] is None
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        expected = module(x).numpy()
    np.testing.assert_allclose(result.run_torch_layout(x.numpy())[0], expected, atol=ATOL, rtol=RTOL)


def test_generated_source_is_readable(tmp_path: Path) -> None:
    case = next(m for m in MODELS if m.id == "residual-cnn")
    _, _, result = _build(case, tmp_path)
    source = result.model_py.read_text()
    assert "class ResidualCNN(tf.Module):" in source
    assert 'with tf.name_scope("layer1.1.conv1"):' in source
    assert "# layer1.1.downsample.0 · test_native_models.py:" in source or "# layer1.1.downsample.0" in source
    assert 'name="layer1.0.conv1.weight"' in source and "hwio" in source
    assert result.relayouts == 0 and result.max_abs_error["logits"] < 1e-4


# ------------------------------------------------------------------------------------ unsupported ops, registry

class Unsupported(nn.Module):
    """Ops without converters (and a pool whose indices are read), used from two modules."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Linear(4, 4), Atan())
        self.pool = nn.MaxPool2d(2, return_indices=True)

    def forward(self, x: torch.Tensor, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values, indices = self.pool(img)
        warped = torch.lgamma(img.abs() + 1.0)
        return torch.linalg.det(self.head(x).reshape(2, 2, 2)), values * indices + warped.mean()


class Atan(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.atan(x)


def test_unsupported_ops_are_all_reported(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedOpsError) as info:
        rebuild_tf(Unsupported().eval(), [torch.randn(2, 4), torch.randn(1, 2, 9, 9)], tmp_path)
    err = info.value
    assert err.stage == "rebuild-tf"
    assert set(err.ops) == {"aten.atan.default", "aten._linalg_det.default", "aten.lgamma.default",
                            "aten.max_pool2d_with_indices.default (the indices output is used (only the pooled "
                            "values convert))"}, sorted(err.ops)
    assert any("head.1" in where for where in err.ops["aten.atan.default"])
    assert any("test_native_models.py:" in where for where in err.ops["aten.lgamma.default"])
    assert "ONNX route" in (err.hint or "") and "register_converter" in (err.hint or "")
    assert not (tmp_path / "tf_model.py").exists()


class MaskedSum(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[x > 0].sum()


def test_boolean_mask_index_is_reported_with_its_reason(tmp_path: Path) -> None:
    """A data-dependent shape: capture drops torch.export's run-time size checks, the index op is refused."""
    with pytest.raises(UnsupportedOpsError) as info:
        rebuild_tf(MaskedSum().eval(), [torch.randn(3, 4)], tmp_path)
    assert list(info.value.ops) == ["aten.index.Tensor (boolean mask index (data-dependent output shape))"]


def test_user_converter_fills_a_gap(tmp_path: Path) -> None:
    user = ConverterRegistry("user", fallback=BUILTINS)

    @user.converter("aten.atan.default", layout=LayoutPolicy.ANY, emits=("Atan",))
    def atan(ctx: OpContext, node: Node) -> str:
        """aten::atan(Tensor self) -> Tensor"""
        return f"tf.math.atan({ctx.t('self')})"

    module = nn.Sequential(nn.Linear(4, 4), Atan()).eval()
    x = torch.randn(2, 4)
    result = rebuild_tf(module, [x], tmp_path, converters=user)
    with torch.no_grad():
        np.testing.assert_allclose(result.run_torch_layout(x.numpy())[0], module(x).numpy(), atol=ATOL, rtol=RTOL)


def test_user_converter_overrides_builtin(tmp_path: Path) -> None:
    user = ConverterRegistry("user", fallback=BUILTINS)

    @user.converter("aten.relu.default", layout=LayoutPolicy.ANY, emits=("Maximum",))
    def relu_as_maximum(ctx: OpContext, node: Node) -> str:
        """aten::relu(Tensor self) -> Tensor"""
        return f"tf.maximum({ctx.t('self')}, 0.0)"

    module = nn.Sequential(nn.Linear(3, 3), nn.ReLU()).eval()
    x = torch.randn(2, 3)
    result = rebuild_tf(module, [x], tmp_path, converters=user)
    assert "tf.maximum(" in result.model_py.read_text() and "tf.nn.relu(" not in result.model_py.read_text()
    assert user.lookup("aten.relu.default").fn is relu_as_maximum  # type: ignore[union-attr]
    assert BUILTINS.lookup("aten.relu.default").fn is not relu_as_maximum  # type: ignore[union-attr]
    with torch.no_grad():
        np.testing.assert_allclose(result.run_torch_layout(x.numpy())[0], module(x).numpy(), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("registry_name", ["fresh", "builtin"])
def test_duplicate_registration_raises(registry_name: str) -> None:
    registry = ConverterRegistry("fresh") if registry_name == "fresh" else BUILTINS

    def relu(ctx: OpContext, node: Node) -> str:
        """aten::relu(Tensor self) -> Tensor"""
        return "x"

    if registry_name == "fresh":
        registry.converter("aten.relu.default", layout=LayoutPolicy.ANY)(relu)
    with pytest.raises(ConversionError, match="duplicate converter for aten.relu.default"):
        registry.converter("aten.relu.default", layout=LayoutPolicy.ANY)(relu)


class DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if x.sum() > 0 else x - 1


def test_uncapturable_model_raises_capture_error(tmp_path: Path) -> None:
    with pytest.raises(CaptureError) as info:
        rebuild_tf(DataDependent(), [torch.randn(3)], tmp_path)
    assert info.value.stage == "capture" and len(info.value.details) == 2  # strict and non-strict both tried


def test_non_strict_capture_gives_the_same_model(tmp_path: Path) -> None:
    module, x = _randomise_bn(SmallCNN()), torch.randn(2, 3, 16, 16)
    result = rebuild_tf(module, [x], tmp_path, strict=False)
    assert result.capture_method == "torch.export non-strict" and result.transposes == 0
    with torch.no_grad():
        np.testing.assert_allclose(result.run_torch_layout(x.numpy())[0], module(x).numpy(), atol=ATOL, rtol=RTOL)


def test_supported_ops_table_comes_from_the_registry() -> None:
    rows = supported_ops(BUILTINS)
    conv = next(r for r in rows if r["target"] == "aten.conv2d.default")
    assert conv["layout"] == "channels_last" and "Conv2D" in conv["emits"] and conv["schema"].startswith("aten::conv2d")
    assert len(rows) == len(BUILTINS.targets())


def test_transpose_count_check_can_fail(tmp_path: Path) -> None:
    """Must-fail twin of the zero-transpose assertion: an NCHW input does leave a Transpose."""
    case = next(m for m in MODELS if m.id == "small-cnn-nchw")
    _, _, result = _build(case, tmp_path)
    assert count_tf_ops(result.model, "Transpose") != 0


# ------------------------------------------------------------------------------------ end to end, timing

def _node_problem() -> str | None:
    """Why the TF.js-in-Node check cannot run here (None when it can)."""
    try:
        from bridge.runtime.node import node_status
        from bridge.tfjs.convert import convert_saved_model  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - a missing or broken sibling module means: skip with its reason
        return f"the TF.js writer or the Node harness cannot be imported: {type(exc).__name__}: {exc}"
    problems = node_status().problems
    return "; ".join(problems) if problems else None


@pytest.mark.node
@pytest.mark.parametrize("model_id", ["small-cnn-nhwc", "tiny-vit", "depthwise-separable", "recurrent-lstm-gru"])
def test_through_tfjs_wasm(model_id: str, tmp_path: Path) -> None:
    """The generated SavedModel through bridge's TF.js writer into TF.js (wasm) in Node (atol 1e-4: wasm kernels
    sum in another order)."""
    problem = _node_problem()
    if problem:
        pytest.skip(problem)
    from bridge.runtime.node import run_graph_model
    from bridge.tfjs.convert import TfjsOptions, convert_saved_model

    case = next(m for m in MODELS if m.id == model_id)
    module, inputs, result = _build(case, tmp_path / "tf")
    web = tmp_path / "web_model"
    convert_saved_model(result.saved_model_dir, web, TfjsOptions())
    feeds = {info.name: info.move_to_web(t.numpy()) for info, t in zip(result.inputs, inputs)}
    runs = run_graph_model(web, [feeds], backends=("wasm",))
    assert runs["wasm"].ok, runs["wasm"].error
    with torch.no_grad():
        expected = module(*inputs).numpy()
    np.testing.assert_allclose(runs["wasm"].outputs[0]["logits"], expected, atol=1e-4, rtol=1e-3)


@pytest.mark.slow
def test_resnet18_rebuild_time(tmp_path: Path) -> None:
    module = _randomise_bn(ResNet18())
    x = torch.randn(1, 3, 224, 224)
    start = time.perf_counter()
    result = rebuild_tf(module, [x], tmp_path, output_names=["logits"])
    total = time.perf_counter() - start
    print(f"\nResNet-18 native rebuild: {total:.1f} s total; stages {result.timings}; "
          f"max|Δ| {result.max_abs_error['logits']:.2e}")
    assert count_tf_ops(result.model, "Transpose") == 0
    assert result.max_abs_error["logits"] < 1e-3
