"""The `bridge` command: a thin shell over the Python API.

Exit codes: 0 success; 1 a bridge error (one red line, details, next step; traceback only with --debug);
2 a usage error; 3 converted, but a parity stage was inaccurate or failed (or skipped, with --strict).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any
from dataclasses import dataclass
from pathlib import Path

from bridge import __version__
from bridge.errors import BridgeError, UsageError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARITY = 0, 1, 2, 3


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, help line, description, arguments and what runs it."""

    name: str
    help: str
    description: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="bridge", description="PyTorch to TensorFlow.js graph models, with parity "
                                     "proven at every stage down to the real TF.js runtime.")
    parser.add_argument("--version", action="version", version=f"bridge {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS.values():
        command.arguments(sub.add_parser(command.name, help=command.help, description=command.description))
    return parser


# ------------------------------------------------------------------------------------------------ option groups


def _model_options(p: argparse.ArgumentParser, weights_help: str) -> None:
    """--weights, --init-args, --trust-pickle: how a MODEL is loaded."""
    p.add_argument("--weights", type=Path, metavar="FILE", help=weights_help)
    p.add_argument("--init-args", metavar="JSON", help="constructor arguments: a JSON list or object")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow a whole pickled module (torch.save(model)), loaded with weights_only=False: the file "
                        "can run any code, so only for files you trust (recorded in the report)")


def _quantize_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quantize", action="append", default=[], metavar="DTYPE[:PATTERN]",
                   help="quantize float32 weights to float16, uint8 or uint16, optionally only weights whose name "
                        "matches a glob pattern (e.g. uint8:*dense*); repeat for several")
    p.add_argument("--shard-size", type=int, default=4 * 1024 * 1024, metavar="BYTES",
                   help="weight shard size in bytes (default 4 MiB)")


def _check_options(p: argparse.ArgumentParser, sample_inputs_help: str) -> None:
    """The options of the parity checks, shared by convert and parity."""
    p.add_argument("--sample-inputs", type=Path, metavar="FILE.npz", help=sample_inputs_help)
    p.add_argument("--junit", type=Path, metavar="FILE", help="also write the parity results as JUnit XML (one "
                   "test case per stage and output)")
    p.add_argument("--layers", action="store_true", help="compare every layer across stages even when all pass "
                   "(this per-layer bisection runs anyway when a stage is inaccurate or fails)")
    p.add_argument("--no-browser", dest="browser", action="store_false",
                   help="skip the headless Chromium stages (webgl, wasm, IndexedDB)")
    p.add_argument("--strict", action="store_true", help="a skipped stage fails the run too (for CI)")


def _sampling_options(p: argparse.ArgumentParser) -> None:
    """The sample inputs, the tolerances and the runtimes parity uses (convert and tfjs)."""
    p.add_argument("--samples", type=int, default=3, metavar="N", help="number of seeded random sample inputs "
                   "(default 3)")
    p.add_argument("--dynamic-sizes", action="append", default=[], metavar="[NAME.AXIS=]N,N,...",
                   help="sizes a dynamic (?) dimension takes in the sample inputs, one per sample set in turn "
                        "(default: a batch axis 2,3; any other axis 16,37,128); without NAME.AXIS for every "
                        "dynamic axis but a batch axis; repeatable")
    p.add_argument("--time-limit", type=float, default=1800.0, metavar="SECONDS",
                   help="how long the reference run and each stage may take before the run ends with an error "
                        "(default 1800; 0 for no limit)")
    p.add_argument("--atol", type=float, help="absolute tolerance of every parity check (default per stage)")
    p.add_argument("--rtol", type=float, help="relative tolerance of every parity check (default per stage)")
    p.add_argument("--node-backends", default="wasm,cpu", metavar="LIST",
                   help="TF.js backends to check in Node, comma-separated (default wasm,cpu; cpu is pure JavaScript "
                        "and slow on large models)")


def _force_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--force", action="store_true", help=f"replace {what}")


# ------------------------------------------------------------------------------------------------ commands


def _convert_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="file.py:ClassOrFactory, a TorchScript .pt, a torch.export .pt2 "
                   "or an .onnx file")
    p.add_argument("--input", dest="inputs", action="append", default=[], metavar="NAME:SHAPE[:DTYPE[:LOW..HIGH]]",
                   help="a model input, e.g. x:1x3x224x224 or ids:?x128:int64:0..999 (? = dynamic); repeat per "
                        "input, in forward() order")
    p.add_argument("--output", dest="outputs", action="append", default=[], metavar="NAME",
                   help="name of an output, in order (default: output_0, output_1, ... or the keys of a dict)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    _model_options(p, "state_dict (.pt/.pth, loaded with weights_only=True) or .safetensors, for a file.py:Class "
                      "MODEL")
    p.add_argument("--route", choices=("auto", "native", "onnx"), default="auto",
                   help="how to reach TensorFlow: native (bridge's own rebuild, readable tf_model.py), onnx "
                        "(torch.onnx + onnx2tf), or auto (default: native, falling back to onnx with the reason)")
    p.add_argument("--layout", choices=("nhwc", "nchw"), default="nhwc",
                   help="layout of 4-D image inputs in the web model (default: nhwc, what tf.browser.fromPixels "
                        "gives)")
    p.add_argument("--image-range", type=_range, metavar="LOW..HIGH", help="image inputs: the range the page and "
                   "the generated module scale 0..255 pixels to (default 0..1), recorded in model.json")
    p.add_argument("--mean", type=_numbers, metavar="M[,M,M]", help="image inputs: then subtract this per channel")
    p.add_argument("--std", type=_numbers, metavar="S[,S,S]", help="image inputs: then divide by this per channel")
    p.add_argument("--labels", type=Path, metavar="FILE", help="class names of a classifier output, one per line (or "
                   "a JSON list): shown by the demo page, returned by the generated module, recorded in model.json")
    p.add_argument("--web-format", default="graph", metavar="FORMATS",
                   help="graph (inference: tf.loadGraphModel), layers (trainable: tf.loadLayersModel, in "
                        "OUT/layers_model), or graph,layers (default graph)")
    p.add_argument("--train-optimizer", choices=("sgd", "adam"), default="sgd",
                   help="layers models: the optimizer of the train-step check (default sgd)")
    p.add_argument("--train-lr", type=float, default=0.01, metavar="RATE",
                   help="layers models: its fixed learning rate (default 0.01)")
    p.add_argument("--train-loss", choices=("cross_entropy", "mse"),
                   help="layers models: its loss (default: cross_entropy for classifier outputs, mse otherwise)")
    _quantize_options(p)
    _sampling_options(p)
    _check_options(p, "your own sample inputs for parity (arrays named after the inputs; a leading extra axis holds "
                      "several sets)")
    _force_option(p, "an existing output folder")
    p.add_argument("--verbose", action="store_true", help="show TensorFlow and onnx2tf logs")


def _tfjs_arguments(p: argparse.ArgumentParser) -> None:
    """`bridge tfjs`: the official converter's flags under their own spellings (with _ or -), plus bridge's."""
    from bridge.tfjs.sources import INPUT_FORMATS, OUTPUT_FORMATS

    p.add_argument("source", type=Path, metavar="INPUT", help="a SavedModel folder, a frozen graph .pb, a TF Hub "
                   "module folder, a Keras .h5 / .keras file or Keras SavedModel, or a TF.js layers model folder")
    p.add_argument("out", type=Path, metavar="OUT_DIR", help="where model.json and the shards go (reports and "
                   "parity data beside them)")
    p.add_argument("--input-format", "--input_format", choices=INPUT_FORMATS, help="the input's format "
                   "(default: detected)")
    p.add_argument("--output-format", "--output_format", choices=OUTPUT_FORMATS, help="tfjs_graph_model or "
                   "tfjs_layers_model (default: a layers model for Keras inputs, a graph model otherwise)")
    p.add_argument("--signature", "--signature-name", "--signature_name", dest="signature",
                   help="SavedModel / Hub signature (default serving_default; default for TF1 Hub modules)")
    p.add_argument("--saved-model-tags", "--saved_model_tags", help="comma-separated tags of the graph to load "
                   "(default serve; none for TF1 Hub modules)")
    p.add_argument("--output-node-names", "--output_node_names", help="frozen graphs: comma-separated output nodes")
    p.add_argument("--input-node-names", "--input_node_names", help="frozen graphs: comma-separated input nodes "
                   "(default: the Placeholders)")
    _quantize_options(p)
    for dtype in ("float16", "uint8", "uint16"):
        p.add_argument(f"--quantize-{dtype}", f"--quantize_{dtype}", dest=f"quantize_{dtype}", nargs="?",
                       const="*", metavar="NAMES", help=f"quantize weights to {dtype} (optionally only the "
                       "comma-separated weight names or globs given)")
    p.add_argument("--weight-shard-size-bytes", "--weight_shard_size_bytes", dest="shard_size", type=int,
                   metavar="BYTES", help="the official spelling of --shard-size")
    p.add_argument("--control-flow-v2", "--control_flow_v2", type=_flag, nargs="?", const=True, default=False,
                   metavar="BOOL", help="keep TF2 While/If ops instead of lowering them to v1 control flow")
    p.add_argument("--strip-debug-ops", "--strip_debug_ops", type=_flag, nargs="?", const=True, default=True,
                   metavar="BOOL", help="drop Assert, Print and CheckNumerics ops (default True)")
    p.add_argument("--metadata", action="append", default=[], metavar="KEY=FILE.json",
                   help="add FILE.json's content under userDefinedMetadata.KEY (also KEY:FILE,KEY:FILE); repeatable")
    p.add_argument("--trust-code", action="store_true", help="let a Keras file with Lambda layers load (their Python "
                   "code runs); such layers still cannot be written as a layers model")
    _sampling_options(p)
    _check_options(p, "your own sample inputs for parity (arrays named after the model's inputs)")
    _force_option(p, "an existing OUT_DIR")
    p.add_argument("--verbose", action="store_true", help="show TensorFlow logs")


def _range(text: str) -> tuple[float, float]:
    """LOW..HIGH as two numbers."""
    low, sep, high = text.partition("..")
    try:
        return float(low), float(high)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LOW..HIGH (e.g. -1..1)") from None


def _numbers(text: str) -> tuple[float, ...]:
    """Comma-separated numbers (one, or one per channel)."""
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None


def _read_labels(path: Path | None) -> tuple[str, ...] | None:
    """Class names from a file: a JSON list, or one name per line."""
    if path is None:
        return None
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"cannot read --labels {path}: {exc.strerror}", stage="options") from exc
    try:
        value = json.loads(text)
    except ValueError:
        value = [line.strip() for line in text.splitlines() if line.strip()]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise UsageError(f"--labels {path} holds no list of names", stage="options",
                         hint="one class name per line, or a JSON list of strings")
    return tuple(value)


def _flag(text: str) -> bool:
    """A boolean flag value as the official converter takes it (True/False, 1/0, yes/no)."""
    value = str(text).strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (True or False)")
    return value in ("true", "1", "yes")


def _inspect_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("web_model", type=Path, metavar="WEB_MODEL_DIR",
                   help="the web model folder (or a `bridge convert` output folder holding web_model/)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def _export_weights_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="a state_dict file (.safetensors, .pt, .pth, .bin), "
                   "file.py:ClassOrFactory (with --weights), a TorchScript .pt or a torch.export .pt2")
    p.add_argument("--format", required=True, choices=("tfjs", "npz", "safetensors"), help="what to write")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    _model_options(p, "state_dict for a file.py:Class MODEL")
    _force_option(p, "a non-empty output folder")


def _import_weights_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("tfjs_model", type=Path, metavar="TFJS_MODEL_DIR", help="a layers model: the folder bridge "
                   "wrote, an upload folder of bridge serve --accept-uploads, or the files TF.js saved (model.json "
                   "+ model.weights.bin)")
    p.add_argument("model", metavar="MODEL", help="the PyTorch model it was converted from (file.py:Class, ...)")
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help="the state_dict to write (.safetensors, "
                   "or .pt / .pth)")
    _model_options(p, "the model's current state_dict (weights the layers model does not hold are kept from it)")
    _force_option(p, "an existing --out file")


def _cmd_import_weights(args: argparse.Namespace) -> int:
    """`bridge import-weights`: a TF.js layers model's weights back into the PyTorch module's state_dict."""
    from bridge.layers_route import import_weights, save_state_dict
    from bridge.source.model import load_model

    if args.out.exists() and not args.force:
        raise UsageError(f"{args.out} exists", stage="import-weights", hint="pass --force to replace it")
    loaded = load_model(args.model, weights=args.weights, init_args=args.init_args, trust_pickle=args.trust_pickle)
    if loaded.module is None:
        raise UsageError(f"{args.model} is not a PyTorch model", stage="import-weights",
                         hint="pass the file.py:Class (or TorchScript, .pt2) the layers model was converted from")
    state = import_weights(args.tfjs_model, loaded.module)
    path = save_state_dict(state, args.out)
    print(f"wrote {len(state)} tensor(s) to {path}; load it with --weights {path}")
    return EXIT_OK


def _serve_arguments(p: argparse.ArgumentParser) -> None:
    from bridge.demo.uploads import DEFAULT_MAX_UPLOAD_BYTES

    p.add_argument("folder", type=Path, metavar="DIR")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, loopback only)")
    p.add_argument("--accept-uploads", type=Path, metavar="DIR", help="take models TF.js saves with "
                   "model.save(tf.io.http('/upload')) (a multipart POST of model.json and model.weights.bin), each "
                   "written atomically into a new folder under DIR")
    p.add_argument("--token", metavar="T", help="uploads need this token (Authorization: Bearer T, or ?token=T); "
                   "required with --accept-uploads on a non-loopback --host")
    p.add_argument("--max-upload-bytes", type=int, default=DEFAULT_MAX_UPLOAD_BYTES, metavar="N",
                   help=f"refuse larger upload bodies (default {DEFAULT_MAX_UPLOAD_BYTES // 2**20} MiB)")
    p.add_argument("--verbose", action="store_true", help="log every request")


def _parity_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="the --out folder of `bridge convert`")
    _check_options(p, "other sample inputs (arrays named after the inputs; reference outputs named after the "
                      "outputs, else onnxruntime on model.onnx)")


def _doctor_arguments(p: argparse.ArgumentParser) -> None:
    """doctor takes no arguments."""


def _cmd_export_weights(args: argparse.Namespace) -> int:
    from bridge.native.export_weights import cmd_export_weights

    return cmd_export_weights(args)


def parity_from_cli(args: argparse.Namespace) -> int:
    """`bridge parity` with parsed arguments: re-check, write --junit; returns the exit code."""
    from bridge.parity.recheck import run_parity

    run = run_parity(args.out_dir, sample_inputs=args.sample_inputs, strict=args.strict or None,
                     browser=False if not args.browser else None, layers=args.layers, quiet=False)
    if args.junit:
        from bridge.report.junit import write_junit

        write_junit(run.report, args.junit)
    return run.exit_code


def _cmd_serve(args: argparse.Namespace) -> int:
    from bridge.demo.server import make_server

    server = make_server(args.folder, args.host, args.port, verbose=args.verbose, accept_uploads=args.accept_uploads,
                         token=args.token, max_upload_bytes=args.max_upload_bytes, log_uploads=True)
    base = f"http://{args.host}:{server.server_address[1]}"
    print(f"serving {args.folder} at {base}/ (Ctrl-C to stop)", flush=True)
    if args.accept_uploads is not None:
        print(f"uploads: POST {base}/upload -> {args.accept_uploads}/<id>/ (served back at /uploads/<id>/model.json)",
              flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return EXIT_OK


def _cmd_doctor(args: argparse.Namespace) -> int:
    from bridge import doctor

    components = doctor.collect()
    print(doctor.render(components))
    return EXIT_OK if all(c.problem is None or not c.required for c in components) else EXIT_ERROR


def _cmd_tfjs(args: argparse.Namespace) -> int:
    """`bridge tfjs INPUT OUT`: read, write, check parity; returns the exit code (3 when parity did not hold)."""
    from bridge.tf_pipeline import SourceOptions, convert_tf

    source = SourceOptions(input_format=args.input_format, signature=args.signature,
                           saved_model_tags=_names(args.saved_model_tags),
                           output_node_names=_names(args.output_node_names),
                           input_node_names=_names(args.input_node_names), trust_code=args.trust_code)
    options = _run_options(args, quantize=tuple(args.quantize) + _official_quantize(args),
                           metadata=_read_metadata_files(args.metadata), control_flow_v2=args.control_flow_v2,
                           strip_debug_ops=args.strip_debug_ops)
    result = convert_tf(args.source, args.out, output_format=args.output_format, source_options=source,
                        options=options, sample_inputs_file=args.sample_inputs, quiet=False)
    return _finish(args, result, [f"{args.out}/model.json", f"{args.out}/report.md"])


def _names(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(n.strip() for n in text.split(",") if n.strip())


def _official_quantize(args: argparse.Namespace) -> tuple[str, ...]:
    """--quantize_float16 [NAMES] and friends as bridge quantize specs ("float16", "uint8:*dense*")."""
    specs: list[str] = []
    for dtype in ("float16", "uint8", "uint16"):
        value = getattr(args, f"quantize_{dtype}")
        if value is not None:
            specs += [dtype if name == "*" else f"{dtype}:{name}" for name in _names(value) or ("*",)]
    return tuple(specs)


def _read_metadata_files(items: Sequence[str]) -> dict[str, object]:
    """--metadata values, KEY=FILE.json or the official converter's KEY:FILE,KEY:FILE, read as JSON."""
    metadata: dict[str, object] = {}
    pairs = [part for item in items for part in (item.split(",") if "=" not in item else [item])]
    for item in pairs:
        key, sep, file = item.partition("=") if "=" in item else item.partition(":")
        if not sep or not key or not file:
            raise UsageError(f"--metadata {item!r} is not KEY=FILE.json", stage="options")
        try:
            metadata[key] = json.loads(Path(file).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(f"--metadata {key}: cannot read JSON from {file}: {exc}", stage="options") from exc
    return metadata


def _cmd_inspect(args: argparse.Namespace) -> int:
    from bridge.util.quiet import import_tensorflow

    import_tensorflow()  # the reader parses the graph with TensorFlow's protos: import it with its chatter hidden
    from bridge.tfjs.inspect import format_inspection, inspect_web_model

    folder = Path(args.web_model)
    if not (folder / "model.json").exists() and (folder / "web_model" / "model.json").is_file():
        folder = folder / "web_model"  # a `bridge convert` output folder: inspect its web model
    summary = inspect_web_model(folder)
    print(json.dumps(summary, indent=2) if args.json else format_inspection(summary))
    return EXIT_OK


def _run_options(args: argparse.Namespace, **fields: Any) -> Any:
    """The ConvertOptions of the sampling, checking and output options convert and tfjs share (plus `fields`)."""
    from bridge.options import ConvertOptions

    return ConvertOptions(shard_size=args.shard_size, atol=args.atol, rtol=args.rtol, samples=args.samples,
                          strict=args.strict, force=args.force, verbose=args.verbose, browser=args.browser,
                          layers=args.layers, dynamic_sizes=tuple(args.dynamic_sizes), time_limit=args.time_limit,
                          node_backends=tuple(b for b in args.node_backends.split(",") if b), **fields)


def _finish(args: argparse.Namespace, result: Any, where: list[str]) -> int:
    """Write --junit, say where things are and what did not hold; the exit code."""
    from bridge.util.progress import Progress

    if args.junit:
        from bridge.report.junit import write_junit

        write_junit(result.report, args.junit)
    progress = Progress(quiet=False)
    progress.note("  " + "  ".join(where))
    if not result.ok:
        bad = [f"{s.name} {s.status.value}" for s in result.stages if s.status.value != "pass"]
        progress.note(f"parity did not hold: {', '.join(bad)}; see {result.out_dir}/report.md")
    return EXIT_OK if result.ok else EXIT_PARITY


def _cmd_convert(args: argparse.Namespace) -> int:
    """`bridge convert` with parsed arguments: load the model, build the options, run, print where things are."""
    from bridge.pipeline import convert
    from bridge.source.inputs import check_unique_names, load_sample_inputs, parse_input_spec
    from bridge.source.model import load_model
    from bridge.util.atomic import check_output_dir
    from bridge.util.progress import Progress

    options = _run_options(args, route=args.route, layout=args.layout, output_names=tuple(args.outputs),
                           quantize=tuple(args.quantize), trust_pickle=args.trust_pickle,
                           web_formats=tuple(f.strip() for f in args.web_format.split(",") if f.strip()),
                           train_optimizer=args.train_optimizer, train_learning_rate=args.train_lr,
                           train_loss=args.train_loss, image_range=args.image_range, mean=args.mean, std=args.std,
                           labels=_read_labels(args.labels))
    specs = [parse_input_spec(text) for text in args.inputs]
    check_unique_names(specs)
    check_output_dir(args.out.resolve(), options.force)
    loaded = load_model(args.model, weights=args.weights, init_args=args.init_args, trust_pickle=args.trust_pickle)
    user_samples = load_sample_inputs(args.sample_inputs, specs) if args.sample_inputs else []
    Progress(quiet=False).note(f"bridge {__version__}: {args.model} -> {args.out}")
    result = convert(loaded, specs, args.out, options, sample_inputs=user_samples, quiet=False)
    out = result.out_dir
    return _finish(args, result, [f"{out}/web_model/model.json", f"{out}/saved_model/", f"{out}/report.md",
                                  f"{out}/index.html\n  try it in a browser: bridge serve {out}  (then open "
                                  "http://127.0.0.1:8000/)"])


COMMANDS: dict[str, Command] = {c.name: c for c in (
    Command("convert", "convert a PyTorch model to a TF.js graph model and check parity",
            "Convert MODEL to OUT/web_model (model.json + shards) through a SavedModel, checking parity against "
            "PyTorch at every stage.", _convert_arguments, _cmd_convert),
    Command("tfjs", "write a TF.js graph model from a SavedModel",
            "Convert SAVED_MODEL_DIR to a TF.js graph model in OUT_DIR (model.json + shards) with bridge's own "
            "writer: freeze, grappler, fusions the TF.js runtime executes, op allow-list check, weights.",
            _tfjs_arguments, _cmd_tfjs),
    Command("inspect", "summarise a TF.js web model folder",
            "Op histogram, Transpose count, weight bytes by dtype, quantization, shards, whether executeAsync is "
            "needed, and bridge's metadata.", _inspect_arguments, _cmd_inspect),
    Command("serve", "serve a folder (web model, demo page) over http on loopback",
            "A static server with CORS headers and the right content types for .json, .bin, .wasm and .js; refuses "
            "paths outside DIR. Ctrl-C stops it.", _serve_arguments, _cmd_serve),
    Command("export-weights", "write a model's PyTorch weights as TF.js shards, npz or safetensors",
            "Export MODEL's state_dict (PyTorch layout, keyed by state_dict key) for a TF or TF.js model you wrote "
            "yourself: tfjs (weights_manifest.json + shards for tf.io.loadWeights), npz or safetensors.",
            _export_weights_arguments, _cmd_export_weights),
    Command("import-weights", "bring a TF.js layers model's (trained) weights back into the PyTorch model",
            "Map the weights of a layers model (converted by bridge, then perhaps trained in the browser and saved) "
            "back through the inverse layout transforms into MODEL's state_dict; a model of another architecture "
            "is refused with every mismatch listed.", _import_weights_arguments, _cmd_import_weights),
    Command("parity", "re-check parity of an existing output folder without converting again",
            "Re-run every stage's check on the artifacts in OUT_DIR (e.g. after the web model was edited or "
            "re-quantized) against the reference stored at conversion time; reports go to OUT_DIR/parity/. Exit "
            "codes as for convert.", _parity_arguments, parity_from_cli),
    Command("doctor", "check the installed components and say how to fix missing ones",
            "Print versions of Python, torch, tensorflow, onnx, onnxruntime, onnx2tf, Node, the pinned TF.js npm "
            "packages and Chromium, and say what is missing.", _doctor_arguments, _cmd_doctor),
)}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (also used as the console entry point)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not (args.debug or getattr(args, "verbose", False)):
        from bridge.util.quiet import silence_library_logging

        silence_library_logging()
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return COMMANDS[args.command].run(args)
    except BridgeError as exc:
        if args.debug:
            raise
        _print_error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        print("bridge: interrupted; no output was written", file=sys.stderr)
        return 130


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so atomic output folders and subprocesses are cleaned up."""
    raise KeyboardInterrupt


def _print_error(exc: BridgeError) -> None:
    red, reset = ("\033[31m", "\033[0m") if sys.stderr.isatty() else ("", "")
    lines = str(exc).splitlines()
    print(f"{red}error: {lines[0]}{reset}", file=sys.stderr)
    for line in lines[1:]:
        print(line, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
