"""Input-format readers for `bridge tfjs`: SavedModels, frozen graphs, Hub modules (TF2 and TF1 format), Keras
files (.h5, .keras, Keras SavedModels), in-memory Keras models and TF.js layers models, each read into a
`TfSource` (inputs, outputs, a TensorFlow/Keras reference runner, and what either writer consumes)."""

from bridge.tfjs.sources.base import (GRAPH_MODEL, INPUT_FORMATS, LAYERS_MODEL, OUTPUT_FORMATS, PortSpec,
                                      TfSource)
from bridge.tfjs.sources.detect import detect_input_format
from bridge.tfjs.sources.keras_files import keras_model_source
from bridge.tfjs.sources.load import convert_source, load_source, write_source

__all__ = ["GRAPH_MODEL", "INPUT_FORMATS", "LAYERS_MODEL", "OUTPUT_FORMATS", "PortSpec", "TfSource",
           "convert_source", "detect_input_format", "keras_model_source", "load_source", "write_source"]
