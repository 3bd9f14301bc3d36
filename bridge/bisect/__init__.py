"""Per-layer bisection: where along the network, and in which stage, the numbers first drift from PyTorch.

The PyTorch side is captured with forward hooks on every module (its output on each sample input, the module path,
its class and the line of user code that called it). Each later stage exposes intermediate tensors by name: the
ONNX graph (onnxruntime with extra outputs), the TF model (the SavedModel's frozen graph, stage ``savedmodel``), the
TF.js graph replayed in TensorFlow, and the real TF.js runtime in Node and Chromium (`model.execute(inputs, names)`).

A route supplies the link between the two as a **layer map**, ``module path -> (graph node, permutation from
PyTorch's layout)`` (`LayerLink`):

- a route whose graph names carry module paths (the native route) writes the map into model.json, as
  ``userDefinedMetadata.bridge.layers = [{"module": "features.4", "node": "features.4/Relu", "permFromTorch":
  [0, 2, 3, 1]}, ...]`` (node names as in model.json; a node may end in ``:i``); `metadata_layer_map` reads it;
- the ONNX route's TF names say nothing about PyTorch (onnx2tf names Keras op layers ``tf.nn.convolution_3``, and
  the writer fuses and reorders nodes), so its map is found by *alignment*: every candidate node's output on the
  first sample input is compared with every module's output under the layout permutations its shape allows, and
  an order-preserving assignment maximising the summed `match_score` is chosen (`align_layers`). A module whose
  computation was fused away (a Conv2d folded with its BatchNorm) has no counterpart and is simply not linked;
- the ONNX graph itself is linked through the exporter's node metadata (``pkg.torch.onnx.name_scopes``) or the
  legacy exporter's ``/features/features.4/Conv`` node names (`onnx_layer_map`).

For each stage, every linked module is compared with the stage's tolerance; the first one out of tolerance is that
stage's divergence. Because unlinked modules cannot be observed, a divergence is reported as a *span*: the modules
after the last agreeing linked one up to the first diverging linked one, with the first module of the span named as
the first diverging layer. The run's first divergence is that of the earliest stage in pipeline order.
"""

from bridge.bisect.compare import (
                                     Bisection,
                                     LayerError,
                                     StageLayers,
                                     compare_layers,
                                     describe_divergence,
)
from bridge.bisect.graph import (
                                     FrozenModel,
                                     GraphTensors,
                                     candidate_nodes,
                                     web_graph_tensors,
)
from bridge.bisect.layer_map import (
                                     LayerLink,
                                     align_layers,
                                     candidate_perms,
                                     match_score,
                                     metadata_layer_map,
                                     onnx_layer_map,
                                     output_links,
)
from bridge.bisect.run import (
                                     BisectInputs,
                                     bisect,
                                     bisect_run,
                                     needs_bisection,
                                     stages_to_bisect,
)
from bridge.bisect.torch_layers import LayerPoint, TorchLayers, capture_torch_layers

__all__ = ["BisectInputs", "Bisection", "FrozenModel", "GraphTensors", "LayerError", "LayerLink", "LayerPoint",
           "StageLayers", "TorchLayers", "align_layers", "bisect", "bisect_run", "candidate_nodes",
           "candidate_perms", "capture_torch_layers", "compare_layers", "describe_divergence", "match_score",
           "metadata_layer_map", "needs_bisection", "onnx_layer_map", "output_links", "stages_to_bisect",
           "web_graph_tensors"]
