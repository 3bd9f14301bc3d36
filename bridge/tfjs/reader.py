"""Read and validate a TF.js graph-model folder: model.json, manifest and shards, weights dequantized.

Everything that can be wrong with a folder someone else wrote (malformed JSON, shard paths leaving the folder,
byte counts that disagree with the shards, unknown dtypes, absurd shapes) is reported as a `WebModelError`; no
other exception escapes `read_web_model` for bad input.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.framework import graph_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from bridge.errors import WebModelError
from bridge.tfjs.quantize import QUANT_ITEMSIZE, dequantize
from bridge.tfjs.weights import STRING_LENGTH_BYTES, clear_tensor_values, written_consts

MODEL_JSON = "model.json"
MAX_MODEL_JSON_BYTES = 1 << 30
MAX_ELEMENTS = 2 ** 31 - 1  # the largest typed array TF.js can allocate for one tensor
MAX_RANK = 254
_STAGE = "tfjs-read"
_NUMERIC_DTYPES: dict[str, str] = {"float32": "<f4", "int32": "<i4", "bool": "|u1", "complex64": "<c8"}
_QUANT_NP: dict[str, str] = {"uint8": "|u1", "uint16": "<u2", "float16": "<f2"}
_ITEMSIZE: dict[str, int] = {"float32": 4, "int32": 4, "bool": 1, "complex64": 8, **QUANT_ITEMSIZE}
_URL_SIGNIFICANT = re.compile(r"[\x00-\x1f\\%?#:]")


@dataclass(frozen=True)
class ManifestEntry:
    """One validated manifest entry and where its bytes sit in its group's byte stream."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    quantization: dict[str, Any] | None
    group: int
    offset: int
    nbytes: int

    @property
    def stored_dtype(self) -> str:
        """The dtype of the bytes in the shards (the quantization dtype when quantized)."""
        return str(self.quantization["dtype"]) if self.quantization else self.dtype


@dataclass(frozen=True)
class ShardFile:
    """One shard file of a weight group."""

    path: str
    nbytes: int
    group: int


@dataclass
class WebModel:
    """A validated web model: the raw model.json, the value-cleared GraphDef and the dequantized weights.

    Weight arrays are read-only views for numeric dtypes; strings are object arrays of bytes.
    """

    folder: Path
    model_json: dict[str, Any]
    graph_def: graph_pb2.GraphDef
    weights: dict[str, np.ndarray]
    entries: list[ManifestEntry]
    shards: list[ShardFile]
    signature: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    generated_by: str | None = None
    converted_by: str | None = None

    @property
    def weight_bytes(self) -> int:
        """Total bytes of all shard files."""
        return sum(s.nbytes for s in self.shards)


def _fail(message: str, hint: str | None = None, details: list[str] | None = None) -> WebModelError:
    """A WebModelError of the read stage."""
    return WebModelError(message, stage=_STAGE, hint=hint, details=details)


def read_web_model(path: str | Path) -> WebModel:
    """Read and validate a web model folder (or its model.json path); WebModelError on anything malformed."""
    folder, json_path = _locate(Path(path))
    model = _load_json(json_path)
    graph_def = _parse_topology(model)
    signature = _optional_dict(model, "signature")
    _validate_signature(signature, graph_def)
    metadata = _optional_dict(model, "userDefinedMetadata")
    groups = _manifest_groups(model)
    weights: dict[str, np.ndarray] = {}
    entries: list[ManifestEntry] = []
    shards: list[ShardFile] = []
    seen_paths: set[str] = set()
    for index, group in enumerate(groups):
        group_shards = _group_shards(folder, group, index, seen_paths)
        group_entries = _group_entries(group, index, weights.keys() | {e.name for e in entries})
        _check_declared_size(group_entries, group_shards, index)
        data = _read_shards(folder, group_shards)
        _decode_group(group_entries, data, index, weights, entries)
        shards += group_shards
    _check_consts_have_weights(graph_def, weights)
    return WebModel(folder, model, graph_def, weights, entries, shards, signature, metadata,
                    _optional_str(model, "generatedBy"), _optional_str(model, "convertedBy"))


def _locate(path: Path) -> tuple[Path, Path]:
    """The model folder and its model.json path."""
    json_path = path / MODEL_JSON if path.is_dir() else path
    if not json_path.is_file():
        raise _fail(f"no model.json at {str(path)!r}", hint="point at the web model folder or its model.json")
    try:
        return json_path.parent.resolve(strict=True), json_path
    except (OSError, RuntimeError) as exc:
        raise _fail(f"cannot resolve {str(json_path.parent)!r}: {exc}") from exc


def _reject_constant(constant: str) -> Any:
    """json.loads hook: bare NaN / Infinity are not JSON and the browser's JSON.parse refuses them."""
    raise ValueError(f"{constant} is not valid JSON")


def _load_json(json_path: Path) -> dict[str, Any]:
    """Parse model.json into a dict."""
    try:
        size = json_path.stat().st_size
        if size > MAX_MODEL_JSON_BYTES:
            raise _fail(f"model.json is {size} bytes, more than the {MAX_MODEL_JSON_BYTES} allowed")
        text = json_path.read_bytes().decode("utf-8")
        model = json.loads(text, parse_constant=_reject_constant)
    except WebModelError:
        raise
    except OSError as exc:
        raise _fail(f"cannot read {str(json_path)!r}: {exc.strerror}") from exc
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _fail(f"model.json is not valid JSON: {exc}") from exc
    if not isinstance(model, dict):
        raise _fail("model.json is not a JSON object")
    fmt = model.get("format", "graph-model")
    if fmt != "graph-model":
        raise _fail(f"model.json format is {fmt!r}, expected 'graph-model'",
                    hint="layers models are loaded with tf.loadLayersModel, not read here")
    return model


def _optional_dict(model: Mapping[str, Any], key: str) -> dict[str, Any]:
    """A top-level object value, {} when absent."""
    value = model.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(f"model.json {key!r} must be an object, got {type(value).__name__}")
    return value


def _optional_str(model: Mapping[str, Any], key: str) -> str | None:
    """A top-level string value, None when absent."""
    value = model.get(key)
    if value is not None and not isinstance(value, str):
        raise _fail(f"model.json {key!r} must be a string, got {type(value).__name__}")
    return value


def _parse_topology(model: Mapping[str, Any]) -> graph_pb2.GraphDef:
    """modelTopology as a GraphDef (Const values cleared), with node names and inputs checked."""
    topology = model.get("modelTopology")
    if not isinstance(topology, dict):
        raise _fail("model.json has no modelTopology object")
    graph_def = graph_pb2.GraphDef()
    try:
        json_format.ParseDict(topology, graph_def)
    except Exception as exc:  # noqa: BLE001 - any failure of the protobuf parser means a malformed topology
        raise _fail(f"modelTopology is not a valid GraphDef: {str(exc)[:300]}") from exc
    _check_graph_refs(graph_def)
    for _, node in written_consts(graph_def):
        if "value" in node.attr and node.attr["value"].HasField("tensor"):
            clear_tensor_values(node.attr["value"].tensor)
    return graph_def


def _check_graph_refs(graph_def: graph_pb2.GraphDef) -> None:
    """Node names are unique and every input names an existing node (the JS loader crashes otherwise)."""
    names: set[str] = set()
    for node in graph_def.node:
        if not node.name or node.name in names:
            raise _fail(f"modelTopology has an empty or duplicate node name {node.name!r}")
        names.add(node.name)
    missing = []
    for node in graph_def.node:
        for ref in node.input:
            source = ref[1:] if ref.startswith("^") else ref.rsplit(":", 1)[0] if _has_index(ref) else ref
            if source not in names:
                missing.append(f"{node.name} <- {ref}")
    if missing:
        raise _fail(f"{len(missing)} node input(s) name nodes that do not exist", details=missing[:10])


def _has_index(ref: str) -> bool:
    """True for ``name:3`` style references."""
    _, sep, index = ref.rpartition(":")
    return bool(sep) and index.isdigit()


def _validate_signature(signature: Mapping[str, Any], graph_def: graph_pb2.GraphDef) -> None:
    """The signature must parse as a SignatureDef and name existing nodes (TF.js silently drops the others)."""
    if not signature:
        return
    parsed = meta_graph_pb2.SignatureDef()
    try:
        json_format.ParseDict(signature, parsed)
    except Exception as exc:  # noqa: BLE001 - any parser failure means a malformed signature
        raise _fail(f"signature is not a valid SignatureDef: {str(exc)[:300]}") from exc
    nodes = {node.name for node in graph_def.node}
    missing = [f"{side} {key}: {info.name!r}" for side, infos in (("input", parsed.inputs), ("output", parsed.outputs))
               for key, info in infos.items() if info.name.split(":", 1)[0] not in nodes]
    if missing:
        raise _fail(f"{len(missing)} signature tensor(s) name nodes missing from the graph", details=missing[:10])


def _manifest_groups(model: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The weightsManifest groups, each an object with 'paths' and 'weights' lists."""
    manifest = model.get("weightsManifest")
    if not isinstance(manifest, list):
        raise _fail("model.json has no weightsManifest list")
    for index, group in enumerate(manifest):
        if not isinstance(group, dict) or not isinstance(group.get("paths"), list) \
                or not isinstance(group.get("weights"), list):
            raise _fail(f"weightsManifest group {index} needs 'paths' and 'weights' lists")
    return manifest


def _group_shards(folder: Path, group: Mapping[str, Any], index: int, seen: set[str]) -> list[ShardFile]:
    """Validate the group's shard paths (inside the folder, regular files, each once) and stat them."""
    shards = []
    for rel in group["paths"]:
        full = safe_shard_path(folder, rel)
        if rel in seen:
            raise _fail(f"shard {rel!r} is listed twice in the manifest")
        seen.add(rel)
        shards.append(ShardFile(rel, full.stat().st_size, index))
    return shards


def safe_shard_path(folder: Path, rel: Any) -> Path:
    """The absolute path of a shard, refusing anything that could leave `folder` or be read as a URL."""
    if not isinstance(rel, str) or not rel:
        raise _fail(f"shard path {rel!r} is not a non-empty string")
    if rel.startswith("/") or _URL_SIGNIFICANT.search(rel):
        raise _fail(f"shard path {rel!r} is absolute or holds URL-significant characters",
                    hint="shard paths must be plain file names relative to model.json")
    posix = PurePosixPath(rel)
    if any(part in ("..", ".") for part in posix.parts) or rel.endswith("/"):
        raise _fail(f"shard path {rel!r} leaves or escapes the model folder")
    try:
        full = (folder / posix).resolve(strict=True)
    except FileNotFoundError as exc:
        raise _fail(f"shard {rel!r} listed in the manifest does not exist") from exc
    except (OSError, RuntimeError) as exc:
        raise _fail(f"shard {rel!r} cannot be resolved: {exc}") from exc
    if not full.is_relative_to(folder):
        raise _fail(f"shard {rel!r} resolves outside the model folder (symlink)")
    if not full.is_file():
        raise _fail(f"shard {rel!r} is not a regular file")
    return full


def _group_entries(group: Mapping[str, Any], index: int, taken: set[str]) -> list[dict[str, Any]]:
    """Validate the group's weight entries; returns them normalised (shape tuple, count, quantization)."""
    out = []
    names = set(taken)
    for raw in group["weights"]:
        entry = _validate_entry(raw, index)
        if entry["name"] in names:
            raise _fail(f"weight {entry['name']!r} appears twice in the manifest")
        names.add(entry["name"])
        out.append(entry)
    return out


def _validate_entry(raw: Any, group: int) -> dict[str, Any]:
    """One manifest entry: name, shape of non-negative ints, known dtype, coherent quantization."""
    if not isinstance(raw, dict):
        raise _fail(f"weightsManifest group {group} holds a non-object weight entry")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise _fail(f"weight entry without a name in group {group}")
    shape = raw.get("shape")
    if not isinstance(shape, list) or len(shape) > MAX_RANK or \
            not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise _fail(f"weight {name!r} has an invalid shape {str(shape)[:80]}")
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        raise _fail(f"weight {name!r} declares {count} elements, more than TF.js can hold ({MAX_ELEMENTS})")
    dtype = raw.get("dtype")
    if not isinstance(dtype, str) or (dtype not in _NUMERIC_DTYPES and dtype != "string"):
        raise _fail(f"weight {name!r} has unknown dtype {str(dtype)[:40]!r}",
                    hint="TF.js weights are float32, int32, bool, string or complex64")
    quant = _validate_quantization(name, dtype, raw.get("quantization"))
    return {"name": name, "shape": tuple(shape), "count": count, "dtype": dtype, "quantization": quant}


def _validate_quantization(name: str, dtype: str, quant: Any) -> dict[str, Any] | None:
    """The entry's quantization object, checked the way the TF.js decoder checks it (and a bit stricter)."""
    if quant is None:
        return None
    if not isinstance(quant, dict) or not isinstance(quant.get("dtype"), str) or quant["dtype"] not in _QUANT_NP:
        raise _fail(f"weight {name!r} has an unknown quantization {str(quant)[:80]}",
                    hint="quantization dtype must be uint8, uint16 or float16")
    qdtype = quant["dtype"]
    allowed = ("float32",) if qdtype == "float16" else ("float32", "int32")
    if dtype not in allowed:
        raise _fail(f"weight {name!r}: {qdtype} quantization of a {dtype} weight is not supported by TF.js")
    if qdtype != "float16":
        for key in ("min", "scale"):
            value = quant.get(key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise _fail(f"weight {name!r}: {qdtype} quantization needs a finite numeric {key!r}")
    return dict(quant)


def _fixed_nbytes(entry: Mapping[str, Any]) -> int:
    """Byte length of a non-string entry, or the minimum (4 per element) of a string entry."""
    if entry["quantization"]:
        return entry["count"] * _ITEMSIZE[entry["quantization"]["dtype"]]
    if entry["dtype"] == "string":
        return entry["count"] * STRING_LENGTH_BYTES
    return entry["count"] * _ITEMSIZE[entry["dtype"]]


def _check_declared_size(entries: list[dict[str, Any]], shards: list[ShardFile], group: int) -> None:
    """Compare the bytes the manifest declares with the bytes the shards hold, before reading anything."""
    actual = sum(s.nbytes for s in shards)
    declared = sum(_fixed_nbytes(e) for e in entries)
    has_strings = any(e["dtype"] == "string" and not e["quantization"] for e in entries)
    if declared > actual or (not has_strings and declared != actual):
        qualifier = "at least " if has_strings else ""
        raise _fail(f"weight group {group}: the manifest declares {qualifier}{declared} bytes, the shards hold "
                    f"{actual}", hint="the shards are truncated or do not belong to this model.json",
                    details=[f"{s.path}: {s.nbytes} bytes" for s in shards])


def _read_shards(folder: Path, shards: list[ShardFile]) -> memoryview:
    """The group's shard bytes concatenated (sizes as stat'ed)."""
    chunks: list[bytes] = []
    for shard in shards:
        try:
            with open(folder / shard.path, "rb") as handle:
                chunk = handle.read(shard.nbytes + 1)
        except OSError as exc:
            raise _fail(f"cannot read shard {shard.path!r}: {exc.strerror}") from exc
        if len(chunk) != shard.nbytes:
            raise _fail(f"shard {shard.path!r} changed size while being read")
        chunks.append(chunk)
    return memoryview(b"".join(chunks))


def _decode_group(entries: list[dict[str, Any]], data: memoryview, group: int, weights: dict[str, np.ndarray],
                  out_entries: list[ManifestEntry]) -> None:
    """Decode every entry of a group in order; the entries must consume the bytes exactly."""
    offset = 0
    for entry in entries:
        values, nbytes = _decode_entry(entry, data, offset)
        weights[entry["name"]] = values
        out_entries.append(ManifestEntry(entry["name"], entry["shape"], entry["dtype"], entry["quantization"],
                                         group, offset, nbytes))
        offset += nbytes
    if offset != len(data):
        raise _fail(f"weight group {group}: the manifest accounts for {offset} bytes, the shards hold {len(data)}",
                    hint="the shards do not belong to this model.json")


def _decode_entry(entry: Mapping[str, Any], data: memoryview, offset: int) -> tuple[np.ndarray, int]:
    """One weight's values (dequantized) and its byte length."""
    name, shape, count = entry["name"], entry["shape"], entry["count"]
    if entry["dtype"] == "string" and not entry["quantization"]:
        return _decode_strings(name, shape, count, data, offset)
    stored = entry["quantization"]["dtype"] if entry["quantization"] else entry["dtype"]
    np_dtype = _QUANT_NP.get(stored) or _NUMERIC_DTYPES[stored]
    nbytes = count * _ITEMSIZE[stored]
    if offset + nbytes > len(data):
        raise _fail(f"weight {name!r} needs {nbytes} bytes at offset {offset}, the shards end at {len(data)}",
                    hint="a shard is truncated")
    raw = np.frombuffer(data, dtype=np_dtype, count=count, offset=offset) if count else np.zeros(0, np_dtype)
    if entry["quantization"]:
        values = dequantize(raw, entry["quantization"], entry["dtype"])
    elif entry["dtype"] == "bool":
        values = raw.astype(bool)
    else:
        values = raw.astype(raw.dtype.newbyteorder("="), copy=False)
    return values.reshape(shape), nbytes


def _decode_strings(name: str, shape: tuple[int, ...], count: int, data: memoryview,
                    offset: int) -> tuple[np.ndarray, int]:
    """A string weight: per element a uint32 LE byte length then the bytes."""
    start = offset
    items: list[bytes] = []
    for _ in range(count):
        if offset + STRING_LENGTH_BYTES > len(data):
            raise _fail(f"string weight {name!r} runs past the end of the shards")
        length = int.from_bytes(data[offset:offset + STRING_LENGTH_BYTES], "little")
        offset += STRING_LENGTH_BYTES
        if offset + length > len(data):
            raise _fail(f"string weight {name!r} declares a {length}-byte element past the end of the shards")
        items.append(bytes(data[offset:offset + length]))
        offset += length
    values = np.empty(count, dtype=object)
    values[:] = items
    return values.reshape(shape), offset - start


def _check_consts_have_weights(graph_def: graph_pb2.GraphDef, weights: Mapping[str, np.ndarray]) -> None:
    """Every Const node needs a weight of the same name and, where the node states one, the same shape."""
    missing, mismatched = [], []
    for name, node in written_consts(graph_def):
        if name not in weights:
            missing.append(name)
            continue
        declared = _const_shape(node)
        if declared is not None and declared != tuple(weights[name].shape):
            mismatched.append(f"{name}: node {list(declared)}, weight {list(weights[name].shape)}")
    if missing:
        raise _fail(f"{len(missing)} Const node(s) have no weight in the manifest", details=missing[:10])
    if mismatched:
        raise _fail(f"{len(mismatched)} weight(s) disagree with their Const node's shape", details=mismatched[:10])


def _const_shape(node: Any) -> tuple[int, ...] | None:
    """The Const node's declared value shape, or None when it does not state a full one."""
    if "value" not in node.attr or not node.attr["value"].HasField("tensor"):
        return None
    shape = node.attr["value"].tensor.tensor_shape
    if shape.unknown_rank or any(d.size < 0 for d in shape.dim):
        return None
    return tuple(int(d.size) for d in shape.dim)


def graph_with_values(model: WebModel) -> graph_pb2.GraphDef:
    """A copy of the model's GraphDef with every Const value restored from its weight, cast back to the node's
    dtype (so the exact graph of model.json can be replayed in TensorFlow)."""
    graph_def = graph_pb2.GraphDef()
    graph_def.CopyFrom(model.graph_def)
    for name, node in written_consts(graph_def):
        tensor = node.attr["value"].tensor
        dtype = tf.as_dtype(tensor.dtype or node.attr["dtype"].type)
        values = model.weights[name]
        cast = values if dtype == tf.string else np.asarray(values).astype(dtype.as_numpy_dtype)
        tensor.CopyFrom(tf.make_tensor_proto(cast, dtype=dtype, shape=values.shape))
    return graph_def


def signature_infos(signature: Mapping[str, Any]) -> tuple[list[Any], list[Any]]:
    """model.json's signature as `bridge.tfjs.freeze.TensorInfo` lists (inputs, outputs), in the file's order."""
    from bridge.tfjs.freeze import TensorInfo

    def infos(part: Mapping[str, Any]) -> list[Any]:
        return [TensorInfo(key=key, name=value["name"], dtype=value.get("dtype", "DT_FLOAT"),
                           shape=[int(d.get("size", -1)) for d in value.get("tensorShape", {}).get("dim", [])])
                for key, value in part.items()]

    return infos(signature.get("inputs", {})), infos(signature.get("outputs", {}))
