"""Moved to bridge.quiet (shared by every stage); this name stays until the ONNX route work is merged."""

from bridge.quiet import *  # noqa: F401,F403
from bridge.quiet import captured_output, import_onnx2tf, import_tensorflow, network_blocked  # noqa: F401
