"""The browser stages: the web model loaded over http:// in headless Chromium and run on each backend
(`browser-webgl`, `browser-wasm`), and storage round trips (`browser-indexeddb`: saved to IndexedDB and loaded
back, whose outputs must be bit-identical to the http-loaded model's on the same backend). One Chromium session
serves the browser stages of a plan, except WebGPU, which gets a session of its own: when the WebGPU device is
lost (seen on SwiftShader with some transformers) Chromium's GPU process takes the page's WebGL context with it
and the whole session hangs, so one failing backend would fail all of them."""

from __future__ import annotations

import time
from typing import Any

from bridge.errors import BridgeError
from bridge.stages.context import StageEnv
from bridge.stages.node import median_set_ms
from bridge.stages.result import StageResult, Status


def run_browser_session(envs: list[StageEnv]) -> list[StageResult]:
    """Every graph-model browser stage in one Chromium session (or all skipped with the reason)."""
    from bridge.runtime.browser import run_in_browser

    web = envs[0].artifacts.web_model
    assert web is not None
    return _session(envs, lambda backends, idb: run_in_browser(web.path, envs[0].web_inputs(), backends=backends,
                                                               warmup=0, repeats=0, indexeddb_roundtrip=idb))


def run_layers_browser_session(envs: list[StageEnv]) -> list[StageResult]:
    """Every layers-model browser stage (tf.loadLayersModel + predict) in one Chromium session."""
    from bridge.runtime.browser import run_layers_in_browser

    layers = envs[0].artifacts.layers_model
    assert layers is not None
    return _session(envs, lambda backends, idb: run_layers_in_browser(
        layers.path, envs[0].web_inputs(), backends=backends, warmup=0, repeats=0, indexeddb_roundtrip=idb))


def _session(envs: list[StageEnv], launch: Any) -> list[StageResult]:
    """Run `launch(backends, indexeddb_roundtrip)` once per session group (`_session_groups`); one result per env,
    in the order of `envs`."""
    from bridge.runtime.browser import browser_status

    problems = browser_status().problems
    if problems:
        return [StageResult(env.name, Status.SKIPPED, reason="; ".join(problems)) for env in envs]
    results: dict[str, StageResult] = {}
    for group in _session_groups(envs):
        results.update((r.name, r) for r in _group_session(group, launch))
    return [results[env.name] for env in envs]


def _session_groups(envs: list[StageEnv]) -> list[list[StageEnv]]:
    """WebGPU stages apart from the others; a storage stage goes with the first group that runs a backend."""
    webgpu = [env for env in envs if env.backend == "webgpu"]
    others = [env for env in envs if env.backend != "webgpu"]
    if webgpu and not any(env.backend is not None for env in others):
        return [webgpu + others]
    return [group for group in (others, webgpu) if group]


def _group_session(envs: list[StageEnv], launch: Any) -> list[StageResult]:
    """One Chromium session for `envs`: a failed launch fails each of them with its message."""
    backends = [env.backend for env in envs if env.backend is not None]
    start = time.perf_counter()
    try:
        run = launch(backends, any(env.store == "indexeddb" for env in envs))
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
    if backend_run is not None and env.backend == "webgpu" and _no_adapter(backend_run.error):
        return StageResult(env.name, Status.SKIPPED, detail="chromium webgpu",
                           reason=f"this Chromium offers no WebGPU adapter ({backend_run.error})")
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


def _no_adapter(error: str | None) -> bool:
    """True when the WebGPU backend could not start: no adapter, which is the browser's, not the model's."""
    return bool(error) and ("failed to initialise" in error or "adapter" in error.lower())
