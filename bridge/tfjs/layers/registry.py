"""What tfjs-layers 4.22.0 can deserialize: registered layer classes, activation names, optimizer classes, loss and
metric names. Read from the installed package (``tf.serialization.SerializationMap``, ``losses.js``,
``metrics.js``); tests/test_tfjs_layers_writer.py checks these sets against the pinned npm package, so a TF.js
upgrade that changes them fails loudly instead of writing models that do not load."""

from __future__ import annotations

# Layer classes tfjs-layers registers (the class map minus initializers, constraints, regularizers, optimizers
# and activations). Cells appear only inside RNN / Bidirectional configs, never as model layers.
LAYER_CLASSES: frozenset[str] = frozenset({
    "Activation", "Add", "AlphaDropout", "Average", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
    "BatchNormalization", "Bidirectional", "CategoryEncoding", "CenterCrop", "Concatenate", "Conv1D", "Conv2D",
    "Conv2DTranspose", "Conv3D", "Conv3DTranspose", "ConvLSTM2D", "ConvLSTM2DCell", "Cropping2D", "Dense",
    "DepthwiseConv2D", "Dot", "Dropout", "ELU", "Embedding", "Flatten", "Functional", "GRU", "GRUCell",
    "GaussianDropout", "GaussianNoise", "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D",
    "GlobalMaxPooling2D", "InputLayer", "LSTM", "LSTMCell", "LayerNormalization", "LeakyReLU", "Masking",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "Maximum", "Minimum", "Model", "Multiply", "PReLU", "Permute",
    "RNN", "ReLU", "RepeatVector", "Rescaling", "Reshape", "Resizing", "SeparableConv2D", "Sequential",
    "SimpleRNN", "SimpleRNNCell", "Softmax", "SpatialDropout1D", "StackedRNNCells", "ThresholdedReLU",
    "TimeDistributed", "UpSampling2D", "ZeroPadding2D",
})

# Activation identifiers as tfjs resolves them: the Keras string is camel-cased first (`hard_sigmoid` ->
# `hardSigmoid`), then looked up in the class map. `gelu_new` is registered but unreachable from a Keras string
# (it camel-cases to `geluNew`), so it is not listed.
ACTIVATIONS: frozenset[str] = frozenset({
    "elu", "gelu", "hard_sigmoid", "linear", "log_softmax", "mish", "relu", "relu6", "selu", "sigmoid", "softmax",
    "softplus", "softsign", "swish", "tanh",
})

# Keras activation names with another spelling in tfjs (same function). tf_keras reloads `log_softmax` from an
# .h5 file as TensorFlow's `log_softmax_v2` function and serializes it under that name.
ACTIVATION_ALIASES: dict[str, str] = {"silu": "swish", "log_softmax_v2": "log_softmax"}

# Optimizer classes tfjs-core registers, keyed by the Keras class name that maps onto each. Keras `SGD` with a
# non-zero momentum is tfjs `Momentum` (tfjs `SGD` has no momentum); Keras `RMSprop` is tfjs `RMSProp`.
OPTIMIZER_CLASSES: dict[str, str] = {
    "SGD": "SGD", "Adam": "Adam", "Adamax": "Adamax", "Adagrad": "Adagrad", "Adadelta": "Adadelta",
    "RMSprop": "RMSProp",
}

# Loss names tfjs-layers' `lossesMap` holds, in Keras' snake_case (tfjs camel-cases them on load).
LOSSES: frozenset[str] = frozenset({
    "mean_squared_error", "mean_absolute_error", "mean_absolute_percentage_error",
    "mean_squared_logarithmic_error", "squared_hinge", "hinge", "categorical_hinge", "logcosh",
    "categorical_crossentropy", "sparse_categorical_crossentropy", "binary_crossentropy",
    "kullback_leibler_divergence", "poisson", "cosine_proximity",
})

# Keras loss aliases and class names -> the tfjs loss name.
LOSS_ALIASES: dict[str, str] = {
    "mse": "mean_squared_error", "mae": "mean_absolute_error", "mape": "mean_absolute_percentage_error",
    "msle": "mean_squared_logarithmic_error", "kld": "kullback_leibler_divergence",
    "kl_divergence": "kullback_leibler_divergence", "log_cosh": "logcosh",
    "MeanSquaredError": "mean_squared_error", "MeanAbsoluteError": "mean_absolute_error",
    "MeanAbsolutePercentageError": "mean_absolute_percentage_error",
    "MeanSquaredLogarithmicError": "mean_squared_logarithmic_error", "SquaredHinge": "squared_hinge",
    "Hinge": "hinge", "CategoricalHinge": "categorical_hinge", "LogCosh": "logcosh",
    "CategoricalCrossentropy": "categorical_crossentropy",
    "SparseCategoricalCrossentropy": "sparse_categorical_crossentropy",
    "BinaryCrossentropy": "binary_crossentropy", "KLDivergence": "kullback_leibler_divergence",
    "Poisson": "poisson",
}

# Metric names tfjs-layers resolves: its `metricsMap` (camel-cased on load) plus the accuracy / crossentropy
# shortcuts `compile` expands by the loss.
METRICS: frozenset[str] = frozenset({
    "accuracy", "acc", "crossentropy", "ce", "binary_accuracy", "categorical_accuracy", "precision",
    "categorical_crossentropy", "sparse_categorical_crossentropy", "mse", "mae", "mape", "cosine",
})

# Keras metric aliases and class names -> the tfjs metric name.
METRIC_ALIASES: dict[str, str] = {
    "mean_squared_error": "mse", "mean_absolute_error": "mae", "mean_absolute_percentage_error": "mape",
    "BinaryAccuracy": "binary_accuracy", "CategoricalAccuracy": "categorical_accuracy", "Precision": "precision",
    "MeanSquaredError": "mse", "MeanAbsoluteError": "mae", "MeanAbsolutePercentageError": "mape",
}

# Python-code layers: never loadable in TF.js.
CODE_LAYERS: frozenset[str] = frozenset({"Lambda", "TFOpLambda", "SlicingOpLambda"})

# The config key marking a custom layer class bridge generated itself (bridge.layers_route): its JavaScript ships
# beside model.json as custom_layers.js, so compat accepts the class although tfjs-layers does not register it.
BRIDGE_CUSTOM_KEY = "bridge_custom"
