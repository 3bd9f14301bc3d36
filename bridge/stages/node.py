"""The `tfjs-node-<backend>` stages: the web model in the real TF.js runtime in Node, one process per backend run
side by side (the machine's cores are otherwise idle then); skipped with the reason when Node or the pinned npm
packages are missing."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from bridge.errors import BridgeError
from bridge.stages.context import StageEnv
from bridge.stages.result import StageResult, Status


def run_node_session(envs: list[StageEnv]) -> list[StageResult]:
    """Every asked-for Node backend on every sample, in parallel processes; one result per env, in order."""
    from bridge.runtime.node import node_status

    problems = node_status().problems
    if problems:
        return [StageResult(env.name, Status.SKIPPED, reason="; ".join(problems)) for env in envs]
    with ThreadPoolExecutor(max_workers=len(envs)) as pool:
        return list(pool.map(_run_backend, envs))


def _run_backend(env: StageEnv) -> StageResult:
    """One backend in its own Node process; a harness error becomes this stage's failure."""
    from bridge.runtime.node import run_graph_model

    web = env.artifacts.web_model
    assert web is not None and env.backend is not None
    start = time.perf_counter()
    try:
        run = run_graph_model(web.path, env.web_inputs(), backends=[env.backend], warmup=0, repeats=0)[env.backend]
        result = _judged(env, run)
    except BridgeError as exc:
        result = env.failed(str(exc))
    result.seconds = time.perf_counter() - start
    return result


def median_set_ms(run: Any) -> float | None:
    """The median time of one input set (the first run includes warm-up when there are others)."""
    timing = run.set_ms[1:] or run.set_ms
    return float(np.median(timing)) if timing else None


def _judged(env: StageEnv, run: Any) -> StageResult:
    if run.error:
        return env.failed(run.error, detail=str(env.backend))
    median = median_set_ms(run)
    return env.judge(run.outputs, detail=f"{env.backend}" + (f", {median:.1f} ms" if median else ""),
                     load_ms=run.load_ms, infer_ms_median=median, used_async=run.used_async)
