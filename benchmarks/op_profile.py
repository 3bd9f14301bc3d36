"""Where the time goes: a per-op profile of every benchmark model in TF.js (Node, wasm one thread, and cpu) beside
onnxruntime-web's own profile of the same model's ONNX export, and the fixed cost of one op call on this machine.

    python benchmarks/op_profile.py                    # every model of benchmarks/models.py (make profile)
    python benchmarks/op_profile.py --models unet --backends wasm

Each model is converted with bridge's native route (benchmarks/convert_one.py, into out/bench/MODEL-native, the
folder `make bench` uses; an existing conversion there is reused) and exported to ONNX (out/bench/MODEL-export, or
the ONNX route's out/bench/MODEL-onnx/model.onnx when it is there). Then, on the seeded sample input 0:

* TF.js (benchmarks/profile.mjs): warm-up runs, `repeats` plain runs (the honest total), `repeats` instrumented
  runs (per graph node: wall time from its tf.tidy scope, and the kernels it ran with their time; the median over
  runs is kept per node) and one tf.profile() run whose kernel list must match the instrumented one;
* onnxruntime-web (benchmarks/ort_web/ort_profile.mjs): plain runs, then runs of a session with `enableProfiling`,
  whose trace gives each node's kernel time (ORT's op types are those after its graph optimizations: FusedConv...);
* the fixed cost of one op call: chains of N AddV2 nodes on 1-element tensors in a TF.js graph model (and eagerly),
  chains of N Add nodes in onnxruntime-web; the least-squares slope of run time over N is the cost per op.

Results: benchmarks/results/profile.json and profile.md (written only when every figure is in; a model that fails
is recorded with its reason). The "fixed cost share" of a model is (nodes run) x (fixed cost per op) / (total).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python benchmarks/op_profile.py` as well as `python -m benchmarks.op_profile`
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks import latency as lat  # noqa: E402
from benchmarks import run as bench  # noqa: E402
from benchmarks.models import MODELS  # noqa: E402

PROFILER = ROOT / "benchmarks" / "profile.mjs"
ORT_PROFILER = lat.ORT_DIR / "ort_profile.mjs"
CHAIN_LENGTHS = (25, 50, 100, 200, 400, 800, 1600, 3200)
SKIP_OPS = frozenset({"Const", "Placeholder", "NoOp"})  # graph ops that never run a node scope
SUM_TOLERANCE = 1e-6  # op-type sums must equal the node sum (the same numbers, regrouped)
WALL_TOLERANCE = 0.02  # the nodes' time can exceed the run's wall time only by timer granularity
TOP_NODES = 10
TOP_OPS = 12
SMALL_NODE_MS = 0.05  # a node this fast is mostly fixed cost (several op calls' worth at ~5-10 µs each)
Log = Callable[[str], None]
CLOCK_WORDS = {"cpu": "CPU time of the Node process (user + system; onnxruntime-web's per-node times are its own "
                      "wall-clock timings)", "wall": "wall-clock time"}


class ProfileError(RuntimeError):
    """A profile that cannot be trusted: the runner crashed, or its figures do not add up. `kind` names the
    check ("runner", "attribution", "sums", "ops")."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


@dataclass(frozen=True)
class ProfilePlan:
    """What to profile and how many runs. cpu gets fewer runs (ResNet-18 takes ~16 s a run there)."""

    models: tuple[str, ...]
    backends: tuple[str, ...] = ("wasm", "cpu")
    warmup: int = 3
    repeats: int = 5
    cpu_warmup: int = 1
    cpu_repeats: int = 1
    ort: bool = True
    chain_lengths: tuple[int, ...] = CHAIN_LENGTHS
    chain_warmup: int = 20
    chain_repeats: int = 40
    timeout_s: float = 1200.0
    clock: str = "cpu"  # TF.js figures and every total: "cpu" (process CPU time) or "wall"


# ---------------------------------------------------------------------------------------------------- models

def _bench_plan() -> bench.Plan:
    """The benchmark's conversion settings, without the quantized size variants (not needed here)."""
    return bench.Plan(models=(), routes=("native",), sizes=False)


def ensure_web_model(model: str, work: Path, log: Log) -> Path:
    """The model's native-route web model under `work`, converted now unless a successful conversion is there."""
    result_path, web_model = work / f"{model}-native.json", work / f"{model}-native" / "web_model"
    converted = result_path.is_file() and (web_model / "model.json").is_file()
    if converted and json.loads(result_path.read_text()).get("status") == "ok":
        return web_model
    log(f"  converting {model} (native route)")
    result = bench.run_conversion(model, "native", _bench_plan(), work)
    if result.get("status") != "ok":
        raise ProfileError("convert", f"{model} did not convert: {result.get('reason')}")
    return web_model


def ensure_onnx(model: str, work: Path, log: Log) -> Path:
    """The model's ONNX file: the ONNX route's or an earlier export under `work`, else a fresh export."""
    for path in (work / f"{model}-onnx" / "model.onnx", work / f"{model}-export" / "model.onnx"):
        if path.is_file():
            return path
    log(f"  exporting {model} to ONNX")
    path, note = bench.onnx_file_for(model, {}, _bench_plan(), work)
    if path is None:
        raise ProfileError("convert", f"{model}: {note}")
    return path


def sample_input(model: str) -> dict[str, np.ndarray]:
    """The seeded sample input 0 of a benchmark model (PyTorch layout), as the benchmark times it."""
    from bridge.source.inputs import make_sample_inputs, parse_input_spec

    specs = [parse_input_spec(text) for text in MODELS[model].inputs]
    return dict(make_sample_inputs(specs, count=1, seed=0)[0])


def graph_op_types(web_model: Path) -> dict[str, int]:
    """How many nodes of each op type model.json holds (Const, Placeholder and NoOp left out)."""
    nodes = json.loads((web_model / "model.json").read_text())["modelTopology"].get("node", [])
    counts: dict[str, int] = defaultdict(int)
    for node in nodes:
        if node["op"] not in SKIP_OPS:
            counts[node["op"]] += 1
    return dict(counts)


# ---------------------------------------------------------------------------------------------------- runners

def run_node_script(script: Path, request: dict[str, Any], work: Path, timeout_s: float) -> dict[str, Any]:
    """Runs `node script request.json` in `work` and returns its summary; a ProfileError when there is none."""
    from bridge.runtime.node import node_executable

    node = node_executable()
    if node is None:
        raise ProfileError("runner", "Node.js not found")
    request = {**request, "summary_file": str(work / "summary.json")}
    (work / "request.json").write_text(json.dumps(request))
    done = subprocess.run([node, str(script), str(work / "request.json")], capture_output=True, text=True,
                          timeout=timeout_s, stdin=subprocess.DEVNULL, cwd=work, check=False)
    if not (work / "summary.json").is_file():
        raise ProfileError("runner", f"{script.name} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    summary = json.loads((work / "summary.json").read_text())
    if summary.get("fatal"):
        fatal = summary["fatal"]
        kind = fatal.get("kind", "runner") if isinstance(fatal, dict) else "runner"
        raise ProfileError(kind, str(fatal.get("message") if isinstance(fatal, dict) else fatal))
    return summary


def tfjs_request(web_model: Path, sample: Mapping[str, np.ndarray], work: Path) -> dict[str, Any]:
    """The TF.js part of a request: the model folder and the sample packed as the web model takes it."""
    from bridge.runtime.node import _normalise_set, _read_interface, node_modules_dir
    from bridge.runtime.tensor_io import pack_writer

    inputs = _normalise_set(lat.web_inputs(web_model, sample), _read_interface(web_model), 0)
    with pack_writer(work / "inputs.bin") as writer:
        refs = {key: writer.add(array).to_json() for key, array in inputs.items()}
    return {"kind": "model", "model_dir": str(web_model.resolve()), "node_modules": str(node_modules_dir()),
            "inputs_file": str(work / "inputs.bin"), "input_set": refs}


def tfjs_raw_profile(web_model: Path, sample: Mapping[str, np.ndarray], backend: str, *, warmup: int,
                     repeats: int, timeout_s: float, clock: str = "cpu") -> dict[str, Any]:
    """benchmarks/profile.mjs on one backend: its raw result (nodes, kernels, timings, tf.profile list)."""
    with tempfile.TemporaryDirectory(prefix="bridge-profile-") as tmp:
        work = Path(tmp)
        request = {**tfjs_request(web_model, sample, work), "backends": [backend], "warmup": warmup,
                   "repeats": repeats, "clock": clock}
        summary = run_node_script(PROFILER, request, work, timeout_s)
    result = {**summary["backends"][0], "clock": summary.get("clock", clock)}
    if result.get("error"):
        raise ProfileError(result.get("error_kind") or "runner", f"TF.js {backend}: {result['error']}")
    result["versions"] = summary.get("versions", {})
    return result


def ort_raw_profile(onnx_path: Path, sample: Mapping[str, np.ndarray], *, warmup: int, repeats: int,
                    timeout_s: float) -> dict[str, Any]:
    """benchmarks/ort_web/ort_profile.mjs on the ONNX file: its raw result (nodes of the profiled runs, timings)."""
    problem = lat.ort_status()
    if problem:
        raise ProfileError("runner", problem)
    with tempfile.TemporaryDirectory(prefix="bridge-profile-ort-") as tmp:
        work = Path(tmp)
        request = {"kind": "model", "model_file": str(onnx_path.resolve()), "inputs_file": str(work / "inputs.bin"),
                   "inputs": lat._pack_inputs(sample, work / "inputs.bin"), "warmup": warmup, "repeats": repeats,
                   "node_modules": str(lat.ORT_MODULES)}
        summary = run_node_script(ORT_PROFILER, request, work, timeout_s)
    result = summary["result"]
    if result.get("error"):
        raise ProfileError("runner", f"onnxruntime-web {result.get('stage')}: {result['error']}")
    result["versions"] = summary.get("versions", {})
    return result


# ---------------------------------------------------------------------------------------------------- fixed cost

def write_chain_onnx(n: int, path: Path) -> None:
    """An ONNX model y = x + 1 + 1 + ... (n Add nodes, 1-element float32 tensors), input x, output y."""
    import onnx
    from onnx import TensorProto, helper

    names = ["x"] + [f"t{i}" for i in range(n - 1)] + ["y"]
    nodes = [helper.make_node("Add", [names[i], "one"], [names[i + 1]], name=f"add_{i}") for i in range(n)]
    graph = helper.make_graph(nodes, f"chain{n}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
                              [helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def fit_slope(points: Sequence[Mapping[str, Any]], key: str) -> dict[str, float]:
    """Least-squares line of points[key] (ms) over points["n"]: ms per op, intercept, and the worst residual."""
    ns = np.asarray([p["n"] for p in points], dtype=np.float64)
    ms = np.asarray([p[key] for p in points], dtype=np.float64)
    slope, intercept = np.polyfit(ns, ms, 1)
    worst = float(np.max(np.abs(ms - (slope * ns + intercept))))
    return {"ms_per_op": round(float(slope), 5), "intercept_ms": round(float(intercept), 4),
            "worst_residual_ms": round(worst, 4)}


def tfjs_fixed_cost(backends: Sequence[str], lengths: Sequence[int], warmup: int, repeats: int,
                    timeout_s: float, clock: str = "cpu") -> dict[str, Any]:
    """TF.js's cost per op call per backend: graph-model chains (executor + op + kernel) and eager chains."""
    from bridge.runtime.node import node_modules_dir

    with tempfile.TemporaryDirectory(prefix="bridge-profile-fixed-") as tmp:
        request = {"kind": "fixed", "node_modules": str(node_modules_dir()), "backends": list(backends),
                   "lengths": list(lengths), "warmup": warmup, "repeats": repeats, "clock": clock}
        summary = run_node_script(PROFILER, request, Path(tmp), timeout_s)
    found: dict[str, Any] = {}
    for entry in summary["backends"]:
        if entry.get("error"):
            raise ProfileError("runner", f"TF.js {entry['backend']} chains: {entry['error']}")
        points = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in p.items()} for p in entry["points"]]
        found[entry["backend"]] = {"points": points, "graph": fit_slope(points, "graph_ms"),
                                   "eager": fit_slope(points, "eager_ms")}
    return found


def ort_fixed_cost(lengths: Sequence[int], warmup: int, repeats: int, timeout_s: float) -> dict[str, Any]:
    """onnxruntime-web's cost per op call: chains of Add nodes (session.run, input and output copies included)."""
    problem = lat.ort_status()
    if problem:
        raise ProfileError("runner", problem)
    with tempfile.TemporaryDirectory(prefix="bridge-profile-ort-fixed-") as tmp:
        work = Path(tmp)
        models = []
        for n in lengths:
            write_chain_onnx(n, work / f"chain{n}.onnx")
            models.append({"n": n, "file": str(work / f"chain{n}.onnx")})
        request = {"kind": "chain", "models": models, "warmup": warmup, "repeats": repeats,
                   "node_modules": str(lat.ORT_MODULES)}
        result = run_node_script(ORT_PROFILER, request, work, timeout_s)["result"]
    if result.get("error"):
        raise ProfileError("runner", f"onnxruntime-web chains: {result['error']}")
    points = [{"n": p["n"], "ms": round(p["ms"], 4)} for p in result["points"]]
    return {"points": points, "graph": fit_slope(points, "ms")}


# ---------------------------------------------------------------------------------------------------- summaries

def _share(ms: float, total: float) -> float | None:
    return round(ms / total, 4) if total > 0 else None


def group_by(items: Sequence[Mapping[str, Any]], key: str, total: float) -> list[dict[str, Any]]:
    """Rows {key, calls, ms, share} of items grouped by items[key] (ms summed), slowest first."""
    ms: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    for item in items:
        ms[item[key]] += float(item["ms"])
        calls[item[key]] += 1
    rows = [{key: name, "calls": calls[name], "ms": round(ms[name], 4), "share": _share(ms[name], total)}
            for name in ms]
    return sorted(rows, key=lambda r: -r["ms"])


def check_tfjs_profile(raw: Mapping[str, Any], graph_ops: Mapping[str, int]) -> None:
    """Refuses a TF.js profile whose figures do not add up (ProfileError): per-op-type times must sum to the node
    total; no node may spend more in kernels than in all; the nodes cannot take longer than the runs; every op
    type of model.json must have run; tf.profile()'s kernel list must hold every kernel the nodes ran."""
    nodes = raw["nodes"]
    node_sum = sum(float(n["ms"]) for n in nodes)
    by_type = sum(r["ms"] for r in group_by(nodes, "op", node_sum))
    if abs(by_type - node_sum) > SUM_TOLERANCE * max(1.0, node_sum) + 1e-3:
        raise ProfileError("sums", f"per-op-type times sum to {by_type:.4f} ms, the nodes to {node_sum:.4f} ms")
    over = [n["name"] for n in nodes if float(n["kernel_ms"]) > float(n["ms"]) * (1 + WALL_TOLERANCE) + 1e-3]
    if over:
        raise ProfileError("sums", f"{len(over)} nodes spend more time in kernels than in all, e.g. {over[0]}")
    walls = sorted(float(w) for w in raw["run_ms"])
    sums = sorted(float(s) for s in raw["node_sum_ms"])
    if sums[0] > walls[-1] * (1 + WALL_TOLERANCE):
        raise ProfileError("sums", f"the nodes take {sums[0]:.3f} ms, longer than any run ({walls[-1]:.3f} ms)")
    seen = {n["op"] for n in nodes}
    missing = sorted(set(graph_ops) - seen)
    if missing:
        raise ProfileError("ops", f"op types of model.json that no profiled node ran: {', '.join(missing)}")
    listed = Counter(k["name"] for k in raw["tf_profile"])
    used = Counter(part for n in nodes for name in n["kernels"] for part in name.split("+"))
    short = sorted(name for name in used if used[name] > listed[name])
    if short:
        name = short[0]
        raise ProfileError("attribution", f"the nodes ran {used[name]} {name} kernels, tf.profile() listed "
                           f"{listed[name]} ({len(short)} kernel names short)")


def residual_rows(raw: Mapping[str, Any], run_ms: float, node_sum: float) -> dict[str, float]:
    """The run's time that no node's median holds, in three parts: node time above the per-node medians (GC pauses
    and run-to-run spread land in some node of each run), the executor between nodes (its loop, disposals past a
    tensor's last use), and the rest (before the first node and after the last, model.execute's wrapper, the read
    back)."""
    per_run = float(np.median(raw["node_sum_ms"]))
    between = float(raw["executor_gaps_ms"]["between_nodes"])
    return {"node_spread_ms": round(max(0.0, per_run - node_sum), 3), "between_nodes_ms": round(between, 3),
            "edges_ms": round(max(0.0, run_ms - max(per_run, node_sum) - between), 3)}


def summarize_tfjs(raw: Mapping[str, Any], graph_ops: Mapping[str, int]) -> dict[str, Any]:
    """A checked TF.js profile as tables: op types (node time), kernels (kernel time), the slowest nodes."""
    check_tfjs_profile(raw, graph_ops)
    nodes = raw["nodes"]
    wall = float(np.median(raw["run_ms"]))
    node_sum = sum(float(n["ms"]) for n in nodes)
    kernels = [{"kernel": k, "ms": ms} for n in nodes for k, ms in zip(n["kernels"], n["kernel_times"])]
    slowest = sorted(nodes, key=lambda n: -float(n["ms"]))[:TOP_NODES]
    return {
        "total_ms": round(float(np.median(raw["plain_ms"])), 3), "instrumented_ms": round(wall, 3),
        "wall_total_ms": round(float(np.median(raw["plain_wall_ms"])), 3), "clock": raw.get("clock", "cpu"),
        "node_sum_ms": round(node_sum, 3), "kernel_sum_ms": round(sum(float(n["kernel_ms"]) for n in nodes), 3),
        "outside_nodes_ms": round(max(0.0, wall - node_sum), 3), "nodes_run": len(nodes),
        **residual_rows(raw, wall, node_sum),
        "kernel_calls": sum(len(n["kernels"]) for n in nodes), "runs": raw["runs"],
        "op_types": group_by(nodes, "op", wall), "kernels": group_by(kernels, "kernel", wall),
        "top_nodes": [{"name": n["name"], "op": n["op"], "kernels": "+".join(n["kernels"]) or "-",
                       "shape": n["shapes"][0] if n["shapes"] else None, "ms": round(float(n["ms"]), 4),
                       "kernel_ms": round(float(n["kernel_ms"]), 4), "share": _share(float(n["ms"]), wall)}
                      for n in slowest],
        "executor_gaps_ms": {k: round(float(v), 3) for k, v in raw["executor_gaps_ms"].items()},
        "small_nodes": {"under_ms": SMALL_NODE_MS, "count": sum(1 for n in nodes if float(n["ms"]) < SMALL_NODE_MS),
                        "ms": round(sum(float(n["ms"]) for n in nodes if float(n["ms"]) < SMALL_NODE_MS), 3)},
        "tf_profile_kernel_ms": round(sum(float(k["ms"]) for k in raw["tf_profile"]), 3),
        "versions": raw.get("versions", {}),
    }


def summarize_ort(raw: Mapping[str, Any]) -> dict[str, Any]:
    """onnxruntime-web's profile as tables: op types and the slowest nodes (shares of the profiled run)."""
    nodes = raw["nodes"]
    run = float(np.median(raw["run_ms"]))
    node_sum = sum(float(n["ms"]) for n in nodes)
    slowest = sorted(nodes, key=lambda n: -float(n["ms"]))[:TOP_NODES]
    return {"total_ms": round(float(raw["plain_median_ms"]), 3), "profiled_run_ms": round(run, 3),
            "wall_total_ms": round(float(raw["plain_wall_median_ms"]), 3),
            "node_sum_ms": round(node_sum, 3), "outside_nodes_ms": round(max(0.0, run - node_sum), 3),
            "nodes_run": len(nodes), "runs": raw["runs"], "op_types": group_by(nodes, "op", run),
            "top_nodes": [{"name": n["name"], "op": n["op"], "shape": n["shapes"][0] if n["shapes"] else None,
                           "ms": round(float(n["ms"]), 4), "share": _share(float(n["ms"]), run)} for n in slowest],
            "version": (raw.get("versions") or {}).get("onnxruntime_web")}


def fixed_share(nodes_run: int, ms_per_op: float | None, total_ms: float | None) -> float | None:
    """The share of a run that is the fixed cost of its op calls: nodes run x cost per op / total."""
    if ms_per_op is None or not total_ms:
        return None
    return round(nodes_run * ms_per_op / total_ms, 4)


# ---------------------------------------------------------------------------------------------------- one model

def profile_model(model: str, plan: ProfilePlan, work: Path, log: Log) -> dict[str, Any]:
    """Every profile of one model; a failure of one part is recorded with its reason, never raised."""
    entry: dict[str, Any] = {"model": model, "inputs": list(MODELS[model].inputs), "cnn": MODELS[model].cnn}
    try:
        web_model = ensure_web_model(model, work, log)
    except (ProfileError, OSError, ValueError) as exc:
        return {**entry, "status": "failed", "reason": str(exc)}
    sample = sample_input(model)
    entry["graph_ops"] = graph_op_types(web_model)
    entry["graph_op_count"] = sum(entry["graph_ops"].values())
    entry["tfjs"] = {}
    for backend in plan.backends:
        cpu = backend == "cpu"
        log(f"  TF.js {backend}")
        try:
            raw = tfjs_raw_profile(web_model, sample, backend, warmup=plan.cpu_warmup if cpu else plan.warmup,
                                   repeats=plan.cpu_repeats if cpu else plan.repeats, timeout_s=plan.timeout_s,
                                   clock=plan.clock)
            entry["tfjs"][backend] = {"status": "ok", **summarize_tfjs(raw, entry["graph_ops"])}
        except (ProfileError, subprocess.TimeoutExpired) as exc:
            entry["tfjs"][backend] = {"status": "failed", "reason": str(exc)[:600]}
    if plan.ort:
        log("  onnxruntime-web wasm")
        try:
            raw = ort_raw_profile(ensure_onnx(model, work, log), sample, warmup=plan.warmup, repeats=plan.repeats,
                                  timeout_s=plan.timeout_s)
            entry["ort_web"] = {"status": "ok", **summarize_ort(raw)}
        except (ProfileError, subprocess.TimeoutExpired) as exc:
            entry["ort_web"] = {"status": "failed", "reason": str(exc)[:600]}
    entry["status"] = "ok" if all(v.get("status") == "ok" for v in entry["tfjs"].values()) else "failed"
    return entry


def add_fixed_shares(entry: dict[str, Any], fixed: Mapping[str, Any]) -> None:
    """Puts the fixed-cost share beside each profile of a model (TF.js per backend, onnxruntime-web): each op call
    is charged the slope of the runtime's op chains (the graph-model chain for TF.js)."""
    for backend, prof in entry.get("tfjs", {}).items():
        cost = (fixed.get("tfjs", {}).get(backend) or {}).get("graph", {}).get("ms_per_op")
        if prof.get("status") == "ok":
            prof["fixed_ms_per_op"] = cost
            prof["fixed_share"] = fixed_share(prof["nodes_run"], cost, prof["total_ms"])
    ort = entry.get("ort_web") or {}
    if ort.get("status") == "ok":
        cost = (fixed.get("ort_web") or {}).get("graph", {}).get("ms_per_op")
        ort["fixed_ms_per_op"] = cost
        ort["fixed_share"] = fixed_share(ort["nodes_run"], cost, ort["total_ms"])


# ---------------------------------------------------------------------------------------------------- Markdown

def _ms(value: Any, digits: int = 2) -> str:
    return "–" if value is None else f"{float(value):.{digits}f}"


def _gaps(prof: Mapping[str, Any]) -> str:
    gaps = prof.get("executor_gaps_ms") or {}
    per_node = gaps.get("between_nodes", 0.0) / max(1, prof["nodes_run"])
    return (f"{_ms(gaps.get('before_first'))} ms before the first node, {_ms(gaps.get('between_nodes'))} ms between "
            f"nodes ({_us(per_node)} a node), {_ms(gaps.get('after_last'))} ms after the last")


def _us(ms: Any) -> str:
    return "–" if ms is None else f"{1000 * float(ms):.1f} µs"


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * float(value):.1f}%"


def _per_length_rows(fixed: Mapping[str, Any]) -> list[str]:
    series: list[tuple[str, list[Mapping[str, Any]], str]] = []
    for backend, found in (fixed.get("tfjs") or {}).items():
        series += [(f"TF.js {backend} graph", found["points"], "graph_ms"),
                   (f"TF.js {backend} eager", found["points"], "eager_ms")]
    if fixed.get("ort_web"):
        series.append(("onnxruntime-web wasm", fixed["ort_web"]["points"], "ms"))
    if not series:
        return []
    lengths = [p["n"] for p in series[0][1]]
    rows = ["Time per op (µs) of a chain of N ops, run time / N:", "",
            "| runtime | " + " | ".join(f"N={n}" for n in lengths) + " |", "|---|" + "---|" * len(lengths)]
    for label, points, key in series:
        rows.append(f"| {label} | " + " | ".join(f"{1000 * p[key] / p['n']:.1f}" for p in points) + " |")
    return rows + [""]


def _fixed_rows(fixed: Mapping[str, Any]) -> list[str]:
    rows = ["Least-squares slope of run time over N:", "",
            "| runtime | what runs per op | cost per op | intercept ms | worst residual ms | N |",
            "|---|---|---|---|---|---|"]
    for backend, found in (fixed.get("tfjs") or {}).items():
        ns = ", ".join(str(p["n"]) for p in found["points"])
        for kind, what in (("graph", "graph model: executor + op + kernel"), ("eager", "eager tf.add: op + kernel")):
            fit = found[kind]
            rows.append(f"| TF.js {backend} | {what} | {_us(fit['ms_per_op'])} | {_ms(fit['intercept_ms'], 3)} | "
                        f"{_ms(fit['worst_residual_ms'], 3)} | {ns} |")
    ort = fixed.get("ort_web")
    if ort:
        fit = ort["graph"]
        rows.append(f"| onnxruntime-web wasm | session.run of an Add chain | {_us(fit['ms_per_op'])} | "
                    f"{_ms(fit['intercept_ms'], 3)} | {_ms(fit['worst_residual_ms'], 3)} | "
                    f"{', '.join(str(p['n']) for p in ort['points'])} |")
    return rows


def _side_by_side(tfjs: Mapping[str, Any], ort: Mapping[str, Any] | None) -> list[str]:
    rows = ["| # | TF.js wasm op | ms | share | calls | onnxruntime-web op | ms | share | calls |",
            "|---|---|---|---|---|---|---|---|---|"]
    extra = (("(nodes: GC, spread above medians)", "node_spread_ms"), ("(executor: between nodes)", "between_nodes_ms"),
             ("(executor: before/after, read-back)", "edges_ms"))
    left = list(tfjs["op_types"][:TOP_OPS]) + [
        {"op": label, "ms": tfjs[key], "share": _share(tfjs[key], tfjs["instrumented_ms"]), "calls": ""}
        for label, key in extra]
    right: list[Mapping[str, Any]] = []
    if ort and ort.get("status") == "ok":
        right = list(ort["op_types"][:TOP_OPS]) + [{"op": "(outside nodes)", "ms": ort["outside_nodes_ms"],
                                                     "share": _share(ort["outside_nodes_ms"], ort["profiled_run_ms"]),
                                                     "calls": ""}]
    for i in range(max(len(left), len(right))):
        a = left[i] if i < len(left) else None
        b = right[i] if i < len(right) else None
        cells = [f"{a['op']} | {_ms(a['ms'])} | {_pct(a['share'])} | {a['calls']}" if a else " | | |",
                 f"{b['op']} | {_ms(b['ms'])} | {_pct(b['share'])} | {b['calls']}" if b else " | | |"]
        rows.append(f"| {i + 1} | {cells[0]} | {cells[1]} |")
    return rows


def _node_rows(tfjs: Mapping[str, Any]) -> list[str]:
    rows = ["| node | op | kernels | output shape | ms | kernel ms | share |", "|---|---|---|---|---|---|---|"]
    for n in tfjs["top_nodes"]:
        shape = "×".join(str(d) for d in n["shape"]) if n["shape"] else "–"
        rows.append(f"| `{n['name']}` | {n['op']} | {n['kernels']} | {shape} | {_ms(n['ms'])} | "
                    f"{_ms(n['kernel_ms'])} | {_pct(n['share'])} |")
    return rows


def _model_section(entry: Mapping[str, Any]) -> list[str]:
    lines = [f"## {entry['model']}", ""]
    if entry.get("status") != "ok" and not entry.get("tfjs"):
        return lines + [f"Not profiled: {entry.get('reason')}", ""]
    wasm = entry["tfjs"].get("wasm", {})
    ort = entry.get("ort_web")
    for backend, prof in entry["tfjs"].items():
        if prof.get("status") != "ok":
            lines.append(f"- TF.js {backend}: failed: {prof.get('reason')}")
            continue
        lines.append(
            f"- TF.js {backend}: {_ms(prof['total_ms'], 1)} ms a run (wall {_ms(prof.get('wall_total_ms'), 1)} ms; "
            f"{_ms(prof['instrumented_ms'], 1)} ms instrumented), {prof['nodes_run']} nodes run, "
            f"{prof['kernel_calls']} kernel calls; nodes {_ms(prof['node_sum_ms'], 1)} ms of which kernels "
            f"{_ms(prof['kernel_sum_ms'], 1)} ms; {prof['small_nodes']['count']} nodes under "
            f"{prof['small_nodes']['under_ms']} ms take {_ms(prof['small_nodes']['ms'], 1)} ms; fixed cost share "
            f"{_pct(prof.get('fixed_share'))} ({prof['nodes_run']} x {_us(prof.get('fixed_ms_per_op'))}); outside "
            f"nodes: {_gaps(prof)}")
    if ort and ort.get("status") == "ok":
        lines.append(
            f"- onnxruntime-web wasm: {_ms(ort['total_ms'], 1)} ms a run (wall {_ms(ort.get('wall_total_ms'), 1)} "
            f"ms; {_ms(ort['profiled_run_ms'], 1)} ms profiled, wall), {ort['nodes_run']} nodes run after its graph "
            f"optimizations; fixed cost share {_pct(ort.get('fixed_share'))} ({ort['nodes_run']} x "
            f"{_us(ort.get('fixed_ms_per_op'))})")
    elif ort:
        lines.append(f"- onnxruntime-web wasm: failed: {ort.get('reason')}")
    lines += ["", f"model.json: {entry['graph_op_count']} nodes besides Const/Placeholder: " +
              ", ".join(f"{op} {n}" for op, n in sorted(entry["graph_ops"].items(), key=lambda kv: -kv[1])), ""]
    if wasm.get("status") == "ok":
        lines += ["By op type (TF.js: graph node time, kernels included; shares of the instrumented run; "
                  "onnxruntime-web: kernel time per node from its profiler, shares of the profiled run):", ""]
        kernels = ", ".join(f"{k['kernel']} {_ms(k['ms'])} ms ({k['calls']})" for k in wasm["kernels"][:TOP_OPS])
        lines += _side_by_side(wasm, ort) + ["", f"TF.js wasm by kernel (ms, calls): {kernels}.", "",
                                             "Slowest TF.js wasm nodes:", ""] + _node_rows(wasm) + [""]
    return lines


def render_markdown(report: Mapping[str, Any]) -> str:
    """profile.md: the fixed cost, then per model the op types side by side and the slowest nodes."""
    lines = ["# Where the time goes: per-op profiles", "",
             f"Made by `{report['command']}` on {report['machine']['cpu']} ({report['machine']['cores']} cores, "
             f"load average {report['machine']['load_avg_start']} at start, {report.get('load_avg_end')} at end) at "
             f"{report['finished']}; TF.js "
             f"{report['versions'].get('tfjs')}, onnxruntime-web {report['versions'].get('onnxruntime-web')}, "
             f"Node {report['versions'].get('node')}. Single-threaded wasm. Times are "
             f"{CLOCK_WORDS[report['plan'].get('clock', 'cpu')]}. See benchmarks/README.md, "
             "\"Where the time goes\", for how each figure is taken and what it says.", "",
             "## Fixed cost per op call", ""] + _fixed_rows(report["fixed"]) + [""] + _per_length_rows(report["fixed"])
    for entry in report["models"]:
        lines += _model_section(entry)
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------------- main

def run_profile(plan: ProfilePlan, work: Path, log: Log) -> dict[str, Any]:
    """The whole profile: the fixed costs, then every model; plain data for profile.json."""
    started = time.time()
    machine = bench.machine_info()
    log("fixed cost per op: TF.js chains")
    fixed: dict[str, Any] = {"tfjs": tfjs_fixed_cost(plan.backends, plan.chain_lengths, plan.chain_warmup,
                                                     plan.chain_repeats, plan.timeout_s, plan.clock)}
    if plan.ort:
        log("fixed cost per op: onnxruntime-web chains")
        fixed["ort_web"] = ort_fixed_cost(plan.chain_lengths, plan.chain_warmup, plan.chain_repeats, plan.timeout_s)
    models = []
    for model in plan.models:
        log(f"{model}")
        entry = profile_model(model, plan, work, log)
        add_fixed_shares(entry, fixed)
        models.append(entry)
    versions = {"tfjs": None, "onnxruntime-web": lat.ort_version(), "node": None}
    for entry in models:
        wasm = entry.get("tfjs", {}).get("wasm", {})
        if wasm.get("versions"):
            versions.update(tfjs=wasm["versions"].get("tfjs"), node=wasm["versions"].get("node"))
    return {"plan": {k: list(v) if isinstance(v, tuple) else v for k, v in plan.__dict__.items()},
            "machine": machine, "versions": versions, "fixed": fixed, "models": models,
            "load_avg_end": [round(x, 2) for x in os.getloadavg()],
            "seconds": round(time.time() - started, 1), "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def write_atomically(path: Path, text: str) -> None:
    """Writes `text` to a sibling temporary file, then renames it over `path` (never a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description="per-op profile of the benchmark models in TF.js and onnxruntime-web")
    parser.add_argument("--models", help=f"comma-separated subset of: {', '.join(MODELS)}")
    parser.add_argument("--backends", default="wasm,cpu", help="TF.js Node backends to profile (wasm, cpu)")
    parser.add_argument("--repeats", type=int, default=ProfilePlan.repeats, help="timed and profiled runs (wasm)")
    parser.add_argument("--no-ort", action="store_true", help="skip onnxruntime-web")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                        help="TF.js figures on this process's CPU time (default; robust on a loaded machine) or wall")
    parser.add_argument("--work", type=Path, default=bench.WORK_DIR, help="folder of the converted models")
    parser.add_argument("--results", type=Path, default=bench.RESULTS_DIR, help="folder for profile.json / .md")
    parser.add_argument("--stem", default="profile", help="result file name without extension")
    parser.add_argument("--render", type=Path, help="only rewrite the Markdown beside this profile JSON")
    return parser.parse_args(argv)


def make_plan(args: argparse.Namespace) -> ProfilePlan:
    """The plan for the command line; unknown models or backends stop it before any work."""
    models = tuple(args.models.split(",")) if args.models else tuple(MODELS)
    backends = tuple(b for b in args.backends.split(",") if b)
    unknown = [m for m in models if m not in MODELS] + [b for b in backends if b not in ("wasm", "cpu")]
    if unknown or not backends:
        raise SystemExit(f"unknown model or backend: {', '.join(unknown) or '(no backend)'} "
                         f"(models: {', '.join(MODELS)}; backends: wasm, cpu)")
    return replace(ProfilePlan(models=models, backends=backends), repeats=args.repeats, ort=not args.no_ort,
                   clock=args.clock)


def main(argv: Sequence[str] | None = None) -> int:
    """Profile, then write profile.json and profile.md; 0 when every model's TF.js profile is in."""
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw_argv)
    if args.render is not None:
        report = json.loads(args.render.read_text())
        write_atomically(args.render.with_suffix(".md"), render_markdown(report))
        return 0
    plan = make_plan(args)
    args.work.mkdir(parents=True, exist_ok=True)
    log: Log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    report = run_profile(plan, args.work, log)
    report["command"] = " ".join(["python benchmarks/op_profile.py", *raw_argv]).strip()
    report["versions"]["node"] = report["versions"]["node"] or bench.versions().get("node")
    write_atomically(args.results / f"{args.stem}.json", json.dumps(report, indent=1, default=str) + "\n")
    write_atomically(args.results / f"{args.stem}.md", render_markdown(report))
    log(f"wrote {args.results / (args.stem + '.json')} and .md")
    return 0 if all(m.get("status") == "ok" for m in report["models"]) else 1


if __name__ == "__main__":
    sys.exit(main())
