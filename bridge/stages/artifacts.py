"""What stages produce and read: the artifacts of one run, as one immutable value handed from stage to stage.

A producing stage returns a new `Artifacts` (`Artifacts.with_`); nothing is written into shared state. The web
model carries its quantization figures, so the stages that judge it widen their tolerance from data, not from a
side effect of the stage that wrote it.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bridge.source.ports import Interface


class Artifact(str, enum.Enum):
    """A kind of thing a stage may need, produce or judge."""

    MODULE = "PyTorch module"
    TF_SOURCE = "TF or Keras source model"
    ONNX = "ONNX file"
    TF_MODEL = "TF model in memory"
    SAVED_MODEL = "SavedModel"
    WEB_MODEL = "web model"
    LAYERS_MODEL = "layers model"


# The largest error of a quantized weight relative to its largest magnitude: half a float16 ulp, or half an affine
# step (scale = range / qmax, and the range is at most twice the largest magnitude).
RELATIVE_QUANTIZATION_ERROR = {"float16": 2.0 ** -11, "uint16": 1.0 / 65535, "uint8": 1.0 / 255}


@dataclass(frozen=True)
class Quantization:
    """How coarsely a web model's weights were stored: the largest relative step and how many weights it hit."""

    step: float = 0.0
    count: int = 0

    @classmethod
    def of_model_json(cls, model_json: Mapping[str, Any]) -> "Quantization":
        """The figures of a model.json's weights manifest (what the runtimes will read, however it was written)."""
        dtypes = [str(w["quantization"].get("dtype")) for group in model_json.get("weightsManifest") or []
                  for w in group.get("weights") or [] if isinstance(w, Mapping) and w.get("quantization")]
        steps = [RELATIVE_QUANTIZATION_ERROR.get(d, 1.0 / 255) for d in dtypes]
        return cls(max(steps), len(steps)) if steps else cls()

    def widening(self) -> float:
        """The relative widening of the tolerance: 4·s·√n (errors of n quantized tensors add like a random walk)."""
        return 4.0 * self.step * max(1.0, float(np.sqrt(self.count))) if self.count else 0.0


@dataclass(frozen=True)
class WebModel:
    """A written TF.js model folder (a graph model or a layers model) and the quantization of its weights."""

    path: Path
    quantization: Quantization = Quantization()
    interface: Interface | None = None  # the ports recorded in its model.json (bridge's metadata), if any

    @classmethod
    def read(cls, path: Path) -> "WebModel":
        """The web model in `path` (its quantization and interface read from model.json)."""
        from bridge.errors import WebModelError
        from bridge.source.ports import interface_from_model_json

        try:
            model_json = json.loads((Path(path) / "model.json").read_text())
        except (OSError, ValueError):
            model_json = {}  # the stage judging it reports what is wrong with it
        try:
            interface = interface_from_model_json(model_json, "web-model")
        except WebModelError:
            interface = None
        return cls(Path(path), Quantization.of_model_json(model_json), interface)


@dataclass(frozen=True)
class TfModel:
    """A TF model held in memory: web-layout arrays in, web-layout outputs by name out."""

    run: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]
    detail: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Artifacts:
    """Everything a run has at one point: the model given, what the stages made so far, and why something is absent."""

    route: str | None = None
    module: Any = None
    tf_source: Any = None  # a bridge.tfjs.sources.TfSource (`bridge tfjs`)
    onnx: Path | None = None
    tf_model: TfModel | None = None
    saved_model: Path | None = None
    web_model: WebModel | None = None
    layers_model: WebModel | None = None
    interface: Interface | None = None
    absent: Mapping[Artifact, str] = field(default_factory=dict)  # why an artifact is missing, for skip reasons

    def get(self, artifact: Artifact) -> Any:
        """The artifact's value, or None."""
        return {Artifact.MODULE: self.module, Artifact.TF_SOURCE: self.tf_source, Artifact.ONNX: self.onnx,
                Artifact.TF_MODEL: self.tf_model, Artifact.SAVED_MODEL: self.saved_model,
                Artifact.WEB_MODEL: self.web_model, Artifact.LAYERS_MODEL: self.layers_model}[artifact]

    def missing(self, artifacts: tuple[Artifact, ...]) -> str | None:
        """Why one of `artifacts` is absent (the first one missing), or None when all are there."""
        for artifact in artifacts:
            if self.get(artifact) is None:
                return self.absent.get(artifact, f"there is no {artifact.value}")
        return None

    def with_(self, **changes: Any) -> "Artifacts":
        """A copy with some artifacts added or replaced."""
        return replace(self, **changes)


@dataclass(frozen=True)
class Produced:
    """What a producing stage made: the artifacts from then on, and what its result line and the report say."""

    artifacts: Artifacts
    detail: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
