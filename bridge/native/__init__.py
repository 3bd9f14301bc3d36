"""bridge's native route: torch.export -> a small IR -> a layout pass -> an op registry of tiny converters ->
generated, readable TensorFlow source (a tf.Module subclass) + ported weights -> SavedModel.

Public API: `rebuild_tf` (the driver), `NativeRebuild` (its result; inputs and outputs as `bridge.source.ports.Port`s), the registry
(`register_converter`, `ConverterRegistry`, `BUILTINS`, `LayoutPolicy`) for user converters, and `port_weights`
(PyTorch weights into a TF model you wrote yourself, with a `PortReport`).
"""

from __future__ import annotations

from bridge.native.port import PortReport, WeightPortError, port_weights
from bridge.native.rebuild import NativeRebuild, rebuild_tf
from bridge.native.registry import (BUILTINS, USER_CONVERTERS, ConverterRegistry, ConverterSpec, LayoutPolicy,
                                    converter, register_converter, scan_unsupported, supported_ops)

__all__ = ["BUILTINS", "USER_CONVERTERS", "ConverterRegistry", "ConverterSpec", "LayoutPolicy", "NativeRebuild",
           "PortReport", "WeightPortError", "converter", "port_weights", "rebuild_tf",
           "register_converter", "scan_unsupported", "supported_ops"]
