"""`bridge parity OUT_DIR`: every stage re-checked on the artifacts as they are, with the exit codes of `bridge
convert` (0 all pass, 3 a stage inaccurate or failed, 1 a bridge error), own sample inputs, re-quantized models."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from bridge.errors import BridgeError
from bridge.source.ports import to_web_samples
from bridge.cli import parity_from_cli
from bridge.parity.recheck import run_parity
from bridge.parity.store import ParityDataError, load_parity_data
from test_bisect import converted, copy_of, culprit_weight, make_net, tamper_web_weight

pytestmark = pytest.mark.node


def _args(out: Path, **overrides: Any) -> argparse.Namespace:
    """What `bridge parity` parses (the argparse lines are in the helper's report)."""
    values = {"out_dir": out, "sample_inputs": None, "junit": None, "strict": False, "browser": False,
              "layers": False}
    return argparse.Namespace(**{**values, **overrides})


@pytest.fixture()
def out(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    """A private copy of a clean conversion."""
    return copy_of(converted(tmp_path_factory, "clean"), tmp_path / "out")


def test_stored_parity_data_round_trips(out: Path) -> None:
    data = load_parity_data(out)
    report = json.loads((out / "report.json").read_text())
    assert data.reference_kind == "pytorch" and len(data.samples) == report["samples"] == 3
    assert [p.name for p in data.output_ports] == [o["name"] for o in report["model"]["outputs"]]
    assert data.input_ports[0].perm == (0, 2, 3, 1)  # NHWC web input
    net = make_net()
    import torch

    with torch.no_grad():
        again = net(torch.from_numpy(data.samples[1]["x"])).numpy()
    np.testing.assert_allclose(data.reference[1]["output_0"], again, rtol=1e-6, atol=1e-6)


def test_untouched_folder_passes(out: Path, tmp_path: Path) -> None:
    junit = tmp_path / "parity.xml"
    assert parity_from_cli(_args(out, junit=junit)) == 0
    report = json.loads((out / "parity" / "report.json").read_text())
    assert report["status"] == "pass" and report["options"]["command"] == "parity"
    statuses = {s["name"]: s["status"] for s in report["stages"]}
    assert statuses == {"onnx": "pass", "tf": "skipped", "savedmodel": "pass", "tfjs-graph": "pass",
                        "tfjs-node-wasm": "pass", "tfjs-node-cpu": "pass", "browser-webgl": "skipped",
                        "browser-wasm": "skipped", "browser-webgpu": "skipped", "browser-indexeddb": "skipped"}
    for stage in report["stages"]:
        for output in stage["outputs"]:
            assert output["max_abs"] < 1e-5, (stage["name"], output)
    assert report["layers"] is None  # nothing to bisect
    assert (out / "parity" / "report.html").is_file() and junit.is_file()


def _shorten_shard(web_model: Path) -> None:
    shard = sorted(web_model.glob("group1-shard*"))[0]
    shard.write_bytes(shard.read_bytes()[:-64])


TAMPER_CASES: list[tuple[str, Callable[[Path], Any], dict[str, str]]] = [
    # (id, change to the output folder, expected stage statuses)
    ("weight scaled by 1.02", lambda out: tamper_web_weight(out / "web_model", culprit_weight(make_net())),
     {"savedmodel": "pass", "tfjs-graph": "inaccurate", "tfjs-node-wasm": "inaccurate"}),
    ("weight scaled by 3", lambda out: tamper_web_weight(out / "web_model", culprit_weight(make_net()), 3.0),
     {"savedmodel": "pass", "tfjs-graph": "fail", "tfjs-node-cpu": "fail"}),
    ("truncated shard", lambda out: _shorten_shard(out / "web_model"),
     {"savedmodel": "pass", "tfjs-graph": "fail", "tfjs-node-wasm": "fail"}),
]


@pytest.mark.parametrize("tamper, expected", [c[1:] for c in TAMPER_CASES], ids=[c[0] for c in TAMPER_CASES])
def test_tampered_folder_fails_with_exit_code_3(out: Path, tamper: Callable[[Path], Any],
                                                expected: dict[str, str]) -> None:
    tamper(out)
    assert parity_from_cli(_args(out)) == 3
    report = json.loads((out / "parity" / "report.json").read_text())
    statuses = {s["name"]: s["status"] for s in report["stages"]}
    assert {k: statuses[k] for k in expected} == expected
    assert (out / "report.json").read_text().count('"status": "pass"') > 0  # the conversion's report is kept


def test_own_sample_inputs_with_and_without_reference(out: Path, tmp_path: Path) -> None:
    data = load_parity_data(out)
    rng = np.random.default_rng(7)
    xs = rng.standard_normal((2, 1, 3, 16, 16)).astype(np.float32)
    import torch

    with torch.no_grad():
        ys = np.stack([make_net()(torch.from_numpy(x)).numpy() for x in xs])
    cases = [("with reference", {"x": xs, "output_0": ys}, "sample-inputs file", 0),
             ("onnxruntime reference", {"x": xs}, "onnxruntime (model.onnx)", 0),
             ("wrong reference", {"x": xs, "output_0": ys + 0.05}, "sample-inputs file", 3)]
    for name, arrays, kind, code in cases:
        path = tmp_path / f"{name}.npz"
        np.savez(path, **arrays)
        run = run_parity(out, sample_inputs=path, browser=False)
        assert (run.exit_code, run.report["options"]["reference"]) == (code, kind), name
        assert run.report["samples"] == 2
    assert data.samples[0]["x"].shape == (1, 3, 16, 16)


def test_requantized_model_is_judged_by_its_own_quantization(out: Path) -> None:
    from bridge.tfjs.convert import TfjsOptions, convert_saved_model

    convert_saved_model(out / "saved_model", out / "web_model", TfjsOptions(quantize=("float16",), force=True))
    run = run_parity(out, browser=False)
    assert run.exit_code == 0, [(s.name, s.status, s.max_abs) for s in run.stages]
    graph = next(s for s in run.stages if s.name == "tfjs-graph")
    assert graph.outputs[0].rtol > 1e-3 and graph.outputs[0].max_abs > 1e-6  # widened, and really quantized
    assert "float16" in graph.extra["bytesByDtype"]


ERROR_CASES = [
    # (id, change, error type, exit code)
    ("no parity data", lambda out: __import__("shutil").rmtree(out / "parity"), ParityDataError, 1),
    ("not an output folder", lambda out: __import__("shutil").rmtree(out / "web_model"), BridgeError, 2),
    ("unreadable parity data", lambda out: (out / "parity" / "interface.json").write_text("{"), ParityDataError, 1),
]


@pytest.mark.parametrize("change, error, code", [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_bridge_errors(out: Path, change: Callable[[Path], Any], error: type, code: int) -> None:
    change(out)
    with pytest.raises(error) as caught:
        run_parity(out, browser=False)
    assert caught.value.exit_code == code
    assert caught.value.hint


def test_layers_flag_bisects_a_passing_folder(out: Path) -> None:
    run = run_parity(out, browser=False, layers=True)
    assert run.exit_code == 0
    layers = run.report["layers"]
    assert layers["first_divergence"] is None and layers["stages"]
    web = to_web_samples(load_parity_data(out).samples[:1], load_parity_data(out).input_ports)
    assert web[0]["x"].shape == (1, 16, 16, 3)


def test_inspect_takes_the_output_folder_itself(out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bridge.cli import main

    assert main(["inspect", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["path"].endswith("web_model") and summary["weights"]["count"] > 0
    assert main(["inspect", str(out / "parity")]) == 1  # not a web model, nor a folder holding one


def test_parity_of_a_native_folder_rechecks_its_generated_tf_model(tmp_path_factory: pytest.TempPathFactory,
                                                                   tmp_path: Path) -> None:
    native = copy_of(converted(tmp_path_factory, "clean", route="native"), tmp_path / "native")
    run = run_parity(native, browser=False)
    statuses = {s.name: s.status.value for s in run.stages}
    assert statuses["tf"] == "pass" and statuses["capture"] == "skipped" and "onnx" not in statuses
    (native / "tf_model.py").unlink()
    again = {s.name: (s.status.value, s.reason) for s in run_parity(native, browser=False).stages}
    assert again["tf"][0] == "skipped" and "tf_model.py" in again["tf"][1]
