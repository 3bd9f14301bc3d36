"""Browser stages: the web model loaded over http:// in headless Chromium and run on `webgl` and `wasm`
(`browser-webgl`, `browser-wasm`), and saved to IndexedDB and loaded back (`browser-indexeddb`, whose outputs must
be bit-identical to the http-loaded model's)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from bridge.context import ConversionContext
from bridge.errors import BridgeError
from bridge.interface import to_web_samples
from bridge.parity import Tolerance, compare_outputs
from bridge.stages import StageResult, Status, worst_status

BROWSER_BACKENDS = ("webgl", "wasm")


def browser_stages(ctx: ConversionContext, web_model: Path) -> list[StageResult]:
    """Run the browser stages, or record them as skipped with the reason (no Chromium, or --no-browser)."""
    names = [f"browser-{b}" for b in BROWSER_BACKENDS] + ["browser-indexeddb"]
    if not ctx.options.browser:
        return [_done(ctx, StageResult(n, Status.SKIPPED, reason="browser stages turned off (--no-browser)"))
                for n in names]
    from bridge.runtime.browser import browser_status, run_in_browser

    problems = browser_status().problems
    if problems:
        return [_done(ctx, StageResult(n, Status.SKIPPED, reason="; ".join(problems))) for n in names]
    inputs = to_web_samples(ctx.samples, ctx.input_ports)
    start = time.perf_counter()
    try:
        with ctx.progress.running("browser"):
            run = run_in_browser(web_model, inputs, backends=BROWSER_BACKENDS, warmup=0, repeats=0,
                                 indexeddb_roundtrip=True)
    except BridgeError as exc:
        return [_done(ctx, StageResult(n, Status.FAIL, seconds=time.perf_counter() - start, reason=str(exc)))
                for n in names]
    session = time.perf_counter() - start
    stages = [_backend_stage(ctx, b, run.backends.get(b), _backend_seconds(run.backends.get(b)))
              for b in BROWSER_BACKENDS]
    idb = run.indexeddb
    stages.append(_indexeddb_stage(ctx, run, ((idb.save_ms or 0) + (idb.load_ms or 0)) / 1000 if idb else 0.0))
    for stage in stages:  # launching Chromium and loading TF.js are shared: recorded once per stage, not split
        stage.extra["browser_session_s"] = round(session, 2)
    return [_done(ctx, s) for s in stages]


def _backend_seconds(run: Any) -> float:
    """Time spent on one backend inside the shared browser session: model load plus the sample runs."""
    if run is None:
        return 0.0
    return ((run.load_ms or 0.0) + sum(run.set_ms)) / 1000


def _done(ctx: ConversionContext, stage: StageResult) -> StageResult:
    ctx.progress.stage_done(stage)
    return stage


def _named(ctx: ConversionContext, outputs: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    return [{p.name: out[p.name] for p in ctx.output_ports if p.name in out} for out in outputs]


def _backend_stage(ctx: ConversionContext, backend: str, run: Any, seconds: float) -> StageResult:
    name = f"browser-{backend}"
    if run is None or run.error:
        return StageResult(name, Status.FAIL, seconds=seconds, detail=f"chromium {backend}",
                           reason=run.error if run is not None else "the backend did not run")
    expected = to_web_samples(ctx.reference, ctx.output_ports)
    outputs = compare_outputs(_named(ctx, run.outputs), expected, ctx.tolerance(name))
    timing = run.set_ms[1:] or run.set_ms
    median = float(np.median(timing)) if timing else None
    detail = f"chromium {backend}" + (f", {median:.1f} ms" if median is not None else "")
    return StageResult(name, worst_status([o.status for o in outputs]), seconds=seconds, detail=detail,
                       outputs=outputs, extra={"load_ms": run.load_ms, "infer_ms_median": median})


def _indexeddb_stage(ctx: ConversionContext, run: Any, seconds: float) -> StageResult:
    """The IndexedDB copy must give exactly the outputs the http-loaded model gave on the same backend."""
    idb = run.indexeddb
    if idb is None or idb.error or idb.backend is None:
        reason = idb.error if idb is not None and idb.error else "no backend ran, so nothing was saved"
        return StageResult("browser-indexeddb", Status.FAIL, seconds=seconds, reason=reason)
    http_outputs = _named(ctx, run.backends[idb.backend].outputs)
    outputs = compare_outputs(_named(ctx, idb.outputs), http_outputs, Tolerance(0.0, 0.0))
    return StageResult("browser-indexeddb", worst_status([o.status for o in outputs]), seconds=seconds,
                       detail=f"{idb.backend}, same as http", outputs=outputs,
                       extra={"save_ms": idb.save_ms, "load_ms": idb.load_ms})
