"""A layers model trained in real Chromium and saved anywhere TF.js saves (bridge.runtime.browser:
train_and_save_in_browser): indexeddb://, localstorage://, downloads:// (files caught from Chromium) and an
http upload to `bridge serve --accept-uploads`; each copy loaded back must predict and hold weights bit-identical
to the trained model, the files on disk must be the trained weights, and the uploaded folder must load in Node.

Must-fail twins: a localStorage save that cannot fit is reported as skipped (not as identical), and the bit
comparison itself says no to a copy one weight bit away.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bridge.runtime import browser as browser_rt
from bridge.runtime.node import LayersFit, node_status

_STATUS = browser_rt.browser_status()
needs_browser = pytest.mark.skipif(not _STATUS.ok, reason="; ".join(_STATUS.problems) or "browser ready")
pytestmark = [pytest.mark.browser, needs_browser]


@dataclass(frozen=True)
class LayersCase:
    """A layers model folder with inputs to predict and a fit request."""

    folder: Path
    inputs: list[dict[str, np.ndarray]]
    fit: LayersFit


def _text_model(folder: Path) -> LayersCase:
    """Embedding + pooling + Dense, int token ids: the embedding gradient is a sparse one."""
    import tf_keras as keras

    from bridge.tfjs import save_keras_model

    keras.utils.set_random_seed(0)
    ids = keras.Input((8,), dtype="int32", name="ids")
    x = keras.layers.Embedding(100, 6, name="embed")(ids)
    x = keras.layers.GlobalAveragePooling1D()(x)
    out = keras.layers.Dense(3, name="logits")(x)
    save_keras_model(keras.Model(ids, out), folder)
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 100, (16, 8)).astype(np.int32)
    y_train = rng.normal(size=(16, 3)).astype(np.float32)
    fit = LayersFit(x={"ids": x_train}, y={"logits": y_train}, loss="mean_squared_error", optimizer="adam",
                    learning_rate=0.05, epochs=3, batch_size=8)
    return LayersCase(folder, [{"ids": x_train[:2]}, {"ids": rng.integers(0, 100, (1, 8)).astype(np.int32)}], fit)


@pytest.fixture(scope="module")
def text_case(tmp_path_factory: pytest.TempPathFactory) -> LayersCase:
    return _text_model(tmp_path_factory.mktemp("layers") / "text")


@pytest.fixture(scope="module")
def trained(text_case: LayersCase, tmp_path_factory: pytest.TempPathFactory) -> browser_rt.BrowserTrainRun:
    """One Chromium session: fit on cpu, then all four schemes."""
    uploads = tmp_path_factory.mktemp("uploads")
    return browser_rt.train_and_save_in_browser(text_case.folder, text_case.inputs, text_case.fit,
                                                upload_dir=uploads)


def test_training_moved_the_weights(trained: browser_rt.BrowserTrainRun) -> None:
    assert trained.backend == "cpu" and len(trained.loss) == 3
    assert trained.loss[-1] < trained.loss[0]
    assert trained.before.keys() == trained.trained_weights.keys() and len(trained.before) == 3
    assert all(not np.array_equal(trained.before[k], trained.trained_weights[k]) for k in trained.before)
    assert trained.blocked == []


@pytest.mark.parametrize("scheme", browser_rt.SAVE_SCHEMES)
def test_every_scheme_loads_back_bit_identical(trained: browser_rt.BrowserTrainRun, scheme: str) -> None:
    copy = trained.copies[scheme]
    assert copy.status == "ok", copy.reason
    assert copy.identical
    assert [sorted(s) for s in copy.outputs] == [["logits"], ["logits"]]
    assert copy.outputs[0]["logits"].shape == (2, 3)


def _weights_file(model_json: dict, weights: dict[str, np.ndarray]) -> bytes:
    """The trained weights laid out as the manifest says (one group, manifest order)."""
    entries = [w for group in model_json["weightsManifest"] for w in group["weights"]]
    return b"".join(np.ascontiguousarray(weights[e["name"]], dtype=e["dtype"]).tobytes() for e in entries)


@pytest.mark.parametrize("scheme, json_name, weights_name", [
    ("downloads", None, None), ("http", "model.json", "model.weights.bin")])
def test_files_written_are_the_trained_model(trained: browser_rt.BrowserTrainRun, scheme: str,
                                             json_name: str | None, weights_name: str | None) -> None:
    """The downloaded files and the upload folder hold the trained weights, under the manifest TF.js wrote."""
    files = trained.copies[scheme].files
    json_name = json_name or next(name for name in files if name.endswith(".json"))
    weights_name = weights_name or next(name for name in files if name.endswith(".weights.bin"))
    assert sorted(files) == sorted([json_name, weights_name])
    model_json = json.loads(files[json_name])
    assert model_json["format"] == "layers-model"
    assert [p for g in model_json["weightsManifest"] for p in g["paths"]] == [f"./{weights_name}"]
    assert files[weights_name] == _weights_file(model_json, trained.trained_weights)


def test_upload_answer_and_folder(trained: browser_rt.BrowserTrainRun) -> None:
    copy = trained.copies["http"]
    assert copy.answer is not None and copy.answer["model"] == f"/uploads/{copy.answer['id']}/model.json"
    assert trained.upload_folder is not None and trained.upload_folder.name == copy.answer["id"]
    assert sorted(p.name for p in trained.upload_folder.parent.iterdir()) == [copy.answer["id"]]


@pytest.mark.node
@pytest.mark.skipif(not node_status().ok, reason="Node or the pinned TF.js npm packages are missing")
def test_uploaded_folder_loads_in_node(trained: browser_rt.BrowserTrainRun, text_case: LayersCase) -> None:
    """The upload folder is a layers model TF.js in Node loads; its cpu predictions are the browser's."""
    from bridge.runtime.node import run_layers_model

    assert trained.upload_folder is not None
    runs = run_layers_model(trained.upload_folder, text_case.inputs, backends=("cpu",))
    for got, want in zip(runs["cpu"].outputs, trained.trained_outputs):
        np.testing.assert_allclose(got["logits"], want["logits"], rtol=0, atol=1e-6)


def test_bit_comparison_says_no() -> None:
    a = {"w": np.arange(4, dtype=np.float32)}
    b = {"w": a["w"].copy()}
    assert browser_rt.same_bits(a, b)
    b["w"].view(np.uint32)[2] ^= 1
    assert not browser_rt.same_bits(a, b)
    assert not browser_rt.same_bits(a, {"w": a["w"].astype(np.float64)})
    assert not browser_rt.same_bits(a, {"v": a["w"]})


def test_too_large_for_localstorage_is_skipped(tmp_path: Path) -> None:
    """~6 MB of weights (8 MB as the base64 text localStorage keeps): the save does not fit and says so."""
    import tf_keras as keras

    from bridge.tfjs import save_keras_model

    x = keras.Input((1500,), name="x")
    save_keras_model(keras.Model(x, keras.layers.Dense(1000, name="wide")(x)), tmp_path / "wide")
    feats = np.ones((1, 1500), np.float32)
    fit = LayersFit(x={"x": feats}, y={"wide": np.zeros((1, 1000), np.float32)}, loss="mean_squared_error",
                    optimizer="sgd", learning_rate=0.01, epochs=1)
    run = browser_rt.train_and_save_in_browser(tmp_path / "wide", [{"x": feats}], fit, schemes=("localstorage",))
    copy = run.copies["localstorage"]
    assert copy.status == "skipped" and "does not fit in localStorage" in (copy.reason or "")
    assert not copy.identical and run.ok


def test_webgl_training_saves_and_loads_back(text_case: LayersCase, tmp_path: Path) -> None:
    """Trained on webgl (SwiftShader here), uploaded and kept in IndexedDB: both copies bit-identical."""
    run = browser_rt.train_and_save_in_browser(text_case.folder, text_case.inputs, text_case.fit, backend="webgl",
                                               schemes=("indexeddb", "http"), upload_dir=tmp_path)
    assert run.backend == "webgl" and len(run.loss) == 3
    assert all(c.status == "ok" and c.identical for c in run.copies.values()), run.copies
    assert run.upload_folder is not None and run.upload_folder.parent == tmp_path.resolve()
