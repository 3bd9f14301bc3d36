"""The TF.js writer on its own: SavedModel -> model.json + shards, for MobileNetV2- and ResNet-18-sized models.

    python benchmarks/writer.py            # writes benchmarks/results/writer.json and writer.md
    python benchmarks/writer.py --quick    # the Keras MobileNetV2 at 96x96 only, for a smoke test

SavedModels are built here with random weights and no downloads: a Keras MobileNetV2 (weights=None, so Keras'
own BatchNorm layers go through the writer's folding) and bridge's native rebuilds of benchmarks/models.py's
MobileNetV2 and ResNet-18. For each: writer wall time (target < 20 s), weight bytes against the parameters' float32
bytes (target: at most 1% over; folded batch norms make it smaller), the op histogram with the leftovers a reference converter would remove (BatchNorm,
Identity other than the outputs, Transpose), and TF.js wasm latency in Node.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

WRITER_TARGET_S = 20.0
SIZE_TOLERANCE = 0.01
LEFTOVER_OPS = ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3", "BatchNormWithGlobalNormalization",
                "Transpose")


def keras_mobilenet_v2(folder: Path, size: int) -> tuple[Path, int, tuple[int, ...]]:
    """A Keras MobileNetV2 (random weights) saved as a SavedModel through a tf.Module with one serving function."""
    import tensorflow as tf

    model = tf.keras.applications.MobileNetV2(input_shape=(size, size, 3), weights=None)
    module = tf.Module()
    module.model = model
    spec = tf.TensorSpec([1, size, size, 3], tf.float32, name="x")
    module.serve = tf.function(lambda x: {"logits": model(x, training=False)}, input_signature=[spec])
    path = folder / f"keras_mobilenet_v2_{size}"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path, int(model.count_params()), (1, size, size, 3)


def native_saved_model(name: str, folder: Path) -> tuple[Path, int, tuple[int, ...]]:
    """bridge's native rebuild of a benchmarks/models.py model (NHWC input) as a SavedModel."""
    import torch

    from benchmarks.models import MODELS
    from bridge.native.rebuild import rebuild_tf

    entry = MODELS[name]
    module = entry.build()
    shape = tuple(int(d) for d in entry.inputs[0].split(":")[1].split("x"))
    rebuild = rebuild_tf(module, (torch.randn(*shape),), folder / name, input_names=["x"])
    params = sum(p.numel() for p in module.parameters())
    return rebuild.saved_model_dir, int(params), (shape[0], shape[2], shape[3], shape[1])


def measure(name: str, saved_model: Path, params: int, input_shape: tuple[int, ...], out: Path) -> dict[str, Any]:
    """Write the web model (timed), then its size, ops, leftovers and wasm latency."""
    from bridge.util.quiet import captured_output
    from bridge.runtime.node import run_graph_model
    from bridge.tfjs.convert import TfjsOptions, convert_saved_model

    start = time.perf_counter()
    with captured_output():
        summary = convert_saved_model(saved_model, out, TfjsOptions(force=True))
    seconds = time.perf_counter() - start
    ops = dict(summary.op_histogram)
    outputs = len(summary.outputs)
    leftovers = {op: ops[op] for op in LEFTOVER_OPS if ops.get(op)}
    if ops.get("Identity", 0) > outputs:
        leftovers["Identity (beyond the outputs)"] = ops["Identity"] - outputs
    sample = np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)
    run = run_graph_model(out, [[sample]], backends=("wasm",), warmup=3, repeats=10)["wasm"]
    ratio = summary.weight_bytes / (4 * params)
    return {"model": name, "writer_s": round(seconds, 2), "params": params, "weight_bytes": summary.weight_bytes,
            "size_ratio": round(ratio, 5), "ops": sum(v for k, v in ops.items() if k not in ("Const", "Placeholder")),
            "op_histogram": ops, "leftovers": leftovers, "wasm_median_ms": _median(run.infer_ms),
            "wasm_load_ms": round(run.load_ms, 1), "wasm_error": run.error,
            # Folded batch norms drop their statistics, so the web model may be smaller than the parameters; the
            # target is that it is never more than 1% larger (no duplicated or padded weights).
            "targets": {"writer_time": seconds < WRITER_TARGET_S, "size": ratio <= 1 + SIZE_TOLERANCE,
                        "no_leftovers": not leftovers}}


def _median(values: list[float]) -> float | None:
    return round(float(np.median(values)), 2) if values else None


def render(rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    """The Markdown table."""
    lines = ["# TF.js writer benchmark", "", f"Machine: {machine['cpu']}, {machine['cores']} cores; "
             f"`python benchmarks/writer.py`. Targets: writer < {WRITER_TARGET_S:.0f} s, weight bytes at most 1% "
             "over the float32 parameter bytes (folded batch norms drop their statistics, so less is expected), "
             "no BatchNorm / extra Identity / Transpose left.", "",
             "| model | writer s | params | weight bytes / params·4 | ops | leftovers | TF.js wasm median ms |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        left = ", ".join(f"{k} {v}" for k, v in r["leftovers"].items()) or "none"
        lines.append(f"| {r['model']} | {r['writer_s']} | {r['params']:,} | {r['size_ratio']:.4f} | {r['ops']} | "
                     f"{left} | {r['wasm_median_ms']} |")
    lines += ["", "Targets: " + "; ".join(f"{r['model']}: " + ", ".join(
        f"{k} {'met' if v else 'MISSED'}" for k, v in r["targets"].items()) for r in rows)]
    return "\n".join(lines) + "\n"


def main() -> int:
    """Build the SavedModels, measure the writer on each, print and save the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small Keras MobileNetV2 only")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    from bridge.util.quiet import import_tensorflow

    import_tensorflow()
    builders: list[tuple[str, Callable[[Path], tuple[Path, int, tuple[int, ...]]]]] = [
        ("keras_mobilenet_v2_96", lambda f: keras_mobilenet_v2(f, 96))]
    if not args.quick:
        builders += [("keras_mobilenet_v2_224", lambda f: keras_mobilenet_v2(f, 224)),
                     ("native_mobilenet_v2", lambda f: native_saved_model("mobilenet_v2", f)),
                     ("native_resnet18", lambda f: native_saved_model("resnet18", f))]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bridge-writer-bench-") as tmp:
        for name, build in builders:
            saved_model, params, shape = build(Path(tmp))
            rows.append(measure(name, saved_model, params, shape, Path(tmp) / f"{name}_web"))
            print(json.dumps({k: rows[-1][k] for k in ("model", "writer_s", "size_ratio", "ops", "leftovers",
                                                       "wasm_median_ms")}), flush=True)
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "python": platform.python_version()}
    args.results.mkdir(parents=True, exist_ok=True)
    stem = "writer-quick" if args.quick else "writer"
    (args.results / f"{stem}.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    text = render(rows, machine)
    (args.results / f"{stem}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
