"""Load one SavedModel signature and freeze it: variables become Const, every call is inlined.

The signature's inputs and outputs are described as `TensorInfo` (signature key, tensor name in the frozen graph,
dtype, shape); outputs keep the concrete function's output order, which is the order TF.js will return them in.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.errors import ConversionError, ModelLoadError
from bridge.source.limits import check_weight_bytes, saved_model_weight_bytes


@dataclass(frozen=True)
class TensorInfo:
    """One signature input or output: its signature key, tensor name (``x:0``), dtype name (``DT_FLOAT``) and
    shape (``-1`` for unknown sizes; ``None`` for unknown rank)."""

    key: str
    name: str
    dtype: str
    shape: list[int] | None


@dataclass(frozen=True)
class FrozenSignature:
    """A frozen signature: the inlined GraphDef with Const weights, its inputs/outputs, the writing TF version."""

    graph_def: Any  # tensorflow.core.framework.graph_pb2.GraphDef
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    tf_version: str


@contextlib.contextmanager
def quiet_tf() -> Iterator[None]:
    """Keep TensorFlow's Python-side chatter (absl/tf logging, stray prints) off stdout while loading/freezing."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    logger = tf.get_logger()
    old_level = logger.level
    logger.setLevel("ERROR")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(old_level)


def _dtype_name(dtype: Any) -> str:
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2

    return types_pb2.DataType.Name(tf.dtypes.as_dtype(dtype).as_datatype_enum)


def _shape_list(shape: Any) -> list[int] | None:
    import tensorflow as tf

    shape = tf.TensorShape(shape)
    if shape.rank is None:
        return None
    return [-1 if d is None else int(d) for d in shape.as_list()]


def load_signature(saved_model_dir: Path, signature: str) -> tuple[Any, Any]:
    """Load the SavedModel (tag ``serve``) and return ``(loaded object, concrete function of `signature`)``.

    Raises `ModelLoadError` if the folder is not a loadable SavedModel, or naming the available signatures if
    `signature` is missing."""
    import tensorflow as tf

    path = Path(saved_model_dir)
    if not (path / "saved_model.pb").is_file() and not (path / "saved_model.pbtxt").is_file():
        raise ModelLoadError(f"{path} is not a SavedModel folder (no saved_model.pb)", stage="tfjs-write",
                             hint="pass the folder written by tf.saved_model.save / model.export")
    try:
        with quiet_tf():
            loaded = tf.saved_model.load(str(path), tags=["serve"])
    except Exception as exc:  # TF raises many unrelated types here; all mean "cannot load"
        raise ModelLoadError(f"cannot load SavedModel {path}: {exc}", stage="tfjs-write",
                             hint="check the folder was written completely by tf.saved_model.save") from exc
    signatures = dict(loaded.signatures)
    if signature not in signatures:
        available = ", ".join(sorted(signatures)) or "(none)"
        raise ModelLoadError(f"SavedModel {path} has no signature {signature!r}; it has: {available}",
                             stage="tfjs-write", hint=f"pass --signature with one of: {available}")
    return loaded, signatures[signature]


def _signature_inputs(func: Any) -> list[TensorInfo]:
    """Signature inputs in the function's input order (captured resources excluded). Each key is matched to the
    placeholder of the same name when there is one (loaded signatures name them by key), else by position."""
    import tensorflow as tf
    from tensorflow.python.util import nest

    args, kwargs = func.structured_input_signature
    pairs = [(spec.name or f"input_{i}", spec) for i, spec in enumerate(tf.nest.flatten(args))]
    pairs += list(nest.flatten_with_joined_string_paths(kwargs))
    by_name = {t.name.split(":")[0]: t for t in func.inputs if t.dtype != tf.resource}
    infos: list[TensorInfo] = []
    for (key, spec), positional in zip(pairs, func.inputs):
        tensor = by_name.get(spec.name or key, positional)
        infos.append(TensorInfo(key=key, name=tensor.name, dtype=_dtype_name(spec.dtype),
                                shape=_shape_list(spec.shape)))
    return infos


def _output_keys(func: Any) -> list[str]:
    """One key per flattened output: the dict key path for dict outputs, ``output_i`` otherwise."""
    from tensorflow.python.util import nest

    structured = func.structured_outputs
    if isinstance(structured, dict):
        paths = nest.flatten_with_joined_string_paths(structured)
        return [path for path, _ in paths]
    return [f"output_{i}" for i in range(len(func.outputs))]


def share_variable_reads(graph_def: Any) -> int:
    """Point every main-graph reader of an `Identity` chain over a Const (what a variable read becomes when frozen)
    at the Const itself. Otherwise grappler's constant folding turns each read into its own copy of the weight: a
    weight read once per unrolled RNN step would be stored once per step. Returns how many inputs were rewired."""
    from bridge.tfjs.graph_names import format_ref, parse_ref

    nodes = {n.name: n for n in graph_def.node}

    def source(ref: str) -> str:
        parsed = parse_ref(ref)
        node = nodes.get(parsed.node)
        seen = 0
        while node is not None and node.op == "Identity" and parsed.index == 0 and seen < 64:
            data = [r for r in node.input if not r.startswith("^")]
            if len(data) != 1 or len(data) != len(node.input):
                break
            parsed, node, seen = parse_ref(data[0]), nodes.get(parse_ref(data[0]).node), seen + 1
        return format_ref(parsed) if node is not None and node.op == "Const" and seen else ref

    rewired = 0
    for node in graph_def.node:
        for k, ref in enumerate(node.input):
            if not ref.startswith("^"):
                target = source(ref)
                if target != ref:
                    node.input[k] = target
                    rewired += 1
    return rewired


def freeze_signature(saved_model_dir: Path, signature: str = "serving_default", *,
                     lower_control_flow: bool = True) -> FrozenSignature:
    """Freeze one signature of a SavedModel into a single GraphDef (calls inlined, variables as Const).

    With `lower_control_flow`, TF2 While/If become v1 Switch/Merge/Enter/Exit/NextIteration; otherwise they stay
    functional with bodies in ``library.function``."""
    import tensorflow as tf

    check_weight_bytes(saved_model_weight_bytes(Path(saved_model_dir)), f"SavedModel {saved_model_dir}", "tfjs-write")
    loaded, func = load_signature(saved_model_dir, signature)
    try:
        with quiet_tf():
            graph_def, output_names = _frozen_graph_def(func, lower_control_flow)
    except Exception as exc:
        raise ConversionError(f"cannot freeze signature {signature!r}: {exc}", stage="tfjs-write",
                              hint="the signature may use resources TF.js cannot hold (tables, iterators)") from exc
    share_variable_reads(graph_def)
    inputs = _signature_inputs(func)
    placeholders = {n.name for n in graph_def.node if n.op == "Placeholder"}
    missing = [i.name for i in inputs if i.name.split(":")[0] not in placeholders]
    if missing:
        raise ConversionError(f"frozen signature {signature!r} lost its input placeholders {missing}",
                              stage="tfjs-write", hint="report this model: inputs must survive freezing")
    keys = _output_keys(func)
    outputs = [TensorInfo(key=key, name=name, dtype=_dtype_name(tensor.dtype), shape=_shape_list(tensor.shape))
               for key, name, tensor in zip(keys, output_names, func.outputs)]
    version = getattr(loaded, "tensorflow_version", None) or tf.__version__
    return FrozenSignature(graph_def=graph_def, inputs=inputs, outputs=outputs, tf_version=str(version))


def _frozen_graph_def(func: Any, lower_control_flow: bool) -> tuple[Any, list[str]]:
    """The frozen GraphDef of a concrete function and its output tensor names.

    TF's public `convert_variables_to_constants_v2_as_graph` also imports the frozen GraphDef into a new
    function, a second full copy of every weight (plus TF's own graph structures) that is only used for its
    output names: those are the original function's. So its two halves are called directly, and the public
    function is the fallback when they are missing or an output name is not in the graph."""
    from tensorflow.python.framework import convert_to_constants as ctc

    make_data = getattr(ctc, "_FunctionConverterDataInEager", None)
    replace = getattr(ctc, "_replace_variables_by_constants", None)
    if make_data is not None and replace is not None:
        graph_def, _ = replace(converter_data=make_data(func=func, lower_control_flow=lower_control_flow,
                                                        aggressive_inlining=True))
        names = [t.name for t in func.outputs]
        known = {n.name for n in graph_def.node}
        if all(name.rsplit(":", 1)[0] in known for name in names):
            return graph_def, names
        del graph_def
    frozen_func, graph_def = ctc.convert_variables_to_constants_v2_as_graph(
        func, lower_control_flow=lower_control_flow, aggressive_inlining=True)
    return graph_def, [t.name for t in frozen_func.outputs]
