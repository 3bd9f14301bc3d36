"""The command line: help, version, doctor, and exit codes (0 success, 1 bridge error, 2 usage)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bridge import __version__

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run `python -m bridge.cli ARGS` and capture its output."""
    return subprocess.run([sys.executable, "-m", "bridge.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=300)


@pytest.mark.parametrize("command", ["", "convert", "parity", "tfjs", "inspect", "serve", "export-weights",
                                     "doctor"])
def test_help(command: str) -> None:
    result = run_cli(*([command] if command else []), "--help")
    assert result.returncode == 0
    assert "usage: bridge" in result.stdout


def test_tfjs_help_documents_every_option() -> None:
    text = run_cli("tfjs", "--help").stdout
    for option in ("--signature", "--quantize", "--shard-size", "--control-flow-v2", "--metadata", "--force"):
        assert option in text


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"bridge {__version__}"


def test_no_command_is_usage_error() -> None:
    assert run_cli().returncode == 2


EXIT_CASES = [
    # (id, args, exit code, text expected on stderr)
    ("unknown-option", ["convert", "m.py:M", "--out", "o", "--bogus"], 2, "unrecognized arguments"),
    ("bad-input-spec", ["convert", "examples/linear/model.py:LinearModel", "--input", "x:1xq", "--out", "{tmp}/o"],
     2, "bad dimension"),
    ("missing-model-file", ["convert", "nope.py:M", "--input", "x:1x2", "--out", "{tmp}/o"], 1, "does not exist"),
    ("no-such-class", ["convert", "examples/linear/model.py:Nope", "--input", "x:1x2", "--out", "{tmp}/o"], 1,
     "has no 'Nope'"),
    ("inspect-missing-folder", ["inspect", "{tmp}/none"], 1, "error:"),
]


@pytest.mark.parametrize("args, code, text", [c[1:] for c in EXIT_CASES], ids=[c[0] for c in EXIT_CASES])
def test_exit_codes(tmp_path: Path, args: list[str], code: int, text: str) -> None:
    result = run_cli(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.returncode == code, result.stderr
    assert text in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()


def test_doctor_reports_every_component() -> None:
    result = run_cli("doctor")
    for name in ("python", "torch", "tensorflow", "onnx", "onnxruntime", "onnx2tf", "node", "@tensorflow/tfjs",
                 "@tensorflow/tfjs-backend-wasm", "chromium"):
        assert name in result.stdout, name
    assert result.returncode == 0, result.stdout


def test_doctor_says_plainly_when_node_and_npm_packages_are_missing(tmp_path: Path) -> None:
    result = run_cli("doctor", env={"PATH": str(tmp_path), "BRIDGE_NODE_MODULES": str(tmp_path / "none")})
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert "apt-get install nodejs" in result.stdout
    assert "missing or broken: node" in result.stdout
