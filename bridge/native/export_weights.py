"""Export a PyTorch state_dict on its own (no graph) for people who load weights into a model they wrote:

- `tfjs`: `weights_manifest.json` + `group1-shard*of*.bin`, what `tf.io.loadWeights(manifest, prefix)` reads
  (or `tf.io.decodeWeights` on the concatenated shards); encoded and sharded by bridge.tfjs.weights, so int64
  buffers become int32 (refused when out of range) and float64 becomes float32, as TF.js stores them;
- `npz`: `weights.npz` (numpy.savez), one array per key;
- `safetensors`: `weights.safetensors`.

Arrays keep PyTorch's layout and are keyed by state_dict key; move them into TF layout with the transforms in
bridge.native.weights, or port them straight into a TF model with bridge.native.port_weights.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from bridge.util.atomic import atomic_output_dir
from bridge.errors import ModelLoadError, UsageError

FORMATS = ("tfjs", "npz", "safetensors")
MANIFEST = "weights_manifest.json"
STAGE = "export-weights"
STATE_DICT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


@dataclass(frozen=True)
class ExportedWeights:
    """What `export_weights` wrote."""

    format: str
    out_dir: Path
    files: tuple[str, ...]  # relative to out_dir
    count: int
    total_bytes: int  # the weights' own bytes (what the arrays hold)
    file_bytes: int = 0  # what the files take on disk (the manifest and any container overhead included)


def export_weights(state_dict: Mapping[str, Any], out_dir: str | Path, fmt: str, *, force: bool = False,
                   shard_size: int | None = None) -> ExportedWeights:
    """Write `state_dict` (tensors or arrays; an nn.Module gives its state_dict) into `out_dir` as `fmt` (tfjs, npz
    or safetensors). The folder is written atomically; an existing non-empty one is replaced only with `force`."""
    if callable(getattr(state_dict, "state_dict", None)):  # an nn.Module: its state_dict
        state_dict = state_dict.state_dict()  # type: ignore[union-attr]
    if fmt not in FORMATS:
        raise UsageError(f"unknown weights format {fmt!r}", stage=STAGE, hint=f"use one of: {', '.join(FORMATS)}")
    if not state_dict:
        raise UsageError("the state_dict is empty: nothing to export", stage=STAGE)
    arrays = {str(k): _to_numpy(v) for k, v in state_dict.items()}
    writer = {"tfjs": _write_tfjs, "npz": _write_npz, "safetensors": _write_safetensors}[fmt]
    target = Path(out_dir)
    with atomic_output_dir(target, force) as staging:
        files = writer(arrays, staging, shard_size)
        on_disk = sum((staging / f).stat().st_size for f in files)
    weight_bytes = sum(int(a.nbytes) for a in arrays.values())
    return ExportedWeights(fmt, target.resolve(), tuple(files), len(arrays), weight_bytes, on_disk)


def _to_numpy(value: Any) -> np.ndarray:
    """A tensor or array as a contiguous numpy array (bfloat16/half tensors become float32)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(value.dtype) in ("torch.bfloat16", "torch.float16"):
            value = value.float()
        value = value.numpy()
    return np.array(value, order="C", copy=False)  # (ascontiguousarray would make 0-d arrays 1-d)


def _write_npz(arrays: dict[str, np.ndarray], out: Path, shard_size: int | None) -> list[str]:
    np.savez(out / "weights.npz", **arrays)
    return ["weights.npz"]


def _write_safetensors(arrays: dict[str, np.ndarray], out: Path, shard_size: int | None) -> list[str]:
    from safetensors.numpy import save_file

    save_file(arrays, str(out / "weights.safetensors"))
    return ["weights.safetensors"]


def _write_tfjs(arrays: dict[str, np.ndarray], out: Path, shard_size: int | None) -> list[str]:
    from bridge.tfjs.weights import DEFAULT_SHARD_SIZE, ShardWriter, cast_for_tfjs, encode_chunks

    cast = {name: cast_for_tfjs(name, values) for name, values in arrays.items()}
    total = sum(v.nbytes for v in cast.values())
    with ShardWriter(out, total, shard_size or DEFAULT_SHARD_SIZE) as writer:
        for values in cast.values():
            for chunk in encode_chunks(values):
                writer.write(chunk)
        paths = writer.close()
    entries = [{"name": name, "shape": list(v.shape), "dtype": _js_dtype(v)} for name, v in cast.items()]
    (out / MANIFEST).write_text(json.dumps([{"paths": list(paths), "weights": entries}]))
    return [MANIFEST, *paths]


def _js_dtype(values: np.ndarray) -> str:
    """The TF.js dtype name of an array already cast by cast_for_tfjs."""
    return {"f": "float32", "i": "int32", "u": "bool", "c": "complex64"}[values.dtype.kind]


# ------------------------------------------------------------------------------------------------ command line

def load_state_dict(spec: str, weights: Path | None = None, init_args: str | None = None, *,
                    trust_pickle: bool = False) -> dict[str, Any]:
    """The state_dict named by a command-line MODEL: a state_dict file (.safetensors, .pt, .pth), or a model
    (file.py:Class with optional --weights, TorchScript, .pt2, or with `trust_pickle` a whole pickled module) whose
    state_dict is taken."""
    from bridge.source.model import load_model, read_state_dict

    path = Path(spec)
    if path.suffix in STATE_DICT_SUFFIXES and path.is_file() and weights is None and init_args is None:
        try:
            return read_state_dict(path, trust_pickle=trust_pickle)
        except ModelLoadError:
            if path.suffix == ".safetensors":
                raise  # else it may be a TorchScript file: load_model tries that
    loaded = load_model(spec, weights=weights, init_args=init_args, trust_pickle=trust_pickle)
    if loaded.module is None:
        raise UsageError(f"{spec} is an ONNX file: it has no PyTorch state_dict to export", stage=STAGE,
                         hint="pass the PyTorch model (file.py:Class --weights W) or its state_dict file")
    return dict(loaded.module.state_dict())


def cmd_export_weights(args: argparse.Namespace) -> int:
    """`bridge export-weights MODEL --format F --out DIR`: export the model's state_dict; returns exit code 0."""
    if args.format == "tfjs":
        from bridge.util.quiet import import_tensorflow

        import_tensorflow()  # the tfjs writer needs TensorFlow's dtypes: import it with its chatter hidden
    trust_pickle = bool(getattr(args, "trust_pickle", False))  # Namespaces built by hand may lack it
    state = load_state_dict(args.model, args.weights, args.init_args, trust_pickle=trust_pickle)
    result = export_weights(state, args.out, args.format, force=args.force)
    print(f"wrote {result.count} weight(s), {result.total_bytes:,} weight bytes ({result.file_bytes:,} bytes on disk), "
          f"as {result.format} in {result.out_dir}: "
          f"{', '.join(result.files[:4])}{' ...' if len(result.files) > 4 else ''}")
    return 0
