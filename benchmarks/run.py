"""bridge's benchmark: conversion time, memory, size, ops and parity per model and route; inference latency side by
side (PyTorch, TF.js in Node and Chromium, onnxruntime-web in Node and Chromium); targets checked as met / MISSED.

    python benchmarks/run.py            # everything (make bench), about 30 minutes on a 2-core machine
    python benchmarks/run.py --quick    # smoke: the smallest model, the ONNX route, few repetitions

Each conversion runs in a fresh process (benchmarks/convert_one.py) so its wall time and peak memory are its own.
Results go to benchmarks/results/latest.json and latest.md (quick.json / quick.md with --quick, so a smoke run
never overwrites a full one). Nothing downloads: every runtime comes from the pinned npm packages on disk.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python benchmarks/run.py` as well as `python -m benchmarks.run`
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks import latency as lat  # noqa: E402
from benchmarks.models import MODELS  # noqa: E402

ROUTES = ("native", "onnx")
QUICK_MODEL = "unet"  # the smallest benchmark model (118 k parameters), a CNN
RESULTS_DIR = ROOT / "benchmarks" / "results"
WORK_DIR = ROOT / "out" / "bench"
SIZE_TOLERANCE = 0.01
NATIVE_SPEEDUP = 5.0
NATIVE_RESNET_S = 30.0
ONNX_RESNET_S = 90.0
TIME_BUDGET_S = 45 * 60
# Issue 17's latency targets: TF.js wasm / onnxruntime-web wasm (median, same run) at most this, per model class
# (BenchModel.family). "cnn" is the original target, on the CNNs where TF.js already was ahead.
LATENCY_LIMITS: dict[str, tuple[float, str]] = {
    "cnn": (1.0, "the CNNs"),
    "sentence_encoder": (1.0, "the 6-layer x 384 sentence encoder at 128 tokens"),
    "vit": (1.0, "ViT-tiny at 224x224"),
    "speech_encoder": (1.5, "the Whisper-tiny-sized speech encoder"),
    "recurrent": (5.0, "the LSTM and GRU classifiers"),
}
Log = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    """What to run and how many times. Warm-up runs are untimed; the Node and browser harnesses also run the input
    once (untimed) before their warm-up."""

    models: tuple[str, ...]
    routes: tuple[str, ...]
    quick: bool = False
    warmup: int = 5
    repeats: int = 30
    browser_repeats: int = 20
    cpu_warmup: int = 0  # the TF.js cpu backend: ResNet-18 takes ~16 s a run
    cpu_repeats: int = 3
    webgl_warmup: int = 2
    webgl_repeats: int = 5
    long_warmup: int = 2  # models whose run takes seconds (BenchModel.long_run), every runtime
    long_repeats: int = 10
    browser: bool = True
    no_browser_reason: str = "browser runs disabled (--no-browser)"
    sizes: bool = True
    node_backends: tuple[str, ...] = ("wasm",)  # the TF.js Node parity check inside each conversion
    convert_browser: bool = False  # bridge's Chromium parity stages inside each conversion
    convert_timeout_s: float = 600.0
    runtime_timeout_s: float = 900.0


def make_plan(args: argparse.Namespace) -> Plan:
    """The plan for the command line: full, or --quick, narrowed by --models / --routes."""
    if args.quick:
        plan = Plan(models=(QUICK_MODEL,), routes=("onnx",), quick=True, warmup=1, repeats=3, browser_repeats=3,
                    cpu_repeats=1, webgl_warmup=0, webgl_repeats=1, long_warmup=1, long_repeats=2,
                    convert_timeout_s=600.0,
                    runtime_timeout_s=300.0)
    else:
        plan = Plan(models=tuple(MODELS), routes=ROUTES)
    if args.models:
        plan = replace(plan, models=tuple(args.models.split(",")))
    if args.routes:
        plan = replace(plan, routes=tuple(args.routes.split(",")))
    if args.no_browser:
        plan = replace(plan, browser=False)
    if args.full_checks:
        plan = replace(plan, node_backends=("wasm", "cpu"), convert_browser=True)
    unknown = [m for m in plan.models if m not in MODELS] + [r for r in plan.routes if r not in ROUTES]
    if unknown:
        raise SystemExit(f"unknown model or route: {', '.join(unknown)} (models: {', '.join(MODELS)}; "
                         f"routes: {', '.join(ROUTES)})")
    return plan


# ---------------------------------------------------------------------------------------------------- machine

def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory, load and OS of this machine."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem_gib, "os": platform.platform(),
            "load_avg_start": [round(x, 2) for x in os.getloadavg()]}


def versions() -> dict[str, Any]:
    """bridge, Python packages, Node and TF.js (bridge.report.versions), onnxruntime-web, Chromium, Playwright."""
    from bridge.report.versions import component_versions

    found: dict[str, Any] = dict(component_versions())
    found["onnxruntime-web"] = lat.ort_version() or "missing"
    try:
        from bridge.runtime.browser import browser_status

        status = browser_status()
        found["chromium"] = status.chromium_version or "missing"
        found["playwright"] = status.playwright_version or "missing"
    except Exception as exc:  # noqa: BLE001 - informative only
        found["chromium"] = f"unknown ({type(exc).__name__})"
    return found


# ---------------------------------------------------------------------------------------------------- conversions

def run_subprocess(command: list[str], log: Path, timeout_s: float) -> tuple[int | None, float]:
    """Runs `command` in its own process group (stdout+stderr to `log`); kills that group on timeout.
    Returns (exit code or None on timeout, wall seconds)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(
        os.pathsep), "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.perf_counter()
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code: int | None = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    return code, time.perf_counter() - start


def log_tail(log: Path, lines: int = 6) -> str:
    """The last `lines` lines of a log, joined on one line (at most 800 characters); "" when unreadable."""
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])[-800:]


def run_conversion(model: str, route: str, plan: Plan, work: Path) -> dict[str, Any]:
    """One model on one route in a fresh process; its result JSON, or a failure saying why there is none."""
    out_dir, result_path, log = work / f"{model}-{route}", work / f"{model}-{route}.json", work / f"{model}-{route}.log"
    result_path.unlink(missing_ok=True)
    command = [sys.executable, "-m", "benchmarks.convert_one", model, route, str(out_dir), str(result_path),
               "--node-backends", ",".join(plan.node_backends)]
    if plan.convert_browser:
        command.append("--browser-check")
    if plan.sizes:
        command += ["--sizes", str(work / f"{model}-{route}-sizes")]
    code, wall = run_subprocess(command, log, plan.convert_timeout_s)
    if code is None:
        return {"model": model, "route": route, "status": "failed", "wall_s": round(wall, 3),
                "reason": f"timed out after {plan.convert_timeout_s:g} s and was stopped"}
    if not result_path.is_file():
        return {"model": model, "route": route, "status": "failed", "wall_s": round(wall, 3),
                "reason": f"convert_one exited {code} without a result: {log_tail(log)}"}
    result = json.loads(result_path.read_text())
    result["wall_s"] = round(wall, 3)
    result["out_dir"] = str(out_dir)
    return result


def onnx_file_for(model: str, conversions: Mapping[str, Mapping[str, Any]], plan: Plan, work: Path) -> tuple[
        Path | None, str]:
    """The model's ONNX file: the ONNX route's, else a fresh export (for onnxruntime-web). (path or None, note)."""
    onnx = conversions.get("onnx")
    if onnx and onnx.get("status") == "ok" and Path(onnx["out_dir"], "model.onnx").is_file():
        return Path(onnx["out_dir"], "model.onnx"), "the ONNX route's model.onnx"
    path, result_path, log = work / f"{model}-export" / "model.onnx", work / f"{model}-export.json", \
        work / f"{model}-export.log"
    code, _ = run_subprocess([sys.executable, "-m", "benchmarks.convert_one", model, "--export-onnx", str(path),
                           str(result_path)], log, plan.convert_timeout_s)
    if code == 0 and result_path.is_file():
        result = json.loads(result_path.read_text())
        if result.get("status") == "ok":
            return path, f"exported separately ({result.get('exporter')} exporter)"
        return None, f"ONNX export failed: {result.get('reason')}"
    return None, f"ONNX export failed: {log_tail(log)}"


# ---------------------------------------------------------------------------------------------------- latency

def _primary_route(conversions: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The route whose web model gets the slow backends (cpu, webgl): native when it converted, else onnx."""
    for route in ("native", "onnx"):
        if conversions.get(route, {}).get("status") == "ok":
            return route
    return None


def measure_latency(model: str, conversions: Mapping[str, Mapping[str, Any]], onnx_path: Path | None,
                    onnx_note: str, plan: Plan, log: Log) -> dict[str, Any]:
    """Every runtime's latency for one model, on the same input (seeded sample 0), back to back per environment."""
    from bridge.source.inputs import make_sample_inputs, parse_input_spec

    bench = MODELS[model]
    if bench.long_run:  # seconds a run: fewer repetitions, Node only, TF.js on the primary route only
        plan = replace(plan, warmup=plan.long_warmup, repeats=plan.long_repeats, browser=False,
                       no_browser_reason=plan.no_browser_reason if not plan.browser else
                       "long-run model: no Chromium runs (seconds a run; keeps make bench within its budget)")
    module = bench.build()
    specs = [parse_input_spec(text) for text in bench.inputs]
    names = [s.name for s in specs]
    sample = make_sample_inputs(specs, count=1, seed=0)[0]
    reference = lat.torch_outputs(module, sample, names)
    result: dict[str, Any] = {"input": {n: list(sample[n].shape) for n in names}, "onnx_file": onnx_note,
                              "runs": {"warmup": plan.warmup, "repeats": plan.repeats,
                                       "browser_repeats": plan.browser_repeats}}
    log("    torch eager (1 thread)")
    result["torch"] = lat.guarded("torch", lambda: lat.torch_latency(module, sample, names, warmup=plan.warmup,
                                                                       repeats=plan.repeats, threads=1))
    primary = _primary_route(conversions)
    result["primary_route"] = primary
    tfjs: dict[str, dict[str, Any]] = {}
    for route in plan.routes:
        conv = conversions.get(route, {})
        if conv.get("status") != "ok":
            tfjs[route] = {"skipped": f"the {route} route did not convert: {conv.get('reason', 'not run')}"}
            continue
        if bench.long_run and route != primary:
            tfjs[route] = {"skipped": f"long-run model: TF.js timed on the {primary} route's web model only"}
            continue
        tfjs[route] = tfjs_latencies(Path(conv["out_dir"]) / "web_model", sample, reference,
                                     slow_backends=route == primary and not bench.heavy, plan=plan, log=log,
                                     route=route)
    result["tfjs"] = tfjs
    result["ort_web"] = ort_latencies(onnx_path, onnx_note, sample, reference, plan, log)
    return result


def tfjs_latencies(web_model: Path, sample: Mapping[str, Any], reference: Sequence[Any], *, slow_backends: bool,
                   plan: Plan, log: Log, route: str) -> dict[str, Any]:
    """TF.js timings of one web model: Node wasm and Chromium wasm always; Node cpu and webgl on `slow_backends`."""
    inputs = lat.web_inputs(web_model, sample)
    expected = lat.web_expected(web_model, reference)
    timeout = plan.runtime_timeout_s
    found: dict[str, Any] = {}
    log(f"    TF.js node wasm [{route}]")
    found["node-wasm"] = lat.guarded("TF.js node wasm", lambda: lat.tfjs_node_latency(
        web_model, inputs, expected, backend="wasm", warmup=plan.warmup, repeats=plan.repeats, timeout_s=timeout))
    if slow_backends:
        log(f"    TF.js node cpu [{route}]")
        found["node-cpu"] = lat.guarded("TF.js node cpu", lambda: lat.tfjs_node_latency(
            web_model, inputs, expected, backend="cpu", warmup=plan.cpu_warmup, repeats=plan.cpu_repeats,
            timeout_s=timeout))
    if not plan.browser:
        found["chromium-wasm"] = lat.skipped(plan.no_browser_reason)
        return found
    log(f"    TF.js chromium wasm [{route}]")
    found["chromium-wasm"] = lat.guarded("TF.js chromium wasm", lambda: lat.tfjs_browser_latency(
        web_model, inputs, expected, backend="wasm", warmup=plan.warmup, repeats=plan.browser_repeats,
        timeout_s=timeout))
    if slow_backends:
        log(f"    TF.js chromium webgl [{route}]")
        found["chromium-webgl"] = lat.guarded("TF.js chromium webgl", lambda: lat.tfjs_browser_latency(
            web_model, inputs, expected, backend="webgl", warmup=plan.webgl_warmup, repeats=plan.webgl_repeats,
            timeout_s=timeout))
    return found


def ort_latencies(onnx_path: Path | None, note: str, sample: Mapping[str, Any], reference: Sequence[Any],
                  plan: Plan, log: Log) -> dict[str, Any]:
    """onnxruntime-web (wasm, 1 thread) in Node and Chromium on the model's ONNX file."""
    if onnx_path is None:
        return {"node-wasm": lat.skipped(note), "chromium-wasm": lat.skipped(note)}
    timeout = plan.runtime_timeout_s
    log("    onnxruntime-web node wasm")
    found = {"node-wasm": lat.guarded("onnxruntime-web node", lambda: lat.ort_node_latency(
        onnx_path, sample, reference, warmup=plan.warmup, repeats=plan.repeats, timeout_s=timeout))}
    if not plan.browser:
        found["chromium-wasm"] = lat.skipped(plan.no_browser_reason)
        return found
    log("    onnxruntime-web chromium wasm")
    found["chromium-wasm"] = lat.guarded("onnxruntime-web chromium", lambda: lat.ort_browser_latency(
        onnx_path, sample, reference, warmup=plan.warmup, repeats=plan.browser_repeats, timeout_s=timeout))
    return found


# ---------------------------------------------------------------------------------------------------- ratios, targets

def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return round(numerator / denominator, 3)


def _median(timing: Mapping[str, Any] | None) -> float | None:
    return timing.get("median_ms") if timing and timing.get("status") == "ok" else None


def model_ratios(entry: Mapping[str, Any]) -> dict[str, Any]:
    """TF.js wasm / onnxruntime-web wasm and TF.js wasm / PyTorch (1 thread) per route and environment; ONNX /
    native conversion time."""
    latency, conversions = entry.get("latency", {}), entry.get("conversions", {})
    ratios: dict[str, Any] = {"tfjs_over_ort": {}, "tfjs_over_torch": {}}
    torch_ms = _median(latency.get("torch"))
    for route, timings in latency.get("tfjs", {}).items():
        ratios["tfjs_over_ort"][route] = {
            env: _ratio(_median(timings.get(f"{env}-wasm")), _median(latency.get("ort_web", {}).get(f"{env}-wasm")))
            for env in ("node", "chromium")}
        ratios["tfjs_over_torch"][route] = {
            env: _ratio(_median(timings.get(f"{env}-wasm")), torch_ms) for env in ("node", "chromium")}
    native, onnx = conversions.get("native", {}), conversions.get("onnx", {})
    if native.get("status") == "ok" and onnx.get("status") == "ok":
        ratios["onnx_over_native_convert"] = _ratio(onnx.get("convert_s"), native.get("convert_s"))
    else:
        ratios["onnx_over_native_convert"] = None
    return ratios


@dataclass
class Target:
    """One target: its text, whether it was met (None = not measured), and the figures behind the verdict."""

    name: str
    met: bool | None
    figure: str
    per_model: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """`met` / `MISSED` / `not measured`, the target and its figure, in one plain line."""
        verdict = {True: "met", False: "MISSED", None: "not measured"}[self.met]
        return f"{verdict:>12}  {self.name}: {self.figure}"


def _verdict(checks: Mapping[str, bool | None]) -> bool | None:
    """Any check missed -> False; every check measured and met -> True; otherwise not measured (None)."""
    if any(v is False for v in checks.values()):
        return False
    return True if checks and all(v is True for v in checks.values()) else None


def _fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _conv(results: Mapping[str, Any], model: str, route: str) -> Mapping[str, Any]:
    return results.get(model, {}).get("conversions", {}).get(route, {})


def _why_not(conv: Mapping[str, Any], route: str) -> str:
    if not conv:
        return f"{route} route not run"
    return f"{route} route {conv.get('status')}: {str(conv.get('reason') or '')[:160]}"


def speedup_target(results: Mapping[str, Any], cnns: Sequence[str]) -> Target:
    """Native route conversion at least 5x faster than the ONNX route on every CNN."""
    checks: dict[str, bool | None] = {}
    parts = []
    for model in cnns:
        native, onnx = _conv(results, model, "native"), _conv(results, model, "onnx")
        if native.get("status") == "ok" and onnx.get("status") == "ok":
            ratio = _ratio(onnx["convert_s"], native["convert_s"])
            checks[model] = ratio is not None and ratio >= NATIVE_SPEEDUP
            parts.append(f"{model} {ratio}x ({_fmt_s(onnx['convert_s'])} / {_fmt_s(native['convert_s'])})")
        elif native and native.get("status") != "ok":  # the native route ran and failed
            checks[model] = False
            parts.append(f"{model}: {_why_not(native, 'native')}")
        else:
            checks[model] = None
            parts.append(f"{model}: {_why_not(onnx, 'onnx') if native else _why_not(native, 'native')}")
    return Target(f"native route conversion >= {NATIVE_SPEEDUP:g}x faster than the ONNX route on every CNN",
                  _verdict(checks), "; ".join(parts) or "no CNN run", checks)


def time_target(results: Mapping[str, Any], route: str, limit_s: float) -> Target:
    """ResNet-18 end to end (process start to conversion done) under `limit_s` on `route`."""
    conv = _conv(results, "resnet18", route)
    name = f"{route} route ResNet-18 end to end < {limit_s:g} s"
    if conv.get("status") == "ok":
        e2e = conv.get("e2e_s")
        return Target(name, e2e is not None and e2e < limit_s,
                      f"{_fmt_s(e2e)} (bridge.convert {_fmt_s(conv.get('convert_s'))})", {"resnet18": e2e})
    return Target(name, False if conv else None, _why_not(conv, route))


def latency_target(results: Mapping[str, Any], cnns: Sequence[str], env: str, limit: float = 1.0,
                   what: str = "the CNNs") -> Target:
    """TF.js wasm at most `limit` times onnxruntime-web wasm (median, the primary route's web model) on every model
    of `cnns` (by default: no slower, on the CNNs)."""
    checks: dict[str, bool | None] = {}
    parts = []
    for model in cnns:
        entry = results.get(model, {})
        route = entry.get("latency", {}).get("primary_route")
        ratio = entry.get("ratios", {}).get("tfjs_over_ort", {}).get(route or "", {}).get(env)
        checks[model] = None if ratio is None else ratio <= limit
        tfjs = entry.get("latency", {}).get("tfjs", {}).get(route or "", {}).get(f"{env}-wasm", {})
        ort = entry.get("latency", {}).get("ort_web", {}).get(f"{env}-wasm", {})
        if ratio is None:
            why = tfjs.get("reason") or ort.get("reason") or "no web model"
            parts.append(f"{model}: not measured ({str(why)[:120]})")
        else:
            parts.append(f"{model} [{route}] {ratio:.2f}x ({tfjs['median_ms']:.1f} / {ort['median_ms']:.1f} ms)")
    bound = "onnxruntime-web wasm" if limit == 1.0 else f"{limit:g}x onnxruntime-web wasm"
    return Target(f"TF.js wasm latency <= {bound} on {what}, {env} (ratio TF.js / ort-web)",
                  _verdict(checks), "; ".join(parts) or ("no CNN run" if what == "the CNNs" else f"none of {what} run"),
                  checks)


def size_target(results: Mapping[str, Any], models: Sequence[str], route: str, variant: str) -> Target:
    """Web model weight bytes within 1% of parameter bytes (float32) or of half of them (float16)."""
    share = {"float32": 1.0, "float16": 0.5}[variant]
    checks: dict[str, bool | None] = {}
    parts = []
    for model in models:
        conv = _conv(results, model, route)
        size = _variant_bytes(conv, variant)
        if size is None:
            checks[model] = None if not conv else False  # the route or the quantized write failed: missed
            parts.append(f"{model}: {_variant_failure(conv, route, variant)}")
            continue
        off = size / (conv["parameter_bytes"] * share) - 1.0
        checks[model] = abs(off) <= SIZE_TOLERANCE
        parts.append(f"{model} {off:+.2%}")
    label = "parameter bytes" if share == 1.0 else "half the parameter bytes"
    return Target(f"{route} route web model at {variant} within 1% of {label}", _verdict(checks),
                  "; ".join(parts) or "nothing run", checks)


def _variant_bytes(conv: Mapping[str, Any], variant: str) -> int | None:
    if conv.get("status") != "ok":
        return None
    if variant == "float32":
        facts = conv.get("web_model", {})
        return facts.get("weight_bytes") if "weight_bytes" in facts else None
    quant = conv.get("quantized", {}).get(variant, {})
    return quant.get("weight_bytes") if quant.get("status") == "ok" else None


def _variant_failure(conv: Mapping[str, Any], route: str, variant: str) -> str:
    """Why a size figure is missing: the route's failure, or the quantized write's."""
    if conv.get("status") != "ok":
        return _why_not(conv, route)
    part = conv.get("web_model", {}) if variant == "float32" else conv.get("quantized", {}).get(variant, {})
    return f"{variant} web model not written: {str(part.get('reason') or 'no figure')[:200]}"


def transpose_target(results: Mapping[str, Any], cnns: Sequence[str], route: str) -> Target:
    """No Transpose op in the CNNs' web models (NHWC input)."""
    checks: dict[str, bool | None] = {}
    parts = []
    for model in cnns:
        conv = _conv(results, model, route)
        count = conv.get("web_model", {}).get("transposes") if conv.get("status") == "ok" else None
        checks[model] = (None if not conv else False) if count is None else count == 0
        parts.append(f"{model} {count}" if count is not None else f"{model}: {_why_not(conv, route)}")
    return Target(f"{route} route: no Transpose op in the CNNs' web models (NHWC input)",
                  _verdict(checks), "; ".join(parts) or "no CNN run", checks)


def family_latency_targets(results: Mapping[str, Any], models: Sequence[str]) -> list[Target]:
    """Issue 17's latency targets: per model class of LATENCY_LIMITS that was run, Node then Chromium. A class with
    no model in the plan has no target (the CNN one is reported even then, as it always was)."""
    targets = []
    for family, (limit, what) in LATENCY_LIMITS.items():
        members = [m for m in models if MODELS[m].family == family]
        if not members and family != "cnn":
            continue
        targets += [latency_target(results, members, env, limit, what) for env in ("node", "chromium")]
    return targets


def check_targets(results: Mapping[str, Any], plan: Plan) -> list[Target]:
    """Every target of the issue, over the models and routes that were run."""
    cnns = [m for m in plan.models if MODELS[m].cnn]
    targets = [speedup_target(results, cnns), time_target(results, "native", NATIVE_RESNET_S),
               time_target(results, "onnx", ONNX_RESNET_S)]
    targets += family_latency_targets(results, plan.models)
    for route in plan.routes:
        targets += [size_target(results, plan.models, route, "float32"),
                    size_target(results, plan.models, route, "float16"), transpose_target(results, cnns, route)]
    return targets


# ---------------------------------------------------------------------------------------------------- markdown

def fmt_num(value: Any, digits: int = 1) -> str:
    """A figure for a Markdown cell: "-" for none, small floats in e-notation, others with `digits` decimals."""
    if value is None:
        return "-"
    if isinstance(value, float) and (abs(value) < 1e-2 and value != 0.0):
        return f"{value:.1e}"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _mb(count: int | None) -> str:
    return "-" if count is None else f"{count / 1e6:.2f} MB"


def _conversion_rows(results: Mapping[str, Any]) -> list[str]:
    rows = ["| model | params | route | status | end to end s | bridge.convert s | stages (s) | peak RSS MB "
            "| ops | Transposes | worst max abs error per stage |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for model, entry in results.items():
        for route, conv in entry.get("conversions", {}).items():
            if conv.get("status") != "ok":
                params = entry.get("parameters")
                rows.append(f"| {model} | {f'{params:,}' if isinstance(params, int) else '-'} | {route} | "
                            f"{conv.get('status')}: {md_cell(conv.get('reason'))} | - | - | - | "
                            f"{fmt_num(conv.get('memory', {}).get('peak_mb'), 0)} | - | - | - |")
                continue
            stages = [s for s in conv.get("stages", []) if s["status"] != "skipped"]
            times = " · ".join(f"{s['name']} {s['seconds']:.1f}" for s in stages)
            errors = " · ".join(f"{s['name']} {fmt_num(s['max_abs'])}" + ("" if s["status"] == "pass" else
                                                                       f" ({s['status']})") for s in stages)
            web = conv.get("web_model", {})
            rows.append(f"| {model} | {conv['parameters']:,} | {route} | {conv.get('parity')} | "
                        f"{fmt_num(conv.get('e2e_s'))} | {fmt_num(conv.get('convert_s'))} | {times} | "
                        f"{fmt_num(conv.get('memory', {}).get('peak_mb'), 0)} | {web.get('op_count', '-')} | "
                        f"{web.get('transposes', '-')} | {errors} |")
    return rows


def md_cell(text: Any, limit: int = 200) -> str:
    """Text made safe for one Markdown table cell (no pipes or newlines), at most `limit` characters."""
    return str(text or "").replace("|", "/").replace("\n", " ")[:limit]


def _size_cell(size: int | None, want: float) -> str:
    return "-" if size is None else f"{_mb(size)} ({size / want - 1.0:+.2%})"


def _size_rows(results: Mapping[str, Any]) -> list[str]:
    rows = ["| model | route | parameter bytes (float32) | web float32 (vs params) | web float16 (vs half) "
            "| web uint8 (vs quarter) | model.json |", "|---|---|---|---|---|---|---|"]
    for model, entry in results.items():
        for route, conv in entry.get("conversions", {}).items():
            if conv.get("status") != "ok":
                continue
            params = conv["parameter_bytes"]
            rows.append(f"| {model} | {route} | {_mb(params)} | {_size_cell(_variant_bytes(conv, 'float32'), params)}"
                        f" | {_size_cell(_variant_bytes(conv, 'float16'), params / 2)} | "
                        f"{_size_cell(_variant_bytes(conv, 'uint8'), params / 4)} | "
                        f"{_mb(conv.get('web_model', {}).get('model_json_bytes'))} |")
    return rows


def _timing_row(model: str, runtime: str, timing: Mapping[str, Any]) -> str:
    if timing.get("status") != "ok":
        return f"| {model} | {runtime} | {timing.get('status', '-')}: {md_cell(timing.get('reason'))} | | | | | | |"
    load = fmt_num(timing.get("load_ms"))
    if timing.get("load_cold_ms") is not None:
        load += f" (cold {fmt_num(timing['load_cold_ms'], 0)})"
    if timing.get("http_load_ms") is not None:
        load += f" (http {fmt_num(timing['http_load_ms'], 0)})"
    return (f"| {model} | {runtime} | {fmt_num(timing['median_ms'])} | {fmt_num(timing['p10_ms'])} | "
            f"{fmt_num(timing['p90_ms'])} | {timing['runs']} | {load} | {fmt_num(timing.get('first_run_ms'))} | "
            f"{fmt_num(timing.get('max_abs'))} |")


def _latency_rows(results: Mapping[str, Any]) -> list[str]:
    rows = ["| model | runtime | median ms | p10 ms | p90 ms | runs | load ms | first run ms | max abs vs PyTorch |",
            "|---|---|---|---|---|---|---|---|---|"]
    for model, entry in results.items():
        latency = entry.get("latency", {})
        if not latency:
            continue
        rows.append(_timing_row(model, "PyTorch eager, CPU, 1 thread", latency.get("torch", {})))
        for route, timings in latency.get("tfjs", {}).items():
            if "skipped" in timings:
                rows.append(f"| {model} | TF.js [{route}] | skipped: {md_cell(timings['skipped'])} | | | | | | |")
                continue
            for key, timing in timings.items():
                rows.append(_timing_row(model, f"TF.js {key} [{route}]", timing))
        for key, timing in latency.get("ort_web", {}).items():
            rows.append(_timing_row(model, f"onnxruntime-web {key}", timing))
    return rows


def _ratio_rows(results: Mapping[str, Any]) -> list[str]:
    rows = ["| model | TF.js wasm / ort-web wasm, Node | TF.js wasm / ort-web wasm, Chromium "
            "| ONNX route / native route conversion time |", "|---|---|---|---|"]
    for model, entry in results.items():
        ratios = entry.get("ratios", {})
        per_route = ratios.get("tfjs_over_ort", {})
        node = ", ".join(f"{v['node']:.2f} [{r}]" for r, v in per_route.items() if v.get("node")) or "-"
        chrome = ", ".join(f"{v['chromium']:.2f} [{r}]" for r, v in per_route.items() if v.get("chromium")) or "-"
        rows.append(f"| {model} | {node} | {chrome} | {fmt_num(ratios.get('onnx_over_native_convert'), 2)} |")
    return rows


def _first_run(timing: Mapping[str, Any] | None) -> Any:
    return timing.get("first_run_ms") if timing and timing.get("status") == "ok" else None


def _load(timing: Mapping[str, Any] | None) -> Any:
    return timing.get("load_ms") if timing and timing.get("status") == "ok" else None


def _pair(a: Any, b: Any) -> str:
    return f"{fmt_num(a)} / {fmt_num(b)}"


def summary_rows(results: Mapping[str, Any]) -> list[str]:
    """One row per model (the primary route's web model), Node: TF.js wasm, onnxruntime-web wasm and PyTorch
    medians, the ratios and the model class's limit, ops and Transposes, load and first-run times."""
    rows = ["| model | route | TF.js wasm ms | ort-web wasm ms | PyTorch ms | TF.js / ort-web (limit) "
            "| TF.js / ort-web, Chromium | TF.js / PyTorch | ops | Transposes | load ms TF.js / ort-web "
            "| first run ms TF.js / ort-web |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for model, entry in results.items():
        latency = entry.get("latency", {})
        route = latency.get("primary_route")
        if not latency or route is None:
            rows.append(f"| {model} | - | no web model | | | | | | | | | |")
            continue
        tfjs = latency.get("tfjs", {}).get(route, {})
        tf_node, ort_node = tfjs.get("node-wasm"), latency.get("ort_web", {}).get("node-wasm")
        ratios = entry.get("ratios", {})
        node_ratio = ratios.get("tfjs_over_ort", {}).get(route, {}).get("node")
        chrome_ratio = ratios.get("tfjs_over_ort", {}).get(route, {}).get("chromium")
        torch_ratio = ratios.get("tfjs_over_torch", {}).get(route, {}).get("node")
        family = MODELS[model].family if model in MODELS else ""
        limit = LATENCY_LIMITS.get(family, (None, ""))[0]
        ratio_cell = fmt_num(node_ratio, 2) + (f" (<= {limit:g}: {'met' if node_ratio <= limit else 'MISSED'})"
                                               if limit is not None and node_ratio is not None else "")
        web = entry.get("conversions", {}).get(route, {}).get("web_model", {})
        rows.append(f"| {model} | {route} | {fmt_num(_median(tf_node))} | {fmt_num(_median(ort_node))} | "
                    f"{fmt_num(_median(latency.get('torch')))} | {ratio_cell} | {fmt_num(chrome_ratio, 2)} | "
                    f"{fmt_num(torch_ratio, 2)} | {web.get('op_count', '-')} | {web.get('transposes', '-')} | "
                    f"{_pair(_load(tf_node), _load(ort_node))} | {_pair(_first_run(tf_node), _first_run(ort_node))} |")
    return rows


def _runs_note(plan: Mapping[str, Any], results: Mapping[str, Any]) -> str:
    """Which models ran fewer repetitions or skipped the slow backends (so the header says so)."""
    notes = []
    heavy = [m for m in results if m in MODELS and MODELS[m].heavy]
    long = [m for m in results if m in MODELS and MODELS[m].long_run]
    if heavy:
        notes.append(f"no TF.js cpu or webgl runs for {', '.join(heavy)} (minutes a run on plain JavaScript)")
    if long:
        notes.append(f"{', '.join(long)}: {plan.get('long_warmup')} warm-up + {plan.get('long_repeats')} timed runs "
                     "(seconds a run), in Node only (no Chromium runs: its Chromium targets stay not measured) and "
                     "TF.js on the primary route's web model only")
    return (" Exceptions: " + "; ".join(notes) + ".") if notes else ""


def render_markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown: machine, plan, targets, conversion, size, latency and ratio tables."""
    machine, plan, results = report["machine"], report["plan"], report["results"]
    vers = report["versions"]
    lines = [f"# bridge benchmark{' (quick smoke run: noisy, not a result)' if plan['quick'] else ''}", "",
             f"{report['started']}; {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB; load "
             f"average {machine['load_avg_start']} at start, {machine.get('load_avg_end')} at end; total "
             f"{report['total_s']:.0f} s.", "",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()), "",
             f"Latency: {plan['warmup']} warm-up + {plan['repeats']} timed runs (Chromium: {plan['browser_repeats']}; "
             f"TF.js cpu: {plan['cpu_warmup']} + {plan['cpu_repeats']}; webgl: {plan['webgl_warmup']} + "
             f"{plan['webgl_repeats']}), after one untimed run of the input. Same thread count everywhere: PyTorch "
             "`torch.set_num_threads(1)`, TF.js wasm single-threaded (SIMD), onnxruntime-web wasm `numThreads = 1`"
             " (SIMD); the TF.js cpu backend is plain JavaScript; webgl runs on SwiftShader (software, may use more "
             "than one core). Every timed run builds its input tensors and reads the outputs back. Conversions run "
             f"with the TF.js Node parity check on {', '.join(plan['node_backends'])}"
             f"{' and the Chromium checks' if plan.get('convert_browser') else ' only (no Chromium check)'}; end "
             "to end = process start to `bridge.convert` done (imports included); peak RSS = the conversion "
             f"process or its largest child.{_runs_note(plan, results)}", "", "## Targets", ""]
    lines += [f"- **{_target_word(t['met'])}** {t['name']}: {t['figure']}" for t in report["targets"]]
    lines += ["", "## Summary", "",
              "Per model, the primary route's web model (native when it converted), Node: medians of TF.js wasm, "
              "onnxruntime-web wasm and PyTorch eager (1 thread); the model class's limit where issue 17 sets one; "
              "web model ops (without Const/Placeholder/Identity/NoOp) and Transposes; load time (from bytes in "
              "memory; ort-web's warm session) and the first run after load (input built, outputs read back).", ""]
    lines += summary_rows(results)
    lines += ["", "## Conversion", ""] + _conversion_rows(results)
    lines += ["", "## Web model size (weight shards; model.json apart)", ""] + _size_rows(results)
    lines += ["", "## Inference latency", ""] + _latency_rows(results)
    lines += ["", "## Ratios", ""] + _ratio_rows(results)
    return "\n".join(lines) + "\n"


def _target_word(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "not measured"}[met]


# ---------------------------------------------------------------------------------------------------- main

def run_benchmark(plan: Plan, work: Path, log: Log) -> dict[str, Any]:
    """Convert and time every model of the plan; the whole report as plain data."""
    started = time.perf_counter()
    report: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine_info(),
                              "versions": versions(), "plan": asdict(plan), "results": {}}
    work.mkdir(parents=True, exist_ok=True)
    for model in plan.models:
        log(f"{model}")
        entry: dict[str, Any] = {"cnn": MODELS[model].cnn, "inputs": list(MODELS[model].inputs), "conversions": {}}
        for route in plan.routes:
            log(f"  convert [{route}]")
            conv = run_conversion(model, route, plan, work)
            entry["conversions"][route] = conv
            if entry.get("parameters") is None:
                entry["parameters"] = conv.get("parameters")
            log(f"    {conv.get('status')} {conv.get('reason') or ''} "
                f"({_fmt_s(conv.get('e2e_s') or conv.get('wall_s'))})")
        onnx_path, note = onnx_file_for(model, entry["conversions"], plan, work)
        log("  latency")
        entry["latency"] = measure_latency(model, entry["conversions"], onnx_path, note, plan, log)
        entry["ratios"] = model_ratios(entry)
        report["results"][model] = entry
    report["targets"] = [asdict(t) for t in check_targets(report["results"], plan)]
    report["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["total_s"] = round(time.perf_counter() - started, 1)
    report["within_time_budget"] = report["total_s"] <= TIME_BUDGET_S
    return report


def write_results(report: Mapping[str, Any], results_dir: Path, stem: str,
                  render: Callable[[Mapping[str, Any]], str] | None = None) -> tuple[Path, Path]:
    """Writes STEM.json and STEM.md (`render`'s Markdown, the benchmark's by default) under `results_dir`
    (through temporary files, renamed into place)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    paths = (results_dir / f"{stem}.json", results_dir / f"{stem}.md")
    texts = (json.dumps(report, indent=1, default=str) + "\n", (render or render_markdown)(report))
    for path, text in zip(paths, texts):
        temp = path.with_suffix(path.suffix + ".tmp")
        temp.write_text(text)
        temp.replace(path)
    return paths


def rerender(json_path: Path) -> int:
    """Checks the targets again and rewrites the Markdown of an existing results JSON (no measuring)."""
    report = json.loads(json_path.read_text())
    for entry in report["results"].values():
        entry["ratios"] = model_ratios(entry)  # figures added since the run (TF.js / PyTorch) appear too
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in report["plan"].items() if k in Plan.__dataclass_fields__}
    report["targets"] = [asdict(t) for t in check_targets(report["results"], Plan(**fields))]
    write_results(report, json_path.parent, json_path.stem)
    for target in report["targets"]:
        print(Target(**target).line())
    return 0


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description="bridge's benchmark suite")
    parser.add_argument("--quick", action="store_true", help="smoke run: the smallest model, the ONNX route, few "
                        "repetitions (what tests/test_benchmarks.py runs)")
    parser.add_argument("--models", help=f"comma-separated subset of: {', '.join(MODELS)}")
    parser.add_argument("--routes", help="comma-separated subset of: native,onnx")
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium runs")
    parser.add_argument("--full-checks", action="store_true", help="convert with every parity check bridge runs "
                        "by default (TF.js Node wasm and cpu, Chromium) instead of the Node wasm check only")
    parser.add_argument("--work", type=Path, default=WORK_DIR, help="folder for the converted models")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="folder for the JSON and Markdown")
    parser.add_argument("--render", type=Path, help="only re-check the targets and rewrite the Markdown of this "
                        "results JSON")
    parser.add_argument("--stem", help="result file name without extension (default latest, or quick)")
    return parser.parse_args(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, write the results, print the targets. 0 when it ran (missed targets included)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.render:
        return rerender(args.render)
    plan = make_plan(args)

    def log(text: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {text}", flush=True)

    report = run_benchmark(plan, args.work.resolve(), log)
    json_path, md_path = write_results(report, args.results.resolve(), args.stem or ("quick" if plan.quick else
                                                                                      "latest"))
    print("\nTargets:")
    for target in report["targets"]:
        print(Target(**target).line())
    budget = "within" if report["within_time_budget"] else "OVER"
    print(f"\ntotal {report['total_s']:.0f} s ({budget} the {TIME_BUDGET_S // 60} min budget); "
          f"results: {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
