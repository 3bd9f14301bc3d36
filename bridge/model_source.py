"""Loading the MODEL argument: `file.py:ClassOrFactory` (+ weights), TorchScript, torch.export `.pt2`, or `.onnx`.

Weights are loaded with `torch.load(..., weights_only=True)` (no code runs from a pickle) or from `.safetensors`.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.errors import ModelLoadError, UsageError

STAGE = "load-model"


@dataclass
class LoadedModel:
    """A model ready to run: a torch module in eval mode, or an ONNX file whose reference is onnxruntime."""

    kind: str  # "python", "torchscript", "exported", "onnx", "module"
    source: str
    module: Any | None = None
    onnx_path: Path | None = None
    weights: str | None = None

    @property
    def parameter_count(self) -> int | None:
        """Number of parameters of a torch model (None for ONNX files)."""
        if self.module is None:
            return None
        return int(sum(p.numel() for p in self.module.parameters()))


def load_model(spec: str, *, weights: Path | None = None, init_args: str | None = None) -> LoadedModel:
    """Load MODEL as the user named it on the command line."""
    path_text, _, attr = spec.rpartition(":") if _has_attr(spec) else (spec, "", "")
    path = Path(path_text)
    if not path.exists():
        raise ModelLoadError(f"model file {path} does not exist", stage=STAGE,
                             hint="MODEL is path/to/file.py:ClassOrFactory, a TorchScript .pt, a .pt2 or an .onnx")
    if path.suffix == ".py":
        if not attr:
            raise UsageError(f"{spec!r} names a Python file but no class or factory", stage=STAGE,
                             hint=f"write {spec}:ClassName")
        module = _build_from_python(path, attr, init_args)
        if weights is not None:
            load_weights_into(module, weights)
        return LoadedModel(kind="python", source=spec, module=module.eval(),
                           weights=str(weights) if weights else None)
    if weights is not None or init_args is not None:
        raise UsageError("--weights and --init-args only apply to a file.py:ClassOrFactory MODEL", stage=STAGE)
    if path.suffix == ".onnx":
        return LoadedModel(kind="onnx", source=spec, onnx_path=path)
    if path.suffix == ".pt2":
        return LoadedModel(kind="exported", source=spec, module=_load_exported(path))
    return LoadedModel(kind="torchscript", source=spec, module=_load_torchscript(path))


def _has_attr(spec: str) -> bool:
    head, sep, tail = spec.rpartition(":")
    return bool(sep) and head.endswith(".py") and tail.isidentifier()


def _build_from_python(path: Path, attr: str, init_args: str | None) -> Any:
    import torch

    namespace = _import_file(path)
    if not hasattr(namespace, attr):
        available = sorted(n for n, v in vars(namespace).items() if isinstance(v, type) or callable(v))
        raise ModelLoadError(f"{path} has no {attr!r}", stage=STAGE,
                             hint=f"names defined there: {', '.join(a for a in available if not a.startswith('_'))}")
    args, kwargs = _parse_init_args(init_args)
    try:
        module = getattr(namespace, attr)(*args, **kwargs)
    except Exception as exc:  # the user's constructor: any failure is theirs to see
        raise ModelLoadError(f"{attr}(...) raised {type(exc).__name__}: {exc}", stage=STAGE,
                             hint="check --init-args against the constructor's parameters") from exc
    if not isinstance(module, torch.nn.Module):
        raise ModelLoadError(f"{attr} returned {type(module).__name__}, not a torch.nn.Module", stage=STAGE)
    return module


def _import_file(path: Path) -> Any:
    name = f"bridge_user_model_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"cannot import {path}", stage=STAGE)
    namespace = importlib.util.module_from_spec(spec)
    sys.modules[name] = namespace
    try:
        spec.loader.exec_module(namespace)
    except Exception as exc:
        raise ModelLoadError(f"importing {path} raised {type(exc).__name__}: {exc}", stage=STAGE,
                             hint="run the file with python to see the full error") from exc
    return namespace


def _parse_init_args(text: str | None) -> tuple[list[Any], dict[str, Any]]:
    if text is None:
        return [], {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--init-args is not JSON: {exc}", stage=STAGE,
                         hint='give a JSON list or object, e.g. --init-args \'{"num_classes": 10}\'') from exc
    if isinstance(value, list):
        return value, {}
    if isinstance(value, dict):
        return [], value
    raise UsageError("--init-args must be a JSON list (positional) or object (keyword arguments)", stage=STAGE)


def read_state_dict(path: Path) -> dict[str, Any]:
    """Read a state_dict from `.safetensors` or a `.pt`/`.pth` file loaded with weights_only=True."""
    import torch

    if not path.is_file():
        raise ModelLoadError(f"weights file {path} does not exist", stage=STAGE)
    if path.stat().st_size == 0:
        raise ModelLoadError(f"weights file {path} is empty", stage=STAGE)
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(f"cannot load weights {path} safely: {_first_line(exc)}", stage=STAGE,
                             hint="bridge loads .pt/.pth with weights_only=True, so pickles that run code or hold "
                                  "whole modules are refused; save model.state_dict() or use .safetensors") from exc
    return _unwrap_state_dict(data, path)


def _read_safetensors(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    try:
        return dict(load_file(str(path)))
    except Exception as exc:
        raise ModelLoadError(f"cannot read safetensors file {path}: {_first_line(exc)}", stage=STAGE,
                             hint="the file is truncated or not safetensors") from exc


def _unwrap_state_dict(data: Any, path: Path) -> dict[str, Any]:
    import torch

    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ModelLoadError(f"{path} does not hold a state_dict (a mapping of names to tensors)", stage=STAGE,
                             hint="save it with torch.save(model.state_dict(), path)")
    return data


def load_weights_into(module: Any, path: Path) -> None:
    """Load a state_dict into `module`, listing every missing key, extra key and shape mismatch at once."""
    state = read_state_dict(path)
    expected = module.state_dict()
    problems = [f"missing: {k}" for k in expected if k not in state]
    problems += [f"unexpected: {k}" for k in state if k not in expected]
    problems += [f"shape of {k}: file {list(state[k].shape)}, model {list(v.shape)}"
                 for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if problems:
        raise ModelLoadError(f"weights {path} do not match the model ({len(problems)} problem(s))", stage=STAGE,
                             details=problems, hint="check that MODEL and --init-args build the trained network")
    module.load_state_dict(state, strict=True)


def _load_torchscript(path: Path) -> Any:
    import torch

    if not zipfile.is_zipfile(path):
        raise ModelLoadError(f"{path} is not a TorchScript archive", stage=STAGE,
                             hint="a state_dict needs MODEL=file.py:Class with --weights; see bridge convert --help")
    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:
        raise ModelLoadError(f"cannot load TorchScript {path}: {_first_line(exc)}", stage=STAGE,
                             hint="if it is a state_dict, pass MODEL=file.py:Class --weights FILE") from exc


def _load_exported(path: Path) -> Any:
    import torch

    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise ModelLoadError(f"cannot load torch.export program {path}: {_first_line(exc)}", stage=STAGE) from exc
    return program.module()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
