"""The layers-model folder of a PyTorch module: model.json + weight shards (bridge's layers writer,
bridge.tfjs.layers) and, when the model has custom layers, custom_layers.js beside them; written atomically.

userDefinedMetadata.bridge holds what graph models hold (the route, the inputs and outputs as ports with their
layouts and permutations) plus ``layersRoute``: the weight links (PyTorch state_dict key <-> TF.js weight, with
the named transform), the skipped keys, the BatchNorm momenta, the custom classes (their module file and their
programs) and the conversion notes. TF.js keeps userDefinedMetadata through ``model.save``, so a model trained and
saved in the browser still says how its weights go back to PyTorch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from bridge.layers_route.convert import (
    LayersConversion,
    LayersRouteOptions,
    convert_to_layers,
)
from bridge.layers_route.custom_layers import program_to_json
from bridge.layers_route.ir import LayersPlan
from bridge.layers_route.js_codegen import FILE_NAME, custom_layers_module
from bridge.tfjs.convert import WebModelSummary

METADATA_KEY = "layersRoute"
METADATA_VERSION = 1


@dataclass
class LayersRouteResult:
    """What was written: the folder's summary (shards, sizes, layer classes), the conversion, and the
    custom_layers.js path (None when the model has no custom layer)."""

    summary: WebModelSummary
    conversion: LayersConversion
    custom_layers_js: Path | None

    @property
    def out_dir(self) -> Path:
        """The layers model folder."""
        return self.summary.out_dir


def layers_route_metadata(plan: LayersPlan) -> dict[str, Any]:
    """``userDefinedMetadata.bridge.layersRoute``."""
    programs = {}
    templates = {}
    for spec in plan.layers:
        if spec.program is not None:
            programs[spec.class_name] = program_to_json(spec.program)
        elif spec.template is not None:
            templates[spec.class_name] = spec.template
    custom = {"module": FILE_NAME, "classes": plan.custom_classes(), "programs": programs, "templates": templates} \
        if plan.custom_classes() else None
    return {"version": METADATA_VERSION, "links": [link.to_json() for link in plan.links],
            "skipped": list(plan.skipped),
            "batchNorms": [{"path": path, "momentum": momentum} for path, momentum in plan.batch_norms],
            "customLayers": custom, "notes": list(plan.notes)}


def write_conversion(conversion: LayersConversion, out_dir: str | Path, options: LayersRouteOptions
                     ) -> LayersRouteResult:
    """Write an in-memory conversion as a layers model folder (atomically: a failure leaves nothing)."""
    from bridge.tfjs.layers.writer import LayersModelOptions, write_layers_model
    from bridge.tfjs.weights import DEFAULT_SHARD_SIZE
    from bridge.util.atomic import atomic_output_dir

    plan = conversion.plan
    target = Path(out_dir).absolute()
    bridge_metadata = {"route": "layers", **plan.interface.metadata(), METADATA_KEY: layers_route_metadata(plan)}
    layers_options = LayersModelOptions(quantize=tuple(options.quantize),
                                        shard_size=options.shard_size or DEFAULT_SHARD_SIZE, force=True,
                                        training_config=False, metadata=dict(options.metadata),
                                        bridge_metadata=bridge_metadata,
                                        source=f"pytorch:{conversion.module_name}")
    js_path = None
    with atomic_output_dir(target, options.force) as staging:
        summary = write_layers_model(conversion.keras_model, staging, layers_options)
        if plan.custom_classes():
            (staging / FILE_NAME).write_text(custom_layers_module(plan.layers, conversion.module_name),
                                             encoding="utf-8")
            js_path = target / FILE_NAME
    moved = replace(summary, out_dir=target, model_json=target / "model.json",
                    shards=tuple(target / p.name for p in summary.shards), notes=(*summary.notes, *plan.notes))
    return LayersRouteResult(summary=moved, conversion=conversion, custom_layers_js=js_path)


def write_layers_route(module: torch.nn.Module, example_inputs: Sequence[Any] | torch.Tensor, out_dir: str | Path,
                       options: LayersRouteOptions | None = None) -> LayersRouteResult:
    """Convert `module` (captured on `example_inputs`, PyTorch's layout) into a TF.js layers model folder for
    ``tf.loadLayersModel``: model.json, weight shards, and custom_layers.js when custom layers were needed."""
    options = options or LayersRouteOptions()
    return write_conversion(convert_to_layers(module, example_inputs, options), out_dir, options)
