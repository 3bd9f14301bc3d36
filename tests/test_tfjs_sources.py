"""bridge.tfjs.sources: every input format `bridge tfjs` reads, made in the test, converted, and run in TF.js.

Frozen graphs, TF1- and TF2-style Hub modules, Keras files (.h5, .keras, Keras SavedModel) to graph models, a
TF.js layers model to a graph model, and the seed tutorial's subclassed linear model: each written as a graph
model and run in TF.js Node, matching the source's own reference run. Every bad input has its typed error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from bridge.errors import (MissingNodesError, MissingSignatureError, SourceFormatError, UnsupportedLayersError,
                           UsageError)
from bridge.runtime.node import node_status, run_graph_model
from bridge.tfjs.sources import convert_source, detect_input_format, load_source, write_source
from tfjs_keras_cases import CASE_BY_NAME, CASES, FLAVOUR_OF_FORMAT, build, save_as

ATOL = 1e-5
needs_node = pytest.mark.skipif(not node_status().ok, reason="Node or the pinned TF.js npm packages are missing")


def _graph_run_matches(folder: Path, inputs: dict[str, np.ndarray], reference: dict[str, np.ndarray],
                       backends: tuple[str, ...] = ("wasm", "cpu")) -> None:
    runs = run_graph_model(folder, [inputs], backends=backends)
    for backend, run in runs.items():
        assert run.error is None, (backend, run.error)
        assert set(run.outputs[0]) == set(reference)
        for name, value in run.outputs[0].items():
            np.testing.assert_allclose(value, reference[name], rtol=0, atol=ATOL, err_msg=f"{backend} {name}")


# ------------------------------------------------------------------------------------------- made in the test

class _Affine(tf.Module):
    """A small TF2 model with variables: dense + relu, then a softmax head."""

    def __init__(self) -> None:
        rng = np.random.default_rng(4)
        self.w = tf.Variable(rng.normal(size=(4, 6)).astype("float32"))
        self.b = tf.Variable(rng.normal(size=(6,)).astype("float32"))
        self.head = tf.Variable(rng.normal(size=(6, 3)).astype("float32"))

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def __call__(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        hidden = tf.nn.relu(tf.matmul(x, self.w) + self.b)
        return {"hidden": hidden, "probs": tf.nn.softmax(tf.matmul(hidden, self.head))}


def _numpy_affine(x: np.ndarray) -> np.ndarray:
    module = _Affine()
    hidden = np.maximum(x @ module.w.numpy() + module.b.numpy(), 0)
    logits = hidden @ module.head.numpy()
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def frozen_pb(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A frozen GraphDef file and the name of its probabilities output node."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    module = _Affine()
    frozen = convert_variables_to_constants_v2(module.__call__.get_concrete_function())
    path = tmp_path_factory.mktemp("frozen") / "frozen_model.pb"
    path.write_bytes(frozen.graph.as_graph_def().SerializeToString())
    function = module.__call__.get_concrete_function()
    probs = sorted(function.structured_outputs).index("probs")  # outputs flatten in sorted key order
    return path, frozen.outputs[probs].name.split(":")[0]


@pytest.fixture(scope="module")
def hub_v1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TF1 hub-format module on disk: a SavedModel whose graph has no tags, signatures ``default`` and
    ``logits``, variables, and the tfhub_module.pb marker (ModuleDef format FORMAT_V3: field 1 = 1)."""
    path = tmp_path_factory.mktemp("hub") / "module"
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 3], name="x")
        w = tf.compat.v1.get_variable("w", initializer=tf.constant(np.arange(6, dtype="float32").reshape(3, 2)))
        logits = tf.matmul(x, w, name="logits")
        y = tf.nn.tanh(logits, name="y")
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(str(path))
            signature = tf.compat.v1.saved_model.predict_signature_def
            builder.add_meta_graph_and_variables(session, [], signature_def_map={
                "default": signature({"x": x}, {"default": y}), "logits": signature({"x": x}, {"out": logits})})
            builder.save()
    (path / "tfhub_module.pb").write_bytes(b"\x08\x01")
    return path


@pytest.fixture(scope="module")
def hub_v2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TF2 Hub-style module: a SavedModel whose only signature is ``embed``."""
    path = tmp_path_factory.mktemp("hub2") / "module"
    module = _Affine()
    tf.saved_model.save(module, str(path), signatures={"embed": module.__call__.get_concrete_function()})
    return path


# ------------------------------------------------------------------------------------------------ detection

def test_formats_are_detected_from_disk(tmp_path: Path, frozen_pb: tuple[Path, str], hub_v1: Path,
                                        hub_v2: Path) -> None:
    import keras
    import tf_keras

    model2 = tf_keras.Sequential([tf_keras.Input((2,)), tf_keras.layers.Dense(1)])
    model3 = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    h5 = save_as(model2, "h5", tmp_path / "h5")
    ksm = save_as(model2, "keras_saved_model", tmp_path / "ksm")
    k3 = save_as(model3, "keras", tmp_path / "k3")
    from bridge.tfjs.layers import save_keras_model

    save_keras_model(model3, tmp_path / "layers")
    expected = {h5: "keras", k3: "keras_keras", ksm: "keras_saved_model", hub_v1: "tf_hub",
                hub_v2: "tf_saved_model", frozen_pb[0]: "tf_frozen_model", tmp_path / "layers": "tfjs_layers_model",
                tmp_path / "layers" / "model.json": "tfjs_layers_model"}
    assert {path: detect_input_format(path) for path in expected} == expected
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(SourceFormatError):
        detect_input_format(tmp_path / "notes.txt")
    with pytest.raises(SourceFormatError):
        detect_input_format(tmp_path / "h5")  # a folder holding a file, not a model


# ----------------------------------------------------------------------------------------------- graph inputs

@needs_node
@pytest.mark.node
def test_frozen_graph_to_graph_model(tmp_path: Path, frozen_pb: tuple[Path, str]) -> None:
    path, softmax = frozen_pb
    x = np.random.default_rng(1).normal(size=(3, 4)).astype("float32")
    with load_source(path, output_node_names=[softmax]) as source:
        assert [s.name for s in source.inputs] == ["x"] and [s.name for s in source.outputs] == [softmax]
        assert source.default_output_format == "tfjs_graph_model"
        reference = source.reference({"x": x})
        np.testing.assert_allclose(reference[softmax], _numpy_affine(x), rtol=1e-5, atol=1e-6)
        write_source(source, tmp_path / "web")
    _graph_run_matches(tmp_path / "web", {"x": x}, reference)


def test_frozen_graph_without_or_with_unknown_output_nodes_lists_candidates(frozen_pb: tuple[Path, str]) -> None:
    path, softmax = frozen_pb
    with pytest.raises(MissingNodesError) as none_given:
        load_source(path)
    assert softmax in none_given.value.candidates
    with pytest.raises(MissingNodesError) as unknown:
        load_source(path, output_node_names=[softmax + "x", "nope"])
    assert unknown.value.missing == [softmax + "x", "nope"]
    assert softmax in unknown.value.candidates
    with pytest.raises(MissingNodesError):
        load_source(path, output_node_names=[softmax], input_node_names=["not_an_input"])


@pytest.mark.parametrize("content", [b"\x00\x01garbage\xff" * 10, b"", b"node { name: 'a' }"],
                         ids=["binary-noise", "empty", "text-without-op"])
def test_a_pb_that_is_not_a_graphdef_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.pb"
    path.write_bytes(content)
    with pytest.raises(SourceFormatError, match="not a TensorFlow GraphDef"):
        load_source(path, output_node_names=["y"])


def test_an_unfrozen_graph_is_refused(tmp_path: Path) -> None:
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.get_variable("v", shape=[2])
    path = tmp_path / "graph.pb"
    path.write_bytes(graph.as_graph_def().SerializeToString())
    with pytest.raises(SourceFormatError, match="not frozen"):
        load_source(path, output_node_names=["v"])


@needs_node
@pytest.mark.node
def test_tf1_hub_module_to_graph_model(tmp_path: Path, hub_v1: Path) -> None:
    x = np.array([[0.5, -1.0, 2.0], [0.0, 0.1, -0.2]], "float32")
    for signature, key in ((None, "default"), ("logits", "out")):
        out = tmp_path / f"web_{key}"
        with load_source(hub_v1, signature=signature) as source:
            assert source.input_format == "tf_hub"
            reference = source.reference({"x": x})
            w = np.arange(6, dtype="float32").reshape(3, 2)
            np.testing.assert_allclose(reference[key], np.tanh(x @ w) if key == "default" else x @ w, rtol=1e-6)
            write_source(source, out)
        _graph_run_matches(out, {"x": x}, reference, backends=("wasm",))


@needs_node
@pytest.mark.node
def test_tf2_hub_module_to_graph_model(tmp_path: Path, hub_v2: Path) -> None:
    x = np.random.default_rng(2).normal(size=(2, 4)).astype("float32")
    with load_source(hub_v2, "tf_hub", signature="embed") as source:
        reference = source.reference({"x": x})
        np.testing.assert_allclose(reference["probs"], _numpy_affine(x), rtol=1e-5, atol=1e-6)
        write_source(source, tmp_path / "web")
    _graph_run_matches(tmp_path / "web", {"x": x}, reference, backends=("wasm",))


@pytest.mark.parametrize(("which", "asked", "available"), [
    ("v1", "serving_default", ["default", "logits"]), ("v1", None, None), ("v2", None, ["embed"])],
    ids=["tf1-wrong-name", "tf1-default-present", "tf2-default-missing"])
def test_hub_module_without_the_asked_signature_lists_the_ones_it_has(hub_v1: Path, hub_v2: Path, which: str,
                                                                       asked: str | None,
                                                                       available: list[str] | None) -> None:
    path = hub_v1 if which == "v1" else hub_v2
    if available is None:  # the must-fail twin: the default signature of the TF1 module is there
        load_source(path, "tf_hub", signature=asked).close()
        return
    with pytest.raises(MissingSignatureError) as caught:
        load_source(path, "tf_hub", signature=asked)
    assert caught.value.available == available
    assert all(name in str(caught.value) for name in available)


class _TutorialLinear:
    """The seed tutorial's network: two slopes `a`, one intercept `b`, call(x) = reduce_sum(a * x, 1) + b."""

    A = np.array([0.25, -1.5], "float32")
    B = np.array([0.75], "float32")

    @classmethod
    def tf_keras(cls) -> Any:
        import tf_keras

        class LinearModel(tf_keras.Model):
            def __init__(self) -> None:
                super().__init__()
                self.a = tf.Variable(cls.A, name="a")
                self.b = tf.Variable(cls.B, name="b")

            @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
            def call(self, x: tf.Tensor) -> tf.Tensor:
                return tf.reduce_sum(self.a * x, axis=1) + self.b

        return LinearModel()

    @classmethod
    def keras3(cls) -> Any:
        import keras

        class LinearModel(keras.Model):
            def __init__(self) -> None:
                super().__init__()
                self.a = self.add_weight(shape=(2,), initializer=keras.initializers.Constant(cls.A), name="a")
                self.b = self.add_weight(shape=(1,), initializer=keras.initializers.Constant(cls.B), name="b")

            def call(self, x: Any) -> Any:
                return keras.ops.sum(self.a * x, axis=1) + self.b

        return LinearModel()


@needs_node
@pytest.mark.node
def test_seed_tutorial_subclassed_linear_model(tmp_path: Path) -> None:
    x = np.array([[0.6, 0.2]], "float32")
    expected = np.array([0.6 * 0.25 + 0.2 * -1.5 + 0.75], "float32")
    net = _TutorialLinear.tf_keras()
    tf.saved_model.save(net, str(tmp_path / "tf_keras_saved"))  # the tutorial's own step
    net3 = _TutorialLinear.keras3()
    net3(x)
    net3.export(str(tmp_path / "keras3_export"), verbose=False)
    for folder in ("tf_keras_saved", "keras3_export"):
        with load_source(tmp_path / folder) as source:
            assert source.input_format == "tf_saved_model"
            (name,) = [s.name for s in source.inputs]
            reference = source.reference({name: x})
            (value,) = reference.values()
            np.testing.assert_allclose(value, expected, rtol=1e-6)
            write_source(source, tmp_path / f"{folder}_web")
        _graph_run_matches(tmp_path / f"{folder}_web", {name: x}, reference)
    with pytest.raises(UnsupportedLayersError, match="subclassed"):
        from bridge.tfjs.layers import save_keras_model

        save_keras_model(net3, tmp_path / "layers")


# ----------------------------------------------------------------------------------------------- Keras inputs

def _keras_graph_params() -> list[Any]:
    default = {("sequential_dense", "h5"), ("conv_branches", "keras"), ("shared_layers", "keras_saved_model")}
    return [pytest.param(case.name, fmt, id=f"{case.name}-{fmt}",
                         marks=[] if (case.name, fmt) in default else [pytest.mark.slow])
            for case in CASES for fmt in ("h5", "keras", "keras_saved_model")]


@needs_node
@pytest.mark.node
@pytest.mark.parametrize(("case_name", "fmt"), _keras_graph_params())
def test_keras_files_to_graph_models(tmp_path: Path, case_name: str, fmt: str) -> None:
    case = CASE_BY_NAME[case_name]
    path = save_as(build(case, FLAVOUR_OF_FORMAT[fmt]), fmt, tmp_path / "src")
    inputs = case.inputs(np.random.default_rng(9))
    with load_source(path) as source:
        reference = source.reference(inputs)
        summary = write_source(source, tmp_path / "web", output_format="tfjs_graph_model")
    assert summary.format == "graph-model"
    _graph_run_matches(tmp_path / "web", inputs, reference)


@needs_node
@pytest.mark.node
def test_layers_model_to_graph_model(tmp_path: Path) -> None:
    from bridge.tfjs.layers import save_keras_model

    case = CASE_BY_NAME["conv_branches"]
    model = build(case, "tf_keras")
    inputs = case.inputs(np.random.default_rng(8))
    expected = model(inputs["image"], training=False)
    save_keras_model(model, tmp_path / "layers", quantize=["uint16:*kernel"])
    with load_source(tmp_path / "layers") as source:
        assert (source.input_format, source.default_output_format) == ("tfjs_layers_model", "tfjs_graph_model")
        reference = source.reference(inputs)
        for got, want in zip((reference["logits"], reference["probs"]), expected):
            np.testing.assert_allclose(got, np.asarray(want), rtol=0, atol=1e-3)  # uint16 kernels
        write_source(source, tmp_path / "graph")
    _graph_run_matches(tmp_path / "graph", inputs, reference)


def test_convert_source_writes_the_default_format(tmp_path: Path) -> None:
    import tf_keras

    model = tf_keras.Sequential([tf_keras.Input((3,), name="x"), tf_keras.layers.Dense(2)])
    path = save_as(model, "h5", tmp_path / "src")
    summary = convert_source(path, tmp_path / "web", quantize=["float16"])
    assert summary.format == "layers-model" and summary.bytes_by_dtype == {"float16": 16}
    assert json.loads((tmp_path / "web" / "model.json").read_text())["format"] == "layers-model"


# ------------------------------------------------------------------------------------------------ bad inputs

def test_an_h5_holding_only_weights_is_refused(tmp_path: Path) -> None:
    import tf_keras

    model = tf_keras.Sequential([tf_keras.Input((3,)), tf_keras.layers.Dense(2)])
    model.save_weights(str(tmp_path / "weights.h5"))
    with pytest.raises(SourceFormatError, match="weights only"):
        load_source(tmp_path / "weights.h5")
    model.save(str(tmp_path / "whole.h5"))  # the must-fail twin: the whole model loads
    load_source(tmp_path / "whole.h5").close()


def test_a_keras3_file_with_a_layer_class_tfjs_lacks(tmp_path: Path) -> None:
    import keras

    a, b = keras.Input((3,), name="a"), keras.Input((3,), name="b")
    model = keras.Model([a, b], keras.layers.Dense(2)(keras.layers.Subtract(name="difference")([a, b])))
    path = save_as(model, "keras", tmp_path / "src")
    with load_source(path) as source:
        with pytest.raises(UnsupportedLayersError) as caught:
            write_source(source, tmp_path / "layers")
        assert ("difference", "Subtract") in [(n, c) for n, c, _ in caught.value.layers]
        assert not (tmp_path / "layers").exists()
        write_source(source, tmp_path / "graph", output_format="tfjs_graph_model")  # the way out named
    assert (tmp_path / "graph" / "model.json").is_file()


def test_keras_files_whose_layers_are_python_code(tmp_path: Path) -> None:
    import keras

    @keras.saving.register_keras_serializable(package="bridge_test")
    class Doubler(keras.layers.Layer):
        def call(self, x: Any) -> Any:
            return x * 2.0

    x = keras.Input((3,), name="x")
    custom = save_as(keras.Model(x, Doubler(name="doubler")(x)), "keras", tmp_path / "custom")
    with pytest.raises(UnsupportedLayersError) as caught:
        load_source(custom)
    assert caught.value.layers[0][:2] == ("doubler", "Doubler")
    lam = save_as(keras.Model(x, keras.layers.Lambda(lambda t: t + 1.0, name="inc")(x)), "keras", tmp_path / "lam")
    with pytest.raises(UnsupportedLayersError, match="Python code") as refused:
        load_source(lam)
    assert "trust_code" in (refused.value.hint or "")
    with load_source(lam, trust_code=True) as source:  # only for files you made: the lambda's code runs
        assert source.reference({"x": np.ones((1, 3), "float32")})[source.outputs[0].name].tolist() == [[2.0] * 3]


def test_source_checks_sample_inputs(hub_v1: Path) -> None:
    with load_source(hub_v1) as source:
        checked = source.check_inputs({"x": np.ones((2, 3), "float64")})
        assert checked["x"].dtype == np.float32
        with pytest.raises(UsageError, match="shape"):
            source.check_inputs({"x": np.ones((2, 4), "float32")})
        with pytest.raises(UsageError, match="unknown"):
            source.check_inputs({"x": np.ones((2, 3)), "y": np.ones(1)})


def test_options_that_do_not_apply_are_refused(tmp_path: Path, frozen_pb: tuple[Path, str], hub_v1: Path) -> None:
    with pytest.raises(UsageError):
        load_source(frozen_pb[0], output_node_names=[frozen_pb[1]], signature="default")
    with pytest.raises(UsageError):
        load_source(hub_v1, output_node_names=["y"])
    with pytest.raises(UsageError, match="unknown input format"):
        load_source(hub_v1, "onnx")
    with load_source(hub_v1) as source, pytest.raises(UsageError, match="no Keras layers"):
        write_source(source, tmp_path / "never", output_format="tfjs_layers_model")
    assert not (tmp_path / "never").exists()
