"""bridge.tfjs.zero_blocks: which weights are stored without their zero blocks and how they split, and a must-fail
twin of the table case `zero_block_weight` (tests/test_tfjs_table.py): a plan that drops values that are not zero
gives TF.js numbers far from TensorFlow's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.tfjs import zero_blocks
from bridge.tfjs.zero_blocks import Band, Part, zero_block_plan


def _blocky(rows: int = 256, cols: int = 512, zero_cols: int = 96) -> np.ndarray:
    w = np.random.default_rng(0).normal(size=(rows, cols)).astype(np.float32)
    for start in range(0, cols, 128):
        w[rows // 2:, start:start + zero_cols] = 0.0
    return w


PLAN_CASES = [
    ("dense", np.random.default_rng(1).normal(size=(256, 512)).astype(np.float32), None),
    ("too small", _blocky(16, 128, 96), None),  # 8 x 96 zeros: 3 KiB
    ("zeros too narrow", _blocky(256, 512, 4), None),
    ("too little saved", _blocky(256, 512, 40), None),  # 4 x 40 of 512 columns on half the rows: 15.6%
    ("float64", _blocky().astype(np.float64), None),
    ("rank 3", _blocky().reshape(2, 128, 512), None),
]


@pytest.mark.parametrize(("name", "array", "want"), PLAN_CASES, ids=[c[0] for c in PLAN_CASES])
def test_weights_left_stored(name: str, array: np.ndarray, want: Any) -> None:
    assert zero_block_plan(array) is want


def test_block_weight_plan() -> None:
    """Two bands: the upper half one stored part, the lower half zero runs between stored runs."""
    plan = zero_block_plan(_blocky())
    assert plan is not None and len(plan) == 2
    assert plan[0] == Band(0, 128, (Part(0, 512, False),))
    lower = plan[1]
    assert (lower.start, lower.stop) == (128, 256)
    assert [(p.start, p.stop, p.zero) for p in lower.parts][:3] == [(0, 96, True), (96, 128, False), (128, 224, True)]


def test_negative_zero_stays_stored() -> None:
    """-0.0 is not taken for 0.0: its row is a band of its own and its column stays a stored part."""
    w = _blocky()
    w[200, 10] = -0.0
    plan = zero_block_plan(w)
    assert plan is not None
    row = next(b for b in plan if b.start <= 200 < b.stop)
    assert (row.start, row.stop) == (200, 201)
    assert any(not p.zero and p.start <= 10 < p.stop for p in row.parts)


@pytest.mark.node
def test_dropping_nonzero_values_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Must-fail twin: a plan that takes 0.01 for zero writes a model TF.js runs to other numbers."""
    tf = pytest.importorskip("tensorflow")
    from bridge.runtime.node import node_status, run_graph_model
    from bridge.tfjs.convert import TfjsOptions, convert_saved_model
    from tests.test_tfjs_table import block_weight

    if not node_status().ok:
        pytest.skip("Node harness unavailable")
    weight = block_weight()
    weight[128:, 96:128] = 0.01  # a stored run between two zero blocks: small, not zero
    module = tf.Module()
    module.w = tf.Variable(weight)
    module.f = tf.function(lambda x: tf.matmul(x, module.w), input_signature=[tf.TensorSpec([None, 256], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": module.f})
    x = np.ones((1, 256), np.float32)
    want = x @ weight
    monkeypatch.setattr(zero_blocks, "zero_mask", lambda a: (a == 0) | (a == np.float32(0.01)))
    convert_saved_model(tmp_path / "sm", tmp_path / "web", TfjsOptions())
    got = run_graph_model(tmp_path / "web", [{"x": x}], backends=["wasm"])["wasm"].outputs[0]
    assert np.abs(next(iter(got.values())) - want).max() > 1.0  # 128 rows x 0.01 lost in 32 columns
