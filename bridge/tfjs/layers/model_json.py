"""model.json of a TF.js layers model: key order, the manifest, userDefinedMetadata (shared with graph models)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FORMAT = "layers-model"


def build_layers_model_json(*, generated_by: str, converted_by: str, topology: Mapping[str, Any],
                            manifest: list[dict[str, Any]], training_config: Mapping[str, Any] | None = None,
                            user_metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The model.json object: format, generatedBy, convertedBy, modelTopology, trainingConfig (when compiled),
    userDefinedMetadata, weightsManifest, in that order."""
    model: dict[str, Any] = {
        "format": FORMAT,
        "generatedBy": generated_by,
        "convertedBy": converted_by,
        "modelTopology": dict(topology),
    }
    if training_config is not None:
        model["trainingConfig"] = dict(training_config)
    if user_metadata:
        model["userDefinedMetadata"] = dict(user_metadata)
    model["weightsManifest"] = manifest
    return model
