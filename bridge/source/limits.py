"""The 2 GB protobuf limit, checked before any work is spent.

The TF.js writer freezes a SavedModel signature into one GraphDef in which every weight is a Const node, and
TensorFlow serializes that GraphDef (to import it, to run grappler on it); protobuf refuses messages of 2 GiB and
more. Weights are quantized only when the web model's shards are written, after freezing, so `--quantize` cannot
bring a model under the limit. Both routes meet it (the native route's SavedModel keeps variables outside
saved_model.pb, but freezing puts them back in the graph), so a model whose weights would not fit is refused as soon
as it is loaded, and a SavedModel given to `bridge tfjs` before it is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bridge.errors import ModelTooLargeError

PROTOBUF_LIMIT_BYTES = 2**31 - 1  # the largest message protobuf serializes
GRAPH_HEADROOM_BYTES = 64 * 2**20  # kept for the graph's nodes and attributes besides the weights
_HINT = ("split the model into parts whose weights stay under 2 GB (e.g. encoder and decoder) and convert each "
         "as its own web model; --quantize cannot help, because weights are quantized only after the graph is frozen")


def weight_budget() -> int:
    """How many bytes of weights one frozen graph can hold."""
    return PROTOBUF_LIMIT_BYTES - GRAPH_HEADROOM_BYTES


def module_weight_bytes(module: Any) -> int:
    """Bytes of a torch module's parameters and buffers, each storage counted once (tied weights are shared)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for tensor in list(module.parameters()) + list(module.buffers()):
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset()) if tensor.device.type != "meta" else (
            id(tensor), 0)
        if key in seen:
            continue
        seen.add(key)
        total += tensor.numel() * tensor.element_size()
    return total


def onnx_weight_bytes(path: Path) -> int:
    """Bytes of an ONNX file's weights: the file itself plus the external data its initializers point to."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not ONNX at all: loading it for the reference says so clearly
        return path.stat().st_size
    external = 0
    for tensor in model.graph.initializer:
        entries = {e.key: e.value for e in tensor.external_data}
        if "length" in entries:
            external += int(entries["length"])
        elif "location" in entries and (path.parent / entries["location"]).is_file():
            external += (path.parent / entries["location"]).stat().st_size
    return path.stat().st_size + external


def saved_model_weight_bytes(saved_model: Path) -> int:
    """Bytes of a SavedModel's graph and variables on disk (what freezing puts into one GraphDef)."""
    files = [saved_model / "saved_model.pb", *sorted((saved_model / "variables").glob("variables.data-*"))]
    return sum(f.stat().st_size for f in files if f.is_file())


def check_weight_bytes(total: int, what: str, stage: str) -> None:
    """Refuse `total` bytes of weights that would not fit a frozen GraphDef, saying why and what to do."""
    if total <= weight_budget():
        return
    raise ModelTooLargeError(
        f"{what} holds {total / 1e9:.2f} GB of weights; the TF.js writer freezes them as constants into one "
        f"TensorFlow graph, which protobuf caps at 2 GB ({PROTOBUF_LIMIT_BYTES:,} bytes, "
        f"{GRAPH_HEADROOM_BYTES // 2**20} MiB of it kept for the graph itself)", stage=stage, hint=_HINT)


def check_model_size(module: Any | None, onnx_path: Path | None, what: str) -> None:
    """The check for a loaded MODEL (a torch module or an ONNX file), right after loading it."""
    if module is not None:
        check_weight_bytes(module_weight_bytes(module), what, "load-model")
    elif onnx_path is not None and onnx_path.is_file():
        check_weight_bytes(onnx_weight_bytes(onnx_path), what, "load-model")
