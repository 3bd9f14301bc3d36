"""The native route: torch.export capture -> bridge's IR and op registry -> generated tf_model.py (a tf.Module a
person can read and keep) + tf_weights.safetensors -> SavedModel made by running that very file.

Stages: `capture` (torch.export and the unsupported-op scan) and `tf` (the generated model vs PyTorch).
"""

from __future__ import annotations

from pathlib import Path

from bridge.context import ConversionContext
from bridge.errors import UsageError
from bridge.interface import port_from_io, to_web_samples
from bridge.parity import compare_outputs
from bridge.progress import run_stage
from bridge.stages import StageResult, Status, worst_status


def run_native_route(ctx: ConversionContext) -> tuple[list[StageResult], Path]:
    """Rebuild the model natively; returns the `capture` and `tf` stages and the SavedModel folder."""
    from bridge.reference import to_torch_inputs

    if ctx.module is None or not _is_exportable(ctx.module):
        raise UsageError("the native route needs a Python nn.Module (file.py:Class, a .pt2 program or an "
                         "nn.Module through the API)", stage="capture", hint="use --route onnx for this model")
    holder: dict[str, object] = {}

    def capture() -> StageResult:
        from bridge.native.rebuild import rebuild_tf

        rebuild = rebuild_tf(ctx.module, to_torch_inputs(ctx.samples[0], ctx.specs), ctx.staging,
                             input_names=[s.name for s in ctx.specs], output_names=ctx.output_names,
                             input_layouts={s.name: ctx.options.layout for s in ctx.specs if len(s.shape) == 4},
                             dynamic_dims={s.name: {d: f"{s.name}_dim{d}" for d in s.dynamic_dims}
                                           for s in ctx.specs if s.dynamic_dims})
        holder["rebuild"] = rebuild
        ops = sum(v for k, v in rebuild.op_counts.items() if not k.startswith("bridge."))
        return StageResult("capture", Status.PASS, seconds=rebuild.timings.get("capture", 0.0),
                           detail=f"{rebuild.capture_method}, {ops} ops",
                           extra={"capture_method": rebuild.capture_method, "aten_ops": rebuild.op_counts,
                                  "timings": rebuild.timings})

    stages = [run_stage(ctx.progress, "capture", capture, ctx.options.verbose)]
    rebuild = holder["rebuild"]
    ctx.input_ports = [port_from_io(info, spec.dtype) for info, spec in zip(rebuild.inputs, ctx.specs)]  # type: ignore[attr-defined]
    ctx.output_ports = [port_from_io(info, None) for info in rebuild.outputs]  # type: ignore[attr-defined]
    stages.append(run_stage(ctx.progress, "tf", lambda: _tf_stage(ctx, rebuild), ctx.options.verbose))
    return stages, rebuild.saved_model_dir  # type: ignore[attr-defined]


def _is_exportable(module: object) -> bool:
    import torch

    return isinstance(module, torch.nn.Module) and not isinstance(module, torch.jit.ScriptModule)


def _tf_stage(ctx: ConversionContext, rebuild: object) -> StageResult:
    """The generated tf_model.py, run in Python on every sample, vs PyTorch."""
    web_inputs = to_web_samples(ctx.samples, ctx.input_ports)
    expected = to_web_samples(ctx.reference, ctx.output_ports)
    actual = [rebuild.run(sample) for sample in web_inputs]  # type: ignore[attr-defined]
    outputs = compare_outputs(actual, expected, ctx.tolerance("tf"))
    detail = f"native, {rebuild.transposes} Transpose"  # type: ignore[attr-defined]
    return StageResult("tf", worst_status([o.status for o in outputs]), detail=detail, outputs=outputs,
                       extra={"tf_ops": rebuild.tf_ops, "relayouts": rebuild.relayouts})  # type: ignore[attr-defined]
