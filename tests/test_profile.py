"""The per-op profiler (benchmarks/op_profile.py, profile.mjs, ort_web/ort_profile.mjs) on a tiny converted CNN and
on op chains (40-55 s on a loaded 2-core machine, half of it the conversion).

Tolerances: per-op-type times must sum to the node total within 1e-3 ms (they are the same numbers regrouped, so
only rounding may differ); the nodes' time may exceed the run's time by at most 2 % (clock granularity); the fixed
cost per op call must lie between 0.1 µs (onnxruntime-web: 0.01 µs) and 1 ms; it is ~0.5-10 µs here. Each check
has a must-fail twin: the same profile, tampered, must be refused with the typed error.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import latency as lat  # noqa: E402
from benchmarks import op_profile as prof  # noqa: E402

SUM_ATOL_MS = 1e-3


class TinyNet(nn.Module):
    """Conv, batch norm, ReLU, max pool, a concatenation and a linear head: several op types, a few ms a run."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.side = nn.Conv2d(3, 4, 1)
        self.head = nn.Linear(12 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.bn(self.conv(x)))
        y = torch.cat([a, self.side(x)], 1)
        y = nn.functional.max_pool2d(y, 2)
        return self.head(torch.flatten(y, 1))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """TinyNet converted on the native route, and one profile of it in TF.js wasm (raw and summarised)."""
    import bridge
    from bridge.runtime.node import node_status

    if not node_status().ok:
        pytest.skip("Node and the pinned TF.js packages are needed: " + "; ".join(node_status().problems))
    torch.manual_seed(0)
    module = TinyNet().eval()
    out = tmp_path_factory.mktemp("profile") / "tiny"
    bridge.convert(module, ["x:1x3x16x16"], out, route="native", browser=False, force=True)
    web_model = out / "web_model"
    sample = {"x": np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)}
    raw = prof.tfjs_raw_profile(web_model, sample, "wasm", warmup=2, repeats=3, timeout_s=300)
    ops = prof.graph_op_types(web_model)
    return {"web_model": web_model, "raw": raw, "ops": ops, "summary": prof.summarize_tfjs(raw, ops)}


def test_profile_totals_add_up(tiny: dict[str, Any]) -> None:
    summary, raw = tiny["summary"], tiny["raw"]
    node_sum = sum(n["ms"] for n in raw["nodes"])
    assert sum(r["ms"] for r in summary["op_types"]) == pytest.approx(node_sum, abs=SUM_ATOL_MS)
    assert sum(r["ms"] for r in summary["kernels"]) == pytest.approx(summary["kernel_sum_ms"], abs=SUM_ATOL_MS)
    assert 0 < summary["kernel_sum_ms"] <= summary["node_sum_ms"] + SUM_ATOL_MS
    assert summary["node_sum_ms"] <= max(raw["run_ms"]) * 1.02
    assert summary["total_ms"] > 0 and summary["runs"] == 3
    assert sum(r["calls"] for r in summary["op_types"]) == summary["nodes_run"] == len(raw["nodes"])


def test_every_graph_op_type_is_profiled(tiny: dict[str, Any]) -> None:
    profiled = {r["op"] for r in tiny["summary"]["op_types"]}
    assert set(tiny["ops"]) <= profiled
    assert "_FusedConv2D" in profiled  # conv + batch norm + ReLU fold into one node
    kernels = {r["kernel"] for r in tiny["summary"]["kernels"]}
    assert {"FusedConv2D", "MaxPool"} <= kernels
    listed = {k["name"] for k in tiny["raw"]["tf_profile"]}
    assert all(part in listed for name in kernels for part in name.split("+"))  # fused: "_FusedMatMul+Reshape"


def test_tampered_kernel_list_is_refused(tiny: dict[str, Any]) -> None:
    raw = copy.deepcopy(tiny["raw"])
    raw["tf_profile"] = [k for k in raw["tf_profile"] if k["name"] != "FusedConv2D"]
    with pytest.raises(prof.ProfileError) as info:
        prof.summarize_tfjs(raw, tiny["ops"])
    assert info.value.kind == "attribution" and "FusedConv2D" in str(info.value)


def test_missing_op_type_is_refused(tiny: dict[str, Any]) -> None:
    ops = {**tiny["ops"], "Softmax": 1}  # model.json says a Softmax ran, the profile never saw one
    with pytest.raises(prof.ProfileError) as info:
        prof.summarize_tfjs(tiny["raw"], ops)
    assert info.value.kind == "ops" and "Softmax" in str(info.value)


@pytest.mark.parametrize("tamper", ["kernel_over_node", "nodes_longer_than_run"])
def test_inconsistent_times_are_refused(tiny: dict[str, Any], tamper: str) -> None:
    raw = copy.deepcopy(tiny["raw"])
    if tamper == "kernel_over_node":
        raw["nodes"][0]["kernel_ms"] = raw["nodes"][0]["ms"] * 2 + 1.0
    else:
        raw["node_sum_ms"] = [max(raw["run_ms"]) * 1.5 for _ in raw["node_sum_ms"]]
    with pytest.raises(prof.ProfileError) as info:
        prof.summarize_tfjs(raw, tiny["ops"])
    assert info.value.kind == "sums"


def test_tfjs_fixed_cost_is_a_positive_slope() -> None:
    found = prof.tfjs_fixed_cost(["wasm"], [20, 80, 320], warmup=3, repeats=7, timeout_s=120)
    fit = found["wasm"]["graph"]
    assert 1e-4 < fit["ms_per_op"] < 1.0
    points = found["wasm"]["points"]
    assert [p["n"] for p in points] == [20, 80, 320] and points[-1]["graph_ms"] > points[0]["graph_ms"]


@pytest.mark.skipif(lat.ort_status() is not None, reason="onnxruntime-web is not installed (make profile does)")
def test_ort_profile_of_an_add_chain(tmp_path: Path) -> None:
    prof.write_chain_onnx(12, tmp_path / "chain.onnx")
    raw = prof.ort_raw_profile(tmp_path / "chain.onnx", {"x": np.ones(1, np.float32)}, warmup=1, repeats=2,
                               timeout_s=120)
    summary = prof.summarize_ort(raw)
    assert summary["nodes_run"] == 12 and [r["op"] for r in summary["op_types"]] == ["Add"]
    assert summary["node_sum_ms"] <= summary["profiled_run_ms"] * 1.02
    fixed = prof.ort_fixed_cost([20, 80, 320], warmup=2, repeats=5, timeout_s=120)
    assert 1e-5 < fixed["graph"]["ms_per_op"] < 1.0


def test_markdown_names_the_model_and_the_fixed_cost(tiny: dict[str, Any]) -> None:
    fixed = {"tfjs": {"wasm": {"points": [{"n": 10, "graph_ms": 0.1, "eager_ms": 0.05},
                                          {"n": 20, "graph_ms": 0.2, "eager_ms": 0.1}],
                               "graph": prof.fit_slope([{"n": 10, "v": 0.1}, {"n": 20, "v": 0.2}], "v"),
                               "eager": prof.fit_slope([{"n": 10, "v": 0.05}, {"n": 20, "v": 0.1}], "v")}}}
    entry = {"model": "tiny", "status": "ok", "graph_ops": tiny["ops"], "graph_op_count": sum(tiny["ops"].values()),
             "tfjs": {"wasm": {"status": "ok", **tiny["summary"]}}}
    prof.add_fixed_shares(entry, fixed)
    assert entry["tfjs"]["wasm"]["fixed_share"] == pytest.approx(  # the slope: 0.1 ms more for 10 more ops
        entry["tfjs"]["wasm"]["nodes_run"] * 0.01 / entry["tfjs"]["wasm"]["total_ms"], abs=1e-4)
    report = {"command": "python benchmarks/op_profile.py", "finished": "now", "fixed": fixed, "models": [entry],
              "plan": {"clock": "cpu"}, "load_avg_end": [0, 0, 0],
              "machine": {"cpu": "cpu", "cores": 2, "load_avg_start": [0, 0, 0]}, "versions": {}}
    text = prof.render_markdown(report)
    assert "## tiny" in text and "_FusedConv2D" in text and "10.0 µs" in text


def test_a_model_the_executor_runs_async_is_refused(tiny: dict[str, Any], tmp_path: Path) -> None:
    """The node attribution holds for execute() only: a model marked as needing executeAsync must be refused by the
    Node profiler (its control-flow nodes run no tidy each), not profiled wrongly."""
    import json
    import shutil

    web_model = tmp_path / "web_model"
    shutil.copytree(tiny["web_model"], web_model)
    model = json.loads((web_model / "model.json").read_text())
    model.setdefault("userDefinedMetadata", {}).setdefault("bridge", {})["needsAsync"] = True
    (web_model / "model.json").write_text(json.dumps(model))
    sample = {"x": np.zeros((1, 3, 16, 16), np.float32)}
    with pytest.raises(prof.ProfileError) as info:
        prof.tfjs_raw_profile(web_model, sample, "wasm", warmup=1, repeats=1, timeout_s=120)
    assert info.value.kind == "attribution" and "executeAsync" in str(info.value)
