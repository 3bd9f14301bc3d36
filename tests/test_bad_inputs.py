"""The bad-input corpus: each bad input gives one clear bridge error (stage, what is wrong, what to do) and exit
code 1 or 2, with nothing written to the output folder. Also: NaN weights are warned about, and converting the same
model twice gives byte-identical web model files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

import bridge
from bridge.cli import main as cli_main
from bridge.errors import BridgeError, CaptureError

ROOT = Path(__file__).resolve().parents[1]
LINEAR = str(ROOT / "examples/linear/model.py:LinearModel")


class _Nested(torch.nn.Module):
    def forward(self, x):  # type: ignore[no-untyped-def]
        return {"a": (x, x * 2)}


class _NonTensor(torch.nn.Module):
    def forward(self, x):  # type: ignore[no-untyped-def]
        return x.sum().item()


class _Raises(torch.nn.Module):
    def forward(self, x):  # type: ignore[no-untyped-def]
        raise ValueError("this model is broken")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


CLI_CASES = [
    # (id, args (with {tmp}), exit code, text in the error)
    ("weights-missing", [LINEAR, "--weights", "{tmp}/none.pt", "--input", "x:4x2"], 1, "does not exist"),
    ("weights-empty", [LINEAR, "--weights", "{tmp}/empty.pt", "--input", "x:4x2"], 1, "is empty"),
    ("weights-corrupt", [LINEAR, "--weights", "{tmp}/corrupt.pt", "--input", "x:4x2"], 1, "cannot load weights"),
    ("no-such-file", ["{tmp}/nope.py:M", "--input", "x:4x2"], 1, "does not exist"),
    ("no-such-class", [str(ROOT / "examples/linear/model.py:Nope"), "--input", "x:4x2"], 1, "has no 'Nope'"),
    ("constructor-fails", [LINEAR, "--init-args", '{"bogus": 1}', "--input", "x:4x2"], 1, "raised"),
    ("bad-shape", [LINEAR, "--input", "x:4x-2"], 2, "bad dimension"),
    ("bad-dtype", [LINEAR, "--input", "x:4x2:complex64"], 2, "unsupported dtype"),
    ("forward-raises-on-shape", [LINEAR, "--input", "x:4x3"], 1, "forward raised"),
    ("not-onnx", ["{tmp}/fake.onnx"], 1, "ONNX"),
    ("bad-init-json", [LINEAR, "--init-args", "{nope", "--input", "x:4x2"], 2, "not JSON"),
    ("bad-node-backend", [LINEAR, "--input", "x:4x2", "--node-backends", "gpu"], 2, "unknown Node backend"),
]


@pytest.mark.parametrize("args, code, text", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_bad_cli_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], code: int,
                        text: str) -> None:
    _write(tmp_path / "empty.pt", b"")
    _write(tmp_path / "corrupt.pt", b"\x80\x04garbage" * 8)
    _write(tmp_path / "fake.onnx", b"this is not a protobuf")
    out = tmp_path / "out"
    result = cli_main(["convert", *[a.replace("{tmp}", str(tmp_path)) for a in args], "--out", str(out)])
    err = capsys.readouterr().err
    assert result == code, err
    assert text in err and "error: [" in err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


API_CASES = [
    ("nested-outputs", _Nested(), CaptureError, "flat"),
    ("non-tensor-output", _NonTensor(), CaptureError, "float"),
    ("forward-raises", _Raises(), CaptureError, "this model is broken"),
]


@pytest.mark.parametrize("module, error, text", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_bad_models_through_the_api(tmp_path: Path, module: torch.nn.Module, error: type, text: str) -> None:
    with pytest.raises(error) as info:
        bridge.convert(module, ["x:2x3"], tmp_path / "out", browser=False)
    assert text in str(info.value) and isinstance(info.value, BridgeError)
    assert not (tmp_path / "out").exists()


class _Lin(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.fc(x)


@pytest.mark.node
def test_nan_weights_are_warned_and_parity_still_checked(tmp_path: Path) -> None:
    model = _Lin().eval()
    with torch.no_grad():
        model.fc.weight[0, 0] = float("nan")
    result = bridge.convert(model, ["x:2x3"], tmp_path / "out", browser=False, node_backends=("wasm",))
    assert any("fc.weight" in n and "NaN" in n for n in result.report["notes"])
    node = result.stage("tfjs-node-wasm")
    assert node.outputs and node.outputs[0].nan_mismatch == 0  # NaN where PyTorch has NaN: checked, not hidden


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.node
@pytest.mark.parametrize("route", ["native", "onnx"])
def test_same_model_twice_gives_identical_web_model(tmp_path: Path, route: str) -> None:
    from bridge.model_source import load_model

    runs = []
    for name in ("a", "b"):
        loaded = load_model(str(ROOT / "examples/tiny_cnn/model.py:TinyCNN"),
                            weights=ROOT / "examples/tiny_cnn/tiny_cnn.safetensors")
        result = bridge.convert(loaded, ["x:1x3x32x32"], tmp_path / name, route=route, browser=False,
                                node_backends=("wasm",))
        runs.append(result)
    assert _digest(tmp_path / "a" / "web_model") == _digest(tmp_path / "b" / "web_model")
    figures = [[(s.name, [o.max_abs for o in s.outputs]) for s in r.stages] for r in runs]
    assert figures[0] == figures[1]
    assert json.loads((tmp_path / "a" / "report.json").read_text())["versions"]["tensorflow"]
