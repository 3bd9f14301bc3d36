"""Replaying a web model with large weights (bridge.tfjs.replay): the weights are fed to Placeholders, not restored
into Const nodes, so the replay holds them about once instead of many times over.

The model: a SavedModel of three dense layers with 16, 8 and 8 MiB kernels, written with bridge's writer and read
back. Checked: the outputs match TF running the SavedModel and the former all-Const replay (not bit for bit: with
oneDNN a MatMul whose weight is a Const gets a blocked weight layout, a fed weight the plain one, so sums are
ordered differently); small graphs (no weight over the threshold) replay exactly as before; a failure of the fed
replay falls back to the all-Const one; and, in a child process (its peak RSS, VmHWM, reset through
/proc/self/clear_refs before each replay: getrusage's peak only ever grows), the fed replay's peak growth stays under
3x the weight bytes where the all-Const replay's goes over 4x (the must-fail twin).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from bridge.errors import ConversionError  # noqa: E402
from bridge.tfjs import replay  # noqa: E402
from bridge.tfjs.convert import TfjsOptions, convert_saved_model  # noqa: E402
from bridge.tfjs.reader import read_web_model  # noqa: E402
from bridge.tfjs.reader import signature_infos  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ((1024, 4096), (4096, 512), (512, 4096))  # kernels of 16, 8 and 8 MiB
BATCH = 3


class DenseStack(tf.Module):
    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(0)
        self.kernels = [tf.Variable(rng.normal(0, 1 / np.sqrt(n), (n, m)).astype(np.float32)) for n, m in LAYERS]
        self.biases = [tf.Variable(rng.normal(0, 0.1, m).astype(np.float32)) for _, m in LAYERS]

    @tf.function(input_signature=[tf.TensorSpec([None, LAYERS[0][0]], tf.float32, name="x")])
    def __call__(self, x: Any) -> Any:
        for kernel, bias in zip(self.kernels, self.biases):
            x = tf.nn.relu(tf.matmul(x, kernel) + bias)
        return {"y": x}


@pytest.fixture(scope="module")
def web_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("replay_memory")
    module = DenseStack()
    tf.saved_model.save(module, str(root / "saved"))
    convert_saved_model(root / "saved", root / "web", TfjsOptions(force=True))
    x = np.random.default_rng(1).normal(0, 1, (BATCH, LAYERS[0][0])).astype(np.float32)
    return {"path": root / "web", "x": x, "want": module(tf.constant(x))["y"].numpy()}


def _replay(path: Path, samples: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    model = read_web_model(path)
    inputs, outputs = signature_infos(model.signature)
    return replay.replay_samples(model.graph_def, model.weights, samples, inputs, outputs)


def test_fed_weights_match_tf_and_the_const_replay(web_model: dict[str, Any],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    model = read_web_model(web_model["path"])
    big = [n for n, v in model.weights.items() if v.nbytes >= replay.PLACEHOLDER_MIN_BYTES]
    assert len(big) == len(LAYERS), "every kernel must be fed (the test would not exercise the fed path)"
    x, x2 = web_model["x"], web_model["x"][::-1].copy()
    fed = _replay(web_model["path"], [{"x": x}, {"x": x2}])
    np.testing.assert_allclose(fed[0]["y"], web_model["want"], rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(replay, "PLACEHOLDER_MIN_BYTES", 1 << 62)  # every weight restored into its Const
    consts = _replay(web_model["path"], [{"x": x}, {"x": x2}])
    for a, b in zip(fed, consts):
        np.testing.assert_allclose(a["y"], b["y"], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(fed[1]["y"], fed[0]["y"][::-1])  # rows are independent: the same per row


def test_small_weights_stay_consts(tmp_path: Path) -> None:
    """Below the threshold nothing is fed: the graph replayed is exactly the former one."""
    from tensorflow.core.framework import graph_pb2

    graph_def = graph_pb2.GraphDef()
    x = graph_def.node.add(name="x", op="Placeholder")
    x.attr["dtype"].type = tf.float32.as_datatype_enum
    from bridge.tfjs.graph_names import copy_graph, make_const

    graph_def.node.append(make_const("w", np.zeros((4, 4), np.float32)))
    graph_def.node.add(name="y", op="MatMul", input=["x", "w"]).attr["T"].type = tf.float32.as_datatype_enum
    weights = {"w": np.arange(16, dtype=np.float32).reshape(4, 4)}
    work = copy_graph(graph_def)
    assert replay._weights_as_placeholders(work, weights) == {}
    assert work == graph_def
    big = {"w": np.ones((256, 256), np.float32)}  # 256 KiB: fed, and turned into a Placeholder of its shape
    graph_def.node[1].CopyFrom(make_const("w", np.zeros((256, 256), np.float32)))
    work = copy_graph(graph_def)
    assert list(replay._weights_as_placeholders(work, big)) == ["w:0"]
    assert work.node[1].op == "Placeholder" and [d.size for d in work.node[1].attr["shape"].shape.dim] == [256, 256]


def test_fed_replay_failure_falls_back_to_consts(web_model: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Should the fed graph not run, the all-Const replay is the one whose result (or error) counts."""
    run = replay._run
    calls: list[int] = []

    def refuse_fed(work: Any, names: Any, feeds: Any) -> Any:
        calls.append(sum(n.op == "Placeholder" for n in work.node))
        if calls[-1] > 1:
            raise ValueError("fed replay refused")
        return run(work, names, feeds)

    monkeypatch.setattr(replay, "_run", refuse_fed)
    got = _replay(web_model["path"], [{"x": web_model["x"]}])
    assert calls == [1 + len(LAYERS), 1]
    np.testing.assert_allclose(got[0]["y"], web_model["want"], rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(replay, "_run", lambda *a: (_ for _ in ()).throw(ValueError("both refused")))
    with pytest.raises(ConversionError, match="both refused"):
        _replay(web_model["path"], [{"x": web_model["x"]}])


CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    from bridge.tfjs import replay
    from bridge.tfjs.reader import read_web_model
    from bridge.tfjs.reader import signature_infos

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))

    def growth(weights):
        with open("/proc/self/clear_refs", "w") as f:  # resets the peak RSS (VmHWM) to the current RSS
            f.write("5")
        base = status("VmRSS")
        replay.replay_samples(model.graph_def, weights, [x, x], inputs, outputs)
        return status("VmHWM") - base

    model = read_web_model(sys.argv[1])
    inputs, outputs = signature_infos(model.signature)
    x = {"x": np.ones((3, 1024), np.float32)}
    growth({})  # warm up TF's session machinery
    figures = {"weight_bytes": sum(v.nbytes for v in model.weights.values()), "fed": growth(model.weights)}
    replay.PLACEHOLDER_MIN_BYTES = 1 << 62
    figures["consts"] = growth(model.weights)
    print(json.dumps(figures))
""")


def test_fed_replay_peak_memory(web_model: dict[str, Any]) -> None:
    """Peak RSS growth of a replay, over the RSS with TF loaded, the model read (the weights held once by the
    caller) and a Session already run: under 3x the weight bytes fed; the all-Const replay goes over 4x."""
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak RSS")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", CHILD, str(web_model["path"])], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    weight_bytes = figures["weight_bytes"]
    assert weight_bytes > 30 * 2**20
    assert figures["fed"] < 3 * weight_bytes, figures
    assert figures["consts"] > 4 * weight_bytes, figures  # the twin: the measurement sees the former copies
