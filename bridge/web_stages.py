"""Stages shared by every route, from the SavedModel on: `savedmodel` (reloaded through its signature),
`tfjs-graph` (the exact graph written to model.json, replayed in TensorFlow) and `tfjs-node-<backend>` (the real
TF.js runtime in Node)."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from bridge.context import ConversionContext
from bridge.errors import BridgeError
from bridge.interface import to_web_samples
from bridge.parity import compare_outputs
from bridge.progress import run_stage
from bridge.stages import StageResult, Status, worst_status


def run_web_stages(ctx: ConversionContext, saved_model: Path, route: str) -> list[StageResult]:
    """Reload the SavedModel, write the web model, replay it in TF, run it in Node; one result per stage."""
    stages = [_run(ctx, "savedmodel", lambda: savedmodel_stage(ctx, saved_model))]
    web_model = ctx.staging / "web_model"
    stages.append(_run(ctx, "tfjs-graph", lambda: tfjs_graph_stage(ctx, saved_model, web_model, route)))
    if stages[-1].status is Status.FAIL and not (web_model / "model.json").is_file():
        return stages
    stages += node_stages(ctx, web_model)
    from bridge.browser_stages import browser_stages

    stages += browser_stages(ctx, web_model)
    return stages


def _run(ctx: ConversionContext, name: str, fn: Callable[[], StageResult]) -> StageResult:
    return run_stage(ctx.progress, name, fn, ctx.options.verbose)


def _parity(ctx: ConversionContext, name: str, actual: list[dict[str, np.ndarray]], detail: str = "",
            **extra: Any) -> StageResult:
    expected = to_web_samples(ctx.reference, ctx.output_ports)
    outputs = compare_outputs(actual, expected, ctx.tolerance(name))
    return StageResult(name, worst_status([o.status for o in outputs]), detail=detail, outputs=outputs, extra=extra)


def savedmodel_stage(ctx: ConversionContext, saved_model: Path) -> StageResult:
    """The SavedModel reloaded from disk and run through its serving signature."""
    from bridge.quiet import import_tensorflow

    tf = import_tensorflow(ctx.options.verbose)
    loaded = tf.saved_model.load(str(saved_model))
    serve = loaded.signatures["serving_default"]
    actual = []
    for sample in to_web_samples(ctx.samples, ctx.input_ports):
        result = serve(**{k: tf.constant(v) for k, v in sample.items()})
        actual.append({p.name: result[p.name].numpy() for p in ctx.output_ports})
    return _parity(ctx, "savedmodel", actual, detail="serving_default")


def tfjs_graph_stage(ctx: ConversionContext, saved_model: Path, web_model: Path, route: str) -> StageResult:
    """Write the web model with bridge's writer, read it back, replay its exact graph in TensorFlow."""
    from bridge.tfjs.convert import TfjsOptions, convert_saved_model
    from bridge.tfjs.reader import read_web_model
    from bridge.tfjs.replay import replay_samples

    options = TfjsOptions(quantize=ctx.options.quantize, shard_size=ctx.options.shard_size,
                          metadata=dict(ctx.options.metadata), bridge_metadata=_bridge_metadata(ctx, route),
                          source=_source(ctx), force=True)
    summary = convert_saved_model(saved_model, web_model, options)
    ctx.quantization_step, ctx.quantized_weights = _quantization_figures(summary)
    detail = f"{len(summary.shards)} shard(s), {summary.weight_bytes / 1e6:.2f} MB"
    try:  # the web model exists from here on: a failure to replay it is this stage's failure, not the run's
        model = read_web_model(web_model)
        inputs, outputs = signature_infos(model.signature)
        replayed = replay_samples(model.graph_def, model.weights, to_web_samples(ctx.samples, ctx.input_ports),
                                  inputs, outputs)
        actual = [_named(result, ctx) for result in replayed]
    except BridgeError as exc:
        return StageResult("tfjs-graph", Status.FAIL, reason=str(exc), detail=detail, extra=_summary_extra(summary))
    return _parity(ctx, "tfjs-graph", actual, detail=detail, **_summary_extra(summary))


def _summary_extra(summary: Any) -> dict[str, Any]:
    data = summary.to_dict()
    return {k: data[k] for k in ("weightCount", "weightBytes", "modelJsonBytes", "bytesByDtype", "needsAsync",
                                 "opHistogram") if k in data} | {"shards": len(summary.shards)}


def signature_infos(signature: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """model.json's signature as TensorInfo lists (inputs, outputs), in the file's order."""
    from bridge.tfjs.freeze import TensorInfo

    def infos(part: dict[str, Any]) -> list[Any]:
        return [TensorInfo(key=key, name=value["name"], dtype=value.get("dtype", "DT_FLOAT"),
                           shape=[int(d.get("size", -1)) for d in value.get("tensorShape", {}).get("dim", [])])
                for key, value in part.items()]

    return infos(signature.get("inputs", {})), infos(signature.get("outputs", {}))


def _named(result: dict[str, np.ndarray], ctx: ConversionContext) -> dict[str, np.ndarray]:
    return {p.name: result[p.name] for p in ctx.output_ports if p.name in result}


# The largest error of a quantized weight relative to its largest magnitude: half a float16 ulp, or half an affine
# step (scale = range / qmax, and the range is at most twice the largest magnitude).
RELATIVE_QUANTIZATION_ERROR = {"float16": 2.0 ** -11, "uint16": 1.0 / 65535, "uint8": 1.0 / 255}


def _quantization_figures(summary: Any) -> tuple[float, int]:
    quantized = dict(summary.quantized)
    if not quantized:
        return 0.0, 0
    return max(RELATIVE_QUANTIZATION_ERROR[q.dtype] for q in quantized.values()), len(quantized)


def _bridge_metadata(ctx: ConversionContext, route: str) -> dict[str, Any]:
    return {"route": route, "inputs": [p.metadata() for p in ctx.input_ports],
            "outputs": [p.metadata() for p in ctx.output_ports]}


def _source(ctx: ConversionContext) -> str:
    return str(ctx.onnx_source) if ctx.onnx_source else type(ctx.module).__name__


def node_stages(ctx: ConversionContext, web_model: Path) -> list[StageResult]:
    """`tfjs-node-<backend>` for each backend, one Node process per backend run side by side (the machine's cores
    are otherwise idle here); skipped with a reason if Node or the npm packages are missing."""
    from bridge.runtime.node import node_status

    backends = list(ctx.options.node_backends)
    problems = node_status().problems
    if problems:
        return [_skip(ctx, f"tfjs-node-{b}", "; ".join(problems)) for b in backends]
    inputs = to_web_samples(ctx.samples, ctx.input_ports)
    with ctx.progress.running("tfjs-node"):
        with ThreadPoolExecutor(max_workers=len(backends)) as pool:
            runs = list(pool.map(lambda b: _run_backend(web_model, inputs, b), backends))
    stages = []
    for backend, (run, seconds) in zip(backends, runs):
        stages.append(run if isinstance(run, StageResult) else _node_stage(ctx, backend, run, seconds))
        ctx.progress.stage_done(stages[-1])
    return stages


def _run_backend(web_model: Path, inputs: list[dict[str, np.ndarray]], backend: str) -> tuple[Any, float]:
    """One backend in its own Node process; a harness error becomes a failed stage."""
    from bridge.runtime.node import run_graph_model

    start = time.perf_counter()
    try:
        run = run_graph_model(web_model, inputs, backends=[backend], warmup=0, repeats=0)[backend]
    except BridgeError as exc:
        run = stage_error(f"tfjs-node-{backend}", exc)
    return run, time.perf_counter() - start


def _node_stage(ctx: ConversionContext, backend: str, run: Any, seconds: float) -> StageResult:
    name = f"tfjs-node-{backend}"
    if run.error:
        return StageResult(name, Status.FAIL, seconds=seconds, reason=run.error, detail=backend)
    actual = [{p.name: out[p.name] for p in ctx.output_ports if p.name in out} for out in run.outputs]
    timing = run.set_ms[1:] or run.set_ms  # the first run includes warm-up when there are others
    median = float(np.median(timing)) if timing else None
    stage = _parity(ctx, name, actual, detail=f"{backend}" + (f", {median:.1f} ms" if median else ""),
                    load_ms=run.load_ms, infer_ms_median=median, used_async=run.used_async)
    stage.seconds = seconds
    return stage


def _skip(ctx: ConversionContext, name: str, reason: str) -> StageResult:
    stage = StageResult(name, Status.SKIPPED, reason=reason)
    ctx.progress.stage_done(stage)
    return stage


def stage_error(name: str, exc: BridgeError) -> StageResult:
    """A stage that raised a bridge error after the web model existed: recorded as failed, not fatal."""
    return StageResult(name, Status.FAIL, reason=str(exc))
