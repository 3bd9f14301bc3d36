"""The browser stages: the web model loaded over http:// in headless Chromium and run on each backend
(`browser-webgl`, `browser-wasm`), and storage round trips (`browser-indexeddb`: saved to IndexedDB and loaded
back, whose outputs must be bit-identical to the http-loaded model's on the same backend). One Chromium session
serves every browser stage of a plan."""

from __future__ import annotations

import time
from typing import Any

from bridge.errors import BridgeError
from bridge.stages.context import StageEnv
from bridge.stages.node import median_set_ms
from bridge.stages.result import StageResult, Status


def run_browser_session(envs: list[StageEnv]) -> list[StageResult]:
    """Every browser stage in one Chromium session (or all skipped with the reason); one result per env."""
    from bridge.runtime.browser import browser_status, run_in_browser

    problems = browser_status().problems
    if problems:
        return [StageResult(env.name, Status.SKIPPED, reason="; ".join(problems)) for env in envs]
    backends = [env.backend for env in envs if env.backend is not None]
    first = envs[0]
    web = first.artifacts.web_model
    assert web is not None
    start = time.perf_counter()
    try:
        run = run_in_browser(web.path, first.web_inputs(), backends=backends, warmup=0, repeats=0,
                             indexeddb_roundtrip=any(env.store == "indexeddb" for env in envs))
    except BridgeError as exc:
        return [_timed(env.failed(str(exc)), time.perf_counter() - start) for env in envs]
    session = time.perf_counter() - start
    results = [_backend_stage(env, run) if env.backend is not None else _indexeddb_stage(env, run) for env in envs]
    for result in results:  # launching Chromium and loading TF.js are shared: recorded once per stage, not split
        result.extra["browser_session_s"] = round(session, 2)
    return results


def _timed(result: StageResult, seconds: float) -> StageResult:
    result.seconds = seconds
    return result


def _backend_stage(env: StageEnv, run: Any) -> StageResult:
    backend_run = run.backends.get(env.backend)
    seconds = ((backend_run.load_ms or 0.0) + sum(backend_run.set_ms)) / 1000 if backend_run is not None else 0.0
    if backend_run is None or backend_run.error:
        reason = backend_run.error if backend_run is not None else "the backend did not run"
        return _timed(env.failed(reason, detail=f"chromium {env.backend}"), seconds)
    median = median_set_ms(backend_run)
    detail = f"chromium {env.backend}" + (f", {median:.1f} ms" if median is not None else "")
    result = env.judge(backend_run.outputs, detail=detail, load_ms=backend_run.load_ms, infer_ms_median=median)
    return _timed(result, seconds)


def _indexeddb_stage(env: StageEnv, run: Any) -> StageResult:
    """The IndexedDB copy must give exactly the outputs the http-loaded model gave on the same backend."""
    idb = run.indexeddb
    seconds = ((idb.save_ms or 0) + (idb.load_ms or 0)) / 1000 if idb else 0.0
    if idb is None or idb.error or idb.backend is None:
        reason = idb.error if idb is not None and idb.error else "no backend ran, so nothing was saved"
        return _timed(env.failed(reason), seconds)
    result = env.judge(idb.outputs, expected=env.interface.named(run.backends[idb.backend].outputs),
                       detail=f"{idb.backend}, same as http", save_ms=idb.save_ms, load_ms=idb.load_ms)
    return _timed(result, seconds)
