"""`bridge.convert`: PyTorch model in, TF.js graph model out, with parity checked at every stage (the stages come
from the one plan, `bridge.stages.plan`).

The output folder is written atomically: a run that raises leaves nothing behind (and an old folder untouched).
A run whose conversion succeeded but whose parity did not hold still writes its output and reports, with
`ConvertResult.ok` False (the CLI's exit code 3).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bridge.bisect.run import BisectInputs, bisect_run
from bridge.errors import BridgeError, DataDependentBranchError, UsageError
from bridge.options import ConvertOptions
from bridge.parity.store import save_parity_data
from bridge.report.writer import Report, model_section, write_reports
from bridge.source.inputs import (
    DynamicSizes,
    InputSpec,
    check_int32_range,
    check_unique_names,
    dynamic_sizes_used,
    make_sample_inputs,
    parse_input_spec,
)
from bridge.source.limits import check_model_size
from bridge.source.model import LoadedModel
from bridge.source.reference import run_reference
from bridge.stages.artifacts import Artifacts
from bridge.stages.context import RunInputs
from bridge.stages.plan import LAYERS_ROUTE, Entry, Phase, Planned, PlanRequest, build_plan
from bridge.stages.result import StageResult, Status, overall_status, stages_ok
from bridge.stages.runner import PlanRun, findings, run_plan
from bridge.util.atomic import atomic_output_dir, check_output_dir
from bridge.util.progress import Progress
from bridge.util.time_limit import time_limit


@dataclass
class ConvertResult:
    """What a conversion produced: the output folder, every stage's result, the report as data."""

    out_dir: Path
    status: Status
    stages: list[StageResult]
    report: dict[str, Any]
    artifacts: list[Path] = field(default_factory=list)
    strict: bool = False

    @property
    def ok(self) -> bool:
        """True when every stage passed (skipped stages count as failures only in strict mode)."""
        return stages_ok(self.stages, self.strict)

    def stage(self, name: str) -> StageResult:
        """The result of the stage called `name`."""
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"no stage {name!r}; stages: {', '.join(s.name for s in self.stages)}")


InputLike = InputSpec | str | np.ndarray | Any


def convert(model: Any, inputs: Sequence[InputLike], out_dir: Path | str,
            options: ConvertOptions | None = None, *, sample_inputs: Sequence[Mapping[str, np.ndarray]] = (),
            quiet: bool = True, **overrides: Any) -> ConvertResult:
    """Convert `model` (an nn.Module, a LoadedModel, or a MODEL path as the CLI takes it: an .onnx file, a
    TorchScript or torch.save file, a .pt2, or "file.py:Class") to `out_dir`.

    `inputs` are InputSpecs, spec strings ("x:1x3x64x64") or example tensors (names from forward()'s parameters).
    Option fields may be given as keyword arguments (e.g. `route="onnx", layout="nchw"`); `trust_pickle=True`
    allows a whole pickled module (torch.save(model)) to be loaded with weights_only=False, which runs its code.
    """
    options = _options(options, overrides)
    loaded = _as_loaded(model, options)
    specs, given = _specs_from(inputs, loaded)
    samples = list(sample_inputs) + given
    sizes = DynamicSizes.parse(options.dynamic_sizes)
    sizes.check(specs)
    samples += make_sample_inputs(specs, count=max(0, options.samples - len(samples)), seed=options.seed,
                                  dynamic_sizes=sizes)
    return run_conversion(loaded, specs, samples, Path(out_dir), options, Progress(quiet=quiet))


def _options(options: ConvertOptions | None, overrides: Mapping[str, Any]) -> ConvertOptions:
    """The options, with keyword overrides; an unknown keyword is a usage error naming the valid ones."""
    from dataclasses import fields, replace

    valid = [f.name for f in fields(ConvertOptions)]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise UsageError(f"bridge.convert() got unknown keyword argument(s) {', '.join(unknown)}", stage="options",
                         hint=f"the options are: {', '.join(valid)} (and sample_inputs=, quiet=)")
    if options is None:
        return ConvertOptions(**overrides)
    return replace(options, **overrides) if overrides else options


def _as_loaded(model: Any, options: ConvertOptions) -> LoadedModel:
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, (str, Path)) and str(model).endswith(".onnx"):
        return LoadedModel(kind="onnx", source=str(model), onnx_path=Path(model))
    if isinstance(model, (str, Path)):
        from bridge.source.model import load_model

        return load_model(str(model), trust_pickle=options.trust_pickle)
    import torch

    if isinstance(model, torch.nn.Module):
        return LoadedModel(kind="module", source=type(model).__name__, module=model.eval())
    raise UsageError(f"cannot convert a {type(model).__name__}", stage="load-model",
                     hint="pass a torch.nn.Module, a LoadedModel from bridge.model_source.load_model, or an .onnx path")


def _specs_from(inputs: Sequence[InputLike], loaded: LoadedModel) -> tuple[list[InputSpec], list[dict[str, np.ndarray]]]:
    """Input specs, plus the example tensors as a first sample when tensors were given."""
    if not inputs and loaded.onnx_path is not None:
        from bridge.onnx_route.onnxrt import input_specs_of

        return input_specs_of(loaded.onnx_path), []
    if not inputs:
        raise UsageError("no inputs given", stage="inputs", hint="pass --input NAME:SHAPE for each forward() input")
    if all(isinstance(i, (InputSpec, str)) for i in inputs):
        specs = [i if isinstance(i, InputSpec) else parse_input_spec(i) for i in inputs]
        check_unique_names(specs)
        return specs, []
    names = _forward_names(loaded, len(inputs))
    arrays = [_to_numpy(t) for t in inputs]
    specs = [InputSpec(name=n, shape=tuple(a.shape), dtype=str(a.dtype)) for n, a in zip(names, arrays)]
    return specs, [dict(zip(names, arrays))]


def _forward_names(loaded: LoadedModel, count: int) -> list[str]:
    try:
        params = list(inspect.signature(loaded.module.forward).parameters)
    except (TypeError, ValueError, AttributeError):
        params = []
    params = [p for p in params if p not in ("self", "args", "kwargs")]
    return params[:count] if len(params) >= count else [f"input_{i}" for i in range(count)]


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def run_conversion(loaded: LoadedModel, specs: list[InputSpec], samples: list[dict[str, np.ndarray]],
                   out_dir: Path, options: ConvertOptions, progress: Progress) -> ConvertResult:
    """The pipeline proper: the reference, then the plan's stages (the route's, then the shared ones), bisection,
    parity data, the demo page and the reports; all inside an atomic output folder."""
    check_output_dir(out_dir.resolve(), options.force)
    check_model_size(loaded.module, loaded.onnx_path, loaded.source)
    check_int32_range(specs, samples)
    check_preprocessing(specs, options)
    with time_limit(options.time_limit, "reference", "the reference run (PyTorch on the sample inputs)"):
        names, reference = _reference(loaded, specs, samples, options)
    with atomic_output_dir(out_dir, force=options.force) as staging:
        run = RunInputs(tuple(specs), tuple(samples), tuple(reference), tuple(names), options, staging, progress,
                        reference_kind="pytorch" if loaded.module is not None else "onnxruntime",
                        onnx_source=loaded.onnx_path)
        notes = _pickle_notes(loaded, progress) + _non_finite_weights(loaded.module, progress)
        plan, route_run, route_notes = _run_route(run, Artifacts(module=loaded.module))
        shared = run_plan(plan.shared, run, route_run.artifacts)
        artifacts = shared.artifacts
        stages = [*route_run.stages, *shared.stages]
        notes += route_notes + list(route_run.notes + shared.notes) + findings(stages)
        bisection = bisect_run(BisectInputs(run, artifacts), plan.route + plan.shared, stages, force=options.layers)
        if bisection is not None:
            progress.note(f"  layers: {bisection.summary()}")
        assert artifacts.interface is not None
        save_parity_data(run, artifacts.route, artifacts.interface, bisection.torch if bisection is not None else None)
        notes += _write_web_module(artifacts) + _write_demo_page(run, artifacts, loaded)
        report = _report(run, loaded, artifacts, stages, notes, bisection)
        write_reports(report, staging)
        artifact_paths = sorted(p.name for p in staging.iterdir())
    return ConvertResult(out_dir=out_dir, status=report.status, stages=stages, report=report.to_dict(),
                         artifacts=[out_dir / a for a in artifact_paths], strict=options.strict)


@dataclass(frozen=True)
class ConversionPlan:
    """A conversion's plan, split where `--route auto` may fall back: the route's stages, then the shared ones."""

    route_name: str
    route: list[Planned]
    shared: list[Planned]


def conversion_plan(route: str, options: ConvertOptions) -> ConversionPlan:
    """The plan `bridge convert` runs on `route`."""
    plan = build_plan(PlanRequest(Entry.CONVERT, route, options))
    return ConversionPlan(route, [p for p in plan if p.stage.phase is Phase.ROUTE],
                          [p for p in plan if p.stage.phase is Phase.WEB])


def _run_route(run: RunInputs, given: Artifacts) -> tuple[ConversionPlan, PlanRun, list[str]]:
    """Run the chosen route's stages; `auto` tries native first and falls back to ONNX, saying why."""
    route = run.options.route
    if "graph" not in run.options.web_formats:  # a layers model alone is built from the module: no route runs
        plan = conversion_plan("onnx" if route == "onnx" else "native", run.options)
        return plan, run_plan(plan.route, run, given.with_(route=LAYERS_ROUTE)), []
    if route != "auto":
        plan = conversion_plan(route, run.options)
        return plan, run_plan(plan.route, run, given.with_(route=route)), []
    native = conversion_plan("native", run.options)
    try:
        return native, run_plan(native.route, run, given.with_(route="native")), []
    except BridgeError as exc:
        failure = exc
    # Outside the except block, so errors of the ONNX route do not chain onto the native route's.
    run.progress.note(f"  native route not possible: {failure.message}")
    for line in failure.details[:5]:
        run.progress.note(f"    {line}")
    if failure.hint:
        run.progress.note(f"    next step: {failure.hint}")
    run.progress.note("  falling back to the ONNX route")
    note = ("route auto: the native route failed, so the ONNX route was used: "
            + " | ".join(str(failure).splitlines()))
    notes = [note]
    if isinstance(failure, DataDependentBranchError):
        baked = (f"warning: the ONNX export traces one branch of the data-dependent `if`"
                 f"{f' at {failure.where}' if failure.where else ''}: the web model takes the branch the example "
                 "input took, for every input")
        run.progress.note(f"  {baked}")
        notes.append(baked)
    _clear_staging(run.folder)
    onnx = conversion_plan("onnx", run.options)
    return onnx, run_plan(onnx.route, run, given.with_(route="onnx")), notes


def check_preprocessing(specs: Sequence[InputSpec], options: ConvertOptions) -> None:
    """--mean / --std give one value or one per channel of every image input (4-D float, NCHW in PyTorch), checked
    before any work."""
    for spec in specs:
        if len(spec.shape) != 4 or not spec.dtype.startswith("float") or spec.shape[1] is None:
            continue
        for name, values in (("mean", options.mean), ("std", options.std)):
            if values is not None and len(values) not in (1, spec.shape[1]):
                raise UsageError(f"--{name} gives {len(values)} values; input {spec.name!r} has {spec.shape[1]} "
                                 f"channel(s)", stage="options", hint=f"give 1 or {spec.shape[1]} value(s)")


def _pickle_notes(loaded: LoadedModel, progress: Progress) -> list[str]:
    """A warning when the model came from a pickle loaded with weights_only=False (--trust-pickle)."""
    if not loaded.pickle_trusted:
        return []
    what = loaded.weights or loaded.source
    note = (f"warning: --trust-pickle: {what} was loaded with torch.load(weights_only=False), so its pickle could "
            "run code; only convert files you trust")
    progress.note(f"  {note}")
    return [note]


def _non_finite_weights(module: Any, progress: Progress) -> list[str]:
    """A warning per parameter or buffer holding NaN or Inf: the conversion goes on and parity is still checked
    (NaN/Inf must then appear in the same places at every stage)."""
    if module is None or not hasattr(module, "state_dict"):
        return []
    import torch

    bad = [name for name, value in module.state_dict().items()
           if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all())]
    notes = [f"warning: weight {name!r} holds NaN or Inf" for name in bad]
    for note in notes:
        progress.note(f"  {note}")
    return notes


def _write_web_module(artifacts: Artifacts) -> list[str]:
    """model.js, model.d.ts and package.json beside the web model (the module a web developer imports)."""
    if artifacts.web_model is None:
        return []
    from bridge.webmodule import write_web_module

    try:
        write_web_module(artifacts.web_model.path)
    except BridgeError as exc:
        return [f"JavaScript module not written: {exc.message}"]
    return []


def _write_demo_page(run: RunInputs, artifacts: Artifacts, loaded: LoadedModel) -> list[str]:
    """OUT/index.html with TF.js beside it; a missing TF.js build only costs the page (noted in the report)."""
    from bridge.demo.page import write_demo_page
    from bridge.errors import MissingDependencyError

    web_model, interface = artifacts.web_model, artifacts.interface
    if web_model is None and artifacts.layers_model is None or interface is None:
        return ["demo page not written: there is no web model"]
    try:
        if web_model is None:  # a layers model alone: the page trains and saves it too
            from bridge.demo.page import write_demo_page_from_parity

            write_demo_page_from_parity(run.folder, model_format="layers", model_name=loaded.source)
            return []
        write_demo_page(run.folder, web_model=web_model.path, input_ports=interface.inputs,
                        output_ports=interface.outputs, samples=interface.web_inputs(run.samples),
                        reference=interface.web_outputs(run.reference), model_name=loaded.source,
                        input_ranges={s.name: (s.low, s.high) for s in run.specs})
    except MissingDependencyError as exc:
        run.progress.note(f"  demo page not written: {exc.message}")
        return [f"demo page not written: {exc.message}"]
    return []


def _reference(loaded: LoadedModel, specs: list[InputSpec], samples: list[dict[str, np.ndarray]],
               options: ConvertOptions) -> tuple[list[str], list[dict[str, np.ndarray]]]:
    if loaded.onnx_path is not None:
        from bridge.onnx_route.onnxrt import load_onnx_checked, run_onnx

        load_onnx_checked(loaded.onnx_path)
        reference = [run_onnx(loaded.onnx_path, s) for s in samples]
        names = list(options.output_names) or list(reference[0])
        return names, [dict(zip(names, r.values())) for r in reference]
    return run_reference(loaded.module, samples, specs, options.output_names)


def _clear_staging(staging: Path) -> None:
    """Remove what a failed route left in the staging folder."""
    import shutil

    for path in staging.iterdir():
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def _report(run: RunInputs, loaded: LoadedModel, artifacts: Artifacts, stages: list[StageResult], notes: list[str],
            bisection: Any) -> Report:
    options = run.options
    assert artifacts.interface is not None
    model = model_section(source=loaded.source, kind=loaded.kind, parameters=loaded.parameter_count,
                          weights=loaded.weights, interface=artifacts.interface,
                          untrusted_pickle_loaded=loaded.pickle_trusted)
    written = {p.name + ("/" if p.is_dir() else "") for p in run.folder.iterdir()}
    return Report(route=artifacts.route, status=overall_status(stages, options.strict), model=model, stages=stages,
                  samples=len(run.samples), artifacts=sorted(written | {"report.json", "report.md", "report.html"}),
                  options={"layout": options.layout, "quantize": list(options.quantize), "atol": options.atol,
                           "rtol": options.rtol, "strict": options.strict, "seed": options.seed,
                           "trust_pickle": options.trust_pickle or loaded.pickle_trusted,
                           "dynamic_sizes": dynamic_sizes_used(run.specs, run.samples)},
                  notes=notes, layers=bisection.to_dict() if bisection is not None else None)
