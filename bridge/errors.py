"""Typed errors: every failure a user can cause or meet is one of these, naming the stage, what is wrong and what
to do next. The CLI catches only `BridgeError` (exit 1, or 2 for `UsageError`); anything else is a bug."""

from __future__ import annotations


class BridgeError(Exception):
    """Base of every error bridge raises on purpose.

    `stage` is the pipeline stage that failed (``capture``, ``onnx-export``, ``tfjs-write``, ...), `hint` the next
    step for the user, `details` optional extra lines (for example one per unsupported op).
    """

    exit_code: int = 1

    def __init__(self, message: str, *, stage: str = "bridge", hint: str | None = None,
                 details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.stage = stage
        self.hint = hint
        self.details = list(details or [])

    def __str__(self) -> str:
        lines = [f"[{self.stage}] {self.message}"]
        lines += [f"  - {line}" for line in self.details]
        if self.hint:
            lines.append(f"  next step: {self.hint}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, object]:
        """The error as plain data, for report.json."""
        return {"type": type(self).__name__, "stage": self.stage, "message": self.message,
                "hint": self.hint, "details": self.details}


class UsageError(BridgeError):
    """The command line or API call itself is wrong (bad option, bad input spec). Exit code 2."""

    exit_code = 2


class MissingDependencyError(BridgeError):
    """A tool bridge needs (Node, the pinned npm packages, Chromium, a Python package) is not installed."""


class ModelLoadError(BridgeError):
    """The MODEL argument or its weights could not be loaded."""


class CaptureError(BridgeError):
    """The PyTorch model could not be run or captured (torch.export, forward raising, bad outputs)."""


class ExportError(BridgeError):
    """Export to ONNX or conversion from ONNX to TensorFlow failed."""


class UnsupportedOpsError(BridgeError):
    """The graph holds ops the target cannot run; `ops` maps each op to the node names that use it."""

    def __init__(self, message: str, *, ops: dict[str, list[str]], stage: str, hint: str | None = None) -> None:
        details = [f"{op}: {len(nodes)} node(s), e.g. {', '.join(nodes[:3])}" for op, nodes in sorted(ops.items())]
        super().__init__(message, stage=stage, hint=hint, details=details)
        self.ops = ops


class ConversionError(BridgeError):
    """A graph or weight transformation could not be done safely."""


class WeightError(BridgeError):
    """A weight cannot be written as asked (int64 out of int32 range, float16 overflow, bad dtype)."""


class WebModelError(BridgeError):
    """A TF.js web model folder is malformed or unsafe (bad manifest, shard outside the folder, size mismatch)."""


class RuntimeStageError(BridgeError):
    """A runtime (TF.js in Node, Chromium) failed to load or run the model, or timed out."""


class OutputError(BridgeError):
    """The output folder cannot be written (exists without --force, not writable)."""


class ModelTooLargeError(BridgeError):
    """The model's weights would not fit one TensorFlow GraphDef (protobuf's 2 GB message limit)."""
