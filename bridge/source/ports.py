"""The model's interface: each input and output as a `Port`, the one type every route, stage, report and the web
model's metadata use. A port knows the PyTorch shape and dtype, the web model's (TF, TF.js) shape and dtype, its
layout and the permutation between the two (image inputs are NHWC in the web model by default; PyTorch is NCHW)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bridge.errors import WebModelError

# TF.js has no int64, float64 or float16: these cross the web boundary as the narrower type. The one map every
# route uses (ONNX route serving signatures, native generated signatures, parity inputs).
WEB_DTYPES = {"int64": "int32", "float64": "float32", "float16": "float32"}

Shape = tuple[int | None, ...]


def web_dtype(dtype: object) -> str:
    """The dtype name the web model's interface uses for `dtype` (a numpy/TF dtype or its name)."""
    try:
        name = str(np.dtype(getattr(dtype, "as_numpy_dtype", dtype)).name)
    except TypeError:  # a name numpy does not know (e.g. bfloat16 without ml_dtypes): keep it as given
        name = str(dtype)
    return WEB_DTYPES.get(name, name)


def inverse_perm(perm: Sequence[int]) -> tuple[int, ...]:
    """The permutation that undoes `perm`."""
    inverse = [0] * len(perm)
    for position, axis in enumerate(perm):
        inverse[axis] = position
    return tuple(inverse)


@dataclass(frozen=True)
class Port:
    """One input or output of the converted model.

    `dtype` is the PyTorch-side dtype (``int64`` token ids); `web_dtype` is what TF and TF.js hold. `perm` takes the
    PyTorch tensor to the web tensor (``web = torch.transpose(perm)``); None when the axis order is the same.
    """

    name: str
    torch_shape: Shape
    dtype: str
    layout: str  # "nhwc", "nchw" or "source" (PyTorch's own order)
    perm: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.perm is not None and tuple(self.perm) == tuple(range(len(self.perm))):
            object.__setattr__(self, "perm", None)

    @classmethod
    def from_web_shape(cls, name: str, web_shape: Sequence[int | None], dtype: str, layout: str,
                       perm: Sequence[int] | None) -> "Port":
        """A port described from the web side: its shape in the web model and the permutation from PyTorch."""
        shape = tuple(web_shape)
        torch_shape = shape if perm is None else tuple(shape[i] for i in inverse_perm(perm))
        return cls(name, torch_shape, str(dtype), layout, tuple(perm) if perm is not None else None)

    @property
    def web_shape(self) -> Shape:
        """The shape in the web model."""
        return self.torch_shape if self.perm is None else tuple(self.torch_shape[i] for i in self.perm)

    @property
    def web_dtype(self) -> str:
        """The dtype in TF and TF.js."""
        return web_dtype(self.dtype)

    def move_to_web(self, array: np.ndarray) -> np.ndarray:
        """A PyTorch-side array in the web model's axis order (its dtype unchanged)."""
        value = np.asarray(array)
        return value if self.perm is None else np.ascontiguousarray(np.transpose(value, self.perm))

    def to_web(self, array: np.ndarray) -> np.ndarray:
        """A PyTorch-side array in the web model's layout and dtype."""
        return np.ascontiguousarray(self.move_to_web(array)).astype(self.web_dtype, copy=False)

    def to_torch(self, array: np.ndarray) -> np.ndarray:
        """A web-layout array back in PyTorch's axis order (its dtype unchanged)."""
        value = np.asarray(array)
        return value if self.perm is None else np.ascontiguousarray(np.transpose(value, inverse_perm(self.perm)))

    def describe(self) -> dict[str, object]:
        """Plain data for reports."""
        return {"name": self.name, "shape": list(self.torch_shape), "web_shape": list(self.web_shape),
                "dtype": self.web_dtype, "torch_dtype": self.dtype, "layout": self.layout,
                "perm_from_torch": list(self.perm) if self.perm is not None else None}

    def metadata(self) -> dict[str, object]:
        """The same facts for model.json's userDefinedMetadata.bridge (camelCase, like the rest of model.json)."""
        return {"name": self.name, "shape": list(self.web_shape), "dtype": self.web_dtype, "layout": self.layout,
                "torchShape": list(self.torch_shape), "torchDtype": self.dtype,
                "permFromTorch": list(self.perm) if self.perm is not None else None}

    @classmethod
    def from_metadata(cls, entry: Mapping[str, Any]) -> "Port":
        """A port from its `metadata()` form (model.json) or its stored parity-data form."""
        perm = entry.get("permFromTorch", entry.get("perm"))
        shape = entry.get("torchShape", entry.get("torch_shape", entry.get("shape")))
        dtype = entry.get("torchDtype", entry.get("dtype", "float32"))
        return cls(name=str(entry["name"]), torch_shape=tuple(shape), dtype=str(dtype),
                   layout=str(entry.get("layout", "source")), perm=tuple(perm) if perm else None)


@dataclass(frozen=True)
class Interface:
    """A model's inputs and outputs, in the user's order."""

    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]

    def web_inputs(self, samples: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """Sample inputs (PyTorch layout) in the web model's layout and dtypes."""
        return to_web_samples(samples, self.inputs)

    def web_outputs(self, results: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """Outputs (PyTorch layout) in the web model's layout and dtypes."""
        return to_web_samples(results, self.outputs)

    def named(self, results: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """Each result cut to the model's outputs, in their order (a runtime may return more, or fewer)."""
        return [{p.name: r[p.name] for p in self.outputs if p.name in r} for r in results]

    def metadata(self) -> dict[str, list[dict[str, object]]]:
        """The ports as model.json's userDefinedMetadata.bridge records them."""
        return {"inputs": [p.metadata() for p in self.inputs], "outputs": [p.metadata() for p in self.outputs]}


def to_web_samples(samples: Sequence[Mapping[str, np.ndarray]], ports: Sequence[Port]) -> list[dict[str, np.ndarray]]:
    """Every sample (inputs or reference outputs) moved into the web model's layout and dtypes."""
    return [{p.name: p.to_web(sample[p.name]) for p in ports} for sample in samples]


def interface_from_model_json(model_json: Mapping[str, Any], stage: str) -> Interface:
    """The interface bridge recorded in model.json's userDefinedMetadata.bridge (WebModelError when absent)."""
    meta = (model_json.get("userDefinedMetadata") or {}).get("bridge") or {}
    if not meta.get("inputs") or not meta.get("outputs"):
        raise WebModelError("model.json has no userDefinedMetadata.bridge inputs/outputs", stage=stage,
                            hint="convert the model with bridge, which records them")
    return Interface(tuple(Port.from_metadata(e) for e in meta["inputs"]),
                     tuple(Port.from_metadata(e) for e in meta["outputs"]))


def interface_from_signature(model_json: Mapping[str, Any]) -> Interface:
    """The interface read from model.json's signature alone (web model made elsewhere: layouts unknown)."""
    def ports(side: str) -> tuple[Port, ...]:
        found = []
        for key, info in ((model_json.get("signature") or {}).get(side) or {}).items():
            dims = tuple(int(d.get("size", -1)) for d in info.get("tensorShape", {}).get("dim", []))
            dtype = {"DT_INT32": "int32", "DT_BOOL": "bool"}.get(info.get("dtype", ""), "float32")
            found.append(Port(key, tuple(None if d < 0 else d for d in dims), dtype, "source"))
        return tuple(found)

    return Interface(ports("inputs"), ports("outputs"))


def image_perm(rank: int, layout: str) -> tuple[int, ...] | None:
    """The permutation for an input of `rank` under `layout`: NCHW->NHWC for 4-D with layout nhwc, else None."""
    if rank == 4 and layout == "nhwc":
        return (0, 2, 3, 1)
    return None
