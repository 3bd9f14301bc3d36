"""What every stage of one conversion can see: the model, its inputs, the samples, the reference, the options."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bridge.inputs import InputSpec
from bridge.interface import Port
from bridge.options import ConvertOptions
from bridge.parity import DEFAULT_TOLERANCE, Tolerance
from bridge.progress import Progress


@dataclass
class ConversionContext:
    """Shared state of one run. Stages read it and add what they produce (ports, artifacts)."""

    module: Any | None
    onnx_source: Path | None
    specs: list[InputSpec]
    samples: list[dict[str, np.ndarray]]
    output_names: list[str]
    reference: list[dict[str, np.ndarray]]
    options: ConvertOptions
    staging: Path
    progress: Progress
    input_ports: list[Port] = field(default_factory=list)
    output_ports: list[Port] = field(default_factory=list)
    quantization_step: float = 0.0  # largest relative step of any quantized weight; 0 when not quantized
    quantized_weights: int = 0
    notes: list[str] = field(default_factory=list)  # things the report should say (fallbacks, skipped extras)

    def tolerance(self, stage: str) -> Tolerance:
        """The tolerance of `stage`: the user's, else the default, widened for quantized web stages.

        Quantization widening: each quantized weight is off by at most s·max|w| (s = the largest relative half-step,
        2^-11 for float16, about 1/510 for uint8); errors of n quantized tensors add roughly like a random walk, so
        the web stages allow rtol + 4·s·sqrt(n) and atol + 4·s·sqrt(n)·rms(reference).
        """
        base = Tolerance(self.options.atol if self.options.atol is not None else DEFAULT_TOLERANCE.atol,
                         self.options.rtol if self.options.rtol is not None else DEFAULT_TOLERANCE.rtol)
        if not stage.startswith("tfjs") or self.quantization_step == 0.0:
            return base
        widen = 4.0 * self.quantization_step * max(1.0, float(np.sqrt(self.quantized_weights)))
        return Tolerance(base.atol + widen * self._reference_rms(), base.rtol + widen)

    def _reference_rms(self) -> float:
        values = [np.asarray(v, dtype=np.float64).ravel() for r in self.reference for v in r.values()]
        joined = np.concatenate(values) if values else np.zeros(1)
        finite = joined[np.isfinite(joined)]
        return float(np.sqrt(np.mean(finite * finite))) if finite.size else 0.0
