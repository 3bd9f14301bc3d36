"""Large weights go through the graph passes as stand-ins (bridge.tfjs.weight_stubs); the web model must not change.

Each SavedModel here holds a few 2-4 MiB weights. It is written once with stand-ins (the default) and once with
them disabled (threshold raised); the files must be byte-identical and must run in TF.js (Node, wasm) like TF.
Must-fail twins: a pass reading a stand-in's fill is caught (and the real graph is optimized instead), and with
the check switched off the same pass gives a different, wrong web model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from bridge.errors import ConversionError  # noqa: E402
from bridge.tfjs import fusions, weight_stubs  # noqa: E402
from bridge.tfjs.convert import TfjsOptions, convert_graph  # noqa: E402
from bridge.tfjs.graph_names import const_value  # noqa: E402
from bridge.tfjs.optimize import OptimizedGraph, optimize_for_tfjs  # noqa: E402

ATOL = 1e-5


def _weight(rng: np.random.Generator, *shape: int) -> Any:
    fan_in = int(np.prod(shape[:-1]))
    return tf.Variable(rng.uniform(-1.0, 1.0, shape).astype(np.float32) / np.sqrt(fan_in))


class ConvBnDense(tf.Module):
    """Conv 3x3x256x256 (2.25 MiB) + fused batch norm (folding reads the conv weight), dense 256x2048 (2 MiB) +
    bias (folded into the weight), dense 2048x512 (4 MiB)."""

    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(0)
        self.conv = _weight(rng, 3, 3, 256, 256)
        self.bn = [tf.Variable(rng.uniform(lo, hi, 256).astype(np.float32))
                   for lo, hi in ((0.5, 1.5), (-0.5, 0.5), (-0.2, 0.2), (0.5, 1.5))]
        self.dense1, self.bias1 = _weight(rng, 256, 2048), tf.Variable(rng.uniform(-0.1, 0.1, 2048).astype("f4"))
        self.dense2 = _weight(rng, 2048, 512)

    @tf.function(input_signature=[tf.TensorSpec([1, 6, 6, 256], tf.float32, name="x")])
    def __call__(self, x: Any) -> Any:
        y = tf.nn.conv2d(x, self.conv, 1, "SAME")
        y, _, _ = tf.compat.v1.nn.fused_batch_norm(y, *self.bn, epsilon=1e-3, is_training=False)
        y = tf.reduce_mean(tf.nn.relu(y), axis=[1, 2])
        y = tf.nn.relu(tf.matmul(y, self.dense1) + self.bias1)
        return {"y": tf.matmul(y, self.dense2)}


class FoldedWeights(tf.Module):
    """Weights grappler constant-folds (transpose, times two): the stand-ins would be folded, so the real graph
    must be optimized instead."""

    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(1)
        self.a = _weight(rng, 1024, 768)  # 3 MiB
        self.b = _weight(rng, 1024, 1024)  # 4 MiB

    @tf.function(input_signature=[tf.TensorSpec([2, 1024], tf.float32, name="x")])
    def __call__(self, x: Any) -> Any:
        y = tf.matmul(x, tf.transpose(self.b * 2.0))
        return {"y": tf.matmul(tf.tanh(y), self.a)}


MODELS: dict[str, tuple[Callable[[], tf.Module], tuple[int, ...], str]] = {
    "conv_bn_dense": (ConvBnDense, (1, 6, 6, 256), "stubbed"),
    "folded_weights": (FoldedWeights, (2, 1024), "real weights"),
}


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("large_weights")
    paths = {}
    for name, (build, _, _) in MODELS.items():
        module = build()
        tf.saved_model.save(module, str(root / name), signatures=module.__call__.get_concrete_function())
        paths[name] = root / name
    return paths


def convert(saved_model: Path, out: Path) -> OptimizedGraph:
    graph = optimize_for_tfjs(saved_model)
    convert_graph(graph, out, TfjsOptions())
    return graph


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def disable_stubs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weight_stubs, "STUB_MIN_BYTES", 1 << 40)


def inputs_for(shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(5).uniform(-1.0, 1.0, shape).astype(np.float32)}


@pytest.mark.node
@pytest.mark.parametrize("name", sorted(MODELS))
def test_stubbed_and_real_write_the_same_bytes(name: str, saved_models: dict[str, Path], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge.runtime.node import node_status, run_graph_model

    _, shape, expected_path = MODELS[name]
    stubbed = convert(saved_models[name], tmp_path / "stubbed")
    assert stubbed.weight_stubs.startswith(expected_path), stubbed.weight_stubs
    with monkeypatch.context() as patch:
        disable_stubs(patch)
        real = convert(saved_models[name], tmp_path / "real")
    assert real.weight_stubs == "no large weights"
    assert files(tmp_path / "stubbed") == files(tmp_path / "real")

    status = node_status()
    if not status.ok:
        pytest.skip("Node harness unavailable: " + "; ".join(status.problems))
    inputs = inputs_for(shape)
    loaded = tf.saved_model.load(str(saved_models[name])).signatures["serving_default"]
    want = {k: v.numpy() for k, v in loaded(x=tf.constant(inputs["x"])).items()}
    runs = run_graph_model(tmp_path / "stubbed", [inputs], backends=["wasm"])
    assert runs["wasm"].ok, runs["wasm"].error
    for key, value in want.items():
        np.testing.assert_allclose(runs["wasm"].outputs[0][key], value, atol=ATOL, rtol=0)


def test_const_value_resolves_stand_ins_or_refuses_them() -> None:
    value = np.arange(300_000, dtype=np.float32).reshape(600, 500)
    graph = tf.Graph()
    with graph.as_default():
        tf.constant(value, name="w")
    graph_def = graph.as_graph_def()
    stubs = weight_stubs.WeightStubs(min_bytes=1 << 20)
    assert stubs.collect(graph_def) == 1
    stubbed = stubs.stubbed_copy(graph_def)
    assert stubbed.ByteSize() < 200 and graph_def.ByteSize() > 1_200_000  # the argument keeps its value
    node = stubbed.node[0]
    with pytest.raises(ConversionError, match="stand-in"):
        const_value(node)  # the fill is never handed out as the weight
    with stubs.activated():
        np.testing.assert_array_equal(const_value(node), value)
    assert stubs.restore(stubbed) == 1
    assert stubbed == graph_def


def _read_raw(node: Any) -> np.ndarray:
    """A pass that ignores stand-ins: reads the TensorProto's values as they are."""
    return tf.make_ndarray(node.attr["value"].tensor)


def test_a_pass_reading_a_stand_in_fill_is_caught(saved_models: dict[str, Path], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Batch-norm folding made to read the conv weight's fill: the two probes disagree, the real graph is
    optimized instead, and the bytes are right."""
    path = saved_models["conv_bn_dense"]
    with monkeypatch.context() as patch:
        disable_stubs(patch)
        convert(path, tmp_path / "real")
    monkeypatch.setattr(fusions, "const_value", _read_raw)
    graph = convert(path, tmp_path / "caught")
    assert graph.weight_stubs.startswith("real weights (node "), graph.weight_stubs
    assert files(tmp_path / "caught") == files(tmp_path / "real")


def test_without_the_check_the_fill_would_reach_the_web_model(saved_models: dict[str, Path], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Must-fail twin: with the probe comparison and the survivor check switched off, the same pass writes
    different (wrong) weights."""
    path = saved_models["conv_bn_dense"]
    with monkeypatch.context() as patch:
        disable_stubs(patch)
        convert(path, tmp_path / "real")
    monkeypatch.setattr(fusions, "const_value", _read_raw)
    monkeypatch.setattr(weight_stubs.WeightStubs, "check_same", lambda self, first, other: None)
    monkeypatch.setattr(weight_stubs.WeightStubs, "check_survivors", lambda self, found: None)
    graph = convert(path, tmp_path / "unchecked")
    assert graph.weight_stubs.startswith("stubbed"), graph.weight_stubs
    written, right = files(tmp_path / "unchecked"), files(tmp_path / "real")
    assert written["model.json"] == right["model.json"]
    assert written != right


def test_a_stand_in_folded_by_grappler_is_caught(saved_models: dict[str, Path]) -> None:
    """Grappler folds transpose(b * 2) into a new constant: the stand-in disappears and the folded value differs
    between probes, so the real graph is optimized."""
    from bridge.tfjs.freeze import freeze_signature
    from bridge.tfjs.optimize import _optimize_stubbed

    frozen = freeze_signature(saved_models["folded_weights"])
    stubs = weight_stubs.WeightStubs()
    assert stubs.collect(frozen.graph_def) == 2
    with pytest.raises(weight_stubs.StubsConsumed):
        _optimize_stubbed(frozen.graph_def, frozen.inputs, frozen.outputs, True, stubs)
