"""The web model's interface: each input and output with its PyTorch shape, its web shape and the permutation
between them (image inputs are NHWC in the web model by default; PyTorch is NCHW)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# TF.js has no int64, float64 or float16: these cross the web boundary as the narrower type. The one map every
# route uses (ONNX route serving signatures, native generated signatures, parity inputs).
WEB_DTYPES = {"int64": "int32", "float64": "float32", "float16": "float32"}


def web_dtype(dtype: object) -> str:
    """The dtype name the web model's interface uses for `dtype` (a numpy/TF dtype or its name)."""
    try:
        name = str(np.dtype(getattr(dtype, "as_numpy_dtype", dtype)).name)
    except TypeError:  # a name numpy does not know (e.g. bfloat16 without ml_dtypes): keep it as given
        name = str(dtype)
    return WEB_DTYPES.get(name, name)


@dataclass(frozen=True)
class Port:
    """One input or output of the converted model."""

    name: str
    torch_shape: tuple[int | None, ...]
    dtype: str
    layout: str  # "nhwc", "nchw" or "source" (PyTorch's own order)
    perm: tuple[int, ...] | None = None  # takes the PyTorch tensor to the web tensor; None = identity

    @property
    def web_shape(self) -> tuple[int | None, ...]:
        """The shape in the web model."""
        return self.torch_shape if self.perm is None else tuple(self.torch_shape[i] for i in self.perm)

    @property
    def web_dtype(self) -> str:
        """The dtype in TF and TF.js."""
        return web_dtype(self.dtype)

    def to_web(self, array: np.ndarray) -> np.ndarray:
        """A PyTorch-side array in the web model's layout and dtype."""
        moved = array if self.perm is None else np.transpose(array, self.perm)
        return np.ascontiguousarray(moved).astype(self.web_dtype, copy=False)

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


def port_from_io(info: object, torch_dtype: str | None) -> Port:
    """A Port from a route's IO info (`name`, TF-side `shape`, `dtype`, `layout`, `perm_from_torch`)."""
    perm = tuple(info.perm_from_torch) if info.perm_from_torch is not None else None  # type: ignore[attr-defined]
    if perm is not None and perm == tuple(range(len(perm))):
        perm = None
    shape = tuple(info.shape)  # type: ignore[attr-defined]
    torch_shape = shape if perm is None else tuple(shape[perm.index(i)] for i in range(len(perm)))
    return Port(name=info.name, torch_shape=torch_shape, dtype=torch_dtype or str(info.dtype),  # type: ignore[attr-defined]
                layout=info.layout, perm=perm)  # type: ignore[attr-defined]


def to_web_samples(samples: Sequence[Mapping[str, np.ndarray]], ports: Sequence[Port]) -> list[dict[str, np.ndarray]]:
    """Every sample (inputs or reference outputs) moved into the web model's layout and dtypes."""
    return [{p.name: p.to_web(sample[p.name]) for p in ports} for sample in samples]


def image_perm(rank: int, layout: str) -> tuple[int, ...] | None:
    """The permutation for an input of `rank` under `layout`: NCHW->NHWC for 4-D with layout nhwc, else None."""
    if rank == 4 and layout == "nhwc":
        return (0, 2, 3, 1)
    return None
