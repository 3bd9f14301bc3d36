"""Named outputs a JS user can rely on: a model returning a dict of outputs keeps the dict's order in the web
model's signature and metadata (TF would sort the keys), and `GraphModel.predict()` in TF.js returns the outputs by
name (`structuredOutputKeys`), with the values PyTorch computes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import bridge
from bridge.runtime.node import node_executable, node_modules_dir

ORDER = ["logits", "embedding", "score"]  # not alphabetical on purpose

PREDICT = r"""
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import fs from 'node:fs';
import path from 'node:path';
const [dir, xPath] = process.argv.slice(2);
const modelJSON = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8'));
const group = modelJSON.weightsManifest[0];
const bytes = Buffer.concat(group.paths.map((p) => fs.readFileSync(path.join(dir, p))));
const weightData = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
await tf.setBackend('cpu');
const model = await tf.loadGraphModel(tf.io.fromMemory({ ...modelJSON, weightSpecs: group.weights, weightData }));
const x = JSON.parse(fs.readFileSync(xPath, 'utf8'));
const result = model.predict(tf.tensor(x.data, x.shape));
const out = {};
for (const [key, t] of Object.entries(result)) out[key] = Array.from(await t.data());
console.log(JSON.stringify({ keys: Object.keys(result), outputs: out, executeOrder: model.outputs.map((o) => o.name) }));
"""


class _ThreeOutputs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Linear(6, 5)
        self.head = torch.nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        embedding = torch.tanh(self.body(x))
        return {"logits": self.head(embedding), "embedding": embedding, "score": embedding.sum(1)}


@pytest.mark.node
@pytest.mark.parametrize("route", ["native", "onnx"])
def test_dict_outputs_keep_their_order_in_javascript(tmp_path: Path, route: str) -> None:
    if node_executable() is None:
        pytest.skip("Node is not installed")
    torch.manual_seed(0)
    model = _ThreeOutputs().eval()
    result = bridge.convert(model, ["x:2x6"], tmp_path / "out", route=route, browser=False, node_backends=("wasm",))
    assert result.ok, [(s.name, s.status, s.reason) for s in result.stages]
    model_json = json.loads((tmp_path / "out" / "web_model" / "model.json").read_text())
    assert list(model_json["signature"]["outputs"]) == ORDER
    assert model_json["userDefinedMetadata"]["structuredOutputKeys"] == ORDER
    assert [o["name"] for o in model_json["userDefinedMetadata"]["bridge"]["outputs"]] == ORDER
    assert [o["name"] for o in result.report["model"]["outputs"]] == ORDER

    x = np.random.default_rng(1).standard_normal((2, 6)).astype(np.float32)
    (tmp_path / "x.json").write_text(json.dumps({"data": x.ravel().tolist(), "shape": list(x.shape)}))
    script = node_modules_dir().parent / f".predict-{route}.mjs"  # beside node_modules, so the imports resolve
    script.write_text(PREDICT)
    try:
        run = subprocess.run([node_executable(), str(script), str(tmp_path / "out" / "web_model"),
                              str(tmp_path / "x.json")], capture_output=True, text=True, timeout=120)
    finally:
        script.unlink()
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["keys"] == ORDER
    with torch.no_grad():
        expected = model(torch.from_numpy(x))
    for name in ORDER:
        np.testing.assert_allclose(np.array(got["outputs"][name]), expected[name].numpy().ravel(), atol=1e-5)


def test_without_the_users_order_the_signature_is_sorted(tmp_path: Path) -> None:
    """The must-fail twin: TF flattens a dict of outputs in sorted key order, so without the order bridge passes to
    its writer the web model would list them alphabetically."""
    from bridge.tfjs.convert import TfjsOptions, convert_saved_model

    torch.manual_seed(0)
    result = bridge.convert(_ThreeOutputs().eval(), ["x:2x6"], tmp_path / "out", route="native", browser=False,
                            node_backends=())
    convert_saved_model(tmp_path / "out" / "saved_model", tmp_path / "plain", TfjsOptions())
    plain = json.loads((tmp_path / "plain" / "model.json").read_text())
    assert list(plain["signature"]["outputs"]) == sorted(ORDER) != ORDER
    assert result.ok
