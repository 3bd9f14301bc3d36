"""Tensors passed between Python and a TF.js runtime: dtype rules and a packed binary file format.

A *pack* is one binary file holding tensors back to back (each starting at an 8-byte aligned offset, raw
little-endian C-order bytes) plus, elsewhere (in a JSON request or summary), one `TensorRef` per tensor giving its
dtype, shape, offset and byte length. `string` tensors are stored like TF.js string weights: for each element a
uint32 LE byte length, then the bytes. The Node runner (bridge/js/tfjs_runner.mjs) reads and writes the same format.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from bridge.errors import UsageError

STAGE = "tfjs-node"

# TF.js dtype name -> numpy dtype of its bytes (little-endian).
JS_NUMPY_DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype("<f4"),
    "int32": np.dtype("<i4"),
    "bool": np.dtype("bool"),
    "complex64": np.dtype("<c8"),
}

# TensorFlow DataType enum names (as in model.json) -> TF.js dtype.
TF_TO_JS_DTYPE: dict[str, str] = {
    "DT_FLOAT": "float32", "DT_HALF": "float32", "DT_DOUBLE": "float32", "DT_BFLOAT16": "float32",
    "DT_INT32": "int32", "DT_INT64": "int32", "DT_INT16": "int32", "DT_INT8": "int32", "DT_UINT8": "int32",
    "DT_UINT16": "int32", "DT_BOOL": "bool", "DT_STRING": "string", "DT_COMPLEX64": "complex64",
    "DT_COMPLEX128": "complex64",
}

_INT32 = np.iinfo(np.int32)
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor lives inside a pack file."""

    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int

    def to_json(self) -> dict[str, object]:
        """The ref as plain JSON data."""
        return {"dtype": self.dtype, "shape": list(self.shape), "offset": self.offset, "nbytes": self.nbytes}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TensorRef:
        """Parses a ref written by `to_json` or by the Node runner."""
        return cls(dtype=str(data["dtype"]), shape=tuple(int(d) for d in data["shape"]),
                   offset=int(data["offset"]), nbytes=int(data["nbytes"]))


def to_js_array(array: np.ndarray, name: str) -> np.ndarray:
    """Casts `array` to the dtype TF.js uses for it, refusing casts that would change values.

    int64 and the small int types become int32 (an error if a value does not fit), float64 and float16 become float32
    (an error if a finite value overflows), bool stays bool. Other dtypes raise `UsageError`.
    """
    array = np.asarray(array)
    kind = array.dtype.kind
    if array.dtype == np.bool_ or array.dtype in (np.float32, np.int32):
        return np.ascontiguousarray(array)
    if kind in "iu":
        if array.size and (array.min() < _INT32.min or array.max() > _INT32.max):
            raise UsageError(f"input '{name}' ({array.dtype}) has values outside int32, which TF.js cannot hold",
                             stage=STAGE, hint="TF.js has no int64: keep integer inputs within int32 range")
        return np.ascontiguousarray(array.astype(np.int32))
    if kind == "f":
        finite = np.isfinite(array)
        if array.size and np.any(np.abs(array[finite]) > _FLOAT32_MAX):
            raise UsageError(f"input '{name}' ({array.dtype}) has values beyond float32 range",
                             stage=STAGE, hint="TF.js has no float64: scale the input into float32 range")
        return np.ascontiguousarray(array.astype(np.float32))
    raise UsageError(f"input '{name}' has dtype {array.dtype}, which TF.js inputs do not support",
                     stage=STAGE, hint="pass float32, int32 (or int64 within range) or bool arrays")


def js_dtype_name(array: np.ndarray) -> str:
    """The TF.js dtype name of an array already passed through `to_js_array`."""
    for name, dtype in JS_NUMPY_DTYPES.items():
        if array.dtype == dtype:
            return name
    raise UsageError(f"dtype {array.dtype} has no TF.js equivalent", stage=STAGE)


class PackWriter:
    """Appends arrays to an open binary file and returns their refs."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._offset = 0

    def add(self, array: np.ndarray) -> TensorRef:
        """Writes one array (already a TF.js dtype) at the next 8-byte boundary."""
        pad = (-self._offset) % 8
        if pad:
            self._stream.write(b"\0" * pad)
            self._offset += pad
        dtype = js_dtype_name(array)
        data = np.ascontiguousarray(array, dtype=JS_NUMPY_DTYPES[dtype]).tobytes()
        ref = TensorRef(dtype=dtype, shape=tuple(int(d) for d in array.shape), offset=self._offset, nbytes=len(data))
        self._stream.write(data)
        self._offset += len(data)
        return ref


@contextmanager
def pack_writer(path: Path) -> Iterator[PackWriter]:
    """Opens `path` for writing a pack."""
    with open(path, "wb") as stream:
        yield PackWriter(stream)


def _decode_strings(raw: bytes, count: int) -> np.ndarray:
    values: list[bytes] = []
    pos = 0
    for _ in range(count):
        length = int.from_bytes(raw[pos:pos + 4], "little")
        values.append(raw[pos + 4:pos + 4 + length])
        pos += 4 + length
    return np.array(values, dtype=object)


def read_tensor(blob: bytes, ref: TensorRef) -> np.ndarray:
    """Reads one tensor out of a pack's bytes as a fresh numpy array (strings as an object array of bytes)."""
    if ref.offset + ref.nbytes > len(blob):
        raise ValueError(f"tensor ref {ref} runs past the end of the pack ({len(blob)} bytes)")
    count = int(np.prod(ref.shape, dtype=np.int64))
    if ref.dtype == "string":
        return _decode_strings(blob[ref.offset:ref.offset + ref.nbytes], count).reshape(ref.shape)
    dtype = JS_NUMPY_DTYPES.get(ref.dtype)
    if dtype is None:
        raise ValueError(f"unknown TF.js dtype '{ref.dtype}' in pack")
    return np.frombuffer(blob, dtype=dtype, count=count, offset=ref.offset).reshape(ref.shape).copy()
