"""The native route's driver: capture -> IR -> unsupported-op scan -> layout pass -> generated tf_model.py +
tf_weights.safetensors -> import and run THAT file -> SavedModel."""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import itertools
import re
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

from bridge.errors import BridgeError, CaptureError, ConversionError, UsageError
from bridge.util.tf_errors import tf_error_message, tf_error_node
from bridge.native.attention_masks import drop_masks_that_hide_nothing
from bridge.native.capture import Captured, build_graph, capture, guard_failures, output_shape_mismatches
from bridge.native.codegen import GeneratedModel, generate
from bridge.native.fold import fold_weight_ops
from bridge.native.ir import Graph, Layout
from bridge.native.layout import RELAYOUT, assign_layouts, layout_from_name
from bridge.native.registry import ConverterRegistry, default_registry, load_builtins, scan_unsupported
from bridge.source.ports import Port

_MODULE_IDS = itertools.count()


@dataclass
class NativeRebuild:
    """What `rebuild_tf` produced: files, IO infos, the live generated TF model and figures."""

    out_dir: Path
    model_py: Path
    weights_path: Path
    saved_model_dir: Path
    inputs: list[Port]
    outputs: list[Port]
    model: Any  # the generated tf.Module instance
    capture_method: str
    op_counts: dict[str, int]  # captured ATen ops (plus bridge.relayout) by target
    relayouts: int  # layout conversions the layout pass inserted (a reshape or a transpose each)
    max_abs_error: dict[str, float]
    tf_ops: dict[str, int] = field(default_factory=dict)  # TF op histogram of the traced graph
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def transposes(self) -> int:
        """Transpose ops left in the traced TF graph (zero for a plain CNN with NHWC input)."""
        return self.tf_ops.get("Transpose", 0)

    def run(self, feeds: Mapping[str, np.ndarray] | Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Run the TF model on TF-layout inputs (by name or in order); returns TF-layout outputs by name."""
        return run_generated(self.model, self.inputs, self.outputs, feeds)

    def run_torch_layout(self, *arrays: np.ndarray) -> list[np.ndarray]:
        """Run on PyTorch-layout inputs; returns PyTorch-layout outputs in order."""
        result = self.run([info.move_to_web(a) for info, a in zip(self.inputs, arrays)])
        return [info.to_torch(result[info.name]) for info in self.outputs]


def run_generated(model: Any, inputs: Sequence[Port], outputs: Sequence[Port],
                  feeds: Mapping[str, np.ndarray] | Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Run a generated TF model on TF-layout inputs (by name or in order); returns TF-layout outputs by name."""
    arrays = [feeds[i.name] for i in inputs] if isinstance(feeds, Mapping) else list(feeds)
    result = model(*[_web_array(a, i) for a, i in zip(arrays, inputs)])
    return {o.name: result[o.name].numpy() for o in outputs}


def _web_array(array: Any, info: Port) -> np.ndarray:
    """An input array in the dtype of the generated signature (int64 ids as int32, refused if they do not fit)."""
    value = np.asarray(array)
    wanted = info.web_dtype
    if value.dtype.name == wanted:
        return value
    cast = value.astype(wanted)
    if not np.array_equal(cast, value):
        raise UsageError(f"input {info.name!r} holds values that do not fit {wanted}", stage="tf",
                         hint="TF.js has no int64: integer inputs must fit int32")
    return cast


def _sound_capture(captured: Captured, module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...],
                   keep: set[str], dims_by_index: dict[int, Mapping[int, str]], strict: bool | None,
                   names: Sequence[str], sample_shapes: Sequence[Mapping[str, tuple[int, ...]]],
                   reference_shapes: Sequence[Sequence[tuple[int, ...]]]) -> Captured:
    """`captured` when its output shapes agree with PyTorch's on every sample; else a non-strict capture (which
    names the size the model's code fixes, or holds), else a CaptureError listing the disagreements."""
    guards = guard_failures(captured.program, [[(tuple(shapes[n]), t.dtype) for n, t in zip(names, example_inputs)]
                                               for shapes in sample_shapes if all(n in shapes for n in names)])
    if guards:
        raise CaptureError("torch.export captured the model for sizes the samples do not all have: the model's code "
                           "branches on a size, and the captured program holds only on one side of it",
                           stage="capture", details=guards,
                           hint="give sizes that meet the condition (--dynamic-sizes), or make that dimension static")
    problems = output_shape_mismatches(captured.program, names, sample_shapes, reference_shapes)
    if problems and strict is None and captured.method == "torch.export strict":
        captured = capture(module, example_inputs, keep=keep, dynamic_dims=dims_by_index, strict=False)
        problems = output_shape_mismatches(captured.program, names, sample_shapes, reference_shapes)
    if problems:
        raise CaptureError(f"{captured.method} captured the model for the example's sizes only: at other sample "
                           "sizes its outputs would not have PyTorch's shapes", stage="capture", details=problems,
                           hint="the model's code turns a size into a Python number (int(x.shape[-1]), a branch "
                                "on a size): make that dimension static, or compute it with tensor ops")
    return captured


def rebuild_tf(module: torch.nn.Module, example_inputs: Sequence[torch.Tensor], out_dir: str | Path, *,
               input_names: Sequence[str] | None = None, output_names: Sequence[str] | None = None,
               input_layouts: Mapping[str, str] | None = None, output_layouts: Mapping[str, str] | None = None,
               dynamic_dims: Mapping[str, Mapping[int, str]] | None = None,
               converters: ConverterRegistry | None = None, strict: bool | None = None,
               sample_shapes: Sequence[Mapping[str, tuple[int, ...]]] = (),
               reference_shapes: Sequence[Sequence[tuple[int, ...]]] = ()) -> NativeRebuild:
    """Rebuild `module` (put in eval mode) as generated TensorFlow source in `out_dir`: tf_model.py,
    tf_weights.safetensors and saved_model/ (made by importing and running that tf_model.py).

    4-D inputs default to NHWC (`input_layouts={"x": "nchw"}` keeps PyTorch order); 4-D outputs are NHWC when an
    input is (`output_layouts` overrides). `dynamic_dims` maps an input name to {axis: dim name}, e.g.
    {"x": {0: "batch"}}. `converters` is the registry to use (default: user converters over the built-ins).
    `strict=None` captures with strict torch.export, falling back to non-strict; True/False forces one.
    `sample_shapes` ({input name: shape} per sample) must meet the guards torch.export recorded and give the output
    shapes `reference_shapes` (PyTorch's, in output order per sample); a strict capture that does not is redone
    non-strict.
    Raises CaptureError, UnsupportedOpsError (every unsupported op at once) or ConversionError."""
    load_builtins()
    registry = converters or default_registry()
    example_inputs = tuple(example_inputs)
    names = list(input_names or _forward_arg_names(module, len(example_inputs)))
    timings: dict[str, float] = {}
    with _timed(timings, "capture"), _typed_errors("capturing", "capture"):
        keep = {t for t in registry.targets() if t.startswith("aten.")}
        dims_by_index = {names.index(k): v for k, v in (dynamic_dims or {}).items() if _known(k, names)}
        captured = capture(module, example_inputs, keep=keep, dynamic_dims=dims_by_index, strict=strict)
        captured = _sound_capture(captured, module, example_inputs, keep, dims_by_index, strict, names,
                                  sample_shapes, reference_shapes)
        graph = build_graph(captured, name=type(module).__name__, input_names=names, output_names=output_names)
    with _timed(timings, "convert"), _typed_errors("generating", "tf"):
        fold_weight_ops(graph)
        drop_masks_that_hide_nothing(graph)
        scan_unsupported(_every_node(graph), registry, stage="rebuild-tf")
        in_layouts = _input_layouts(graph, input_layouts or {})
        out_layouts = _output_layouts(graph, in_layouts, output_layouts or {})
        assign_layouts(graph, registry, in_layouts, out_layouts)
        info = {"model": f"{type(module).__module__}.{type(module).__qualname__}", "method": captured.method}
        generated = generate(graph, registry, source_info=info)
        model_py, weights_path = _write(Path(out_dir), generated)
    with _timed(timings, "tf-build"):
        with _typed_errors("building", "tf", model_py):
            model = import_generated(model_py).build(weights_path)
        inputs, outputs = _io_infos(graph, names, in_layouts, out_layouts)
        with _typed_errors("tracing", "tf", model_py):
            tf_ops = traced_op_counts(model)
        rebuild = NativeRebuild(
            out_dir=Path(out_dir), model_py=model_py, weights_path=weights_path,
            saved_model_dir=Path(out_dir) / "saved_model", inputs=inputs, outputs=outputs, model=model,
            capture_method=captured.method, op_counts=graph.op_counts(),
            relayouts=generated.op_counts.get(RELAYOUT, 0), max_abs_error={}, tf_ops=tf_ops,
            timings=timings)
        with _typed_errors("running", "tf", model_py):
            rebuild.max_abs_error = _parity(module, example_inputs, rebuild)
    with _timed(timings, "savedmodel"), _typed_errors("saving", "tf", model_py):
        save_saved_model(model, rebuild.saved_model_dir)
    return rebuild


@contextlib.contextmanager
def _typed_errors(step: str, stage: str, model_py: Path | None = None) -> Iterator[None]:
    """Let bridge's own errors through; turn anything else raised while `step` (TensorFlow tracing the
    generated model, saving it, ...) into a typed error naming the generated line and module, so the pipeline can
    report it and fall back to the ONNX route."""
    try:
        yield
    except BridgeError:
        raise
    except Exception as exc:  # noqa: BLE001 - TF and torch raise many types; each becomes one typed error
        raise step_failure(exc, step, stage, model_py) from exc


_TF_NODE = re.compile(r"\{\{node ([^}]+)\}\}|node '?([A-Za-z0-9_.\-/]+)'? ")


def step_failure(exc: BaseException, step: str, stage: str, model_py: Path | None) -> BridgeError:
    """A CaptureError/ConversionError for an exception raised while `step` the model: the exception's first
    line, the TF node and module path it names, and the generated tf_model.py line it came from."""
    summary = tf_error_message(exc)
    found = _TF_NODE.search(str(exc))
    node = (found.group(1) or found.group(2)) if found else tf_error_node(exc)
    module = node.rsplit("/", 1)[0] if "/" in node else ""
    details = [f"TensorFlow node {node}" + (f" (PyTorch module {module})" if module else "")] if node else []
    details += _generated_lines(exc, model_py)
    where = f" at {module}" if module else ""
    if stage == "capture":
        return CaptureError(f"capturing the model failed: {type(exc).__name__}: {summary}", stage=stage,
                            details=details, hint="convert with the ONNX route (route='onnx')")
    what = "generating tf_model.py failed" if step == "generating" else \
        f"TensorFlow failed while {step} the generated model{where}"
    return ConversionError(
        f"{what}: {type(exc).__name__}: {summary}",
        stage=stage, details=details,
        hint="convert with the ONNX route (route='onnx'; route='auto' falls back to it), or replace the converter "
             "of the op on that line with bridge.native.register_converter and convert again")


def _generated_lines(exc: BaseException, model_py: Path | None) -> list[str]:
    """`tf_model.py:122: cat = tf.concat(...)  # m.h.0.attn · cache_utils.py:136` for the innermost frame of the
    traceback inside the generated file."""
    if model_py is None:
        return []
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == Path(model_py)]
    if not frames:
        return []
    frame = frames[-1]
    return [f"{Path(frame.filename).name}:{frame.lineno}: {(frame.line or '').strip()[:300]}"]


@contextlib.contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[stage] = time.perf_counter() - start


def _write(out: Path, generated: GeneratedModel) -> tuple[Path, Path]:
    """Write tf_model.py and tf_weights.safetensors into `out`."""
    from safetensors.numpy import save_file
    out.mkdir(parents=True, exist_ok=True)
    model_py, weights_path = out / "tf_model.py", out / "tf_weights.safetensors"
    model_py.write_text(generated.source)
    save_file({k: np.ascontiguousarray(v) for k, v in generated.weights.items()}, str(weights_path))
    return model_py, weights_path


def traced_op_counts(model: Any) -> dict[str, int]:
    """Histogram of TF op types in the generated model's traced graph (e.g. how many Transpose ops are left)."""
    counts: dict[str, int] = {}
    for node in model.__call__.get_concrete_function().graph.as_graph_def().node:
        counts[node.op] = counts.get(node.op, 0) + 1
    return counts


def _forward_arg_names(module: torch.nn.Module, count: int) -> list[str]:
    """Names of forward()'s first `count` positional parameters (input_<i> when unnamed)."""
    try:
        params = [p.name for p in inspect.signature(module.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    return [params[i] if i < len(params) else f"input_{i}" for i in range(count)]


def _every_node(graph: Graph) -> Graph:
    """A view of `graph` listing the nodes inside torch.cond branches too, so one scan reports them all."""
    return Graph(name=graph.name, inputs=graph.inputs, nodes=list(graph.all_nodes()), outputs=graph.outputs)


def _known(name: str, names: list[str]) -> bool:
    if name not in names:
        raise UsageError(f"dynamic_dims names an unknown input {name!r}", stage="capture",
                         hint=f"inputs are: {', '.join(names)}")
    return True


def _input_layouts(graph: Graph, requested: Mapping[str, str]) -> list[Layout]:
    """Each input's layout: as requested, else NHWC for 4-D inputs and PyTorch order otherwise."""
    unknown = set(requested) - set(graph.input_names)
    if unknown:
        raise UsageError(f"input_layouts names unknown input(s): {', '.join(sorted(unknown))}", stage="rebuild-tf")
    layouts = []
    for name, value in zip(graph.input_names, graph.inputs):
        default = "nhwc" if value.rank == 4 else "source"
        layouts.append(layout_from_name(requested.get(name, default), value.rank))
    return layouts


def _output_layouts(graph: Graph, inputs: list[Layout], requested: Mapping[str, str]) -> list[Layout]:
    """Each output's layout: as requested, else NHWC for 4-D outputs when some input is NHWC."""
    nhwc_in = any(layout.rank == 4 and layout.is_channels_last for layout in inputs)
    layouts = []
    for name, value in zip(graph.output_names, graph.outputs):
        default = "nhwc" if value.rank == 4 and nhwc_in else "source"
        layouts.append(layout_from_name(requested.get(name, default), value.rank))
    return layouts


def _io_infos(graph: Graph, names: list[str], ins: list[Layout],
              outs: list[Layout]) -> tuple[list[Port], list[Port]]:
    def info(name: str, value: Any, layout: Layout) -> Port:
        return Port.from_web_shape(name, layout.physical_shape(value.shape), value.dtype, layout.name(), layout.perm)
    return ([info(n, v, lay) for n, v, lay in zip(names, graph.inputs, ins)],
            [info(n, v, lay) for n, v, lay in zip(graph.output_names, graph.outputs, outs)])


def import_generated(path: Path) -> ModuleType:
    """Import a generated tf_model.py under a fresh module name."""
    spec = importlib.util.spec_from_file_location(f"bridge_native_generated_{next(_MODULE_IDS)}", path)
    if spec is None or spec.loader is None:
        raise ConversionError(f"cannot import the generated model {path}", stage="rebuild-tf")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def save_saved_model(model: Any, path: Path) -> None:
    """Save the generated model with its serving signature (the user's input names, a dict of outputs)."""
    import tensorflow as tf
    tf.saved_model.save(model, str(path), signatures={"serving_default": model.__call__.get_concrete_function()})


def torch_outputs(module: torch.nn.Module, example_inputs: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """PyTorch eager outputs, flattened in torch.export's order."""
    with torch.no_grad():
        result = module(*example_inputs)
    leaves, _ = torch.utils._pytree.tree_flatten(result)
    return [leaf.detach().cpu().numpy() for leaf in leaves if isinstance(leaf, torch.Tensor)]


def _parity(module: torch.nn.Module, example_inputs: Sequence[torch.Tensor],
            rebuild: NativeRebuild) -> dict[str, float]:
    """Max |TF - PyTorch| per output on the example inputs."""
    expected = torch_outputs(module, example_inputs)
    got = rebuild.run_torch_layout(*[t.detach().cpu().numpy() for t in example_inputs])
    return {info.name: max_abs_error(g, e) for info, g, e in zip(rebuild.outputs, got, expected)}


def max_abs_error(got: np.ndarray, want: np.ndarray) -> float:
    """Max |got - want|, where equal infinities and NaN against NaN count as 0 and any other special value
    mismatch as inf."""
    g, w = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if not w.size:
        return 0.0
    with np.errstate(invalid="ignore"):
        diff = np.where((g == w) | (np.isnan(g) & np.isnan(w)), 0.0, np.abs(g - w))
    return float(np.nan_to_num(diff, nan=np.inf, posinf=np.inf).max())
