"""One benchmark conversion (one model, one route) in a fresh process, so its wall time and peak memory are its own.

    python -m benchmarks.convert_one MODEL ROUTE OUT_DIR RESULT_JSON [--node-backends wasm] [--browser-check]
                                     [--sizes DIR]
    python -m benchmarks.convert_one MODEL --export-onnx PATH RESULT_JSON

The first form runs `bridge.convert` and writes RESULT_JSON: status (ok / failed, with the reason), the wall time of
the `bridge.convert` call and of each stage, the worst parity error per stage, peak RSS (this process, or the
largest child it started, such as the Node runtime), the web model's op histogram, Transpose count and size, and,
with --sizes, the size of the same SavedModel written again with float16 and uint8 weight quantization. The second
form only exports the model to ONNX (for onnxruntime-web when the ONNX route did not leave a file). It never
raises: every failure lands in RESULT_JSON, and the exit code is 0 whenever that file was written.
"""

from __future__ import annotations

import time

PROCESS_START = time.perf_counter()  # before the heavy imports, so import time can be reported too

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

QUANTIZE_VARIANTS = ("float16", "uint8")
SKIP_OPS = frozenset({"Const", "Placeholder", "Identity", "NoOp"})


def peak_rss_mb() -> dict[str, float]:
    """Peak resident memory so far of this process and of the largest child it waited for, in MiB."""
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"self_mb": round(self_kb / 1024, 1), "children_mb": round(child_kb / 1024, 1),
            "peak_mb": round(max(self_kb, child_kb) / 1024, 1)}


def failure(exc: BaseException) -> dict[str, Any]:
    """A failure as plain data: bridge's one-line message (stage, hint) or the exception and its last frames."""
    from bridge.errors import BridgeError

    if isinstance(exc, BridgeError):
        return {"status": "failed", "reason": str(exc).strip().splitlines()[0][:500],
                "error": type(exc).__name__, "details": str(exc)[:2000]}
    tail = traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:]
    return {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"[:500], "error": type(exc).__name__,
            "details": "".join(tail)[-2000:]}


def stage_rows(stages: list[Any]) -> list[dict[str, Any]]:
    """Each stage's name, status, seconds, worst max-abs error and reason."""
    return [{"name": s.name, "status": s.status.value, "seconds": round(float(s.seconds), 3),
             "max_abs": s.max_abs, "reason": s.reason, "detail": s.detail} for s in stages]


def web_model_facts(web_model: Path) -> dict[str, Any]:
    """Op histogram, op count (without Const/Placeholder/Identity), Transpose count and bytes of a web model."""
    from bridge.tfjs.inspect import inspect_web_model

    info = inspect_web_model(web_model)
    shard_bytes = sum(int(s["bytes"]) for s in info["shards"])
    json_bytes = (web_model / "model.json").stat().st_size
    return {"ops": info["ops"], "nodes": info["nodes"],
            "op_count": sum(n for op, n in info["ops"].items() if op not in SKIP_OPS),
            "transposes": info["transposes"], "weight_bytes": shard_bytes, "model_json_bytes": json_bytes,
            "total_bytes": shard_bytes + json_bytes, "bytes_by_dtype": info["weights"]["bytesByDtype"],
            "unsupported_ops": info["unsupportedOps"], "needs_async": info["needsAsync"]}


def quantized_sizes(saved_model: Path, sizes_dir: Path) -> dict[str, Any]:
    """The SavedModel written again as a web model with each quantization; bytes (or the failure) per variant."""
    from bridge.tfjs.convert import TfjsOptions, convert_saved_model

    sizes: dict[str, Any] = {}
    for dtype in QUANTIZE_VARIANTS:
        start = time.perf_counter()
        try:
            target = sizes_dir / dtype
            convert_saved_model(saved_model, target, TfjsOptions(quantize=(dtype,), force=True))
            facts = web_model_facts(target)
            sizes[dtype] = {"status": "ok", "weight_bytes": facts["weight_bytes"],
                            "total_bytes": facts["total_bytes"], "bytes_by_dtype": facts["bytes_by_dtype"],
                            "seconds": round(time.perf_counter() - start, 3)}
        except Exception as exc:  # noqa: BLE001 - a failed variant is a figure, not a crash
            sizes[dtype] = failure(exc)
    return sizes


def parameter_bytes(module: Any) -> dict[str, int]:
    """Parameter count and float32 bytes (buffers such as batch-norm statistics not counted)."""
    count = sum(int(p.numel()) for p in module.parameters())
    return {"parameters": count, "parameter_bytes": 4 * count}


def convert_model(name: str, route: str, out_dir: Path, node_backends: tuple[str, ...],
                  sizes_dir: Path | None, browser_check: bool = False) -> dict[str, Any]:
    """Convert one benchmark model on one route; every figure this process can give, as plain data."""
    imported = time.perf_counter()
    import bridge
    from benchmarks.models import MODELS

    model = MODELS[name]
    module = model.build()
    result: dict[str, Any] = {"model": name, "route": route, **parameter_bytes(module),
                              "node_backends": list(node_backends), "browser_check": browser_check}
    start = time.perf_counter()
    result["imports_s"] = round(start - PROCESS_START, 3)
    result["build_s"] = round(start - imported, 3)
    try:
        converted = bridge.convert(module, list(model.inputs), out_dir, route=route, force=True, quiet=True,
                                   node_backends=node_backends, browser=browser_check)
    except Exception as exc:  # noqa: BLE001 - recorded, never raised
        result.update(failure(exc), convert_s=round(time.perf_counter() - start, 3), memory=peak_rss_mb())
        return result
    result["convert_s"] = round(time.perf_counter() - start, 3)
    result["e2e_s"] = round(time.perf_counter() - PROCESS_START, 3)
    result["memory"] = peak_rss_mb()
    result["parity"] = converted.status.value
    result["status"] = "ok"
    result["stages"] = stage_rows(converted.stages)
    web_model = out_dir / "web_model"
    try:
        result["web_model"] = web_model_facts(web_model)
    except Exception as exc:  # noqa: BLE001
        result["web_model"] = failure(exc)
    if sizes_dir is not None and (out_dir / "saved_model").is_dir():
        result["quantized"] = quantized_sizes(out_dir / "saved_model", sizes_dir)
    return result


def export_only(name: str, onnx_path: Path) -> dict[str, Any]:
    """Export a benchmark model to ONNX with bridge's exporter (no conversion); the file for onnxruntime-web."""
    from benchmarks.models import MODELS
    from bridge.source.inputs import make_sample_inputs, parse_input_spec
    from bridge.onnx_route.export import export_onnx
    from bridge.source.reference import run_reference, to_torch_inputs

    model = MODELS[name]
    module = model.build()
    specs = [parse_input_spec(text) for text in model.inputs]
    sample = make_sample_inputs(specs, count=1)[0]
    start = time.perf_counter()
    try:
        names, _ = run_reference(module, [sample], specs)
        export = export_onnx(module, to_torch_inputs(sample, specs), onnx_path,
                             input_names=[s.name for s in specs], output_names=names)
    except Exception as exc:  # noqa: BLE001
        return {"model": name, **failure(exc)}
    return {"model": name, "status": "ok", "onnx": str(export.path), "exporter": export.exporter,
            "seconds": round(time.perf_counter() - start, 3)}


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description="one benchmark conversion in its own process")
    parser.add_argument("model")
    parser.add_argument("args", nargs="+", help="ROUTE OUT_DIR RESULT_JSON, or RESULT_JSON with --export-onnx")
    parser.add_argument("--node-backends", default="wasm", help="comma-separated TF.js Node backends to check")
    parser.add_argument("--browser-check", action="store_true", help="keep bridge's Chromium parity stages")
    parser.add_argument("--sizes", type=Path, default=None, help="write float16/uint8 variants under this folder")
    parser.add_argument("--export-onnx", type=Path, default=None, help="only export the model to this .onnx path")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the conversion (or the export) and write the result JSON; 0 when it was written."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.export_onnx is not None:
        result_path = Path(args.args[-1])
        result = export_only(args.model, args.export_onnx)
    else:
        if len(args.args) != 3:
            print("usage: convert_one MODEL ROUTE OUT_DIR RESULT_JSON", file=sys.stderr)
            return 2
        route, out_dir, result_path = args.args[0], Path(args.args[1]), Path(args.args[2])
        backends = tuple(b for b in args.node_backends.split(",") if b)
        result = convert_model(args.model, route, out_dir, backends, args.sizes, args.browser_check)
    result["process_s"] = round(time.perf_counter() - PROCESS_START, 3)
    result_path.parent.mkdir(parents=True, exist_ok=True)
    result_path.write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
