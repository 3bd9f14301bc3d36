"""bridge's own TF.js layers-model writer (bridge.tfjs.layers), checked in the real TF.js runtime.

The Keras model table (tests/tfjs_keras_cases.py) is saved as .h5 and Keras SavedModel (tf_keras) and .keras
(Keras 3), read back with bridge.tfjs.sources, written as layers models, loaded with tf.loadLayersModel in Node
(wasm and cpu) and predicted within 1e-5 of Keras; one fit epoch runs and changes the weights (cpu; wasm lacks
some gradient kernels, which must be the only way it fails). Also: byte-identical double conversions, sizes,
quantization, the trainingConfig (a fit driven by it matches Keras' own SGD step), strict weight names, and
every refusal.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.errors import OutputError, TrainingConfigError, UnsupportedLayersError
from bridge.runtime.node import LayersFit, node_modules_dir, node_status, run_layers_model
from bridge.tfjs.layers import LayersModelOptions, save_keras_model, write_layers_model
from tfjs_keras_cases import CASE_BY_NAME, CASES, FLAVOUR_OF_FORMAT, build, save_as

ATOL = 1e-5
needs_node = pytest.mark.skipif(not node_status().ok, reason="Node or the pinned TF.js npm packages are missing")
WASM_TRAINING_GAPS = ("Conv2DBackpropFilter", "UnsortedSegmentSum")  # kernels tfjs-backend-wasm 4.22 lacks


@dataclass
class Converted:
    """One table case read from its file and written as a layers model."""

    folder: Path
    inputs: dict[str, np.ndarray]
    reference: dict[str, np.ndarray]
    outputs: list[str]
    source_weight_bytes: int


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Converts (case, format) pairs on first use and keeps them for the module."""
    from bridge.tfjs.sources import load_source, write_source

    root = tmp_path_factory.mktemp("layers_table")
    done: dict[tuple[str, str], Converted] = {}

    def get(case_name: str, fmt: str) -> Converted:
        if (case_name, fmt) not in done:
            case = CASE_BY_NAME[case_name]
            model = build(case, FLAVOUR_OF_FORMAT[fmt])
            path = save_as(model, fmt, root / case_name / fmt)
            inputs = case.inputs(np.random.default_rng(11))
            with load_source(path) as source:
                assert source.default_output_format == "tfjs_layers_model"
                write_source(source, root / case_name / f"{fmt}_web")
                reference = source.reference(inputs)
                names = [spec.name for spec in source.outputs]
            weight_bytes = sum(int(np.asarray(w).nbytes) for w in model.get_weights())
            done[(case_name, fmt)] = Converted(root / case_name / f"{fmt}_web", inputs, reference, names,
                                               weight_bytes)
        return done[(case_name, fmt)]

    return get


def _params() -> list[Any]:
    params = []
    for case in CASES:
        for fmt in ("h5", "keras", "keras_saved_model"):
            # tf_keras SavedModels trace every layer on save and load: two cheap ones by default, the rest slow
            slow = fmt == "keras_saved_model" and case.name not in ("sequential_dense", "shared_layers")
            params.append(pytest.param(case.name, fmt, id=f"{case.name}-{fmt}",
                                       marks=[pytest.mark.slow] if slow else []))
    return params


def _targets(converted: Converted, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {name: rng.normal(size=value.shape).astype("float32") for name, value in converted.reference.items()}


# ---------------------------------------------------------------------------------------------------- the table

@needs_node
@pytest.mark.node
@pytest.mark.parametrize(("case_name", "fmt"), _params())
def test_table_predicts_in_tfjs_and_fit_changes_weights(table: Any, case_name: str, fmt: str) -> None:
    converted = table(case_name, fmt)
    fit = LayersFit(x=converted.inputs, y=_targets(converted, np.random.default_rng(5)), loss="mean_squared_error",
                    optimizer="sgd", learning_rate=0.05)
    runs = run_layers_model(converted.folder, [converted.inputs], backends=("wasm", "cpu"), fit=fit)
    for backend, run in runs.items():
        assert run.error is None, (backend, run.error)
        assert list(run.outputs[0]) == converted.outputs
        for name, value in run.outputs[0].items():
            np.testing.assert_allclose(value, converted.reference[name], rtol=0, atol=ATOL,
                                       err_msg=f"{case_name}/{fmt} {backend} {name}")
    cpu = runs["cpu"]
    assert cpu.fit_error is None and cpu.fit is not None
    assert np.isfinite(cpu.fit.loss).all()
    trainable = [n for n in cpu.fit.after if not n.endswith(("moving_mean", "moving_variance"))]
    assert set(cpu.fit.changed()) >= set(trainable), "every trainable weight moves in one SGD epoch"
    wasm = runs["wasm"]
    if wasm.fit_error is not None:
        assert any(f"'{kernel}' not registered for backend 'wasm'" in wasm.fit_error
                   for kernel in WASM_TRAINING_GAPS), wasm.fit_error


@pytest.mark.parametrize(("case_name", "fmt"), [p for p in _params() if not p.marks])
def test_sizes_within_one_percent_of_the_weight_bytes(table: Any, case_name: str, fmt: str) -> None:
    converted = table(case_name, fmt)
    shards = sorted(converted.folder.glob("group1-shard*of*.bin"))
    stored = sum(p.stat().st_size for p in shards)
    assert abs(stored - converted.source_weight_bytes) <= 0.01 * converted.source_weight_bytes
    model = json.loads((converted.folder / "model.json").read_text())
    assert model["format"] == "layers-model"
    assert model["generatedBy"].startswith("keras v") and model["convertedBy"].startswith("bridge ")
    assert set(model["modelTopology"]) >= {"class_name", "config", "keras_version", "backend"}
    assert model["modelTopology"]["class_name"] in ("Sequential", "Functional")


@needs_node
@pytest.mark.browser
def test_chromium_predicts_fits_and_keeps_the_model_in_indexeddb(table: Any) -> None:
    from bridge.runtime.browser import browser_status, run_layers_in_browser

    if not browser_status().ok:
        pytest.skip("Chromium or Playwright is missing")
    converted = table("conv_branches", "keras")
    fit = LayersFit(x=converted.inputs, y=_targets(converted, np.random.default_rng(5)), loss="mse",
                    optimizer="adam", learning_rate=0.01)
    run = run_layers_in_browser(converted.folder, [converted.inputs], backends=("webgl", "wasm"), fit=fit,
                                repeats=1)
    for backend, entry in run.backends.items():
        assert entry.error is None, (backend, entry.error)
        for name, value in entry.outputs[0].items():
            np.testing.assert_allclose(value, converted.reference[name], rtol=0, atol=ATOL, err_msg=backend)
    webgl = run.backends["webgl"]
    assert webgl.fit is not None and webgl.fit.changed(), webgl.fit_error
    assert run.indexeddb is not None and run.indexeddb.ok, run.indexeddb and run.indexeddb.error
    for name, value in run.indexeddb.outputs[0].items():
        assert np.array_equal(value, run.backends[run.indexeddb.backend].outputs[0][name])


# ---------------------------------------------------------------------------------------------- writer details

@needs_node
@pytest.mark.node
def test_registry_matches_the_installed_tfjs() -> None:
    from bridge.tfjs.layers.registry import ACTIVATIONS, LAYER_CLASSES, OPTIMIZER_CLASSES

    script = ("const tf = require(process.argv[1] + '/@tensorflow/tfjs');"
              "console.log(JSON.stringify(Object.keys(tf.serialization.SerializationMap.getMap().classNameMap)))")
    done = subprocess.run([node_status().node_path, "-e", script, str(node_modules_dir())], capture_output=True,
                          text=True, timeout=60, check=True)
    registered = set(json.loads(done.stdout.strip().splitlines()[-1]))

    def camel(name: str) -> str:
        head, *rest = name.split("_")
        return head + "".join(part.title() for part in rest)

    assert LAYER_CLASSES <= registered
    assert {camel(a) for a in ACTIVATIONS} <= registered
    assert set(OPTIMIZER_CLASSES.values()) | {"Momentum"} <= registered
    assert "Lambda" not in registered and "Subtract" not in registered  # the refusals below rely on this


def _dense_classifier(K: Any) -> Any:
    K.utils.set_random_seed(1)
    model = K.Sequential([K.Input((4,), name="x"), K.layers.Dense(6, activation="relu"),
                          K.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=K.optimizers.SGD(0.1), loss="categorical_crossentropy", metrics=["accuracy"])
    return model


@needs_node
@pytest.mark.node
def test_training_config_is_written_and_a_tfjs_fit_matches_keras_sgd(tmp_path: Path) -> None:
    import tf_keras

    model = _dense_classifier(tf_keras)
    save_keras_model(model, tmp_path / "web")
    written = json.loads((tmp_path / "web" / "model.json").read_text())["trainingConfig"]
    assert written == {"loss": "categorical_crossentropy", "metrics": ["accuracy"],
                       "optimizer_config": {"class_name": "SGD", "config": {"learning_rate": pytest.approx(0.1)}}}
    rng = np.random.default_rng(2)
    x = rng.normal(size=(8, 4)).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, 8)]
    run = run_layers_model(tmp_path / "web", [{"x": x}], backends=("cpu",),
                           fit=LayersFit(x={"x": x}, y=[y], batch_size=8))["cpu"]  # no loss: the trainingConfig's
    model.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    expected = {f"{layer.name}/{w.name.split('/')[-1].split(':')[0]}": w.numpy()
                for layer in model.layers for w in layer.weights}
    assert run.fit is not None, run.fit_error
    assert set(run.fit.changed()) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(run.fit.after[name], value, rtol=0, atol=1e-5, err_msg=name)


def test_training_config_tfjs_cannot_read_is_left_out_or_refused(tmp_path: Path) -> None:
    import tf_keras

    model = _dense_classifier(tf_keras)
    model.compile(optimizer=tf_keras.optimizers.Adam(1e-3, clipnorm=1.0),
                  loss=tf_keras.losses.CategoricalCrossentropy(from_logits=True))
    summary = save_keras_model(model, tmp_path / "auto")
    assert "trainingConfig" not in json.loads((tmp_path / "auto" / "model.json").read_text())
    assert any("from_logits" in note and "clipnorm" in note for note in summary.notes)
    with pytest.raises(TrainingConfigError) as caught:
        save_keras_model(model, tmp_path / "strict", training_config=True)
    assert any("from_logits" in d for d in caught.value.details)
    assert not (tmp_path / "strict").exists()


def test_two_conversions_are_byte_identical(tmp_path: Path) -> None:
    for flavour in ("tf_keras", "keras3"):
        model = build(CASE_BY_NAME["conv_branches"], flavour)
        first = save_keras_model(model, tmp_path / f"{flavour}_1")
        second = save_keras_model(model, tmp_path / f"{flavour}_2")
        names = sorted(p.name for p in first.out_dir.iterdir())
        assert names == sorted(p.name for p in second.out_dir.iterdir())
        for name in names:
            assert (first.out_dir / name).read_bytes() == (second.out_dir / name).read_bytes(), (flavour, name)


@needs_node
@pytest.mark.node
def test_quantized_layers_model_loads_within_the_quantization_error(tmp_path: Path) -> None:
    import keras

    model = build(CASE_BY_NAME["norms_activations"], "keras3")
    x = CASE_BY_NAME["norms_activations"].inputs(np.random.default_rng(3))
    reference = np.asarray(model(x["x"], training=False))
    plain = save_keras_model(model, tmp_path / "plain")
    half = save_keras_model(model, tmp_path / "half", quantize=["float16"])
    mixed = save_keras_model(model, tmp_path / "mixed", quantize=["uint8:*kernel"])
    assert set(mixed.bytes_by_dtype) == {"uint8", "float32"} and mixed.weight_bytes < plain.weight_bytes
    assert half.bytes_by_dtype == {"float16": plain.weight_bytes // 2}
    manifest = json.loads((tmp_path / "mixed" / "model.json").read_text())["weightsManifest"][0]["weights"]
    assert {w["name"] for w in manifest if "quantization" in w} == {
        w["name"] for w in manifest if w["name"].endswith("/kernel")}
    for folder, tolerance in (("half", 2e-2), ("mixed", 2e-1)):
        out = run_layers_model(tmp_path / folder, [x], backends=("wasm",))["wasm"]
        assert out.error is None
        error = np.abs(out.outputs[0]["out"] - reference).max()
        assert 0 < error < tolerance, (folder, error)
    assert keras.__version__.startswith("3.")


@needs_node
@pytest.mark.node
def test_tfjs_loads_weights_by_name_strictly(tmp_path: Path) -> None:
    import tf_keras

    save_keras_model(_dense_classifier(tf_keras), tmp_path / "web")
    path = tmp_path / "web" / "model.json"
    model = json.loads(path.read_text())
    model["weightsManifest"][0]["weights"][0]["name"] += "_renamed"
    path.write_text(json.dumps(model))
    run = run_layers_model(tmp_path / "web", [{"x": np.zeros((1, 4), "float32")}], backends=("cpu",))["cpu"]
    assert run.error is not None and "no target variable" in run.error


def test_output_is_atomic_and_replaced_only_with_force(tmp_path: Path) -> None:
    import tf_keras

    out = tmp_path / "web"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputError):
        save_keras_model(_dense_classifier(tf_keras), out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    save_keras_model(_dense_classifier(tf_keras), out, force=True)
    assert sorted(p.name for p in out.iterdir()) == ["group1-shard1of1.bin", "model.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_save_keras_model_is_on_bridge_tfjs() -> None:
    import bridge.tfjs

    assert bridge.tfjs.save_keras_model is save_keras_model
    assert write_layers_model is not None and LayersModelOptions().shard_size == 4 * 1024 * 1024


# ------------------------------------------------------------------------------------------------ refusals

class _Scaled:
    """Builds a tf_keras model with a Python-defined layer class."""

    @staticmethod
    def build() -> Any:
        import tf_keras

        class Scale(tf_keras.layers.Layer):
            def call(self, inputs: Any) -> Any:
                return inputs * 2.0

        x = tf_keras.Input((3,), name="x")
        return tf_keras.Model(x, tf_keras.layers.Dense(2)(Scale(name="scale")(x)))


def _tf_keras_lambda() -> Any:
    import tf_keras

    x = tf_keras.Input((3,))
    h = tf_keras.layers.Lambda(lambda t: t * 3.0, name="triple")(x)
    return tf_keras.Model(x, tf_keras.layers.Dense(2)(h))


def _keras3_lambda() -> Any:
    import keras

    x = keras.Input((3,))
    return keras.Model(x, keras.layers.Lambda(lambda t: t + 1.0, name="plus_one")(x))


def _gru_reset_after() -> Any:
    import keras

    x = keras.Input((4, 2))
    return keras.Model(x, keras.layers.GRU(3, name="gru_default")(x))


def _elu_alpha() -> Any:
    import tf_keras

    x = tf_keras.Input((3,))
    return tf_keras.Model(x, tf_keras.layers.ELU(alpha=0.5, name="soft_elu")(x))


def _keras3_hard_sigmoid() -> Any:
    import keras

    x = keras.Input((3,))
    return keras.Model(x, keras.layers.Dense(2, activation="hard_sigmoid", name="gate")(x))


def _keras3_subtract() -> Any:
    import keras

    a, b = keras.Input((3,)), keras.Input((3,))
    return keras.Model([a, b], keras.layers.Subtract(name="difference")([a, b]))


def _subclassed() -> Any:
    import keras

    class Linear(keras.Model):
        def call(self, x: Any) -> Any:
            return x * 2.0

    model = Linear(name="linear")
    model(np.zeros((1, 2), "float32"))
    return model


REFUSED = [
    pytest.param(_tf_keras_lambda, "triple", "Lambda", "Python code", id="tf_keras-lambda"),
    pytest.param(_keras3_lambda, "plus_one", "Lambda", "Python code", id="keras3-lambda"),
    pytest.param(_Scaled.build, "scale", "Scale", "no layer class", id="custom-class"),
    pytest.param(_gru_reset_after, "gru_default", "GRU", "reset_after", id="gru-reset-after"),
    pytest.param(_elu_alpha, "soft_elu", "ELU", "alpha", id="elu-alpha"),
    pytest.param(_keras3_hard_sigmoid, "gate", "Dense", "hard_sigmoid", id="keras3-hard-sigmoid"),
    pytest.param(_keras3_subtract, "difference", "Subtract", "no layer class", id="keras3-subtract"),
    pytest.param(_subclassed, "linear", "Linear", "subclassed", id="subclassed"),
]


@pytest.mark.parametrize(("make", "layer", "class_name", "reason"), REFUSED)
def test_layers_tfjs_cannot_hold_are_refused_up_front(tmp_path: Path, make: Any, layer: str, class_name: str,
                                                      reason: str) -> None:
    with pytest.raises(UnsupportedLayersError) as caught:
        save_keras_model(make(), tmp_path / "web")
    error = caught.value
    assert (layer, class_name) in [(name, cls) for name, cls, _ in error.layers]
    assert any(reason in line for line in error.details), error.details
    assert "graph model" in (error.hint or "")
    assert not (tmp_path / "web").exists()


def test_every_offending_layer_is_named_at_once(tmp_path: Path) -> None:
    import tf_keras

    x = tf_keras.Input((3,))
    h = tf_keras.layers.Lambda(lambda t: t * 2.0, name="first")(x)
    h = tf_keras.layers.ReLU(negative_slope=0.1, name="leaky")(h)
    h = tf_keras.layers.Lambda(lambda t: t - 1.0, name="second")(h)
    with pytest.raises(UnsupportedLayersError) as caught:
        save_keras_model(tf_keras.Model(x, h), tmp_path / "web")
    assert [name for name, _, _ in caught.value.layers] == ["first", "leaky", "second"]
