"""PyTorch's side of the bisection: every module call's output on the sample inputs, recorded with forward hooks
(the module path, its class, the line of user code that called it)."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bridge.errors import ConversionError

STAGE = "bisect"
MAX_LAYER_SAMPLES = 3  # sample inputs compared per layer (alignment uses the first)

@dataclass
class LayerPoint:
    """One observable point of the PyTorch model: a module call (or a model output) and where it is in the code."""

    path: str  # module path ("features.4"); "#k" marks the k-th call of a reused module; "output:<name>" outputs
    kind: str  # module class name, or "output"
    source: str | None  # "file.py:19" of the user code that called the module
    shape: tuple[int, ...]
    params: int = 0
    aliases: list[str] = field(default_factory=list)  # modules whose output is this very tensor (a Sequential)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for report.json."""
        return {"path": self.path, "kind": self.kind, "source": self.source, "shape": list(self.shape),
                "params": self.params, "aliases": list(self.aliases)}


@dataclass
class TorchLayers:
    """Every point's output per sample input (PyTorch layout), points in the order their outputs were produced."""

    points: list[LayerPoint]
    values: list[list[np.ndarray]]  # values[i][s]: point i, sample s




def _first_tensor(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        return next((v for v in value if isinstance(v, torch.Tensor)), None)
    if isinstance(value, dict):
        return next((v for v in value.values() if isinstance(v, torch.Tensor)), None)
    return None


def _call_site() -> str | None:
    """The innermost frame of user code on the stack (not torch, not bridge): where the module was called."""
    import torch

    skip = (str(Path(torch.__file__).parent), str(Path(__file__).parents[1]))
    for frame in reversed(traceback.extract_stack()[:-2]):
        if not frame.filename.startswith(skip) and not frame.filename.startswith("<"):
            return f"{frame.filename}:{frame.lineno}"
    return None


class _Recorder:
    """Forward hooks that record each module call's output (first tensor) per sample."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.order: list[str] = []
        self.values: dict[str, np.ndarray] = {}
        self.meta: dict[str, tuple[str, str | None, int]] = {}
        self.first_sample = True

    def pre_hook(self, path: str, module: Any) -> Callable[..., None]:
        """A forward pre-hook noting the module's class, call site and parameter count (first sample only)."""

        def hook(_module: Any, _args: Any) -> None:
            if self.first_sample:
                count = self.calls.get(path, 0)
                key = path if count == 0 else f"{path}#{count + 1}"
                if key not in self.meta:
                    params = sum(int(p.numel()) for p in module.parameters(recurse=False))
                    self.meta[key] = (type(module).__name__, _call_site(), params)
        return hook

    def post_hook(self, path: str) -> Callable[..., None]:
        """A forward hook keeping the module call's first float output tensor."""

        def hook(_module: Any, _args: Any, output: Any) -> None:
            count = self.calls.get(path, 0)
            self.calls[path] = count + 1
            key = path if count == 0 else f"{path}#{count + 1}"
            tensor = _first_tensor(output)
            if tensor is None or not tensor.is_floating_point():
                return
            self.values[key] = tensor.detach().cpu().float().numpy().copy()
            if self.first_sample:
                self.order.append(key)
        return hook

    def next_sample(self) -> None:
        """Start counting calls afresh for the next sample input."""
        self.calls = {}
        self.first_sample = False


def capture_torch_layers(module: Any, samples: Sequence[Mapping[str, np.ndarray]], specs: Sequence[Any],
                         reference: Sequence[Mapping[str, np.ndarray]] = (),
                         max_samples: int = MAX_LAYER_SAMPLES) -> TorchLayers:
    """Run `module` on up to `max_samples` samples with hooks on every submodule; the model outputs (from
    `reference`, torch layout) are appended as points ``output:<name>``. Modules whose output is exactly the
    previous point's tensor (a Sequential and its last child) become aliases of that point."""
    import torch

    from bridge.source.reference import to_torch_inputs

    recorder = _Recorder()
    handles = []
    # TorchScript modules take no hooks: only the model outputs are points then.
    hookable = not isinstance(module, torch.jit.ScriptModule)
    for path, sub in module.named_modules() if hookable else ():
        if path:
            handles.append(sub.register_forward_pre_hook(recorder.pre_hook(path, sub)))
            handles.append(sub.register_forward_hook(recorder.post_hook(path)))
    per_sample: list[dict[str, np.ndarray]] = []
    try:
        for sample in list(samples)[:max_samples]:
            recorder.values = {}
            with torch.no_grad():
                module(*to_torch_inputs(sample, specs))
            per_sample.append(recorder.values)
            recorder.next_sample()
    except Exception as exc:  # the user's forward, with hooks on: report, do not crash the conversion
        raise ConversionError(f"running the model with layer hooks failed: {exc}", stage=STAGE) from exc
    finally:
        for handle in handles:
            handle.remove()
    return _layers_from(recorder, per_sample, list(reference)[:len(per_sample)])


def _layers_from(recorder: _Recorder, per_sample: list[dict[str, np.ndarray]],
                 reference: list[Mapping[str, np.ndarray]]) -> TorchLayers:
    points: list[LayerPoint] = []
    values: list[list[np.ndarray]] = []
    for key in recorder.order:
        if not all(key in s for s in per_sample):
            continue
        series = [s[key] for s in per_sample]
        kind, source, params = recorder.meta.get(key, ("Module", None, 0))
        if points and values[-1][0].shape == series[0].shape and np.array_equal(values[-1][0], series[0]):
            points[-1].aliases.append(key)
            continue
        points.append(LayerPoint(key, kind, source, tuple(series[0].shape), params))
        values.append(series)
    for name in reference[0] if reference else []:
        array = np.asarray(reference[0][name])
        if np.issubdtype(array.dtype, np.floating):
            points.append(LayerPoint(f"output:{name}", "output", None, tuple(array.shape)))
            values.append([np.asarray(r[name], dtype=np.float32) for r in reference])
    return TorchLayers(points, values)
