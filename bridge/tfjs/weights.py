"""Const nodes to TF.js weights: extraction, dtype casts and checks, byte encoding, streaming shard writer.

Every Const of the main graph (node order) and then of each library function (named ``<function>/<const>``)
becomes one manifest entry; the topology keeps the Const nodes with their values cleared. Bytes are the entries'
encodings concatenated in manifest order (little-endian, C order, no padding), cut into
``group1-shard{i}of{n}.bin`` files every `shard_size` bytes. Only one weight's values are materialised at a time,
and shard files are written as the bytes are produced.
"""

from __future__ import annotations

import fnmatch
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import function_pb2, graph_pb2, node_def_pb2, tensor_pb2, types_pb2

from bridge.errors import OutputError, UsageError, WeightError
from bridge.tfjs.quantize import QUANT_ITEMSIZE, QuantizePlan, quantize_weight, representable

DEFAULT_SHARD_SIZE = 4 * 1024 * 1024
JS_ITEMSIZE: dict[str, int] = {"float32": 4, "int32": 4, "bool": 1, "complex64": 8}
STRING_LENGTH_BYTES = 4
_STAGE = "tfjs-write"
_INT32 = np.iinfo(np.int32)


@dataclass(frozen=True)
class _CastRule:
    """How a TF dtype is stored: the JS dtype, the numpy dtype written, and whether values need a range check."""

    js_dtype: str
    np_dtype: str | None  # None for strings
    check_int32_range: bool = False
    check_float_overflow: bool = False


_CAST_RULES: dict[int, _CastRule] = {
    types_pb2.DT_FLOAT: _CastRule("float32", "<f4"),
    types_pb2.DT_DOUBLE: _CastRule("float32", "<f4", check_float_overflow=True),
    types_pb2.DT_HALF: _CastRule("float32", "<f4"),
    types_pb2.DT_BFLOAT16: _CastRule("float32", "<f4"),
    types_pb2.DT_INT32: _CastRule("int32", "<i4"),
    types_pb2.DT_INT64: _CastRule("int32", "<i4", check_int32_range=True),
    types_pb2.DT_UINT32: _CastRule("int32", "<i4", check_int32_range=True),
    types_pb2.DT_UINT64: _CastRule("int32", "<i4", check_int32_range=True),
    types_pb2.DT_INT8: _CastRule("int32", "<i4"),
    types_pb2.DT_INT16: _CastRule("int32", "<i4"),
    types_pb2.DT_UINT8: _CastRule("int32", "<i4"),
    types_pb2.DT_UINT16: _CastRule("int32", "<i4"),
    types_pb2.DT_BOOL: _CastRule("bool", "|u1"),
    types_pb2.DT_STRING: _CastRule("string", None),
    types_pb2.DT_COMPLEX64: _CastRule("complex64", "<c8"),
    types_pb2.DT_COMPLEX128: _CastRule("complex64", "<c8", check_float_overflow=True),
}
_TENSOR_VALUE_FIELDS = ("tensor_content", "half_val", "float_val", "double_val", "int_val", "string_val",
                        "scomplex_val", "int64_val", "bool_val", "dcomplex_val", "resource_handle_val",
                        "variant_val", "uint32_val", "uint64_val", "float8_val")


@dataclass
class PlannedWeight:
    """One Const about to become a weight: where its value lives and how it will be stored."""

    name: str
    tensor: tensor_pb2.TensorProto
    shape: tuple[int, ...]
    rule: _CastRule
    quant_dtype: str | None
    nbytes: int

    @property
    def stored_dtype(self) -> str:
        """The dtype of the bytes in the shard (the quantization dtype when quantized)."""
        return self.quant_dtype or self.rule.js_dtype


@dataclass(frozen=True)
class QuantStep:
    """What quantization did to one weight: its dtype, step and bound on the absolute error."""

    dtype: str
    step: float
    max_error: float


@dataclass
class WrittenWeights:
    """The outcome of `write_weights`: the manifest, the files, and what quantization did to each weight."""

    manifest: list[dict[str, object]]
    paths: tuple[str, ...]
    total_bytes: int
    weight_count: int = 0
    bytes_by_dtype: dict[str, int] = field(default_factory=dict)
    quantized: dict[str, QuantStep] = field(default_factory=dict)


def function_const_name(function: str, node: str) -> str:
    """The weight (and renamed node) name of a Const inside a library function."""
    return f"{function}/{node}"


def const_tensors(graph_def: graph_pb2.GraphDef) -> Iterator[tuple[str, node_def_pb2.NodeDef]]:
    """Yield (weight name, Const node) of a graph about to be written: main graph in node order, then library
    functions' Consts named ``<function>/<const>`` (`cleared_topology` renames those nodes to match)."""
    for node in graph_def.node:
        if node.op == "Const":
            yield node.name, node
    for func in graph_def.library.function:
        for node in func.node_def:
            if node.op == "Const":
                yield function_const_name(func.signature.name, node.name), node


def written_consts(graph_def: graph_pb2.GraphDef) -> Iterator[tuple[str, node_def_pb2.NodeDef]]:
    """Yield (weight name, Const node) of a graph as written to model.json: the runtime looks every Const up by
    its node name, library functions' (already prefixed) Consts included."""
    for node in graph_def.node:
        if node.op == "Const":
            yield node.name, node
    for func in graph_def.library.function:
        for node in func.node_def:
            if node.op == "Const":
                yield node.name, node


def plan_weights(graph_def: graph_pb2.GraphDef, plan: QuantizePlan | None = None) -> list[PlannedWeight]:
    """Decide name, shape, stored dtype and byte length of every weight; refuses what cannot be written."""
    planned: list[PlannedWeight] = []
    seen: set[str] = set()
    for name, node in const_tensors(graph_def):
        if name in seen:
            raise WeightError(f"two constants would share the weight name {name!r}", stage=_STAGE,
                              hint="rename the library function or node so weight names are unique")
        seen.add(name)
        planned.append(_plan_one(name, node, plan))
    if plan:
        _check_patterns_match(plan, [w.name for w in planned if w.rule.js_dtype == "float32"])
    return planned


def _check_patterns_match(plan: QuantizePlan, float_weights: list[str]) -> None:
    """Refuse a quantization pattern that names no float32 weight: it would silently write an unquantized model."""
    unmatched = [f"{rule.dtype}:{pattern}" for rule in plan.rules if not rule.catch_all for pattern in rule.patterns
                 if not any(fnmatch.fnmatchcase(name, pattern) for name in float_weights)]
    if unmatched:
        more = f", ... ({len(float_weights)} in all)" if len(float_weights) > 20 else ""
        shown = ", ".join(float_weights[:20]) + more
        raise UsageError(f"quantization pattern(s) {', '.join(unmatched)} match no float32 weight", stage=_STAGE,
                         details=[f"the weights are: {shown or '(none)'}"],
                         hint="check the pattern against these names (globs: * and ?), or drop it")


def _plan_one(name: str, node: node_def_pb2.NodeDef, plan: QuantizePlan | None) -> PlannedWeight:
    """Plan a single Const (shape and dtype checks; values are materialised only for strings and wide ints)."""
    if "value" not in node.attr or not node.attr["value"].HasField("tensor"):
        raise WeightError(f"Const {name!r} has no tensor value", stage=_STAGE)
    tensor = node.attr["value"].tensor
    rule = _CAST_RULES.get(tensor.dtype)
    if rule is None:
        dtype_name = types_pb2.DataType.Name(tensor.dtype) if tensor.dtype in types_pb2.DataType.values() \
            else str(tensor.dtype)
        raise WeightError(f"Const {name!r} has dtype {dtype_name}, which TF.js weights cannot hold", stage=_STAGE,
                          hint="cast it in the model to float32, int32, bool or string")
    shape = _static_shape(name, tensor)
    quant = plan.dtype_for(name) if plan and rule.js_dtype == "float32" else None
    if quant and not plan.is_explicit(name) and not representable(_materialise(name, tensor, rule), quant):
        quant = None  # a catch-all spec leaves sentinel constants float32; a pattern naming one still refuses
    count = math.prod(shape)
    if rule.js_dtype == "string":
        nbytes = _string_nbytes(_materialise(name, tensor, rule))
    else:
        if rule.check_int32_range:
            _materialise(name, tensor, rule)  # fail before any file is written
        nbytes = count * (QUANT_ITEMSIZE[quant] if quant else JS_ITEMSIZE[rule.js_dtype])
    return PlannedWeight(name, tensor, shape, rule, quant, nbytes)


def _static_shape(name: str, tensor: tensor_pb2.TensorProto) -> tuple[int, ...]:
    """The fully known shape of a Const's tensor."""
    if tensor.tensor_shape.unknown_rank or any(d.size < 0 for d in tensor.tensor_shape.dim):
        raise WeightError(f"Const {name!r} has an unknown shape", stage=_STAGE)
    return tuple(int(d.size) for d in tensor.tensor_shape.dim)


def _materialise(name: str, tensor: tensor_pb2.TensorProto, rule: _CastRule) -> np.ndarray:
    """The Const's value as the numpy array that will be encoded (cast and checked)."""
    try:
        raw = tf.make_ndarray(tensor)
    except Exception as exc:  # malformed TensorProto: the message names what TF could not decode
        raise WeightError(f"Const {name!r} value cannot be decoded: {exc}", stage=_STAGE) from exc
    return cast_for_tfjs(name, raw, rule)


def cast_for_tfjs(name: str, values: np.ndarray, rule: _CastRule | None = None) -> np.ndarray:
    """Cast `values` to what TF.js stores (see module doc); WeightError names the constant when values don't fit."""
    rule = rule or _rule_for_numpy(name, values)
    if rule.np_dtype is None:
        return np.asarray(values, dtype=object)
    if rule.check_int32_range and values.size:
        lo, hi = values.min(), values.max()
        if lo < _INT32.min or hi > _INT32.max:
            raise WeightError(
                f"Const {name!r} holds values outside int32 ([{lo}, {hi}]); TF.js has no int64", stage=_STAGE,
                hint="keep this constant within int32 range in the model (TF.js computes integers in int32)")
    if rule.check_float_overflow and values.size:
        with np.errstate(over="ignore"):
            cast = values.astype(rule.np_dtype)
        if np.any(np.isinf(cast) & np.isfinite(values)):
            raise WeightError(f"Const {name!r} holds values beyond the float32 range", stage=_STAGE)
        return cast
    return values.astype(rule.np_dtype, copy=False)


def _rule_for_numpy(name: str, values: np.ndarray) -> _CastRule:
    """The cast rule for a numpy array (used when weights come from numpy rather than a TensorProto)."""
    if values.dtype == object or values.dtype.kind in "SU":
        return _CAST_RULES[types_pb2.DT_STRING]
    try:
        enum = tf.as_dtype(values.dtype).as_datatype_enum
    except TypeError as exc:
        raise WeightError(f"weight {name!r} has dtype {values.dtype}, which TF.js cannot hold", stage=_STAGE) from exc
    rule = _CAST_RULES.get(enum)
    if rule is None:
        raise WeightError(f"weight {name!r} has dtype {values.dtype}, which TF.js cannot hold", stage=_STAGE)
    return rule


def _string_elements(values: np.ndarray) -> Iterator[bytes]:
    """Each string element as bytes (str is UTF-8 encoded), in C order."""
    for item in np.asarray(values, dtype=object).reshape(-1):
        yield item.encode("utf-8") if isinstance(item, str) else bytes(item)


def _string_nbytes(values: np.ndarray) -> int:
    """Encoded byte length of a string array: a uint32 length plus the bytes, per element."""
    return sum(STRING_LENGTH_BYTES + len(b) for b in _string_elements(values))


def encode_chunks(values: np.ndarray) -> Iterator[memoryview | bytes]:
    """The weight's bytes as a sequence of chunks (numeric arrays without copying when already little-endian)."""
    if values.dtype == object:
        for item in _string_elements(values):
            if len(item) > 0xFFFFFFFF:
                raise WeightError("a string weight element is longer than 4 GiB", stage=_STAGE)
            yield struct.pack("<I", len(item))
            yield item
        return
    flat = np.ascontiguousarray(values.reshape(-1))
    if flat.dtype.byteorder == ">":
        flat = flat.astype(flat.dtype.newbyteorder("<"))
    yield memoryview(flat.view(np.uint8))


def encode_weight(values: np.ndarray) -> bytes:
    """All bytes of one (already cast) weight, as one bytes object (convenience for small weights and tests)."""
    return b"".join(bytes(c) for c in encode_chunks(values))


def _byte_view(chunk: memoryview | bytes) -> memoryview:
    """A flat unsigned-byte view of a chunk."""
    view = memoryview(chunk)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


class ShardWriter:
    """Writes a byte stream into ``group1-shard{i}of{n}.bin`` files cut every `shard_size` bytes.

    The total must be known up front (it fixes n). On error, `abort` removes every file this writer created.
    """

    def __init__(self, out_dir: Path, total_bytes: int, shard_size: int = DEFAULT_SHARD_SIZE) -> None:
        if shard_size <= 0:
            raise WeightError(f"shard size must be positive, got {shard_size}", stage=_STAGE)
        self.out_dir = Path(out_dir)
        self.total_bytes = total_bytes
        self.shard_size = shard_size
        count = -(-total_bytes // shard_size) if total_bytes else 0
        self.paths: tuple[str, ...] = tuple(f"group1-shard{i}of{count}.bin" for i in range(1, count + 1))
        self._index = -1
        self._in_shard = 0
        self._written = 0
        self._file: BinaryIO | None = None
        self._created: list[Path] = []

    def write(self, chunk: memoryview | bytes) -> None:
        """Append bytes to the stream, opening the next shard whenever the current one is full."""
        view = _byte_view(chunk)
        if self._written + len(view) > self.total_bytes:
            raise WeightError("more weight bytes than planned", stage=_STAGE)
        while len(view):
            if self._file is None or self._in_shard == self.shard_size:
                self._next_shard()
            room = self.shard_size - self._in_shard
            piece = view[:room]
            assert self._file is not None
            self._file.write(piece)
            self._in_shard += len(piece)
            self._written += len(piece)
            view = view[len(piece):]

    def _next_shard(self) -> None:
        """Close the current shard file and open the next."""
        if self._file is not None:
            self._file.close()
        self._index += 1
        path = self.out_dir / self.paths[self._index]
        try:
            self._file = open(path, "xb")  # noqa: SIM115 - closed in _next_shard / close / abort
        except OSError as exc:
            raise OutputError(f"cannot create shard {str(path)!r}: {exc.strerror}", stage=_STAGE,
                              hint="write into a new or empty folder you can write to") from exc
        self._created.append(path)
        self._in_shard = 0

    def close(self) -> tuple[str, ...]:
        """Finish writing; checks the stream held exactly the planned bytes and returns the shard paths."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._written != self.total_bytes:
            raise WeightError(f"wrote {self._written} weight bytes, planned {self.total_bytes}", stage=_STAGE)
        return self.paths

    def abort(self) -> None:
        """Close and delete every shard file written so far."""
        if self._file is not None:
            self._file.close()
            self._file = None
        for path in self._created:
            path.unlink(missing_ok=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.abort()


def write_weights(graph_def: graph_pb2.GraphDef, out_dir: Path, *, shard_size: int = DEFAULT_SHARD_SIZE,
                  plan: QuantizePlan | None = None) -> WrittenWeights:
    """Extract, cast, quantize and write every Const of `graph_def` into shards in `out_dir`.

    The GraphDef is not modified. Returns the ``weightsManifest`` value and per-weight quantization steps.
    """
    planned = plan_weights(graph_def, plan)
    total = sum(p.nbytes for p in planned)
    result = WrittenWeights(manifest=[], paths=(), total_bytes=total, weight_count=len(planned))
    entries: list[dict[str, object]] = []
    with ShardWriter(Path(out_dir), total, shard_size) as writer:
        for weight in planned:
            entries.append(_write_one(weight, writer, result))
        paths = writer.close()
    result.paths = paths
    result.manifest = [{"paths": list(paths), "weights": entries}]
    return result


def _write_one(weight: PlannedWeight, writer: ShardWriter, result: WrittenWeights) -> dict[str, object]:
    """Materialise, cast, maybe quantize and stream one weight; returns its manifest entry."""
    values = _materialise(weight.name, weight.tensor, weight.rule)
    if tuple(values.shape) != weight.shape:
        raise WeightError(f"Const {weight.name!r} value has shape {list(values.shape)}, declared "
                          f"{list(weight.shape)}", stage=_STAGE)
    entry: dict[str, object] = {"name": weight.name, "shape": list(weight.shape), "dtype": weight.rule.js_dtype}
    if weight.quant_dtype:
        quantized = quantize_weight(weight.name, values, weight.quant_dtype)
        values = quantized.data
        entry["quantization"] = quantized.quantization
        result.quantized[weight.name] = QuantStep(weight.quant_dtype, quantized.step, quantized.max_error)
    written = 0
    for chunk in encode_chunks(values):
        writer.write(chunk)
        written += len(_byte_view(chunk))
    if written != weight.nbytes:
        raise WeightError(f"weight {weight.name!r} encoded to {written} bytes, planned {weight.nbytes}",
                          stage=_STAGE)
    result.bytes_by_dtype[weight.stored_dtype] = result.bytes_by_dtype.get(weight.stored_dtype, 0) + written
    return entry


def cleared_topology(graph_def: graph_pb2.GraphDef) -> graph_pb2.GraphDef:
    """A copy of `graph_def` with every Const value cleared (dtype and shape kept) and debug info dropped.

    Weight values are never copied: each Const is rebuilt without its value fields.
    """
    topo = graph_pb2.GraphDef()
    for node in graph_def.node:
        topo.node.append(_cleared_node(node) if node.op == "Const" else node)
    topo.versions.CopyFrom(graph_def.versions)  # always present: the JS loader reads versions unguarded
    if graph_def.version:
        topo.version = graph_def.version
    if graph_def.HasField("library"):
        topo.library.CopyFrom(graph_def.library)
        for func in topo.library.function:
            _clear_function_consts(func)
            rename_function_consts(func)
    return topo


def _cleared_node(node: node_def_pb2.NodeDef) -> node_def_pb2.NodeDef:
    """A copy of a Const NodeDef whose value tensor keeps only dtype and shape."""
    clone = node_def_pb2.NodeDef()
    for fd, value in node.ListFields():
        if fd.name == "attr":
            continue
        target = getattr(clone, fd.name)
        if fd.label == fd.LABEL_REPEATED:
            target.extend(value)
        elif fd.message_type is not None:
            target.CopyFrom(value)
        else:
            setattr(clone, fd.name, value)
    for key, attr in node.attr.items():
        if key == "value" and attr.HasField("tensor"):
            clone.attr[key].tensor.dtype = attr.tensor.dtype
            clone.attr[key].tensor.tensor_shape.CopyFrom(attr.tensor.tensor_shape)
        else:
            clone.attr[key].CopyFrom(attr)
    return clone


def _clear_function_consts(func: function_pb2.FunctionDef) -> None:
    """Clear the value fields of every Const inside a library function, in place."""
    for node in func.node_def:
        if node.op == "Const" and "value" in node.attr:
            clear_tensor_values(node.attr["value"].tensor)


def rename_function_consts(func: function_pb2.FunctionDef) -> None:
    """Rename each Const of a library function to ``<function>/<const>`` and rewrite every reference to it
    (node inputs ``c``, ``c:output:0``, ``^c``, and the ``ret`` / ``control_ret`` maps), in place.

    The TF.js function executor looks Consts up in the model-wide weight map by node name, so function Consts
    need names that are unique across the whole model."""
    renamed: dict[str, str] = {}
    for node in func.node_def:
        if node.op == "Const":
            renamed[node.name] = function_const_name(func.signature.name, node.name)
            node.name = renamed[node.name]
    if not renamed:
        return
    for node in func.node_def:
        for index, ref in enumerate(node.input):
            node.input[index] = _renamed_ref(ref, renamed)
    for key, ref in list(func.ret.items()):
        func.ret[key] = _renamed_ref(ref, renamed)
    for key, name in list(func.control_ret.items()):
        func.control_ret[key] = renamed.get(name, name)


def _renamed_ref(ref: str, renamed: dict[str, str]) -> str:
    """A function-body reference with its node part renamed (``^`` and ``:output:i`` suffixes kept)."""
    control = ref.startswith("^")
    body = ref[1:] if control else ref
    head, sep, tail = body.partition(":")
    if head in renamed:
        body = renamed[head] + sep + tail
    return ("^" if control else "") + body


def clear_tensor_values(tensor: tensor_pb2.TensorProto) -> None:
    """Clear every value field of a TensorProto in place, keeping dtype and shape."""
    for name in _TENSOR_VALUE_FIELDS:
        if name in tensor.DESCRIPTOR.fields_by_name:
            tensor.ClearField(name)

