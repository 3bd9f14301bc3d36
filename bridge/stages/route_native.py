"""The native route's production: torch.export capture -> bridge's IR and op registry -> generated tf_model.py (a
tf.Module a person can read and keep) + tf_weights.safetensors -> SavedModel made by running that very file
(`bridge.native.rebuild_tf`). Its stages: `capture` (this module) and `tf` (judged like every route's TF model).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from bridge.errors import UsageError
from bridge.source.ports import Interface
from bridge.source.reference import to_torch_inputs
from bridge.stages.artifacts import Produced, TfModel
from bridge.stages.context import StageEnv

MODEL_PY, WEIGHTS = "tf_model.py", "tf_weights.safetensors"


def capture(env: StageEnv) -> Produced:
    """Rebuild the PyTorch module natively in `env.run.folder`: the TF model, its SavedModel and the interface."""
    from bridge.native.rebuild import rebuild_tf

    module, run = env.artifacts.module, env.run
    if module is None or not _is_exportable(module):
        raise UsageError("the native route needs a Python nn.Module (file.py:Class, a .pt2 program or an "
                         "nn.Module through the API)", stage="capture", hint="use --route onnx for this model")
    specs = run.specs
    rebuild = rebuild_tf(module, to_torch_inputs(run.samples[0], specs), run.folder,
                         input_names=[s.name for s in specs], output_names=run.output_names,
                         input_layouts={s.name: run.options.layout for s in specs if len(s.shape) == 4},
                         dynamic_dims={s.name: {d: f"{s.name}_dim{d}" for d in s.dynamic_dims}
                                       for s in specs if s.dynamic_dims},
                         sample_shapes=[{name: tuple(array.shape) for name, array in sample.items()}
                                        for sample in run.samples],
                         reference_shapes=[[tuple(ref[name].shape) for name in run.output_names if name in ref]
                                           for ref in run.reference])
    interface = Interface(tuple(replace(p, dtype=s.dtype) for p, s in zip(rebuild.inputs, specs)),
                          tuple(rebuild.outputs))
    tf_model = TfModel(rebuild.run, detail=f"native, {rebuild.transposes} Transpose",
                       extra={"tf_ops": rebuild.tf_ops, "relayouts": rebuild.relayouts})
    ops = sum(v for k, v in rebuild.op_counts.items() if not k.startswith("bridge."))
    return Produced(env.artifacts.with_(tf_model=tf_model, saved_model=rebuild.saved_model_dir, interface=interface),
                    detail=f"{rebuild.capture_method}, {ops} ops",
                    extra={"capture_method": rebuild.capture_method, "aten_ops": rebuild.op_counts,
                           "timings": rebuild.timings})


def _is_exportable(module: object) -> bool:
    import torch

    return isinstance(module, torch.nn.Module) and not isinstance(module, torch.jit.ScriptModule)


def load_generated_model(folder: Path, interface: Interface) -> TfModel | None:
    """The generated tf_model.py of an output folder, built from its weights (for `bridge parity`); None when the
    folder has none (an ONNX-route conversion)."""
    model_py, weights = folder / MODEL_PY, folder / WEIGHTS
    if not model_py.is_file() or not weights.is_file():
        return None
    from bridge.native.rebuild import import_generated, run_generated

    model = import_generated(model_py).build(weights)
    return TfModel(lambda feeds: run_generated(model, interface.inputs, interface.outputs, feeds),
                   detail="native, tf_model.py")


ABSENT_TF_MODEL = {"native": f"the folder has no {MODEL_PY} and {WEIGHTS} to rebuild the TF model from",
                   "onnx": "not re-run: onnx2tf's in-memory TF model is gone; savedmodel checks the same model as saved"}
ABSENT_MODULE = "not re-run: it needs the PyTorch model, which bridge parity does not have"
