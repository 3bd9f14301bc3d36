"""`bridge convert` end to end on the ONNX route: each example through the CLI and the API, the report files, exit
codes, a parity failure made on purpose, and a conversion with no network at all."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bridge
from bridge.cli import main as cli_main
from bridge.source.model import load_model
from bridge.stages.result import Status

ROOT = Path(__file__).resolve().parents[1]
NODE_WEB_STAGES = ["savedmodel", "tfjs-graph", "tfjs-node-wasm", "tfjs-node-cpu"]
BROWSER_STAGES = ["browser-webgl", "browser-wasm", "browser-webgpu", "browser-indexeddb"]
WEB_STAGES = [*NODE_WEB_STAGES, *BROWSER_STAGES]
ALL_STAGES = ["onnx", "tf", *WEB_STAGES]  # the ONNX route
NATIVE_STAGES = ["capture", "tf", *WEB_STAGES]
WEB_STAGE_MAX_ABS = 1e-4  # the bar for float32 in TF.js

EXAMPLES = [
    # (id, MODEL, extra CLI args)
    ("linear", "examples/linear/model.py:LinearModel", ["--input", "x:4x2"]),
    ("tiny_cnn", "examples/tiny_cnn/model.py:TinyCNN",
     ["--weights", "examples/tiny_cnn/tiny_cnn.safetensors", "--input", "x:1x3x64x64"]),
    ("mlp-dynamic-batch", "examples/mlp/model.py:MLP", ["--input", "x:?x32"]),
    ("two_io", "examples/two_io/model.py:TwoInTwoOut",
     ["--input", "image:1x3x32x32", "--input", "features:1x6", "--output", "scores", "--output", "value"]),
]


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def _check_passed(report: dict, names: list[str] = ALL_STAGES) -> None:
    assert report["status"] == "pass"
    stages = {s["name"]: s for s in report["stages"]}
    assert list(stages) == names
    for name, stage in stages.items():
        assert stage["status"] == "pass", (name, stage)
        assert stage["outputs"] or name == "capture", name
    for name in ("tfjs-node-wasm", "tfjs-node-cpu"):
        assert max(o["max_abs"] for o in stages[name]["outputs"]) < WEB_STAGE_MAX_ABS


@pytest.mark.node
@pytest.mark.parametrize("model, args", [e[1:] for e in EXAMPLES], ids=[e[0] for e in EXAMPLES])
def test_cli_converts_each_example_on_the_onnx_route(tmp_path: Path, model: str, args: list[str]) -> None:
    """--route onnx takes every example to a web model whose Node stages pass (browser stages: see below)."""
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "bridge.cli", "convert", model, *args, "--out", str(out),
                             "--route", "onnx", "--no-browser"], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = _report(out)
    assert report["route"] == "onnx"
    _check_passed({**report, "stages": [s for s in report["stages"] if s["name"] not in BROWSER_STAGES]},
                  ["onnx", "tf", *NODE_WEB_STAGES])
    assert (out / "model.onnx").is_file()


@pytest.mark.node
@pytest.mark.parametrize("model, args", [e[1:] for e in EXAMPLES], ids=[e[0] for e in EXAMPLES])
def test_cli_converts_each_example(tmp_path: Path, model: str, args: list[str]) -> None:
    """The default route (auto) takes every example natively, all stages passing, browser included."""
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "bridge.cli", "convert", model, *args, "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = _report(out)
    assert report["route"] == "native" and report["notes"] == []
    _check_passed(report, NATIVE_STAGES)
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "parity", "report.html", "report.json",
                                                     "report.md", "sample_inputs.bin", "sample_inputs.json",
                                                     "saved_model", "tf_model.py", "tf_weights.safetensors", "tfjs",
                                                     "web_model"]
    assert "| ✓ pass | browser-webgl |" in (out / "report.md").read_text()
    assert "Traceback" not in result.stderr and "I0000" not in result.stderr  # TF chatter stays hidden


@pytest.mark.node
@pytest.mark.parametrize("model, args", [e[1:] for e in EXAMPLES], ids=[e[0] for e in EXAMPLES])
def test_api_converts_each_example(tmp_path: Path, model: str, args: list[str]) -> None:
    """bridge.convert from Python on every example (ONNX route): the Node stages pass below 1e-4."""
    values = dict(zip(args[::2], args[1::2])) if len(args) % 2 == 0 else {}
    inputs = [a for flag, a in zip(args[::2], args[1::2]) if flag == "--input"]
    outputs = tuple(a for flag, a in zip(args[::2], args[1::2]) if flag == "--output")
    weights = ROOT / values["--weights"] if "--weights" in values else None
    loaded = load_model(str(ROOT / model), weights=weights)
    result = bridge.convert(loaded, inputs, tmp_path / "out", route="onnx", browser=False, output_names=outputs)
    assert result.ok and [s.name for s in result.stages][:6] == ALL_STAGES[:6]
    for name in ("tfjs-node-wasm", "tfjs-node-cpu"):
        stage = result.stage(name)
        assert stage.status is Status.PASS and stage.max_abs is not None and stage.max_abs < WEB_STAGE_MAX_ABS


@pytest.mark.node
def test_api_returns_a_result_object(tmp_path: Path) -> None:
    import torch

    loaded = load_model(str(ROOT / "examples/two_io/model.py:TwoInTwoOut"))
    result = bridge.convert(loaded.module, (torch.randn(1, 3, 16, 16), torch.randn(1, 6)), tmp_path / "out",
                            layout="nchw", output_names=("scores", "value"), browser=False, route="onnx")
    assert result.ok and result.status is Status.PASS
    assert [s.name for s in result.stages] == ALL_STAGES
    assert all(s.status is Status.SKIPPED for s in result.stages if s.name in BROWSER_STAGES)
    inputs = {i["name"]: i for i in result.report["model"]["inputs"]}
    assert list(inputs) == ["image", "features"]  # names from forward()'s parameters
    assert inputs["image"]["web_shape"] == [1, 3, 16, 16] and inputs["image"]["layout"] == "nchw"
    assert (tmp_path / "out" / "web_model" / "model.json").is_file()


@pytest.mark.node
def test_parity_failure_on_purpose_gives_exit_code_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A weight perturbed in the written web model: the stages after the writer must catch it."""
    import bridge.tfjs.convert as writer

    original = writer.convert_saved_model

    def perturbed(saved_model, out_dir, options):  # type: ignore[no-untyped-def]
        summary = original(saved_model, out_dir, options)
        _perturb_first_float_weight(Path(out_dir), 0.5)
        return summary

    monkeypatch.setattr(writer, "convert_saved_model", perturbed)
    out = tmp_path / "out"
    code = cli_main(["convert", str(ROOT / "examples/linear/model.py:LinearModel"), "--input", "x:4x2",
                     "--out", str(out), "--route", "onnx"])
    assert code == 3
    stages = {s["name"]: s["status"] for s in _report(out)["stages"]}
    assert stages["savedmodel"] == "pass"
    assert all(stages[name] in ("fail", "inaccurate") for name in ("tfjs-graph", "tfjs-node-wasm", "tfjs-node-cpu",
                                                                   "browser-webgl", "browser-wasm"))
    assert stages["browser-indexeddb"] == "pass"  # the tampered model round-trips faithfully; parity is elsewhere
    assert _report(out)["status"] in ("fail", "inaccurate")


def _perturb_first_float_weight(web_model: Path, delta: float) -> str:
    """Add `delta` to the first float32 weight of a single-shard web model; returns its name."""
    manifest = json.loads((web_model / "model.json").read_text())["weightsManifest"][0]
    offset = 0
    for entry in manifest["weights"]:
        count = int(np.prod(entry["shape"])) if entry["shape"] else 1
        if entry["dtype"] == "float32" and "quantization" not in entry:
            shard = web_model / manifest["paths"][0]
            data = bytearray(shard.read_bytes())
            values = np.frombuffer(bytes(data[offset:offset + 4 * count]), dtype=np.float32) + delta
            data[offset:offset + 4 * count] = values.astype(np.float32).tobytes()
            shard.write_bytes(bytes(data))
            return entry["name"]
        offset += count * {"int32": 4, "float32": 4, "bool": 1}[entry["dtype"]]
    raise AssertionError("no float32 weight to perturb")


@pytest.mark.node
def test_strict_turns_a_skip_into_a_failure(tmp_path: Path) -> None:
    env = {**os.environ, "BRIDGE_NODE_MODULES": str(tmp_path / "none")}
    base = [sys.executable, "-m", "bridge.cli", "convert", "examples/linear/model.py:LinearModel", "--input", "x:4x2",
            "--route", "onnx"]
    relaxed = subprocess.run([*base, "--out", str(tmp_path / "a")], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=600)
    assert relaxed.returncode == 0, relaxed.stderr[-2000:]
    skipped = [s for s in _report(tmp_path / "a")["stages"] if s["status"] == "skipped"]
    assert [s["name"] for s in skipped] == ["tfjs-node-wasm", "tfjs-node-cpu", *BROWSER_STAGES]
    assert all("setup" in s["reason"] for s in skipped)
    strict = subprocess.run([*base, "--out", str(tmp_path / "b"), "--strict"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert strict.returncode == 3


@pytest.mark.node
def test_whole_conversion_runs_without_any_network(tmp_path: Path) -> None:
    """The CLI in a fresh network namespace: no route anywhere, only loopback. Everything still passes."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-n", "true"]).returncode != 0:
        pytest.skip("cannot create a network namespace here (needs unshare and root)")
    out = tmp_path / "out"
    command = (f"ip link set lo up 2>/dev/null; exec {sys.executable} -m bridge.cli convert "
               f"examples/tiny_cnn/model.py:TinyCNN --weights examples/tiny_cnn/tiny_cnn.safetensors "
               f"--input x:1x3x32x32 --out {out} --route onnx")
    result = subprocess.run(["unshare", "-n", "sh", "-c", command], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    _check_passed(_report(out))


@pytest.mark.node
def test_in_process_conversion_makes_no_connection_attempt(tmp_path: Path) -> None:
    """Every socket connection and name lookup refused in-process; any attempt fails the block loudly."""
    from bridge.util.quiet import network_blocked

    loaded = load_model(str(ROOT / "examples/mlp/model.py:MLP"))
    with network_blocked("test", "a whole conversion"):
        result = bridge.convert(loaded, ["x:2x32"], tmp_path / "out", browser=False, route="onnx")
    assert result.ok


def test_existing_output_is_not_replaced_without_force(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("keep")
    code = cli_main(["convert", str(ROOT / "examples/linear/model.py:LinearModel"), "--input", "x:4x2",
                     "--out", str(out)])
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_failed_conversion_leaves_nothing(tmp_path: Path) -> None:
    """A forward that raises: exit 1, no output folder, no temporary folder."""
    code = cli_main(["convert", str(ROOT / "examples/linear/model.py:LinearModel"), "--input", "x:4x3",
                     "--out", str(tmp_path / "out")])
    assert code == 1
    assert list(tmp_path.iterdir()) == []


def _make_model_files(folder: Path) -> dict[str, Path]:
    """The MLP example saved as TorchScript, as a torch.export program and as ONNX."""
    import torch

    module = load_model(str(ROOT / "examples/mlp/model.py:MLP")).module
    example = torch.randn(2, 32)
    torch.jit.trace(module, example).save(str(folder / "mlp_ts.pt"))
    torch.export.save(torch.export.export(module, (example,)), str(folder / "mlp.pt2"))
    torch.onnx.export(module, (example,), str(folder / "mlp.onnx"), input_names=["x"], output_names=["probs"],
                      dynamo=True)
    return {"torchscript": folder / "mlp_ts.pt", "exported": folder / "mlp.pt2", "onnx": folder / "mlp.onnx"}


# (kind, args, route auto ends on): TorchScript and ONNX files cannot be captured with torch.export.
MODEL_KINDS = [("torchscript", ["--input", "x:2x32"], "onnx"), ("exported", ["--input", "x:2x32"], "native"),
               ("onnx", [], "onnx")]


@pytest.mark.node
@pytest.mark.parametrize("kind, args, route", MODEL_KINDS, ids=[k[0] for k in MODEL_KINDS])
def test_other_model_kinds(tmp_path: Path, kind: str, args: list[str], route: str) -> None:
    path = _make_model_files(tmp_path)[kind]
    out = tmp_path / "out"
    assert cli_main(["convert", str(path), *args, "--out", str(out), "--no-browser"]) == 0
    report = _report(out)
    assert report["model"]["kind"] == kind and report["route"] == route
    stages = {s["name"]: s["status"] for s in report["stages"]}
    if kind == "onnx":
        assert stages["onnx"] == "skipped"  # a given ONNX file is the reference
    assert all(stages[s] == "pass" for s in ("tf", "savedmodel", "tfjs-graph", "tfjs-node-wasm", "tfjs-node-cpu"))


class _NeedsAtan(__import__("torch").nn.Module):
    """Uses ops the native route has no converter for (atan, asin), twice each; ONNX and TF.js have both."""

    def forward(self, x):  # type: ignore[no-untyped-def]
        import torch

        return torch.asin(torch.atan(x) / 2) + torch.asin(torch.atan(x * 2) / 2)


@pytest.mark.node
def test_auto_falls_back_to_onnx_and_says_which_op(tmp_path: Path) -> None:
    result = bridge.convert(_NeedsAtan(), ["x:2x5"], tmp_path / "out", browser=False)
    assert result.ok and result.report["route"] == "onnx"
    note = " ".join(result.report["notes"])
    assert "native route failed" in note and "aten.atan" in note


def test_native_route_lists_every_unsupported_op(tmp_path: Path) -> None:
    from bridge.errors import UnsupportedOpsError

    with pytest.raises(UnsupportedOpsError) as info:
        bridge.convert(_NeedsAtan(), ["x:2x5"], tmp_path / "out", route="native", browser=False)
    assert any(".atan." in op for op in info.value.ops) and any(".asin." in op for op in info.value.ops)
    assert all(len(nodes) == 2 for nodes in info.value.ops.values())
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_interrupted_run_keeps_previous_output(tmp_path: Path, signal_name: str) -> None:
    """A conversion interrupted mid-way leaves the previous output as it was and no temporary folder."""
    import signal
    import time

    out = tmp_path / "out"
    out.mkdir()
    (out / "previous.txt").write_text("previous")
    process = subprocess.Popen([sys.executable, "-m", "bridge.cli", "convert", "examples/tiny_cnn/model.py:TinyCNN",
                                "--input", "x:1x3x32x32", "--out", str(out), "--force", "--route", "onnx"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(p.name.startswith(".out.tmp-") for p in tmp_path.iterdir()):
        time.sleep(0.2)  # wait until the staging folder exists: the run is under way
    time.sleep(1.0)
    process.send_signal(getattr(signal, signal_name))
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0
    assert "interrupted" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in out.iterdir()) == ["previous.txt"]
