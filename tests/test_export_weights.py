"""bridge.native.export_weights: a state_dict written as tfjs (manifest + shards), npz and safetensors, read back
exactly (float32 bit-identical; int64 buffers as int32 in tfjs); the tfjs files decoded by TF.js itself in Node
(tf.io.decodeWeights); refusals for values TF.js cannot hold, unknown formats and non-empty folders."""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from bridge.errors import OutputError, UsageError, WeightError
from bridge.native.export_weights import FORMATS, MANIFEST, cmd_export_weights, export_weights, load_state_dict
from bridge.runtime.node import node_executable, node_modules_dir


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    model[1].num_batches_tracked.fill_(7)
    return model


def _expected(state: dict[str, torch.Tensor], fmt: str) -> dict[str, np.ndarray]:
    arrays = {k: v.numpy() for k, v in state.items()}
    if fmt == "tfjs":  # TF.js holds no int64
        arrays = {k: v.astype(np.int32) if v.dtype == np.int64 else v for k, v in arrays.items()}
    return arrays


def _read_back(out: Path, fmt: str) -> dict[str, np.ndarray]:
    if fmt == "npz":
        with np.load(out / "weights.npz") as data:
            return {k: data[k] for k in data.files}
    if fmt == "safetensors":
        from safetensors.numpy import load_file
        return load_file(str(out / "weights.safetensors"))
    return _read_tfjs(out)


def _read_tfjs(out: Path) -> dict[str, np.ndarray]:
    """Decode the manifest the way TF.js does: concatenated shards, entries back to back in manifest order."""
    manifest = json.loads((out / MANIFEST).read_text())
    result = {}
    for group in manifest:
        data = b"".join((out / p).read_bytes() for p in group["paths"])
        offset = 0
        for entry in group["weights"]:
            dtype = {"float32": "<f4", "int32": "<i4", "bool": "|u1"}[entry["dtype"]]
            count = int(np.prod(entry["shape"]))
            values = np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(entry["shape"])
            result[entry["name"]] = values
            offset += values.nbytes
        assert offset == len(data)
    return result


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip(fmt: str, tmp_path: Path) -> None:
    state = _model().state_dict()
    result = export_weights(state, tmp_path / "w", fmt, shard_size=100)
    back = _read_back(tmp_path / "w", fmt)
    expected = _expected(state, fmt)
    assert sorted(back) == sorted(expected)  # safetensors stores keys in its own order
    if fmt != "safetensors":
        assert list(back) == list(expected)
    for key, array in expected.items():
        assert back[key].dtype == array.dtype, key
        np.testing.assert_array_equal(back[key], array, err_msg=key)
    assert result.count == len(state)
    if fmt == "tfjs":
        assert len(result.files) > 2  # 100-byte shards: the weights span several files


def test_tfjs_decoded_by_tfjs_in_node(tmp_path: Path) -> None:
    node = node_executable()
    modules = node_modules_dir()
    if node is None or not (modules / "@tensorflow/tfjs").is_dir():
        pytest.skip("Node or @tensorflow/tfjs is not installed (run scripts/setup.sh)")
    state = _model().state_dict()
    out = tmp_path / "w"
    export_weights(state, out, "tfjs", shard_size=64)
    script = f"""
const tf = require({json.dumps(str(modules / '@tensorflow/tfjs'))});
const fs = require('fs'); const path = require('path');
const dir = {json.dumps(str(out))};
const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'weights_manifest.json')));
const result = {{}};
for (const group of manifest) {{
  const buf = Buffer.concat(group.paths.map(p => fs.readFileSync(path.join(dir, p))));
  const ab = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength);
  const tensors = tf.io.decodeWeights(ab, group.weights);
  for (const [name, t] of Object.entries(tensors)) {{
    result[name] = {{shape: t.shape, dtype: t.dtype, values: Array.from(t.dataSync())}};
  }}
}}
console.log(JSON.stringify(result));
"""
    proc = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    decoded = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = _expected(state, "tfjs")
    assert set(decoded) == set(expected)
    for key, array in expected.items():
        assert decoded[key]["shape"] == list(array.shape), key
        assert decoded[key]["dtype"] == ("int32" if array.dtype.kind == "i" else "float32"), key
        np.testing.assert_array_equal(np.asarray(decoded[key]["values"], dtype=array.dtype).reshape(array.shape),
                                      array, err_msg=key)


def test_module_gives_its_state_dict(tmp_path: Path) -> None:
    model = _model()
    export_weights(model, tmp_path / "w", "npz")
    with np.load(tmp_path / "w" / "weights.npz") as data:
        assert list(data.files) == list(model.state_dict())


def test_tfjs_refuses_int64_out_of_int32_range(tmp_path: Path) -> None:
    with pytest.raises(WeightError, match="outside int32"):
        export_weights({"big": torch.tensor([2**40])}, tmp_path / "w", "tfjs")
    assert not (tmp_path / "w").exists()  # atomic: nothing left behind
    export_weights({"big": torch.tensor([2**40])}, tmp_path / "n", "npz")  # npz keeps int64: fine


@pytest.mark.parametrize("fmt,state,error", [
    ("onnx", {"a": torch.zeros(1)}, UsageError),
    ("npz", {}, UsageError),
])
def test_bad_requests_are_refused(fmt: str, state: dict, error: type, tmp_path: Path) -> None:
    with pytest.raises(error):
        export_weights(state, tmp_path / "w", fmt)


def test_non_empty_folder_needs_force(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "old.txt").write_text("x")
    with pytest.raises(OutputError):
        export_weights({"a": torch.ones(2)}, tmp_path / "w", "npz")
    export_weights({"a": torch.ones(2)}, tmp_path / "w", "npz", force=True)
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["weights.npz"]


def test_command_from_state_dict_file_and_model_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = _model().state_dict()
    torch.save(state, tmp_path / "sd.pt")
    assert load_state_dict(str(tmp_path / "sd.pt")).keys() == state.keys()
    args = argparse.Namespace(model=str(tmp_path / "sd.pt"), weights=None, init_args=None, format="safetensors",
                              out=tmp_path / "out", force=False)
    assert cmd_export_weights(args) == 0
    assert "as safetensors" in capsys.readouterr().out
    root = Path(__file__).resolve().parents[1]
    linear = load_state_dict(f"{root / 'examples/linear/model.py'}:LinearModel")
    assert sorted(linear) == ["a", "b"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_summary_counts_weight_bytes_apart_from_the_files(tmp_path: Path, fmt: str) -> None:
    """The summary's weight bytes are the arrays' own; the manifest and containers are counted on disk only."""
    state = _model().state_dict()
    result = export_weights(state, tmp_path / fmt, fmt)
    assert result.total_bytes == sum(v.numpy().nbytes for v in state.values())
    assert result.file_bytes == sum((result.out_dir / f).stat().st_size for f in result.files)
    assert result.file_bytes > result.total_bytes  # the manifest (tfjs) or container headers on top
