"""The uniform value every input-format reader produces: a `TfSource`.

A source knows its inputs and outputs, runs itself in TensorFlow / Keras as the parity reference, and hands the
writers what they consume: the optimized graph (`optimized_graph`, for ``tfjs_graph_model``) or the Keras model
(`keras_model`, for ``tfjs_layers_model``). Temporary folders a reader needed (a re-saved SavedModel) live as long
as the source: use it as a context manager or call `close`.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bridge.errors import UsageError

STAGE = "tfjs-read"
INPUT_FORMATS: tuple[str, ...] = ("tf_saved_model", "tf_frozen_model", "tf_hub", "keras", "keras_keras",
                                  "keras_saved_model", "tfjs_layers_model")
KERAS_FORMATS = frozenset({"keras", "keras_keras", "keras_saved_model", "keras_model"})
GRAPH_MODEL = "tfjs_graph_model"
LAYERS_MODEL = "tfjs_layers_model"
OUTPUT_FORMATS: tuple[str, ...] = (GRAPH_MODEL, LAYERS_MODEL)

Reference = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]
GraphFactory = Callable[["TfSource", bool, bool], Any]


@dataclass(frozen=True)
class PortSpec:
    """One input or output: its key (signature key, Keras input/output name or graph node name), numpy dtype
    name, and shape (None for an unknown size; the whole shape None for an unknown rank)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...] | None

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data."""
        return {"name": self.name, "dtype": self.dtype,
                "shape": None if self.shape is None else list(self.shape)}


@dataclass
class TfSource:
    """A model read from disk (or memory), ready for either writer and for parity checks.

    `reference(inputs)` maps input names to arrays and returns outputs by name, computed in TensorFlow / Keras.
    The graph route is `graph_factory(source, control_flow_v2, strip_debug_ops)` (the source is passed so a
    factory can keep temporary folders on it); `keras_model` is set for Keras inputs
    (and for TF.js layers models, rebuilt in tf_keras).
    """

    path: Path | None
    input_format: str
    inputs: tuple[PortSpec, ...]
    outputs: tuple[PortSpec, ...]
    reference: Reference
    generated_by: str
    graph_factory: GraphFactory
    keras_model: Any | None = None
    notes: list[str] = field(default_factory=list)
    _temp_dirs: list[Path] = field(default_factory=list, repr=False)

    @property
    def default_output_format(self) -> str:
        """What the official converter writes for this input: a layers model for Keras inputs, else a graph
        model."""
        return LAYERS_MODEL if self.input_format in KERAS_FORMATS else GRAPH_MODEL

    def optimized_graph(self, *, control_flow_v2: bool = False, strip_debug_ops: bool = True) -> Any:
        """The source as an optimized GraphDef for the graph-model writer (`bridge.tfjs.optimize.OptimizedGraph`)."""
        return self.graph_factory(self, control_flow_v2, strip_debug_ops)

    def temp_dir(self, prefix: str) -> Path:
        """A temporary folder removed by `close`."""
        folder = Path(tempfile.mkdtemp(prefix=f"bridge-{prefix}-"))
        self._temp_dirs.append(folder)
        return folder

    def close(self) -> None:
        """Remove the temporary folders this source made."""
        while self._temp_dirs:
            shutil.rmtree(self._temp_dirs.pop(), ignore_errors=True)

    def __enter__(self) -> TfSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_inputs(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """`inputs` checked against the input specs (names, rank, fixed sizes) and cast to their dtypes."""
        known = {spec.name: spec for spec in self.inputs}
        unknown = sorted(set(inputs) - set(known))
        missing = [name for name in known if name not in inputs]
        if unknown or missing:
            raise UsageError(f"inputs do not match the model: unknown {unknown}, missing {missing}", stage=STAGE,
                             hint=f"the model's inputs are: {', '.join(known)}")
        checked = {}
        for name, spec in known.items():
            array = np.asarray(inputs[name])
            if spec.shape is not None and (array.ndim != len(spec.shape) or any(
                    d is not None and d != a for d, a in zip(spec.shape, array.shape))):
                raise UsageError(f"input {name!r} has shape {list(array.shape)}, the model wants "
                                 f"{list(spec.shape)}", stage=STAGE)
            checked[name] = array.astype(spec.dtype, copy=False)
        return checked


def dtype_name(dtype: Any) -> str:
    """The numpy dtype name of a TF / Keras / numpy dtype (``float32``, ``int32``, ...)."""
    import tensorflow as tf

    return np.dtype(tf.as_dtype(dtype).as_numpy_dtype).name


def shape_tuple(shape: Any) -> tuple[int | None, ...] | None:
    """A TF / Keras shape as a tuple (None for unknown sizes), or None for an unknown rank."""
    import tensorflow as tf

    shape = tf.TensorShape(shape)
    return None if shape.rank is None else tuple(shape.as_list())
