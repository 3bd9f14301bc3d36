"""`bridge tfjs INPUT OUT`: every format the official converter reads, written by bridge's own writers, with every
stage of the "tf" plan passing (the written model replayed in TensorFlow or rebuilt in Keras, TF.js in Node and
in Chromium, the IndexedDB round trip, one `fit` epoch for layers models), `bridge parity` re-checking the folder
later, the official converter's flag spellings, and one typed error (nothing written) for each bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import tensorflow as tf

from bridge.cli import main as cli_main
from test_tfjs_sources import _TutorialLinear, frozen_pb, hub_v1, hub_v2  # noqa: F401 - fixtures
from tfjs_keras_cases import CASES, FLAVOUR_OF_FORMAT, build, save_as

pytestmark = [pytest.mark.node, pytest.mark.browser]

LAYERS = ["tfjs-layers", "tfjs-layers-node-wasm", "tfjs-layers-node-cpu", "tfjs-layers-fit", "browser-layers-webgl",
          "browser-layers-wasm", "browser-layers-indexeddb"]
GRAPH = ["tfjs-graph", "tfjs-node-wasm", "tfjs-node-cpu", "browser-webgl", "browser-wasm", "browser-webgpu",
         "browser-indexeddb"]
DEFAULT_TIER = {("sequential_dense", "h5", "layers"), ("conv_branches", "keras", "layers"),
                ("embedding_rnn", "keras_saved_model", "layers"), ("shared_layers", "h5", "graph"),
                ("norms_activations", "keras", "graph")}


def _convert(source: Path, out: Path, *flags: str) -> tuple[int, dict[str, Any]]:
    code = cli_main(["tfjs", str(source), str(out), "--strict", *flags])
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").is_file() else {}
    return code, report


def _statuses(report: dict[str, Any]) -> dict[str, str]:
    return {s["name"]: s["status"] for s in report["stages"]}


def _keras_params() -> list[Any]:
    return [pytest.param(case.name, fmt, output, id=f"{case.name}-{fmt}-{output}",
                         marks=[] if (case.name, fmt, output) in DEFAULT_TIER else [pytest.mark.slow])
            for case in CASES for fmt in ("h5", "keras", "keras_saved_model") for output in ("layers", "graph")]


@pytest.mark.parametrize("case_name, fmt, output", _keras_params())
def test_keras_files_convert_with_every_stage_passing(tmp_path: Path, case_name: str, fmt: str, output: str) -> None:
    case = next(c for c in CASES if c.name == case_name)
    path = save_as(build(case, FLAVOUR_OF_FORMAT[fmt]), fmt, tmp_path / "src")
    flags = [] if output == "layers" else ["--output_format", "tfjs_graph_model"]  # layers is the Keras default
    code, report = _convert(path, tmp_path / "out", *flags)
    assert code == 0, [(s["name"], s["status"], s["reason"]) for s in report.get("stages", [])]
    assert list(_statuses(report)) == (LAYERS if output == "layers" else GRAPH)
    model_json = json.loads((tmp_path / "out" / "model.json").read_text())
    assert model_json["format"] == ("layers-model" if output == "layers" else "graph-model")
    for stage in report["stages"]:  # layers and graph models match Keras within 1e-5 in every runtime
        assert all(o["max_abs"] is None or o["max_abs"] <= 1e-5 for o in stage["outputs"]), stage
    if output == "layers":
        fit = next(s for s in report["stages"] if s["name"] == "tfjs-layers-fit")
        assert fit["extra"]["changed"] and np.isfinite(fit["extra"]["loss"]).all()


def _layers_folder(tmp: Path) -> Path:
    from bridge.tfjs.layers import save_keras_model

    save_keras_model(build(CASES[1], "tf_keras"), tmp / "layers_in")
    return tmp / "layers_in"


def _tutorial_saved_model(tmp: Path) -> Path:
    tf.saved_model.save(_TutorialLinear.tf_keras(), str(tmp / "tutorial"))
    return tmp / "tutorial"


OTHER_SOURCES: list[tuple[str, Callable[..., Path], list[str]]] = [
    # (id, make the input (tmp, fixtures), flags)
    ("frozen graph", lambda tmp, f: f["frozen_pb"][0], ["--output_node_names", "{node}"]),
    ("TF1 hub module", lambda tmp, f: f["hub_v1"], ["--input_format", "tf_hub"]),
    ("TF2 hub module", lambda tmp, f: f["hub_v2"], ["--signature_name", "embed"]),
    ("layers model to graph model", lambda tmp, f: _layers_folder(tmp), []),
    ("seed tutorial's subclassed linear model", lambda tmp, f: _tutorial_saved_model(tmp), []),
]


@pytest.mark.parametrize("make, flags", [c[1:] for c in OTHER_SOURCES], ids=[c[0] for c in OTHER_SOURCES])
def test_other_formats_convert_to_graph_models(tmp_path: Path, frozen_pb: tuple[Path, str], hub_v1: Path,
                                               hub_v2: Path, make: Callable[..., Path], flags: list[str]) -> None:
    fixtures = {"frozen_pb": frozen_pb, "hub_v1": hub_v1, "hub_v2": hub_v2}
    source = make(tmp_path, fixtures)
    code, report = _convert(source, tmp_path / "out", *[f.replace("{node}", frozen_pb[1]) for f in flags])
    assert code == 0, [(s["name"], s["status"], s["reason"]) for s in report.get("stages", [])]
    assert list(_statuses(report)) == GRAPH and report["route"] == "tf"


def test_the_tutorial_model_computes_the_tutorial_numbers(tmp_path: Path) -> None:
    """y = reduce_sum(a * x, 1) + b on [[0.6, 0.2]], in TF.js, from the tutorial's own SavedModel."""
    from bridge.tfjs.sources import load_source

    source = _tutorial_saved_model(tmp_path)
    with load_source(source) as loaded:
        (name,) = [s.name for s in loaded.inputs]
    np.savez(tmp_path / "x.npz", **{name: np.array([[0.6, 0.2]], "float32")})
    code = cli_main(["tfjs", str(source), str(tmp_path / "out"), "--sample-inputs", str(tmp_path / "x.npz"),
                     "--samples", "1", "--no-browser", "--node-backends", "wasm"])
    assert code == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    node = next(s for s in report["stages"] if s["name"] == "tfjs-node-wasm")
    assert node["status"] == "pass" and node["outputs"][0]["max_abs"] < 1e-6
    reference = np.load(tmp_path / "out" / "parity" / "reference.npz")
    (value,) = [reference[k] for k in reference.files]
    np.testing.assert_allclose(value, [0.6 * 0.25 + 0.2 * -1.5 + 0.75], rtol=1e-6)


@pytest.fixture(scope="module")
def layers_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `bridge tfjs` layers-model folder (the sequential case from .h5), converted once."""
    tmp = tmp_path_factory.mktemp("tfjs-out")
    path = save_as(build(CASES[0], "tf_keras"), "h5", tmp / "src")
    assert cli_main(["tfjs", str(path), str(tmp / "out"), "--no-browser"]) == 0
    return tmp / "out"


def test_bridge_parity_rechecks_a_tfjs_folder(layers_out: Path, tmp_path: Path) -> None:
    import shutil

    from bridge.parity.recheck import run_parity

    folder = Path(shutil.copytree(layers_out, tmp_path / "copy"))
    run = run_parity(folder, browser=False)
    assert run.exit_code == 0 and [s.name for s in run.stages][:4] == LAYERS[:4]
    model_json = json.loads((folder / "model.json").read_text())
    shard = folder / model_json["weightsManifest"][0]["paths"][0]
    data = bytearray(shard.read_bytes())
    values = np.frombuffer(bytes(data[:64]), "<f4") * 1.5  # the first kernel's first 16 values, edited by hand
    data[:64] = values.astype("<f4").tobytes()
    shard.write_bytes(bytes(data))
    assert run_parity(folder, browser=False).exit_code == 3


def test_two_conversions_are_byte_identical(layers_out: Path, tmp_path: Path) -> None:
    path = layers_out.parent / "src" / "model.h5"  # the same file again (a model built twice gets new layer names)
    assert cli_main(["tfjs", str(path), str(tmp_path / "again"), "--no-browser", "--node-backends", "wasm"]) == 0
    for name in ["model.json", *json.loads((layers_out / "model.json").read_text())["weightsManifest"][0]["paths"]]:
        assert (tmp_path / "again" / name).read_bytes() == (layers_out / name).read_bytes(), name


def test_official_flag_spellings(tmp_path: Path) -> None:
    """A script written for tensorflowjs_converter works with the command name changed."""
    path = save_as(build(CASES[1], "tf_keras"), "h5", tmp_path / "src")
    code = cli_main(["tfjs", "--input_format=keras", "--output_format=tfjs_graph_model", "--quantize_float16",
                     "--weight_shard_size_bytes=1024", "--strip_debug_ops=True", "--control_flow_v2=False",
                     str(path), str(tmp_path / "out"), "--no-browser", "--node-backends", "wasm"])
    assert code == 0
    model_json = json.loads((tmp_path / "out" / "model.json").read_text())
    dtypes = {w.get("quantization", {}).get("dtype") for g in model_json["weightsManifest"] for w in g["weights"]}
    paths = model_json["weightsManifest"][0]["paths"]
    total = sum((tmp_path / "out" / p).stat().st_size for p in paths)
    assert "float16" in dtypes and len(paths) == -(-total // 1024) > 1


def _weights_only_h5(tmp: Path) -> list[str]:
    model = build(CASES[0], "tf_keras")
    model.save_weights(str(tmp / "weights.h5"))
    return [str(tmp / "weights.h5")]


def _not_a_graphdef(tmp: Path) -> list[str]:
    (tmp / "model.pb").write_bytes(b"\x00\xffnot a protobuf at all" * 4)
    return [str(tmp / "model.pb"), "--input_format", "tf_frozen_model", "--output_node_names", "y"]


def _keras3_unknown_layer(tmp: Path) -> list[str]:
    import keras

    x = keras.Input((4,))
    model = keras.Model(x, keras.layers.UnitNormalization()(keras.layers.Dense(3)(x)))
    model.save(str(tmp / "m.keras"))
    return [str(tmp / "m.keras")]


BAD_INPUTS: list[tuple[str, Callable[..., list[str]], list[str]]] = [
    # (id, make the arguments, texts in the error)
    ("pb that is not a GraphDef", lambda tmp, f: _not_a_graphdef(tmp), ["GraphDef"]),
    ("missing output nodes", lambda tmp, f: [str(f["frozen_pb"][0]), "--output_node_names", "nope"],
     ["nope", "candidates"]),
    ("h5 without a model config", lambda tmp, f: _weights_only_h5(tmp), ["weights"]),
    ("Keras 3 layer TF.js lacks", lambda tmp, f: _keras3_unknown_layer(tmp), ["UnitNormalization"]),
    ("Hub module without the signature", lambda tmp, f: [str(f["hub_v1"]), "--signature_name", "nosuch"],
     ["nosuch", "default", "logits"]),
]


@pytest.mark.parametrize("make, texts", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_inputs_give_one_typed_error_and_no_output(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       frozen_pb: tuple[Path, str], hub_v1: Path,
                                                       make: Callable[..., list[str]], texts: list[str]) -> None:
    args = make(tmp_path, {"frozen_pb": frozen_pb, "hub_v1": hub_v1})
    code = cli_main(["tfjs", args[0], str(tmp_path / "out"), *args[1:]])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "error: [" in err and "Traceback" not in err and all(t.lower() in err.lower() for t in texts), err
    assert not (tmp_path / "out").exists()


def test_a_kernel_a_backend_lacks_is_named_before_any_runtime(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Einsum has no wasm kernel in TF.js 4.22: the tfjs-graph stage names it (terminal, report) before the wasm
    runtime fails on it. (A diagonal stays an Einsum: grappler rewrites matrix products into BatchMatMul; TF.js's
    cpu einsum refuses a repeated axis, which its kernel list cannot tell.)"""
    class Contract(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([3, 3], tf.float32)])
        def __call__(self, a: Any) -> Any:
            return {"y": tf.einsum("ii->i", a)}

    module = Contract()
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": module.__call__})
    code = cli_main(["tfjs", str(tmp_path / "sm"), str(tmp_path / "out"), "--no-browser"])
    err = capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert "wasm lacks kernel(s) Einsum" in err
    assert any("wasm lacks kernel(s) Einsum" in note for note in report["notes"])
    statuses = _statuses(report)
    wasm = next(s for s in report["stages"] if s["name"] == "tfjs-node-wasm")
    assert statuses["tfjs-graph"] == "pass" and wasm["status"] == "fail" and "Einsum" in wasm["reason"]
    assert err.index("wasm lacks kernel(s) Einsum") < err.index("tfjs-node-wasm") and code == 3
