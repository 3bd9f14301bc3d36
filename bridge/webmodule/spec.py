"""What the generated module needs to know about a web model, read from the model.json bridge wrote.

Everything comes from ``userDefinedMetadata.bridge`` (the ports, ``needsAsync``, the source name) plus the weight
manifest (the shard files the npm package must ship). Picture preprocessing follows the demo page
(`bridge.demo.page.image_preprocessing`): stretched to the input size, 0..255 scaled to [0, 1], laid out as the
input wants; a ``preprocessing`` entry per input name in the bridge metadata (``range``, ``mean``, ``std``)
overrides the defaults, and ``labels`` (there or at the top of userDefinedMetadata) names the classes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bridge import __version__
from bridge.demo.page import channel_axis, image_preprocessing
from bridge.errors import WebModelError
from bridge.source.ports import Port, interface_from_model_json

STAGE = "web-module"


@dataclass(frozen=True)
class ImageInput:
    """How fromImage() makes one image input's tensor: the size (None: the picture's own), channels, layout, the
    range 0..255 is scaled to, optional per-channel mean and std, and the sentence describing it."""

    input: str
    height: int | None
    width: int | None
    channels: int
    layout: str
    range: tuple[float, float]
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    description: str

    def to_json(self) -> dict[str, Any]:
        """The record model.js embeds (IMAGE_INPUTS)."""
        return {"input": self.input, "height": self.height, "width": self.width, "channels": self.channels,
                "layout": self.layout, "range": list(self.range),
                "mean": list(self.mean) if self.mean is not None else None,
                "std": list(self.std) if self.std is not None else None, "description": self.description}


@dataclass(frozen=True)
class WebModuleSpec:
    """A web model as the generated module sees it."""

    folder: Path
    title: str
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    needs_async: bool
    images: tuple[ImageInput, ...]
    labels: tuple[str, ...] | None
    shards: tuple[str, ...]
    bridge_version: str


def read_spec(web_model_dir: Path) -> WebModuleSpec:
    """The spec of the web model in `web_model_dir` (WebModelError when model.json lacks bridge's metadata)."""
    folder = Path(web_model_dir)
    model_json = _read_model_json(folder / "model.json")
    interface = interface_from_model_json(model_json, STAGE)
    user_meta = model_json.get("userDefinedMetadata") or {}
    meta = user_meta.get("bridge") or {}
    overrides = meta.get("preprocessing") if isinstance(meta.get("preprocessing"), Mapping) else {}
    images = tuple(image for port in interface.inputs
                   if (image := image_input(port, overrides.get(port.name))) is not None)
    return WebModuleSpec(folder=folder, title=str(meta.get("source") or folder.name), inputs=interface.inputs,
                         outputs=interface.outputs, needs_async=_needs_async(model_json, meta), images=images,
                         labels=_labels(meta.get("labels", user_meta.get("labels"))),
                         shards=_shards(model_json), bridge_version=str(meta.get("version") or __version__))


def _read_model_json(path: Path) -> dict[str, Any]:
    try:
        model = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WebModelError(f"cannot read {path}: {exc}", stage=STAGE,
                            hint="write the web model before its module") from exc
    if not isinstance(model, dict) or model.get("format") != "graph-model":
        raise WebModelError(f"{path} is not a TF.js graph model", stage=STAGE,
                            hint="the generated module loads graph models (tf.loadGraphModel)")
    return model


def _needs_async(model_json: Mapping[str, Any], meta: Mapping[str, Any]) -> bool:
    """bridge's recorded answer, else whether the graph holds ops that need executeAsync()."""
    if isinstance(meta.get("needsAsync"), bool):
        return bool(meta["needsAsync"])
    from bridge.tfjs.op_list import ASYNC_OPS

    topology = model_json.get("modelTopology") or {}
    ops = {node.get("op") for node in topology.get("node") or []}
    for function in (topology.get("library") or {}).get("function") or []:
        ops |= {node.get("op") for node in function.get("nodeDef") or []}
    return bool(ops & ASYNC_OPS)


def _labels(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and value:
        return tuple(str(v) for v in value)
    return None


def _shards(model_json: Mapping[str, Any]) -> tuple[str, ...]:
    paths = [str(p) for group in model_json.get("weightsManifest") or [] for p in group.get("paths") or []]
    bad = [p for p in paths if p.startswith(("/", "\\")) or ".." in Path(p).parts]
    if bad:
        raise WebModelError(f"weight shard path(s) outside the web model folder: {', '.join(bad)}", stage=STAGE,
                            hint="re-export the web model")
    return tuple(paths)


def image_input(port: Port, override: Mapping[str, Any] | None = None) -> ImageInput | None:
    """The picture preprocessing for `port` (None when it is not a 4-D float input with 1, 3 or 4 channels).

    With a fixed height and width this is the demo page's record; a dynamic height or width keeps the picture's
    own size (or the size given to fromImage())."""
    shape = port.web_shape
    if len(shape) != 4:
        return None
    axis = channel_axis(port)
    if shape[axis] is None:
        return None
    spatial = (1, 2) if axis == 3 else (2, 3)
    # The demo page's rules need concrete sizes: stand in 1 for dynamic ones, then put them back as None.
    stand_in = np.zeros([1 if d is None else d for d in shape], dtype=np.float32)
    record = image_preprocessing(port, stand_in, override)
    if record is None:
        return None
    height, width = (shape[spatial[0]], shape[spatial[1]])
    description = record["description"]
    if height is None or width is None:
        description = _dynamic_description(record)
    return ImageInput(input=port.name, height=height, width=width, channels=int(record["channels"]),
                      layout=str(record["layout"]), range=(float(record["range"][0]), float(record["range"][1])),
                      mean=tuple(record["mean"]) if record["mean"] is not None else None,
                      std=tuple(record["std"]) if record["std"] is not None else None, description=description)


def _dynamic_description(record: Mapping[str, Any]) -> str:
    lo, hi = record["range"]
    colour = {1: "grey (the mean of R, G and B)", 3: "RGB", 4: "RGBA"}[record["channels"]]
    text = (f"The picture keeps its own size (or the width and height given to fromImage()), is read as {colour}, "
            f"and its 0–255 values are scaled to [{lo:g}, {hi:g}]")
    if record["mean"] is not None:
        text += f", minus the mean {record['mean']}"
    if record["std"] is not None:
        text += f", divided by the std {record['std']}"
    return text + f"; the tensor is laid out {str(record['layout']).upper()}."
