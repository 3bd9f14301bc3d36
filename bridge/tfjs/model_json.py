"""model.json of a TF.js graph model: topology, signature, userDefinedMetadata and manifest, as deterministic bytes.

Protobuf messages are rendered like `json_format.MessageToDict` (lowerCamelCase, int64 as strings, bytes as
base64, enums by name, oneof members always printed); map fields (``attr``, ``ret``, ...) have no meaningful order,
so their keys are sorted to make the bytes reproducible. Signature inputs/outputs keep the order they are given in:
the JS runtime derives output order from the key order of ``signature.outputs``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from google.protobuf import descriptor as _descriptor
from google.protobuf import json_format, message
from tensorflow.core.framework import graph_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

import bridge
from bridge.errors import ConversionError, UsageError

FORMAT = "graph-model"
_STAGE = "tfjs-write"


class TensorInfoLike(Protocol):
    """The fields of the graph half's `TensorInfo` this module reads."""

    key: str
    name: str
    dtype: str
    shape: list[int] | None


def message_to_json(msg: message.Message) -> dict[str, Any]:
    """`MessageToDict` rendering of `msg` with map-field keys sorted (deterministic across runs)."""
    rendered = json_format.MessageToDict(msg)
    return _sort_maps(rendered, msg.DESCRIPTOR)


def _is_map(fd: _descriptor.FieldDescriptor) -> bool:
    """True for protobuf map fields (repeated synthetic *Entry messages)."""
    return fd.message_type is not None and fd.message_type.GetOptions().map_entry


def _sort_maps(obj: Any, desc: _descriptor.Descriptor) -> Any:
    """Recursively sort the keys of every map field in a MessageToDict result, guided by the descriptor."""
    if not isinstance(obj, dict):
        return obj  # well-known types render as scalars or lists
    for fd in desc.fields:
        if fd.json_name not in obj or fd.message_type is None:
            continue
        value = obj[fd.json_name]
        if _is_map(fd):
            value_fd = fd.message_type.fields_by_name["value"]
            items = sorted(value.items())
            if value_fd.message_type is not None:
                items = [(k, _sort_maps(v, value_fd.message_type)) for k, v in items]
            obj[fd.json_name] = dict(items)
        elif fd.label == fd.LABEL_REPEATED:
            obj[fd.json_name] = [_sort_maps(v, fd.message_type) for v in value]
        else:
            obj[fd.json_name] = _sort_maps(value, fd.message_type)
    return obj


def topology_to_json(topology: graph_pb2.GraphDef) -> dict[str, Any]:
    """The ``modelTopology`` value: the (value-cleared) GraphDef rendered, ``versions`` always present."""
    rendered = message_to_json(topology)
    rendered.setdefault("versions", {})
    return rendered


def tensor_info_proto(info: TensorInfoLike) -> meta_graph_pb2.TensorInfo:
    """The SignatureDef `TensorInfo` proto for one input or output."""
    try:
        dtype = types_pb2.DataType.Value(info.dtype)
    except ValueError as exc:
        raise ConversionError(f"signature tensor {info.name!r} has unknown dtype {info.dtype!r}",
                              stage=_STAGE) from exc
    proto = meta_graph_pb2.TensorInfo(name=info.name, dtype=dtype)
    if info.shape is None:
        proto.tensor_shape.unknown_rank = True
    else:
        proto.tensor_shape.SetInParent()
        for size in info.shape:
            proto.tensor_shape.dim.add(size=int(size))
    return proto


def signature_to_json(inputs: Sequence[TensorInfoLike], outputs: Sequence[TensorInfoLike]) -> dict[str, Any]:
    """The ``signature`` value: MessageToDict(SignatureDef) with inputs and outputs in the order given."""
    return {"inputs": _tensor_map(inputs, "input"), "outputs": _tensor_map(outputs, "output")}


def _tensor_map(infos: Sequence[TensorInfoLike], kind: str) -> dict[str, Any]:
    """Key -> rendered TensorInfo, refusing duplicate keys (JS would silently merge them)."""
    rendered: dict[str, Any] = {}
    for info in infos:
        if info.key in rendered:
            raise ConversionError(f"two signature {kind}s share the key {info.key!r}", stage=_STAGE)
        rendered[info.key] = json_format.MessageToDict(tensor_info_proto(info))
    return rendered


def io_metadata(infos: Iterable[TensorInfoLike], layouts: Mapping[str, str]) -> list[dict[str, Any]]:
    """Inputs or outputs as bridge metadata: key, name, dtype, shape and layout ("unknown" unless given).

    `layouts` may be keyed by signature key, tensor name (``x:0``) or node name (``x``).
    """
    entries = []
    for info in infos:
        node = info.name.split(":", 1)[0]
        layout = layouts.get(info.key) or layouts.get(info.name) or layouts.get(node) or "unknown"
        entries.append({"key": info.key, "name": info.name, "dtype": info.dtype,
                        "shape": None if info.shape is None else [int(s) for s in info.shape], "layout": layout})
    return entries


def bridge_metadata(*, source: str, needs_async: bool, inputs: Sequence[TensorInfoLike],
                    outputs: Sequence[TensorInfoLike], quantization: Mapping[str, Any],
                    extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``userDefinedMetadata.bridge``: version, source, needsAsync, inputs/outputs, quantization, then `extra`.

    `extra` (the options' bridge_metadata) is merged last; its ``layouts`` key feeds the inputs/outputs layouts
    instead of being copied.
    """
    extra = dict(extra or {})
    layouts = extra.pop("layouts", None) or {}
    if not isinstance(layouts, Mapping):
        raise UsageError("bridge_metadata['layouts'] must map input/output names to layouts", stage=_STAGE)
    meta: dict[str, Any] = {
        "version": bridge.__version__,
        "source": source,
        "needsAsync": bool(needs_async),
        "inputs": io_metadata(inputs, layouts),
        "outputs": io_metadata(outputs, layouts),
        "quantization": quantization,
    }
    meta.update(extra)
    return meta


def user_defined_metadata(bridge_meta: Mapping[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """``userDefinedMetadata``: ``bridge`` first, then the user's extra keys in the order given."""
    extra = dict(extra or {})
    if "bridge" in extra:
        raise UsageError("metadata key 'bridge' is reserved for bridge's own metadata", stage=_STAGE,
                         hint="choose another --metadata key")
    meta: dict[str, Any] = {"bridge": dict(bridge_meta)}
    for key, value in extra.items():
        if not isinstance(key, str) or not key:
            raise UsageError(f"metadata key {key!r} must be a non-empty string", stage=_STAGE)
        _check_json_value(key, value)
        meta[key] = value
    _check_json_value("bridge", meta["bridge"])
    return meta


def _check_json_value(key: str, value: Any) -> None:
    """Refuse metadata that is not plain JSON (NaN/Inf, non-string keys, objects json cannot write)."""
    try:
        json.dumps(value, allow_nan=False, sort_keys=False)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"metadata {key!r} is not plain JSON: {exc}", stage=_STAGE,
                         hint="metadata values must be JSON (no NaN/Infinity, string keys only)") from exc


def build_model_json(*, generated_by: str, converted_by: str, signature: Mapping[str, Any],
                     topology: Mapping[str, Any], manifest: list[dict[str, Any]],
                     user_metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The model.json object, keys in the order the format documents."""
    model: dict[str, Any] = {
        "format": FORMAT,
        "generatedBy": generated_by,
        "convertedBy": converted_by,
        "signature": dict(signature),
        "modelTopology": dict(topology),
    }
    if user_metadata:
        model["userDefinedMetadata"] = dict(user_metadata)
    model["weightsManifest"] = manifest
    return model


def dump_model_json(model: Mapping[str, Any]) -> bytes:
    """Deterministic compact UTF-8 JSON bytes (no NaN, no timestamps, key order as built)."""
    try:
        text = json.dumps(model, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConversionError(f"model.json cannot be written as JSON: {exc}", stage=_STAGE) from exc
    return text.encode("utf-8")


def load_metadata_args(pairs: Sequence[str]) -> dict[str, Any]:
    """Parse ``KEY=FILE.json`` arguments into metadata entries (UsageError on a bad pair or file)."""
    loaded: dict[str, Any] = {}
    for pair in pairs:
        key, sep, file = pair.partition("=")
        if not sep or not key.strip() or not file.strip():
            raise UsageError(f"bad --metadata {pair!r}", stage="usage", hint="write --metadata KEY=FILE.json")
        key = key.strip()
        if key in loaded:
            raise UsageError(f"--metadata key {key!r} given twice", stage="usage")
        loaded[key] = _read_json_file(Path(file.strip()), key)
    return loaded


def _read_json_file(path: Path, key: str) -> Any:
    """One metadata file's JSON value."""
    try:
        return json.loads(path.read_text(encoding="utf-8"),
                          parse_constant=lambda c: _reject_constant(c, path))
    except OSError as exc:
        raise UsageError(f"cannot read metadata file {str(path)!r} for key {key!r}: {exc.strerror}",
                         stage="usage") from exc
    except (ValueError, RecursionError) as exc:
        raise UsageError(f"metadata file {str(path)!r} is not valid JSON: {exc}", stage="usage") from exc


def _reject_constant(constant: str, path: Path) -> float:
    """json.loads hook: NaN / Infinity are not JSON."""
    raise ValueError(f"{constant} is not allowed in {path}")

