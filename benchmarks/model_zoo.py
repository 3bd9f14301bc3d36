"""The model zoo: real architectures nobody on the project wrote (benchmarks/zoo_models.py: transformers modeling
code built from small configs, and hand-written common kinds), each converted with `bridge.convert(model, specs,
out, route="auto")` in its static and dynamic input variants, every stage's status and max |Δ| recorded.

    python benchmarks/model_zoo.py                          # the whole table, with the Chromium stages
    python benchmarks/model_zoo.py --no-browser             # without them (TF and TF.js in Node only)
    python benchmarks/model_zoo.py --models 'bert,gpt*' --variants dynamic
    python benchmarks/model_zoo.py --list                   # the table, nothing run
    python benchmarks/model_zoo.py --render benchmarks/results/zoo.json   # rewrite zoo.md from the JSON

Each (model, variant) runs in its own process (`--one`, like benchmarks/convert_one.py) under a time limit, so a
crash or a hang costs that row only. Per row: the route the conversion ended on (and the native route's failure
when `auto` fell back), each stage's status and max |Δ|, conversion time, the web model's op and Transpose counts,
or the one-line typed error; and whether that is the outcome the table expects (zoo_models.Expect). Results go to
benchmarks/results/zoo.json and zoo.md; the command prints the pass count and exits 0 whenever it ran.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python benchmarks/model_zoo.py` as well as `python -m benchmarks.model_zoo`
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks import convert_one  # noqa: E402
from benchmarks.run import RESULTS_DIR, fmt_num, log_tail, machine_info, md_cell, run_subprocess, versions  # noqa: E402
from benchmarks.zoo_models import VARIANTS, ZOO, Expect, select  # noqa: E402

WORK_DIR = ROOT / "out" / "zoo"
STEM = "zoo"
TIME_LIMIT_S = 300.0  # per (model, variant) process, imports and Chromium start-up included
NATIVE_FELL_BACK = "route auto: the native route failed, so the ONNX route was used: "
NATIVE_LOG_LINE = "native route not possible: "
# Stage groups of the Markdown table (by name prefix, so a stage added to bridge's plan lands in its group): what
# the route made, the written web model, TF.js in Node, Chromium.
GROUPS = (("route stages", ("capture", "onnx", "tf", "savedmodel")), ("web", ("tfjs-graph",)),
          ("node", ("tfjs-node-",)), ("browser", ("browser-",)))
Log = Callable[[str], None]


@dataclass(frozen=True)
class RunOptions:
    """How every row is converted: the Chromium stages or not, the TF.js Node backends, the time limit."""

    browser: bool = True
    node_backends: tuple[str, ...] = ("wasm", "cpu")
    time_limit_s: float = TIME_LIMIT_S


# ---------------------------------------------------------------------------------------------------- one row

def convert_row(name: str, variant: str, out_dir: Path, options: RunOptions) -> dict[str, Any]:
    """Build one zoo model and convert one of its variants on route auto; every figure as plain data. Never
    raises: a failed conversion is a row with status "error" and the typed error's one line."""
    imported = time.perf_counter()
    import bridge

    model = ZOO[name]
    spec = model.variant(variant)
    module = model.build()
    row: dict[str, Any] = {**row_identity(name, variant), **convert_one.parameter_bytes(module),
                           "build_s": round(time.perf_counter() - imported, 3)}
    start = time.perf_counter()
    try:
        converted = bridge.convert(module, list(spec.inputs), out_dir, route="auto", force=True, quiet=False,
                                   browser=options.browser, node_backends=options.node_backends,
                                   dynamic_sizes=spec.dynamic_sizes, time_limit=options.time_limit_s)
    except Exception as exc:  # noqa: BLE001 - recorded, never raised
        row.update(convert_one.failure(exc), status="error", convert_s=round(time.perf_counter() - start, 3))
        return row
    row["convert_s"] = round(time.perf_counter() - start, 3)
    row["route"] = converted.report["route"]
    row["native_failure"] = native_failure(converted.report.get("notes", []))
    row["stages"] = [{**data, "reason": data["reason"] or output_problem(stage)}
                     for stage, data in zip(converted.stages, convert_one.stage_rows(converted.stages))]
    row["dynamic_sizes_used"] = converted.report.get("options", {}).get("dynamic_sizes")
    try:
        facts = convert_one.web_model_facts(out_dir / "web_model")
        row["web_model"] = {k: facts[k] for k in ("op_count", "transposes", "ops", "weight_bytes")}
    except Exception as exc:  # noqa: BLE001
        row["web_model"] = convert_one.failure(exc)
    row["status"] = stages_status(row["stages"], options.browser)
    row["max_abs"] = worst_max_abs(row["stages"])
    return row


def output_problem(stage: Any) -> str | None:
    """A failed or inaccurate stage's first output problem (its message, e.g. a shape that differs), when the
    stage itself gives no reason."""
    for output in getattr(stage, "outputs", []):
        if output.status.value in ("fail", "inaccurate"):
            return f"{output.name}: {output.message or output.status.value}"
    return None


def row_identity(name: str, variant: str) -> dict[str, Any]:
    """The columns a row has whatever happened: model, variant, family, source, inputs."""
    model = ZOO[name]
    spec = model.variant(variant)
    return {"model": name, "variant": variant, "family": model.family, "source": model.source,
            "inputs": list(spec.inputs), "dynamic_sizes": list(spec.dynamic_sizes)}


def native_failure(notes: Iterable[str]) -> str | None:
    """The native route's failure when route auto fell back to the ONNX route (from the report's notes)."""
    for note in notes:
        if note.startswith(NATIVE_FELL_BACK):
            return note[len(NATIVE_FELL_BACK):]
    return None


def required_stages(stages: Sequence[Mapping[str, Any]], browser: bool) -> list[Mapping[str, Any]]:
    """The stages a row must pass: all of them, but the Chromium ones only when the browser stages were asked."""
    return [s for s in stages if browser or not s["name"].startswith("browser-")]


def stages_status(stages: Sequence[Mapping[str, Any]], browser: bool) -> str:
    """"pass" when every required stage passed (a skipped one does not), else "fail"."""
    required = required_stages(stages, browser)
    return "pass" if required and all(s["status"] == "pass" for s in required) else "fail"


def not_passing(row: Mapping[str, Any], browser: bool) -> list[str]:
    """The required stages of a converted row that did not pass."""
    return [s["name"] for s in required_stages(row.get("stages", []), browser) if s["status"] != "pass"]


def worst_max_abs(stages: Sequence[Mapping[str, Any]]) -> float | None:
    """The largest max |Δ| of any stage that measured one."""
    values = [s["max_abs"] for s in stages if s.get("max_abs") is not None]
    return max(values) if values else None


# ---------------------------------------------------------------------------------------------------- the table

def run_row(name: str, variant: str, options: RunOptions, work: Path) -> dict[str, Any]:
    """One (model, variant) in its own process under the time limit; its row, with the expectation judged."""
    stem = f"{name}-{variant}"
    out_dir, result_path, log = work / stem, work / f"{stem}.json", work / f"{stem}.log"
    result_path.unlink(missing_ok=True)
    command = [sys.executable, "-m", "benchmarks.model_zoo", "--one", name, variant, str(out_dir), str(result_path),
               "--node-backends", ",".join(options.node_backends), "--time-limit", str(options.time_limit_s)]
    if not options.browser:
        command.append("--no-browser")
    code, wall = run_subprocess(command, log, options.time_limit_s)
    if code is None:
        row = {**row_identity(name, variant), "status": "timeout", "error": "TimeoutExpired",
               "reason": f"stopped after the {options.time_limit_s:g} s time limit"}
    elif not result_path.is_file():
        row = {**row_identity(name, variant), "status": "crashed", "error": f"exit {code}",
               "reason": f"the conversion process exited {code} without a result: {log_tail(log)}"}
    else:
        row = json.loads(result_path.read_text())
    row["wall_s"] = round(wall, 3)
    row["log"] = str(log)
    if row.get("status") in ("error", "timeout", "crashed"):
        row["native_failure"] = row.get("native_failure") or native_failure_from_log(log)
        if row["status"] == "error":  # the route the error came from: ONNX once the native route had failed
            row["route"] = "onnx" if row["native_failure"] else "native"
    row["deviations"] = deviations(row, ZOO[name].variant(variant).expect, options.browser, options.node_backends)
    return row


def native_failure_from_log(log: Path) -> str | None:
    """The native route's failure as the terminal showed it, when route auto fell back and the fallback raised
    too (the error the run ends with is then the ONNX route's)."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        if NATIVE_LOG_LINE in line:
            return line.split(NATIVE_LOG_LINE, 1)[1].strip()
    return None


def expected_stages(route: str | None, browser: bool, node_backends: Sequence[str]) -> list[str]:
    """The stages a converted row must have run on `route`: the route's, the web model, each TF.js Node backend,
    and Chromium's when the browser stages were asked (bridge's plan may hold more: every one that ran must
    pass too)."""
    made = ["capture"] if route == "native" else ["onnx"]
    return (made + ["tf", "savedmodel", "tfjs-graph"] + [f"tfjs-node-{b}" for b in node_backends]
            + (["browser-webgl", "browser-wasm", "browser-indexeddb"] if browser else []))


def deviations(row: Mapping[str, Any], expect: Expect, browser: bool, node_backends: Sequence[str]) -> list[str]:
    """How a row differs from what the table expects of it (empty: as expected). A clean pass expected and not
    had is a regression; a known failure that no longer happens is a fix, and shows up here too."""
    status = row.get("status")
    if expect.error:
        if status != "error" or row.get("error") != expect.error:
            return [f"expected {expect.error} ({expect.why}), got {status}: {row.get('reason') or 'no error'}"]
        return []
    if status in ("error", "timeout", "crashed"):
        return [f"{status}: {row.get('error')}: {row.get('reason')}"]
    found: list[str] = []
    if row.get("route") != expect.route:
        found.append(f"ended on the {row.get('route')} route, expected {expect.route}"
                     + (f" (native failure: {str(row.get('native_failure'))[:200]})" if row.get("native_failure")
                        else ""))
    elif expect.native_reason and expect.native_reason not in str(row.get("native_failure") or ""):
        found.append(f"native failure changed: expected {expect.native_reason!r}, got {row.get('native_failure')!r}")
    ran = {s["name"] for s in row.get("stages", [])}
    missing = [s for s in expected_stages(row.get("route"), browser, node_backends) if s not in ran]
    if missing:
        found.append("stages missing: " + ", ".join(sorted(missing)))
    failing = set(not_passing(row, browser))
    expected = {s for s in expect.failing if browser or not s.startswith("browser-")}
    if failing - expected:
        found.append("stages not passing: " + ", ".join(sorted(failing - expected)))
    if expected - failing:
        found.append("known failing stages now pass: " + ", ".join(sorted(expected - failing)))
    return found


def run_table(pairs: Sequence[tuple[str, str]], options: RunOptions, work: Path, log: Log) -> dict[str, Any]:
    """Every (model, variant) of `pairs`, one process at a time; the whole report as plain data."""
    started = time.perf_counter()
    report: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine_info(),
                              "versions": versions(), "options": {"browser": options.browser,
                                                                  "node_backends": list(options.node_backends),
                                                                  "time_limit_s": options.time_limit_s},
                              "rows": []}
    work.mkdir(parents=True, exist_ok=True)
    for index, (name, variant) in enumerate(pairs, 1):
        row = run_row(name, variant, options, work)
        report["rows"].append(row)
        log(f"[{index}/{len(pairs)}] {row_line(row)}")
    report["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["total_s"] = round(time.perf_counter() - started, 1)
    report["summary"] = summarize(report["rows"])
    return report


def row_line(row: Mapping[str, Any]) -> str:
    """One terminal line for a row: model, variant, status, route, worst |Δ|, time, reason, deviations."""
    text = (f"{row['model']} [{row['variant']}] {row.get('status')} on {row.get('route') or '-'}"
            f" max|Δ| {fmt_num(row.get('max_abs'))} {fmt_num(row.get('wall_s'))} s")
    reason = row_reason(row)
    if reason:
        text += f": {reason[:200]}"
    if row.get("deviations"):
        text += "  UNEXPECTED: " + "; ".join(row["deviations"])[:300]
    return text


def row_reason(row: Mapping[str, Any], width: int = 240) -> str:
    """Why a row is not a clean native pass, each part cut to `width` characters: the native route's failure
    when route auto fell back, the typed error, the stages that did not pass."""
    parts = []
    if row.get("native_failure"):
        parts.append(f"native: {str(row['native_failure']).split(' | ')[0][:width]}")
    if row.get("status") in ("error", "timeout", "crashed"):
        parts.append(f"{row.get('error')}: {str(row.get('reason'))[:width]}")
    for stage in row.get("stages", []):
        if stage["status"] in ("fail", "inaccurate"):
            parts.append(f"{stage['name']} {stage['status']}: {str(stage.get('reason') or '')[:width]}")
    return "; ".join(parts)


def summarize(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Pass counts overall, per variant and per route; the rows not passing; the rows off their expectation."""
    passed = [r for r in rows if r.get("status") == "pass"]
    by_variant = {v: {"pass": sum(r["variant"] == v for r in passed), "total": sum(r["variant"] == v for r in rows)}
                  for v in VARIANTS}
    routes = Counter(r.get("route") for r in passed)
    return {"pass": len(passed), "total": len(rows), "by_variant": by_variant,
            "pass_by_route": {"native": routes.get("native", 0), "onnx": routes.get("onnx", 0)},
            "fell_back": sum(1 for r in rows if r.get("route") == "onnx"),
            "failures": [f"{r['model']} [{r['variant']}]" for r in rows if r.get("status") != "pass"],
            "unexpected": [f"{r['model']} [{r['variant']}]" for r in rows if r.get("deviations")]}


def pass_line(summary: Mapping[str, Any]) -> str:
    """The pass count in one line (what the README quotes)."""
    variants = ", ".join(f"{v} {c['pass']}/{c['total']}" for v, c in summary["by_variant"].items() if c["total"])
    routes = summary["pass_by_route"]
    return (f"{summary['pass']}/{summary['total']} pass ({variants}; native {routes['native']}, onnx "
            f"{routes['onnx']}); {len(summary['unexpected'])} off their expected outcome")


# ---------------------------------------------------------------------------------------------------- markdown

def in_group(stage: str, names: Sequence[str]) -> bool:
    """True when `stage` is one of `names`, or starts with one of them that ends in "-" (a prefix)."""
    return any(stage == n or (n.endswith("-") and stage.startswith(n)) for n in names)


def group_cell(stages: Sequence[Mapping[str, Any]], names: Sequence[str]) -> str:
    """A stage group's status: ✓ when every stage of it that ran passed, else the marks of the others; – when
    all were skipped; empty when none of them ran."""
    mine = [s for s in stages if in_group(s["name"], names)]
    if not mine:
        return ""
    if all(s["status"] == "skipped" for s in mine):
        return "–"
    bad = [s for s in mine if s["status"] not in ("pass", "skipped")]
    if not bad:
        return "✓"
    marks = {"fail": "✗", "inaccurate": "≈"}
    return " ".join(f"{marks[s['status']]} {s['name']}" for s in bad)


def table_rows(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The Markdown table: one line per (model, variant)."""
    lines = ["| model | variant | inputs | route | " + " | ".join(g for g, _ in GROUPS)
             + " | max abs Δ | ops / Transposes | convert s | process s | outcome | reason |",
             "|---|---|---|---|" + "---|" * len(GROUPS) + "---|---|---|---|---|---|"]
    for row in rows:
        stages = row.get("stages", [])
        web = row.get("web_model", {})
        ops = f"{web['op_count']} / {web['transposes']}" if "op_count" in web else "-"
        outcome = row.get("status", "-") + (" (unexpected)" if row.get("deviations") else "")
        lines.append(f"| {row['model']} | {row['variant']} | {md_cell(' '.join(row.get('inputs', [])))} | "
                     f"{row.get('route') or '-'} | " + " | ".join(group_cell(stages, n) for _, n in GROUPS)
                     + f" | {fmt_num(row.get('max_abs'))} | {ops} | {fmt_num(row.get('convert_s'))} | "
                     f"{fmt_num(row.get('wall_s'))} | {outcome} | {md_cell(row_reason(row, 100), 300)} |")
    return lines


def render_markdown(report: Mapping[str, Any]) -> str:
    """The zoo report as Markdown: the run, the pass count, the table, then every failure in full."""
    machine, options, summary = report["machine"], report["options"], report["summary"]
    lines = ["# bridge model zoo", "",
             f"{report['started']}; {machine['cpu']}, {machine['cores']} cores; load average "
             f"{machine['load_avg_start']} at start, {machine.get('load_avg_end')} at end; total "
             f"{report['total_s']:.0f} s.", "",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()), "",
             f"Every row: `bridge.convert(model, inputs, out, route=\"auto\")` in its own process (time limit "
             f"{options['time_limit_s']:g} s), TF.js Node backends {', '.join(options['node_backends'])}, "
             f"{'with' if options['browser'] else 'without'} the Chromium stages. A row passes when every stage "
             "that must run passed. Stage groups: route stages = capture or onnx, tf, savedmodel; "
             "web = tfjs-graph; node = tfjs-node-*; browser = browser-*. ✓ passed, ✗ failed, ≈ inaccurate, "
             "– skipped.", "",
             f"**{pass_line(summary)}**", "", "## Table", ""]
    lines += table_rows(report["rows"])
    failing = [r for r in report["rows"] if r.get("status") != "pass" or r.get("route") != "native"]
    if failing:
        lines += ["", "## Not a clean native pass", ""]
        for row in failing:
            lines.append(f"- **{row['model']} [{row['variant']}]** ({row.get('source')}): {row.get('status')} on "
                         f"{row.get('route') or '-'}. {md_cell(row_reason(row, 400), 1200) or 'passed'}"
                         + (f" Expected: {md_cell(ZOO[row['model']].variant(row['variant']).expect.why, 600)}"
                            if row["model"] in ZOO and ZOO[row["model"]].variant(row["variant"]).expect.why else "")
                         + (f" UNEXPECTED: {md_cell('; '.join(row['deviations']), 600)}" if row.get("deviations") else ""))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------- main

def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description="bridge's model zoo: real architectures, static and dynamic")
    parser.add_argument("--models", help="comma-separated model names or globs (default: every model)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: static,dynamic")
    parser.add_argument("--no-browser", action="store_true", help="skip bridge's Chromium stages")
    parser.add_argument("--node-backends", default="wasm,cpu", help="TF.js Node backends to check (wasm,cpu)")
    parser.add_argument("--time-limit", type=float, default=TIME_LIMIT_S, help="seconds per model and variant")
    parser.add_argument("--work", type=Path, default=WORK_DIR, help="folder for the converted models and logs")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="folder for zoo.json and zoo.md")
    parser.add_argument("--stem", default=STEM, help="result file name without extension")
    parser.add_argument("--list", action="store_true", help="print the table (models, inputs, expectations)")
    parser.add_argument("--render", type=Path, help="only rewrite the Markdown of this results JSON")
    parser.add_argument("--one", nargs=4, metavar=("MODEL", "VARIANT", "OUT_DIR", "RESULT_JSON"),
                        help="(internal) convert one row in this process and write its JSON")
    return parser.parse_args(list(argv))


def options_of(args: argparse.Namespace) -> RunOptions:
    """The run options of the command line."""
    return RunOptions(browser=not args.no_browser,
                      node_backends=tuple(b for b in args.node_backends.split(",") if b),
                      time_limit_s=args.time_limit)


def list_table(pairs: Sequence[tuple[str, str]]) -> None:
    """Print every (model, variant) with its inputs and expected outcome."""
    for name, variant in pairs:
        spec = ZOO[name].variant(variant)
        expect = "pass" if spec.expect.clean else f"{spec.expect} "
        print(f"{name:20s} {variant:8s} {' '.join(spec.inputs):60s} {expect}")


def run_one(args: argparse.Namespace) -> int:
    """The `--one` child: convert one row and write its JSON; 0 when the JSON was written."""
    name, variant, out_dir, result_path = args.one
    row = convert_row(name, variant, Path(out_dir), options_of(args))
    row["process_s"] = round(time.perf_counter() - convert_one.PROCESS_START, 3)
    Path(result_path).parent.mkdir(parents=True, exist_ok=True)
    Path(result_path).write_text(json.dumps(row, indent=1, default=str))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the zoo (or one row, list it, re-render it); write the results and print the pass count."""
    from benchmarks.run import write_results

    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.one:
        return run_one(args)
    if args.render:
        report = json.loads(args.render.read_text())
        write_results(report, args.render.parent, args.render.stem, render_markdown)
        print(pass_line(report["summary"]))
        return 0
    try:
        chosen = select([p for p in (args.models or "").split(",") if p], [v for v in args.variants.split(",") if v])
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    pairs = [(model.name, variant) for model, variant in chosen]
    if args.list:
        list_table(pairs)
        return 0

    def log(text: str) -> None:
        print(f"[zoo {time.strftime('%H:%M:%S')}] {text}", flush=True)

    report = run_table(pairs, options_of(args), args.work.resolve(), log)
    json_path, md_path = write_results(report, args.results.resolve(), args.stem, render_markdown)
    summary = report["summary"]
    print(f"\n{pass_line(summary)}")
    for row in report["rows"]:
        if row.get("status") != "pass" or row.get("deviations"):
            print(f"  {row_line(row)}")
    print(f"total {report['total_s']:.0f} s; results: {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
