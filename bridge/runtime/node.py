"""Runs a TF.js graph model in Node (the real `@tensorflow/tfjs` runtime, wasm and cpu backends) from Python; and a
layers model (`run_layers_model`: tf.loadLayersModel, predict, and one optional fit run).

One call starts one Node process (about 0.3-0.5 s of startup and TF.js loading) that runs several input sets on
several backends. Python writes a request JSON and a packed input file (see `tensor_io`), Node
(bridge/js/tfjs_runner.mjs) writes a packed output file and summary.json. Harness failures raise typed
`BridgeError`s with stage ``tfjs-node``; a failure of one backend is recorded in `BackendRun.error`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from bridge.errors import (BridgeError, MissingDependencyError, RuntimeStageError, UsageError,
                           WebModelError)
from bridge.runtime.tensor_io import TF_TO_JS_DTYPE, TensorRef, pack_writer, read_tensor, to_js_array

STAGE = "tfjs-node"
JS_DIR = Path(__file__).resolve().parent.parent / "js"
RUNNER = JS_DIR / "tfjs_runner.mjs"
NODE_BACKENDS = ("wasm", "cpu")
MIN_NODE_MAJOR = 18
WASM_FILES = ("tfjs-backend-wasm.wasm", "tfjs-backend-wasm-simd.wasm")
SETUP_HINT = "run scripts/setup.sh (it runs `npm ci` in bridge/js), or set BRIDGE_NODE_MODULES to a node_modules " \
             "folder holding the pinned @tensorflow/tfjs and @tensorflow/tfjs-backend-wasm"
NODE_HINT = "install Node 20 (`apt-get install -y nodejs npm`) or set BRIDGE_NODE to a node binary"

InputSet = Union[Mapping[str, np.ndarray], Sequence[np.ndarray]]


@dataclass(frozen=True)
class BackendRun:
    """What one backend gave: outputs per input set (signature order), fetched node outputs, timings, error.

    On failure `error` says which step failed (``init``, ``load``, ``run``, ``time``) and why; `outputs` then holds
    only the input sets that ran before it. `tensors_leaked` counts tensors left alive after the model was disposed;
    `flags` holds backend facts (wasm: ``simd``, ``threads``).
    """

    backend: str
    outputs: list[dict[str, np.ndarray]]
    fetched: list[dict[str, np.ndarray]]
    load_ms: float
    infer_ms: list[float]
    used_async: bool
    error: str | None
    async_reason: str = ""
    tensors_leaked: int | None = None
    flags: dict[str, Any] = field(default_factory=dict)
    set_ms: list[float] = field(default_factory=list)  # one run per input set (the first includes warm-up)

    @property
    def ok(self) -> bool:
        """True when the backend loaded the model and ran every input set."""
        return self.error is None


@dataclass(frozen=True)
class NodeStatus:
    """Node and the pinned npm packages as found on this machine; `problems` says how to fix what is missing."""

    node_path: str | None
    node_version: str | None
    node_modules: Path
    packages: dict[str, str | None]
    pinned: dict[str, str]
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when the Node harness can run."""
        return not self.problems


@dataclass(frozen=True)
class _TensorSpec:
    key: str
    name: str
    dtype: str | None
    shape: tuple[int, ...] | None


@dataclass(frozen=True)
class _ModelInterface:
    inputs: tuple[_TensorSpec, ...]
    node_names: frozenset[str]


# ---------------------------------------------------------------------------------------------------- environment

def node_modules_dir() -> Path:
    """The node_modules folder used: $BRIDGE_NODE_MODULES, else bridge/js/node_modules."""
    override = os.environ.get("BRIDGE_NODE_MODULES")
    return Path(override).expanduser().resolve() if override else JS_DIR / "node_modules"


def node_executable() -> str | None:
    """The node binary: $BRIDGE_NODE if set, else `node` on PATH; None when there is none."""
    override = os.environ.get("BRIDGE_NODE")
    if override:
        return shutil.which(override) or (override if Path(override).is_file() else None)
    return shutil.which("node")


def _pinned_packages() -> dict[str, str]:
    try:
        deps = json.loads((JS_DIR / "package.json").read_text())["dependencies"]
        return {str(k): str(v) for k, v in deps.items()}
    except (OSError, ValueError, KeyError):
        return {"@tensorflow/tfjs": "4.22.0", "@tensorflow/tfjs-backend-wasm": "4.22.0"}


def _installed_version(modules: Path, package: str) -> str | None:
    try:
        return str(json.loads((modules / package / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def _node_version(node: str) -> str | None:
    try:
        done = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def _node_problems(node: str | None, version: str | None) -> list[str]:
    if node is None:
        return [f"Node.js not found: {NODE_HINT}"]
    if version is None:
        return [f"`{node} --version` failed: {NODE_HINT}"]
    try:
        major = int(version.lstrip("v").split(".")[0])
    except ValueError:
        return [f"cannot read the Node version '{version}': {NODE_HINT}"]
    return [] if major >= MIN_NODE_MAJOR else [f"Node {version} is too old (need >= {MIN_NODE_MAJOR}): {NODE_HINT}"]


def _package_problems(modules: Path, installed: dict[str, str | None], pinned: dict[str, str]) -> list[str]:
    problems = []
    for package, want in pinned.items():
        have = installed.get(package)
        if have is None:
            problems.append(f"npm package {package} is not installed in {modules}: {SETUP_HINT}")
        elif have != want:
            problems.append(f"npm package {package} is {have}, bridge pins {want}: {SETUP_HINT}")
    wasm_dist = modules / "@tensorflow" / "tfjs-backend-wasm" / "dist"
    if installed.get("@tensorflow/tfjs-backend-wasm") and not all((wasm_dist / f).is_file() for f in WASM_FILES):
        problems.append(f"the wasm binaries are missing from {wasm_dist}: {SETUP_HINT}")
    if not RUNNER.is_file():
        problems.append(f"the runner script {RUNNER} is missing: reinstall bridge")
    return problems


def node_status() -> NodeStatus:
    """Node's path and version, the installed pinned npm packages, and every problem with a fix. Never raises."""
    node = node_executable()
    version = _node_version(node) if node else None
    modules = node_modules_dir()
    pinned = _pinned_packages()
    installed = {package: _installed_version(modules, package) for package in pinned}
    problems = _node_problems(node, version) + _package_problems(modules, installed, pinned)
    return NodeStatus(node_path=node, node_version=version, node_modules=modules, packages=installed,
                      pinned=pinned, problems=tuple(problems))


def require_node() -> NodeStatus:
    """Returns the status when the Node harness can run; raises `MissingDependencyError` listing fixes otherwise."""
    status = node_status()
    if status.problems:
        raise MissingDependencyError("the TF.js Node runtime is not ready", stage=STAGE,
                                     hint=SETUP_HINT if status.node_path else NODE_HINT,
                                     details=list(status.problems))
    return status


# ---------------------------------------------------------------------------------------------------- model inputs

def _shape_of(tensor_shape: Mapping[str, Any] | None) -> tuple[int, ...] | None:
    if not tensor_shape or tensor_shape.get("unknownRank"):
        return None
    return tuple(int(d.get("size", -1)) for d in tensor_shape.get("dim", []))


def _interface_from(model: Mapping[str, Any]) -> _ModelInterface:
    nodes = model["modelTopology"].get("node", [])
    sig_inputs = (model.get("signature") or {}).get("inputs") or {}
    if sig_inputs:
        specs = [_TensorSpec(key=k, name=v.get("name", k), dtype=TF_TO_JS_DTYPE.get(v.get("dtype", "")),
                             shape=_shape_of(v.get("tensorShape"))) for k, v in sig_inputs.items()]
    else:  # no signature: TF.js takes the Placeholders in graph order, keyed by node name
        specs = [_TensorSpec(key=n["name"], name=n["name"], dtype=TF_TO_JS_DTYPE.get(n["attr"]["dtype"]["type"]),
                             shape=_shape_of(n["attr"].get("shape", {}).get("shape")))
                 for n in nodes if n.get("op") == "Placeholder"]
    return _ModelInterface(inputs=tuple(specs), node_names=frozenset(n["name"] for n in nodes))


def _read_interface(model_dir: Path) -> _ModelInterface:
    path = model_dir / "model.json"
    try:
        return _interface_from(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as exc:
        raise WebModelError(f"cannot read a graph model from {path}: {exc!r}", stage=STAGE,
                            hint="pass the web model folder holding model.json and its weight shards") from exc


def _spec_for(name: str, interface: _ModelInterface) -> _TensorSpec:
    for spec in interface.inputs:
        if name in (spec.key, spec.name, spec.name.split(":")[0]):
            return spec
    known = ", ".join(spec.key for spec in interface.inputs)
    raise UsageError(f"unknown model input '{name}'", stage=STAGE, hint=f"the model's inputs are: {known}")


def _check_array(spec: _TensorSpec, array: np.ndarray, index: int) -> None:
    where = f"input '{spec.key}' of input set {index}"
    if spec.dtype is not None and spec.dtype != "string" and str(array.dtype) != spec.dtype:
        raise UsageError(f"{where} is {array.dtype} but the model wants {spec.dtype}", stage=STAGE,
                         hint=f"cast the array to {spec.dtype}")
    if spec.shape is not None:
        fits = len(spec.shape) == array.ndim and all(d in (-1, a) for d, a in zip(spec.shape, array.shape))
        if not fits:
            raise UsageError(f"{where} has shape {list(array.shape)} but the model wants {list(spec.shape)} "
                             "(-1 = any size)", stage=STAGE)


def _normalise_set(input_set: InputSet, interface: _ModelInterface, index: int) -> dict[str, np.ndarray]:
    if isinstance(input_set, Mapping):
        pairs = [(_spec_for(str(name), interface), value) for name, value in input_set.items()]
    elif isinstance(input_set, Sequence) and not isinstance(input_set, (str, bytes)):
        if len(input_set) != len(interface.inputs):
            raise UsageError(f"input set {index} has {len(input_set)} arrays, the model takes "
                             f"{len(interface.inputs)}", stage=STAGE)
        pairs = list(zip(interface.inputs, input_set))
    else:
        raise UsageError(f"input set {index} must be a mapping or a list of arrays, not {type(input_set).__name__}",
                         stage=STAGE)
    result: dict[str, np.ndarray] = {}
    for spec, value in pairs:
        if spec.key in result:
            raise UsageError(f"input set {index} gives input '{spec.key}' twice", stage=STAGE)
        array = to_js_array(np.asarray(value), spec.key)
        _check_array(spec, array, index)
        result[spec.key] = array
    missing = [spec.key for spec in interface.inputs if spec.key not in result]
    if missing:
        raise UsageError(f"input set {index} misses the model inputs {missing}", stage=STAGE)
    return result


def _check_request(input_sets: Sequence[InputSet], backends: Sequence[str], fetch: Sequence[str],
                   interface: _ModelInterface) -> None:
    if isinstance(input_sets, Mapping):
        raise UsageError("input_sets must be a list of input sets, not one mapping", stage=STAGE,
                         hint="wrap it: run_graph_model(model_dir, [inputs])")
    bad = [b for b in backends if b not in NODE_BACKENDS]
    if bad or not backends or len(set(backends)) != len(backends):
        raise UsageError(f"backends must be distinct names from {list(NODE_BACKENDS)}, got {list(backends)}",
                         stage=STAGE, hint="webgl runs only in the browser harness")
    unknown = [name for name in fetch if name.split(":")[0] not in interface.node_names]
    if unknown:
        raise UsageError(f"cannot fetch {unknown}: no such node in the graph", stage=STAGE,
                         hint="fetch names are node names from model.json (optionally with :index)")


# ---------------------------------------------------------------------------------------------------- process

def _write_request(work: Path, model_dir: Path, sets: list[dict[str, np.ndarray]], backends: Sequence[str],
                   fetch: Sequence[str], warmup: int, repeats: int) -> Path:
    with pack_writer(work / "inputs.bin") as writer:
        refs = [{key: writer.add(array).to_json() for key, array in s.items()} for s in sets]
    request = {
        "protocol": 1, "model_dir": str(model_dir), "node_modules": str(node_modules_dir()),
        "backends": list(backends), "fetch": list(fetch), "warmup": warmup, "repeats": repeats,
        "input_sets": refs, "inputs_file": str(work / "inputs.bin"),
        "outputs_file": str(work / "outputs.bin"), "summary_file": str(work / "summary.json"),
    }
    path = work / "request.json"
    path.write_text(json.dumps(request))
    return path


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kills the runner and anything it started (it leads its own process group), then reaps it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()
    proc.communicate()


def _run_process(command: list[str], timeout_s: float) -> tuple[int, str]:
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill(proc)
        raise RuntimeStageError(f"TF.js in Node did not finish within {timeout_s:g} s and was stopped",
                                stage=STAGE, hint="raise the timeout, or run fewer input sets/backends") from None
    except BaseException:
        _kill(proc)
        raise
    return proc.returncode, stderr.decode("utf-8", "replace")


def _tail(text: str, lines: int = 15) -> list[str]:
    return [line for line in text.strip().splitlines()[-lines:] if line.strip()]


def _fatal_error(fatal: Mapping[str, str], stderr: str) -> BridgeError:
    kind, message = fatal.get("kind", ""), fatal.get("message", "unknown failure")
    if kind == "model":
        return WebModelError(message, stage=STAGE, hint="re-export the web model; every shard listed in "
                             "model.json must be complete and inside its folder")
    if kind == "deps":
        return MissingDependencyError(message, stage=STAGE, hint=SETUP_HINT, details=_tail(stderr, 5))
    if kind == "request":
        return UsageError(message, stage=STAGE)
    return RuntimeStageError(message, stage=STAGE, details=_tail(stderr))


def _backend_run(entry: Mapping[str, Any], blob: bytes) -> BackendRun:
    def unpack(sets: list[list[Mapping[str, Any]]]) -> list[dict[str, np.ndarray]]:
        return [{item["key"]: read_tensor(blob, TensorRef.from_json(item["ref"])) for item in s} for s in sets]

    error = entry.get("error")
    if error is not None and entry.get("stage"):
        error = f"{entry['stage']}: {error}"
    return BackendRun(backend=entry["backend"], outputs=unpack(entry["outputs"]), fetched=unpack(entry["fetched"]),
                      load_ms=float(entry.get("load_ms") or 0.0), infer_ms=[float(t) for t in entry["infer_ms"]],
                      set_ms=[float(t) for t in entry.get("set_ms", [])],
                      used_async=bool(entry["used_async"]), error=error,
                      async_reason=str(entry.get("async_reason") or ""),
                      tensors_leaked=entry.get("tensors_leaked"), flags=dict(entry.get("flags") or {}))


def _read_summary(work: Path, code: int, stderr: str,
                  read_entry: Callable[[Mapping[str, Any], bytes], BackendRun] = _backend_run
                  ) -> dict[str, BackendRun]:
    summary_path = work / "summary.json"
    if code not in (0, 2) or not summary_path.is_file():
        raise RuntimeStageError(f"the TF.js Node runner crashed (exit code {code})", stage=STAGE,
                                hint="see the Node error below; check `bridge doctor`", details=_tail(stderr))
    summary = json.loads(summary_path.read_text())
    if summary.get("fatal"):
        raise _fatal_error(summary["fatal"], stderr)
    outputs = work / "outputs.bin"
    blob = outputs.read_bytes() if outputs.is_file() else b""
    return {entry["backend"]: read_entry(entry, blob) for entry in summary["backends"]}


def _checked_sets(input_sets: Sequence[InputSet], backends: Sequence[str], fetch: Sequence[str],
                  interface: _ModelInterface, warmup: int, repeats: int) -> list[dict[str, np.ndarray]]:
    """The request checked (backends, fetched names, repetitions) and every input set normalised."""
    _check_request(input_sets, backends, fetch, interface)
    if warmup < 0 or repeats < 0:
        raise UsageError("warmup and repeats must be >= 0", stage=STAGE)
    return [_normalise_set(s, interface, i) for i, s in enumerate(input_sets)]


def run_graph_model(model_dir: Path, input_sets: Sequence[InputSet], *, backends: Sequence[str] = NODE_BACKENDS,
                    fetch: Sequence[str] = (), warmup: int = 0, repeats: int = 1,
                    timeout_s: float = 300.0) -> dict[str, BackendRun]:
    """Runs the TF.js graph model in `model_dir` on each backend and input set, in one Node process.

    Each input set maps signature input keys (or tensor names, with or without ``:0``) to arrays, or lists the
    arrays in signature input order. int64 inputs become int32, float64 become float32 (a `UsageError` if a value
    does not fit). `fetch` names intermediate graph nodes whose outputs are returned too. After the outputs, the first input
    set is run `warmup` times untimed and `repeats` times timed. Returns one `BackendRun` per backend, in order.
    """
    model_dir = Path(model_dir).resolve()
    sets = _checked_sets(input_sets, backends, fetch, _read_interface(model_dir), warmup, repeats)
    status = require_node()
    assert status.node_path is not None
    with tempfile.TemporaryDirectory(prefix="bridge-tfjs-") as tmp:
        work = Path(tmp)
        request = _write_request(work, model_dir, sets, backends, fetch, warmup, repeats)
        code, stderr = _run_process([status.node_path, str(RUNNER), str(request)], timeout_s)
        return _read_summary(work, code, stderr)


# ---------------------------------------------------------------------------------------------------- layers models

@dataclass(frozen=True)
class LayersFit:
    """One `fit` run of a layers model in TF.js: `x` and `y` keyed by input / output name (or listed in order),
    `epochs` epochs of `batch_size`, no shuffling. `loss` (a Keras / TF.js loss name, ``mean_squared_error`` or
    ``meanSquaredError``) and `optimizer` (``sgd``, ``momentum``, ``adam``, ``adamax``, ``adagrad``,
    ``adadelta``, ``rmsprop``) with a fixed `learning_rate` recompile the model; both None keep the model's own
    trainingConfig."""

    x: InputSet
    y: InputSet
    loss: str | None = None
    optimizer: str | None = None
    learning_rate: float = 0.01
    momentum: float | None = None
    epochs: int = 1
    batch_size: int = 32


@dataclass(frozen=True)
class FitRun:
    """What `fit` did: the loss per epoch, its time, and every weight (by tfjs name) before and after."""

    loss: list[float]
    ms: float
    before: dict[str, np.ndarray]
    after: dict[str, np.ndarray]

    def changed(self) -> list[str]:
        """Names of the weights whose values changed."""
        return [name for name, value in self.after.items()
                if name not in self.before or not np.array_equal(value, self.before[name])]


@dataclass(frozen=True)
class LayersBackendRun(BackendRun):
    """A `BackendRun` of a layers model (outputs keyed by output name, from ``predict``), plus its fit run; a fit
    that failed (some backends lack training kernels: wasm has no Conv2DBackpropFilter) leaves `error` None and
    says why in `fit_error`."""

    fit: FitRun | None = None
    fit_error: str | None = None


def _layer_input_spec(layer: Mapping[str, Any], key: str) -> _TensorSpec:
    config = layer.get("config") or {}
    shape = config.get("batch_input_shape") or config.get("batch_shape")
    dtype = config.get("dtype") if isinstance(config.get("dtype"), str) else None
    return _TensorSpec(key=key, name=key, dtype=dtype if dtype in ("float32", "int32", "bool") else "float32",
                       shape=None if shape is None else tuple(-1 if d is None else int(d) for d in shape))


def layers_interface(model: Mapping[str, Any]) -> tuple[list[str], list[str], _ModelInterface]:
    """Input names, output names and the input specs of a layers model's model.json (Keras 2 topology: a
    Functional's input/output layers, or a Sequential's first and last layer)."""
    topology = model["modelTopology"]
    topology = topology.get("model_config", topology)
    config = topology["config"]
    layers = config if isinstance(config, list) else config["layers"]
    if topology["class_name"] == "Sequential":
        first = layers[0]
        is_input = first["class_name"] == "InputLayer"
        name = first["config"]["name"] if is_input else f"{first['config']['name']}_input"
        specs = [_layer_input_spec(first, name)]
        outputs = [layers[-1]["config"]["name"]]
    else:
        by_name = {layer["name"]: layer for layer in layers}
        specs = [_layer_input_spec(by_name[entry[0]], entry[0]) for entry in config["input_layers"]]
        outputs = _unique_names([entry[0] for entry in config["output_layers"]])
    return [s.key for s in specs], outputs, _ModelInterface(inputs=tuple(specs), node_names=frozenset())


def _unique_names(names: Sequence[str]) -> list[str]:
    """``name``, ``name_1``, ... for a layer that is an output more than once (as bridge.tfjs.sources names them)."""
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        unique.append(name if name not in seen else f"{name}_{seen[name]}")
        seen[name] = seen.get(name, 0) + 1
    return unique


def _read_layers_interface(model_dir: Path) -> tuple[list[str], list[str], _ModelInterface]:
    path = model_dir / "model.json"
    try:
        model = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise WebModelError(f"cannot read {path}: {exc}", stage=STAGE,
                            hint="pass the layers model folder holding model.json and its weight shards") from exc
    if not isinstance(model, dict) or model.get("format") != "layers-model":
        found = model.get("format") if isinstance(model, dict) else type(model).__name__
        raise WebModelError(f"{path} is not a TF.js layers model (format '{found}')", stage=STAGE,
                            hint="run graph models with run_graph_model")
    try:
        return layers_interface(model)
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise WebModelError(f"cannot read the layers topology in {path}: {exc!r}", stage=STAGE,
                            hint="re-export the layers model") from exc


def _output_arrays(y: InputSet, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Fit targets keyed by output name (a list is taken in output order)."""
    if isinstance(y, Mapping):
        unknown = [k for k in y if k not in names]
        if unknown:
            raise UsageError(f"fit targets for unknown outputs {unknown}", stage=STAGE,
                             hint=f"the model's outputs are: {', '.join(names)}")
        pairs = [(str(k), v) for k, v in y.items()]
    else:
        if len(y) != len(names):
            raise UsageError(f"fit has {len(y)} target arrays, the model has {len(names)} outputs", stage=STAGE)
        pairs = list(zip(names, y))
    return {key: to_js_array(np.asarray(value), key) for key, value in pairs}


_OPTIMIZERS = ("sgd", "momentum", "adam", "adamax", "adagrad", "adadelta", "rmsprop")


def _fit_request(fit: LayersFit, interface: _ModelInterface, outputs: Sequence[str],
                 writer: Any) -> dict[str, Any]:
    if (fit.loss is None) != (fit.optimizer is None):
        raise UsageError("a fit needs both a loss and an optimizer, or neither (to use the model's trainingConfig)",
                         stage=STAGE)
    if fit.optimizer is not None and fit.optimizer not in _OPTIMIZERS:
        raise UsageError(f"unknown optimizer {fit.optimizer!r}", stage=STAGE, hint=f"use one of {_OPTIMIZERS}")
    if fit.epochs < 1 or fit.batch_size < 1:
        raise UsageError("fit epochs and batch_size must be >= 1", stage=STAGE)
    loss = None if fit.loss is None else _tfjs_loss_name(fit.loss)
    x = _normalise_set(fit.x, interface, 0)
    y = _output_arrays(fit.y, outputs)
    optimizer = None if fit.optimizer is None else {
        "name": fit.optimizer, "learning_rate": float(fit.learning_rate), "momentum": fit.momentum}
    return {"x": {k: writer.add(v).to_json() for k, v in x.items()},
            "y": {k: writer.add(v).to_json() for k, v in y.items()},
            "loss": loss, "optimizer": optimizer, "epochs": fit.epochs, "batch_size": fit.batch_size}


def _tfjs_loss_name(loss: str) -> str:
    """A Keras loss name or alias (``mse``, ``MeanSquaredError``, ``meanSquaredError``) as the tfjs loss name."""
    from bridge.tfjs.layers.registry import LOSS_ALIASES, LOSSES

    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in loss) if loss[:1].islower() else loss
    name = LOSS_ALIASES.get(snake, LOSS_ALIASES.get(loss, snake))
    if name not in LOSSES:
        raise UsageError(f"unknown loss {loss!r}", stage=STAGE, hint=f"use one of {sorted(LOSSES)}")
    return name


def _layers_backend_run(entry: Mapping[str, Any], blob: bytes) -> LayersBackendRun:
    """A runner entry of a layers model as a `LayersBackendRun` (outputs via `_backend_run`, plus the fit)."""
    base = _backend_run(entry, blob)
    fit = entry.get("fit")

    def unpack(items: list[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        return {item["key"]: read_tensor(blob, TensorRef.from_json(item["ref"])) for item in items}

    run = None if not fit else FitRun(loss=[float(v) for v in fit["loss"]], ms=float(fit["ms"]),
                                      before=unpack(fit["before"]), after=unpack(fit["after"]))
    return LayersBackendRun(**{name: getattr(base, name) for name in BackendRun.__dataclass_fields__}, fit=run,
                            fit_error=entry.get("fit_error"))


def run_layers_model(model_dir: Path, input_sets: Sequence[InputSet], *, backends: Sequence[str] = NODE_BACKENDS,
                     fit: LayersFit | None = None, warmup: int = 0, repeats: int = 1,
                     timeout_s: float = 300.0) -> dict[str, LayersBackendRun]:
    """Loads the TF.js layers model in `model_dir` with ``tf.loadLayersModel`` on each backend (one Node process),
    runs ``predict`` on every input set (keyed by input name, or listed in input order), times the first set, then
    runs `fit` once if given (a fresh load per backend, so each backend fits the same weights). Outputs are keyed
    by the model's output names. Returns one `LayersBackendRun` per backend, in order."""
    model_dir = Path(model_dir).resolve()
    _, outputs, interface = _read_layers_interface(model_dir)
    sets = _checked_sets(input_sets, backends, (), interface, warmup, repeats)
    status = require_node()
    assert status.node_path is not None
    with tempfile.TemporaryDirectory(prefix="bridge-tfjs-") as tmp:
        work = Path(tmp)
        with pack_writer(work / "inputs.bin") as writer:
            refs = [{key: writer.add(array).to_json() for key, array in s.items()} for s in sets]
            fit_request = _fit_request(fit, interface, outputs, writer) if fit is not None else None
        request = {
            "protocol": 1, "kind": "layers", "model_dir": str(model_dir), "node_modules": str(node_modules_dir()),
            "backends": list(backends), "fetch": [], "warmup": warmup, "repeats": repeats, "input_sets": refs,
            "fit": fit_request, "output_keys": outputs, "inputs_file": str(work / "inputs.bin"),
            "outputs_file": str(work / "outputs.bin"), "summary_file": str(work / "summary.json"),
        }
        path = work / "request.json"
        path.write_text(json.dumps(request))
        code, stderr = _run_process([status.node_path, str(RUNNER), str(path)], timeout_s)
        return _read_summary(work, code, stderr, _layers_backend_run)  # type: ignore[return-value]
