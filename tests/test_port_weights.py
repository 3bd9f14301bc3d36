"""bridge.native.port_weights: PyTorch weights into hand-written TF models (tf.Module and Keras), compared with
PyTorch on the same inputs (atol 1e-5, rtol 1e-4); partial ports are refused with every problem listed, or
ported in part with allow_partial=True; the mapping overrides name/structure matching."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import tensorflow as tf
import torch
import torch.nn as nn

from bridge.errors import BridgeError
from bridge.native import PortReport, WeightPortError, port_weights
from bridge.native import weights as W

keras = tf.keras
ATOL, RTOL = 1e-5, 1e-4
ROOT = Path(__file__).resolve().parents[1]


def _linear_model_class() -> type[nn.Module]:
    spec = importlib.util.spec_from_file_location("bridge_example_linear", ROOT / "examples/linear/model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.LinearModel


# ------------------------------------------------------------------------------------------------ TF models

class TfLinear(tf.Module):
    """The tutorial's linear model written by hand in TF: y = reduce_sum(a * x, 1) + b."""

    def __init__(self, a_name: str = "a", b_name: str = "b") -> None:
        super().__init__()
        setattr(self, a_name, tf.Variable(tf.zeros([2]), name=a_name))
        setattr(self, b_name, tf.Variable(tf.zeros([1]), name=b_name))
        self._names = (a_name, b_name)

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        a, b = (getattr(self, n) for n in self._names)
        return tf.reduce_sum(a * x, 1) + b


class TorchCNN(nn.Module):
    """conv -> bn -> relu -> depthwise conv -> transposed conv -> global mean -> linear."""

    def __init__(self, with_mid: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.mid = nn.Conv2d(8, 8, 3, padding=1, groups=8) if with_mid else nn.Identity()
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mid(torch.relu(self.bn(self.conv(x))))
        return self.fc(self.up(x).mean((2, 3)))


def keras_cnn(with_mid: bool = True) -> Any:
    """The same network as a Keras Sequential (NHWC), built."""
    layers = [keras.Input((6, 6, 3)), keras.layers.Conv2D(8, 3, padding="same"),
              keras.layers.BatchNormalization(epsilon=1e-5), keras.layers.ReLU()]
    if with_mid:
        layers.append(keras.layers.DepthwiseConv2D(3, padding="same"))
    layers += [keras.layers.Conv2DTranspose(4, 2, strides=2), keras.layers.GlobalAveragePooling2D(),
               keras.layers.Dense(5)]
    return keras.Sequential(layers)


class TfModuleCNN(tf.Module):
    """conv + dense by hand with tf.nn, variables named like the PyTorch attributes (conv.kernel...)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_kernel = tf.Variable(tf.zeros([3, 3, 3, 8]))
        self.conv_bias = tf.Variable(tf.zeros([8]))
        self.fc_w = tf.Variable(tf.zeros([8, 5]))
        self.fc_b = tf.Variable(tf.zeros([5]))

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        y = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, self.conv_kernel, 1, "SAME"), self.conv_bias))
        return tf.linalg.matmul(tf.reduce_mean(y, [1, 2]), self.fc_w) + self.fc_b


class TorchSmall(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


class TorchSeq(nn.Module):
    """embedding -> conv1d -> mean over time -> linear (token ids in)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.conv = nn.Conv1d(4, 6, 3)
        self.fc = nn.Linear(6, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(self.emb(ids).transpose(1, 2)).mean(-1))


def keras_seq() -> Any:
    return keras.Sequential([keras.Input((7,), dtype="int32"), keras.layers.Embedding(10, 4),
                             keras.layers.Conv1D(6, 3), keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(2)])


def _randomise(module: nn.Module) -> nn.Module:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, buf in module.named_buffers():
            if name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=gen) + 0.5)
            elif name.endswith("running_mean"):
                buf.copy_(torch.rand(buf.shape, generator=gen) - 0.5)
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return module.eval()


# ------------------------------------------------------------------------------------------------ numeric cases

@dataclass
class PortCase:
    """A PyTorch model, the TF model to port into, how to run the TF one on PyTorch-layout inputs."""

    id: str
    make_torch: Callable[[], nn.Module]
    make_tf: Callable[[], Any]
    input: np.ndarray
    run_tf: Callable[[Any, np.ndarray], np.ndarray]
    state_dict_only: bool = False
    mapping: dict[str, Any] | None = None


def _nhwc(model: Any, x: np.ndarray) -> np.ndarray:
    return np.asarray(model(tf.constant(x.transpose(0, 2, 3, 1))))


def _plain(model: Any, x: np.ndarray) -> np.ndarray:
    return np.asarray(model(tf.constant(x)))


IMG = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
POINT = np.array([[0.6, 0.2]], dtype=np.float32)
IDS = np.random.default_rng(0).integers(0, 10, (3, 7))
CASES = [
    PortCase("tutorial-linear-by-name", lambda: _linear_model_class()(), TfLinear, POINT, _plain),
    PortCase("tutorial-linear-by-structure", lambda: _linear_model_class()(), lambda: TfLinear("slope", "icept"),
             POINT, _plain),
    PortCase("tutorial-linear-state-dict", lambda: _linear_model_class()((2.0, 3.0), -1.0), TfLinear, POINT, _plain,
             state_dict_only=True),
    PortCase("keras-cnn", lambda: _randomise(TorchCNN()), keras_cnn, IMG, _nhwc),
    PortCase("keras-cnn-state-dict", lambda: _randomise(TorchCNN()), keras_cnn, IMG, _nhwc, state_dict_only=True),
    PortCase("keras-embedding-conv1d", lambda: _randomise(TorchSeq()), keras_seq, IDS, _plain),
    PortCase("tf-module-cnn", lambda: _randomise(TorchSmall()), TfModuleCNN, IMG, _nhwc),
    PortCase("tf-module-cnn-mapping", lambda: _randomise(TorchSmall()), TfModuleCNN, IMG, _nhwc,
             mapping={"fc.weight": "fc_w", "fc.bias": "fc_b", "conv.weight": "conv_kernel"}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_port_matches_torch(case: PortCase) -> None:
    torch.manual_seed(0)
    source = case.make_torch().eval()
    target = case.make_tf()
    before = case.run_tf(target, case.input)
    report = port_weights(source.state_dict() if case.state_dict_only else source, target, mapping=case.mapping)
    assert report.complete and report.assigned, report.summary()
    with torch.no_grad():
        expected = source(torch.from_numpy(case.input)).numpy()
    np.testing.assert_allclose(case.run_tf(target, case.input), expected, atol=ATOL, rtol=RTOL)
    assert not np.allclose(before, expected, atol=1e-3)  # the check can fail: unported weights do not match


def test_underscored_tf_names_match_by_name() -> None:
    report = port_weights(_randomise(TorchSmall()), TfModuleCNN())
    assert {m.torch_key: (m.tf_name, m.how) for m in report.matched} == {
        "conv.weight": ("conv_kernel", "name"), "conv.bias": ("conv_bias", "name"),
        "fc.weight": ("fc_w", "name"), "fc.bias": ("fc_b", "name")}


def test_tutorial_output_value() -> None:
    target = TfLinear()
    port_weights(_linear_model_class()(), target)
    assert float(target(tf.constant(POINT))[0]) == pytest.approx(0.6 * 0.5 - 1.5 * 0.2 + 0.25, abs=1e-6)


def test_report_names_transforms_and_skips_step_counter() -> None:
    report = port_weights(_randomise(TorchCNN()), keras_cnn())
    transforms = {m.torch_key: m.transform for m in report.matched}
    assert transforms["conv.weight"] == "hwio"
    assert transforms["mid.weight"] == "depthwise_hwcm"
    assert transforms["up.weight"] == "hwoi"
    assert transforms["fc.weight"] == "in_out"
    assert transforms["bn.running_var"] == "identity"
    assert report.skipped == ["bn.num_batches_tracked"]


# ------------------------------------------------------------------------------------------------ refusals

def test_missing_layer_is_refused_with_every_entry_listed() -> None:
    target = keras_cnn(with_mid=False)
    before = [v.numpy().copy() for v in target.weights]
    with pytest.raises(WeightPortError) as info:
        port_weights(_randomise(TorchCNN()), target)
    error = info.value
    assert isinstance(error, BridgeError) and error.stage == "port-weights"
    text = str(error)
    assert "no TF variable for torch mid.weight [8, 1, 3, 3]" in text
    assert "no TF variable for torch mid.bias [8]" in text
    assert "allow_partial" in text
    for old, var in zip(before, target.weights):  # refused: nothing was assigned
        np.testing.assert_array_equal(old, var.numpy())


def test_allow_partial_ports_the_rest() -> None:
    source, target = _randomise(TorchCNN()), keras_cnn(with_mid=False)
    report = port_weights(source, target, allow_partial=True)
    assert report.assigned and not report.complete
    assert report.unmatched_torch == [("mid.weight", (8, 1, 3, 3)), ("mid.bias", (8,))]
    assert report.unmatched_tf == [] and report.mismatched == []
    assert len(report.matched) == 10
    fc_kernel = target.layers[-1].kernel.numpy()
    np.testing.assert_array_equal(fc_kernel, source.fc.weight.detach().numpy().T)
    conv_kernel = target.layers[0].kernel.numpy()
    np.testing.assert_array_equal(conv_kernel, W.oihw_to_hwio(source.conv.weight.detach().numpy()))


def test_same_name_wrong_shape_is_a_mismatch() -> None:
    class WrongShapes(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = tf.Variable(tf.zeros([3]))
            self.b = tf.Variable(tf.zeros([1]))

    with pytest.raises(WeightPortError) as info:
        port_weights(_linear_model_class()(), WrongShapes())
    assert "mismatched: torch a [2] -> tf a [3]" in str(info.value)
    report = port_weights(_linear_model_class()(), target := WrongShapes(), allow_partial=True)
    assert [m.torch_key for m in report.mismatched] == ["a"]
    assert [m.tf_name for m in report.matched] == ["b"]
    assert float(target.b.numpy()[0]) == pytest.approx(0.25)


def test_extra_tf_variable_is_unmatched() -> None:
    class Extra(TfLinear):
        def __init__(self) -> None:
            super().__init__()
            self.c = tf.Variable(tf.zeros([4, 4]))

    with pytest.raises(WeightPortError, match="1 problem"):
        port_weights(_linear_model_class()(), Extra())


def test_mapping_to_unknown_variable_is_reported() -> None:
    with pytest.raises(WeightPortError) as info:
        port_weights(_linear_model_class()(), TfLinear(), mapping={"a": "nope"})
    assert "no TF variable named 'nope'" in str(info.value)


def test_mapping_with_custom_transform_for_nhwc_flatten() -> None:
    """Flatten of an NHWC map feeds a Dense: rows must be permuted, which only the mapping can say."""
    torch_model = _randomise(nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)))
    target = keras.Sequential([keras.Input((6, 6, 3)), keras.layers.Conv2D(2, 3), keras.layers.Flatten(),
                               keras.layers.Dense(3)])
    order = np.arange(2 * 4 * 4).reshape(2, 4, 4).transpose(1, 2, 0).ravel()
    report = port_weights(torch_model, target)  # shapes fit, feature order does not: numbers must differ
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(IMG)).numpy()
    assert not np.allclose(_nhwc(target, IMG), expected, atol=1e-3)
    dense_name = next(m.tf_name for m in report.matched if m.torch_key == "2.weight")
    assert dense_name.endswith(".kernel") and dense_name.startswith("dense")
    port_weights(torch_model, target, mapping={
        "2.weight": (dense_name, lambda w: W.permute_rows(W.linear_to_in_out(w), order))})
    np.testing.assert_allclose(_nhwc(target, IMG), expected, atol=ATOL, rtol=RTOL)


def test_unbuilt_keras_model_is_refused() -> None:
    with pytest.raises(WeightPortError, match="no variables"):
        port_weights(_linear_model_class()(), keras.Sequential([keras.layers.Dense(1)]))


def test_report_to_dict_round_trips_counts() -> None:
    report: PortReport = port_weights(_linear_model_class()(), TfLinear())
    data = report.to_dict()
    assert len(data["matched"]) == 2 and data["assigned"] is True  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ recurrent

class TorchRnn(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.rnn = (nn.LSTM if kind == "lstm" else nn.GRU)(4, 5, num_layers=2, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.rnn(x)[0])


def keras_rnn(kind: str) -> Any:
    """Two bidirectional Keras layers (concat) and a Dense, like TorchRnn."""
    def cell() -> Any:
        if kind == "lstm":
            return keras.layers.LSTM(5, return_sequences=True)
        return keras.layers.GRU(5, return_sequences=True, reset_after=True)
    return keras.Sequential([keras.Input((7, 4)), keras.layers.Bidirectional(cell()),
                             keras.layers.Bidirectional(cell()), keras.layers.Dense(3)])


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_recurrent_port_matches_torch(kind: str) -> None:
    torch.manual_seed(0)
    source, target = TorchRnn(kind).eval(), keras_rnn(kind)
    report = port_weights(source, target)
    assert report.complete, report.summary()
    assert {m.transform for m in report.matched} == {f"{kind}_kernel", f"{kind}_bias", "in_out", "identity"}
    x = np.random.default_rng(1).standard_normal((2, 7, 4)).astype(np.float32)
    with torch.no_grad():
        expected = source(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.asarray(target(x)), expected, atol=ATOL, rtol=RTOL)
