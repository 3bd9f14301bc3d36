"""Writes model.js, model.d.ts and package.json into a web model folder (templates/webmodule/*.j2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bridge.errors import UsageError
from bridge.source.ports import Port
from bridge.util.templating import render
from bridge.webmodule import typescript as ts
from bridge.webmodule.package import DEFAULT_VERSION, is_valid_package_name, package_json, package_name
from bridge.webmodule.spec import STAGE, WebModuleSpec, read_spec

MODULE_FILES = ("model.js", "model.d.ts", "package.json")


def write_web_module(web_model_dir: Path | str, *, name: str | None = None,
                     version: str = DEFAULT_VERSION) -> list[Path]:
    """Write model.js (an ES module importing ``@tensorflow/tfjs``), model.d.ts and package.json into the web
    model folder bridge wrote (model.json with ``userDefinedMetadata.bridge``); returns the three paths.

    `name` is the npm package name (default: from the model's name, ``TinyCNN`` -> ``tiny-cnn``); `version` its
    version. Raises WebModelError when model.json is missing or lacks bridge's metadata, UsageError for an
    invalid package name.
    """
    spec = read_spec(Path(web_model_dir))
    package = name if name is not None else package_name(spec.title)
    if not is_valid_package_name(package):
        raise UsageError(f"'{package}' is not a valid npm package name", stage=STAGE,
                         hint="use lowercase letters, digits, '-', '.', '_' (optionally @scope/name)")
    files = {
        "model.js": render("webmodule/model.js.j2", **module_context(spec, package)),
        "model.d.ts": render("webmodule/model.d.ts.j2", **declarations_context(spec)),
        "package.json": json.dumps(package_json(name=package, version=version, description=_description(spec),
                                                shards=spec.shards), indent=2) + "\n",
    }
    written = []
    for file_name in MODULE_FILES:
        path = spec.folder / file_name
        path.write_text(files[file_name], encoding="utf-8")
        written.append(path)
    return written


def _description(spec: WebModuleSpec) -> str:
    return f"{spec.title} as a TF.js graph model (converted from PyTorch by bridge {spec.bridge_version})"


def _js_json(items: list[Any]) -> str:
    """A JSON list for embedding in JavaScript source, one item per line (U+2028/2029 escaped)."""
    if not items:
        return "[]"
    lines = [json.dumps(item, ensure_ascii=False) for item in items]
    text = "[\n" + ",\n".join(f"  {line}" for line in lines) + ",\n]"
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def module_context(spec: WebModuleSpec, package: str) -> dict[str, Any]:
    """What model.js.j2 renders from."""
    first_out = spec.outputs[0]
    return {
        "title": spec.title, "bridge_version": spec.bridge_version, "package_name": package,
        "inputs_json": _js_json([p.metadata() for p in spec.inputs]),
        "outputs_json": _js_json([p.metadata() for p in spec.outputs]),
        "images_json": _js_json([image.to_json() for image in spec.images]),
        "needs_async_json": json.dumps(spec.needs_async),
        "labels_json": json.dumps(list(spec.labels), ensure_ascii=False) if spec.labels else "null",
        "example_call": example_call(spec),
        "example_output": f".{first_out.name}" if ts.property_key(first_out.name) == first_out.name
        else f"[{json.dumps(first_out.name)}]",
        "example_output_text": f"{first_out.web_dtype} {ts.shape_text(first_out.web_shape)}",
    }


def example_call(spec: WebModuleSpec) -> str:
    """The predict() argument the header comment shows: a picture for image inputs, else a typed array."""
    images = {image.input for image in spec.images}
    parts = []
    for port in spec.inputs:
        parts.append(f"{ts.property_key(port.name)}: {'picture' if port.name in images else _example_value(port)}")
    return "{ " + ", ".join(parts) + " }"


def _example_value(port: Port) -> str:
    array = {"float32": "Float32Array", "int32": "BigInt64Array" if port.dtype == "int64" else "Int32Array",
             "bool": "Uint8Array"}.get(port.web_dtype, "Float32Array")
    shape = port.web_shape
    if None not in shape:
        size = 1
        for dim in shape:
            size *= int(dim)
        return f"new {array}({size})"
    names = iter("nmkpq")
    dims = [str(d) if d is not None else next(names, "s") for d in shape]
    size = " * ".join(d for d in dims if d != "1") or "1"
    return f"{{ data: new {array}({size}), shape: [{', '.join(dims)}] }}"


def _quoted(names: list[str]) -> str:
    """A union of string literal types (``never`` when empty)."""
    return " | ".join(json.dumps(n) for n in names) or "never"


def declarations_context(spec: WebModuleSpec) -> dict[str, Any]:
    """What model.d.ts.j2 renders from."""
    return {
        "title": spec.title, "bridge_version": spec.bridge_version,
        "inputs": ts.input_types(spec.inputs, (image.input for image in spec.images)),
        "outputs": ts.output_types(spec.outputs),
        "output_data": ts.output_data_types(spec.outputs),
        "single_input": len(spec.inputs) == 1,
        "input_names": _quoted([p.name for p in spec.inputs]),
        "output_names": _quoted([p.name for p in spec.outputs]),
        "image_names": _quoted([image.input for image in spec.images]),
        "images": [{"quoted": json.dumps(image.input), "description": image.description} for image in spec.images],
        "inputs_literal": ts.literal_type([p.metadata() for p in spec.inputs]),
        "outputs_literal": ts.literal_type([p.metadata() for p in spec.outputs]),
        "images_literal": ts.literal_type([image.to_json() for image in spec.images]),
        "needs_async_literal": json.dumps(spec.needs_async),
        "labels_literal": ts.literal_type(list(spec.labels)) if spec.labels else "null",
    }
