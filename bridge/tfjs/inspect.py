"""`bridge inspect`: a summary of a TF.js graph-model folder, as plain data and as text.

Reads (and so validates) the folder with `read_web_model`, then reports the op histogram, the Transpose count,
ops the runtime cannot run, whether ``executeAsync()`` is needed, weight bytes by stored dtype, quantization,
shards, the signature and the userDefinedMetadata.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tensorflow.core.framework import graph_pb2

from bridge.tfjs.op_list import ASYNC_OPS, SUPPORTED_OPS
from bridge.tfjs.reader import WebModel, read_web_model
from bridge.tfjs.textures import COMMON_LIMIT, texture_report, weights_const_value


def op_histogram(graph_def: graph_pb2.GraphDef) -> dict[str, int]:
    """Op type -> node count over the main graph and library functions, most frequent first (ties by name)."""
    counts = Counter(node.op for node in graph_def.node)
    for func in graph_def.library.function:
        counts.update(node.op for node in func.node_def)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _signature_io(signature: Mapping[str, Any], side: str) -> list[dict[str, Any]]:
    """Signature inputs or outputs as key, name, dtype and shape (-1 unknown size, None unknown rank)."""
    entries = []
    for key, info in (signature.get(side) or {}).items():
        shape_proto = info.get("tensorShape", {}) if isinstance(info, dict) else {}
        shape = None if shape_proto.get("unknownRank") else \
            [int(d.get("size", 0)) for d in shape_proto.get("dim", [])]
        entries.append({"key": key, "name": info.get("name"), "dtype": info.get("dtype"), "shape": shape})
    return entries


def summarize(model: WebModel) -> dict[str, Any]:
    """The inspection summary of an already read web model."""
    hist = op_histogram(model.graph_def)
    by_dtype: dict[str, int] = {}
    quantized: dict[str, int] = {}
    for entry in model.entries:
        by_dtype[entry.stored_dtype] = by_dtype.get(entry.stored_dtype, 0) + entry.nbytes
        if entry.quantization:
            quantized[entry.stored_dtype] = quantized.get(entry.stored_dtype, 0) + 1
    bridge_meta = model.metadata.get("bridge") if isinstance(model.metadata.get("bridge"), dict) else {}
    async_ops = sorted(op for op in hist if op in ASYNC_OPS)
    return {
        "path": str(model.folder),
        "format": model.model_json.get("format", "graph-model"),
        "generatedBy": model.generated_by,
        "convertedBy": model.converted_by,
        "nodes": len(model.graph_def.node),
        "functions": len(model.graph_def.library.function),
        "ops": hist,
        "transposes": hist.get("Transpose", 0),
        "unsupportedOps": sorted(op for op in hist if op not in SUPPORTED_OPS),
        "needsAsync": bool(async_ops),
        "asyncOps": async_ops,
        "metadataNeedsAsync": bridge_meta.get("needsAsync"),
        "inputs": _signature_io(model.signature, "inputs"),
        "outputs": _signature_io(model.signature, "outputs"),
        "weights": {"count": len(model.entries), "bytes": model.weight_bytes, "bytesByDtype": by_dtype,
                    "elements": sum(int(w.size) for w in model.weights.values())},
        "quantization": quantized,
        "shards": [{"path": s.path, "bytes": s.nbytes} for s in model.shards],
        "metadata": model.metadata,
        "webglTextures": texture_report(model.graph_def, weights_const_value(model.weights)).to_dict(),
    }


def inspect_web_model(path: str | Path, *, kernels: bool = True) -> dict[str, Any]:
    """Read and validate the web model at `path` and return its summary (WebModelError if malformed); with
    `kernels`, the per-backend kernel check too (`kernels` is None when Node or the packages are missing)."""
    summary = summarize(read_web_model(path))
    if kernels:
        summary["kernels"] = kernel_summary(Path(path))
    return summary


def kernel_summary(web_model: Path) -> dict[str, Any] | None:
    """The kernel check's report as data, or None when it cannot run here (no Node or TF.js packages)."""
    from bridge.errors import MissingDependencyError
    from bridge.tfjs.kernels import check_kernels

    try:
        return check_kernels(web_model).to_dict()
    except MissingDependencyError:
        return None


def _human_bytes(count: int) -> str:
    """Bytes as B / KiB / MiB."""
    if count < 1024:
        return f"{count} B"
    if count < 1024 * 1024:
        return f"{count / 1024:.1f} KiB"
    return f"{count / (1024 * 1024):.2f} MiB"


def _shape_text(shape: list[int] | None) -> str:
    """A shape as [?,3,224,224] (unknown sizes as ?) or <unknown rank>."""
    if shape is None:
        return "<unknown rank>"
    return "[" + ",".join("?" if s < 0 else str(s) for s in shape) + "]"


def format_inspection(info: Mapping[str, Any], *, top_ops: int = 20) -> str:
    """The summary as human-readable text."""
    weights = info["weights"]
    execution = "executeAsync() needed: " + ", ".join(info["asyncOps"]) if info["needsAsync"] else "execute()"
    lines = [f"web model   {info['path']}",
             f"written by  {info.get('convertedBy') or '?'} (TF {info.get('generatedBy') or '?'})",
             f"graph       {info['nodes']} nodes, {info['functions']} functions, {len(info['ops'])} op types, "
             f"{info['transposes']} Transpose",
             f"execution   {execution}"]
    if info["unsupportedOps"]:
        lines.append(f"UNSUPPORTED {', '.join(info['unsupportedOps'])}")
    for side in ("inputs", "outputs"):
        for io in info[side]:
            lines.append(f"{side[:-1]:<11} {io['key']} ({io['name']}) {io['dtype']} {_shape_text(io['shape'])}")
    by_dtype = ", ".join(f"{d} {_human_bytes(b)}" for d, b in weights["bytesByDtype"].items()) or "none"
    lines.append(f"weights     {weights['count']} tensors, {weights['elements']} values, "
                 f"{_human_bytes(weights['bytes'])} ({by_dtype})")
    quant = ", ".join(f"{n} {d}" for d, n in info["quantization"].items()) or "none"
    lines.append(f"quantized   {quant}")
    lines.append(f"shards      {len(info['shards'])}: " +
                 ", ".join(f"{s['path']} ({_human_bytes(s['bytes'])})" for s in info["shards"][:4]) +
                 (" ..." if len(info["shards"]) > 4 else ""))
    ops = list(info["ops"].items())
    lines.append("ops         " + ", ".join(f"{op} {n}" for op, n in ops[:top_ops]) +
                 (f", ... ({len(ops) - top_ops} more)" if len(ops) > top_ops else ""))
    lines += _texture_lines(info.get("webglTextures"))
    kernels = info.get("kernels")
    if kernels:
        lines.append(f"kernels     {kernels['summary'].removeprefix('kernels: ')}")
        lines += [f"MISSING     {finding}" for finding in kernels["findings"]]
    if info["metadata"]:
        lines.append("metadata    " + json.dumps(info["metadata"], sort_keys=True)[:2000])
    return "\n".join(lines)


def _texture_lines(textures: Mapping[str, Any] | None, shown: int = 5) -> list[str]:
    """The WebGL texture check: the largest texture per limit, every node over the common limit (flagged), and how
    many nodes have shapes known only at run time."""
    if not textures:
        return []
    lines = []
    for limit in textures["limits"]:
        top = textures["largest"].get(str(limit))
        over = textures["over"].get(str(limit), [])
        if top is None:
            lines.append(f"webgl {limit:<5} no node with a static shape")
            continue
        width, height = top["texture"]
        verdict = f"OVER the limit in {len(over)} node(s)" if over else "fits"
        lines.append(f"webgl {limit:<5} largest texture {width}x{height} ({top['op']} {top['node']} "
                     f"{_shape_text(top['shape'])}): {verdict}")
    for node in textures["over"].get(str(COMMON_LIMIT), [])[:shown]:
        width, height = node["texture"]
        lines.append(f"  OVER {COMMON_LIMIT} {width}x{height} {node['op']} {node['node']} {_shape_text(node['shape'])}")
    unknown = textures.get("unknownShapeNodes") or []
    if unknown:
        lines.append(f"webgl       {len(unknown)} node(s) with dynamic shapes: their textures depend on the input "
                     f"sizes and are not checked")
    if textures.get("note"):
        lines.append(f"webgl       {textures['note']}")
    return lines
