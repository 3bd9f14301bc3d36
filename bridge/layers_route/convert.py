"""PyTorch module -> layers plan -> tf_keras model, checked against PyTorch in Python (in memory; `writer` puts
it on disk)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from bridge.errors import UsageError
from bridge.layers_route.builder import InputDecl, build_plan, is_leaf
from bridge.layers_route.capture import capture
from bridge.layers_route.custom_layers import fuse_custom_steps
from bridge.layers_route.ir import STAGE, LayersPlan
from bridge.layers_route.keras_model import build_keras_model
from bridge.source.ports import Interface

LAYOUTS = ("nhwc", "nchw")


@dataclass(frozen=True)
class LayersRouteOptions:
    """How to convert. `input_names` default to forward()'s argument names, `output_names` to ``output_0``, ...
    (or a returned dict's keys). `layout` is the web layout of 4-D float inputs (``nhwc``, what
    tf.browser.fromPixels gives, or ``nchw``), per input in `input_layouts`. `dynamic_axes` names, per input,
    axes besides the batch whose size may change (None in the Keras shapes). The rest is for the folder writer:
    quantization specs and shard size as for graph models, `force` to replace a folder, extra top-level
    userDefinedMetadata."""

    input_names: Sequence[str] | None = None
    output_names: Sequence[str] | None = None
    layout: str = "nhwc"
    input_layouts: Mapping[str, str] = field(default_factory=dict)
    dynamic_axes: Mapping[str, Sequence[int]] = field(default_factory=dict)
    quantize: tuple[str, ...] = ()
    shard_size: int | None = None
    force: bool = False
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class LayersConversion:
    """The conversion in memory: the plan, the tf_keras model (PyTorch's weights in it), the interface, and how
    far the Keras model is from PyTorch on the example inputs (max |Δ| per output, in the web layout)."""

    plan: LayersPlan
    keras_model: Any
    interface: Interface
    keras_max_abs_diff: dict[str, float]
    module_name: str

    @property
    def notes(self) -> list[str]:
        """What the conversion wants the user to know (training differences, approximations)."""
        return self.plan.notes


def as_tensors(example_inputs: Sequence[Any] | torch.Tensor) -> list[torch.Tensor]:
    """Example inputs as a list of tensors."""
    if isinstance(example_inputs, torch.Tensor):
        return [example_inputs]
    tensors = [torch.as_tensor(x) for x in example_inputs]
    if not tensors:
        raise UsageError("give at least one example input", stage=STAGE)
    return tensors


def convert_to_layers(module: torch.nn.Module, example_inputs: Sequence[Any] | torch.Tensor,
                      options: LayersRouteOptions | None = None) -> LayersConversion:
    """Capture `module` on `example_inputs`, plan its layers (refusing every part that has no layers-model form,
    all at once), build the tf_keras model and compare it with PyTorch."""
    options = options or LayersRouteOptions()
    inputs = as_tensors(example_inputs)
    if options.layout not in LAYOUTS:
        raise UsageError(f"layout must be one of {LAYOUTS}, got {options.layout!r}", stage=STAGE)
    names = _input_names(module, inputs, options)
    axes = {i: tuple(options.dynamic_axes.get(n, ())) for i, n in enumerate(names)}
    captured = capture(module, inputs, is_leaf, axes)
    decls = [InputDecl(n, _layout(options, n, x)) for n, x in zip(names, inputs)]
    plan = build_plan(captured, decls, options.output_names)
    fuse_custom_steps(plan, lambda path: type(module.get_submodule(path)).__name__ if path else "")
    state = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
    keras_model = build_keras_model(plan, state, name=_model_name(module))
    diffs = keras_parity(module, keras_model, plan.interface, inputs)
    return LayersConversion(plan, keras_model, plan.interface, diffs, type(module).__name__)


def _input_names(module: torch.nn.Module, inputs: Sequence[torch.Tensor], options: LayersRouteOptions) -> list[str]:
    if options.input_names is not None:
        if len(options.input_names) != len(inputs):
            raise UsageError(f"{len(options.input_names)} input names for {len(inputs)} inputs", stage=STAGE)
        return list(options.input_names)
    import inspect

    params = [p.name for p in inspect.signature(module.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return params[:len(inputs)] if len(params) >= len(inputs) else [f"input_{i}" for i in range(len(inputs))]


def _layout(options: LayersRouteOptions, name: str, x: torch.Tensor) -> str:
    layout = options.input_layouts.get(name, options.layout)
    if layout not in LAYOUTS:
        raise UsageError(f"layout of input {name} must be one of {LAYOUTS}, got {layout!r}", stage=STAGE)
    if x.dim() != 4 or not x.is_floating_point():
        return "source"
    return layout


def _model_name(module: torch.nn.Module) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_]", "_", type(module).__name__) or "model"


def torch_outputs(module: torch.nn.Module, inputs: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """PyTorch's outputs (eval mode, no autograd), flattened in output order."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            result = module(*inputs)
    finally:
        module.train(was_training)
    if isinstance(result, Mapping):
        result = list(result.values())
    items = list(result) if isinstance(result, (tuple, list)) else [result]
    return [t.detach().cpu().numpy() for t in items]


def keras_parity(module: torch.nn.Module, keras_model: Any, interface: Interface,
                 inputs: Sequence[torch.Tensor]) -> dict[str, float]:
    """max |Keras - PyTorch| per output on `inputs`, compared in the web layout."""
    web = [port.to_web(x.detach().cpu().numpy()) for port, x in zip(interface.inputs, inputs)]
    got = keras_model(web if len(web) > 1 else web[0], training=False)
    got = list(got) if isinstance(got, (list, tuple)) else [got]
    want = torch_outputs(module, inputs)
    return {port.name: float(np.max(np.abs(np.asarray(g) - port.to_web(w)))) if np.size(w) else 0.0
            for port, g, w in zip(interface.outputs, got, want)}
