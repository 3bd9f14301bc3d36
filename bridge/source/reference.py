"""The reference: the PyTorch model run eagerly on the sample inputs, with its outputs named and checked."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bridge.errors import BridgeError, CaptureError, UsageError
from bridge.source.inputs import InputSpec

STAGE = "reference"


def to_torch_inputs(sample: Mapping[str, np.ndarray], specs: Sequence[InputSpec]) -> tuple[Any, ...]:
    """The sample as torch tensors in forward() order."""
    import torch

    return tuple(torch.from_numpy(np.ascontiguousarray(sample[s.name])) for s in specs)


def run_reference(module: Any, samples: Sequence[Mapping[str, np.ndarray]], specs: Sequence[InputSpec],
                  output_names: Sequence[str] = ()) -> tuple[list[str], list[dict[str, np.ndarray]]]:
    """Run `module` on every sample; return the output names and one {name: array} per sample."""
    import torch

    results: list[dict[str, np.ndarray]] = []
    names: list[str] = []
    for sample in samples:
        with torch.no_grad():
            try:
                raw = module(*to_torch_inputs(sample, specs))
            except BridgeError:  # a time limit reached inside forward
                raise
            except Exception as exc:  # the user's forward: show what it raised
                raise CaptureError(f"the model's forward raised {type(exc).__name__}: {exc}", stage=STAGE,
                                   hint="check the --input shapes and dtypes against what forward() expects") from exc
        flat_names, arrays = flatten_outputs(raw)
        names = _choose_names(flat_names, output_names)
        results.append(dict(zip(names, arrays)))
    return names, results


def flatten_outputs(raw: Any) -> tuple[list[str], list[np.ndarray]]:
    """A tensor, a tuple/list of tensors or a dict of tensors, as (default names, numpy arrays)."""
    import torch

    if isinstance(raw, torch.Tensor):
        return ["output_0"], [_to_numpy(raw)]
    if isinstance(raw, (tuple, list)) and raw and all(isinstance(t, torch.Tensor) for t in raw):
        return [f"output_{i}" for i in range(len(raw))], [_to_numpy(t) for t in raw]
    if isinstance(raw, dict) and raw and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                            for k, v in raw.items()):
        return list(raw), [_to_numpy(v) for v in raw.values()]
    raise CaptureError(f"the model returned {_describe(raw)}; bridge needs a tensor, a flat tuple/list of tensors "
                       "or a flat dict of tensors", stage=STAGE,
                       hint="wrap the model in a module whose forward returns flat tensors")


def _to_numpy(tensor: Any) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def _choose_names(defaults: list[str], requested: Sequence[str]) -> list[str]:
    if not requested:
        return defaults
    if len(requested) != len(defaults):
        raise UsageError(f"{len(requested)} --output name(s) given but the model returns {len(defaults)} output(s)",
                         stage=STAGE, hint="give one --output per returned tensor, or none")
    return list(requested)


def _describe(raw: Any) -> str:
    if isinstance(raw, (tuple, list)):
        inner = ", ".join(type(v).__name__ for v in raw[:4])
        return f"a {type(raw).__name__} of ({inner}{', ...' if len(raw) > 4 else ''})"
    if isinstance(raw, dict):
        return f"a dict with values ({', '.join(type(v).__name__ for v in list(raw.values())[:4])})"
    return f"a {type(raw).__name__}"
