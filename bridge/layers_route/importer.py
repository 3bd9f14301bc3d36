"""TF.js layers-model weights back into a PyTorch module's state_dict.

The source is any layers model folder bridge wrote, or what TF.js itself saves: ``model.save`` to files (Node),
``downloads://NAME`` (``NAME.json`` + ``NAME.weights.bin``) or an ``http(s)://`` upload (``model.json`` +
``model.weights.bin``, the manifest naming ``./model.weights.bin``). TF.js keeps userDefinedMetadata through a
save, so the weight links bridge wrote (PyTorch key <-> TF.js weight, with the named layout transform) say how each
weight goes back; every link is run through its inverse transform. A module of another architecture is refused
with every mismatch listed: keys on one side only, shapes that differ, TF.js weights no key uses.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bridge.errors import UsageError, WeightImportError
from bridge.layers_route.ir import WeightLink
from bridge.layers_route.weight_links import by_short_name, short_name, to_torch
from bridge.layers_route.writer import METADATA_KEY

STAGE = "import-weights"


def read_tfjs_weights(source: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """model.json (or ``NAME.json``) of a layers model and its weights by name, decoded and dequantized, with the
    graph reader's checks (shards inside the folder, byte counts, dtypes). `source` is the folder or the json."""
    from bridge.errors import BridgeError
    from bridge.tfjs.sources.layers_folder import manifest_weights

    path = Path(source)
    json_path = path / "model.json" if path.is_dir() else path
    try:
        model_json = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WeightImportError(f"cannot read {json_path}: {exc}", mismatches=[], stage=STAGE,
                                hint="pass a layers model folder (model.json + weights) or its .json file") from exc
    if not isinstance(model_json, dict) or model_json.get("format") != "layers-model":
        raise WeightImportError(f"{json_path} is not a TF.js layers model", mismatches=[], stage=STAGE,
                                hint="import-weights reads layers models (tf.loadLayersModel / model.save)")
    try:
        weights = manifest_weights(json_path.parent, model_json)
    except BridgeError as exc:
        exc.stage = STAGE
        raise
    optimizer = {spec.get("name") for group in model_json.get("weightsManifest") or []
                 for spec in group.get("weights") or [] if spec.get("group") == "optimizer"}
    return model_json, {name: value for name, value in weights.items() if name not in optimizer}


def weight_links(model_json: Mapping[str, Any]) -> tuple[list[WeightLink], list[str]]:
    """The links and skipped keys bridge recorded in ``userDefinedMetadata.bridge.layersRoute``."""
    meta = ((model_json.get("userDefinedMetadata") or {}).get("bridge") or {}).get(METADATA_KEY)
    if not isinstance(meta, Mapping) or not isinstance(meta.get("links"), list):
        raise WeightImportError("model.json holds no bridge weight links (userDefinedMetadata.bridge."
                                f"{METADATA_KEY})", mismatches=[], stage=STAGE,
                                hint="import weights of a layers model bridge converted from PyTorch (TF.js keeps "
                                     "the links through model.save), or rebuild it with write_layers_route and "
                                     "pass that folder")
    return [WeightLink.from_json(entry) for entry in meta["links"]], [str(k) for k in meta.get("skipped") or []]


def state_dict_from_tfjs(weights: Mapping[str, np.ndarray], module: torch.nn.Module, links: Sequence[WeightLink],
                         skipped: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """The module's state_dict with every linked entry replaced by the TF.js weights (by name, through the
    inverse transforms); entries bridge skipped (num_batches_tracked) keep the module's values. Raises
    `WeightImportError` listing every mismatch."""
    current = module.state_dict()
    tfjs = by_short_name(weights)
    problems: list[str] = []
    linked = {key for link in links for key in link.torch_keys}
    problems += [f"the PyTorch module has no {key} (the layers model has it)"
                 for key in sorted(linked - set(current))]
    problems += [f"the layers model has no weight for {key} {list(current[key].shape)}"
                 for key in current if key not in linked and key not in skipped]
    used = {short_name(name) for link in links for name in link.tfjs}
    problems += [f"TF.js weight {name} {list(np.shape(weights[name]))} belongs to no PyTorch entry"
                 for name in weights if short_name(name) not in used]
    result = dict(current)
    for link in links:
        if any(key not in current for key in link.torch_keys):
            continue
        missing = [name for name in link.tfjs if short_name(name) not in tfjs]
        if missing:
            problems += [f"the layers model has no weight {name} (for {', '.join(link.torch_keys)})"
                         for name in missing]
            continue
        reference = [current[key].detach().cpu().numpy() for key in link.torch_keys]
        try:
            values = to_torch(link, [tfjs[short_name(name)] for name in link.tfjs], reference)
        except (ValueError, IndexError) as exc:
            problems.append(f"{', '.join(link.tfjs)} -> {', '.join(link.torch_keys)}: {exc}")
            continue
        for key, value in zip(link.torch_keys, values):
            want = tuple(current[key].shape)
            if tuple(value.shape) != want:
                problems.append(f"{key}: the layers model gives shape {list(value.shape)}, the module has "
                                f"{list(want)}")
                continue
            result[key] = torch.from_numpy(np.ascontiguousarray(value)).to(current[key].dtype)
    if problems:
        raise WeightImportError(f"the layers model's weights do not fit {type(module).__name__}: "
                                f"{len(problems)} mismatch(es)", mismatches=problems, stage=STAGE,
                                hint="pass the module class (and constructor arguments) the layers model was "
                                     "converted from")
    return result


def import_weights(tfjs_model: str | Path, module: torch.nn.Module, *, load: bool = False
                   ) -> dict[str, torch.Tensor]:
    """The state_dict of `module` holding the weights of the TF.js layers model at `tfjs_model` (a folder bridge
    wrote, or files TF.js saved). With `load`, the module is updated in place too."""
    model_json, weights = read_tfjs_weights(tfjs_model)
    links, skipped = weight_links(model_json)
    state = state_dict_from_tfjs(weights, module, links, skipped)
    if load:
        module.load_state_dict(state)
    return state


def save_state_dict(state: Mapping[str, torch.Tensor], path: str | Path) -> Path:
    """Write `state` as ``.safetensors`` (or a ``.pt`` / ``.pth`` state_dict) atomically; returns the path."""
    import os
    import tempfile

    target = Path(path)
    if target.suffix not in (".safetensors", ".pt", ".pth"):
        raise UsageError(f"{target}: write .safetensors (or .pt / .pth)", stage=STAGE)
    target.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    handle, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(handle)
    try:
        if target.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(tensors, temp)
        else:
            torch.save(tensors, temp)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return target
