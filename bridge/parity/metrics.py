"""Parity metrics: how far a stage's outputs are from the reference, and the verdict with the tolerances used.

Relative error is guarded near zero: each element's |Δ| is divided by max(|ref|, floor) where the floor is 1% of the
reference's root-mean-square (and at least 1e-12), so near-zero reference values cannot make it explode. The verdict
is `np.allclose` semantics per element (|Δ| <= atol + rtol·|ref|), on every sample input at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bridge.stages.result import OutputParity, Status

# Below this cosine similarity an output that is out of tolerance is called broken (fail), not merely inaccurate.
FAIL_COSINE = 0.99


@dataclass(frozen=True)
class Tolerance:
    """Absolute and relative tolerance of one check."""

    atol: float
    rtol: float

    def widened(self, atol: float = 0.0, rtol: float = 0.0) -> "Tolerance":
        """This tolerance loosened by the given amounts (never tightened)."""
        return Tolerance(max(self.atol, atol), max(self.rtol, rtol))


DEFAULT_TOLERANCE = Tolerance(atol=1e-4, rtol=1e-3)
HIST_LOW, HIST_HIGH, HIST_STEP = -10.0, 2.0, 0.5  # log10 |Δ| bins of the error distribution (report.html)
SCATTER_POINTS = 240
WORST_POINTS = 16


def compare_output(name: str, actual: Sequence[np.ndarray], expected: Sequence[np.ndarray],
                   tol: Tolerance) -> OutputParity:
    """Compare one output over several sample inputs (lists of equal length) and give its parity and status."""
    if len(actual) != len(expected):
        return _failed(name, tol, f"{len(actual)} results for {len(expected)} sample inputs")
    for got, want in zip(actual, expected):
        if np.shape(got) != np.shape(want):
            return _failed(name, tol, f"shape {list(np.shape(got))} where the reference has {list(np.shape(want))}")
    got = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in actual]) if actual else np.zeros(0)
    want = np.concatenate([np.asarray(e, dtype=np.float64).ravel() for e in expected]) if expected else np.zeros(0)
    top1 = _top1_agreement(actual, expected)
    if expected and not np.issubdtype(np.asarray(expected[0]).dtype, np.floating):
        tol = Tolerance(0.0, 0.0)  # integer and bool outputs (argmax, masks) must match exactly
    return _compare_flat(name, got, want, tol, top1)


def _compare_flat(name: str, got: np.ndarray, want: np.ndarray, tol: Tolerance,
                  top1: float | None) -> OutputParity:
    nan_mismatch = int(np.count_nonzero(np.isnan(got) != np.isnan(want)))
    inf_mismatch = int(np.count_nonzero((np.isinf(got) != np.isinf(want))
                                        | (np.isinf(want) & (np.sign(got) != np.sign(want)))))
    finite = np.isfinite(got) & np.isfinite(want)
    diff = np.abs(got[finite] - want[finite])
    ref = np.abs(want[finite])
    if diff.size == 0:
        metrics = (0.0, 0.0, 0.0, 1.0)
        within = True
    else:
        floor = max(1e-12, 0.01 * float(np.sqrt(np.mean(ref * ref))))
        metrics = (float(diff.max()), float((diff / np.maximum(ref, floor)).max()), float(diff.mean()),
                   _cosine(got[finite], want[finite]))
        within = bool(np.all(diff <= tol.atol + tol.rtol * ref))
    status = _verdict(within, metrics[3], nan_mismatch + inf_mismatch, exact=tol.atol == tol.rtol == 0.0)
    message = None if status is Status.PASS else _explain(metrics[0], tol, nan_mismatch, inf_mismatch)
    return OutputParity(name=name, status=status, max_abs=metrics[0], max_rel=metrics[1], mean_abs=metrics[2],
                        cosine=metrics[3], atol=tol.atol, rtol=tol.rtol, nan_mismatch=nan_mismatch,
                        inf_mismatch=inf_mismatch, top1_agreement=top1, message=message,
                        profile=error_profile(got, want))


def _verdict(within: bool, cosine: float, special_mismatch: int, exact: bool) -> Status:
    if special_mismatch:
        return Status.FAIL
    if within:
        return Status.PASS
    return Status.INACCURATE if cosine >= FAIL_COSINE and not exact else Status.FAIL


def _explain(max_abs: float, tol: Tolerance, nan_mismatch: int, inf_mismatch: int) -> str:
    parts = []
    if nan_mismatch or inf_mismatch:
        parts.append(f"{nan_mismatch} NaN and {inf_mismatch} Inf elements differ from the reference")
    parts.append(f"max |Δ| {max_abs:.3g} exceeds atol {tol.atol:g} + rtol {tol.rtol:g}·|ref|")
    return "; ".join(parts)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def _top1_agreement(actual: Sequence[np.ndarray], expected: Sequence[np.ndarray]) -> float | None:
    """Share of rows whose argmax agrees, for classifier-like outputs (float, 2-D, at least 2 classes)."""
    if not expected or any(np.ndim(e) != 2 or np.shape(e)[1] < 2 for e in expected):
        return None
    if not all(np.issubdtype(np.asarray(e).dtype, np.floating) for e in expected):
        return None
    hits = [np.argmax(a, axis=1) == np.argmax(e, axis=1) for a, e in zip(actual, expected)]
    joined = np.concatenate(hits)
    return float(joined.mean()) if joined.size else None


def _failed(name: str, tol: Tolerance, message: str) -> OutputParity:
    return OutputParity(name=name, status=Status.FAIL, max_abs=None, max_rel=None, mean_abs=None, cosine=None,
                        atol=tol.atol, rtol=tol.rtol, message=message)


def compare_outputs(actual: Sequence[Mapping[str, np.ndarray]], expected: Sequence[Mapping[str, np.ndarray]],
                    tol: Tolerance) -> list[OutputParity]:
    """Compare every output by name over every sample input; an output missing from `actual` fails."""
    results = []
    for name in expected[0] if expected else []:
        if any(name not in a for a in actual) or len(actual) != len(expected):
            results.append(_failed(name, tol, "output missing from this stage's results"))
            continue
        results.append(compare_output(name, [a[name] for a in actual], [e[name] for e in expected], tol))
    return results


def error_profile(got: np.ndarray, want: np.ndarray) -> dict[str, Any]:
    """A compact picture of one output's errors (flat arrays over every sample): a histogram of log10 |Δ| and up to
    SCATTER_POINTS (reference, actual) pairs, evenly strided plus the worst ones. Small enough for report.json."""
    got64, want64 = np.asarray(got, np.float64).ravel(), np.asarray(want, np.float64).ravel()
    finite = np.isfinite(got64) & np.isfinite(want64)
    diff = np.abs(got64[finite] - want64[finite])
    edges = np.arange(HIST_LOW, HIST_HIGH + HIST_STEP / 2, HIST_STEP)
    logs = np.log10(np.maximum(diff, 10.0 ** HIST_LOW))
    counts, _ = np.histogram(np.clip(logs, HIST_LOW, HIST_HIGH - 1e-9), bins=edges)
    index = np.flatnonzero(finite)
    stride = max(1, index.size // SCATTER_POINTS)
    picked = set(index[::stride][:SCATTER_POINTS].tolist())
    if diff.size:
        picked |= set(index[np.argsort(diff)[-WORST_POINTS:]].tolist())
    chosen = sorted(picked)
    return {"log10_edges": [float(e) for e in edges], "counts": [int(c) for c in counts], "exact": int((diff == 0).sum()),
            "scatter": [[_short_float(want64[i]), _short_float(got64[i])] for i in chosen]}


def _short_float(value: float) -> float:
    return float(f"{value:.6g}")
