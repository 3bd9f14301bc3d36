"""report.html: one self-contained page (inline CSS and SVG, no script, nothing fetched) from report.json's content.

Sections: stage checklist, per-stage and per-output metrics, plots (error distribution per stage, error along the
network's layers, output vs reference scatter, timings), the first diverging layer, and a model summary (parameters,
sizes, op histogram, Transpose count, quantization). Plots are SVG written here; no plotting library.

The distribution and scatter plots need each output's error profile (`bridge.parity.error_profile`), stored by the
parity check under ``outputs[i].profile``; without it those plots say so instead of drawing.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from markupsafe import Markup

from bridge.report.formatting import fmt, stage_max_abs
from bridge.stages.result import Status

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")
STATUS_COLORS = {"pass": "#2e7d32", "inaccurate": "#f9a825", "fail": "#c62828", "skipped": "#9e9e9e"}


# ------------------------------------------------------------------------------------------------ SVG helpers


def _svg(width: int, height: int, body: Sequence[str], label: str) -> Markup:
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(label)}">')
    return Markup(head + "".join(body) + "</svg>")


def _text(x: float, y: float, text: str, size: int = 10, anchor: str = "start", extra: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" {extra}>'
            f"{html.escape(text)}</text>")


def _axis_frame(x0: float, y0: float, x1: float, y1: float) -> str:
    return f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{x1 - x0:.1f}" height="{y1 - y0:.1f}" fill="none" stroke="#999"/>'


def histogram_svg(profile: Mapping[str, Any], atol: float | None, title: str) -> Markup:
    """Bars of log10 |Δ| counts, with the absolute tolerance marked."""
    width, height, left, bottom, top = 300, 130, 30, 24, 18
    edges, counts = profile["log10_edges"], profile["counts"]
    peak = max(max(counts), 1)
    span = edges[-1] - edges[0]
    plot_w, plot_h = width - left - 8, height - bottom - top

    def x(v: float) -> float:
        return left + (v - edges[0]) / span * plot_w

    body = [_text(left, 12, title, 11, extra='font-weight="bold"'), _axis_frame(left, top, width - 8, height - bottom)]
    for k, count in enumerate(counts):
        if count:
            bar_h = max(1.0, plot_h * math.sqrt(count / peak))  # sqrt: a handful of bad elements stays visible
            body.append(f'<rect x="{x(edges[k]) + 0.5:.1f}" y="{height - bottom - bar_h:.1f}" '
                        f'width="{max(1.0, x(edges[k + 1]) - x(edges[k]) - 1):.1f}" height="{bar_h:.1f}" '
                        f'fill="#1f77b4"><title>10^{edges[k]:g}..10^{edges[k + 1]:g}: {count}</title></rect>')
    for tick in range(int(edges[0]), int(edges[-1]) + 1, 2):
        body.append(_text(x(tick), height - bottom + 12, f"1e{tick}", 8, "middle"))
    if atol:
        ax = x(min(max(math.log10(atol), edges[0]), edges[-1]))
        body.append(f'<line x1="{ax:.1f}" y1="{top}" x2="{ax:.1f}" y2="{height - bottom}" stroke="#c62828" '
                    'stroke-dasharray="3,2"/>')
        body.append(_text(ax + 2, top + 9, "atol", 8, extra='fill="#c62828"'))
    body.append(_text(width - 10, height - 2, "|Δ| (log)", 8, "end"))
    return _svg(width, height, body, title)


def scatter_svg(points: Sequence[Sequence[float]], title: str) -> Markup:
    """Actual vs reference values with the y = x line."""
    size, pad = 240, 30
    values = [v for p in points for v in p] or [0.0, 1.0]
    low, high = min(values), max(values)
    if high == low:
        low, high = low - 1.0, high + 1.0

    def scale(v: float, flip: bool = False) -> float:
        frac = (v - low) / (high - low)
        return pad + (1 - frac if flip else frac) * (size - 2 * pad)

    body = [_text(pad, 14, title, 11, extra='font-weight="bold"'), _axis_frame(pad, pad, size - pad, size - pad),
            f'<line x1="{scale(low):.1f}" y1="{scale(low, True):.1f}" x2="{scale(high):.1f}" '
            f'y2="{scale(high, True):.1f}" stroke="#bbb"/>']
    body += [f'<circle cx="{scale(r):.1f}" cy="{scale(a, True):.1f}" r="2" fill="#d62728" fill-opacity="0.6"/>'
             for r, a in points]
    body.append(_text(size / 2, size - 6, "reference", 9, "middle"))
    body.append(_text(10, size / 2, "actual", 9, "middle", f'transform="rotate(-90 10 {size / 2})"'))
    body.append(_text(pad, size - pad + 11, f"{low:.3g}", 8))
    body.append(_text(size - pad, size - pad + 11, f"{high:.3g}", 8, "end"))
    return _svg(size, size, body, title)


def bars_svg(items: Sequence[tuple[str, float]], unit: str, title: str, colors: Sequence[str] = ()) -> Markup:
    """Horizontal bars, one per (label, value)."""
    row, label_w, width = 16, 190, 560
    height = 22 + row * len(items)
    peak = max([v for _, v in items] + [1e-12])
    body = [_text(0, 12, title, 11, extra='font-weight="bold"')]
    for k, (label, value) in enumerate(items):
        y = 20 + k * row
        bar = (width - label_w - 70) * value / peak
        color = colors[k] if k < len(colors) else "#1f77b4"
        body.append(_text(label_w - 6, y + 11, label[-34:], 10, "end"))
        body.append(f'<rect x="{label_w}" y="{y + 2}" width="{max(bar, 1):.1f}" height="{row - 4}" fill="{color}"/>')
        body.append(_text(label_w + bar + 4, y + 11, f"{value:.3g} {unit}".strip(), 9))
    return _svg(width, height, body, title)


def layer_curve_svg(layers: Mapping[str, Any]) -> Markup | None:
    """max |Δ| along the network (log scale), one line per stage, the first divergence marked."""
    points = [p["path"] for p in layers.get("points", [])]
    stages = [s for s in layers.get("stages", []) if s.get("layers")]
    if not points or not stages:
        return None
    width, height, left, right, top, bottom = 760, 300, 52, 150, 24, 110
    plot_w, plot_h = width - left - right, height - top - bottom
    errors = [max(x["max_abs"], 1e-12) for s in stages for x in s["layers"] if x.get("max_abs") is not None]
    lo = math.floor(math.log10(min(errors or [1e-8])))
    hi = math.ceil(math.log10(max(errors or [1.0]))) + (1 if errors and max(errors) == min(errors) else 0)
    hi = max(hi, lo + 1)

    def x(path: str) -> float:
        return left + (points.index(path) + 0.5) / len(points) * plot_w

    def y(value: float) -> float:
        return top + (hi - math.log10(max(value, 1e-12))) / (hi - lo) * plot_h

    body = [_text(left, 14, "max |Δ| along the network, per stage", 11, extra='font-weight="bold"'),
            _axis_frame(left, top, left + plot_w, top + plot_h)]
    for tick in range(lo, hi + 1):
        body.append(f'<line x1="{left}" y1="{y(10.0 ** tick):.1f}" x2="{left + plot_w}" y2="{y(10.0 ** tick):.1f}" '
                    'stroke="#eee"/>')
        body.append(_text(left - 4, y(10.0 ** tick) + 3, f"1e{tick}", 8, "end"))
    for path in points:
        body.append(_text(x(path), top + plot_h + 8, path[-28:], 8, "end",
                          f'transform="rotate(-60 {x(path):.1f} {top + plot_h + 8})"'))
    first = layers.get("first_divergence")
    if first and first.get("observed_at") in points:
        fx = x(first["observed_at"])
        body.append(f'<line x1="{fx:.1f}" y1="{top}" x2="{fx:.1f}" y2="{top + plot_h}" stroke="#c62828" '
                    'stroke-dasharray="4,3"/>')
    for k, stage in enumerate(stages):
        color = COLORS[k % len(COLORS)]
        coords = [(x(e["path"]), y(e["max_abs"]), e) for e in stage["layers"]
                  if e.get("max_abs") is not None and e["path"] in points]
        if coords:
            body.append('<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>'.format(
                color, " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy, _ in coords)))
        for cx, cy, e in coords:
            body.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3" fill="{STATUS_COLORS.get(e["status"], color)}" '
                        f'stroke="{color}"><title>{html.escape(stage["stage"])} {html.escape(e["path"])}: '
                        f'{e["max_abs"]:.3g} ({e["status"]})</title></circle>')
        body.append(f'<rect x="{left + plot_w + 12}" y="{top + 14 * k}" width="10" height="10" fill="{color}"/>')
        body.append(_text(left + plot_w + 26, top + 14 * k + 9, stage["stage"], 10))
    return _svg(width, height, body, "max |Δ| along the network")


# ------------------------------------------------------------------------------------------------ page data


def _merged_profile(outputs: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    profiles = [o["profile"] for o in outputs if o.get("profile")]
    if not profiles:
        return None
    counts = np.sum([p["counts"] for p in profiles], axis=0)
    return {"log10_edges": profiles[0]["log10_edges"], "counts": [int(c) for c in counts]}


def _distribution_plots(stages: Sequence[Mapping[str, Any]]) -> list[Markup]:
    plots = []
    for stage in stages:
        merged = _merged_profile(stage.get("outputs", []))
        if merged is not None:
            atol = min((o["atol"] for o in stage["outputs"]), default=None)
            plots.append(histogram_svg(merged, atol, f"{stage['name']}: |Δ| per element"))
    return plots


def _scatter_plots(stages: Sequence[Mapping[str, Any]]) -> list[Markup]:
    """For each output, the stage where it is furthest from the reference."""
    worst: dict[str, tuple[float, str, Mapping[str, Any]]] = {}
    for stage in stages:
        for out in stage.get("outputs", []):
            if out.get("profile") and out["profile"].get("scatter"):
                err = out.get("max_abs") or 0.0
                if out["name"] not in worst or err > worst[out["name"]][0]:
                    worst[out["name"]] = (err, stage["name"], out)
    return [scatter_svg(out["profile"]["scatter"], f"{name} in {stage_name}")
            for name, (_, stage_name, out) in worst.items()]


def _timing_plot(stages: Sequence[Mapping[str, Any]]) -> Markup | None:
    items = [(s["name"], float(s.get("seconds") or 0.0)) for s in stages if s["status"] != Status.SKIPPED.value]
    if not items:
        return None
    return bars_svg(items, "s", "time per stage", [STATUS_COLORS.get(s["status"], "#1f77b4") for s in stages
                                                   if s["status"] != Status.SKIPPED.value])


def model_summary(report: Mapping[str, Any], web: Mapping[str, Any] | None) -> dict[str, Any]:
    """Parameters, sizes, op histogram, Transpose count and quantization, from the report and the web model."""
    graph = next((s for s in report.get("stages", []) if s["name"] == "tfjs-graph"), None)
    extra = (graph or {}).get("extra", {})
    ops = dict((web or {}).get("ops") or extra.get("opHistogram") or {})
    weights = (web or {}).get("weights") or {}
    return {"parameters": report.get("model", {}).get("parameters"),
            "weight_bytes": weights.get("bytes", extra.get("weightBytes")),
            "weight_count": weights.get("count", extra.get("weightCount")),
            "bytes_by_dtype": weights.get("bytesByDtype", extra.get("bytesByDtype")) or {},
            "model_json_bytes": extra.get("modelJsonBytes"), "shards": extra.get("shards", len((web or {}).get(
                "shards", []) or [])) or None,
            "ops": sorted(ops.items(), key=lambda kv: (-kv[1], kv[0])), "transposes": ops.get("Transpose", 0),
            "quantization": (web or {}).get("quantization") or {},
            "quantize_option": report.get("options", {}).get("quantize") or []}


def _web_summary(web_model: Path | None) -> dict[str, Any] | None:
    if web_model is None or not (Path(web_model) / "model.json").is_file():
        return None
    from bridge.errors import BridgeError
    from bridge.tfjs.inspect import inspect_web_model

    try:
        return inspect_web_model(web_model)
    except BridgeError:
        return None


def render_html(report: Mapping[str, Any], web_summary: Mapping[str, Any] | None = None) -> str:
    """report.html's text from report.json's content (and `bridge inspect`'s summary of the web model, if any)."""
    from bridge.util.templating import render  # Jinja2 only when a page is written

    stages = list(report.get("stages", []))
    summary = model_summary(report, web_summary)
    layers = report.get("layers") or None
    ops = [(op, float(n)) for op, n in summary["ops"] if op != "Const"]
    consts = dict(summary["ops"]).get("Const", 0)
    op_plot = bars_svg(ops[:16], "", f"ops in model.json (besides {consts} Const)") if ops else None
    return render("report.html.j2", report=report, stages=stages, layers=layers, summary=summary,
                  symbols={s.value: s.symbol for s in Status}, colors=STATUS_COLORS, fmt=fmt,
                  distribution_plots=_distribution_plots(stages), scatter_plots=_scatter_plots(stages),
                  layer_plot=layer_curve_svg(layers) if layers else None, timing_plot=_timing_plot(stages),
                  op_plot=op_plot, human_bytes=_human_bytes, stage_max_abs=stage_max_abs)


def _human_bytes(count: int | None) -> str:
    if count is None:
        return "–"
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{count} B"


def write_html_report(report: Mapping[str, Any], folder: Path, web_model: Path | None = None) -> Path:
    """Write ``folder/report.html``; `web_model` (default ``folder/web_model``) adds the op histogram and
    quantization from the model itself. Returns the path."""
    web = _web_summary(web_model if web_model is not None else Path(folder) / "web_model")
    path = Path(folder) / "report.html"
    path.write_text(render_html(report, web))
    return path
