"""Failures of the ONNX route's tools, as one clean typed error each.

onnx2tf reports a failed op as a colour-coded log (a traceback, then `ERROR:` lines naming the ONNX node and a
block of generic advice); torch.onnx.export reports an op it has no ONNX function for inside a long chain of
exceptions. Neither reaches the user as it is: the error says which ONNX node (and op) failed, which PyTorch op
and module it came from and the source line (the dynamo exporter records them on each node), the two ways out, and
points at `--verbose` for the raw log (which is only shown then).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from bridge.errors import ExportError

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_OP_NAME = re.compile(r"onnx_op_name:\s*(\S+)")
_OP_TYPE = re.compile(r"onnx_op_type:\s*(\S+)")
# onnx2tf's generic advice after every failure: not about this model, so never shown.
_BOILERPLATE = ("The trace log is below", "input_onnx_file_path", "onnx_op_name", "onnx_op_type", "Read this and deal",
                "Alternatively, if the input OP", "If the input OP of ONNX", "Also, for models that include")
_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)\n\s*(\S[^\n]*)')
SUPPORTED_OPS_DOC = "docs/SUPPORTED_OPS.md"


def clean(text: str) -> str:
    """`text` without ANSI colour codes."""
    return ANSI.sub("", text)


@dataclass(frozen=True)
class NodeOrigin:
    """Where an ONNX node came from in the user's PyTorch code (what the dynamo exporter recorded on it)."""

    node: str
    op_type: str
    aten: str = ""         # e.g. aten._fft_r2c.default
    module_path: str = ""  # e.g. encoder.attn (empty: the top-level forward)
    source: str = ""       # e.g. model.py:12 (`return torch.fft.rfft(x)`)

    def describe(self) -> str:
        """`ONNX node node_DFT_7 (DFT), from aten._fft_r2c.default in module lin at model.py:6 (...)`."""
        text = f"ONNX node {self.node} ({self.op_type})" if self.op_type else f"ONNX node {self.node}"
        if self.aten:
            text += f", from {self.aten}"
        if self.module_path:
            text += f" in module {self.module_path}"
        return text + (f" at {self.source}" if self.source else "")


def node_origin(onnx_files: Iterable[Path], node_name: str) -> NodeOrigin:
    """The origin of ONNX node `node_name`, from the first of `onnx_files` that records it (onnx2tf's simplified
    copy may rename nodes or drop their metadata); only its name when no file has it."""
    import onnx  # noqa: PLC0415

    found = NodeOrigin(node_name, "")
    for onnx_file in onnx_files:
        try:
            model = onnx.load(str(onnx_file), load_external_data=False)
        except Exception:  # noqa: BLE001 - an unreadable file leaves only the node name to report
            continue
        for node in model.graph.node:
            if node.name == node_name:
                found = _origin(node)
                if found.aten:
                    return found
    return found


def _origin(node: Any) -> NodeOrigin:
    meta = {p.key: p.value for p in node.metadata_props}
    aten = ""
    hierarchy = _literal_list(meta.get("pkg.torch.onnx.class_hierarchy", ""))
    if hierarchy and hierarchy[-1].startswith(("aten.", "prims.")):
        aten = hierarchy[-1]
    scopes = [s for s in _literal_list(meta.get("pkg.torch.onnx.name_scopes", "")) if s]
    module_path = ".".join(scopes[:-1]) if aten else ".".join(scopes)
    return NodeOrigin(node.name, node.op_type, aten, module_path, user_frame(meta.get("pkg.torch.onnx.stack_trace", "")))


def _literal_list(text: str) -> list[str]:
    try:
        value = ast.literal_eval(text) if text else []
    except (ValueError, SyntaxError):
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def user_frame(stack_trace: str) -> str:
    """The first frame of a recorded stack trace outside torch, as `file.py:12 (`the line`)`."""
    for path, line, _, code in _FRAME.findall(stack_trace or ""):
        if "/torch/" not in path.replace("\\", "/"):
            return f"{Path(path).name}:{line} (`{code.strip()}`)"
    return ""


def onnx2tf_failure(exc: BaseException, log_text: str, onnx_files: Iterable[Path], *, verbose: bool,
                    stage: str = "onnx-to-tf") -> ExportError:
    """One ExportError for a failure inside onnx2tf: the ONNX node and op (from its log), their PyTorch origin,
    the root exception's first sentence and the ways out; onnx2tf's own log is never copied into it."""
    log = clean(log_text)
    names = _OP_NAME.findall(log)
    origin = node_origin(onnx_files, names[-1]) if names else None
    if origin is not None and not origin.op_type:
        types = _OP_TYPE.findall(log)
        origin = NodeOrigin(origin.node, types[-1] if types else "")
    what = origin.describe() if origin else "the ONNX graph"
    details = [f"why: {summary(exc)}"] + log_errors(log)
    return ExportError(f"onnx2tf cannot convert {what}", stage=stage, details=details,
                       hint=ways_out(origin.aten if origin else "", "onnx2tf", verbose))


def log_errors(log: str, keep: int = 3) -> list[str]:
    """onnx2tf's `ERROR:` lines that say something about this model (its generic advice dropped)."""
    lines = []
    for line in log.splitlines():
        text = line.strip()
        if text.startswith("ERROR:"):
            text = text[len("ERROR:"):].strip()
            if text and not text.startswith(_BOILERPLATE):
                lines.append(f"onnx2tf: {text[:300]}")
    return lines[-keep:]


def summary(exc: BaseException, limit: int = 300) -> str:
    """An exception as `Type: first sentence` (a SystemExit as its status), ANSI-free and short."""
    if isinstance(exc, SystemExit):
        return f"onnx2tf exited with status {exc.code}"
    lines = [line.strip() for line in clean(str(exc)).splitlines() if line.strip()]
    first = lines[0] if lines else ""
    if ". " in first:
        first = first[: first.index(". ") + 1]
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def ways_out(aten: str, tool: str, verbose: bool) -> str:
    """The next step after the ONNX route failed on an op: the native route (with a converter registered when it
    has none) or changing the call; the raw log under --verbose."""
    native = _native_has(aten)
    if native:
        route = f"convert with the native route (--route native), which converts {aten}"
    else:
        op = aten or "the op"
        route = (f"convert with the native route (--route native) after registering a converter for {op} with "
                 f"bridge.native.register_converter ({SUPPORTED_OPS_DOC} lists what the native route converts)")
    owner = tool if tool.endswith("'") else f"{tool}'s"
    log = "" if verbose else f"; rerun with --verbose to see {owner} full log"
    return f"either {route}, or replace that call in forward() with ops both routes support{log}"


def _native_has(aten: str) -> bool:
    """True when the native route has a converter for the ATen target."""
    if not aten:
        return False
    from bridge.native.registry import default_registry  # noqa: PLC0415 - the registry imports TF-free modules only

    return default_registry().lookup(aten) is not None


# ------------------------------------------------------------------------------------------- torch.onnx.export

_NO_ONNX_FUNCTION = re.compile(r"No ONNX function found for <OpOverload\(op='([\w.]+)', overload='(\w+)'\)>")
_UNSUPPORTED_OPERATOR = re.compile(r"Exporting the operator '(\w+)::(\w+)' to ONNX opset version \d+ is not supported")


def unsupported_exporter_ops(reasons: Iterable[str]) -> list[str]:
    """The ATen ops the exporters said they have no ONNX conversion for (`aten.linalg_inv_ex.default`), in the
    order met."""
    found: dict[str, None] = {}
    for reason in reasons:
        for op, overload in _NO_ONNX_FUNCTION.findall(reason):
            found[f"{op}.{overload}"] = None
        for namespace, op in _UNSUPPORTED_OPERATOR.findall(reason):
            found[f"{namespace}.{op}"] = None
    # TorchScript names the op the user called (aten.linalg_inv), dynamo what it decomposes to (linalg_inv_ex)
    return [op for op in found if not any(other != op and other.startswith(op) for other in found)]


def locate_ops(module: Any, example_inputs: tuple, ops: list[str]) -> dict[str, list[str]]:
    """Where each ATen op of `ops` is called in the user's code (`in module head at file.py:12 (`line`)`), found
    by capturing the module with torch.export (non-strict) and reading each matching node's module stack and
    stack trace. Ops match with or without their overload; an op the capture does not hold maps to []."""
    import torch  # noqa: PLC0415

    places: dict[str, list[str]] = {op: [] for op in ops}
    try:
        with torch.no_grad():
            program = torch.export.export(module, example_inputs, strict=False)
    except Exception:  # noqa: BLE001 - locating is best effort: the error still names the op
        return places
    _collect_places(program, places)
    if not all(places.values()):  # the exporter names the op a call decomposes into (linalg_inv -> linalg_inv_ex)
        try:
            _collect_places(program.run_decompositions(), {op: v for op, v in places.items() if not v})
        except Exception:  # noqa: BLE001
            pass
    return places


def _collect_places(program: Any, places: dict[str, list[str]]) -> None:
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        for op, found in places.items():
            if _same_op(str(node.target), op):
                found.append(_fx_place(node))


def _same_op(target: str, op: str) -> bool:
    """`aten.linalg_inv_ex.default` is op `aten.linalg_inv_ex.default` and `aten.linalg_inv_ex`."""
    base = ".".join(target.split(".")[:2])
    wanted = ".".join(op.split(".")[:2])
    return target == op or base == wanted


def _fx_place(node: Any) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    path = ""
    if stack:
        path = list(stack.values())[-1][0]
    where = f"in module {path}" if path else "in the top-level forward()"
    line = user_frame(node.meta.get("stack_trace") or "")
    return where + (f" at {line}" if line else "")


def exporter_failure(reasons: list[str], module: Any, example_inputs: tuple, *, stage: str,
                     verbose: bool) -> ExportError:
    """The ExportError after both ONNX exporters failed: the ops they lack (with where they are called) when that
    is the cause, else their two reasons."""
    details = [f"dynamo: {clean(reasons[0])}", f"torchscript: {clean(reasons[1])}"]
    ops = unsupported_exporter_ops(reasons)
    if not ops:
        return ExportError("torch.onnx.export failed with both the dynamo and the TorchScript exporter", stage=stage,
                           details=details,
                           hint="the exporters' reasons are above: check that forward() runs with these inputs"
                                + ("" if verbose else " (--verbose shows the exporters' full output)"))
    places = locate_ops(module, example_inputs, ops)
    lines = [f"{op}: no ONNX conversion; called " + ("; ".join(places[op][:3]) if places[op] else "(place unknown)")
             for op in ops]
    return ExportError(f"torch.onnx.export has no ONNX conversion for {', '.join(ops)}", stage=stage,
                       details=lines + details, hint=ways_out(ops[0], "the exporters'", verbose))
