"""Large-model benchmark: a ~200 M-parameter network (float32, ~800 MB of weights) through the native route, the
TF.js writer and the TF.js wasm parity check in Node (no browser), with wall time and peak memory recorded.

    python benchmarks/large_model.py                  # make bench-large; a few minutes on a 2-core machine
    python benchmarks/large_model.py --depth 2        # a smaller stack (smoke run; --stem keeps results apart)

The conversion runs in a child process (this file with --child) so its memory is its own. Memory is recorded two
ways: the child's own peak RSS from getrusage; and, sampled from /proc every 0.2 s by the parent, the peak of each
process of the tree by name (the Node runtime) and of the whole tree's summed RSS (Python and Node at once).
Results: benchmarks/results/large_model.json and .md (`--results`, `--stem`). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python benchmarks/large_model.py` as well as `python -m benchmarks.large_model`
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RESULTS_DIR = ROOT / "benchmarks" / "results"
WORK_DIR = ROOT / "out" / "bench" / "large_model"
WIDTH, DEPTH, BATCH = 4096, 12, 4
SAMPLE_PERIOD_S = 0.2
PAGE = os.sysconf("SC_PAGE_SIZE")


def build_model(width: int = WIDTH, depth: int = DEPTH) -> Any:
    """`depth` blocks of Linear(width, width), LayerNorm and GELU, seeded (12 x 4096 wide: 201.5 M parameters)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    blocks: list[nn.Module] = []
    for _ in range(depth):
        blocks += [nn.Linear(width, width), nn.LayerNorm(width), nn.GELU()]
    return nn.Sequential(*blocks).eval()


# ------------------------------------------------------------------------------------------------ child process

def _rusage_mb() -> dict[str, float]:
    """This process's peak RSS (getrusage). RUSAGE_CHILDREN is not used: a forked child's high-water mark includes
    the parent's pages it saw before exec, so it would report Python's size for Node."""
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"python_peak_mb": round(self_kb / 1024, 1)}


def run_child(width: int, depth: int, out_dir: Path, result_path: Path) -> int:
    """Build and convert the model (native route, Node wasm only, no browser); write the figures as JSON."""
    start = time.perf_counter()
    import bridge

    imported = time.perf_counter()
    module = build_model(width, depth)
    built = time.perf_counter()
    parameters = sum(int(p.numel()) for p in module.parameters())
    result: dict[str, Any] = {"width": width, "depth": depth, "batch": BATCH, "parameters": parameters,
                              "parameter_bytes": 4 * parameters, "imports_s": round(imported - start, 2),
                              "build_s": round(built - imported, 2)}
    try:
        converted = bridge.convert(module, [f"x:{BATCH}x{width}"], out_dir, route="native", force=True,
                                   node_backends=("wasm",), browser=False, quiet=True)
    except Exception as exc:  # noqa: BLE001 - recorded, never raised
        result.update(status="failed", error=type(exc).__name__, reason=str(exc)[:2000])
    else:
        result.update(status="ok", parity=converted.status.value,
                      stages=[{"name": s.name, "status": s.status.value, "seconds": round(float(s.seconds), 2),
                               "max_abs": s.max_abs, "reason": s.reason} for s in converted.stages],
                      web_model_bytes=sum(p.stat().st_size for p in (out_dir / "web_model").iterdir()),
                      shards=len(list((out_dir / "web_model").glob("*.bin"))))
    result["convert_s"] = round(time.perf_counter() - built, 2)
    result["memory"] = _rusage_mb()
    result_path.write_text(json.dumps(result, indent=1, default=str))
    return 0


# ----------------------------------------------------------------------------------------------- parent process

def _tree_rss(root: int) -> dict[str, int]:
    """RSS in bytes of `root` and each descendant, keyed "pid name", read from /proc (empty once it is gone)."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
        names[int(entry)] = stat.split("(", 1)[1].rsplit(")", 1)[0]
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        children = [p for p, parent in parents.items() if parent == pid and p not in tree]
        tree.update(children)
        frontier += children
    rss: dict[str, int] = {}
    for pid in tree:
        try:
            rss[f"{pid} {names.get(pid, '?')}"] = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
    return rss


class TreeSampler(threading.Thread):
    """Samples a process tree's RSS until stopped; keeps the peak of the sum and of each process by name."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self._stop_event = pid, 0, threading.Event()
        self.peak_by_name: dict[str, int] = {}

    def run(self) -> None:
        """Sample every SAMPLE_PERIOD_S seconds until `stop`."""
        while not self._stop_event.wait(SAMPLE_PERIOD_S):
            rss = _tree_rss(self.pid)
            self.peak = max(self.peak, sum(rss.values()))
            for key, value in rss.items():
                name = key.split(" ", 1)[1]
                self.peak_by_name[name] = max(self.peak_by_name.get(name, 0), value)

    def stop(self) -> int:
        """Stop sampling; returns the peak of the summed RSS in bytes."""
        self._stop_event.set()
        self.join()
        return self.peak


def run_benchmark(width: int, depth: int, work: Path, timeout_s: float) -> dict[str, Any]:
    """Convert in a child process while sampling its memory; the child's figures plus wall time and tree peak."""
    work.mkdir(parents=True, exist_ok=True)
    result_path = work / "child_result.json"
    result_path.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--width", str(width), "--depth",
               str(depth), "--work", str(work)]
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, start_new_session=True)
    sampler = TreeSampler(child.pid)
    sampler.start()
    try:
        code = child.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, 9)
        child.wait()
        code = -9
    finally:
        peak = sampler.stop()
    wall = time.perf_counter() - start
    result: dict[str, Any] = json.loads(result_path.read_text()) if result_path.is_file() else {
        "status": "failed", "reason": f"the child process ended with code {code} and wrote no result"}
    result["wall_s"] = round(wall, 1)
    memory = result.setdefault("memory", {})
    memory["tree_peak_mb"] = round(peak / 2**20, 1)
    memory["node_peak_mb"] = round(sampler.peak_by_name.get("node", 0) / 2**20, 1)
    memory["sampled_peak_by_process_mb"] = {k: round(v / 2**20, 1) for k, v in sampler.peak_by_name.items()}
    result["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                         "memory_gb": round(os.sysconf("SC_PHYS_PAGES") * PAGE / 2**30, 1)}
    return result


def render_markdown(result: dict[str, Any]) -> str:
    """The result as a short Markdown page."""
    memory = result.get("memory", {})
    lines = ["# Large-model benchmark", "",
             f"`python benchmarks/large_model.py` (`make bench-large`): {result.get('depth')} x "
             f"Linear({result.get('width')}, {result.get('width')}) + LayerNorm + GELU, "
             f"{result.get('parameters', 0) / 1e6:.1f} M parameters "
             f"({result.get('parameter_bytes', 0) / 2**20:.0f} MiB float32), input x:{result.get('batch')}x"
             f"{result.get('width')}; native route, TF.js writer, TF.js wasm in Node, no browser.", "",
             "| figure | value |", "|---|---|",
             f"| status | {result.get('status')} ({result.get('parity', result.get('reason', ''))}) |",
             f"| wall time, process start to done | {result.get('wall_s')} s |",
             f"| `bridge.convert` | {result.get('convert_s')} s |",
             f"| peak RSS, Python process | {memory.get('python_peak_mb')} MiB |",
             f"| peak RSS, Node (TF.js wasm; sampled) | {memory.get('node_peak_mb')} MiB |",
             f"| peak RSS, whole process tree (sampled) | {memory.get('tree_peak_mb')} MiB |",
             f"| web model | {result.get('web_model_bytes', 0) / 2**20:.0f} MiB in {result.get('shards')} "
             f"shard(s) |", ""]
    if result.get("stages"):
        lines += ["| stage | status | seconds | max abs err |", "|---|---|---|---|"]
        lines += [f"| {s['name']} | {s['status']} | {s['seconds']} | "
                  f"{'–' if s['max_abs'] is None else format(s['max_abs'], '.2g')} |" for s in result["stages"]]
        lines.append("")
    machine = result.get("machine", {})
    lines.append(f"Machine: {machine.get('cpus')} CPUs, {machine.get('memory_gb')} GiB, {machine.get('platform')}.")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description="convert a ~200 M-parameter model and record time and memory")
    parser.add_argument("--width", type=int, default=WIDTH, help=f"Linear width (default {WIDTH})")
    parser.add_argument("--depth", type=int, default=DEPTH, help=f"number of blocks (default {DEPTH})")
    parser.add_argument("--work", type=Path, default=WORK_DIR, help="where the conversion is written")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="folder of the JSON and Markdown results")
    parser.add_argument("--stem", default="large_model", help="results file name stem (default large_model)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds before the conversion is killed")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with --child, the conversion itself); 0 when the results were written."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.child:
        return run_child(args.width, args.depth, args.work / "out", args.work / "child_result.json")
    result = run_benchmark(args.width, args.depth, args.work, args.timeout)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{args.stem}.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    (args.results / f"{args.stem}.md").write_text(render_markdown(result))
    print(render_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
