"""The ONNX route: torch.onnx.export -> onnxruntime check -> onnx2tf -> TensorFlow (SavedModel).

Stages: `onnx` (the exported file in onnxruntime vs PyTorch) and `tf` (onnx2tf's TF model in Python vs PyTorch).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bridge.context import ConversionContext
from bridge.interface import port_from_io, to_web_samples
from bridge.parity import compare_outputs
from bridge.progress import run_stage
from bridge.stages import StageResult, Status, worst_status


def run_onnx_route(ctx: ConversionContext) -> tuple[list[StageResult], Path]:
    """Run the route's stages; returns them and the SavedModel folder they produced."""
    onnx_path = ctx.staging / "model.onnx"
    stages = [_stage(ctx, "onnx", lambda: _onnx_stage(ctx, onnx_path))]
    saved_model = ctx.staging / "saved_model"
    stages.append(_stage(ctx, "tf", lambda: _tf_stage(ctx, onnx_path, saved_model)))
    return stages, saved_model


def _stage(ctx: ConversionContext, name: str, fn: Callable[[], StageResult]) -> StageResult:
    return run_stage(ctx.progress, name, fn, ctx.options.verbose)


def _onnx_stage(ctx: ConversionContext, onnx_path: Path) -> StageResult:
    from bridge.onnx_route.export import export_onnx
    from bridge.onnx_route.onnxrt import run_onnx
    from bridge.reference import to_torch_inputs

    if ctx.onnx_source is not None:
        _copy_self_contained(ctx.onnx_source, onnx_path)
        return StageResult("onnx", Status.SKIPPED, reason="the given ONNX file is the reference (onnxruntime)",
                           detail="given .onnx")
    example = to_torch_inputs(_example_sample(ctx), ctx.specs)
    export = export_onnx(ctx.module, example, onnx_path, input_names=[s.name for s in ctx.specs],
                         output_names=ctx.output_names,
                         dynamic_dims={s.name: list(s.dynamic_dims) for s in ctx.specs if s.dynamic_dims})
    actual = [run_onnx(onnx_path, sample) for sample in ctx.samples]
    outputs = compare_outputs(actual, ctx.reference, ctx.tolerance("onnx"))
    note = f"{export.exporter} exporter" + (f" (fallback: {export.fallback_reason})" if export.fallback_reason else "")
    return StageResult("onnx", worst_status([o.status for o in outputs]), detail=note, outputs=outputs,
                       extra={"exporter": export.exporter, "fallback_reason": export.fallback_reason})


def _copy_self_contained(source: Path, target: Path) -> None:
    """Copy an ONNX file with its external data (`x.onnx.data` beside it) into one self-contained file."""
    import onnx

    from bridge.onnx_route.onnxrt import load_onnx_checked

    model = load_onnx_checked(source, load_weights=True)
    if model.ByteSize() < 2**31 - 2**20:
        onnx.save(model, str(target))
    else:  # over protobuf's 2 GB limit: keep the weights beside it
        onnx.save(model, str(target), save_as_external_data=True, location=target.name + ".data")


def _example_sample(ctx: ConversionContext) -> dict:  # type: ignore[type-arg]
    """The first sample cut to the example shapes (dynamic dims at their example size) for export."""
    return ctx.samples[0]


def _tf_stage(ctx: ConversionContext, onnx_path: Path, saved_model: Path) -> StageResult:
    from bridge.onnx_route.to_tf import onnx_to_saved_model

    layouts = {s.name: ctx.options.layout for s in ctx.specs}
    rebuild = onnx_to_saved_model(onnx_path, saved_model, input_layouts=layouts, sample_inputs=ctx.samples[0],
                                  verbose=ctx.options.verbose)
    ctx.input_ports = [port_from_io(info, spec.dtype) for info, spec in zip(rebuild.inputs, ctx.specs)]
    ctx.output_ports = [port_from_io(info, None) for info in rebuild.outputs]
    web_inputs = to_web_samples(ctx.samples, ctx.input_ports)
    expected = to_web_samples(ctx.reference, ctx.output_ports)
    actual = [rebuild.run_tf(sample) for sample in web_inputs]
    outputs = compare_outputs(actual, expected, ctx.tolerance("tf"))
    return StageResult("tf", worst_status([o.status for o in outputs]), detail="onnx2tf", outputs=outputs)
