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


class UnsupportedLayersError(UnsupportedOpsError):
    """A Keras model holds layers a TF.js layers model cannot hold (Lambda, Python-defined classes, classes or
    options tfjs-layers lacks). `layers` lists (layer name, class name, reason), one per offending layer; `ops` maps
    each class to its layer names."""

    def __init__(self, message: str, *, layers: list[tuple[str, str, str]], stage: str,
                 hint: str | None = None) -> None:
        ops: dict[str, list[str]] = {}
        for name, class_name, _ in layers:
            ops.setdefault(class_name, []).append(name)
        super().__init__(message, ops=ops, stage=stage, hint=hint)
        self.layers = list(layers)
        self.details = [f"{name} ({class_name}): {reason}" for name, class_name, reason in layers]


class TrainingConfigError(ConversionError):
    """A compiled Keras model's loss, metrics or optimizer cannot be written as a TF.js trainingConfig."""


class SourceFormatError(ModelLoadError):
    """An input file or folder is not what its format needs (a .pb that is not a GraphDef, an .h5 holding weights
    only, a folder no reader recognises)."""


class MissingNodesError(SourceFormatError):
    """Asked-for graph nodes do not exist; `candidates` lists node names that could be meant."""

    def __init__(self, message: str, *, missing: list[str], candidates: list[str], stage: str,
                 hint: str | None = None) -> None:
        super().__init__(message, stage=stage, hint=hint,
                         details=[f"missing: {', '.join(missing)}",
                                  f"candidates: {', '.join(candidates) or '(none)'}"])
        self.missing = list(missing)
        self.candidates = list(candidates)


class MissingSignatureError(SourceFormatError):
    """A SavedModel or Hub module lacks the asked signature; `available` lists the ones it has."""

    def __init__(self, message: str, *, signature: str, available: list[str], stage: str,
                 hint: str | None = None) -> None:
        super().__init__(message, stage=stage, hint=hint)
        self.signature = signature
        self.available = list(available)


class DataDependentBranchError(CaptureError):
    """forward() takes a Python branch on a tensor's value, which torch.export cannot capture; `where` is the
    user's source line ("model.py:12") when torch named it."""

    def __init__(self, message: str, *, where: str | None, stage: str, hint: str | None = None,
                 details: list[str] | None = None) -> None:
        super().__init__(message, stage=stage, hint=hint, details=details)
        self.where = where


class LayersRouteError(ConversionError):
    """A PyTorch module cannot become a TF.js layers model. `parts` lists (module path or graph node, module class
    or op, reason), one per offending part, all found before anything is written."""

    def __init__(self, message: str, *, parts: list[tuple[str, str, str]], stage: str,
                 hint: str | None = None) -> None:
        super().__init__(message, stage=stage, hint=hint,
                         details=[f"{where} ({what}): {reason}" for where, what, reason in parts])
        self.parts = list(parts)


class WeightImportError(ConversionError):
    """TF.js layers-model weights do not fit the PyTorch module (another architecture, a folder bridge did not
    write): `mismatches` lists every missing, extra or differently shaped entry on either side."""

    def __init__(self, message: str, *, mismatches: list[str], stage: str, hint: str | None = None) -> None:
        super().__init__(message, stage=stage, hint=hint, details=list(mismatches))
        self.mismatches = list(mismatches)
