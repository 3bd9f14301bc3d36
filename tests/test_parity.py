"""Parity metrics and verdicts: each case states the arrays, the tolerance and the status it must get."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.parity.metrics import Tolerance, compare_output, compare_outputs
from bridge.stages.result import Status, worst_status

TOL = Tolerance(atol=1e-4, rtol=1e-3)
REF = np.linspace(-2.0, 2.0, 50, dtype=np.float32).reshape(5, 10)

CASES = [
    # (id, actual, expected, status)
    ("identical", REF, REF, Status.PASS),
    ("tiny-noise", REF + 5e-5, REF, Status.PASS),
    ("beyond-atol-but-close", REF + 3e-3, REF, Status.INACCURATE),
    ("scrambled", REF[::-1].copy(), REF, Status.FAIL),
    ("nan-appears", np.where(REF > 1.9, np.nan, REF), REF, Status.FAIL),
    ("inf-sign-flip", np.array([np.inf], np.float32), np.array([-np.inf], np.float32), Status.FAIL),
    ("both-inf", np.array([np.inf, 1.0]), np.array([np.inf, 1.0]), Status.PASS),
    ("shape-mismatch", REF.T, REF, Status.FAIL),
    ("zeros", np.zeros(4), np.zeros(4), Status.PASS),
    ("int-exact", np.arange(6), np.arange(6), Status.PASS),
    ("int-off-by-one", np.arange(6) + np.eye(1, 6, 2, dtype=int)[0], np.arange(6), Status.FAIL),
]


@pytest.mark.parametrize("actual, expected, status", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_verdicts(actual: np.ndarray, expected: np.ndarray, status: Status) -> None:
    assert compare_output("y", [actual], [expected], TOL).status is status


def test_metrics_values() -> None:
    result = compare_output("y", [REF + 1e-3], [REF], TOL)
    assert result.max_abs == pytest.approx(1e-3, rel=1e-3)
    assert result.mean_abs == pytest.approx(1e-3, rel=1e-3)
    assert result.cosine > 0.9999
    assert (result.atol, result.rtol) == (1e-4, 1e-3)


def test_relative_error_is_guarded_near_zero() -> None:
    expected = np.array([1e-9, 1.0, -1.0])
    result = compare_output("y", [expected + 1e-6], [expected], TOL)
    assert result.max_rel < 1e-3  # without the floor, 1e-6 / 1e-9 would report 1000


def test_top1_agreement_for_logits() -> None:
    logits = np.array([[0.0, 1.0, 0.5], [2.0, 0.0, 0.1]])
    flipped = np.array([[0.0, 1.0, 0.5], [0.0, 2.0, 0.1]])
    assert compare_output("y", [logits], [logits], TOL).top1_agreement == 1.0
    assert compare_output("y", [flipped], [logits], TOL).top1_agreement == 0.5


def test_several_samples_and_missing_output() -> None:
    expected = [{"a": REF, "b": REF}, {"a": REF * 2, "b": REF}]
    actual = [{"a": REF, "b": REF}, {"a": REF * 2}]
    results = {r.name: r.status for r in compare_outputs(actual, expected, TOL)}
    assert results == {"a": Status.PASS, "b": Status.FAIL}


def test_worst_status_order() -> None:
    assert worst_status([Status.PASS, Status.SKIPPED]) is Status.SKIPPED
    assert worst_status([Status.INACCURATE, Status.SKIPPED, Status.PASS]) is Status.INACCURATE
    assert worst_status([Status.FAIL, Status.INACCURATE]) is Status.FAIL
    assert worst_status([]) is Status.PASS
