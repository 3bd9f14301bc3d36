"""Run TensorFlow's grappler optimizers on a frozen GraphDef, with the signature's fetch nodes kept alive.

Grappler must know the outputs or pruning removes everything: the fetch nodes go into a ``train_op`` collection and
the signature is attached to the MetaGraphDef. The cluster is one virtual named device, as the reference converter
does, so results do not depend on the machine running the conversion.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bridge.errors import ConversionError
from bridge.tfjs.freeze import TensorInfo, quiet_tf
from bridge.tfjs.graph_names import node_name

PASS1_OPTIMIZERS: tuple[str, ...] = (
    "pruning", "constfold", "arithmetic", "dependency", "pruning", "constfold", "arithmetic", "dependency")
PASS2_OPTIMIZERS: tuple[str, ...] = ("remap", "constfold", "arithmetic", "dependency")


def _tensor_info_proto(info: TensorInfo) -> Any:
    from tensorflow.core.framework import types_pb2
    from tensorflow.core.protobuf import meta_graph_pb2

    proto = meta_graph_pb2.TensorInfo(name=info.name, dtype=types_pb2.DataType.Value(info.dtype))
    if info.shape is None:
        proto.tensor_shape.unknown_rank = True
    else:
        for size in info.shape:
            proto.tensor_shape.dim.add(size=size)
    return proto


def signature_def(inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo]) -> Any:
    """A SignatureDef proto for the given inputs and outputs (keys = `TensorInfo.key`)."""
    from tensorflow.core.protobuf import meta_graph_pb2

    sig = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
    for info in inputs:
        sig.inputs[info.key].CopyFrom(_tensor_info_proto(info))
    for info in outputs:
        sig.outputs[info.key].CopyFrom(_tensor_info_proto(info))
    return sig


def _cluster() -> Any:
    from tensorflow.core.protobuf import device_properties_pb2
    from tensorflow.python.grappler import cluster as gcluster

    device = device_properties_pb2.NamedDevice(name="/GPU:0")
    device.properties.type = "GPU"
    device.properties.environment["architecture"] = "4"
    return gcluster.Cluster(devices=[device])


def run_grappler(graph_def: Any, optimizers: Sequence[str], inputs: Sequence[TensorInfo],
                 outputs: Sequence[TensorInfo]) -> Any:
    """Return `graph_def` optimized by the named grappler `optimizers` (run in the given order), keeping the
    signature outputs' nodes as fetch nodes and the inputs as feeds."""
    from tensorflow.core.protobuf import config_pb2, meta_graph_pb2
    from tensorflow.python.grappler import tf_optimizer

    meta = meta_graph_pb2.MetaGraphDef()
    meta.graph_def.CopyFrom(graph_def)
    fetch_nodes = list(dict.fromkeys(node_name(info.name) for info in outputs))
    meta.collection_def["train_op"].node_list.value.extend(fetch_nodes)
    meta.signature_def["serving_default"].CopyFrom(signature_def(inputs, outputs))

    config = config_pb2.ConfigProto()
    rewrite = config.graph_options.rewrite_options
    rewrite.optimizers[:] = list(optimizers)
    # A frozen graph can be large; grappler must not give up on it silently.
    rewrite.min_graph_nodes = -1
    cluster = _cluster()
    try:
        with quiet_tf():
            return tf_optimizer.OptimizeGraph(config, meta, verbose=False, cluster=cluster)
    except Exception as exc:
        raise ConversionError(f"grappler ({', '.join(optimizers)}) failed: {exc}", stage="tfjs-write") from exc
    finally:
        cluster.Shutdown()
