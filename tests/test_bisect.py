"""Per-layer bisection: alignment of PyTorch modules with graph nodes, the divergence rule, the ONNX scope map, the
PyTorch capture, and end to end: a conversion made wrong on purpose at one known layer (`features.4`) is reported
inaccurate and that layer is named as the first divergence, in the TF.js stages and, when the SavedModel is the
wrong one, in the TF (savedmodel) stage.

This file also holds the helpers the report, parity-command and testing-API tests share (one conversion per session).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import bridge
from bridge.bisect import (GraphTensors, LayerLink, LayerPoint, TorchLayers, align_layers, capture_torch_layers,
                           compare_layers, match_score, metadata_layer_map, onnx_layer_map)
from bridge.parity.metrics import Tolerance
from bridge.stages.result import Status

SPEC = "x:1x3x16x16"
CULPRIT = "features.4"  # the layer every deliberate-divergence case breaks
TOL = Tolerance(1e-4, 1e-3)


class BisectNet(nn.Module):
    """Conv+BN (folded by the exporter), pooling, a second conv (the culprit), a GELU head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.fc1 = nn.Linear(16, 32)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(torch.flatten(self.features(x), 1))))


def make_net() -> BisectNet:
    """The test model with fixed weights and non-trivial batch-norm statistics."""
    torch.manual_seed(0)
    net = BisectNet().eval()
    with torch.no_grad():
        net.features[1].running_mean.uniform_(-0.5, 0.5)
        net.features[1].running_var.uniform_(0.5, 2.0)
    return net


def culprit_weight(net: BisectNet) -> np.ndarray:
    """features.4's kernel, OIHW."""
    return net.features[4].weight.detach().numpy()


# ------------------------------------------------------------------------------------------------ shared helpers


def tamper_web_weight(web_model: Path, torch_weight: np.ndarray, factor: float = 1.02) -> str:
    """Scale the web model weight holding `torch_weight` (OIHW kernel, found by value as HWIO) in its shard bytes."""
    from bridge.tfjs.reader import read_web_model

    model = read_web_model(web_model)
    target = np.transpose(torch_weight, (2, 3, 1, 0))
    name = next(n for n, w in model.weights.items() if w.shape == target.shape and np.allclose(w, target, atol=1e-6))
    entry = next(e for e in model.entries if e.name == name)
    shards = [s for s in model.shards if s.group == entry.group]
    blob = bytearray(b"".join((web_model / s.path).read_bytes() for s in shards))
    values = np.frombuffer(bytes(blob[entry.offset:entry.offset + entry.nbytes]), "<f4") * factor
    blob[entry.offset:entry.offset + entry.nbytes] = values.astype("<f4").tobytes()
    start = 0
    for shard in shards:
        (web_model / shard.path).write_bytes(bytes(blob[start:start + shard.nbytes]))
        start += shard.nbytes
    return name


def tamper_saved_model(saved_model: Path, torch_weight: np.ndarray, factor: float = 1.02) -> str:
    """Scale the Const holding `torch_weight` (as HWIO) in saved_model.pb (captured by the serving function or
    inside one of its functions); returns its node name."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((saved_model / "saved_model.pb").read_bytes())
    target = np.transpose(torch_weight, (2, 3, 1, 0))
    graph = proto.meta_graphs[0].graph_def
    for node in [*graph.node, *(n for f in graph.library.function for n in f.node_def)]:
        if node.op != "Const":
            continue
        value = tf.make_ndarray(node.attr["value"].tensor)
        if value.shape == target.shape and np.allclose(value, target, atol=1e-6):
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto((value * factor).astype(value.dtype)))
            (saved_model / "saved_model.pb").write_bytes(proto.SerializeToString())
            return node.name
    raise AssertionError("the culprit's kernel is not a Const of the SavedModel")


def convert_net(out: Path, *, layers: bool = False, tamper_web: bool = False, browser: bool = False,
                route: str = "onnx") -> Any:
    """Convert `make_net()` with reports, parity data and bisection; with `tamper_web`, the writer's web model is
    broken on purpose at features.4 (its kernel scaled by 1.02) before the web stages check it."""
    import bridge.tfjs.convert as tfjs_convert

    net = make_net()
    with pytest.MonkeyPatch.context() as mp:
        if tamper_web:
            write_web = tfjs_convert.convert_saved_model

            def wrong_writer(saved_model: Path, out_dir: Path, options: Any) -> Any:
                summary = write_web(saved_model, out_dir, options)
                tamper_web_weight(Path(out_dir), culprit_weight(net))
                return summary

            mp.setattr(tfjs_convert, "convert_saved_model", wrong_writer)
        return bridge.convert(net, [SPEC], out, force=True, browser=browser, route=route, layers=layers)


_CONVERSIONS: dict[str, Path] = {}


def converted(factory: pytest.TempPathFactory, kind: str = "clean", route: str = "onnx") -> Path:
    """One conversion per kind, route and test session ("clean" with --layers, "wrong-web": features.4 broken by
    the writer); callers copy the folder before changing it."""
    key = f"{kind}-{route}"
    if key not in _CONVERSIONS:
        out = factory.mktemp(f"bisect-{key}") / "out"
        convert_net(out, layers=kind == "clean", tamper_web=kind == "wrong-web", route=route)
        _CONVERSIONS[key] = out
    return _CONVERSIONS[key]


def copy_of(folder: Path, target: Path) -> Path:
    """A private copy of a shared conversion folder."""
    shutil.copytree(folder, target)
    return target


def report_of(out: Path) -> dict[str, Any]:
    """The report.json of an output folder."""
    return json.loads((out / "report.json").read_text())


# ------------------------------------------------------------------------------------------------ alignment (unit)


def _graph(values: dict[str, np.ndarray]) -> GraphTensors:
    names = list(values)
    return GraphTensors(names, {n: "Op" for n in names}, {n: ([names[k - 1]] if k else []) for k, n in
                                                           enumerate(names)}, values)


RNG = np.random.default_rng(0)
A = RNG.standard_normal((1, 4, 5, 6)).astype(np.float32)
B = RNG.standard_normal((1, 4, 5, 6)).astype(np.float32)
C = RNG.standard_normal((1, 7)).astype(np.float32)
NHWC = (0, 2, 3, 1)

ALIGN_CASES = [
    # (id, torch points {path: value}, graph nodes {name: value}, expected {path: (node, perm)})
    ("identity", {"a": A, "c": C}, {"n_a": A, "n_c": C}, {"a": ("n_a", None), "c": ("n_c", None)}),
    ("channels-last", {"a": A}, {"n_a": np.transpose(A, NHWC)}, {"a": ("n_a", NHWC)}),
    ("scaled copy is not a counterpart", {"a": A}, {"half": A / 2, "n_a": A}, {"a": ("n_a", None)}),
    ("fused away", {"conv": A, "bn": A * 1.5 + 0.2}, {"fused": A * 1.5 + 0.2}, {"bn": ("fused", None)}),
    ("order kept", {"a": A, "b": B}, {"n_b_early": B + 0.0, "n_a": A, "n_b": B}, {"a": ("n_a", None),
                                                                                 "b": ("n_b", None)}),
    ("slightly wrong still linked", {"a": A}, {"n_a": A * 1.01}, {"a": ("n_a", None)}),
    ("unrelated never linked", {"a": A}, {"other": B}, {}),
    ("shape must fit", {"c": C}, {"n": C.reshape(7, 1)}, {}),
]


@pytest.mark.parametrize("points, nodes, expected", [c[1:] for c in ALIGN_CASES], ids=[c[0] for c in ALIGN_CASES])
def test_align_layers(points: dict[str, np.ndarray], nodes: dict[str, np.ndarray],
                      expected: dict[str, tuple[str, Any]]) -> None:
    layer_points = [LayerPoint(p, "M", None, tuple(v.shape)) for p, v in points.items()]
    links = align_layers(layer_points, list(points.values()), _graph(nodes))
    assert {link.path: (link.node, link.perm) for link in links} == expected


SCORE_CASES = [  # (id, a, b, low, high): match_score bounds
    ("equal", A, A, 1.0, 1.0),
    ("1% off", A, A * 1.01, 0.985, 0.995),
    ("half", A, A / 2, 0.49, 0.51),
    ("unrelated", A, B, -1.0, 0.1),
]


@pytest.mark.parametrize("a, b, low, high", [c[1:] for c in SCORE_CASES], ids=[c[0] for c in SCORE_CASES])
def test_match_score(a: np.ndarray, b: np.ndarray, low: float, high: float) -> None:
    assert low - 1e-9 <= match_score(a, b) <= high + 1e-9


# ------------------------------------------------------------------------------------------------ divergence rule

DIVERGENCE_CASES = [
    # (id, per-point error factor applied to the stage's value (0 = exact), expected first layer, observed, dropped)
    ("all agree", [0, 0, 0, 0], None, None, []),
    ("breaks at the third", [0, 0, 0.05, 0.05], "p2", "p2", []),
    ("isolated mismatch is not blamed", [0.3, 0, 0, 0], None, None, ["p0"]),
    ("isolated mismatch then real break", [0.3, 0, 0.05, 0.05], "p2", "p2", ["p0"]),
    ("unlinked modules before the break form the span", [0, None, 0.05, 0.05], "p1", "p2", []),
    ("first layer already wrong", [0.05, 0.05, 0.05, 0.05], "p0", "p0", []),
]


@pytest.mark.parametrize("errors, first, observed, dropped", [c[1:] for c in DIVERGENCE_CASES],
                         ids=[c[0] for c in DIVERGENCE_CASES])
def test_first_divergence_rule(errors: list[float | None], first: str | None, observed: str | None,
                               dropped: list[str]) -> None:
    values = [RNG.standard_normal((2, 8)).astype(np.float32) + 3 for _ in errors]
    points = [LayerPoint(f"p{k}", "Linear", f"model.py:{10 + k}", (2, 8)) for k in range(len(errors))]
    torch_layers = TorchLayers(points, [[v] for v in values])
    links = [LayerLink(f"p{k}", f"n{k}") for k, e in enumerate(errors) if e is not None]
    actual = [{f"n{k}": values[k] * (1 + e) for k, e in enumerate(errors) if e is not None}]
    result = compare_layers("tfjs-graph", "aligned", links, torch_layers, actual, TOL)
    found = result.first_divergence
    assert (found["layer"] if found else None) == first
    assert (found["observed_at"] if found else None) == observed
    assert result.unconfirmed == dropped
    if found:
        assert found["stage"] == "tfjs-graph" and found["source"] == f"model.py:{10 + int(first[1:])}"
        assert found["max_abs"] > TOL.atol  # the numbers behind the verdict, against the stage's tolerance


# ------------------------------------------------------------------------------------------------ maps from names


def _onnx_node(name: str, output: str, scopes: list[str] | None) -> Any:
    import onnx

    node = onnx.helper.make_node("Relu", [f"{output}_in"], [output], name=name)
    if scopes is not None:
        node.metadata_props.add(key="pkg.torch.onnx.name_scopes", value=repr(scopes))
    return node


ONNX_CASES = [
    # (id, nodes (name, output, scopes), points, expected {path: onnx value})
    ("dynamo scopes, last node of a module wins",
     [("n0", "v0", ["", "features", "features.0", "conv2d"]), ("n1", "v1", ["", "features", "features.0", "add"]),
      ("n2", "v2", ["", "fc", "linear"])], ["features.0", "fc"], {"features.0": "v1", "fc": "v2"}),
    ("a container's output is its last child's node, claimed by the container",
     [("n0", "v0", ["", "block", "block.conv", "conv2d"])], ["block.conv", "block"], {"block": "v0"}),
    ("legacy exporter names", [("/features/features.4/Conv", "v4", None)], ["features.4"], {"features.4": "v4"}),
    ("no metadata, no link", [("node_Relu_1", "v1", None)], ["features.4"], {}),
    ("a module called twice is not linked", [("n0", "v0", ["", "act", "relu"]), ("n1", "v1", ["", "act", "relu"])],
     ["act", "act#2"], {}),
]


@pytest.mark.parametrize("nodes, paths, expected", [c[1:] for c in ONNX_CASES], ids=[c[0] for c in ONNX_CASES])
def test_onnx_layer_map(nodes: list[tuple[str, str, list[str] | None]], paths: list[str],
                        expected: dict[str, str]) -> None:
    import onnx

    graph = onnx.helper.make_graph([_onnx_node(*n) for n in nodes], "g", [], [])
    model = onnx.helper.make_model(graph)
    links = onnx_layer_map(model, [LayerPoint(p, "M", None, (1,)) for p in paths])
    assert {link.path: link.node for link in links} == expected


def test_metadata_layer_map_is_the_native_routes_plug_in() -> None:
    model_json = {"userDefinedMetadata": {"bridge": {"layers": [
        {"module": "features.4", "node": "features.4/Relu", "permFromTorch": [0, 2, 3, 1]},
        {"module": "fc", "node": "fc/MatMul:0", "permFromTorch": None}]}}}
    links = metadata_layer_map(model_json)
    assert links == [LayerLink("features.4", "features.4/Relu", NHWC), LayerLink("fc", "fc/MatMul:0", None)]
    assert metadata_layer_map({"userDefinedMetadata": {"bridge": {}}}) is None


# ------------------------------------------------------------------------------------------------ PyTorch capture


class _Reused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 4), nn.Tanh())
        self.shared = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared(self.shared(self.body(x)))


def test_capture_torch_layers_paths_aliases_reuse_and_source() -> None:
    from bridge.source.inputs import InputSpec

    torch.manual_seed(0)
    model = _Reused().eval()
    samples = [{"x": RNG.standard_normal((2, 4)).astype(np.float32)} for _ in range(2)]
    expected_out = model(torch.from_numpy(samples[0]["x"])).detach().numpy()
    layers = capture_torch_layers(model, samples, [InputSpec("x", (2, 4))],
                                  reference=[{"out": model(torch.from_numpy(s["x"])).detach().numpy()}
                                             for s in samples])
    paths = [p.path for p in layers.points]
    assert paths == ["body.0", "body.1", "shared", "shared#2", "output:out"]
    assert layers.points[1].aliases == ["body"]  # the Sequential's output is its Tanh's
    assert layers.points[0].params == 20 and layers.points[1].params == 0
    assert all(p.source and p.source.startswith(__file__) for p in layers.points[:-1])
    np.testing.assert_allclose(layers.values[3][0], expected_out, rtol=1e-6, atol=1e-6)
    assert len(layers.values[0]) == 2


# ------------------------------------------------------------------------------------------------ end to end


def _stage_layers(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["stage"]: s for s in report["layers"]["stages"]}


@pytest.mark.node
def test_clean_conversion_with_layers_has_no_divergence(tmp_path_factory: pytest.TempPathFactory) -> None:
    report = report_of(converted(tmp_path_factory, "clean"))
    assert report["status"] == "pass"
    layers = report["layers"]
    assert layers["first_divergence"] is None
    stages = _stage_layers(report)
    assert {"onnx", "savedmodel", "tfjs-graph", "tfjs-node-wasm", "tfjs-node-cpu"} <= set(stages)
    for name, stage in stages.items():
        assert stage["error"] is None, (name, stage["error"])
        assert len(stage["layers"]) >= 6, name  # most modules have a counterpart in every graph
        for layer in stage["layers"]:
            assert layer["status"] == "pass" and layer["max_abs"] < 1e-4, (name, layer)
    assert CULPRIT in {x["path"] for x in stages["onnx"]["layers"]}  # linked by the exporter's scopes


@pytest.mark.node
@pytest.mark.parametrize("route", ["onnx", "native"])
def test_wrong_web_model_names_the_culprit_in_the_tfjs_stages(tmp_path_factory: pytest.TempPathFactory,
                                                               route: str) -> None:
    report = report_of(converted(tmp_path_factory, "wrong-web", route))
    assert report["route"] == route
    statuses = {s["name"]: s["status"] for s in report["stages"]}
    assert statuses["tf"] == statuses["savedmodel"] == "pass" and statuses.get("onnx", "pass") == "pass"
    for name in ("tfjs-graph", "tfjs-node-wasm", "tfjs-node-cpu"):
        assert statuses[name] == "inaccurate", statuses
    first = report["layers"]["first_divergence"]
    assert first["stage"] == "tfjs-graph" and first["layer"] == CULPRIT and first["kind"] == "Conv2d"
    assert first["source"].startswith(__file__)
    assert first["last_agreeing"] == "features.3"
    stages = _stage_layers(report)
    for name in ("tfjs-graph", "tfjs-node-wasm", "tfjs-node-cpu"):
        assert stages[name]["first_divergence"]["layer"] == CULPRIT, name
    assert stages["savedmodel"]["first_divergence"] is None  # before the writer, everything agrees


@pytest.mark.node
def test_wrong_saved_model_names_the_culprit_in_the_tf_stage(tmp_path_factory: pytest.TempPathFactory,
                                                             tmp_path: Path) -> None:
    from bridge.parity.recheck import run_parity

    out = copy_of(converted(tmp_path_factory, "clean"), tmp_path / "out")
    tamper_saved_model(out / "saved_model", culprit_weight(make_net()))
    run = run_parity(out, browser=False)
    assert run.exit_code == 3
    statuses = {s.name: s.status for s in run.stages}
    assert statuses["savedmodel"] is Status.INACCURATE and statuses["onnx"] is Status.PASS
    first = run.report["layers"]["first_divergence"]
    assert (first["stage"], first["layer"]) == ("savedmodel", CULPRIT)


@pytest.mark.node
@pytest.mark.browser
def test_bisection_in_chromium(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    from bridge.parity.recheck import run_parity
    from bridge.runtime.browser import browser_status

    if browser_status().problems:
        pytest.skip("; ".join(browser_status().problems))
    out = copy_of(converted(tmp_path_factory, "clean"), tmp_path / "out")
    tamper_web_weight(out / "web_model", culprit_weight(make_net()))
    run = run_parity(out, browser=True)
    stages = _stage_layers(run.report)
    for name in ("browser-webgl", "browser-wasm"):
        assert stages[name]["error"] is None, stages[name]["error"]
        assert stages[name]["first_divergence"]["layer"] == CULPRIT, name
    assert run.report["layers"]["first_divergence"]["stage"] == "tfjs-graph"
