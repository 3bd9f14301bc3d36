"""`bridge.convert`: PyTorch model in, TF.js graph model out, with parity checked at every stage.

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

from bridge import __version__
from bridge.atomic import atomic_output_dir, check_output_dir
from bridge.context import ConversionContext
from bridge.errors import BridgeError, UsageError
from bridge.inputs import InputSpec, check_int32_range, check_unique_names, make_sample_inputs, parse_input_spec
from bridge.limits import check_model_size
from bridge.model_source import LoadedModel
from bridge.options import ConvertOptions
from bridge.progress import Progress
from bridge.reference import run_reference
from bridge.report import Report, write_reports
from bridge.stages import StageResult, Status, worst_status
from bridge.versions import component_versions


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
        allowed = {Status.PASS} if self.strict else {Status.PASS, Status.SKIPPED}
        return all(s.status in allowed for s in self.stages)

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
    samples += make_sample_inputs(specs, count=max(0, options.samples - len(samples)), seed=options.seed)
    return run_conversion(loaded, specs, samples, Path(out_dir), options, Progress(quiet=quiet))


def _options(options: ConvertOptions | None, overrides: Mapping[str, Any]) -> ConvertOptions:
    if options is None:
        return ConvertOptions(**overrides)
    if overrides:
        from dataclasses import replace

        return replace(options, **overrides)
    return options


def _as_loaded(model: Any, options: ConvertOptions) -> LoadedModel:
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, (str, Path)) and str(model).endswith(".onnx"):
        return LoadedModel(kind="onnx", source=str(model), onnx_path=Path(model))
    if isinstance(model, (str, Path)):
        from bridge.model_source import load_model

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
    """The pipeline proper: reference, route stages, web stages, reports; all inside an atomic output folder."""
    check_output_dir(out_dir.resolve(), options.force)
    check_model_size(loaded.module, loaded.onnx_path, loaded.source)
    check_int32_range(specs, samples)
    names, reference = _reference(loaded, specs, samples, options)
    with atomic_output_dir(out_dir, force=options.force) as staging:
        ctx = ConversionContext(module=loaded.module, onnx_source=loaded.onnx_path, specs=specs, samples=samples,
                                output_names=names, reference=reference, options=options, staging=staging,
                                progress=progress)
        ctx.notes += _pickle_notes(loaded, progress)
        ctx.notes += _non_finite_weights(loaded.module, progress)
        route, stages, saved_model = _run_route(ctx)
        from bridge.web_stages import run_web_stages

        stages += run_web_stages(ctx, saved_model, route)
        from bridge.bisect import bisect_conversion
        from bridge.parity_cmd import save_parity_data

        bisection = bisect_conversion(ctx, stages, force=options.layers)
        if bisection is not None:
            progress.note(f"  layers: {bisection.summary()}")
        save_parity_data(ctx, staging, bisection)
        ctx.notes += _write_demo_page(ctx, loaded)
        report = _make_report(ctx, loaded, route, stages)
        report.notes = ctx.notes
        report.layers = bisection.to_dict() if bisection is not None else None
        write_reports(report, staging)
        artifacts = sorted(p.name for p in staging.iterdir())
    return ConvertResult(out_dir=out_dir, status=report.status, stages=stages, report=report.to_dict(),
                         artifacts=[out_dir / a for a in artifacts], strict=options.strict)


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


def _write_demo_page(ctx: ConversionContext, loaded: LoadedModel) -> list[str]:
    """OUT/index.html with TF.js beside it; a missing TF.js build only costs the page (noted in the report)."""
    from bridge.demo_page import write_demo_page
    from bridge.errors import MissingDependencyError
    from bridge.interface import to_web_samples

    web_model = ctx.staging / "web_model"
    if not (web_model / "model.json").is_file():
        return ["demo page not written: there is no web model"]
    try:
        write_demo_page(ctx.staging, web_model=web_model, input_ports=ctx.input_ports,
                        output_ports=ctx.output_ports, samples=to_web_samples(ctx.samples, ctx.input_ports),
                        reference=to_web_samples(ctx.reference, ctx.output_ports), model_name=loaded.source)
    except MissingDependencyError as exc:
        ctx.progress.note(f"  demo page not written: {exc.message}")
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


def _run_route(ctx: ConversionContext) -> tuple[str, list[StageResult], Path]:
    """Run the chosen route; `auto` tries native first and falls back to ONNX, saying why."""
    from bridge.route_native import run_native_route
    from bridge.route_onnx import run_onnx_route

    if ctx.options.route == "onnx":
        return ("onnx", *run_onnx_route(ctx))
    if ctx.options.route == "native":
        return ("native", *run_native_route(ctx))
    try:
        return ("native", *run_native_route(ctx))
    except BridgeError as exc:
        failure = exc
    # Outside the except block, so errors of the ONNX route do not chain onto the native route's.
    ctx.progress.note(f"  native route not possible: {failure.message}")
    for line in failure.details[:5]:
        ctx.progress.note(f"    {line}")
    ctx.progress.note("  falling back to the ONNX route")
    ctx.notes.append("route auto: the native route failed, so the ONNX route was used: "
                     + " | ".join(str(failure).splitlines()))
    _clear_staging(ctx.staging)
    ctx.input_ports, ctx.output_ports = [], []
    return ("onnx", *run_onnx_route(ctx))


def _clear_staging(staging: Path) -> None:
    """Remove what a failed route left in the staging folder."""
    import shutil

    for path in staging.iterdir():
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def _make_report(ctx: ConversionContext, loaded: LoadedModel, route: str, stages: list[StageResult]) -> Report:
    statuses = [s.status for s in stages]
    if ctx.options.strict:
        statuses = [Status.FAIL if s is Status.SKIPPED else s for s in statuses]
    status = worst_status([s for s in statuses if s is not Status.SKIPPED]) if statuses else Status.FAIL
    model = {"source": loaded.source, "kind": loaded.kind, "parameters": loaded.parameter_count,
             "weights": loaded.weights, "untrusted_pickle_loaded": loaded.pickle_trusted,
             "inputs": [_io(p.describe()) for p in ctx.input_ports],
             "outputs": [_io(p.describe()) for p in ctx.output_ports]}
    options = {"layout": ctx.options.layout, "quantize": list(ctx.options.quantize), "atol": ctx.options.atol,
               "rtol": ctx.options.rtol, "strict": ctx.options.strict, "seed": ctx.options.seed,
               "trust_pickle": ctx.options.trust_pickle or loaded.pickle_trusted}
    return Report(route=route, status=status, model=model, stages=stages, samples=len(ctx.samples),
                  artifacts=sorted(p.name + ("/" if p.is_dir() else "") for p in ctx.staging.iterdir())
                  + ["report.json", "report.md", "report.html", "parity/"],
                  versions=component_versions(), options=options)


def _io(described: dict[str, Any]) -> dict[str, Any]:
    return {k: described[k] for k in ("name", "shape", "web_shape", "dtype", "layout")}


def convert_from_cli(args: Any) -> ConvertResult:
    """`bridge convert` with parsed arguments: load the model, build the options, run, print where things are."""
    from bridge.inputs import load_sample_inputs
    from bridge.model_source import load_model

    options = ConvertOptions(route=args.route, layout=args.layout, output_names=tuple(args.outputs),
                             quantize=tuple(args.quantize), shard_size=args.shard_size, atol=args.atol,
                             rtol=args.rtol, samples=args.samples, strict=args.strict, force=args.force,
                             verbose=args.verbose, browser=args.browser, layers=args.layers,
                             trust_pickle=args.trust_pickle,
                             node_backends=tuple(b for b in args.node_backends.split(",") if b))
    specs = [parse_input_spec(text) for text in args.inputs]
    check_unique_names(specs)
    check_output_dir(args.out.resolve(), options.force)
    loaded = load_model(args.model, weights=args.weights, init_args=args.init_args, trust_pickle=args.trust_pickle)
    user_samples = load_sample_inputs(args.sample_inputs, specs) if args.sample_inputs else []
    progress = Progress(quiet=False)
    progress.note(f"bridge {__version__}: {args.model} -> {args.out}")
    result = convert(loaded, specs, args.out, options, sample_inputs=user_samples, quiet=False)
    if args.junit:
        from bridge.junit import write_junit

        write_junit(result.report, args.junit)
    _print_summary(progress, result)
    return result


def _print_summary(progress: Progress, result: ConvertResult) -> None:
    out = result.out_dir
    progress.note(f"  {out}/web_model/model.json  {out}/saved_model/  {out}/report.md  {out}/index.html")
    progress.note(f"  try it in a browser: bridge serve {out}  (then open http://127.0.0.1:8000/)")
    if not result.ok:
        bad = [f"{s.name} {s.status.value}" for s in result.stages if s.status is not Status.PASS]
        progress.note(f"parity did not hold: {', '.join(bad)}; see {out}/report.md")
