"""`bridge parity OUT_DIR`: re-run every stage's check on an existing output folder, without converting again.

What it needs is stored at conversion time by `save_parity_data` in ``OUT/parity/``:

- ``interface.json``: format version, what the reference was (``pytorch`` or ``onnxruntime``), the input specs, the
  input and output ports (PyTorch shape, dtype, layout, permutation into the web model), the route and the
  options that steer parity (atol, rtol, Node backends, browser on/off, strict);
- ``samples.npz`` and ``reference.npz``: the sample inputs and the reference outputs, PyTorch layout, keyed
  ``"<set index>/<name>"``;
- ``layers.npz`` + ``layers.json`` (when small enough): PyTorch's per-module outputs, so `bridge parity` can
  bisect without the PyTorch model.

Stages re-run: ``onnx`` (model.onnx in onnxruntime), ``savedmodel``, ``tfjs-graph`` (the web model as it is now,
replayed in TensorFlow), ``tfjs-node-*`` and the browser stages. ``tf`` (onnx2tf's in-memory model) no longer exists
and is recorded as skipped. The quantization widening of the tolerance is recomputed from the web model's manifest,
so a re-quantized model is judged by its own quantization. Reports go to ``OUT/parity/report.{json,md,html}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bridge.errors import BridgeError, UsageError
from bridge.inputs import InputSpec, load_sample_inputs
from bridge.interface import Port
from bridge.stages import StageResult, Status, worst_status

STAGE = "parity"
PARITY_DIR = "parity"
FORMAT_VERSION = 1
MAX_LAYER_BYTES = 8 * 1024 * 1024  # PyTorch layer outputs are stored for `bridge parity` only below this size
EXIT_OK, EXIT_PARITY = 0, 3


class ParityDataError(BridgeError):
    """The output folder lacks the parity data `bridge parity` needs, or it is unreadable."""


# ------------------------------------------------------------------------------------------------ storing


def _port_data(port: Port) -> dict[str, Any]:
    return {"name": port.name, "torch_shape": list(port.torch_shape), "dtype": port.dtype, "layout": port.layout,
            "perm": list(port.perm) if port.perm is not None else None}


def _spec_data(spec: InputSpec) -> dict[str, Any]:
    return {"name": spec.name, "shape": list(spec.shape), "dtype": spec.dtype, "low": spec.low, "high": spec.high}


def _save_sets(path: Path, sets: Sequence[Mapping[str, np.ndarray]]) -> None:
    np.savez(path, **{f"{i}/{name}": np.asarray(v) for i, s in enumerate(sets) for name, v in s.items()})


def save_parity_data(ctx: Any, staging: Path, bisection: Any = None) -> Path:
    """Store what `bridge parity` needs in ``staging/parity/`` (see the module docstring); returns that folder.

    `ctx` is the pipeline's ConversionContext after the web stages; `bisection` a `bridge.bisect.Bisection` whose
    PyTorch layer outputs are reused (else they are captured here when the model is an nn.Module).
    """
    folder = Path(staging) / PARITY_DIR
    folder.mkdir(parents=True, exist_ok=True)
    _save_sets(folder / "samples.npz", ctx.samples)
    _save_sets(folder / "reference.npz", ctx.reference)
    options = ctx.options
    interface = {
        "format": FORMAT_VERSION, "reference": "pytorch" if ctx.module is not None else "onnxruntime",
        "route": options.route, "specs": [_spec_data(s) for s in ctx.specs],
        "inputs": [_port_data(p) for p in ctx.input_ports], "outputs": [_port_data(p) for p in ctx.output_ports],
        "options": {"atol": options.atol, "rtol": options.rtol, "node_backends": list(options.node_backends),
                    "browser": options.browser, "strict": options.strict, "layout": options.layout},
    }
    (folder / "interface.json").write_text(json.dumps(interface, indent=2) + "\n")
    _save_layers(ctx, folder, getattr(bisection, "torch", None))
    return folder


def _save_layers(ctx: Any, folder: Path, torch_layers: Any) -> None:
    """PyTorch's per-module outputs, as many sample sets as fit in MAX_LAYER_BYTES (none if one set does not)."""
    from bridge.bisect import capture_torch_layers

    if torch_layers is None and ctx.module is not None:
        try:
            torch_layers = capture_torch_layers(ctx.module, ctx.samples, ctx.specs, ctx.reference)
        except BridgeError:
            return
    if torch_layers is None or not torch_layers.points:
        return
    per_set = sum(v[0].nbytes for v in torch_layers.values)
    count = min(len(torch_layers.values[0]), MAX_LAYER_BYTES // max(per_set, 1))
    if count == 0:
        return
    np.savez(folder / "layers.npz", **{f"{s}/{i}": torch_layers.values[i][s]
                                       for i in range(len(torch_layers.points)) for s in range(count)})
    (folder / "layers.json").write_text(json.dumps({"samples": count,
                                                    "points": [p.to_dict() for p in torch_layers.points]}) + "\n")


# ------------------------------------------------------------------------------------------------ loading


@dataclass
class ParityData:
    """What was stored at conversion time, read back."""

    reference_kind: str
    route: str
    specs: list[InputSpec]
    input_ports: list[Port]
    output_ports: list[Port]
    samples: list[dict[str, np.ndarray]]
    reference: list[dict[str, np.ndarray]]
    options: dict[str, Any]


def _port(data: Mapping[str, Any]) -> Port:
    perm = data.get("perm")
    return Port(name=data["name"], torch_shape=tuple(data["torch_shape"]), dtype=data["dtype"],
                layout=data["layout"], perm=tuple(perm) if perm is not None else None)


def _spec(data: Mapping[str, Any]) -> InputSpec:
    return InputSpec(name=data["name"], shape=tuple(data["shape"]), dtype=data["dtype"], low=data.get("low"),
                     high=data.get("high"))


def _load_sets(path: Path) -> list[dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as data:
        sets: dict[int, dict[str, np.ndarray]] = {}
        for key in data.files:
            index, _, name = key.partition("/")
            sets.setdefault(int(index), {})[name] = data[key]
    return [sets[i] for i in sorted(sets)]


def load_parity_data(out_dir: Path) -> ParityData:
    """Read ``OUT/parity/``; a `ParityDataError` says what is missing and how to get it."""
    folder = Path(out_dir) / PARITY_DIR
    hint = "convert again with this version of bridge: it stores what `bridge parity` needs in OUT/parity/"
    if not (folder / "interface.json").is_file():
        raise ParityDataError(f"{folder} holds no parity data (interface.json)", stage=STAGE, hint=hint)
    try:
        interface = json.loads((folder / "interface.json").read_text())
        if interface.get("format") != FORMAT_VERSION:
            raise ParityDataError(f"parity data format {interface.get('format')} is not {FORMAT_VERSION}",
                                  stage=STAGE, hint=hint)
        return ParityData(reference_kind=interface["reference"], route=interface.get("route", "?"),
                          specs=[_spec(s) for s in interface["specs"]],
                          input_ports=[_port(p) for p in interface["inputs"]],
                          output_ports=[_port(p) for p in interface["outputs"]],
                          samples=_load_sets(folder / "samples.npz"), reference=_load_sets(folder / "reference.npz"),
                          options=dict(interface.get("options") or {}))
    except ParityDataError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ParityDataError(f"cannot read the parity data in {folder}: {exc}", stage=STAGE, hint=hint) from exc


def load_layers(out_dir: Path) -> Any:
    """The stored PyTorch layer outputs as `bridge.bisect.TorchLayers`, or None when none were stored."""
    from bridge.bisect import LayerPoint, TorchLayers

    folder = Path(out_dir) / PARITY_DIR
    if not (folder / "layers.json").is_file() or not (folder / "layers.npz").is_file():
        return None
    meta = json.loads((folder / "layers.json").read_text())
    points = [LayerPoint(p["path"], p["kind"], p.get("source"), tuple(p["shape"]), int(p.get("params", 0)),
                         list(p.get("aliases", []))) for p in meta["points"]]
    with np.load(folder / "layers.npz", allow_pickle=False) as data:
        values = [[data[f"{s}/{i}"] for s in range(int(meta["samples"]))] for i in range(len(points))]
    return TorchLayers(points, values)


# ------------------------------------------------------------------------------------------------ running


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
        allowed = {Status.PASS} if self.strict else {Status.PASS, Status.SKIPPED}
        return all(s.status in allowed for s in self.stages)

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


def _context(out_dir: Path, data: ParityData, samples: list[dict[str, np.ndarray]],
             reference: list[dict[str, np.ndarray]], browser: bool | None, progress: Any) -> Any:
    from bridge.context import ConversionContext
    from bridge.options import ConvertOptions

    opts = data.options
    options = ConvertOptions(route=data.route if data.route in ("onnx", "native", "auto") else "onnx",
                             layout=opts.get("layout", "nhwc"), atol=opts.get("atol"), rtol=opts.get("rtol"),
                             node_backends=tuple(opts.get("node_backends") or ("wasm", "cpu")),
                             browser=bool(opts.get("browser", True)) if browser is None else browser,
                             samples=max(1, len(samples)))
    return ConversionContext(module=None, onnx_source=None, specs=data.specs, samples=samples,
                             output_names=[p.name for p in data.output_ports], reference=reference, options=options,
                             staging=out_dir, progress=progress, input_ports=data.input_ports,
                             output_ports=data.output_ports)


def run_parity(out_dir: Path | str, *, sample_inputs: Path | None = None, strict: bool | None = None,
               browser: bool | None = None, layers: bool = False, quiet: bool = True) -> ParityRun:
    """Re-run every stage's check on the artifacts in `out_dir` and write ``OUT/parity/report.*``.

    `sample_inputs` replaces the stored samples: the reference is then the .npz's arrays named after the outputs,
    or else onnxruntime on model.onnx (itself checked against PyTorch when the folder was converted). `strict`
    and `browser` default to what the conversion used. `layers` bisects even when every stage passes.
    """
    from bridge.progress import Progress

    out = Path(out_dir)
    if not (out / "web_model" / "model.json").is_file():
        raise UsageError(f"{out} is not a bridge output folder (no web_model/model.json)", stage=STAGE,
                         hint="pass the --out folder of `bridge convert`")
    data = load_parity_data(out)
    from bridge.quiet import import_tensorflow

    import_tensorflow()  # once, quietly: its import chatter would otherwise reach the terminal
    progress = Progress(quiet=quiet)
    samples, reference, reference_kind = data.samples, data.reference, data.reference_kind
    if sample_inputs is not None:
        samples, given = _user_sets(Path(sample_inputs), data)
        reference, reference_kind = (given, "sample-inputs file") if given is not None else (
            _onnx_reference(out, samples, data), "onnxruntime (model.onnx)")
    ctx = _context(out, data, samples, reference, browser, progress)
    stages = _run_stages(ctx, out, onnx_is_reference=reference_kind.startswith("onnxruntime"))
    strict = bool(data.options.get("strict", False)) if strict is None else strict
    bisection = _bisection(ctx, out, stages, layers, reuse_layers=sample_inputs is None)
    report = _report(out, data, ctx, stages, strict, reference_kind, bisection)
    folder = _write(out, report)
    run = ParityRun(status=Status(report["status"]), stages=stages, report=report, report_dir=folder, strict=strict)
    progress.note(f"  {folder}/report.md  {folder}/report.html  {folder}/report.json")
    return run


def _onnx_reference(out: Path, samples: list[dict[str, np.ndarray]], data: ParityData) -> list[dict[str, np.ndarray]]:
    from bridge.onnx_route.onnxrt import run_onnx

    onnx_path = out / "model.onnx"
    if not onnx_path.is_file():
        raise UsageError("new sample inputs need reference outputs: there is no model.onnx to compute them",
                         stage=STAGE, hint="add arrays named after the outputs "
                                           f"({', '.join(p.name for p in data.output_ports)}) to the .npz")
    results = [run_onnx(onnx_path, s) for s in samples]
    return [dict(zip([p.name for p in data.output_ports], r.values())) for r in results]


def _run_stages(ctx: Any, out: Path, onnx_is_reference: bool) -> list[StageResult]:
    from bridge.browser_stages import browser_stages
    from bridge.progress import run_stage
    from bridge.web_stages import node_stages, savedmodel_stage

    stages = [run_stage(ctx.progress, "onnx", lambda: _onnx_stage(ctx, out, onnx_is_reference), False)]
    tf_reason = "not re-run: onnx2tf's in-memory TF model is gone; savedmodel checks the same model as saved"
    stages.append(_noted(ctx, StageResult("tf", Status.SKIPPED, reason=tf_reason)))
    saved_model = out / "saved_model"
    if (saved_model / "saved_model.pb").is_file():
        stages.append(_guarded(ctx, "savedmodel", lambda: savedmodel_stage(ctx, saved_model)))
    else:
        stages.append(_noted(ctx, StageResult("savedmodel", Status.SKIPPED, reason=f"no {saved_model}")))
    web_model = out / "web_model"
    stages.append(_guarded(ctx, "tfjs-graph", lambda: replay_stage(ctx, web_model)))
    stages += node_stages(ctx, web_model)
    stages += browser_stages(ctx, web_model)
    return stages


def _noted(ctx: Any, stage: StageResult) -> StageResult:
    ctx.progress.stage_done(stage)
    return stage


def _guarded(ctx: Any, name: str, fn: Any) -> StageResult:
    """A stage whose bridge error is that stage's failure (the artifact is what is being judged), not a crash."""
    from bridge.progress import run_stage

    def body() -> StageResult:
        try:
            return fn()
        except BridgeError as exc:
            return StageResult(name, Status.FAIL, reason=str(exc).splitlines()[0])

    return run_stage(ctx.progress, name, body, False)


def _onnx_stage(ctx: Any, out: Path, onnx_is_reference: bool) -> StageResult:
    from bridge.onnx_route.onnxrt import run_onnx
    from bridge.parity import compare_outputs

    onnx_path = out / "model.onnx"
    if not onnx_path.is_file():
        return StageResult("onnx", Status.SKIPPED, reason="no model.onnx in the output folder")
    if onnx_is_reference:
        return StageResult("onnx", Status.SKIPPED, reason="model.onnx is the reference for these sample inputs")
    names = [p.name for p in ctx.output_ports]
    actual = [dict(zip(names, run_onnx(onnx_path, s).values())) for s in ctx.samples]
    outputs = compare_outputs(actual, ctx.reference, ctx.tolerance("onnx"))
    return StageResult("onnx", worst_status([o.status for o in outputs]), detail="onnxruntime", outputs=outputs)


def replay_stage(ctx: Any, web_model: Path) -> StageResult:
    """``tfjs-graph`` on the web model as it is: read it, set the quantization widening from its manifest, replay
    its graph in TensorFlow and compare with the reference."""
    from bridge.interface import to_web_samples
    from bridge.parity import compare_outputs
    from bridge.tfjs.inspect import summarize
    from bridge.tfjs.reader import read_web_model
    from bridge.tfjs.replay import replay_samples
    from bridge.web_stages import signature_infos

    model = read_web_model(web_model)
    ctx.quantization_step, ctx.quantized_weights = quantization_figures(model)
    infos_in, infos_out = signature_infos(model.signature)
    names = [p.name for p in ctx.output_ports]
    replayed = replay_samples(model.graph_def, model.weights, to_web_samples(ctx.samples, ctx.input_ports),
                              infos_in, infos_out)
    actual = [{k: v for k, v in result.items() if k in names} for result in replayed]
    outputs = compare_outputs(actual, to_web_samples(ctx.reference, ctx.output_ports), ctx.tolerance("tfjs-graph"))
    summary = summarize(model)
    detail = f"{len(model.shards)} shard(s), {model.weight_bytes / 1e6:.2f} MB"
    extra = {"weightCount": summary["weights"]["count"], "weightBytes": summary["weights"]["bytes"],
             "bytesByDtype": summary["weights"]["bytesByDtype"], "opHistogram": summary["ops"],
             "shards": len(model.shards), "modelJsonBytes": (web_model / "model.json").stat().st_size}
    return StageResult("tfjs-graph", worst_status([o.status for o in outputs]), detail=detail, outputs=outputs,
                       extra=extra)


def quantization_figures(model: Any) -> tuple[float, int]:
    """(largest relative quantization step, number of quantized weights) of a read web model's manifest."""
    from bridge.web_stages import RELATIVE_QUANTIZATION_ERROR

    dtypes = [e.quantization.get("dtype") for e in model.entries if e.quantization]
    steps = [RELATIVE_QUANTIZATION_ERROR.get(str(d), 1.0 / 255) for d in dtypes]
    return (max(steps), len(steps)) if steps else (0.0, 0)


def _bisection(ctx: Any, out: Path, stages: list[StageResult], force: bool, reuse_layers: bool) -> Any:
    from bridge.bisect import BisectInputs, bisect, needs_bisection, stages_to_bisect

    if not force and not needs_bisection(stages):
        return None
    torch_layers = load_layers(out) if reuse_layers else None
    inputs = BisectInputs(module=None, specs=ctx.specs, samples=ctx.samples, reference=ctx.reference,
                          input_ports=ctx.input_ports, output_ports=ctx.output_ports, tolerance=ctx.tolerance,
                          onnx_path=_existing(out / "model.onnx"), saved_model=_existing(out / "saved_model"),
                          web_model=out / "web_model",
                          node_backends=list(ctx.options.node_backends),
                          browser_backends=[s.name.removeprefix("browser-") for s in stages
                                            if s.name.startswith("browser-") and s.name != "browser-indexeddb"])
    with ctx.progress.running("layers"):
        result = bisect(inputs, stages_to_bisect(stages, force), torch_layers)
    ctx.progress.note(f"  layers: {result.summary()}")
    return result


def _existing(path: Path) -> Path | None:
    return path if path.exists() else None


def _report(out: Path, data: ParityData, ctx: Any, stages: list[StageResult], strict: bool, reference_kind: str,
            bisection: Any) -> dict[str, Any]:
    from bridge.report import Report
    from bridge.versions import component_versions

    statuses = [Status.FAIL if strict and s.status is Status.SKIPPED else s.status for s in stages]
    status = worst_status([s for s in statuses if s is not Status.SKIPPED]) if statuses else Status.FAIL
    model = _original_model(out, data)
    options = {"layout": data.options.get("layout"), "atol": data.options.get("atol"),
               "rtol": data.options.get("rtol"), "strict": strict, "command": "parity",
               "reference": reference_kind}
    report = Report(route=data.route, status=status, model=model, stages=stages, samples=len(ctx.samples),
                    artifacts=["parity/report.json", "parity/report.md", "parity/report.html"],
                    versions=component_versions(), options=options).to_dict()
    report["layers"] = bisection.to_dict() if bisection is not None else None
    return report


def _original_model(out: Path, data: ParityData) -> dict[str, Any]:
    """The model section of the conversion's report.json, or one rebuilt from the stored interface."""
    try:
        return dict(json.loads((out / "report.json").read_text())["model"])
    except (OSError, ValueError, KeyError):
        ports = {"inputs": data.input_ports, "outputs": data.output_ports}
        return {"source": str(out), "kind": "?", "parameters": None, "weights": None,
                **{side: [{k: p.describe()[k] for k in ("name", "shape", "web_shape", "dtype", "layout")}
                          for p in plist] for side, plist in ports.items()}}


def _write(out: Path, report: dict[str, Any]) -> Path:
    from bridge.report import json_default, render_markdown
    from bridge.report_html import write_html_report

    folder = out / PARITY_DIR
    text = json.dumps(report, indent=2, default=json_default) + "\n"
    (folder / "report.json").write_text(text)
    data = json.loads(text)
    (folder / "report.md").write_text(render_markdown(data))
    write_html_report(data, folder, web_model=out / "web_model")
    return folder


def parity_from_cli(args: Any) -> int:
    """`bridge parity` with parsed arguments: run, print the stage lines, write --junit; returns the exit code."""
    from bridge.junit import write_junit

    run = run_parity(args.out_dir, sample_inputs=args.sample_inputs, strict=args.strict or None,
                     browser=False if not args.browser else None, layers=args.layers, quiet=False)
    if args.junit:
        write_junit(run.report, args.junit)
    return run.exit_code
