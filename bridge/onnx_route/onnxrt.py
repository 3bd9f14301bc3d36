"""Check an .onnx file and run it in onnxruntime (CPU execution provider)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Mapping

import numpy as np

from bridge.errors import BridgeError, ModelLoadError, UsageError

if TYPE_CHECKING:
    import onnx
    import onnxruntime

    from bridge.source.inputs import InputSpec

_STAGE = "onnx-check"


@dataclass(frozen=True)
class OnnxValueSpec:
    """A graph input or output as declared in the ONNX file: dims are ints, a symbol name (dynamic) or None."""

    name: str
    shape: tuple[int | str | None, ...] | None
    dtype: np.dtype

    @property
    def dynamic_axes(self) -> tuple[int, ...]:
        """Axes whose size is not fixed in the file."""
        return tuple(i for i, dim in enumerate(self.shape or ()) if not isinstance(dim, int))


def load_onnx_checked(path: Path | str, *, load_weights: bool = False) -> onnx.ModelProto:
    """Load `path` as ONNX after proving it is one (parses, has a graph and an opset, passes onnx.checker).

    Raises ModelLoadError with a clear message for a missing file, a file that is not ONNX, or an invalid model.
    Weights stored as external data are only read when `load_weights` is set.
    """
    import onnx  # noqa: PLC0415

    file = Path(path)
    if not file.is_file():
        raise ModelLoadError(f"ONNX file not found: {file}", stage=_STAGE, hint="check the path")
    try:
        model = onnx.load(str(file), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError, but also other errors on binary junk
        raise _not_onnx(file, f"it does not parse as an ONNX protobuf ({type(exc).__name__})") from exc
    if model.ir_version <= 0 or not model.opset_import or not model.HasField("graph") or not model.graph.output:
        raise _not_onnx(file, "it parses, but has no IR version, opset or graph outputs")
    try:
        onnx.checker.check_model(str(file))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"{file.name} is an ONNX file but fails onnx.checker: {first[:300]}",
            stage=_STAGE,
            hint="re-export the model; if it has external data, keep the .data file next to the .onnx file",
        ) from exc
    if load_weights:
        from onnx.external_data_helper import load_external_data_for_model  # noqa: PLC0415

        load_external_data_for_model(model, str(file.parent))
    return model


def _not_onnx(file: Path, why: str) -> ModelLoadError:
    return ModelLoadError(
        f"{file.name} is not an ONNX model: {why}",
        stage=_STAGE,
        hint="pass a .onnx file written by torch.onnx.export or another ONNX exporter",
    )


def _dims(value_info: onnx.ValueInfoProto) -> tuple[int | str | None, ...] | None:
    tensor_type = value_info.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    dims: list[int | str | None] = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return tuple(dims)


def io_specs(model: onnx.ModelProto) -> tuple[list[OnnxValueSpec], list[OnnxValueSpec]]:
    """The graph's real inputs (initializers excluded) and outputs, in file order."""
    from onnx import helper  # noqa: PLC0415

    initializers = {init.name for init in model.graph.initializer}

    def spec(value_info: onnx.ValueInfoProto) -> OnnxValueSpec:
        elem = value_info.type.tensor_type.elem_type
        return OnnxValueSpec(value_info.name, _dims(value_info), np.dtype(helper.tensor_dtype_to_np_dtype(elem)))

    inputs = [spec(v) for v in model.graph.input if v.name not in initializers]
    return inputs, [spec(v) for v in model.graph.output]


def input_specs_of(path: Path | str) -> list[InputSpec]:
    """The graph's inputs as bridge InputSpecs (None for a dynamic dim), for converting a given .onnx file."""
    from bridge.source.inputs import InputSpec  # noqa: PLC0415

    inputs, _ = io_specs(load_onnx_checked(path))
    unknown_rank = [i.name for i in inputs if i.shape is None]
    if unknown_rank:
        raise UsageError(f"ONNX input(s) {', '.join(unknown_rank)} have no declared shape", stage=_STAGE,
                         hint="pass --input NAME:SHAPE for each input")
    return [InputSpec(name=i.name, shape=tuple(d if isinstance(d, int) else None for d in i.shape or ()),
                      dtype=i.dtype.name) for i in inputs]


def external_data_files(path: Path | str) -> list[Path]:
    """The external data files an .onnx file refers to (empty for a self-contained file)."""
    import onnx  # noqa: PLC0415

    file = Path(path)
    model = onnx.load(str(file), load_external_data=False)
    locations: list[Path] = []
    for tensor in _graph_tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        for entry in tensor.external_data:
            if entry.key == "location" and (file.parent / entry.value) not in locations:
                locations.append(file.parent / entry.value)
    return locations


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor stored in a graph: initializers and tensor attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _graph_tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _graph_tensors(subgraph)


def make_session(path: Path | str) -> onnxruntime.InferenceSession:
    """An onnxruntime session on the CPU execution provider, with warnings off."""
    import onnxruntime as ort  # noqa: PLC0415

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise BridgeError(
            f"onnxruntime cannot load {Path(path).name}: {str(exc).strip().splitlines()[0][:300]}",
            stage="onnxruntime",
            hint="the exported graph uses an op or type onnxruntime's CPU provider lacks; try another opset",
        ) from exc


def run_onnx(path: Path | str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the ONNX model once in onnxruntime (CPU) and return every output by name, in graph order.

    `inputs` must name exactly the graph's inputs; arrays are cast to the declared dtypes only when the cast is
    lossless for the values given (e.g. float64 samples for a float32 input are refused, to keep parity honest).
    """
    session = make_session(path)
    declared = {i.name: i for i in session.get_inputs()}
    missing = sorted(set(declared) - set(inputs))
    extra = sorted(set(inputs) - set(declared))
    if missing or extra:
        raise UsageError(
            "inputs do not match the ONNX graph's inputs",
            stage="onnxruntime",
            details=[f"missing: {', '.join(missing) or '-'}", f"unknown: {', '.join(extra) or '-'}"],
            hint=f"the graph's inputs are: {', '.join(declared)}",
        )
    feed = {name: _as_input_array(name, inputs[name], declared[name].type) for name in declared}
    names = [o.name for o in session.get_outputs()]
    try:
        values = session.run(names, feed)
    except Exception as exc:
        raise BridgeError(
            f"onnxruntime failed to run the model: {str(exc).strip().splitlines()[0][:300]}",
            stage="onnxruntime",
            hint="check the input shapes against the model's declared input shapes",
        ) from exc
    return {name: np.asarray(value) for name, value in zip(names, values)}


_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16, "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}


def _as_input_array(name: str, value: np.ndarray, ort_type: str) -> np.ndarray:
    array = np.asarray(value)
    wanted = _ORT_TYPES.get(ort_type)
    if wanted is None or array.dtype == wanted:
        return array
    cast = array.astype(wanted)
    if not np.array_equal(cast.astype(array.dtype), array, equal_nan=np.issubdtype(array.dtype, np.floating)):
        raise UsageError(
            f"input {name!r} is {array.dtype} but the ONNX graph wants {ort_type}, and the cast would change values",
            stage="onnxruntime",
            hint=f"pass {np.dtype(wanted).name} data",
        )
    return cast
