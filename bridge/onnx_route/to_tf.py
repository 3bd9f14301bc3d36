"""ONNX -> TensorFlow through onnx2tf's Python API, offline and quiet, then a lean SavedModel.

onnx2tf builds a Keras model in seconds when told not to save anything (`disable_model_save=True`); saving that
Keras model with `tf.saved_model.save` traces every layer and takes minutes. bridge instead saves a `tf.Module`
holding only the model's variables and ONE serving `tf.function` whose input signature uses the user's input
names (in the user's order) and which returns a dict keyed by the user's output names. Input layouts follow
`layouts.plan_input`; output layouts are found by comparing with onnxruntime on the sample inputs.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from bridge.errors import BridgeError, ExportError, OutputError, UsageError
from bridge.source.ports import Port, inverse_perm, web_dtype
from bridge.onnx_route.layouts import (
    CHANNELS_LAST_PERM,
    NCHW_TO_NHWC,
    apply_perm,
    candidate_perms,
    check_input_layouts,
    identity_perm,
    match_tolerance,
    max_abs_diff,
    output_layout,
    permute_shape,
    plan_input,
)
from bridge.onnx_route.failures import log_errors, clean, onnx2tf_failure
from bridge.onnx_route.onnxrt import OnnxValueSpec, external_data_files, io_specs, load_onnx_checked, run_onnx
from bridge.util.quiet import captured_output, import_onnx2tf, import_tensorflow, network_blocked

_STAGE = "onnx-to-tf"
SIGNATURE_KEY = "serving_default"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class TfRebuild:
    """The TF model onnx2tf built, saved as a SavedModel with one clean serving signature.

    `inputs`/`outputs` describe the signature (user names and order, TF shapes with None for dynamic dims,
    layouts and the permutation from PyTorch). `run_tf` runs the in-memory model: TF-layout arrays in, TF-layout
    arrays out keyed by output name (the `tf` parity stage). `onnx_max_abs_diff` is max |TF - onnxruntime| per
    output on the sample inputs. `seconds` holds the time of each sub-step.
    """

    saved_model_dir: Path
    inputs: list[Port]
    outputs: list[Port]
    run_tf: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]] = field(repr=False, compare=False)
    onnx_max_abs_diff: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    signature_key: str = SIGNATURE_KEY

    def tf_inputs_from_torch(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """PyTorch-ordered input arrays rearranged into the signature's layouts and dtypes (int64 ids as int32)."""
        return {info.name: _cast_exactly(info.name, info.move_to_web(inputs[info.name]), web_dtype(info.dtype))
                for info in self.inputs}

    def torch_outputs_from_tf(self, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """TF-layout output arrays rearranged back into PyTorch's order."""
        return {info.name: info.to_torch(np.asarray(outputs[info.name])) for info in self.outputs}


@dataclass(frozen=True)
class _OutputPlan:
    """Where one ONNX output is among the Keras model's outputs, and its permutation from PyTorch order there."""

    name: str
    keras_index: int
    perm: tuple[int, ...]
    serve_perm: tuple[int, ...]  # after the serving function's own transpose (identity: back to PyTorch order)


def onnx_to_saved_model(onnx_path: Path | str, saved_model_dir: Path | str, *, input_layouts: Mapping[str, str],
                        sample_inputs: Mapping[str, np.ndarray], verbose: bool = False,
                        overwrite: bool = False) -> TfRebuild:
    """Convert an ONNX file to a SavedModel through onnx2tf, offline, and describe its serving interface.

    `input_layouts` maps 4-D float input names to "nhwc" (default for unnamed ones) or "nchw"; other inputs keep
    PyTorch's order. `sample_inputs` (PyTorch order, keyed by ONNX input name) feed onnx2tf's own checks and the
    numerical matching of outputs against onnxruntime. Raises UsageError for bad arguments, ExportError when
    onnx2tf fails or its model's interface cannot be matched to the ONNX one, OutputError for an existing folder.
    """
    times: dict[str, float] = {}
    onnx_file = Path(onnx_path)
    target = _check_target(Path(saved_model_dir), overwrite)
    with _timed(times, "check"):
        inputs, outputs = io_specs(load_onnx_checked(onnx_file))
    samples = _check_samples(inputs, outputs, sample_inputs)
    layouts = check_input_layouts(input_layouts, [i.name for i in inputs])
    plans = {i.name: plan_input(i.name, samples[i.name].shape, i.dtype, layouts) for i in inputs}

    with _timed(times, "onnxruntime"):
        reference = run_onnx(onnx_file, samples)
    with _timed(times, "import"):
        tf = import_tensorflow(verbose)
        import_onnx2tf(verbose)
    with _timed(times, "onnx2tf"):
        model = _run_onnx2tf(onnx_file, inputs, samples, plans, verbose)
    with _timed(times, "match"):
        input_infos = _input_infos(model, inputs, plans)
        raw = _raw_function(tf, model, input_infos)
        tf_samples = {i.name: _cast_exactly(i.name, i.move_to_web(samples[i.name]), i.dtype) for i in input_infos}
        raw_values = [np.asarray(v) for v in raw(*[tf_samples[i.name] for i in input_infos])]
        hints = dict(getattr(model, "onnx_output_layouts", {}) or {})
        out_plans = _match_outputs(outputs, reference, raw_values, hints)
        serve = _serving_function(tf, raw, input_infos, out_plans)
        run_tf = _runner(serve, input_infos)
        got = run_tf(tf_samples)
        output_infos = _output_infos(serve, out_plans, got)
        diffs = {o.name: max_abs_diff(o.to_torch(got[o.name]), reference[o.name]) for o in output_infos}
    with _timed(times, "save"):
        _save(tf, model, serve, target)
    times["total"] = sum(times.values())
    return TfRebuild(saved_model_dir=target, inputs=input_infos, outputs=output_infos, run_tf=run_tf,
                     onnx_max_abs_diff=diffs, seconds=times)


@contextlib.contextmanager
def _timed(times: dict[str, float], key: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        times[key] = times.get(key, 0.0) + time.perf_counter() - start


def _check_target(target: Path, overwrite: bool) -> Path:
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not overwrite:
        raise OutputError(f"{target} already exists and is not empty", stage=_STAGE,
                          hint="choose another folder or pass overwrite=True")
    return target


def _check_samples(inputs: list[OnnxValueSpec], outputs: list[OnnxValueSpec],
                   sample_inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The sample inputs as arrays, checked against the graph's input names, ranks and fixed dims."""
    names = [i.name for i in inputs]
    bad = [n for n in names + [o.name for o in outputs] if not _NAME.match(n)]
    if bad:
        raise UsageError(f"ONNX input/output names must be identifiers to become signature keys: {bad}",
                         stage=_STAGE, hint="re-export with input_names/output_names made of letters, digits, _")
    if not inputs:
        raise UsageError("the ONNX graph has no inputs", stage=_STAGE)
    if sorted(sample_inputs) != sorted(names):
        raise UsageError("sample_inputs must name exactly the ONNX graph's inputs", stage=_STAGE,
                         details=[f"graph inputs: {', '.join(names)}",
                                  f"sample inputs: {', '.join(sample_inputs) or '-'}"])
    samples = {spec.name: _cast_exactly(spec.name, sample_inputs[spec.name], spec.dtype) for spec in inputs}
    for spec in inputs:
        shape = samples[spec.name].shape
        if spec.shape is not None and (len(shape) != len(spec.shape) or any(
                isinstance(d, int) and d != s for d, s in zip(spec.shape, shape))):
            raise UsageError(f"sample input {spec.name!r} has shape {list(shape)}, the graph wants "
                             f"{list(spec.shape)}", stage=_STAGE)
    return samples


# --------------------------------------------------------------------------------------------------- onnx2tf run


def _reset_keras_names() -> None:
    """Reset Keras' global layer-name counters, so a second conversion in the same process names its nodes
    (`model_1/tf.math.reduce_mean_4/...`) exactly like the first and the web model comes out byte-identical."""
    import importlib

    for name in ("tf_keras", "keras"):
        try:
            importlib.import_module(name).backend.clear_session()
        except (ImportError, AttributeError):
            continue


def _run_onnx2tf(onnx_file: Path, inputs: list[OnnxValueSpec], samples: dict[str, np.ndarray],
                 plans: dict[str, tuple[str, tuple[int, ...]]], verbose: bool) -> Any:
    """onnx2tf.convert on a private copy of the file (it rewrites its input in place), returning the Keras model."""
    onnx2tf = import_onnx2tf(verbose)
    _reset_keras_names()
    keep_source = [i.name for i in inputs if len(samples[i.name].shape) in CHANNELS_LAST_PERM
                   and plans[i.name][1] == identity_perm(len(samples[i.name].shape))]
    with tempfile.TemporaryDirectory(prefix="bridge-onnx2tf-") as work_dir:
        work = Path(work_dir)
        copy = _copy_onnx(onnx_file, work)
        custom = _custom_input_files(inputs, samples, plans, work)
        kwargs = dict(
            input_onnx_file_path=str(copy), output_folder_path=str(work / "out"), disable_model_save=True,
            non_verbose=not verbose, verbosity="info" if verbose else "error",
            keep_ncw_or_nchw_or_ncdhw_input_names=keep_source or None,
            custom_input_op_name_np_data_path=custom,
            shape_hints=[f"{i.name}:{','.join(str(d) for d in samples[i.name].shape)}" for i in inputs],
        )
        model, failure = None, None
        with captured_output(verbose) as log, _onnx2tf_sandbox(samples, plans, inputs):
            try:
                with network_blocked(_STAGE, "onnx2tf"):
                    model = onnx2tf.convert(**kwargs)
            except BridgeError:
                raise
            except (Exception, SystemExit) as exc:  # onnx2tf reports many errors with sys.exit(1)
                failure = exc
        if failure is not None:
            raise onnx2tf_failure(failure, log.text, [onnx_file, copy], verbose=verbose, stage=_STAGE) from failure
    if model is None:
        raise ExportError("onnx2tf returned no model", stage=_STAGE, details=log_errors(clean(log.text)),
                          hint="" if verbose else "rerun with --verbose to see onnx2tf's full log")
    return model


def _short(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"it exited with status {exc.code}"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0][:300]}" if lines else type(exc).__name__


def _copy_onnx(onnx_file: Path, work: Path) -> Path:
    copy = work / onnx_file.name
    shutil.copy2(onnx_file, copy)
    for data in external_data_files(onnx_file):
        relative = data.relative_to(onnx_file.parent)
        (work / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(data, work / relative)
    return copy


def _custom_input_files(inputs: list[OnnxValueSpec], samples: dict[str, np.ndarray],
                        plans: dict[str, tuple[str, tuple[int, ...]]], work: Path) -> list[list[str]] | None:
    """The samples as .npy files in TF layout for onnx2tf's dummy inferences, or None when that is unsafe.

    onnx2tf feeds such a file to onnxruntime after transposing it back only when its shape differs from the
    ONNX shape; for a channels-last input whose shape reads the same both ways (1x3x3x3) it would feed the wrong
    layout, so then it gets no files and falls back to its own dummy data (with the download helper replaced).
    """
    files: list[list[str]] = []
    for spec in inputs:
        sample = samples[spec.name]
        perm = plans[spec.name][1]
        if perm != identity_perm(sample.ndim) and permute_shape(sample.shape, perm) == sample.shape:
            return None
        path = work / f"sample_{len(files)}.npy"
        np.save(path, apply_perm(sample, perm))
        files.append([spec.name, str(path)])
    return files


@contextlib.contextmanager
def _onnx2tf_sandbox(samples: dict[str, np.ndarray], plans: dict[str, tuple[str, tuple[int, ...]]],
                     inputs: list[OnnxValueSpec]) -> Iterator[None]:
    """Replace onnx2tf's sample-image download, keep its global RNG seeding and env edits from leaking out,
    and make its `onnxsim` subprocess resolvable from this interpreter's environment."""
    import onnx2tf.onnx2tf as entry  # noqa: PLC0415
    import onnx2tf.utils.common_functions as common  # noqa: PLC0415

    first = inputs[0].name
    local_images = apply_perm(samples[first], plans[first][1]).astype(np.float32)

    def no_download() -> np.ndarray:
        return local_images

    saved_download = (entry.download_test_image_data, common.download_test_image_data)
    saved_rng = (np.random.get_state(), random.getstate())
    saved_env = {key: os.environ.get(key) for key in ("PATH", "CUDA_VISIBLE_DEVICES")}
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    entry.download_test_image_data = no_download
    common.download_test_image_data = no_download
    try:
        yield
    finally:
        entry.download_test_image_data, common.download_test_image_data = saved_download
        np.random.set_state(saved_rng[0])
        random.setstate(saved_rng[1])
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        with contextlib.suppress(Exception):
            common.set_dummy_shape_hints(None)


# --------------------------------------------------------------------------------------------- interface match


def _keras_input_names(model: Any) -> list[str]:
    names = list(getattr(model, "input_names", None) or [t.name.split(":")[0] for t in model.inputs])
    return [n.split(":")[0] for n in names]


def _input_infos(model: Any, inputs: list[OnnxValueSpec], plans: dict[str, tuple[str, tuple[int, ...]]]
                 ) -> list[Port]:
    """The signature's inputs, in the ONNX (user) order, checked against the shapes onnx2tf gave them."""
    keras_names = _keras_input_names(model)
    if sorted(keras_names) != sorted(i.name for i in inputs):
        raise ExportError("onnx2tf's model has different inputs from the ONNX graph", stage=_STAGE,
                          details=[f"ONNX: {[i.name for i in inputs]}", f"TF: {keras_names}"])
    infos: list[Port] = []
    for spec in inputs:
        layout, perm = plans[spec.name]
        tensor = model.inputs[keras_names.index(spec.name)]
        tf_shape = tuple(None if d is None else int(d) for d in tensor.shape)
        onnx_shape = tuple(d if isinstance(d, int) else None for d in (spec.shape or ()))
        if spec.shape is not None and tf_shape != permute_shape(onnx_shape, perm):
            raise ExportError(
                f"onnx2tf gave input {spec.name!r} shape {list(tf_shape)}, expected {layout} "
                f"{list(permute_shape(onnx_shape, perm))}", stage=_STAGE,
                hint="this input's layout cannot be controlled through onnx2tf; try the other input layout")
        infos.append(Port.from_web_shape(spec.name, tf_shape, tensor.dtype.name, layout, perm))
    return infos


def _raw_function(tf: Any, model: Any, input_infos: list[Port]) -> Callable[..., list[Any]]:
    """The Keras model as a tf.function taking inputs in user order and returning its outputs as a list."""
    keras_names = _keras_input_names(model)
    order = [[info.name for info in input_infos].index(name) for name in keras_names]

    @tf.function(input_signature=[tf.TensorSpec(i.web_shape, i.dtype, name=i.name) for i in input_infos])
    def raw(*args: Any) -> list[Any]:
        result = model([args[k] for k in order], training=False)
        return list(result) if isinstance(result, (list, tuple)) else [result]

    return raw


def _match_outputs(outputs: list[OnnxValueSpec], reference: dict[str, np.ndarray], tf_values: list[np.ndarray],
                   hints: Mapping[str, Any]) -> list[_OutputPlan]:
    """Find each ONNX output among the TF outputs (same position first), with the permutation that fits."""
    if len(tf_values) != len(outputs):
        raise ExportError(f"onnx2tf's model has {len(tf_values)} output(s), the ONNX graph {len(outputs)}",
                          stage=_STAGE)
    used: set[int] = set()
    plans: list[_OutputPlan] = []
    for position, spec in enumerate(outputs):
        order = [position] + [k for k in range(len(tf_values)) if k != position]
        found = None
        for index in (k for k in order if k not in used):
            found = _best_perm(reference[spec.name], tf_values[index], bool(hints.get(spec.name, False)))
            if found is not None:
                used.add(index)
                plans.append(_plan_output(spec.name, index, found))
                break
        if found is None:
            raise _mismatch(spec.name, reference[spec.name], tf_values)
    return plans


def _best_perm(reference: np.ndarray, tf_value: np.ndarray, channels_last_hint: bool) -> tuple[int, ...] | None:
    """The candidate permutation under which `tf_value` equals `reference` (within the matching tolerance)."""
    tolerance = match_tolerance(reference)
    scored = []
    for rank_in_preference, perm in enumerate(candidate_perms(reference.shape, tf_value.shape, channels_last_hint)):
        error = max_abs_diff(apply_perm(reference, perm), tf_value)
        if error <= tolerance:
            scored.append((error, rank_in_preference, perm))
    return min(scored)[2] if scored else None


def _plan_output(name: str, index: int, perm: tuple[int, ...]) -> _OutputPlan:
    """Keep 4-D outputs channels-last or source as onnx2tf made them; put every other layout back in order."""
    rank = len(perm)
    keep = rank == 4 and perm in (NCHW_TO_NHWC, identity_perm(4))
    return _OutputPlan(name, index, perm, perm if keep else identity_perm(rank))


def _mismatch(name: str, reference: np.ndarray, tf_values: list[np.ndarray]) -> ExportError:
    details = [f"onnxruntime {name}: shape {list(reference.shape)}, dtype {reference.dtype}"]
    for index, value in enumerate(tf_values):
        perms = candidate_perms(reference.shape, value.shape, False)
        errors = ", ".join(f"perm {p}: max|Δ| {max_abs_diff(apply_perm(reference, p), value):.3g}" for p in perms)
        details.append(f"TF output {index}: shape {list(value.shape)}; {errors or 'no layout fits the shape'}")
    return ExportError(
        f"output {name!r} of onnx2tf's model matches no ONNX output on the sample inputs in any layout",
        stage=_STAGE, details=details,
        hint="onnx2tf changed this output's layout or values; the model needs the native route or a fix file",
    )


def _serving_function(tf: Any, raw: Callable[..., list[Any]], input_infos: list[Port],
                      out_plans: list[_OutputPlan]) -> Any:
    """The one serving tf.function: user input names and order, outputs as a dict in the user's order."""

    def serve(*args: Any) -> dict[str, Any]:
        values = raw(*[tf.cast(a, i.dtype) if a.dtype != i.dtype else a for a, i in zip(args, input_infos)])
        result = {}
        for plan in out_plans:
            value = values[plan.keras_index]
            # perm takes torch -> onnx2tf layout; this transpose takes it on to the layout the signature promises.
            step = tuple(inverse_perm(plan.perm)[axis] for axis in plan.serve_perm)
            value = value if step == identity_perm(len(step)) else tf.transpose(value, step)
            if value.dtype in (tf.int64, tf.float64):  # TF.js has neither: the web interface is int32/float32
                value = tf.cast(value, tf.int32 if value.dtype == tf.int64 else tf.float32)
            result[plan.name] = tf.identity(value, name=plan.name)
        return result

    specs = [tf.TensorSpec(i.web_shape, web_dtype(i.dtype), name=i.name) for i in input_infos]
    return tf.function(serve, input_signature=specs).get_concrete_function()


def _runner(serve: Any, input_infos: list[Port]) -> Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]:
    def run_tf(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the in-memory TF model: TF-layout arrays keyed by input name in, outputs keyed by name out.

        Arrays are cast to the signature's dtype when no value changes (int32 ids for an int64 input)."""
        missing = sorted({info.name for info in input_infos} - set(inputs))
        if missing:
            raise UsageError(f"missing input(s) {', '.join(missing)}", stage="tf")
        values = serve(*[_cast_exactly(info.name, inputs[info.name], web_dtype(info.dtype)) for info in input_infos])
        return {key: np.asarray(value) for key, value in values.items()}

    return run_tf


def _cast_exactly(name: str, value: np.ndarray, dtype: Any) -> np.ndarray:
    """`value` as `dtype` when no value changes (int32 ids for an int64 input); UsageError otherwise."""
    array = np.asarray(value)
    wanted = np.dtype(dtype)
    if array.dtype == wanted:
        return array
    cast = array.astype(wanted)
    if not np.array_equal(cast.astype(array.dtype), array, equal_nan=np.issubdtype(array.dtype, np.floating)):
        raise UsageError(f"input {name!r} is {array.dtype}; {wanted} is needed and the cast would change values",
                         stage=_STAGE, hint=f"pass {wanted} data")
    return cast


def _output_infos(serve: Any, out_plans: list[_OutputPlan], got: Mapping[str, np.ndarray]) -> list[Port]:
    """The signature's outputs in ONNX (user) order, with the shapes the serving function declares."""
    structured = serve.structured_outputs
    infos = []
    for plan in out_plans:
        tensor = structured[plan.name]
        shape = tuple(None if d is None else int(d) for d in tensor.shape)
        rank = len(plan.serve_perm)
        infos.append(Port.from_web_shape(plan.name, shape, np.asarray(got[plan.name]).dtype.name,
                                          output_layout(rank, plan.serve_perm), plan.serve_perm))
    return infos


# ------------------------------------------------------------------------------------------------------- saving


def _save(tf: Any, model: Any, serve: Any, target: Path) -> None:
    """Write a SavedModel holding only the variables and the serving function, atomically into `target`."""
    holder = tf.Module()
    holder.model_variables = list(model.variables)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tf.saved_model.save(holder, str(staging), signatures={SIGNATURE_KEY: serve})
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except Exception as exc:
        raise ExportError(f"could not write the SavedModel: {_short(exc)}", stage="savedmodel") from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)

