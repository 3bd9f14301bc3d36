"""`bridge tfjs`: a model that is TensorFlow already (SavedModel, frozen graph, Hub module, Keras file, TF.js layers
model) in, a TF.js graph or layers model out, with parity checked against the source model run in TensorFlow.

The plan is the one of `bridge convert` on the "tf" route: the writer's stage (`tfjs-graph` or `tfjs-layers`),
then the web model in TF.js in Node and Chromium. As the official converter does, the web model goes straight into
OUT (model.json and shards); bridge's reports and parity data sit beside it (report.*, parity/).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bridge.errors import UsageError
from bridge.options import ConvertOptions
from bridge.pipeline import ConvertResult
from bridge.report.writer import Report, model_section, write_reports
from bridge.source.inputs import (SUPPORTED_DTYPES, DynamicSizes, InputSpec, dynamic_sizes_used, load_sample_inputs,
                                  make_sample_inputs)
from bridge.stages.artifacts import Artifacts
from bridge.stages.context import RunInputs
from bridge.stages.plan import TF_ROUTE, Entry, PlanRequest, build_plan
from bridge.stages.result import overall_status
from bridge.stages.route_tf import source_interface
from bridge.stages.runner import findings, run_plan
from bridge.util.atomic import atomic_output_dir, check_output_dir
from bridge.util.progress import Progress
from bridge.util.time_limit import time_limit

STAGE = "tfjs"
FORMAT_OF_OUTPUT = {"tfjs_graph_model": "graph", "tfjs_layers_model": "layers"}
HERE = "."


@dataclass(frozen=True)
class SourceOptions:
    """How to read the source model (the official converter's reading flags)."""

    input_format: str | None = None
    signature: str | None = None
    saved_model_tags: tuple[str, ...] | None = None
    output_node_names: tuple[str, ...] | None = None
    input_node_names: tuple[str, ...] | None = None
    trust_code: bool = False


def convert_tf(path: Path | str, out_dir: Path | str, *, output_format: str | None = None,
               source_options: SourceOptions = SourceOptions(), options: ConvertOptions = ConvertOptions(),
               sample_inputs: Sequence[Mapping[str, np.ndarray]] = (), sample_inputs_file: Path | None = None,
               quiet: bool = True) -> ConvertResult:
    """Write the TF / Keras / TF.js model at `path` as a TF.js model in `out_dir` (`output_format`
    ``tfjs_graph_model`` or ``tfjs_layers_model``, default as the official converter: a layers model for Keras
    inputs) and check it against the source in TensorFlow, in TF.js in Node and in Chromium."""
    from bridge.tfjs.sources import load_source
    from bridge.util.quiet import captured_output, import_tensorflow

    out = Path(out_dir)
    check_output_dir(out.resolve(), options.force)
    import_tensorflow(options.verbose)
    progress = Progress(quiet=quiet)
    with captured_output(options.verbose):
        source = load_source(path, source_options.input_format, signature=source_options.signature,
                             saved_model_tags=source_options.saved_model_tags,
                             output_node_names=source_options.output_node_names,
                             input_node_names=source_options.input_node_names, trust_code=source_options.trust_code)
    with source:
        fmt = output_format or source.default_output_format
        if fmt not in FORMAT_OF_OUTPUT:
            raise UsageError(f"unknown output format {fmt!r}", stage=STAGE,
                             hint=f"use {' or '.join(FORMAT_OF_OUTPUT)}")
        options = replace(options, web_formats=(FORMAT_OF_OUTPUT[fmt],))
        given = [dict(s) for s in sample_inputs]
        if sample_inputs_file is not None:
            given += load_sample_inputs(Path(sample_inputs_file), _specs(source, strict=False))
        return _run(source, out, options, given, progress)


def _run(source: Any, out: Path, options: ConvertOptions, given: list[dict[str, np.ndarray]],
         progress: Progress) -> ConvertResult:
    interface = source_interface(source)
    specs = _specs(source, strict=len(given) < options.samples)  # random samples needed: they need specs
    sizes = DynamicSizes.parse(options.dynamic_sizes)
    sizes.check(specs)
    samples = given + make_sample_inputs(specs, count=max(0, options.samples - len(given)), seed=options.seed,
                                         dynamic_sizes=sizes)
    with time_limit(options.time_limit, "reference", "the reference run (the source model in TensorFlow)"):
        reference = [source.reference(source.check_inputs(s)) for s in samples]
    names = tuple(p.name for p in interface.outputs)
    with atomic_output_dir(out, force=options.force) as staging:
        run = RunInputs(tuple(specs), tuple(samples), tuple(reference), names, options, staging, progress,
                        reference_kind="tensorflow", web_model_dir=HERE, layers_model_dir=HERE)
        artifacts = Artifacts(route=TF_ROUTE, tf_source=source, interface=interface)
        plan = build_plan(PlanRequest(Entry.CONVERT, TF_ROUTE, options))
        result = run_plan(plan, run, artifacts)
        stages = list(result.stages)
        from bridge.parity.store import save_parity_data

        save_parity_data(run, TF_ROUTE, interface, None)
        if "graph" in options.web_formats and result.artifacts.web_model is not None:
            from bridge.webmodule import write_web_module

            write_web_module(result.artifacts.web_model.path)
        _write_demo_page(run, source)
        report = _report(run, source, interface, stages, [*result.notes, *findings(stages)])
        write_reports(report, staging, web_model=staging)
        written = sorted(p.name for p in staging.iterdir())
    return ConvertResult(out_dir=out, status=report.status, stages=stages, report=report.to_dict(),
                         artifacts=[out / name for name in written], strict=options.strict)


def _specs(source: Any, strict: bool = True) -> list[InputSpec]:
    """Input specs for the seeded sample inputs, from the source's inputs (with `strict`, a dtype or a rank bridge
    cannot make samples for needs --sample-inputs)."""
    specs = []
    for port in source.inputs:
        if strict and (port.shape is None or port.dtype not in SUPPORTED_DTYPES):
            raise UsageError(f"cannot make sample inputs for {port.name!r} ({port.dtype}, shape "
                             f"{'unknown' if port.shape is None else list(port.shape)})", stage=STAGE,
                             hint="pass --sample-inputs FILE.npz with an array named after each input")
        specs.append(InputSpec(port.name, tuple(port.shape), port.dtype))
    return specs


def _report(run: RunInputs, source: Any, interface: Any, stages: list[Any], notes: list[str]) -> Report:
    options = run.options
    keras = getattr(source, "keras_model", None)
    parameters = int(keras.count_params()) if keras is not None else None
    model = model_section(source=str(source.path or source.input_format), kind=source.input_format,
                          parameters=parameters, weights=None, interface=interface)
    written = {p.name + ("/" if p.is_dir() else "") for p in run.folder.iterdir()}
    return Report(route=TF_ROUTE, status=overall_status(stages, options.strict), model=model, stages=stages,
                  samples=len(run.samples), artifacts=sorted(written | {"report.json", "report.md", "report.html"}),
                  options={"web_formats": list(options.web_formats), "quantize": list(options.quantize),
                           "atol": options.atol, "rtol": options.rtol, "strict": options.strict,
                           "seed": options.seed, "dynamic_sizes": dynamic_sizes_used(run.specs, run.samples)},
                  notes=[*source.notes, *notes])


def _write_demo_page(run: RunInputs, source: Any) -> None:
    """OUT/index.html from the parity data just stored (a layers model's page trains and saves it too)."""
    from bridge.demo.page import write_demo_page_from_parity
    from bridge.errors import MissingDependencyError

    try:
        write_demo_page_from_parity(run.folder, model_name=str(source.path or source.input_format),
                                    model_format=run.options.web_formats[0])
    except MissingDependencyError as exc:
        run.progress.note(f"  demo page not written: {exc.message}")
