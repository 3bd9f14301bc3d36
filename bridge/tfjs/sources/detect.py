"""Which input format a path holds, from what is on disk (names, magic bytes), never by loading it."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from bridge.errors import SourceFormatError, UsageError
from bridge.tfjs.sources.base import INPUT_FORMATS, STAGE

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_FORMATS_HINT = f"pass --input-format with one of: {', '.join(INPUT_FORMATS)}"


def detect_input_format(path: Path) -> str:
    """The input format of `path` (see `INPUT_FORMATS`); `SourceFormatError` when nothing matches.

    Folders: a TF.js layers model (model.json with ``format: layers-model``), a TF1 Hub module
    (``tfhub_module.pb``), a Keras SavedModel (``keras_metadata.pb`` beside ``saved_model.pb``) or a SavedModel.
    Files: HDF5 (Keras ``.h5``), a zip with ``config.json`` (Keras 3 ``.keras``), ``.pb`` (frozen GraphDef), a
    model.json (its folder)."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"input {str(path)!r} does not exist", stage=STAGE, hint="check the path")
    if path.is_dir():
        return _folder_format(path)
    if path.name == "model.json":
        return _folder_format(path.parent)
    head = _head(path)
    if head.startswith(_HDF5_MAGIC):
        return "keras"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if "config.json" in archive.namelist():
                return "keras_keras"
        raise SourceFormatError(f"{path} is a zip archive without config.json, not a Keras 3 .keras file",
                                stage=STAGE, hint=_FORMATS_HINT)
    if path.suffix in (".pb", ".pbtxt"):
        return "tf_frozen_model"
    raise SourceFormatError(f"cannot tell the format of {path}", stage=STAGE, hint=_FORMATS_HINT)


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as stream:
            return stream.read(8)
    except OSError as exc:
        raise SourceFormatError(f"cannot read {path}: {exc.strerror}", stage=STAGE) from exc


def _folder_format(folder: Path) -> str:
    """The format of a folder input."""
    model_json = folder / "model.json"
    if model_json.is_file():
        try:
            fmt = json.loads(model_json.read_text(encoding="utf-8")).get("format")
        except (OSError, ValueError, AttributeError) as exc:
            raise SourceFormatError(f"{model_json} is not valid JSON: {exc}", stage=STAGE) from exc
        if fmt == "layers-model":
            return "tfjs_layers_model"
        raise SourceFormatError(f"{folder} holds a TF.js model of format {fmt!r}; only layers models are read",
                                stage=STAGE, hint="a graph model is already what bridge tfjs writes")
    if (folder / "tfhub_module.pb").is_file():
        return "tf_hub"
    if (folder / "saved_model.pb").is_file() or (folder / "saved_model.pbtxt").is_file():
        return "keras_saved_model" if (folder / "keras_metadata.pb").is_file() else "tf_saved_model"
    raise SourceFormatError(f"{folder} holds no SavedModel, Hub module or TF.js layers model", stage=STAGE,
                            hint=_FORMATS_HINT)
