"""Preprocessing and labels given at conversion (--image-range, --mean, --std, --labels): recorded in model.json,
used by the demo page and by the generated module; bad values are usage errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["examples/tiny_cnn/model.py:TinyCNN", "--weights", "examples/tiny_cnn/tiny_cnn.safetensors", "--input",
        "x:1x3x64x64", "--no-browser", "--node-backends", "wasm"]


@pytest.mark.node
def test_preprocessing_and_labels_reach_model_json_the_page_and_the_module(tmp_path: Path) -> None:
    from bridge.webmodule.spec import read_spec

    labels = [f"class {c}" for c in "abcdefghij"]
    (tmp_path / "labels.txt").write_text("\n".join(labels) + "\n")
    out = tmp_path / "out"
    code = cli_main(["convert", *TINY, "--out", str(out), "--image-range=-1..1", "--mean", "0.5,0.4,0.3",
                     "--std", "0.2", "--labels", str(tmp_path / "labels.txt")])
    assert code == 0
    model_json = json.loads((out / "web_model" / "model.json").read_text())
    meta = model_json["userDefinedMetadata"]
    assert meta["bridge"]["preprocessing"] == {"x": {"range": [-1.0, 1.0], "mean": [0.5, 0.4, 0.3], "std": [0.2]}}
    assert meta["labels"] == labels
    page = (out / "index.html").read_text()
    assert '"range": [-1.0, 1.0]' in page or '"range":[-1.0,1.0]' in page or "-1" in page
    spec = read_spec(out / "web_model")
    (image,) = spec.images
    assert image.range == (-1.0, 1.0) and image.mean == (0.5, 0.4, 0.3) and image.std == (0.2, 0.2, 0.2)
    assert spec.labels == tuple(labels)


@pytest.mark.parametrize("flags, text", [
    (["--image-range", "1..1"], "LOW < HIGH"),
    (["--image-range", "one..two"], "LOW..HIGH"),
    (["--std", "0,1,1"], "positive"),
    (["--mean", "a,b"], "comma-separated"),
    (["--mean", "0.1,0.2"], "has 3 channel(s)"),
])
def test_bad_preprocessing_values_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   flags: list[str], text: str) -> None:
    try:
        code = cli_main(["convert", *TINY, "--out", str(tmp_path / "out"), *flags])
    except SystemExit as exc:  # argparse's own refusal of a value it cannot parse
        code = exc.code
    assert code == 2
    assert text in capsys.readouterr().err and not (tmp_path / "out").exists()
