"""Inference latency of one model, side by side: PyTorch eager (1 thread), TF.js in Node (wasm, cpu) and in headless
Chromium (wasm, webgl), and onnxruntime-web (wasm, 1 thread) in Node and in Chromium.

Every function returns a plain dict (a "timing"): ``status`` ok / failed / skipped, ``reason`` when not ok, the
median and the 10th/90th percentiles of the timed runs in ms, how many runs, the load time, ``first_run_ms`` (the
first run after load: kernel compilation, weight packing and allocation included), and ``max_abs``: the
largest difference of the runtime's output from PyTorch's on the same input (a sanity check that the timed model
computes the right thing). No function raises for a runtime failure; it is recorded instead.

Timed runs include building the input tensors and reading the outputs back, on every runtime. Load times are from
bytes already in memory (TF.js `loadGraphModel` from artifacts, onnxruntime-web `InferenceSession.create` from the
file's bytes, its second creation so wasm start-up is excluded; the first is kept as ``load_cold_ms``).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ORT_DIR = Path(__file__).resolve().parent / "ort_web"
ORT_RUNNER = ORT_DIR / "ort_runner.mjs"
ORT_MODULES = ORT_DIR / "node_modules"
ORT_DIST = ORT_MODULES / "onnxruntime-web" / "dist"
ORT_SETUP_HINT = "run `npm ci` in benchmarks/ort_web (make bench does)"
ORT_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>bridge bench: onnxruntime-web</title></head><body>
<script type="module">
import * as ort from './ort/ort.wasm.min.mjs';
import { runOrt, unpackInputs } from './ort_runner.mjs';
async function main() {
  const request = await (await fetch('request.json')).json();
  ort.env.wasm.wasmPaths = new URL('ort/', location.href).href;
  const t0 = performance.now();
  const model = new Uint8Array(await (await fetch('model.onnx')).arrayBuffer());
  const fetchMs = performance.now() - t0;
  const blob = await (await fetch('inputs.bin')).arrayBuffer();
  const result = await runOrt(ort, model, unpackInputs(blob, request.inputs), request);
  result.fetch_ms = fetchMs;
  result.flags.cross_origin_isolated = self.crossOriginIsolated === true;
  return { versions: { onnxruntime_web: ort.env.versions ? ort.env.versions.web : null,
                       user_agent: navigator.userAgent }, result, fatal: null };
}
main().then((r) => { window.__ortResult = r; },
            (err) => { window.__ortResult = { fatal: String(err && err.stack ? err.stack : err) }; });
</script></body></html>
"""
ORT_READY = "() => window.__ortResult !== undefined"

Timing = dict[str, Any]


# ---------------------------------------------------------------------------------------------------- figures

def summarize_ms(samples: Sequence[float]) -> dict[str, Any]:
    """Median, p10 and p90 (ms) of timed runs, and how many there were."""
    if not samples:
        return {"median_ms": None, "p10_ms": None, "p90_ms": None, "runs": 0}
    values = np.asarray(samples, dtype=np.float64)
    return {"median_ms": round(float(np.median(values)), 3), "p10_ms": round(float(np.percentile(values, 10)), 3),
            "p90_ms": round(float(np.percentile(values, 90)), 3), "runs": int(values.size)}


def skipped(reason: str) -> Timing:
    """A timing that could not be taken, and why."""
    return {"status": "skipped", "reason": reason, **summarize_ms([])}


def failed(reason: str) -> Timing:
    """A timing whose runtime failed, and how."""
    return {"status": "failed", "reason": reason[:600], **summarize_ms([])}


def max_abs_diff(actual: Sequence[np.ndarray], expected: Sequence[np.ndarray]) -> float | None:
    """Largest |actual - expected| over paired outputs; None when the shapes do not pair up."""
    worst = 0.0
    if len(actual) != len(expected):
        return None
    for a, e in zip(actual, expected):
        if a.shape != e.shape:
            return None
        worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - e.astype(np.float64)))) if a.size else 0.0)
    return worst


def guarded(what: str, fn: Callable[[], Timing]) -> Timing:
    """Runs one measurement; any exception becomes a failed timing naming `what` (one runtime never stops the rest)."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - a failing runtime is a figure
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return failed(f"{what}: {type(exc).__name__}: {first}")


# ---------------------------------------------------------------------------------------------------- inputs

def web_io(web_model: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The web model's inputs and outputs (name, permFromTorch, ...) from model.json's bridge metadata."""
    meta = json.loads((web_model / "model.json").read_text()).get("userDefinedMetadata", {}).get("bridge", {})
    return list(meta.get("inputs") or []), list(meta.get("outputs") or [])


def to_web_layout(array: np.ndarray, port: Mapping[str, Any]) -> np.ndarray:
    """A PyTorch-layout array moved into the web model's layout (permFromTorch), contiguous."""
    perm = port.get("permFromTorch")
    return np.ascontiguousarray(np.transpose(array, perm) if perm else array)


def web_inputs(web_model: Path, sample: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The PyTorch sample as the web model takes it (layout moved; keys are the web model's input names)."""
    ports, _ = web_io(web_model)
    if not ports:
        return dict(sample)
    return {p["name"]: to_web_layout(np.asarray(sample[p["name"]]), p) for p in ports}


def web_expected(web_model: Path, reference: Sequence[np.ndarray]) -> list[np.ndarray]:
    """PyTorch's outputs moved into the web model's layout, in the web model's output order."""
    _, ports = web_io(web_model)
    if len(ports) != len(reference):
        return list(reference)
    return [to_web_layout(r, p) for r, p in zip(reference, ports)]


# ---------------------------------------------------------------------------------------------------- PyTorch

def torch_latency(module: Any, sample: Mapping[str, np.ndarray], names: Sequence[str], *, warmup: int,
                  repeats: int, threads: int = 1) -> Timing:
    """PyTorch eager on the CPU with `threads` intra-op threads (1 to match single-threaded wasm)."""
    import torch

    torch.set_num_threads(threads)
    args = tuple(torch.from_numpy(np.ascontiguousarray(sample[n])) for n in names)
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            start = time.perf_counter()
            module(*args)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000.0)
    return {"status": "ok", **summarize_ms(times), "load_ms": None, "threads": torch.get_num_threads(),
            "max_abs": 0.0}


def torch_outputs(module: Any, sample: Mapping[str, np.ndarray], names: Sequence[str]) -> list[np.ndarray]:
    """The reference outputs (flattened in bridge's order) for the sanity checks."""
    import torch

    from bridge.source.reference import flatten_outputs

    with torch.inference_mode():
        raw = module(*(torch.from_numpy(np.ascontiguousarray(sample[n])) for n in names))
    return flatten_outputs(raw)[1]


# ---------------------------------------------------------------------------------------------------- TF.js

def _tfjs_timing(run: Any, expected: Sequence[np.ndarray], extra: Mapping[str, Any]) -> Timing:
    """A BackendRun (Node or browser) as a timing."""
    if run.error:
        return failed(f"{run.backend}: {run.error}")
    outputs = list(run.outputs[0].values()) if run.outputs else []
    first = getattr(run, "set_ms", None)
    return {"status": "ok", **summarize_ms(run.infer_ms), "load_ms": round(run.load_ms, 3),
            "first_run_ms": round(first[0], 3) if first else None,
            "max_abs": max_abs_diff(outputs, expected), "flags": dict(run.flags), **extra}


def tfjs_node_latency(web_model: Path, inputs: Mapping[str, np.ndarray], expected: Sequence[np.ndarray], *,
                      backend: str, warmup: int, repeats: int, timeout_s: float = 900.0) -> Timing:
    """TF.js 4.22 in Node on `backend` (wasm single-threaded, or cpu): the input set is run once, then timed."""
    from bridge.runtime.node import run_graph_model

    runs = run_graph_model(web_model, [dict(inputs)], backends=(backend,), warmup=warmup, repeats=repeats,
                           timeout_s=timeout_s)
    return _tfjs_timing(runs[backend], expected, {})


def tfjs_browser_latency(web_model: Path, inputs: Mapping[str, np.ndarray], expected: Sequence[np.ndarray], *,
                         backend: str, warmup: int, repeats: int, timeout_s: float = 900.0) -> Timing:
    """TF.js 4.22 in headless Chromium on `backend` (wasm single-threaded, or webgl on SwiftShader here)."""
    from bridge.runtime import browser

    if not browser.browser_status().ok:
        return skipped("; ".join(browser.browser_status().problems))
    run = browser.run_in_browser(web_model, [dict(inputs)], backends=(backend,), warmup=warmup, repeats=repeats,
                                 indexeddb_roundtrip=False, timeout_s=timeout_s)
    http_load = run.timings.get("http_load")
    return _tfjs_timing(run.backends[backend], expected,
                        {"http_load_ms": round(http_load, 3) if http_load is not None else None,
                         "chromium": run.chromium_version})


# ---------------------------------------------------------------------------------------------------- onnxruntime-web

def ort_status() -> str | None:
    """Why onnxruntime-web cannot run (None when it can)."""
    if not (ORT_DIST / "ort.wasm.min.mjs").is_file():
        return f"onnxruntime-web is not installed in {ORT_MODULES}: {ORT_SETUP_HINT}"
    return None


def ort_version() -> str | None:
    """The installed onnxruntime-web version."""
    try:
        return str(json.loads((ORT_MODULES / "onnxruntime-web" / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def _pack_inputs(inputs: Mapping[str, np.ndarray], path: Path) -> list[dict[str, Any]]:
    """Writes the arrays back to back (8-byte aligned) and returns their index for the runner."""
    specs, offset = [], 0
    with path.open("wb") as stream:
        for name, array in inputs.items():
            data = np.ascontiguousarray(array)
            dtype = "bool" if data.dtype == np.bool_ else str(data.dtype)
            raw = data.astype(np.uint8).tobytes() if dtype == "bool" else data.tobytes()
            specs.append({"name": name, "dtype": dtype, "shape": list(data.shape), "offset": offset,
                          "nbytes": len(raw)})
            pad = (-len(raw)) % 8
            stream.write(raw + b"\0" * pad)
            offset += len(raw) + pad
    return specs


_ORT_DTYPES = {"float32": np.float32, "float64": np.float64, "int32": np.int32, "int64": np.int64,
               "uint8": np.uint8, "int8": np.int8, "bool": np.bool_, "float16": np.float16}


def _ort_timing(summary: Mapping[str, Any], expected: Sequence[np.ndarray], extra: Mapping[str, Any]) -> Timing:
    """The runner's summary as a timing."""
    if summary.get("fatal"):
        return failed(f"onnxruntime-web: {str(summary['fatal']).splitlines()[0]}")
    result = summary["result"]
    if result.get("error"):
        return failed(f"onnxruntime-web {result.get('stage')}: {result['error']}")
    outputs = [np.frombuffer(base64.b64decode(o["b64"]), dtype=_ORT_DTYPES.get(o["dtype"], np.float32))
               .reshape(o["shape"]) for o in result["outputs"].values()]
    return {"status": "ok", **summarize_ms(result["infer_ms"]), "load_ms": round(result["load_ms"], 3),
            "load_cold_ms": round(result["load_cold_ms"], 3),
            "first_run_ms": round(result["first_run_ms"], 3) if result.get("first_run_ms") is not None else None,
            "max_abs": max_abs_diff(outputs, expected),
            "flags": result.get("flags", {}), "version": (summary.get("versions") or {}).get("onnxruntime_web"),
            **extra}


def ort_node_latency(onnx_path: Path, inputs: Mapping[str, np.ndarray], expected: Sequence[np.ndarray], *,
                     warmup: int, repeats: int, timeout_s: float = 900.0) -> Timing:
    """onnxruntime-web (wasm execution provider, 1 thread) in Node on the ONNX file, PyTorch's layout."""
    problem = ort_status()
    if problem:
        return skipped(problem)
    from bridge.runtime.node import node_executable

    node = node_executable()
    if node is None:
        return skipped("Node.js not found")
    with tempfile.TemporaryDirectory(prefix="bridge-bench-ort-") as tmp:
        work = Path(tmp)
        request = {"model_file": str(onnx_path), "inputs_file": str(work / "inputs.bin"),
                   "inputs": _pack_inputs(inputs, work / "inputs.bin"), "warmup": warmup, "repeats": repeats,
                   "threads": 1, "summary_file": str(work / "summary.json"), "node_modules": str(ORT_MODULES)}
        (work / "request.json").write_text(json.dumps(request))
        done = subprocess.run([node, str(ORT_RUNNER), str(work / "request.json")], capture_output=True, text=True,
                              timeout=timeout_s, stdin=subprocess.DEVNULL)
        if not (work / "summary.json").is_file():
            return failed(f"onnxruntime-web runner exited {done.returncode}: {done.stderr.strip()[-300:]}")
        return _ort_timing(json.loads((work / "summary.json").read_text()), expected, {})


def _build_ort_site(site: Path, onnx_path: Path, inputs: Mapping[str, np.ndarray], warmup: int,
                    repeats: int) -> None:
    """The served folder: the page, the runner, onnxruntime-web's dist (linked), the model and inputs."""
    (site / "index.html").write_text(ORT_PAGE)
    (site / "ort_runner.mjs").symlink_to(ORT_RUNNER)
    (site / "ort").symlink_to(ORT_DIST, target_is_directory=True)
    (site / "model.onnx").symlink_to(onnx_path.resolve())
    specs = _pack_inputs(inputs, site / "inputs.bin")
    (site / "request.json").write_text(json.dumps({"inputs": specs, "warmup": warmup, "repeats": repeats,
                                                   "threads": 1}))


def _drive_page(url: str, base_url: str, scratch: Path, launch_path: str, args: Sequence[str],
                timeout_s: float) -> tuple[dict[str, Any], list[str]]:
    """Opens `url` in a fresh headless Chromium (only the local server reachable) and returns the page's result."""
    from playwright.sync_api import sync_playwright

    blocked: list[str] = []

    def route(r: Any) -> None:
        if r.request.url.startswith(base_url + "/"):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort("blockedbyclient")

    env = {**os.environ, "XDG_CONFIG_HOME": str(scratch / "xdg-config"), "XDG_CACHE_HOME": str(scratch / "xdg-cache")}
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(scratch / "profile"), executable_path=launch_path, headless=True, chromium_sandbox=False,
            args=list(args), env=env, timeout=timeout_s * 1000, service_workers="block", accept_downloads=False)
        try:
            context.route("**/*", route)
            page = context.pages[0] if context.pages else context.new_page()
            page.goto(url, wait_until="load", timeout=timeout_s * 1000)
            page.wait_for_function(ORT_READY, timeout=timeout_s * 1000, polling=100)
            return page.evaluate("() => window.__ortResult"), blocked
        finally:
            context.close()


def ort_browser_latency(onnx_path: Path, inputs: Mapping[str, np.ndarray], expected: Sequence[np.ndarray], *,
                        warmup: int, repeats: int, timeout_s: float = 900.0) -> Timing:
    """onnxruntime-web (wasm, 1 thread) in headless Chromium, its files served from node_modules on 127.0.0.1."""
    problem = ort_status()
    if problem:
        return skipped(problem)
    from bridge.runtime import browser
    from bridge.demo.server import serving

    status = browser.browser_status()
    if not status.ok or status.launch_path is None:
        return skipped("; ".join(status.problems) or "Chromium not found")
    with tempfile.TemporaryDirectory(prefix="bridge-bench-ort-browser-") as tmp:
        scratch = Path(tmp)
        site = scratch / "site"
        site.mkdir()
        _build_ort_site(site, onnx_path, inputs, warmup, repeats)
        with serving(site) as base_url:
            summary, blocked = _drive_page(base_url + "/index.html", base_url, scratch, status.launch_path,
                                           browser.CHROMIUM_ARGS, timeout_s)
    if blocked:
        return failed(f"the page asked for non-local files: {', '.join(blocked[:3])}")
    result = summary.get("result") or {}
    return _ort_timing(summary, expected, {"fetch_ms": result.get("fetch_ms"),
                                           "chromium": status.chromium_version})
