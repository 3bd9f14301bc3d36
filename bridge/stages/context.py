"""What every stage of one run reads (`RunInputs`, fixed for the whole run), what one stage sees when it runs
(`StageEnv`: the run, the artifacts so far, its tolerance), and the tolerance policy."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bridge.options import ConvertOptions
from bridge.parity.metrics import DEFAULT_TOLERANCE, Tolerance, compare_outputs
from bridge.source.inputs import InputSpec
from bridge.source.ports import Interface
from bridge.stages.artifacts import Artifact, Artifacts
from bridge.stages.result import StageResult, Status, worst_status
from bridge.util.progress import Progress


ONNX_REFERENCES = ("onnxruntime", "onnxruntime (model.onnx)")


@dataclass(frozen=True)
class RunInputs:
    """The inputs of one run, read by every stage and changed by none.

    `samples` and `reference` are in PyTorch's layout; `folder` is where producing stages write (the staging
    folder of a conversion) or the output folder being re-checked. `reference_kind` says what the reference is:
    ``pytorch``, ``onnxruntime`` (a given .onnx file) or a sample-inputs file.
    """

    specs: tuple[InputSpec, ...]
    samples: tuple[Mapping[str, np.ndarray], ...]
    reference: tuple[Mapping[str, np.ndarray], ...]
    output_names: tuple[str, ...]
    options: ConvertOptions
    folder: Path
    progress: Progress
    reference_kind: str = "pytorch"
    onnx_source: Path | None = None
    web_model_dir: str = "web_model"  # where the web model goes inside `folder` ("." for `bridge tfjs`)
    layers_model_dir: str = "layers_model"

    @property
    def web_model_path(self) -> Path:
        """The graph model's folder."""
        return self.folder / self.web_model_dir

    @property
    def layers_model_path(self) -> Path:
        """The layers model's folder."""
        return self.folder / self.layers_model_dir

    @property
    def onnx_is_reference(self) -> bool:
        """True when the reference outputs come from onnxruntime (a given .onnx file, or `bridge parity` with new
        sample inputs and no reference outputs): the `onnx` stage would compare onnxruntime with itself."""
        return self.reference_kind in ONNX_REFERENCES

    def base_tolerance(self) -> Tolerance:
        """The user's tolerance, else the default."""
        return Tolerance(self.options.atol if self.options.atol is not None else DEFAULT_TOLERANCE.atol,
                         self.options.rtol if self.options.rtol is not None else DEFAULT_TOLERANCE.rtol)

    def reference_rms(self) -> float:
        """The root-mean-square of every finite reference value (the scale of the absolute widening)."""
        values = [np.asarray(v, dtype=np.float64).ravel() for r in self.reference for v in r.values()]
        joined = np.concatenate(values) if values else np.zeros(1)
        finite = joined[np.isfinite(joined)]
        return float(np.sqrt(np.mean(finite * finite))) if finite.size else 0.0


class TolerancePolicy(str, enum.Enum):
    """How a stage's tolerance is derived."""

    REFERENCE = "reference"  # the user's (or default) tolerance against the reference
    WEB = "web"  # the same, widened by the web model's weight quantization
    EXACT = "exact"  # bit-identical to another result (a storage round trip)


def stage_tolerance(policy: TolerancePolicy, run: RunInputs, artifacts: Artifacts,
                    judges: tuple[Artifact, ...] = (Artifact.WEB_MODEL,)) -> Tolerance:
    """The tolerance of a stage under `policy`.

    Quantization widening: each quantized weight is off by at most s·max|w| (s = the largest relative half-step,
    2^-11 for float16, 1/255 for uint8); errors of n quantized tensors add roughly like a random walk, so the web
    stages allow rtol + 4·s·sqrt(n) and atol + 4·s·sqrt(n)·rms(reference).
    """
    if policy is TolerancePolicy.EXACT:
        return Tolerance(0.0, 0.0)
    base = run.base_tolerance()
    web = artifacts.layers_model if Artifact.LAYERS_MODEL in judges else artifacts.web_model
    if policy is TolerancePolicy.REFERENCE or web is None or not web.quantization.count:
        return base
    widen = web.quantization.widening()
    return Tolerance(base.atol + widen * run.reference_rms(), base.rtol + widen)


@dataclass(frozen=True)
class StageEnv:
    """What one stage sees: its name, the run's inputs, the artifacts made before it, its tolerance, and the backend
    (or storage round trip) it is about."""

    name: str
    run: RunInputs
    artifacts: Artifacts
    tolerance: Tolerance
    backend: str | None = None
    store: str | None = None
    judges_layers: bool = False  # the stage judges the layers model, whose own ports may differ from the graph's

    @property
    def interface(self) -> Interface:
        """The interface of what this stage judges: the layers model's own ports for a layers stage, else the
        route's (a stage that judges outputs always runs after the route set it)."""
        layers = self.artifacts.layers_model
        if self.judges_layers and layers is not None and layers.interface is not None:
            return layers.interface
        assert self.artifacts.interface is not None, "a stage that needs the interface ran before the route"
        return self.artifacts.interface

    def web_inputs(self) -> list[dict[str, np.ndarray]]:
        """The sample inputs in the web model's layout and dtypes."""
        return self.interface.web_inputs(self.run.samples)

    def web_reference(self) -> list[dict[str, np.ndarray]]:
        """The reference outputs in the web model's layout and dtypes."""
        return self.interface.web_outputs(self.run.reference)

    def judge(self, actual: Sequence[Mapping[str, np.ndarray]], *, expected: Sequence[Mapping[str, np.ndarray]]
              | None = None, detail: str = "", **extra: Any) -> StageResult:
        """This stage's result from its outputs (extra outputs ignored) against the reference in the web layout (or
        `expected`), under its tolerance."""
        wanted = self.web_reference() if expected is None else list(expected)
        outputs = compare_outputs(actual, wanted, self.tolerance)
        return StageResult(self.name, worst_status([o.status for o in outputs]), detail=detail, outputs=outputs,
                           extra=dict(extra))

    def failed(self, reason: str, detail: str = "", **extra: Any) -> StageResult:
        """This stage failed without comparable outputs (a runtime error)."""
        return StageResult(self.name, Status.FAIL, reason=reason, detail=detail, extra=dict(extra))
