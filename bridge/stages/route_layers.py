"""A PyTorch module as a trainable TF.js layers model (`--web-format layers`, `bridge.layers_route`), on either route:
the layers model is built from the PyTorch module itself, so it does not depend on how the graph model was made.
The `train-step` stage runs one optimizer step on one batch in PyTorch and in TF.js and compares the updated
weights."""

from __future__ import annotations

from typing import Any

import numpy as np

from bridge.source.reference import to_torch_inputs
from bridge.stages.artifacts import Produced, WebModel
from bridge.stages.context import StageEnv
from bridge.stages.tensorflow import user_metadata
from bridge.stages.result import StageResult, Status

CUSTOM_LAYERS = "custom_layers.js"


def write_layers_from_torch(env: StageEnv) -> Produced:
    """The module as a layers model in the run's layers model folder (custom layers' JavaScript beside it)."""
    from bridge.layers_route import LayersRouteOptions, write_layers_route

    run = env.run
    specs = run.specs
    options = LayersRouteOptions(
        input_names=[s.name for s in specs], output_names=list(run.output_names), layout=run.options.layout,
        dynamic_axes={s.name: tuple(a for a in s.dynamic_dims if a != 0) for s in specs if s.dynamic_dims},
        quantize=run.options.quantize, shard_size=run.options.shard_size, force=True,
        metadata=user_metadata(env))
    result = write_layers_route(env.artifacts.module, to_torch_inputs(run.samples[0], specs), run.layers_model_path,
                                options)
    extra = {"custom_layers": result.custom_layers_js is not None,
             "keras_max_abs_diff": result.conversion.keras_max_abs_diff}
    layers = WebModel.read(run.layers_model_path)
    interface = env.artifacts.interface or layers.interface  # a layers-only conversion: the layers model's ports
    return Produced(env.artifacts.with_(layers_model=layers, interface=interface), extra=extra,
                    notes=tuple(result.conversion.notes))


def check_train_step(env: StageEnv) -> StageResult:
    """One step of `--train-optimizer` (SGD or Adam, fixed learning rate) on the first sample batch, in PyTorch
    and in TF.js (cpu: it has every training kernel); the updated weights must agree within the stated
    tolerances, else the first diverging module is named."""
    from bridge.layers_route import train_step_parity

    layers = env.artifacts.layers_model
    assert layers is not None
    options = env.run.options
    inputs = to_torch_inputs(env.run.samples[0], env.run.specs)
    result = train_step_parity(env.artifacts.module, layers.path, inputs, _target(env), optimizer=options.train_optimizer,
                               learning_rate=options.train_learning_rate, loss=options.train_loss, backend="cpu")
    detail = f"{result.optimizer} lr {result.learning_rate:g}, max|Δw| {result.max_abs_diff:.2g}"
    reason = None if result.ok else result.summary()
    return StageResult(env.name, Status.PASS if result.ok else Status.FAIL, detail=detail, reason=reason,
                       extra={"train_step": result.to_dict()})


def _target(env: StageEnv) -> Any:
    """The batch's training target: class indices other than the predicted ones for a classifier output (so the
    step has a gradient), else the reference output shifted by one along its last axis (MSE)."""
    import torch

    (name,) = env.run.output_names[:1]
    reference = np.asarray(env.run.reference[0][name])
    if reference.ndim == 2 and reference.shape[1] >= 2 and env.run.options.train_loss in (None, "cross_entropy"):
        return torch.from_numpy((reference.argmax(axis=1) + 1) % reference.shape[1])
    return torch.from_numpy(np.roll(reference, 1, axis=-1).astype(np.float32))
