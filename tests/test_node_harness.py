"""The TF.js Node harness (bridge.runtime.node + bridge/js/tfjs_runner.mjs) on tiny hand-written graph models.

Each model is written by the test itself following the graph-model format (model.json + one weight shard), run in
the real @tensorflow/tfjs runtime on wasm and cpu, and compared with numpy: float outputs with atol 1e-6 /
rtol 1e-6, integer and bool outputs exactly.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.errors import BridgeError, MissingDependencyError, RuntimeStageError, UsageError, WebModelError
from bridge.runtime import node as node_rt
from bridge.runtime.node import BackendRun, node_status, require_node, run_graph_model
from bridge.runtime.tensor_io import TensorRef, pack_writer, read_tensor, to_js_array

ATOL = 1e-6
RTOL = 1e-6
BACKENDS = ("wasm", "cpu")
needs_node = pytest.mark.skipif(not node_status().ok, reason="Node or the pinned TF.js npm packages are missing")

# ------------------------------------------------------------------------------------------- model.json builders

_DT = {"float32": "DT_FLOAT", "int32": "DT_INT32", "bool": "DT_BOOL"}


def _dims(shape: tuple[int, ...]) -> dict[str, Any]:
    return {"dim": [{"size": str(d)} for d in shape]} if shape else {}


def _placeholder(name: str, dtype: str, shape: tuple[int, ...]) -> dict[str, Any]:
    return {"name": name, "op": "Placeholder",
            "attr": {"dtype": {"type": _DT[dtype]}, "shape": {"shape": _dims(shape)}}}


def _const(name: str, value: np.ndarray) -> dict[str, Any]:
    dtype = _DT[str(value.dtype)]
    return {"name": name, "op": "Const", "attr": {
        "dtype": {"type": dtype}, "value": {"tensor": {"dtype": dtype, "tensorShape": _dims(value.shape)}}}}


def _op(name: str, op: str, inputs: list[str], **attr: Any) -> dict[str, Any]:
    return {"name": name, "op": op, "input": inputs, "attr": attr}


def _sig(entries: dict[str, tuple[str, str, tuple[int, ...]]]) -> dict[str, Any]:
    return {key: {"name": name, "dtype": _DT[dtype], "tensorShape": _dims(shape)}
            for key, (name, dtype, shape) in entries.items()}


@dataclass(frozen=True)
class TinyModel:
    """A hand-written graph model and the numpy function it computes."""

    nodes: list[dict[str, Any]]
    weights: dict[str, np.ndarray]
    inputs: dict[str, tuple[str, str, tuple[int, ...]]]
    outputs: dict[str, tuple[str, str, tuple[int, ...]]]
    reference: Callable[..., dict[str, np.ndarray]]
    metadata: dict[str, Any] | None = None
    signature: bool = True

    def write(self, folder: Path) -> Path:
        """Writes model.json and group1-shard1of1.bin into `folder`."""
        folder.mkdir(parents=True, exist_ok=True)
        manifest = [{"name": k, "shape": list(v.shape), "dtype": str(v.dtype)} for k, v in self.weights.items()]
        data = b"".join(np.ascontiguousarray(v).tobytes() for v in self.weights.values())
        model: dict[str, Any] = {"format": "graph-model", "generatedBy": "2.19.0", "convertedBy": "bridge tests"}
        if self.signature:
            model["signature"] = {"inputs": _sig(self.inputs), "outputs": _sig(self.outputs)}
        model["modelTopology"] = {"node": self.nodes, "library": {}, "versions": {"producer": 1982}}
        if self.metadata is not None:
            model["userDefinedMetadata"] = self.metadata
        model["weightsManifest"] = [{"paths": ["group1-shard1of1.bin"] if data else [], "weights": manifest}]
        (folder / "model.json").write_text(json.dumps(model))
        if data:
            (folder / "group1-shard1of1.bin").write_bytes(data)
        return folder


W = np.array([[0.5, -1.0], [2.0, 0.25], [-1.5, 1.0]], dtype=np.float32)
B = np.array([0.1, -0.2], dtype=np.float32)


def dense_relu() -> TinyModel:
    """y = relu(x @ W + b); the MatMul node is fetched as an intermediate."""
    return TinyModel(
        nodes=[_placeholder("x", "float32", (-1, 3)), _const("w", W), _const("b", B),
               _op("dense/MatMul", "MatMul", ["x", "w"], T={"type": "DT_FLOAT"}),
               _op("dense/BiasAdd", "BiasAdd", ["dense/MatMul", "b"], T={"type": "DT_FLOAT"}),
               _op("dense/Relu", "Relu", ["dense/BiasAdd"], T={"type": "DT_FLOAT"})],
        weights={"w": W, "b": B},
        inputs={"x": ("x:0", "float32", (-1, 3))}, outputs={"y": ("dense/Relu:0", "float32", (-1, 2))},
        reference=lambda x: {"y": np.maximum(x.astype(np.float64) @ W + B, 0).astype(np.float32)})


def dense_no_signature() -> TinyModel:
    """dense_relu without a signature: inputs are the Placeholders, outputs keyed by the graph's sink node names."""
    base = dense_relu()
    return TinyModel(nodes=base.nodes, weights=base.weights, inputs=base.inputs, outputs=base.outputs,
                     reference=lambda x: {"dense/Relu": base.reference(x)["y"]}, signature=False)


def int_bool() -> TinyModel:
    """picked = where(m, a * 3, a) (int32), flipped = not m (bool): two inputs, two outputs, a scalar weight."""
    k = np.array(3, dtype=np.int32)
    return TinyModel(
        nodes=[_placeholder("a", "int32", (-1,)), _placeholder("m", "bool", (-1,)), _const("k", k),
               _op("scaled", "Mul", ["a", "k"], T={"type": "DT_INT32"}),
               _op("picked", "SelectV2", ["m", "scaled", "a"], T={"type": "DT_INT32"}),
               _op("flipped", "LogicalNot", ["m"])],
        weights={"k": k},
        inputs={"a": ("a:0", "int32", (-1,)), "m": ("m:0", "bool", (-1,))},
        outputs={"picked": ("picked:0", "int32", (-1,)), "flipped": ("flipped:0", "bool", (-1,))},
        reference=lambda a, m: {"picked": np.where(m, a * 3, a).astype(np.int32), "flipped": ~m})


def where_positive(metadata: dict[str, Any] | None = None) -> TinyModel:
    """idx = where(x > 0): a dynamic-shape op that needs executeAsync."""
    return TinyModel(
        nodes=[_placeholder("x", "float32", (-1,)), _const("zero", np.array(0, dtype=np.float32)),
               _op("pos", "Greater", ["x", "zero"], T={"type": "DT_FLOAT"}),
               _op("idx", "Where", ["pos"], T={"type": "DT_BOOL"})],
        weights={"zero": np.array(0, dtype=np.float32)},
        inputs={"x": ("x:0", "float32", (-1,))}, outputs={"idx": ("idx:0", "int32", (-1, 1))},
        reference=lambda x: {"idx": np.argwhere(x > 0).astype(np.int32)}, metadata=metadata)


def einsum() -> TinyModel:
    """y = einsum('ij,jk->ik', x, W): Einsum has a cpu kernel but no wasm kernel in tfjs 4.22.0."""
    return TinyModel(
        nodes=[_placeholder("x", "float32", (-1, 3)), _const("w", W),
               _op("y", "Einsum", ["x", "w"], equation={"s": base64.b64encode(b"ij,jk->ik").decode()},
                   N={"i": "2"}, T={"type": "DT_FLOAT"})],
        weights={"w": W},
        inputs={"x": ("x:0", "float32", (-1, 3))}, outputs={"y": ("y:0", "float32", (-1, 2))},
        reference=lambda x: {"y": (x.astype(np.float64) @ W).astype(np.float32)})


def _assert_matches(run: BackendRun, expected: list[dict[str, np.ndarray]]) -> None:
    assert run.error is None, run.error
    assert len(run.outputs) == len(expected)
    for got, want in zip(run.outputs, expected):
        assert list(got) == list(want), "outputs must come keyed and ordered as in the signature"
        for key, value in want.items():
            assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
            np.testing.assert_allclose(got[key], value, atol=ATOL, rtol=RTOL, err_msg=f"{run.backend}/{key}")


RNG = np.random.default_rng(0)
CASES = {
    "dense_relu": (dense_relu, [{"x": RNG.standard_normal((4, 3)).astype(np.float32)}], False),
    "dense_no_signature": (dense_no_signature, [{"x": RNG.standard_normal((2, 3))}], False),
    "int_bool_from_int64": (int_bool, [{"a": np.array([1, -2, 3, 40000]), "m": np.array([True, False, True, False])}],
                            False),
    "where_needs_async": (where_positive, [{"x": np.array([0.5, -1.0, 0.0, 2.0], dtype=np.float32)}], True),
    "where_fallback_async": (lambda: where_positive({"bridge": {"needsAsync": False}}),
                             [{"x": np.array([-3.0, 1.0], dtype=np.float32)}], True),
}


@pytest.mark.node
@needs_node
@pytest.mark.parametrize("case", sorted(CASES))
def test_outputs_match_numpy(tmp_path: Path, case: str) -> None:
    """Every backend reproduces numpy's values, dtypes and shapes; async is picked (or fallen back to) as needed."""
    build, input_sets, wants_async = CASES[case]
    model = build()
    runs = run_graph_model(model.write(tmp_path / case), input_sets, backends=BACKENDS)
    assert list(runs) == list(BACKENDS)
    expected = [model.reference(**{k: to_js_array(v, k) for k, v in s.items()}) for s in input_sets]
    for run in runs.values():
        _assert_matches(run, expected)
        assert run.used_async is wants_async, run.async_reason
        assert run.tensors_leaked == 0
        assert run.load_ms > 0 and len(run.infer_ms) == 1


@pytest.mark.node
@needs_node
def test_several_sets_fetch_and_timing(tmp_path: Path) -> None:
    """Three input sets (batch 1, 2, 5) in one call, a fetched intermediate node, warmup and repeats."""
    model = dense_relu()
    sets = [{"x": RNG.standard_normal((n, 3)).astype(np.float64)} for n in (1, 2, 5)]
    runs = run_graph_model(model.write(tmp_path / "m"), sets, fetch=["dense/MatMul"], warmup=1, repeats=3)
    for run in runs.values():
        _assert_matches(run, [model.reference(to_js_array(s["x"], "x")) for s in sets])
        assert len(run.infer_ms) == 3 and all(t > 0 for t in run.infer_ms)
        for fetched, s in zip(run.fetched, sets):
            want = (s["x"].astype(np.float32).astype(np.float64) @ W).astype(np.float32)
            np.testing.assert_allclose(fetched["dense/MatMul"], want, atol=ATOL, rtol=RTOL)


@pytest.mark.node
@needs_node
@pytest.mark.parametrize("form", ["by_key", "by_tensor_name", "by_node_name", "as_list"])
def test_input_forms(tmp_path: Path, form: str) -> None:
    """Inputs can be keyed by signature key, tensor name, node name, or listed in signature order."""
    a, m = np.array([5, 6], dtype=np.int32), np.array([False, True])
    input_set: Any = {"by_key": {"a": a, "m": m}, "by_tensor_name": {"a:0": a, "m:0": m},
                      "by_node_name": {"m": m, "a": a}, "as_list": [a, m]}[form]
    runs = run_graph_model(int_bool().write(tmp_path / "m"), [input_set], backends=("cpu",))
    _assert_matches(runs["cpu"], [int_bool().reference(a, m)])


@pytest.mark.node
@needs_node
def test_one_backend_failing_leaves_the_other(tmp_path: Path) -> None:
    """Einsum has no wasm kernel: wasm records the error, cpu still reports correct values."""
    model = einsum()
    x = RNG.standard_normal((2, 3)).astype(np.float32)
    runs = run_graph_model(model.write(tmp_path / "m"), [{"x": x}])
    assert runs["wasm"].error is not None and "Einsum" in runs["wasm"].error
    assert runs["wasm"].outputs == []
    _assert_matches(runs["cpu"], [model.reference(x)])


@pytest.mark.node
@needs_node
def test_wrong_expectation_is_detected(tmp_path: Path) -> None:
    """The comparison can fail: a bias off by 1e-4 is caught at atol 1e-6."""
    x = RNG.standard_normal((3, 3)).astype(np.float32)
    run = run_graph_model(dense_relu().write(tmp_path / "m"), [{"x": x}], backends=("wasm",))["wasm"]
    wrong = {"y": np.maximum(x @ W + B + 1e-4, 0).astype(np.float32)}
    with pytest.raises(AssertionError):
        _assert_matches(run, [wrong])


def _truncate_shard(folder: Path) -> None:
    shard = folder / "group1-shard1of1.bin"
    shard.write_bytes(shard.read_bytes()[:-4])


def _drop_shard(folder: Path) -> None:
    (folder / "group1-shard1of1.bin").unlink()


def _escape_folder(folder: Path) -> None:
    model = json.loads((folder / "model.json").read_text())
    model["weightsManifest"][0]["paths"] = ["../outside.bin"]
    (folder / "model.json").write_text(json.dumps(model))


def _no_model_json(folder: Path) -> None:
    (folder / "model.json").unlink()


BROKEN_FOLDERS = {"truncated_shard": (_truncate_shard, "bytes"), "missing_shard": (_drop_shard, "shard"),
                  "shard_outside_folder": (_escape_folder, "outside"), "no_model_json": (_no_model_json, "model.json")}


@pytest.mark.node
@needs_node
@pytest.mark.parametrize("case", sorted(BROKEN_FOLDERS))
def test_broken_model_folder_raises(tmp_path: Path, case: str) -> None:
    """A bad folder is a WebModelError with stage tfjs-node, raised quickly instead of hanging."""
    assert_broken_folder_fails_fast(run_graph_model, tmp_path, *BROKEN_FOLDERS[case], stage="tfjs-node")


def assert_broken_folder_fails_fast(runner: Callable[..., Any], tmp_path: Path, breaker: Callable[[Path], None],
                                    fragment: str, *, stage: str) -> None:
    """`runner(folder, input_sets, timeout_s=60)` on a dense model folder broken by `breaker` raises one
    WebModelError of `stage` naming `fragment`, with a hint, within 30 s."""
    folder = dense_relu().write(tmp_path / "m")
    breaker(folder)
    started = time.monotonic()
    with pytest.raises(WebModelError) as info:
        runner(folder, [{"x": np.zeros((1, 3), np.float32)}], timeout_s=60)
    assert info.value.stage == stage and fragment in str(info.value) and info.value.hint
    assert time.monotonic() - started < 30


BAD_REQUESTS: dict[str, dict[str, Any]] = {
    "int64_out_of_range": {"input_sets": [{"a": np.array([2**40]), "m": np.array([True])}]},
    "input_given_twice": {"input_sets": [{"a": np.array([1]), "a:0": np.array([1]), "m": np.array([True])}]},
    "unknown_input": {"input_sets": [{"a": np.array([1]), "mask": np.array([True])}]},
    "missing_input": {"input_sets": [{"a": np.array([1])}]},
    "wrong_dtype": {"input_sets": [{"a": np.array([1.5]), "m": np.array([True])}]},
    "wrong_rank": {"input_sets": [{"a": np.array([[1]]), "m": np.array([True])}]},
    "single_mapping": {"input_sets": {"a": np.array([1]), "m": np.array([True])}},
    "webgl_in_node": {"backends": ("webgl",)},
    "unknown_fetch": {"fetch": ["nope"]},
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_requests_raise_usage_errors(tmp_path: Path, case: str) -> None:
    """Wrong inputs are refused in Python, before Node starts, with stage tfjs-node."""
    args: dict[str, Any] = {"input_sets": [{"a": np.array([1]), "m": np.array([True])}], **BAD_REQUESTS[case]}
    with pytest.raises(UsageError) as info:
        run_graph_model(int_bool().write(tmp_path / "m"), args.pop("input_sets"), **args)
    assert info.value.stage == "tfjs-node"


class _RecordingPopen(subprocess.Popen):  # type: ignore[type-arg]
    """Popen that remembers every process it started."""

    started: list[subprocess.Popen[bytes]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _RecordingPopen.started.append(self)


class _CtrlCPopen(_RecordingPopen):
    """Popen whose first wait on the runner is interrupted as if the user pressed Ctrl-C."""

    def communicate(self, *args: Any, **kwargs: Any) -> Any:
        if "tfjs_runner" in str(self.args) and not getattr(self, "interrupted", False):
            self.interrupted = True
            time.sleep(0.1)
            raise KeyboardInterrupt
        return super().communicate(*args, **kwargs)


STOPS: dict[str, tuple[type[subprocess.Popen], float, type[BaseException]]] = {  # type: ignore[type-arg]
    "timeout": (_RecordingPopen, 0.05, RuntimeStageError),
    "ctrl_c": (_CtrlCPopen, 60.0, KeyboardInterrupt),
}


@pytest.mark.node
@needs_node
@pytest.mark.parametrize("case", sorted(STOPS))
def test_stopping_kills_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    """A tiny timeout (typed error) or Ctrl-C (re-raised) leaves no Node process behind."""
    popen, timeout_s, error = STOPS[case]
    _RecordingPopen.started = []
    monkeypatch.setattr(node_rt.subprocess, "Popen", popen)
    with pytest.raises(error) as info:
        run_graph_model(dense_relu().write(tmp_path / "m"), [{"x": np.zeros((1, 3), np.float32)}],
                        timeout_s=timeout_s)
    if isinstance(info.value, BridgeError):
        assert info.value.stage == "tfjs-node" and "0.05" in str(info.value)
    assert any("tfjs_runner" in str(p.args) for p in _RecordingPopen.started), "the runner was never started"
    for proc in _RecordingPopen.started:  # `node --version` and the runner itself
        assert proc.returncode is not None
        with pytest.raises(ProcessLookupError):
            os.kill(proc.pid, 0)


def _fake_node(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "fake-node"
    script.write_text("#!/bin/sh\nif [ \"$1\" = --version ]; then echo v20.0.0; exit 0; fi\n" + body + "\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


@pytest.mark.node
@needs_node
def test_crash_reports_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A runner that dies is a RuntimeStageError carrying the end of Node's stderr."""
    monkeypatch.setenv("BRIDGE_NODE", str(_fake_node(tmp_path, "echo 'boom: out of memory' >&2; exit 134")))
    with pytest.raises(RuntimeStageError) as info:
        run_graph_model(dense_relu().write(tmp_path / "m"), [{"x": np.zeros((1, 3), np.float32)}])
    assert "134" in info.value.message and any("boom" in line for line in info.value.details)


def test_missing_node_modules_is_a_problem_not_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty node_modules is listed in node_status().problems with the fix; running raises MissingDependencyError."""
    monkeypatch.setenv("BRIDGE_NODE_MODULES", str(tmp_path / "empty"))
    status = node_status()
    assert not status.ok and status.packages["@tensorflow/tfjs"] is None
    assert any("@tensorflow/tfjs " in p and "scripts/setup.sh" in p for p in status.problems)
    with pytest.raises(MissingDependencyError) as info:
        run_graph_model(dense_relu().write(tmp_path / "m"), [{"x": np.zeros((1, 3), np.float32)}])
    assert info.value.stage == "tfjs-node" and info.value.details


def test_missing_node_is_a_problem(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No node binary: node_status() says how to install it and require_node() raises the typed error."""
    monkeypatch.setenv("BRIDGE_NODE", str(tmp_path / "no-such-node"))
    status = node_status()
    assert status.node_path is None and any("apt-get install" in p for p in status.problems)
    with pytest.raises(MissingDependencyError):
        require_node()


@pytest.mark.node
@needs_node
def test_status_reports_pinned_versions() -> None:
    """On a set-up machine every pinned package is installed at its pinned version."""
    status = node_status()
    assert status.ok and status.node_version and status.node_version.startswith("v")
    assert status.packages == status.pinned


PACK_CASES = {
    "float32": np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
    "int32": np.array([-(2**31), 0, 2**31 - 1], dtype=np.int32),
    "bool_scalar": np.array(True),
    "empty": np.zeros((0, 4), dtype=np.float32),
    "float64_cast": np.array([1e-3, 1e30]),
}


@pytest.mark.parametrize("case", sorted(PACK_CASES))
def test_pack_round_trip(tmp_path: Path, case: str) -> None:
    """Arrays written to a pack read back identical (after the TF.js dtype cast)."""
    array = to_js_array(PACK_CASES[case], case)
    with pack_writer(tmp_path / "p.bin") as writer:
        writer.add(np.zeros(3, np.bool_))
        ref = writer.add(array)
    assert ref.offset % 8 == 0
    got = read_tensor((tmp_path / "p.bin").read_bytes(), TensorRef.from_json(ref.to_json()))
    np.testing.assert_array_equal(got, array)
    assert got.dtype == array.dtype


@pytest.mark.parametrize("value", [np.array([1e300]), np.array([2**31]), np.array(["a"]), np.array([1 + 2j])])
def test_unrepresentable_inputs_are_refused(value: np.ndarray) -> None:
    """Casts that would change values (or dtypes TF.js inputs lack) raise instead of wrapping silently."""
    with pytest.raises(BridgeError):
        to_js_array(value, "x")
