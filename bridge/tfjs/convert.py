"""SavedModel -> TF.js graph model folder: the optimized graph (bridge.tfjs.optimize) written as model.json + shards.

Writes are atomic: everything goes into a temporary folder beside `out_dir`, renamed into place at the end; a
failure leaves nothing behind. An existing non-empty `out_dir` is refused unless `force` is set, and even then a
folder holding sub-folders (which a web model never has) is refused, so a mistyped path cannot wipe a tree.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tensorflow.core.framework import graph_pb2

import bridge
from bridge.errors import OutputError, UsageError
from bridge.tfjs import model_json as mj
from bridge.tfjs.quantize import QuantizePlan, parse_quantize_specs
from bridge.tfjs.textures import TextureReport, frozen_const_value, texture_report
from bridge.tfjs.weights import DEFAULT_SHARD_SIZE, QuantStep, WrittenWeights, cleared_topology, write_weights

_STAGE = "tfjs-write"


@dataclass(frozen=True)
class TfjsOptions:
    """How to write the web model. `quantize` holds specs like ``"float16"`` or ``"uint8:*dense*"``;
    `metadata` adds top-level userDefinedMetadata keys; `bridge_metadata` is merged into
    userDefinedMetadata.bridge (its ``layouts`` mapping, keyed by signature key or tensor name, sets the layout of
    inputs and outputs)."""

    signature: str = "serving_default"
    quantize: tuple[str, ...] = ()
    shard_size: int = DEFAULT_SHARD_SIZE
    control_flow_v2: bool = False
    metadata: Mapping[str, Any] = field(default_factory=dict)
    bridge_metadata: Mapping[str, Any] = field(default_factory=dict)
    force: bool = False
    converted_by: str | None = None
    source: str = ""
    output_order: tuple[str, ...] = ()  # the user's order of the outputs (signature keys); TF sorts a dict's keys


class OptimizedGraphLike(Protocol):
    """What the writer needs from bridge.tfjs.optimize's `OptimizedGraph`."""

    graph_def: graph_pb2.GraphDef
    inputs: Sequence[mj.TensorInfoLike]
    outputs: Sequence[mj.TensorInfoLike]
    needs_async: bool
    tf_version: str
    op_histogram: Mapping[str, int]


@dataclass(frozen=True)
class WebModelSummary:
    """What was written: files, sizes, quantization steps (for parity tolerances) and graph facts."""

    out_dir: Path
    model_json: Path
    shards: tuple[Path, ...]
    weight_count: int
    weight_bytes: int
    model_json_bytes: int
    bytes_by_dtype: Mapping[str, int]
    quantized: Mapping[str, QuantStep]
    needs_async: bool
    op_histogram: Mapping[str, int]
    inputs: tuple[Any, ...]
    outputs: tuple[Any, ...]
    format: str = "graph-model"  # or "layers-model" (bridge.tfjs.layers; op_histogram then counts layer classes)
    notes: tuple[str, ...] = ()
    textures: TextureReport | None = None  # the write-time WebGL texture check (bridge.tfjs.textures)

    def max_quantization_error(self) -> float:
        """The largest absolute error bound over all quantized weights (0 when nothing was quantized)."""
        return max((q.max_error for q in self.quantized.values()), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        """The summary as plain data (for report.json)."""
        return {
            "outDir": str(self.out_dir), "modelJson": str(self.model_json),
            "shards": [str(p) for p in self.shards], "weightCount": self.weight_count,
            "weightBytes": self.weight_bytes, "modelJsonBytes": self.model_json_bytes,
            "bytesByDtype": dict(self.bytes_by_dtype), "needsAsync": self.needs_async,
            "quantized": {k: {"dtype": v.dtype, "step": v.step, "maxError": v.max_error}
                          for k, v in self.quantized.items()},
            "opHistogram": dict(self.op_histogram), "format": self.format, "notes": list(self.notes),
            "webglTextures": self.textures.to_dict() if self.textures is not None else None,
        }


def convert_saved_model(saved_model_dir: str | Path, out_dir: str | Path, options: TfjsOptions) -> WebModelSummary:
    """Optimize the SavedModel's signature for TF.js and write the web model folder atomically."""
    check_output_dir(Path(out_dir), options.force)
    from bridge.tfjs.optimize import optimize_for_tfjs  # the graph half; imported late to keep this module light

    graph = optimize_for_tfjs(Path(saved_model_dir), signature=options.signature,
                              control_flow_v2=options.control_flow_v2)
    return convert_graph(graph, out_dir, options)


def convert_graph(graph: OptimizedGraphLike, out_dir: str | Path, options: TfjsOptions) -> WebModelSummary:
    """Write an already optimized graph as a web model folder, atomically (temp folder renamed into place)."""
    target = Path(out_dir).absolute()
    check_output_dir(target, options.force)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.parent / f".{target.name}.tmp-{secrets.token_hex(6)}"
    temp.mkdir()
    try:
        summary = write_web_model(graph, temp, options)
        _move_into_place(temp, target, options.force)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return _relocated(summary, temp, target)


def check_output_dir(out_dir: Path, force: bool) -> None:
    """Refuse an output path that is a file or symlink, or a non-empty folder without `force`."""
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise OutputError(f"output path {str(out_dir)!r} exists and is not a plain folder", stage=_STAGE,
                          hint="choose another --out path")
    if not out_dir.exists():
        return
    entries = list(out_dir.iterdir())
    if entries and not force:
        raise OutputError(f"output folder {str(out_dir)!r} is not empty", stage=_STAGE,
                          hint="choose an empty or new folder, or pass --force to replace it")
    if any(e.is_dir() and not e.is_symlink() for e in entries):
        raise OutputError(f"output folder {str(out_dir)!r} holds sub-folders: it does not look like a web model "
                          f"folder, so it is not replaced even with --force", stage=_STAGE,
                          hint="point --out at the web model folder itself, or remove it by hand")


def _move_into_place(temp: Path, target: Path, force: bool) -> None:
    """Rename the finished temp folder to `target`, replacing an empty one, or (with force) an old web model."""
    if not target.exists() or not any(target.iterdir()):
        os.replace(temp, target)
        return
    if not force:
        raise OutputError(f"output folder {str(target)!r} became non-empty while writing", stage=_STAGE)
    old = target.parent / f".{target.name}.old-{secrets.token_hex(6)}"
    os.rename(target, old)
    try:
        os.rename(temp, target)
    except OSError:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _relocated(summary: WebModelSummary, temp: Path, target: Path) -> WebModelSummary:
    """The summary with paths pointing into the final folder."""
    return WebModelSummary(
        out_dir=target, model_json=target / summary.model_json.name,
        shards=tuple(target / p.name for p in summary.shards), weight_count=summary.weight_count,
        weight_bytes=summary.weight_bytes, model_json_bytes=summary.model_json_bytes,
        bytes_by_dtype=summary.bytes_by_dtype, quantized=summary.quantized, needs_async=summary.needs_async,
        op_histogram=summary.op_histogram, inputs=summary.inputs, outputs=summary.outputs, format=summary.format,
        notes=summary.notes, textures=summary.textures)


def write_web_model(graph: OptimizedGraphLike, out_dir: str | Path, options: TfjsOptions) -> WebModelSummary:
    """Write model.json and the weight shards into the existing empty folder `out_dir` (not atomic: use
    `convert_graph` for that). Files written are removed again if anything fails."""
    folder = Path(out_dir)
    _check_options(options)
    plan = parse_quantize_specs(options.quantize)
    outputs = ordered_outputs(graph.outputs, options.output_order)
    signature = mj.signature_to_json(graph.inputs, outputs)
    _user_metadata(graph, options, plan, None)  # validate metadata before writing any shard
    written: WrittenWeights | None = None
    try:
        written = write_weights(graph.graph_def, folder, shard_size=options.shard_size, plan=plan)
        model = mj.build_model_json(
            generated_by=graph.tf_version,
            converted_by=options.converted_by or f"bridge {bridge.__version__}",
            signature=signature, topology=mj.topology_to_json(cleared_topology(graph.graph_def)),
            manifest=written.manifest, user_metadata=_user_metadata(graph, options, plan, written))
        data = mj.dump_model_json(model)
        _write_new_file(folder / "model.json", data)
    except BaseException:
        for name in written.paths if written else ():
            (folder / name).unlink(missing_ok=True)
        raise
    return WebModelSummary(
        out_dir=folder, model_json=folder / "model.json", shards=tuple(folder / p for p in written.paths),
        weight_count=written.weight_count, weight_bytes=written.total_bytes,
        model_json_bytes=len(data), bytes_by_dtype=dict(written.bytes_by_dtype), quantized=dict(written.quantized),
        needs_async=bool(graph.needs_async), op_histogram=dict(graph.op_histogram),
        inputs=tuple(graph.inputs), outputs=tuple(graph.outputs),
        textures=texture_report(graph.graph_def, frozen_const_value))


def _write_new_file(path: Path, data: bytes) -> None:
    """Write a file that must not exist yet (OutputError otherwise); a partly written file is removed."""
    try:
        handle = open(path, "xb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise OutputError(f"cannot create {str(path)!r}: {exc.strerror}", stage=_STAGE,
                          hint="write into a new or empty folder you can write to") from exc
    try:
        with handle:
            handle.write(data)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _check_options(options: TfjsOptions) -> None:
    """Refuse option values that cannot work."""
    if not isinstance(options.shard_size, int) or isinstance(options.shard_size, bool) or options.shard_size <= 0:
        raise UsageError(f"shard size must be a positive number of bytes, got {options.shard_size!r}",
                         stage=_STAGE)


def _user_metadata(graph: OptimizedGraphLike, options: TfjsOptions, plan: QuantizePlan,
                   written: WrittenWeights | None) -> dict[str, Any]:
    """userDefinedMetadata: bridge's own block plus the user's keys."""
    counts: dict[str, int] = {}
    for step in (written.quantized.values() if written else ()):
        counts[step.dtype] = counts.get(step.dtype, 0) + 1
    outputs = ordered_outputs(graph.outputs, options.output_order)
    bridge_meta = mj.bridge_metadata(
        source=options.source, needs_async=graph.needs_async, inputs=graph.inputs, outputs=outputs,
        quantization={"specs": plan.specs(), "weights": counts},
        extra=options.bridge_metadata)
    meta = mj.user_defined_metadata(bridge_meta, options.metadata)
    if options.output_order and len(outputs) > 1:
        # Outputs named by the user: GraphModel.predict() then returns {name: tensor} (in this order) instead of
        # an array a page would have to match up by position; execute() is unchanged.
        meta["structuredOutputKeys"] = [info.key for info in outputs]
    return meta


def ordered_outputs(outputs: Sequence[Any], order: Sequence[str]) -> list[Any]:
    """The signature outputs in the user's order (TF flattens a dict of outputs in sorted key order); outputs the
    order does not name keep their place after the named ones."""
    rank = {key: position for position, key in enumerate(order)}
    return sorted(outputs, key=lambda info: rank.get(info.key, len(rank)))
