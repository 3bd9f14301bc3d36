"""PyTorch -> ONNX: the dynamo exporter first, the TorchScript exporter when dynamo fails, the reason recorded."""

from __future__ import annotations

import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Mapping, Sequence

from bridge.errors import BridgeError, UsageError
from bridge.onnx_route.failures import exporter_failure
from bridge.onnx_route.onnxrt import OnnxValueSpec, external_data_files, io_specs, load_onnx_checked
from bridge.util.quiet import captured_output

if TYPE_CHECKING:
    import torch

_STAGE = "onnx-export"
# A protobuf message cannot exceed 2 GiB; keep a margin for the graph itself.
SINGLE_FILE_LIMIT_BYTES = int(1.8 * 2**30)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Exporter = Literal["dynamo", "torchscript"]


@dataclass(frozen=True)
class OnnxExport:
    """An exported ONNX file and how it was made.

    `fallback_reason` says why the dynamo exporter was not used (None when it was); `external_data` lists the
    weight files written beside `path` (empty when the file is self-contained).
    """

    path: Path
    exporter: Exporter
    fallback_reason: str | None
    external_data: list[Path] = field(default_factory=list)
    seconds: float = 0.0


class _ExportCheckFailed(Exception):
    """The exporter returned, but its file breaks a promise (names, dynamic dims)."""


def export_onnx(module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], out_path: Path | str,
                *, input_names: Sequence[str], output_names: Sequence[str],
                dynamic_dims: Mapping[str, Sequence[int]] | None = None, opset: int | None = None,
                verbose: bool = False) -> OnnxExport:
    """Export `module` called on `example_inputs` to `out_path` with the user's input/output names.

    Uses `torch.onnx.export(dynamo=True)`; if that raises or its file breaks a promise (names, dims listed in
    `dynamic_dims` staying dynamic), falls back to the TorchScript exporter and records why. The file is
    self-contained when the weights fit under 2 GB, else weights go to `<out_path>.data`. The module is exported
    in whatever train/eval mode it is in. Raises UsageError for bad names/dims, ExportError when both fail.
    """
    dims = {name: tuple(int(a) for a in axes) for name, axes in (dynamic_dims or {}).items()}
    _check_arguments(example_inputs, list(input_names), list(output_names), dims)
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        _run_exporter("dynamo", module, example_inputs, path, input_names, output_names, dims, opset, verbose)
        forget_example_sizes(path, _example_sizes(example_inputs, input_names, dims))
        return _finish(path, "dynamo", None, start)
    except Exception as exc:
        reason = condense_reason(exc)
    try:
        _run_exporter("torchscript", module, example_inputs, path, input_names, output_names, dims, opset, verbose)
    except Exception as exc:
        raise exporter_failure([reason, condense_reason(exc)], module, example_inputs, stage=_STAGE,
                               verbose=verbose) from exc
    forget_example_sizes(path, _example_sizes(example_inputs, input_names, dims))
    return _finish(path, "torchscript", reason, start)


def _example_sizes(example_inputs: tuple, input_names: Sequence[str],
                   dynamic_dims: Mapping[str, Sequence[int]]) -> set[int]:
    """The example inputs' sizes along the dimensions declared dynamic."""
    shapes = {name: tuple(t.shape) for name, t in zip(input_names, example_inputs)}
    return {int(shapes[name][axis]) for name, axes in dynamic_dims.items() for axis in axes}


def forget_example_sizes(path: Path, sizes: set[int]) -> bool:
    """Drop the shapes an exporter baked from the example inputs into an ONNX file with dynamic inputs: the
    intermediate `value_info` annotations (optional; onnxruntime's graph optimizer trusts them, so a GRU exported
    at length 16 ran only at 16: its fused Gemm reshaped to [16, 16]), and, on the graph outputs, every size equal
    to an example's dynamic size becomes symbolic (a symbolic size admits the static one too). Returns True when
    the file changed."""
    if not sizes:
        return False
    import onnx  # noqa: PLC0415

    model = onnx.load(str(path), load_external_data=False)
    changed = bool(model.graph.value_info)
    del model.graph.value_info[:]
    for index, output in enumerate(model.graph.output):
        for axis, dim in enumerate(output.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value in sizes:
                dim.dim_param = f"{output.name}_dim{axis}"
                changed = True
    if changed:
        onnx.save(model, str(path))
    return changed



_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CALL_SITE = re.compile(r'raised this error:\s*File "([^"]+)", line (\d+), in (\S+)\s*\n\s*(\S[^\n]*)')


def condense_reason(exc: BaseException, limit: int = 500) -> str:
    """One line saying why an exporter failed: the root cause's type and first line, and the user's source line.

    e.g. "Failed to export the model with torch.export. <- GuardOnDataDependentSymNode: Could not guard on
    data-dependent expression ... (at model.py:5 in forward: if x.sum() > 0: ...)".
    """
    root = _root_cause(exc)
    parts = []
    if root is not exc:
        parts.append(_first_sentence(str(exc)) or type(exc).__name__)
    root_line = _first_sentence(str(root), whole_line=True)
    parts.append(f"{type(root).__name__}: {root_line}" if root_line else type(root).__name__)
    text = " <- ".join(parts)
    site = _CALL_SITE.search(_ANSI.sub("", str(root)) or "") or _CALL_SITE.search(_ANSI.sub("", str(exc)))
    if site:
        text += f" (at {Path(site.group(1)).name}:{site.group(2)} in {site.group(3)}: {site.group(4).strip()})"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _root_cause(exc: BaseException) -> BaseException:
    seen = {id(exc)}
    while True:
        nxt = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        if nxt is None or id(nxt) in seen:
            return exc
        seen.add(id(nxt))
        exc = nxt


def _first_sentence(message: str, whole_line: bool = False) -> str:
    lines = [line.strip() for line in _ANSI.sub("", message).splitlines() if line.strip()]
    first = next((line for line in lines if not line.startswith(("Traceback", "File "))), "")
    if whole_line or ". " not in first:
        return first
    return first[: first.index(". ") + 1]


def _check_arguments(example_inputs: tuple, input_names: list[str], output_names: list[str],
                     dynamic_dims: dict[str, tuple[int, ...]]) -> None:
    import torch  # noqa: PLC0415

    if not isinstance(example_inputs, tuple) or not all(isinstance(t, torch.Tensor) for t in example_inputs):
        raise UsageError("example_inputs must be a tuple of torch.Tensor", stage=_STAGE)
    if len(input_names) != len(example_inputs):
        raise UsageError(f"{len(input_names)} input name(s) for {len(example_inputs)} example input(s)",
                         stage=_STAGE, hint="give one name per positional input of forward()")
    names = input_names + output_names
    bad = [n for n in names if not _NAME.match(n)]
    if bad:
        raise UsageError(f"names must be identifiers (letters, digits, _): {', '.join(map(repr, bad))}",
                         stage=_STAGE, hint="they become TF signature keys and TF.js tensor names")
    if len(set(names)) != len(names):
        raise UsageError("input and output names must all be different", stage=_STAGE)
    ranks = {name: t.dim() for name, t in zip(input_names, example_inputs)}
    for name, axes in dynamic_dims.items():
        if name not in ranks:
            raise UsageError(f"dynamic_dims names an unknown input {name!r}", stage=_STAGE,
                             hint=f"inputs are: {', '.join(input_names)}")
        if any(not 0 <= a < ranks[name] for a in axes):
            raise UsageError(f"dynamic_dims[{name!r}] = {list(axes)} is out of range for rank {ranks[name]}",
                             stage=_STAGE)


def _run_exporter(kind: Exporter, module: torch.nn.Module, example_inputs: tuple, path: Path,
                  input_names: Sequence[str], output_names: Sequence[str], dynamic_dims: dict[str, tuple[int, ...]],
                  opset: int | None, verbose: bool) -> None:
    _remove_outputs(path)
    with captured_output(verbose), warnings.catch_warnings():
        if not verbose:
            warnings.simplefilter("ignore")
        if kind == "dynamo":
            _export_dynamo(module, example_inputs, path, input_names, output_names, dynamic_dims, opset)
        else:
            _export_torchscript(module, example_inputs, path, input_names, output_names, dynamic_dims, opset)
    try:
        _check_exported(path, input_names, output_names, dynamic_dims)
    except BaseException:
        _remove_outputs(path)
        raise


def _export_dynamo(module: torch.nn.Module, example_inputs: tuple, path: Path, input_names: Sequence[str],
                   output_names: Sequence[str], dynamic_dims: dict[str, tuple[int, ...]], opset: int | None) -> None:
    import torch  # noqa: PLC0415
    from torch.export import Dim  # noqa: PLC0415

    dynamic_shapes = None
    if any(dynamic_dims.values()):
        # Dim.DYNAMIC lets torch.export relate dims itself (a shared batch) and keeps size-1 examples dynamic.
        dynamic_shapes = tuple({axis: Dim.DYNAMIC for axis in dynamic_dims.get(name, ())} or None
                               for name in input_names)
    program = torch.onnx.export(module, example_inputs, None, dynamo=True, verbose=False,
                                input_names=list(input_names), output_names=list(output_names),
                                opset_version=opset, dynamic_shapes=dynamic_shapes, optimize=True)
    if program is None:
        raise RuntimeError("torch.onnx.export(dynamo=True) returned no program")
    program.save(str(path), external_data=_weights_bytes(program, module) > SINGLE_FILE_LIMIT_BYTES)


def _weights_bytes(program: object, module: torch.nn.Module) -> int:
    """Bytes of the program's initializers (falls back to the module's parameters and buffers)."""
    try:
        values = program.model.graph.initializers.values()  # type: ignore[attr-defined]
        return sum(int(v.const_value.nbytes) for v in values if v.const_value is not None)
    except Exception:
        tensors = list(module.parameters()) + list(module.buffers())
        return sum(t.numel() * t.element_size() for t in tensors)


def _export_torchscript(module: torch.nn.Module, example_inputs: tuple, path: Path,
                        input_names: Sequence[str], output_names: Sequence[str],
                        dynamic_dims: dict[str, tuple[int, ...]], opset: int | None) -> None:
    import torch  # noqa: PLC0415

    dynamic_axes = {name: list(axes) for name, axes in dynamic_dims.items() if axes} or None
    kwargs = {"opset_version": opset} if opset is not None else {}
    torch.onnx.export(module, example_inputs, str(path), dynamo=False, verbose=False,
                      input_names=list(input_names), output_names=list(output_names),
                      dynamic_axes=dynamic_axes, **kwargs)


def _check_exported(path: Path, input_names: Sequence[str], output_names: Sequence[str],
                    dynamic_dims: dict[str, tuple[int, ...]]) -> None:
    if not path.is_file():
        raise _ExportCheckFailed(f"the exporter wrote no file at {path}")
    try:
        model = load_onnx_checked(path)
    except BridgeError as exc:
        raise _ExportCheckFailed(exc.message) from exc
    inputs, outputs = io_specs(model)
    if [i.name for i in inputs] != list(input_names) or [o.name for o in outputs] != list(output_names):
        raise _ExportCheckFailed(
            f"graph names differ from the requested ones: inputs {[i.name for i in inputs]}, "
            f"outputs {[o.name for o in outputs]}")
    by_name: dict[str, OnnxValueSpec] = {i.name: i for i in inputs}
    for name, axes in dynamic_dims.items():
        fixed = [a for a in axes if a not in by_name[name].dynamic_axes]
        if fixed:
            raise _ExportCheckFailed(f"input {name!r}: dim(s) {fixed} came out fixed ({by_name[name].shape}), "
                                     "not dynamic")


def _remove_outputs(path: Path) -> None:
    """Remove a previous export at `path` and its default external data file, so no stale weights remain."""
    for stale in (path, path.with_name(path.name + ".data")):
        if stale.is_file():
            stale.unlink()


def _finish(path: Path, exporter: Exporter, reason: str | None, start: float) -> OnnxExport:
    return OnnxExport(path=path, exporter=exporter, fallback_reason=reason,
                      external_data=external_data_files(path), seconds=time.perf_counter() - start)
