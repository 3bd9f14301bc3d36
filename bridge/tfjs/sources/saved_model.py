"""SavedModels and Hub modules on disk (TF2 SavedModel, TF1 hub format), as `TfSource`s.

The graph route is the existing one (bridge.tfjs.optimize on a ``serve``-tagged SavedModel signature). A
SavedModel with other tags, and a TF1 Hub module (``tfhub_module.pb`` + a SavedModel whose graph has no tags),
are loaded with `tf.saved_model.load`, and the asked signature is re-saved as ``serving_default`` of a
temporary ``serve`` SavedModel first: no Hub library and no network are involved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bridge.errors import MissingSignatureError, ModelLoadError
from bridge.tfjs.sources.base import STAGE, GraphFactory, PortSpec, TfSource, dtype_name, shape_tuple

SERVE = ("serve",)


def load_saved_model(path: Path, *, input_format: str = "tf_saved_model", signature: str | None = None,
                     tags: Sequence[str] | None = None) -> TfSource:
    """A SavedModel (or TF2 Hub module) folder as a source; `signature` defaults to ``serving_default``, `tags` to
    ``serve``. A missing signature raises `MissingSignatureError` listing the ones there are."""
    return _signature_source(Path(path), input_format, signature or "serving_default",
                             tuple(SERVE if tags is None else tags))


def load_hub_v1(path: Path, *, signature: str | None = None, tags: Sequence[str] | None = None) -> TfSource:
    """A TF1 Hub module folder as a source; `signature` defaults to ``default``, `tags` to the empty set (the
    inference graph Hub modules keep)."""
    return _signature_source(Path(path), "tf_hub", signature or "default", tuple(tags or ()))


def _signature_source(path: Path, input_format: str, signature: str, tags: tuple[str, ...]) -> TfSource:
    """Load `signature` of the SavedModel at `path` with `tags`; describe it and wire both routes."""
    loaded = _load(path, tags)
    function = _signature(loaded, path, signature)
    inputs = signature_inputs(function)
    outputs = signature_outputs(function)
    version = str(getattr(loaded, "tensorflow_version", None) or _tf_version())
    factory = saved_model_graph(path, signature) if tags == SERVE else _resaved_graph(loaded, function)
    return TfSource(path=path, input_format=input_format, inputs=inputs, outputs=outputs,
                    reference=signature_reference(function, inputs), generated_by=version, graph_factory=factory)


def _tf_version() -> str:
    import tensorflow as tf

    return tf.__version__


def _load(path: Path, tags: tuple[str, ...]) -> Any:
    """`tf.saved_model.load` with typed errors."""
    import tensorflow as tf

    from bridge.tfjs.freeze import quiet_tf

    if not (path / "saved_model.pb").is_file() and not (path / "saved_model.pbtxt").is_file():
        raise ModelLoadError(f"{path} is not a SavedModel folder (no saved_model.pb)", stage=STAGE,
                             hint="pass the folder written by tf.saved_model.save (or the Hub module's folder)")
    try:
        with quiet_tf():
            return tf.saved_model.load(str(path), tags=list(tags))
    except Exception as exc:  # TF raises many unrelated types here; all mean "cannot load"
        raise ModelLoadError(f"cannot load the SavedModel {path} with tags {list(tags)}: {str(exc)[:400]}",
                             stage=STAGE, hint="check the folder is complete and the tags (--saved_model_tags) "
                                               "name one of its graphs") from exc


def _signature(loaded: Any, path: Path, signature: str) -> Any:
    """The concrete function of `signature`; `MissingSignatureError` lists the available keys."""
    signatures = dict(getattr(loaded, "signatures", {}) or {})
    if signature not in signatures:
        available = sorted(signatures)
        listed = ", ".join(available) or "(none)"
        raise MissingSignatureError(f"{path} has no signature {signature!r}; it has: {listed}", stage=STAGE,
                                    signature=signature, available=available,
                                    hint=f"pass --signature_name with one of: {listed}" if available else
                                    "save the model with a signature (tf.saved_model.save(..., signatures=...))")
    return signatures[signature]


def signature_inputs(function: Any) -> tuple[PortSpec, ...]:
    """A signature function's inputs by key, in its flattened keyword order."""
    from tensorflow.python.util import nest

    _, kwargs = function.structured_input_signature
    return tuple(PortSpec(name=key, dtype=dtype_name(spec.dtype), shape=shape_tuple(spec.shape))
                 for key, spec in nest.flatten_with_joined_string_paths(kwargs))


def signature_outputs(function: Any) -> tuple[PortSpec, ...]:
    """A signature function's outputs by key, in the order the graph writer lists them."""
    from tensorflow.python.util import nest

    return tuple(PortSpec(name=key, dtype=dtype_name(spec.dtype), shape=shape_tuple(spec.shape))
                 for key, spec in nest.flatten_with_joined_string_paths(function.structured_outputs))


def signature_reference(function: Any, inputs: Sequence[PortSpec]) -> Any:
    """The reference runner of a signature function: named arrays in, named arrays out."""
    import tensorflow as tf

    def run(values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {spec.name: tf.constant(np.asarray(values[spec.name]), dtype=spec.dtype) for spec in inputs}
        result = function(**feeds)
        return {key: np.asarray(value) for key, value in _flat_outputs(result).items()}

    return run


def _flat_outputs(result: Any) -> dict[str, Any]:
    """Signature outputs (a possibly nested dict) flattened to joined keys, as the graph writer names them."""
    from tensorflow.python.util import nest

    return dict(nest.flatten_with_joined_string_paths(result))


def saved_model_graph(path: Path, signature: str) -> GraphFactory:
    """The graph route of a ``serve`` SavedModel: bridge.tfjs.optimize on it directly."""

    def build(source: TfSource, control_flow_v2: bool, strip_debug_ops: bool) -> Any:
        from bridge.tfjs.optimize import optimize_for_tfjs

        return optimize_for_tfjs(path, signature=signature, control_flow_v2=control_flow_v2,
                                 strip_debug_ops=strip_debug_ops)

    return build


def _resaved_graph(loaded: Any, function: Any) -> GraphFactory:
    """The graph route of a SavedModel the optimizer cannot load as is (other tags, TF1 Hub): re-save the signature
    as ``serving_default`` of a ``serve`` SavedModel (once), then optimize that."""
    import tensorflow as tf

    from bridge.tfjs.freeze import quiet_tf

    resaved: list[Path] = []

    def build(source: TfSource, control_flow_v2: bool, strip_debug_ops: bool) -> Any:
        if not resaved or not resaved[0].exists():  # again after `close` removed it
            resaved.clear()
            folder = source.temp_dir("resaved") / "saved_model"
            with quiet_tf():
                tf.saved_model.save(loaded, str(folder), signatures={"serving_default": function})
            resaved.append(folder)
        return saved_model_graph(resaved[0], "serving_default")(source, control_flow_v2, strip_debug_ops)

    return build
