"""Large Const values kept out of the GraphDef while it is optimized, and put back afterwards.

Why: the frozen graph holds every weight in a Const node, and each grappler run copies the whole GraphDef several
times (Python -> C++ serialization, one copy per optimizer, C++ -> Python). For a 200 M-parameter model that peaked
at ~20x the weight bytes. The graph passes need the weights' dtype and shape, almost never their values, so each
large Const's value is swapped for a *stand-in* of the same dtype and shape that is a few bytes long, and the real
TensorProto is kept aside in a `WeightStubs` registry; after the last pass the surviving stand-ins get their real
values back. Grappler then works on a graph of a few hundred kB.

A stand-in is a TensorProto with the real dtype and shape and a single value that TF repeats to fill the shape
(grappler keeps such *splat* constants compact; any other compact form, and any extra field such as
``version_number``, is expanded or dropped when grappler rebuilds each Const). The value encodes the stand-in's id
(`_FillSpec` bases, far from 0, 1 and other values grappler special-cases). Identical real values share one id, so
grappler's de-duplication of equal constants sees the same equalities as with the real values. Uniform real
tensors are never stubbed (their values can change what grappler does, and TF stores them compactly anyway), and
stubbing is off for a graph that already holds a constant looking like a stand-in.

Safety, since a pass that computes with a stand-in's values would produce wrong weights:

* Python passes read constants through `bridge.tfjs.graph_names.const_value`, which resolves a stand-in to its
  real value from the active registry (`WeightStubs.activated`), and refuses one when no registry is active.
* The passes run twice, with two different stand-in fills (*probes*). Anything derived from stand-in values
  (grappler constant folding ``w * 2``, a pass reading tensor values directly) differs between the two results;
  so does anything that depends on them. The results must be identical apart from the stand-ins themselves.
* Every stand-in must survive unchanged (same dtype, shape and fill) unless a Python pass read it, and every one
  found in the result must be known.

Any failed check raises `StubsConsumed`; the caller then optimizes the real graph instead (correct, just larger).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

import numpy as np
from tensorflow.core.framework import function_pb2, graph_pb2, node_def_pb2, tensor_pb2, types_pb2

from bridge.errors import ConversionError
from bridge.tfjs.graph_names import iter_all_nodes

__all__ = ["PROBES", "STUB_MIN_BYTES", "StubsConsumed", "WeightStubs", "is_stub", "resolve_stub"]

STUB_MIN_BYTES = 1 << 20
"""Consts whose values take at least this many bytes are stubbed (module attribute: tests change it)."""
PROBES = (0, 1)
MAX_STUBS = 1 << 20
_STAGE = "tfjs-write"


@dataclass(frozen=True)
class _FillSpec:
    """How a dtype's stand-in is written: its repeated value field, item size, and per probe the value of id 0
    (id i is that value plus i for probe 0, minus i for probe 1; exact in the dtype for every id < MAX_STUBS)."""

    field_name: str
    itemsize: int
    bases: tuple[float, float]

    def value(self, stub_id: int, probe: int) -> float:
        """The fill of stand-in `stub_id` for `probe`."""
        return self.bases[probe] + stub_id if probe == 0 else self.bases[probe] - stub_id

    def decode(self, value: float, probe: int) -> int | None:
        """The id whose `probe` fill is `value`, or None."""
        if not math.isfinite(value):
            return None
        offset = value - self.bases[probe] if probe == 0 else self.bases[probe] - value
        return int(offset) if offset == int(offset) and 0 <= offset < MAX_STUBS else None


_FLOAT_BASES = (6291456.5, -2097152.75)  # 24 significant bits at most: exact in float32
_INT_BASES = (1_234_000_000, -1_987_000_000)
_STUB_DTYPES: dict[int, _FillSpec] = {
    types_pb2.DT_FLOAT: _FillSpec("float_val", 4, _FLOAT_BASES),
    types_pb2.DT_DOUBLE: _FillSpec("double_val", 8, _FLOAT_BASES),
    types_pb2.DT_INT32: _FillSpec("int_val", 4, _INT_BASES),
    types_pb2.DT_INT64: _FillSpec("int64_val", 8, _INT_BASES),
}


class StubsConsumed(ConversionError):
    """A stand-in's fill was used as if it were the weight (folded, changed or lost): the stubbed result is wrong."""


@dataclass(frozen=True)
class _Original:
    """The real value behind one stand-in id."""

    tensor: tensor_pb2.TensorProto  # the caller's proto (not copied) or a private copy
    dtype: int
    shape: tuple[int, ...]


@dataclass
class WeightStubs:
    """The registry of stand-ins for one optimization: id -> real TensorProto, and the probe fill in use."""

    min_bytes: int = field(default_factory=lambda: STUB_MIN_BYTES)
    probe: int = 0
    originals: dict[int, _Original] = field(default_factory=dict)
    read: set[int] = field(default_factory=set)
    _ids_by_digest: dict[bytes, int] = field(default_factory=dict)
    _ids_by_node: dict[tuple[str, str], int] = field(default_factory=dict)

    # ---------------------------------------------------------------------------------------------- stubbing

    def collect(self, graph_def: graph_pb2.GraphDef) -> int:
        """Register every large non-uniform Const of `graph_def` (main graph and library functions) without
        changing it; the registry keeps references to the graph's own TensorProtos. Returns how many (0, and
        nothing registered, when a Const already looks like a stand-in)."""
        nodes = list(iter_all_nodes(graph_def))
        if any(node.op == "Const" and is_stub(node.attr["value"].tensor) for _, node in nodes):
            return 0
        for scope, node in nodes:
            stub_id = self._register(node.attr["value"].tensor, copy=False) if self._candidate(node) else None
            if stub_id is not None:
                self._ids_by_node[(scope, node.name)] = stub_id
        return len(self._ids_by_node)

    def stubbed_copy(self, graph_def: graph_pb2.GraphDef) -> graph_pb2.GraphDef:
        """A copy of the collected `graph_def` whose registered Consts hold stand-ins (current probe). Real
        values are never copied; the argument is not changed."""
        result = graph_pb2.GraphDef()
        for descriptor, value in graph_def.ListFields():
            if descriptor.name not in ("node", "library"):
                _copy_field(result, descriptor, value)
        for node in graph_def.node:
            result.node.append(self._stub_node(node, ""))
        if graph_def.HasField("library"):
            for descriptor, value in graph_def.library.ListFields():
                if descriptor.name != "function":
                    _copy_field(result.library, descriptor, value)
            for func in graph_def.library.function:
                result.library.function.append(self._stub_function(func))
        return result

    def stub_in_place(self, graph_def: graph_pb2.GraphDef) -> int:
        """Replace large real Consts that passes created (e.g. folded weights) by stand-ins, in place; their real
        values are copied into the registry. Returns how many were replaced."""
        count = 0
        for _, node in iter_all_nodes(graph_def):
            if self._candidate(node):
                tensor = node.attr["value"].tensor
                stub_id = self._register(tensor, copy=True)
                if stub_id is not None:
                    tensor.CopyFrom(self.stand_in(stub_id))
                    count += 1
        return count

    def _candidate(self, node: node_def_pb2.NodeDef) -> bool:
        """A real (not yet stubbed) Const of a stubbable dtype whose value takes at least `min_bytes`."""
        if node.op != "Const" or "value" not in node.attr or not node.attr["value"].HasField("tensor"):
            return False
        tensor = node.attr["value"].tensor
        spec = _STUB_DTYPES.get(tensor.dtype)
        if spec is None or is_stub(tensor) or tensor.tensor_shape.unknown_rank:
            return False
        dims = [d.size for d in tensor.tensor_shape.dim]
        return all(d >= 0 for d in dims) and math.prod(dims) * spec.itemsize >= self.min_bytes

    def _register(self, tensor: tensor_pb2.TensorProto, *, copy: bool) -> int | None:
        """The id of `tensor`'s value (equal values share one), or None for a uniform tensor (never stubbed)."""
        import tensorflow as tf

        values = tf.make_ndarray(tensor)
        flat = values.reshape(-1)
        if flat.size == 0 or bool(np.all(flat == flat[0])):
            return None
        shape = tuple(int(d.size) for d in tensor.tensor_shape.dim)
        digest = hashlib.blake2b(f"{tensor.dtype}:{shape}".encode() + memoryview(np.ascontiguousarray(flat)).cast("B"),
                                 digest_size=20).digest()
        del values, flat
        if digest in self._ids_by_digest or len(self.originals) >= MAX_STUBS:
            return self._ids_by_digest.get(digest)
        if copy:
            kept = tensor_pb2.TensorProto()
            kept.CopyFrom(tensor)
            tensor = kept
        stub_id = len(self.originals)
        self.originals[stub_id] = _Original(tensor, tensor.dtype, shape)
        self._ids_by_digest[digest] = stub_id
        return stub_id

    def stand_in(self, stub_id: int, probe: int | None = None) -> tensor_pb2.TensorProto:
        """The stand-in TensorProto of `stub_id` for `probe` (default: the current one)."""
        original = self.originals[stub_id]
        spec = _STUB_DTYPES[original.dtype]
        proto = tensor_pb2.TensorProto(dtype=original.dtype)
        for size in original.shape:
            proto.tensor_shape.dim.add(size=size)
        value = spec.value(stub_id, self.probe if probe is None else probe)
        getattr(proto, spec.field_name).append(value if spec.field_name in ("float_val", "double_val") else int(value))
        return proto

    def _stub_node(self, node: node_def_pb2.NodeDef, scope: str) -> node_def_pb2.NodeDef:
        """`node` itself (copied on append) or, for a registered Const, a copy holding its stand-in."""
        stub_id = self._ids_by_node.get((scope, node.name))
        if stub_id is None or node.op != "Const":
            return node
        clone = node_def_pb2.NodeDef()
        for descriptor, value in node.ListFields():
            if descriptor.name != "attr":
                _copy_field(clone, descriptor, value)
        for key, attr in node.attr.items():
            if key != "value":
                clone.attr[key].CopyFrom(attr)
        clone.attr["value"].tensor.CopyFrom(self.stand_in(stub_id))
        return clone

    def _stub_function(self, func: function_pb2.FunctionDef) -> function_pb2.FunctionDef:
        """A copy of a library function whose registered Consts hold stand-ins."""
        clone = function_pb2.FunctionDef()
        for descriptor, value in func.ListFields():
            if descriptor.name != "node_def":
                _copy_field(clone, descriptor, value)
        for node in func.node_def:
            clone.node_def.append(self._stub_node(node, func.signature.name))
        return clone

    # ------------------------------------------------------------------------------------------- resolving

    @contextlib.contextmanager
    def activated(self) -> Iterator[WeightStubs]:
        """Make this registry the one `resolve_stub` (and so `const_value`) reads stand-ins from."""
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)

    def stub_id(self, tensor: tensor_pb2.TensorProto) -> int:
        """The id of a stand-in that is exactly as this registry made it (current probe); StubsConsumed else."""
        stub_id = _fill_id(tensor, self.probe)
        if stub_id is None or stub_id not in self.originals:
            raise StubsConsumed(f"a weight stand-in was changed by a graph pass or is unknown (probe {self.probe})",
                                stage=_STAGE)
        if tensor != self.stand_in(stub_id):
            raise StubsConsumed(f"weight stand-in {stub_id} was changed by a graph pass (dtype, shape or fill)",
                                stage=_STAGE)
        return stub_id

    def resolve(self, tensor: tensor_pb2.TensorProto) -> np.ndarray:
        """The real value behind a stand-in (recorded as read, so it may legitimately disappear)."""
        import tensorflow as tf

        stub_id = self.stub_id(tensor)
        self.read.add(stub_id)
        return tf.make_ndarray(self.originals[stub_id].tensor)

    # ------------------------------------------------------------------------------------ checks, restore

    def canonical(self, graph_def: graph_pb2.GraphDef, probe: int) -> None:
        """Rewrite, in place, the `probe` stand-ins of a result into probe 0's, so two probes' results can be
        compared; raises StubsConsumed if one was changed."""
        current, self.probe = self.probe, probe
        try:
            stubs = [(node, self.stub_id(node.attr["value"].tensor)) for node in _stub_nodes(graph_def)]
        finally:
            self.probe = current
        for node, stub_id in stubs:
            node.attr["value"].tensor.CopyFrom(self.stand_in(stub_id, probe=0))

    def check_same(self, first: graph_pb2.GraphDef, second: graph_pb2.GraphDef) -> None:
        """Both probes' results (already `canonical`) must be identical, node for node."""
        if len(first.node) != len(second.node):
            raise StubsConsumed("the graph depends on weight stand-in values (node count differs)", stage=_STAGE)
        for a, b in zip(first.node, second.node):
            if a != b:
                raise StubsConsumed(f"node {a.name!r} depends on weight stand-in values (constant folding?)",
                                    stage=_STAGE)
        if first != second:
            raise StubsConsumed("the graph's library depends on weight stand-in values", stage=_STAGE)

    def check_survivors(self, found: set[int]) -> None:
        """Every stand-in must be among the `found` ids unless a Python pass read (and so replaced) it."""
        lost = sorted(set(self.originals) - found - self.read)
        if lost:
            raise StubsConsumed(f"{len(lost)} weight stand-in(s) disappeared during optimization (folded into "
                                f"other constants?)", stage=_STAGE)

    def restore(self, graph_def: graph_pb2.GraphDef) -> int:
        """Put the real values back into the result's stand-ins (probe 0, in place) after checking that every
        stand-in no pass read survived. Returns how many Consts were restored."""
        self.probe = 0
        found = [(node, self.stub_id(node.attr["value"].tensor)) for node in _stub_nodes(graph_def)]
        self.check_survivors({stub_id for _, stub_id in found})
        for node, stub_id in found:
            node.attr["value"].tensor.CopyFrom(self.originals[stub_id].tensor)
        return len(found)


_ACTIVE: ContextVar[WeightStubs | None] = ContextVar("bridge_weight_stubs", default=None)


def is_stub(tensor: tensor_pb2.TensorProto) -> bool:
    """Whether a TensorProto looks like a weight stand-in of either probe (its value is not the weight's)."""
    return any(_fill_id(tensor, probe) is not None for probe in PROBES)


def _fill_id(tensor: tensor_pb2.TensorProto, probe: int) -> int | None:
    """The id encoded in a splat tensor of several elements whose value is a `probe` fill, else None."""
    spec = _STUB_DTYPES.get(tensor.dtype)
    if spec is None or tensor.tensor_content or tensor.tensor_shape.unknown_rank:
        return None
    values = getattr(tensor, spec.field_name)
    if len(values) != 1 or math.prod(d.size for d in tensor.tensor_shape.dim) < 2:
        return None
    return spec.decode(values[0], probe)


def resolve_stub(tensor: tensor_pb2.TensorProto) -> np.ndarray:
    """The real value of a stand-in, from the active registry; ConversionError when none is active (the fill
    must never be read as a value)."""
    stubs = _ACTIVE.get()
    if stubs is None:
        raise ConversionError("a weight stand-in was read outside the optimization that made it (a bug in bridge)",
                              stage=_STAGE)
    return stubs.resolve(tensor)


def _stub_nodes(graph_def: graph_pb2.GraphDef) -> list[node_def_pb2.NodeDef]:
    """Every Const (main graph and library functions) holding a stand-in."""
    return [node for _, node in iter_all_nodes(graph_def)
            if node.op == "Const" and "value" in node.attr and is_stub(node.attr["value"].tensor)]


def _copy_field(target: object, descriptor: object, value: object) -> None:
    """Copy one set field (`ListFields` item) of a message into the same field of `target`."""
    name = descriptor.name  # type: ignore[attr-defined]
    destination = getattr(target, name)
    if descriptor.label == descriptor.LABEL_REPEATED:  # type: ignore[attr-defined]
        if descriptor.message_type is not None and descriptor.message_type.GetOptions().map_entry:  # type: ignore
            for key, item in value.items():  # type: ignore[attr-defined]
                if hasattr(item, "CopyFrom"):
                    destination[key].CopyFrom(item)
                else:
                    destination[key] = item
        else:
            destination.extend(value)  # type: ignore[arg-type]
    elif descriptor.message_type is not None:  # type: ignore[attr-defined]
        destination.CopyFrom(value)
    else:
        setattr(target, name, value)
