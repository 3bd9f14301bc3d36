"""The ONNX route's production: torch.onnx.export -> onnxruntime check -> onnx2tf -> TensorFlow (SavedModel).

Its stages: `onnx` (the exported file in onnxruntime vs the reference: `export`, `check_onnx`) and `tf` (onnx2tf's
TF model, made by `onnx_to_tf` and judged like every route's TF model).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from bridge.source.ports import Interface
from bridge.source.reference import to_torch_inputs
from bridge.stages.artifacts import Produced, TfModel
from bridge.stages.context import StageEnv
from bridge.stages.result import StageResult, Status

ONNX_FILE = "model.onnx"


def export(env: StageEnv) -> Produced:
    """OUT/model.onnx: exported from the PyTorch module, or the given ONNX file copied self-contained."""
    from bridge.onnx_route.export import export_onnx

    run, target = env.run, env.run.folder / ONNX_FILE
    if run.onnx_source is not None:
        _copy_self_contained(run.onnx_source, target)
        return Produced(env.artifacts.with_(onnx=target), detail="given .onnx")
    specs = run.specs
    result = export_onnx(env.artifacts.module, to_torch_inputs(run.samples[0], specs), target,
                         input_names=[s.name for s in specs], output_names=list(run.output_names),
                         dynamic_dims={s.name: list(s.dynamic_dims) for s in specs if s.dynamic_dims})
    note = f"{result.exporter} exporter" + (f" (fallback: {result.fallback_reason})" if result.fallback_reason else "")
    return Produced(env.artifacts.with_(onnx=target), detail=note,
                    extra={"exporter": result.exporter, "fallback_reason": result.fallback_reason})


def _copy_self_contained(source: Path, target: Path) -> None:
    """Copy an ONNX file with its external data (`x.onnx.data` beside it) into one self-contained file."""
    import onnx

    from bridge.onnx_route.onnxrt import load_onnx_checked

    model = load_onnx_checked(source, load_weights=True)
    if model.ByteSize() < 2**31 - 2**20:
        onnx.save(model, str(target))
    else:  # over protobuf's 2 GB limit: keep the weights beside it
        onnx.save(model, str(target), save_as_external_data=True, location=target.name + ".data")


def check_onnx(env: StageEnv) -> StageResult:
    """The ONNX file in onnxruntime on every sample, against the reference (PyTorch layout)."""
    from bridge.onnx_route.onnxrt import run_onnx

    if env.run.onnx_is_reference:
        return StageResult(env.name, Status.SKIPPED, reason="the ONNX file is the reference (onnxruntime)")
    onnx_path = env.artifacts.onnx
    assert onnx_path is not None
    names = list(env.run.output_names)
    actual = [dict(zip(names, run_onnx(onnx_path, sample).values())) for sample in env.run.samples]
    return env.judge(actual, expected=env.run.reference, detail="onnxruntime")


def onnx_to_tf(env: StageEnv) -> Produced:
    """onnx2tf's TF model (kept in memory for the `tf` stage), its SavedModel and the interface it exposes."""
    from bridge.onnx_route.to_tf import onnx_to_saved_model

    run = env.run
    onnx_path = env.artifacts.onnx
    assert onnx_path is not None
    rebuild = onnx_to_saved_model(onnx_path, run.folder / "saved_model",
                                  input_layouts={s.name: run.options.layout for s in run.specs},
                                  sample_inputs=run.samples[0], verbose=run.options.verbose)
    interface = Interface(tuple(replace(p, dtype=s.dtype) for p, s in zip(rebuild.inputs, run.specs)),
                          tuple(rebuild.outputs))
    return Produced(env.artifacts.with_(tf_model=TfModel(rebuild.run_tf, detail="onnx2tf"),
                                        saved_model=rebuild.saved_model_dir, interface=interface))
