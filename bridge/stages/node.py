"""The `tfjs-node-<backend>` stages: the web model in the real TF.js runtime in Node, one process per backend run
side by side (the machine's cores are otherwise idle then); skipped with the reason when Node or the pinned npm
packages are missing."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from typing import Any

import numpy as np

from bridge.errors import BridgeError
from bridge.stages.context import StageEnv
from bridge.stages.result import StageResult, Status


def run_node_session(envs: list[StageEnv]) -> list[StageResult]:
    """Every asked-for Node backend on every sample (the graph model), in parallel processes; one result per env."""
    return _parallel(envs, _graph_run)


def run_layers_node_session(envs: list[StageEnv]) -> list[StageResult]:
    """The layers model loaded with tf.loadLayersModel and run with predict on each asked-for Node backend."""
    return _parallel(envs, _layers_run)


def _graph_run(env: StageEnv) -> Any:
    from bridge.runtime.node import run_graph_model

    web = env.artifacts.web_model
    assert web is not None and env.backend is not None
    return run_graph_model(web.path, env.web_inputs(), backends=[env.backend], warmup=0, repeats=0)[env.backend]


def _layers_run(env: StageEnv) -> Any:
    from bridge.runtime.node import run_layers_model

    layers = env.artifacts.layers_model
    assert layers is not None and env.backend is not None
    return run_layers_model(layers.path, env.web_inputs(), backends=[env.backend], repeats=0)[env.backend]


def _parallel(envs: list[StageEnv], run: Callable[[StageEnv], Any]) -> list[StageResult]:
    """`run` for each env in its own Node process, side by side; all skipped with the reason when Node is missing."""
    from bridge.runtime.node import node_status

    problems = node_status().problems
    if problems:
        return [StageResult(env.name, Status.SKIPPED, reason="; ".join(problems)) for env in envs]
    with ThreadPoolExecutor(max_workers=len(envs)) as pool:
        return list(pool.map(lambda env: _one_backend(env, run), envs))


def _one_backend(env: StageEnv, run: Callable[[StageEnv], Any]) -> StageResult:
    """One backend's run judged; a harness error becomes this stage's failure."""
    start = time.perf_counter()
    try:
        result = _judged(env, run(env))
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


def check_layers_fit(env: StageEnv) -> StageResult:
    """One epoch of `fit` on the sample inputs and reference outputs, in TF.js on `env.backend`: it must run, keep
    the loss finite and change the trainable weights (with the model's trainingConfig, else MSE and SGD)."""
    from bridge.runtime.node import LayersFit, run_layers_model

    layers = env.artifacts.layers_model
    assert layers is not None and env.backend is not None
    compiled = _has_training_config(layers.path)
    fit = LayersFit(x=_stacked(env.web_inputs()), y=_targets(_stacked(env.web_reference())),
                    loss=None if compiled else "meanSquaredError", optimizer=None if compiled else "sgd")
    run = run_layers_model(layers.path, env.web_inputs()[:1], backends=[env.backend], fit=fit, repeats=0)
    result = run[env.backend]
    if result.error or result.fit_error or result.fit is None:
        return env.failed(result.error or result.fit_error or "fit did not run", detail=str(env.backend))
    changed, losses = result.fit.changed(), result.fit.loss
    detail = f"{env.backend}, {len(changed)}/{len(result.fit.after)} weights moved, loss {losses[-1]:.3g}"
    ok = bool(changed) and all(np.isfinite(losses))
    return StageResult(env.name, Status.PASS if ok else Status.FAIL, detail=detail,
                       reason=None if ok else "fit left every weight unchanged or gave a non-finite loss",
                       extra={"loss": losses, "changed": changed, "fit_ms": result.fit.ms,
                              "training_config": compiled})


def _has_training_config(folder: Any) -> bool:
    import json

    return bool(json.loads((folder / "model.json").read_text()).get("trainingConfig"))


def _stacked(sets: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Sample sets of one example each (batch 1 or more) joined along the batch axis, for fit's x and y."""
    return {name: np.concatenate([s[name] for s in sets], axis=0) for name in sets[0]}


def _targets(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Training targets that differ from what the model predicts (targets equal to its own outputs would give
    zero gradients): each output rolled by one along its last axis (a class distribution stays one)."""
    return {name: np.roll(value, 1, axis=-1) if value.ndim else value for name, value in outputs.items()}
