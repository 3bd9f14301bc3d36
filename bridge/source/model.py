"""Loading the MODEL argument: `file.py:ClassOrFactory` (+ weights), TorchScript, torch.export `.pt2`, or `.onnx`.

Weights are loaded with `torch.load(..., weights_only=True)` (no code runs from a pickle) or from `.safetensors`.
A whole pickled module (`torch.save(model)`), which weights_only loading refuses, is loaded with
`weights_only=False` only when the caller passes `trust_pickle=True` (`--trust-pickle`); `LoadedModel.pickle_trusted`
then records that a pickle was allowed to run code.
"""

from __future__ import annotations

import importlib.util
import json
import pickle
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.errors import ModelLoadError, UsageError

STAGE = "load-model"
TRUST_PICKLE_RISK = ("--trust-pickle loads it with weights_only=False, which lets the file run any code on this "
                     "machine: use it only for files you made or fully trust")


@dataclass
class LoadedModel:
    """A model ready to run: a torch module in eval mode, or an ONNX file whose reference is onnxruntime."""

    kind: str  # "python", "torchscript", "exported", "onnx", "module", "pickled-module"
    source: str
    module: Any | None = None
    onnx_path: Path | None = None
    weights: str | None = None
    pickle_trusted: bool = False  # a file was unpickled with weights_only=False (--trust-pickle)

    @property
    def parameter_count(self) -> int | None:
        """Number of parameters of a torch model (None for ONNX files)."""
        if self.module is None:
            return None
        return int(sum(p.numel() for p in self.module.parameters()))


def load_model(spec: str, *, weights: Path | None = None, init_args: str | None = None,
               trust_pickle: bool = False) -> LoadedModel:
    """Load MODEL as the user named it on the command line.

    `trust_pickle` allows loading a whole pickled module (MODEL or --weights saved with `torch.save(model)`) with
    `torch.load(weights_only=False)`, which runs whatever code the pickle holds; without it such files are refused.
    """
    path_text, _, attr = spec.rpartition(":") if _has_attr(spec) else (spec, "", "")
    path = Path(path_text)
    if not path.exists():
        raise ModelLoadError(f"model file {path} does not exist", stage=STAGE,
                             hint="MODEL is path/to/file.py:ClassOrFactory, a TorchScript .pt, a .pt2 or an .onnx")
    if path.is_dir():
        raise ModelLoadError(f"MODEL {path} is a folder, not a file", stage=STAGE,
                             hint="name the file that defines the model, e.g. "
                                  f"{path / 'model.py'}:ClassName (a SavedModel folder goes to `bridge tfjs`)")
    if path.suffix == ".py":
        if not attr:
            raise UsageError(f"{spec!r} names a Python file but no class or factory", stage=STAGE,
                             hint=f"write {spec}:ClassName")
        module = _build_from_python(path, attr, init_args)
        trusted = load_weights_into(module, weights, trust_pickle=trust_pickle) if weights is not None else False
        return LoadedModel(kind="python", source=spec, module=module.eval(),
                           weights=str(weights) if weights else None, pickle_trusted=trusted)
    if weights is not None or init_args is not None:
        raise UsageError("--weights and --init-args only apply to a file.py:ClassOrFactory MODEL", stage=STAGE)
    if path.suffix == ".onnx":
        return LoadedModel(kind="onnx", source=spec, onnx_path=path)
    if path.suffix == ".pt2":
        return LoadedModel(kind="exported", source=spec, module=_load_exported(path))
    if _is_torch_pickle(path):
        module = _load_pickled_module(path, trust_pickle)
        return LoadedModel(kind="pickled-module", source=spec, module=module.eval(), pickle_trusted=True)
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
    """Import a model file as Python would run it: inside a package (folders with __init__.py) as that package's
    module, so relative imports work; otherwise with its folder importable, so sibling modules are found. The
    folder stays on sys.path: model code may import lazily, in forward()."""
    package_root, dotted = _package_location(path.resolve())
    _importable(package_root)
    try:
        if dotted is not None:
            return importlib.import_module(dotted)
        name = f"bridge_user_model_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ModelLoadError(f"cannot import {path}", stage=STAGE)
        namespace = importlib.util.module_from_spec(spec)
        sys.modules[name] = namespace
        spec.loader.exec_module(namespace)
        return namespace
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"importing {path} raised {type(exc).__name__}: {exc}", stage=STAGE,
                             hint=_import_hint(exc, package_root)) from exc


def _package_location(path: Path) -> tuple[Path, str | None]:
    """The folder to make importable and the dotted module name of `path` (None outside a package)."""
    parts = [path.stem]
    folder = path.parent
    while (folder / "__init__.py").is_file() and folder.name.isidentifier():
        parts.insert(0, folder.name)
        folder = folder.parent
    return (folder, ".".join(parts)) if len(parts) > 1 else (path.parent, None)


def _importable(folder: Path) -> None:
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def _import_hint(exc: Exception, folder: Path) -> str:
    if isinstance(exc, ModuleNotFoundError):
        return (f"{exc.name!r} is neither beside the file nor installed: bridge imports the file with {folder} on "
                "the path (and a package's modules through the package); install the missing package, or put the "
                "module's folder on PYTHONPATH")
    return "run the file with python to see the full error"


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


def read_state_dict(path: Path, *, trust_pickle: bool = False) -> dict[str, Any]:
    """Read a state_dict from `.safetensors` or a `.pt`/`.pth` file loaded with weights_only=True.

    With `trust_pickle`, a file weights_only loading refuses is loaded with weights_only=False (its pickle may run
    code); a whole module found there gives its state_dict."""
    return _read_state_dict(path, trust_pickle)[0]


def _read_state_dict(path: Path, trust_pickle: bool) -> tuple[dict[str, Any], bool]:
    """The state_dict, and whether it took an unsafe (weights_only=False) load."""
    import torch

    if not path.is_file():
        raise ModelLoadError(f"weights file {path} does not exist", stage=STAGE)
    if path.stat().st_size == 0:
        raise ModelLoadError(f"weights file {path} is empty", stage=STAGE)
    if path.suffix == ".safetensors":
        return _read_safetensors(path), False
    try:
        data = _safe_torch_load(path)
    except Exception as exc:
        if not (trust_pickle and _refused_by_weights_only(exc)):
            raise ModelLoadError(f"cannot load weights {path} safely: {_first_line(exc)}", stage=STAGE,
                                 hint=_weights_only_hint(exc, "bridge loads .pt/.pth with weights_only=True, so "
                                                         "pickles that run code or hold whole modules are refused; "
                                                         "save model.state_dict() or use .safetensors")) from exc
        data = _unsafe_torch_load(path)
        if isinstance(data, torch.nn.Module):
            data = data.state_dict()
        return _unwrap_state_dict(data, path), True
    return _unwrap_state_dict(data, path), False


def _safe_torch_load(path: Path) -> Any:
    """torch.load with weights_only=True (no code runs), without torch's warning about the pickle protocol."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*pickle protocol.*", category=UserWarning)
        return torch.load(path, map_location="cpu", weights_only=True)


def _refused_by_weights_only(exc: BaseException) -> bool:
    """True when torch.load failed because weights_only=True refused the pickle (not because the file is broken)."""
    return isinstance(exc, pickle.UnpicklingError) and "weights only load failed" in str(exc).lower()


def _weights_only_hint(exc: BaseException, hint: str) -> str:
    """`hint`, plus the --trust-pickle way out (with its risk) when weights_only loading refused the pickle."""
    if _refused_by_weights_only(exc):
        return f"{hint}; or, if you trust the file, {TRUST_PICKLE_RISK}"
    return hint


def _is_torch_pickle(path: Path) -> bool:
    """True for a torch.save file (a zip archive without TorchScript code, or a legacy raw pickle)."""
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            return False
        return any(n.endswith("/data.pkl") for n in names) and not any(n.endswith("/constants.pkl") for n in names)
    with open(path, "rb") as handle:
        return handle.read(1) == b"\x80"  # pickle protocol 2+ opcode


def _load_pickled_module(path: Path, trust_pickle: bool) -> Any:
    """A whole module saved with torch.save(model): refused unless `trust_pickle`, then unpickled with
    weights_only=False."""
    import torch

    if not trust_pickle:
        try:
            data = _safe_torch_load(path)
        except Exception as exc:
            raise ModelLoadError(
                f"{path} is a pickle that weights_only loading refuses (a whole pickled module, or a pickle that "
                f"would run code): {_first_line(exc)}", stage=STAGE,
                hint=_weights_only_hint(exc, "save model.state_dict() to .safetensors and pass "
                                             "MODEL=file.py:Class --weights FILE")) from exc
        raise ModelLoadError(f"{path} holds {type(data).__name__} data (a state_dict?), not a model", stage=STAGE,
                             hint="a state_dict needs MODEL=file.py:Class with --weights FILE")
    module = _unsafe_torch_load(path)
    if not isinstance(module, torch.nn.Module):
        raise ModelLoadError(f"{path} holds a {type(module).__name__}, not a torch.nn.Module", stage=STAGE,
                             hint="save the model with torch.save(model, path), or its state_dict with --weights")
    return module


def _unsafe_torch_load(path: Path) -> Any:
    """torch.load with weights_only=False: only ever called when the user passed --trust-pickle.

    The pickle names the model's class by module path; the file's folder and the working directory are put on
    sys.path meanwhile, as `python` run there would have them (no extra risk: the pickle can run any code anyway)."""
    import torch

    extra = [str(path.resolve().parent), str(Path.cwd())]
    added = [folder for folder in extra if folder not in sys.path]
    sys.path[:0] = added
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (ModuleNotFoundError, AttributeError) as exc:
        raise ModelLoadError(f"cannot unpickle {path}: {_first_line(exc)}", stage=STAGE,
                             hint="the pickle names the model's class by module path: put the folder of the file "
                                  "that defines it on PYTHONPATH") from exc
    except Exception as exc:
        raise ModelLoadError(f"cannot unpickle {path}: {_first_line(exc)}", stage=STAGE,
                             hint="the file is truncated or not a torch.save file") from exc
    finally:
        for folder in added:
            if folder in sys.path:
                sys.path.remove(folder)


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


def load_weights_into(module: Any, path: Path, *, trust_pickle: bool = False) -> bool:
    """Load a state_dict into `module`, listing every missing key, extra key and shape mismatch at once.

    Returns True when the file needed (and `trust_pickle` allowed) a weights_only=False load."""
    state, trusted = _read_state_dict(path, trust_pickle)
    expected = module.state_dict()
    problems = [f"missing: {k}" for k in expected if k not in state]
    problems += [f"unexpected: {k}" for k in state if k not in expected]
    problems += [f"shape of {k}: file {list(state[k].shape)}, model {list(v.shape)}"
                 for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if problems:
        raise ModelLoadError(f"weights {path} do not match the model ({len(problems)} problem(s))", stage=STAGE,
                             details=problems, hint="check that MODEL and --init-args build the trained network")
    module.load_state_dict(state, strict=True)
    return trusted


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

    from bridge.util.quiet import captured_output, quiet_logging

    try:
        with captured_output(), quiet_logging():  # torch logs its own traceback for a corrupt archive
            program = torch.export.load(str(path))
    except Exception as exc:
        raise ModelLoadError(f"cannot load torch.export program {path}: {_first_line(exc)}", stage=STAGE) from exc
    return program.module()


def _first_line(exc: BaseException) -> str:
    """The line of an exception's message that says what is wrong (torch's weights_only refusals name the global
    they refused on a later line), without terminal colour codes."""
    text = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).strip().splitlines()]
    refused = [line for line in text if "Unsupported global" in line or "Unsupported operand" in line]
    if refused:
        reason = refused[0].split(" was not an allowed global")[0].replace("WeightsUnpickler error: ", "")
        return f"weights_only refused it ({reason.rstrip('.')})"
    return text[0] if text else type(exc).__name__
