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
from pathlib import Path

from bridge import __version__
from bridge.errors import BridgeError, UsageError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARITY = 0, 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="bridge", description="PyTorch to TensorFlow.js graph models, with parity "
                                     "proven at every stage down to the real TF.js runtime.")
    parser.add_argument("--version", action="version", version=f"bridge {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_convert(sub)
    _add_tfjs(sub)
    _add_inspect(sub)
    _add_serve(sub)
    _add_export_weights(sub)
    _add_parity(sub)
    sub.add_parser("doctor", help="check the installed components and say how to fix missing ones",
                   description="Print versions of Python, torch, tensorflow, onnx, onnxruntime, onnx2tf, Node, the "
                               "pinned TF.js npm packages and Chromium, and say what is missing.")
    return parser


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a PyTorch model to a TF.js graph model and check parity",
                       description="Convert MODEL to OUT/web_model (model.json + shards) through a SavedModel, "
                                   "checking parity against PyTorch at every stage.")
    p.add_argument("model", metavar="MODEL", help="file.py:ClassOrFactory, a TorchScript .pt, a torch.export .pt2 "
                   "or an .onnx file")
    p.add_argument("--input", dest="inputs", action="append", default=[], metavar="NAME:SHAPE[:DTYPE[:LOW..HIGH]]",
                   help="a model input, e.g. x:1x3x224x224 or ids:?x128:int64:0..999 (? = dynamic); repeat per "
                        "input, in forward() order")
    p.add_argument("--output", dest="outputs", action="append", default=[], metavar="NAME",
                   help="name of an output, in order (default: output_0, output_1, ... or the keys of a dict)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument("--weights", type=Path, metavar="FILE", help="state_dict (.pt/.pth, loaded with "
                   "weights_only=True) or .safetensors, for a file.py:Class MODEL")
    p.add_argument("--init-args", metavar="JSON", help="constructor arguments: a JSON list or object")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow MODEL or --weights to be a whole pickled module (torch.save(model)), loaded with "
                        "weights_only=False: the file can run any code, so only for files you trust (recorded in "
                        "the report)")
    p.add_argument("--route", choices=("auto", "native", "onnx"), default="auto",
                   help="how to reach TensorFlow: native (bridge's own rebuild, readable tf_model.py), onnx "
                        "(torch.onnx + onnx2tf), or auto (default: native, falling back to onnx with the reason)")
    p.add_argument("--layout", choices=("nhwc", "nchw"), default="nhwc",
                   help="layout of 4-D image inputs in the web model (default: nhwc, what tf.browser.fromPixels "
                        "gives)")
    _add_quantize(p)
    p.add_argument("--sample-inputs", type=Path, metavar="FILE.npz", help="your own sample inputs for parity "
                   "(arrays named after the inputs; a leading extra axis holds several sets)")
    p.add_argument("--samples", type=int, default=3, metavar="N", help="number of seeded random sample inputs "
                   "(default 3)")
    p.add_argument("--atol", type=float, help="absolute tolerance of every parity check (default per stage)")
    p.add_argument("--rtol", type=float, help="relative tolerance of every parity check (default per stage)")
    p.add_argument("--shard-size", type=int, default=4 * 1024 * 1024, metavar="BYTES",
                   help="weight shard size (default 4 MiB)")
    p.add_argument("--node-backends", default="wasm,cpu", metavar="LIST",
                   help="TF.js backends to check in Node, comma-separated (default wasm,cpu; cpu is pure JavaScript "
                        "and slow on large models)")
    p.add_argument("--no-browser", dest="browser", action="store_false",
                   help="skip the headless Chromium stages (webgl, wasm, IndexedDB)")
    p.add_argument("--strict", action="store_true", help="a skipped stage fails the run too (for CI)")
    p.add_argument("--layers", action="store_true", help="compare every layer across stages even when all pass "
                   "(this per-layer bisection runs anyway when a stage is inaccurate or fails)")
    p.add_argument("--junit", type=Path, metavar="FILE", help="also write the parity results as JUnit XML (one "
                   "test case per stage and output)")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.add_argument("--verbose", action="store_true", help="show TensorFlow and onnx2tf logs")


def _add_quantize(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quantize", action="append", default=[], metavar="DTYPE[:PATTERN]",
                   help="quantize float32 weights to float16, uint8 or uint16, optionally only weights whose name "
                        "matches a glob pattern (e.g. uint8:*dense*); repeat for several")


def _add_tfjs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tfjs", help="write a TF.js graph model from a SavedModel",
                       description="Convert SAVED_MODEL_DIR to a TF.js graph model in OUT_DIR (model.json + shards) "
                                   "with bridge's own writer: freeze, grappler, fusions the TF.js runtime executes, "
                                   "op allow-list check, weights.")
    p.add_argument("saved_model", type=Path, metavar="SAVED_MODEL_DIR")
    p.add_argument("out", type=Path, metavar="OUT_DIR")
    p.add_argument("--signature", default="serving_default", help="signature key (default serving_default)")
    _add_quantize(p)
    p.add_argument("--shard-size", type=int, default=4 * 1024 * 1024, metavar="BYTES",
                   help="weight shard size in bytes (default 4194304)")
    p.add_argument("--control-flow-v2", action="store_true",
                   help="keep TF2 While/If ops instead of lowering them to v1 control flow")
    p.add_argument("--metadata", action="append", default=[], metavar="KEY=FILE.json",
                   help="add FILE.json's content under userDefinedMetadata.KEY; repeatable")
    p.add_argument("--force", action="store_true", help="replace an existing OUT_DIR")


def _add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="summarise a TF.js web model folder",
                       description="Op histogram, Transpose count, weight bytes by dtype, quantization, shards, "
                                   "whether executeAsync is needed, and bridge's metadata.")
    p.add_argument("web_model", type=Path, metavar="WEB_MODEL_DIR")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def _add_export_weights(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-weights", help="write a model's PyTorch weights as TF.js shards, npz or safetensors",
                       description="Export MODEL's state_dict (PyTorch layout, keyed by state_dict key) for a TF or "
                                   "TF.js model you wrote yourself: tfjs (weights_manifest.json + shards for "
                                   "tf.io.loadWeights), npz or safetensors.")
    p.add_argument("model", metavar="MODEL", help="a state_dict file (.safetensors, .pt, .pth, .bin), "
                   "file.py:ClassOrFactory (with --weights), a TorchScript .pt or a torch.export .pt2")
    p.add_argument("--format", required=True, choices=("tfjs", "npz", "safetensors"), help="what to write")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument("--weights", type=Path, metavar="FILE", help="state_dict for a file.py:Class MODEL")
    p.add_argument("--init-args", metavar="JSON", help="constructor arguments: a JSON list or object")
    p.add_argument("--trust-pickle", action="store_true", help="allow a whole pickled module (torch.save(model)), "
                   "loaded with weights_only=False: the file can run any code, so only for files you trust")
    p.add_argument("--force", action="store_true", help="replace a non-empty output folder")


def _cmd_export_weights(args: argparse.Namespace) -> int:
    from bridge.native.export_weights import cmd_export_weights

    return cmd_export_weights(args)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a folder (web model, demo page) over http on loopback",
                       description="A static server with CORS headers and the right content types for .json, "
                                   ".bin, .wasm and .js; refuses paths outside DIR. Ctrl-C stops it.")
    p.add_argument("folder", type=Path, metavar="DIR")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, loopback only)")
    p.add_argument("--verbose", action="store_true", help="log every request")


def _add_parity(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("parity", help="re-check parity of an existing output folder without converting again",
                       description="Re-run every stage's check on the artifacts in OUT_DIR (e.g. after the web model "
                                   "was edited or re-quantized) against the reference stored at conversion time; "
                                   "reports go to OUT_DIR/parity/. Exit codes as for convert.")
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="the --out folder of `bridge convert`")
    p.add_argument("--sample-inputs", type=Path, metavar="FILE.npz", help="other sample inputs (arrays named after "
                   "the inputs; reference outputs named after the outputs, else onnxruntime on model.onnx)")
    p.add_argument("--junit", type=Path, metavar="FILE", help="also write the results as JUnit XML")
    p.add_argument("--layers", action="store_true", help="compare every layer even when all stages pass")
    p.add_argument("--no-browser", dest="browser", action="store_false", help="skip the headless Chromium stages")
    p.add_argument("--strict", action="store_true", help="a skipped stage fails the run too (for CI)")


def _cmd_parity(args: argparse.Namespace) -> int:
    from bridge.parity_cmd import parity_from_cli

    return parity_from_cli(args)


def _cmd_serve(args: argparse.Namespace) -> int:
    from bridge.server import make_server

    server = make_server(args.folder, args.host, args.port, verbose=args.verbose)
    print(f"serving {args.folder} at http://{args.host}:{server.server_address[1]}/ (Ctrl-C to stop)", flush=True)
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
    from bridge.quiet import captured_output, import_tensorflow

    import_tensorflow()
    from bridge.tfjs.convert import TfjsOptions, convert_saved_model

    options = TfjsOptions(signature=args.signature, quantize=tuple(args.quantize), shard_size=args.shard_size,
                          control_flow_v2=args.control_flow_v2, metadata=_read_metadata_files(args.metadata),
                          force=args.force, source=str(args.saved_model))
    with captured_output():
        summary = convert_saved_model(args.saved_model, args.out, options)
    print(f"wrote {summary.model_json} and {len(summary.shards)} shard(s), {summary.weight_bytes:,} weight bytes; "
          f"inspect it with: bridge inspect {args.out}")
    return EXIT_OK


def _read_metadata_files(items: Sequence[str]) -> dict[str, object]:
    metadata: dict[str, object] = {}
    for item in items:
        key, sep, file = item.partition("=")
        if not sep or not key or not file:
            raise UsageError(f"--metadata {item!r} is not KEY=FILE.json", stage="options")
        try:
            metadata[key] = json.loads(Path(file).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(f"--metadata {key}: cannot read JSON from {file}: {exc}", stage="options") from exc
    return metadata


def _cmd_inspect(args: argparse.Namespace) -> int:
    from bridge.quiet import import_tensorflow

    import_tensorflow()  # the reader parses the graph with TensorFlow's protos: import it with its chatter hidden
    from bridge.tfjs.inspect import format_inspection, inspect_web_model

    summary = inspect_web_model(args.web_model)
    print(json.dumps(summary, indent=2) if args.json else format_inspection(summary))
    return EXIT_OK


def _cmd_convert(args: argparse.Namespace) -> int:
    from bridge.pipeline import convert_from_cli

    result = convert_from_cli(args)
    return EXIT_OK if result.ok else EXIT_PARITY


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "convert": _cmd_convert, "parity": _cmd_parity, "tfjs": _cmd_tfjs, "inspect": _cmd_inspect,
    "serve": _cmd_serve, "export-weights": _cmd_export_weights, "doctor": _cmd_doctor,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (also used as the console entry point)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return COMMANDS[args.command](args)
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
