"""A TF.js layers model folder (model.json + shards, written by bridge or the official converter) as a
`TfSource`: the Keras 2 topology rebuilt with tf_keras, the weights decoded (dequantized) and set by name.

The rebuilt model is both the reference and, through the Keras graph route, the source of a graph model
(the official converter's ``tfjs_layers_model`` -> ``tfjs_graph_model`` path).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from bridge.errors import SourceFormatError, WebModelError
from bridge.tfjs.sources.base import STAGE, TfSource


def load_layers_folder(path: Path) -> TfSource:
    """The layers model at `path` (its folder or model.json) rebuilt in tf_keras, as a source."""
    import tf_keras

    from bridge.tfjs.layers.topology import leaf_layers, weight_name
    from bridge.tfjs.sources.keras_files import keras_model_source, load_keras_file

    folder = Path(path).parent if Path(path).name == "model.json" else Path(path)
    model_json = _read_model_json(folder)
    topology = model_json["modelTopology"]
    topology = topology.get("model_config", topology)
    model = load_keras_file(lambda: tf_keras.models.model_from_json(json.dumps(topology)), folder)
    weights = manifest_weights(folder, model_json)
    for layer in leaf_layers(model):
        values = [_lookup(weights, weight_name(layer.name, w.name), folder) for w in layer.weights]
        if values:
            layer.set_weights(values)
    unused = sorted(set(weights) - {weight_name(layer.name, w.name) for layer in leaf_layers(model)
                                    for w in layer.weights} - _short_names(model))
    if unused:
        raise SourceFormatError(f"{folder}: weights {unused[:10]} belong to no layer of the topology", stage=STAGE)
    source = keras_model_source(model, path=folder, input_format="tfjs_layers_model")
    source.generated_by = str(model_json.get("generatedBy") or source.generated_by)
    return source


def _read_model_json(folder: Path) -> dict[str, Any]:
    path = folder / "model.json"
    try:
        model_json = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SourceFormatError(f"cannot read {path}: {exc}", stage=STAGE) from exc
    if not isinstance(model_json, dict) or model_json.get("format") != "layers-model" \
            or not isinstance(model_json.get("modelTopology"), dict):
        raise SourceFormatError(f"{path} is not a TF.js layers model", stage=STAGE,
                                hint="pass a folder written by tfjs save_keras_model / bridge tfjs")
    return model_json


def _short_names(model: Any) -> set[str]:
    """Weight names with a cell part dropped (``lstm/lstm_cell/kernel`` -> ``lstm/kernel``), as tfjs accepts."""
    from bridge.tfjs.layers.topology import leaf_layers, weight_name

    names = set()
    for layer in leaf_layers(model):
        for weight in layer.weights:
            parts = weight_name(layer.name, weight.name).split("/")
            names.add("/".join(parts[:-2] + parts[-1:]))
    return names


def _lookup(weights: dict[str, np.ndarray], name: str, folder: Path) -> np.ndarray:
    """A weight by its Keras 2 name, or by the shortened name tfjs writes for cell weights."""
    if name in weights:
        return weights[name]
    parts = name.split("/")
    short = "/".join(parts[:-2] + parts[-1:])
    if short in weights:
        return weights[short]
    raise SourceFormatError(f"{folder}: no weight {name!r} in the manifest", stage=STAGE,
                            hint="the shards must hold every weight of the topology's layers")


def manifest_weights(folder: Path, model_json: dict[str, Any]) -> dict[str, np.ndarray]:
    """Every weight of the manifest, decoded and dequantized, with the graph-model reader's checks (shard paths
    inside the folder, byte counts, dtypes)."""
    from bridge.tfjs import reader

    weights: dict[str, np.ndarray] = {}
    entries: list[Any] = []
    seen: set[str] = set()
    resolved = folder.resolve()
    try:
        for index, group in enumerate(reader._manifest_groups(model_json)):
            shards = reader._group_shards(resolved, group, index, seen)
            group_entries = reader._group_entries(group, index, weights.keys() | {e.name for e in entries})
            reader._check_declared_size(group_entries, shards, index)
            reader._decode_group(group_entries, reader._read_shards(resolved, shards), index, weights, entries)
    except WebModelError as exc:
        exc.stage = STAGE
        raise
    return {name: np.array(value) for name, value in weights.items()}
