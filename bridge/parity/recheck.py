"""`bridge parity OUT_DIR`: re-run every stage's check on an existing output folder, without converting again.

The plan is `bridge convert`'s, for the route the folder was made by, with nothing produced: each stage judges the
artifact as it is now in the folder (``model.onnx``, the generated ``tf_model.py``, ``saved_model/``,
``web_model/``) against the reference stored at conversion time (`bridge.parity.store`). A stage whose artifact is
not there is skipped with the reason (onnx2tf's in-memory TF model, for one, is gone). The quantization widening is
read from the web model's manifest, so a re-quantized model is judged by its own quantization. Reports go to
``OUT/parity/report.{json,md,html}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bridge.errors import UsageError
from bridge.options import ConvertOptions
from bridge.parity.store import PARITY_DIR, ParityData, load_layers, load_parity_data
from bridge.report.writer import Report, model_section, write_reports
from bridge.source.inputs import dynamic_sizes_used, load_sample_inputs
from bridge.stages.artifacts import Artifact, Artifacts, WebModel
from bridge.stages.context import ONNX_REFERENCES, RunInputs
from bridge.stages.plan import Entry, PlanRequest, build_plan
from bridge.stages.result import StageResult, Status, overall_status, stages_ok
from bridge.stages.route_native import (
    ABSENT_MODULE,
    ABSENT_TF_MODEL,
    load_generated_model,
)
from bridge.stages.runner import run_plan

STAGE = "parity"
EXIT_OK, EXIT_PARITY = 0, 3


@dataclass
class ParityRun:
    """The outcome of `bridge parity`: every stage, the overall status, the report as data, where it went."""

    status: Status
    stages: list[StageResult]
    report: dict[str, Any]
    report_dir: Path
    strict: bool = False

    @property
    def ok(self) -> bool:
        """True when every stage passed (skipped ones count as failures only in strict mode)."""
        return stages_ok(self.stages, self.strict)

    @property
    def exit_code(self) -> int:
        """0 when parity holds, 3 when a stage was inaccurate or failed (the codes of `bridge convert`)."""
        return EXIT_OK if self.ok else EXIT_PARITY


def _user_sets(path: Path, data: ParityData) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]] | None]:
    """User sample inputs, and reference outputs when the .npz holds an array named after every output."""
    samples = load_sample_inputs(path, data.specs)
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    names = [p.name for p in data.output_ports]
    if not all(n in arrays for n in names):
        return samples, None
    stacked = all(arrays[p.name].ndim == len(p.torch_shape) + 1 for p in data.output_ports)
    if stacked:
        return samples, [{n: arrays[n][i] for n in names} for i in range(len(samples))]
    return samples, [{n: arrays[n] for n in names}]


def _options(data: ParityData, samples: int, browser: bool | None, strict: bool) -> ConvertOptions:
    stored = data.options
    return ConvertOptions(layout=stored.get("layout", "nhwc"), atol=stored.get("atol"), rtol=stored.get("rtol"),
                          web_formats=data.web_formats,
                          node_backends=tuple(stored.get("node_backends") or ("wasm", "cpu")),
                          browser=bool(stored.get("browser", True)) if browser is None else browser,
                          samples=max(1, samples), strict=strict)


def folder_artifacts(out: Path, data: ParityData) -> Artifacts:
    """The artifacts an output folder holds, with the reason for each one it cannot have."""
    saved_model = out / "saved_model"
    web_model, layers_model = out / data.web_model_dir, out / data.layers_model_dir
    absent = {Artifact.MODULE: ABSENT_MODULE, Artifact.TF_MODEL: ABSENT_TF_MODEL.get(data.route, "no TF model"),
              Artifact.ONNX: "no model.onnx in the output folder", Artifact.SAVED_MODEL: f"no {saved_model}",
              Artifact.WEB_MODEL: f"no {web_model / 'model.json'}",
              Artifact.LAYERS_MODEL: f"no {layers_model / 'model.json'}"}
    return Artifacts(route=data.route, onnx=out / "model.onnx" if (out / "model.onnx").is_file() else None,
                     tf_model=load_generated_model(out, data.interface) if data.route == "native" else None,
                     saved_model=saved_model if (saved_model / "saved_model.pb").is_file() else None,
                     web_model=_model_folder(web_model, "graph", data),
                     layers_model=_model_folder(layers_model, "layers", data),
                     interface=data.interface, absent=absent)


def _model_folder(folder: Path, fmt: str, data: ParityData) -> WebModel | None:
    return WebModel.read(folder) if fmt in data.web_formats and (folder / "model.json").is_file() else None


def run_parity(out_dir: Path | str, *, sample_inputs: Path | None = None, strict: bool | None = None,
               browser: bool | None = None, layers: bool = False, quiet: bool = True) -> ParityRun:
    """Re-run every stage's check on the artifacts in `out_dir` and write ``OUT/parity/report.*``.

    `sample_inputs` replaces the stored samples: the reference is then the .npz's arrays named after the outputs,
    or else onnxruntime on model.onnx (itself checked against PyTorch when the folder was converted). `strict`
    and `browser` default to what the conversion used. `layers` bisects even when every stage passes.
    """
    from bridge.bisect.run import BisectInputs, bisect_run
    from bridge.util.progress import Progress
    from bridge.util.quiet import captured_output, import_tensorflow

    out = Path(out_dir)
    if not any((out / sub / "model.json").is_file() for sub in ("web_model", "layers_model", ".")):
        raise UsageError(f"{out} is not a bridge output folder (no web_model/, layers_model/ or model.json)",
                         stage=STAGE, hint="pass the --out folder of `bridge convert`, or the OUT of `bridge tfjs`")
    data = load_parity_data(out)
    import_tensorflow()  # once, quietly: its import chatter would otherwise reach the terminal
    samples, reference, reference_kind = data.samples, data.reference, data.reference_kind
    if sample_inputs is not None:
        samples, given = _user_sets(Path(sample_inputs), data)
        reference, reference_kind = (given, "sample-inputs file") if given is not None else (
            _onnx_reference(out, samples, data), ONNX_REFERENCES[1])
    strict = bool(data.options.get("strict", False)) if strict is None else strict
    options = _options(data, len(samples), browser, strict)
    run = RunInputs(tuple(data.specs), tuple(samples), tuple(reference), tuple(p.name for p in data.output_ports),
                    options, out, Progress(quiet=quiet), reference_kind=reference_kind)
    plan = build_plan(PlanRequest(Entry.PARITY, data.route, options))
    with captured_output():  # building the generated TF model starts TensorFlow's devices, which log
        artifacts = folder_artifacts(out, data)
    result = run_plan(plan, run, artifacts)
    stages = list(result.stages)
    bisection = bisect_run(BisectInputs(run, artifacts), plan, stages, force=layers,
                           torch_layers=load_layers(out) if sample_inputs is None else None)
    if bisection is not None:
        run.progress.note(f"  layers: {bisection.summary()}")
    report = Report(route=data.route, status=overall_status(stages, strict), model=_original_model(out, data),
                    stages=stages, samples=len(samples),
                    artifacts=[f"{PARITY_DIR}/report.json", f"{PARITY_DIR}/report.md", f"{PARITY_DIR}/report.html"],
                    options={"layout": data.options.get("layout"), "atol": data.options.get("atol"),
                             "rtol": data.options.get("rtol"), "strict": strict, "command": "parity",
                             "reference": reference_kind,
                             "dynamic_sizes": dynamic_sizes_used(data.specs, samples)},
                    layers=bisection.to_dict() if bisection is not None else None)
    folder = out / PARITY_DIR
    write_reports(report, folder, web_model=out / data.web_model_dir)
    run.progress.note(f"  {folder}/report.md  {folder}/report.html  {folder}/report.json")
    return ParityRun(status=report.status, stages=stages, report=report.to_dict(), report_dir=folder, strict=strict)


def _onnx_reference(out: Path, samples: list[dict[str, np.ndarray]], data: ParityData) -> list[dict[str, np.ndarray]]:
    from bridge.onnx_route.onnxrt import run_onnx

    onnx_path = out / "model.onnx"
    if not onnx_path.is_file():
        raise UsageError("new sample inputs need reference outputs: there is no model.onnx to compute them",
                         stage=STAGE, hint="add arrays named after the outputs "
                                           f"({', '.join(p.name for p in data.output_ports)}) to the .npz")
    results = [run_onnx(onnx_path, s) for s in samples]
    return [dict(zip([p.name for p in data.output_ports], r.values())) for r in results]


def _original_model(out: Path, data: ParityData) -> dict[str, Any]:
    """The model section of the conversion's report.json, or one rebuilt from the stored interface."""
    import json

    try:
        return dict(json.loads((out / "report.json").read_text())["model"])
    except (OSError, ValueError, KeyError):
        return model_section(source=str(out), kind="?", parameters=None, weights=None, interface=data.interface)
