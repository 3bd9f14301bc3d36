"""A compiled Keras model's loss, metrics and optimizer as the ``trainingConfig`` tfjs-layers 4.22 reads.

tfjs-layers' `loadTrainingConfig` camel-cases the loss and metric names and deserializes ``optimizer_config``
(``{"class_name", "config"}``, keys camel-cased: ``learning_rate`` -> ``learningRate``, ``beta_1`` -> ``beta1``)
through tfjs-core's optimizer registry; it refuses ``loss_weights``, ``weighted_metrics`` and
``sample_weight_mode``. Anything TF.js would load differently (a loss ``from_logits``, an optimizer with weight
decay or clipping, a learning-rate schedule) is reported as a problem rather than written.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.tfjs.layers.registry import LOSS_ALIASES, LOSSES, METRIC_ALIASES, METRICS, OPTIMIZER_CLASSES

# Per TF.js optimizer class: the Keras config keys it reads (Keras name -> name written).
_OPTIMIZER_KEYS: dict[str, dict[str, str]] = {
    "SGD": {"learning_rate": "learning_rate"},
    "Momentum": {"learning_rate": "learning_rate", "momentum": "momentum", "nesterov": "use_nesterov"},
    "Adam": {"learning_rate": "learning_rate", "beta_1": "beta_1", "beta_2": "beta_2", "epsilon": "epsilon"},
    "Adamax": {"learning_rate": "learning_rate", "beta_1": "beta_1", "beta_2": "beta_2", "epsilon": "epsilon"},
    "Adagrad": {"learning_rate": "learning_rate", "initial_accumulator_value": "initial_accumulator_value"},
    "Adadelta": {"learning_rate": "learning_rate", "rho": "rho", "epsilon": "epsilon"},
    "RMSProp": {"learning_rate": "learning_rate", "rho": "decay", "momentum": "momentum", "epsilon": "epsilon",
                "centered": "centered"},
}
# Keras optimizer options TF.js has no counterpart for, with their "off" value.
_OFF: dict[str, Any] = {"weight_decay": None, "clipnorm": None, "clipvalue": None, "global_clipnorm": None,
                        "use_ema": False, "amsgrad": False, "loss_scale_factor": None,
                        "gradient_accumulation_steps": None}


@dataclass
class TrainingConfig:
    """The translated training config (None when the model is not compiled) and why parts could not be."""

    config: dict[str, Any] | None
    problems: list[str] = field(default_factory=list)


def training_config(model: Any) -> TrainingConfig:
    """The ``trainingConfig`` of a compiled tf_keras or Keras 3 `model` (config None if it is not compiled or a
    problem prevents it; every problem is listed)."""
    compile_config = model.get_compile_config() if getattr(model, "optimizer", None) is not None else None
    if not compile_config:
        return TrainingConfig(None)
    problems: list[str] = []
    for key in ("loss_weights", "weighted_metrics"):
        if compile_config.get(key):
            problems.append(f"{key} (tfjs-layers refuses to load it)")
    loss = _losses(compile_config.get("loss"), problems)
    metrics = _metrics(compile_config.get("metrics"), problems, [str(n) for n in getattr(model, "output_names", [])])
    optimizer = optimizer_config(model.optimizer, problems)
    if problems:
        return TrainingConfig(None, problems)
    config: dict[str, Any] = {"loss": loss}
    if metrics:
        config["metrics"] = metrics
    config["optimizer_config"] = optimizer
    return TrainingConfig(config)


def _losses(loss: Any, problems: list[str]) -> Any:
    """A loss, or a list / dict of per-output losses, as tfjs loss names."""
    if isinstance(loss, list):
        return [_loss(item, problems) for item in loss]
    if isinstance(loss, Mapping) and not ("class_name" in loss and "config" in loss):
        return {str(k): _loss(v, problems) for k, v in loss.items()}
    return _loss(loss, problems)


def _function_name(value: Any) -> Any:
    """A serialized plain function (``{"class_name": "function", "config": "mse"}``, as a reloaded tf_keras model
    reports its compile arguments) as its name; anything else unchanged."""
    if isinstance(value, Mapping) and value.get("class_name") == "function" and isinstance(value.get("config"), str):
        return value["config"]
    return value


def _loss(loss: Any, problems: list[str]) -> str | None:
    """One loss (name or serialized object) as a tfjs loss name."""
    loss = _function_name(loss)
    if isinstance(loss, Mapping):
        config = loss.get("config") or {}
        if config.get("from_logits"):
            problems.append(f"loss {loss.get('class_name')} with from_logits=True (TF.js losses take "
                            "probabilities)")
        if config.get("label_smoothing"):
            problems.append(f"loss {loss.get('class_name')} with label_smoothing (not in TF.js)")
        if config.get("reduction") not in (None, "auto", "sum_over_batch_size"):
            problems.append(f"loss reduction {config.get('reduction')!r} (TF.js averages over the batch)")
        loss = loss.get("class_name")
    name = LOSS_ALIASES.get(str(loss), str(loss))
    if name not in LOSSES:
        problems.append(f"loss {loss!r} (TF.js has no loss of this name)")
        return None
    return name


def _metrics(metrics: Any, problems: list[str], output_names: list[str]) -> Any:
    """Metrics as tfjs metric names: a list, or a dict of per-output lists (a reloaded tf_keras model nests them
    per output: one list for all outputs when they agree, else a dict by output name)."""
    if metrics is None:
        return None
    if isinstance(metrics, Mapping) and not ("class_name" in metrics and "config" in metrics):
        return {str(k): _metrics(v, problems, output_names) for k, v in metrics.items()}
    items = metrics if isinstance(metrics, list) else [metrics]
    if items and all(isinstance(item, list) for item in items):
        per_output = [[_metric(m, problems) for m in item] for item in items]
        if all(names == per_output[0] for names in per_output) or len(per_output) != len(output_names):
            return per_output[0]
        return dict(zip(output_names, per_output))
    return [_metric(item, problems) for item in items]


def _metric(metric: Any, problems: list[str]) -> str | None:
    """One metric (name or serialized object) as a tfjs metric name."""
    metric = _function_name(metric)
    if isinstance(metric, Mapping) and metric.get("class_name") == "MeanMetricWrapper":
        metric = _function_name((metric.get("config") or {}).get("fn")) or metric.get("config", {}).get("name")
    if isinstance(metric, Mapping):
        metric = metric.get("class_name")
    name = METRIC_ALIASES.get(str(metric), str(metric))
    if name not in METRICS:
        problems.append(f"metric {metric!r} (TF.js has no metric of this name)")
        return None
    return name


def optimizer_config(optimizer: Any, problems: list[str]) -> dict[str, Any] | None:
    """The live Keras `optimizer` as ``{"class_name", "config"}`` of the TF.js optimizer that does the same."""
    keras_class = type(optimizer).__name__
    config = dict(optimizer.get_config())
    tfjs_class = OPTIMIZER_CLASSES.get(keras_class)
    if tfjs_class is None:
        problems.append(f"optimizer {keras_class} (TF.js has {', '.join(sorted(set(OPTIMIZER_CLASSES.values())))})")
        return None
    if tfjs_class == "SGD" and float(config.get("momentum") or 0.0) != 0.0:
        tfjs_class = "Momentum"
    if tfjs_class == "SGD" and config.get("nesterov"):
        problems.append("optimizer SGD with nesterov=True and no momentum")
    for key, off in _OFF.items():
        if config.get(key, off) != off:
            problems.append(f"optimizer option {key}={config[key]!r} (not in TF.js optimizers)")
    if not isinstance(config.get("learning_rate"), numbers.Real):  # a schedule serializes as a dict
        problems.append("a learning-rate schedule (TF.js optimizers take a fixed learning rate)")
    out = {target: _json_scalar(config[key]) for key, target in _OPTIMIZER_KEYS[tfjs_class].items() if key in config}
    return {"class_name": tfjs_class, "config": out}


def _json_scalar(value: Any) -> Any:
    """Numpy scalars (tf_keras keeps some hyper-parameters as float32) as plain JSON numbers."""
    if isinstance(value, bool) or value is None:
        return value
    if hasattr(value, "item"):
        value = value.item()
    return float(value) if isinstance(value, float) else value
