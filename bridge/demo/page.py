"""The demo page bridge writes next to a converted model: `OUT/index.html` (from templates/index.html.j2).

The page is static and offline: it loads TF.js from `OUT/tfjs/` (copied from the pinned npm packages), the model
from the web model folder (a graph model, `tf.loadGraphModel`, or a layers model, `tf.loadLayersModel`), and the
bundled sample inputs and reference outputs from `sample_inputs.bin` (described by `sample_inputs.json`), all by
relative URL, so any static file server (or `bridge serve OUT`) can host it. It shows the model's signature and
metadata, runs the samples on the chosen backend (webgl, wasm, cpu, and webgpu where the browser has an adapter
and the webgpu build was copied) with timings and the max |Δ| against the reference, takes a picture for image
inputs with the recorded preprocessing, shows every other input's sample values in an editor (edit, validate,
run), and keeps the model in IndexedDB under a key derived from a hash of the model files, so a reload uses the
cached copy unless the model changed. For a layers model it adds a panel that trains the model on the samples
and saves it with `model.save()` (IndexedDB, localStorage, downloads, or an upload to `bridge serve
--accept-uploads`).

`write_demo_page` takes everything explicitly (the pipeline's call); `write_demo_page_from_parity` rebuilds it
from an output folder's stored parity data (`bridge tfjs` outputs, whose model.json is at the folder's root).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from markupsafe import Markup

from bridge import __version__
from bridge.errors import MissingDependencyError, UsageError, WebModelError
from bridge.runtime.tensor_io import pack_writer, to_js_array
from bridge.source.ports import Port, interface_from_model_json

STAGE = "demo-page"
PAGE_NAME = "index.html"
TFJS_DIR = "tfjs"
SAMPLES_BIN = "sample_inputs.bin"
SAMPLES_JSON = "sample_inputs.json"
# Sample sets are bundled while their inputs and reference outputs add up to at most this; the first always is.
MAX_SAMPLE_BYTES = 16 * 1024 * 1024
# Relative to the pinned node_modules folder; copied flat into OUT/tfjs/. Only the single-threaded wasm builds:
# the threaded one needs cross-origin isolation headers a plain static host does not send.
# tf.fesm.min.js: TF.js as one ES module, for pages that import the generated model.js through an import map.
TFJS_FILES = ("@tensorflow/tfjs/dist/tf.min.js", "@tensorflow/tfjs/dist/tf.fesm.min.js",
              "@tensorflow/tfjs-backend-wasm/dist/tf-backend-wasm.min.js",
              "@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm",
              "@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm")
# Copied when installed (the page then offers webgpu where the browser has an adapter); the page works without it.
WEBGPU_FILE = "@tensorflow/tfjs-backend-webgpu/dist/tf-backend-webgpu.min.js"
MODEL_FORMATS = {"graph-model": "graph", "layers-model": "layers"}
# Inputs with more values than this are shown, not edited, in the page's input editor.
MAX_EDIT_VALUES = 4096
INT32_RANGE = (-2**31, 2**31 - 1)
REFERENCE_NAMES = {"pytorch": "PyTorch", "onnxruntime": "onnxruntime", "tensorflow": "TensorFlow",
                   "keras": "Keras"}
TRAINING = {"epochs": 5, "learningRate": 0.01, "optimizers": ["adam", "sgd"],
            "losses": ["meanSquaredError", "meanAbsoluteError"]}
IMAGE_CHANNELS = (1, 3, 4)
DEFAULT_RANGE = (0.0, 1.0)
TIMED_RUNS = 5


def write_demo_page(out_dir: Path, *, web_model: Path, input_ports: Sequence[Port], output_ports: Sequence[Port],
                    samples: Sequence[Mapping[str, np.ndarray]], reference: Sequence[Mapping[str, np.ndarray]],
                    model_name: str, preprocessing: Mapping[str, Mapping[str, Any]] | None = None,
                    atol: float = 1e-4, rtol: float = 1e-3,
                    input_ranges: Mapping[str, tuple[float | None, float | None]] | None = None,
                    reference_name: str = "PyTorch") -> Path:
    """Write `out_dir/index.html`, `out_dir/tfjs/` and the bundled samples; return the page's path.

    `web_model` is the folder holding model.json (it must be inside `out_dir`, so the page can reach it by a
    relative URL). `samples` and `reference` are input and PyTorch output sets already in the web layout (as
    `bridge.interface.to_web_samples` gives them), keyed by port name. `preprocessing` optionally overrides, per
    image input name, the picture preprocessing: ``range`` ([lo, hi] the 0..255 pixels are scaled to, [0, 1] by
    default), ``mean`` and ``std`` (per channel, applied after scaling). `atol`/`rtol` are the tolerances the page
    uses to flag the max |Δ| against the reference. `input_ranges` gives, per integer input, the (low, high)
    values were drawn from (``ids:1x8:int64:0..99``): the input editor refuses values outside it. `reference_name`
    names what gave the reference outputs ("PyTorch", "Keras", ...). `web_model` may hold a graph model or a
    layers model (then the page adds its train-and-save panel).
    """
    out_dir, web_model = Path(out_dir), Path(web_model)
    model_url = web_model_url(out_dir, web_model)
    model_json = read_model_json(web_model)
    if not samples or len(samples) != len(reference):
        raise UsageError(f"the demo page needs sample inputs with their reference outputs (got {len(samples)} "
                         f"input set(s) and {len(reference)} output set(s))", stage=STAGE)
    data = page_data(model_json, model_url=model_url, fingerprint=model_fingerprint(web_model, model_json),
                     input_ports=input_ports, output_ports=output_ports, first_sample=samples[0],
                     model_name=model_name, preprocessing=preprocessing or recorded_preprocessing(model_json),
                     tolerance=(atol, rtol),
                     input_ranges=input_ranges or {}, reference_name=reference_name)
    copied = copy_tfjs(out_dir / TFJS_DIR)
    data["webgpu"] = any(path.name == Path(WEBGPU_FILE).name for path in copied)
    sample_info = write_samples(out_dir, input_ports, output_ports, samples, reference)
    data["samples"] = {"json": SAMPLES_JSON, "count": len(sample_info["sets"]), "bundledOf": len(samples)}
    from bridge.util.templating import render

    page = out_dir / PAGE_NAME
    page.write_text(render("index.html.j2", title=f"{model_name} · bridge demo", data=data,
                           data_json=embedded_json(data)), encoding="utf-8")
    return page


def recorded_preprocessing(model_json: Mapping[str, Any]) -> dict[str, Any]:
    """The picture preprocessing given at conversion (--image-range, --mean, --std), as model.json records it in
    userDefinedMetadata.bridge.preprocessing (per image input); empty when none was given."""
    meta = (model_json.get("userDefinedMetadata") or {}).get("bridge") or {}
    recorded = meta.get("preprocessing")
    return dict(recorded) if isinstance(recorded, Mapping) else {}


def write_demo_page_from_parity(out_dir: Path, *, model_format: str | None = None, model_name: str | None = None,
                                preprocessing: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """Write the demo page of an output folder from what it stores: ``OUT/parity/`` (samples, reference, input
    ranges, tolerances) and the model it names, the graph model (``web_model``) or the layers model
    (``layers_model``, or model.json at the folder's root as `bridge tfjs` writes it). `model_format`
    (``graph`` or ``layers``) picks one when the folder has both (default: the first the conversion wrote).
    Returns the page's path."""
    from bridge.parity.store import load_parity_data

    out_dir = Path(out_dir)
    stored = load_parity_data(out_dir)
    formats = tuple(stored.web_formats) or ("graph",)
    chosen = model_format or formats[0]
    if chosen not in MODEL_FORMATS.values():
        raise UsageError(f"model_format must be 'graph' or 'layers', got {chosen!r}", stage=STAGE)
    folder = out_dir / (stored.layers_model_dir if chosen == "layers" else stored.web_model_dir)
    model_json = read_model_json(folder)
    try:
        inputs, outputs = ports_from_model_json(model_json)
    except WebModelError:
        inputs, outputs = list(stored.input_ports), list(stored.output_ports)
    options = stored.options
    ranges = {s.name: (s.low, s.high) for s in stored.specs if s.low is not None or s.high is not None}
    source = ((model_json.get("userDefinedMetadata") or {}).get("bridge") or {}).get("source")
    return write_demo_page(out_dir, web_model=folder, input_ports=inputs, output_ports=outputs,
                           samples=stored.interface.web_inputs(stored.samples),
                           reference=stored.interface.web_outputs(stored.reference),
                           model_name=model_name or Path(str(source or out_dir.resolve().name)).name,
                           preprocessing=preprocessing,
                           atol=options.get("atol") or 1e-4, rtol=options.get("rtol") or 1e-3,
                           input_ranges={k: v for k, v in ranges.items() if k in {p.name for p in inputs}},
                           reference_name=REFERENCE_NAMES.get(stored.reference_kind, stored.reference_kind))


# ------------------------------------------------------------------------------------------------ model files

def ports_from_model_json(model_json: Mapping[str, Any]) -> tuple[list[Port], list[Port]]:
    """The input and output ports recorded in model.json's userDefinedMetadata.bridge (to rebuild a page later)."""
    interface = interface_from_model_json(model_json, STAGE)
    return list(interface.inputs), list(interface.outputs)


def web_model_url(out_dir: Path, web_model: Path) -> str:
    """The web model folder's URL relative to the page; it must lie inside `out_dir`."""
    out, folder = out_dir.resolve(), web_model.resolve()
    if folder != out and out not in folder.parents:
        raise UsageError(f"the web model {web_model} is not inside {out_dir}", stage=STAGE,
                         hint="write the demo page into the conversion's output folder, which holds web_model/")
    relative = Path(os.path.relpath(folder, out)).as_posix()
    return "model.json" if relative == "." else f"{relative}/model.json"


def read_model_json(web_model: Path) -> dict[str, Any]:
    """model.json of `web_model` as data; a WebModelError when it is missing or not a graph or layers model."""
    path = web_model / "model.json"
    try:
        model = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WebModelError(f"cannot read {path}: {exc}", stage=STAGE,
                            hint="write the web model before the demo page") from exc
    if not isinstance(model, dict) or model.get("format") not in MODEL_FORMATS:
        raise WebModelError(f"{path} is not a TF.js graph or layers model", stage=STAGE)
    return model


def shard_paths(web_model: Path, model_json: Mapping[str, Any]) -> list[Path]:
    """The weight shards model.json lists, in order; a WebModelError if one is missing or outside the folder."""
    folder = web_model.resolve()
    paths = []
    for group in model_json.get("weightsManifest", []):
        for rel in group.get("paths", []):
            path = (folder / rel).resolve()
            if folder not in path.parents or not path.is_file():
                raise WebModelError(f"weight shard '{rel}' of {web_model} is missing or outside its folder",
                                    stage=STAGE, hint="re-export the web model")
            paths.append(path)
    return paths


def model_fingerprint(web_model: Path, model_json: Mapping[str, Any]) -> dict[str, Any]:
    """SHA-256 over model.json and every shard (name, size and bytes), plus the shard count and total bytes.

    The page keys its IndexedDB copy on this hash, so new weights with an unchanged architecture (same model.json,
    same shard sizes) still invalidate the cached copy.
    """
    digest = hashlib.sha256((web_model / "model.json").read_bytes())
    total = 0
    shards = shard_paths(web_model, model_json)
    for path in shards:
        size = path.stat().st_size
        total += size
        digest.update(f"\0{path.name}\0{size}\0".encode())
        with open(path, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return {"sha256": digest.hexdigest(), "shards": len(shards), "weightBytes": total}


def copy_tfjs(target: Path) -> list[Path]:
    """Copy the pinned TF.js browser builds the page needs into `target` (and the webgpu build when it is
    installed); returns the copied files."""
    from bridge.runtime.node import SETUP_HINT, node_modules_dir

    modules = node_modules_dir()
    missing = [name for name in TFJS_FILES if not (modules / name).is_file()]
    if missing:
        raise MissingDependencyError(f"the TF.js browser builds are missing from {modules}", stage=STAGE,
                                     hint=SETUP_HINT, details=missing)
    target.mkdir(parents=True, exist_ok=True)
    optional = [WEBGPU_FILE] if (modules / WEBGPU_FILE).is_file() else []
    return [Path(shutil.copyfile(modules / name, target / Path(name).name)) for name in (*TFJS_FILES, *optional)]


def tfjs_version() -> str:
    """The version of the pinned TF.js package the page's tf.min.js comes from ("unknown" if unreadable)."""
    from bridge.runtime.node import node_modules_dir

    try:
        return str(json.loads((node_modules_dir() / "@tensorflow/tfjs/package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return "unknown"


# ------------------------------------------------------------------------------------------------ samples

def _set_bytes(inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> int:
    return sum(np.asarray(a).nbytes for a in (*inputs.values(), *outputs.values()))


def write_samples(out_dir: Path, input_ports: Sequence[Port], output_ports: Sequence[Port],
                  samples: Sequence[Mapping[str, np.ndarray]],
                  reference: Sequence[Mapping[str, np.ndarray]]) -> dict[str, Any]:
    """Pack sample inputs and reference outputs into sample_inputs.bin, describe them in sample_inputs.json.

    Sets are bundled in order while they fit in MAX_SAMPLE_BYTES (the first one always). Returns the description:
    ``{"bin": ..., "sets": [{"inputs": {name: ref}, "reference": {name: ref}}]}`` with tensor_io refs.
    """
    sets: list[dict[str, Any]] = []
    used = 0
    with pack_writer(out_dir / SAMPLES_BIN) as writer:
        for index, (inputs, outputs) in enumerate(zip(samples, reference)):
            used += _set_bytes(inputs, outputs)
            if sets and used > MAX_SAMPLE_BYTES:
                break
            sets.append({
                "inputs": {p.name: writer.add(to_js_array(_named(inputs, p, "input", index), p.name)).to_json()
                           for p in input_ports},
                "reference": {p.name: writer.add(to_js_array(_named(outputs, p, "output", index), p.name)).to_json()
                              for p in output_ports},
            })
    info = {"format": "bridge-samples", "version": 1, "bin": SAMPLES_BIN,
            "note": "tensors in the web model's layout; refs give dtype, shape, byte offset and length in the bin",
            "sets": sets}
    (out_dir / SAMPLES_JSON).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return info


def _named(values: Mapping[str, np.ndarray], port: Port, kind: str, index: int) -> np.ndarray:
    if port.name not in values:
        raise UsageError(f"sample set {index} has no {kind} '{port.name}'", stage=STAGE,
                         hint="pass samples and reference keyed by port name, in the web layout")
    return np.asarray(values[port.name])


# ------------------------------------------------------------------------------------------------ page data

def channel_axis(port: Port) -> int:
    """Where the channels are in a 4-D web input: last for nhwc, else PyTorch's axis 1."""
    return 3 if port.layout == "nhwc" else 1


def image_preprocessing(port: Port, sample: np.ndarray | None,
                        override: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The picture preprocessing for `port`, or None when it is not an image input (4-D float, 1/3/4 channels).

    Unknown (dynamic) sizes are taken from the sample. The record says what the page does: stretch the picture to
    height x width (canvas resampling), take its channels (1 = grey, 3 = RGB, 4 = RGBA), scale 0..255 to ``range``, then
    subtract ``mean`` and divide by ``std`` per channel, and lay it out as the model wants.
    """
    shape = list(port.web_shape)
    if len(shape) != 4 or not port.web_dtype.startswith("float"):
        return None
    if sample is not None:
        shape = [d if d is not None else int(s) for d, s in zip(shape, np.shape(sample))]
    axis = channel_axis(port)
    height, width = (shape[1], shape[2]) if axis == 3 else (shape[2], shape[3])
    channels = shape[axis]
    if channels not in IMAGE_CHANNELS or height is None or width is None:
        return None
    override = dict(override or {})
    lo, hi = (float(v) for v in override.get("range", DEFAULT_RANGE))
    mean, std = _per_channel(override.get("mean"), channels, "mean"), _per_channel(override.get("std"), channels,
                                                                                    "std")
    layout = "nhwc" if axis == 3 else "nchw"
    tensor_shape = [1, height, width, channels] if axis == 3 else [1, channels, height, width]
    record = {"input": port.name, "height": int(height), "width": int(width), "channels": int(channels),
              "layout": layout, "shape": tensor_shape, "resize": "stretch (canvas drawImage, high-quality smoothing)",
              "range": [lo, hi], "mean": mean, "std": std}
    record["description"] = describe_preprocessing(record)
    return record


def _per_channel(value: Any, channels: int, name: str) -> list[float] | None:
    if value is None:
        return None
    given = list(value) if isinstance(value, (list, tuple)) else [value]
    values = [float(v) for v in (given * channels if len(given) == 1 else given)]  # one value: every channel
    if len(values) != channels or (name == "std" and any(v == 0 for v in values)):
        raise UsageError(f"preprocessing {name} must give {channels} value(s){' (non-zero)' if name == 'std' else ''}"
                         f", got {value!r}", stage=STAGE)
    return values


def describe_preprocessing(record: Mapping[str, Any]) -> str:
    """One sentence saying what the page does to a picture before it reaches the model."""
    colour = {1: "grey (the mean of R, G and B)", 3: "RGB", 4: "RGBA"}[record["channels"]]
    lo, hi = record["range"]
    text = (f"The picture is stretched to {record['width']}×{record['height']} pixels (the browser's smooth canvas "
            f"resampling; the aspect ratio is not kept), read as {colour}, and its 0–255 values are scaled to "
            f"[{lo:g}, {hi:g}]")
    if record["mean"] is not None:
        text += f", minus the mean {_numbers(record['mean'])}"
    if record["std"] is not None:
        text += f", divided by the std {_numbers(record['std'])}"
    shape = "×".join(str(d) for d in record["shape"])
    return text + f"; the tensor is laid out {record['layout'].upper()} as [{shape}]."


def _numbers(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def cache_key(model_name: str, sha256: str) -> tuple[str, str]:
    """The IndexedDB key prefix for this model name, and the full key for this exact model."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", model_name).strip("-")[:48] or "model"
    prefix = f"bridge-demo-{slug}-"
    return prefix, prefix + sha256[:16]


def editor_record(port: Port, sample: np.ndarray | None,
                  value_range: tuple[float | None, float | None] | None) -> dict[str, Any]:
    """What the page's input editor needs for a non-image input: its kind of values (``int``, ``float``,
    ``bool``), the integer range values must stay in (the conversion's LOW..HIGH, else int32's), and whether the
    sample is small enough to edit."""
    dtype = port.web_dtype
    kind = "bool" if dtype == "bool" else ("int" if dtype.startswith(("int", "uint")) else "float")
    count = int(np.size(sample)) if sample is not None else None
    record: dict[str, Any] = {"input": port.name, "dtype": dtype, "kind": kind, "range": None,
                              "editable": count is None or count <= MAX_EDIT_VALUES, "maxValues": MAX_EDIT_VALUES}
    if kind == "int":
        low, high = value_range or (None, None)
        lo = INT32_RANGE[0] if low is None else max(INT32_RANGE[0], math.ceil(low))
        hi = INT32_RANGE[1] if high is None else min(INT32_RANGE[1], math.floor(high))
        record["range"] = [lo, hi]
        record["rangeGiven"] = low is not None or high is not None
    return record


def page_data(model_json: Mapping[str, Any], *, model_url: str, fingerprint: Mapping[str, Any],
              input_ports: Sequence[Port], output_ports: Sequence[Port], first_sample: Mapping[str, np.ndarray],
              model_name: str, preprocessing: Mapping[str, Mapping[str, Any]],
              tolerance: tuple[float, float],
              input_ranges: Mapping[str, tuple[float | None, float | None]] | None = None,
              reference_name: str = "PyTorch") -> dict[str, Any]:
    """Everything the page script needs, as JSON-ready data (embedded in the page)."""
    input_ranges = input_ranges or {}
    unknown = sorted(set(preprocessing) - {p.name for p in input_ports})
    if unknown:
        raise UsageError(f"preprocessing given for unknown input(s) {', '.join(unknown)}", stage=STAGE)
    unknown = sorted(set(input_ranges) - {p.name for p in input_ports})
    if unknown:
        raise UsageError(f"value ranges given for unknown input(s) {', '.join(unknown)}", stage=STAGE)
    user_meta = dict(model_json.get("userDefinedMetadata") or {})
    bridge_meta = dict(user_meta.pop("bridge", None) or {})
    prefix, key = cache_key(model_name, fingerprint["sha256"])
    images = [image_preprocessing(p, first_sample.get(p.name), preprocessing.get(p.name)) for p in input_ports]
    editors = [editor_record(p, first_sample.get(p.name), input_ranges.get(p.name))
               for p, image in zip(input_ports, images) if image is None]
    model_format = MODEL_FORMATS[str(model_json.get("format"))]
    return {
        "schema": 1,
        "format": model_format,
        "reference": reference_name,
        "model": {"name": model_name, "url": model_url, "sha256": fingerprint["sha256"],
                  "shards": fingerprint["shards"], "weightBytes": fingerprint["weightBytes"],
                  "cacheKey": key, "cachePrefix": prefix, "needsAsync": bridge_meta.get("needsAsync"),
                  "route": bridge_meta.get("route"), "source": bridge_meta.get("source", model_name),
                  "convertedBy": model_json.get("convertedBy"), "generatedBy": model_json.get("generatedBy"),
                  "bridgeVersion": bridge_meta.get("version", __version__),
                  "quantization": _quantization_summary(bridge_meta.get("quantization")), "tfjs": tfjs_version()},
        "inputs": [p.metadata() for p in input_ports],
        "outputs": [p.metadata() for p in output_ports],
        "userMetadata": user_meta,
        "userMetadataText": {key: _short_json(value) for key, value in user_meta.items()},
        "preprocessing": [r for r in images if r is not None],
        "editors": editors,
        "training": dict(TRAINING) if model_format == "layers" else None,
        "webgpu": False,
        "tolerance": {"atol": tolerance[0], "rtol": tolerance[1]},
        "tfjsPath": f"{TFJS_DIR}/",
        "timedRuns": TIMED_RUNS,
        "pageBy": f"bridge {__version__}",
    }


def _short_json(value: Any, limit: int = 240) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _quantization_summary(quantization: Any) -> str:
    """model.json's quantization record (``weights`` maps a dtype to how many weights use it) as a phrase."""
    counts = quantization.get("weights") if isinstance(quantization, Mapping) else None
    if not isinstance(counts, Mapping) or not counts:
        return "none (float32 weights)"
    return ", ".join(f"{count} weight(s) as {dtype}" for dtype, count in sorted(counts.items()))


def embedded_json(data: Any) -> Markup:
    """JSON safe to place inside a <script type="application/json"> element (no '<', '>' or '&' in the text)."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))
