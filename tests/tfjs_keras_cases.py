"""The Keras model table shared by the layers-writer and source-reader tests.

Each case builds the same architecture in tf_keras (Keras 2) and in Keras 3 from one function taking the Keras
module, so every case can be saved as ``.h5`` and as a Keras SavedModel (tf_keras) and as ``.keras`` (Keras 3).
Seeds fix the weights; BatchNormalization statistics are set to non-trivial values so inference differs from an
identity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np


@dataclass(frozen=True)
class KerasCase:
    """One table row: how to build the model with a Keras module and make sample inputs."""

    name: str
    build: Callable[[ModuleType], Any]
    inputs: Callable[[np.random.Generator], dict[str, np.ndarray]]
    conv: bool = False  # TF.js wasm has no conv gradient kernels: fit runs on cpu only


def _seeded(K: ModuleType) -> None:
    K.utils.set_random_seed(7)


def _randomize_batch_norms(model: Any, seed: int = 3) -> Any:
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                               rng.normal(0, 0.2, beta.shape).astype("float32"),
                               rng.normal(0, 0.3, mean.shape).astype("float32"),
                               rng.uniform(0.5, 2.0, var.shape).astype("float32")])
    return model


def sequential_dense(K: ModuleType) -> Any:
    _seeded(K)
    L = K.layers
    model = K.Sequential([K.Input((6,), name="features"), L.Dense(8, activation="relu"), L.Dropout(0.3),
                          L.Dense(5, activation="tanh"), L.Dense(4, activation="softmax")], name="seq_dense")
    model.compile(optimizer=K.optimizers.SGD(0.05), loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def conv_branches(K: ModuleType) -> Any:
    _seeded(K)
    L = K.layers
    x = K.Input((12, 12, 3), name="image")
    a = L.Conv2D(4, 3, padding="same", activation="relu")(x)
    a = L.BatchNormalization()(a)
    b = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(x)
    b = L.BatchNormalization()(b)
    b = L.ReLU(max_value=6.0)(b)
    c = L.SeparableConv2D(4, 3, padding="same", activation="elu")(x)
    m = L.Concatenate()([a, b, c])
    m = L.MaxPooling2D(2)(m)
    m = L.Conv2D(6, 3, strides=2, padding="valid", activation="sigmoid")(m)
    m = L.AveragePooling2D(2, padding="same")(m)
    g = L.GlobalAveragePooling2D()(m)
    f = L.Flatten()(m)
    logits = L.Dense(3, name="logits")(L.Concatenate()([g, f]))
    probs = L.Softmax(name="probs")(logits)
    return _randomize_batch_norms(K.Model(x, [logits, probs], name="conv_branches"))


def shared_layers(K: ModuleType) -> Any:
    _seeded(K)
    L = K.layers
    left, right = K.Input((5,), name="left"), K.Input((5,), name="right")
    shared = L.Dense(4, activation="tanh", name="shared")
    u, v = shared(left), shared(right)
    merged = L.Concatenate()([L.Add()([u, v]), L.Multiply()([u, v]), L.Maximum()([u, v]), L.Average()([u, v])])
    out = L.Dense(2, activation="sigmoid", name="score")(shared(L.Dense(5)(merged)))
    return K.Model([left, right], out, name="shared_layers")


def embedding_rnn(K: ModuleType) -> Any:
    _seeded(K)
    L = K.layers
    ids = K.Input((7,), dtype="int32", name="ids")
    h = L.Embedding(20, 6)(ids)
    h = L.LSTM(5, return_sequences=True)(h)
    h = L.GRU(4, reset_after=False, return_sequences=True)(h)
    h = L.SimpleRNN(3)(h)
    return K.Model(ids, L.Dense(3, name="out")(h), name="embedding_rnn")


def norms_activations(K: ModuleType) -> Any:
    _seeded(K)
    L = K.layers
    x = K.Input((10,), name="x")
    h = L.Dense(8, activation="gelu")(x)
    h = L.LayerNormalization(epsilon=1e-5)(h)
    h = L.Dense(8, activation="swish")(h)
    h = L.Activation("selu")(h)
    h = L.Dense(8, activation="softplus")(h)
    h = L.LeakyReLU()(h)
    h = L.Dense(8, activation="softsign")(h)
    h = L.PReLU()(h)
    h = L.Dense(6, activation="relu6")(h)
    h = L.ELU()(h)
    h = L.BatchNormalization()(h)
    return _randomize_batch_norms(K.Model(x, L.Dense(4, activation="log_softmax", name="out")(h),
                                          name="norms_activations"))


def conv1d_sequence(K: ModuleType) -> Any:
    _seeded(K)
    L = K.layers
    model = K.Sequential([K.Input((16, 3), name="signal"), L.Conv1D(4, 3, activation="relu"),
                          L.MaxPooling1D(2), L.Conv1D(6, 3, padding="same"), L.AveragePooling1D(2),
                          L.Bidirectional(L.LSTM(3, return_sequences=True)), L.GlobalMaxPooling1D(),
                          L.Dense(2)], name="conv1d_sequence")
    model.compile(optimizer=K.optimizers.Adam(0.01), loss="mse", metrics=["mae"])
    return model


def _floats(shape: tuple[int, ...], name: str) -> Callable[[np.random.Generator], dict[str, np.ndarray]]:
    return lambda rng: {name: rng.normal(size=shape).astype("float32")}


CASES: tuple[KerasCase, ...] = (
    KerasCase("sequential_dense", sequential_dense, _floats((3, 6), "features")),
    KerasCase("conv_branches", conv_branches, _floats((2, 12, 12, 3), "image"), conv=True),
    KerasCase("shared_layers", shared_layers,
              lambda rng: {"left": rng.normal(size=(3, 5)).astype("float32"),
                           "right": rng.normal(size=(3, 5)).astype("float32")}),
    KerasCase("embedding_rnn", embedding_rnn, lambda rng: {"ids": rng.integers(0, 20, (2, 7)).astype("int32")}),
    KerasCase("norms_activations", norms_activations, _floats((4, 10), "x")),
    KerasCase("conv1d_sequence", conv1d_sequence, _floats((2, 16, 3), "signal"), conv=True),
)
CASE_BY_NAME = {case.name: case for case in CASES}


def build(case: KerasCase, flavour: str) -> Any:
    """The case's model in tf_keras (``tf_keras``) or Keras 3 (``keras3``)."""
    if flavour == "tf_keras":
        import tf_keras as K
    else:
        import keras as K
    return case.build(K)


def save_as(model: Any, fmt: str, folder: Path) -> Path:
    """Save `model` in `fmt` (``h5``, ``keras``, ``keras_saved_model``) under `folder`; returns the path."""
    import warnings

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / {"h5": "model.h5", "keras": "model.keras", "keras_saved_model": "saved_model"}[fmt]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf_keras calls .h5 legacy
        if fmt == "keras_saved_model":
            model.save(str(path), save_format="tf")
        else:
            model.save(str(path))
    return path


FLAVOUR_OF_FORMAT = {"h5": "tf_keras", "keras": "keras3", "keras_saved_model": "tf_keras"}


def outputs_of(model: Any, inputs: dict[str, np.ndarray], input_names: list[str],
               output_names: list[str]) -> dict[str, np.ndarray]:
    """The Keras model's inference outputs by name."""
    xs = [inputs[name] for name in input_names]
    result = model(xs if len(xs) > 1 else xs[0], training=False)
    result = result if isinstance(result, (list, tuple)) else [result]
    return {name: np.asarray(value) for name, value in zip(output_names, result)}
