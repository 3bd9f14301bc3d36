"""Splits of constant weights stored as their pieces (bridge/tfjs/const_splits.py): table cases, each run in
TensorFlow before and after the pass (outputs must be equal bit for bit), and a must-fail twin whose pieces come
out in the wrong order. End to end through TF.js: the `split_weight_columns` case of tests/test_tfjs_table.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from bridge.tfjs import const_splits  # noqa: E402
from bridge.tfjs.const_splits import fold_const_splits, has_const_splits, split_pieces  # noqa: E402

W = np.arange(48, dtype=np.float32).reshape(4, 12) * 0.5 - 3.0


@dataclass(frozen=True)
class SplitCase:
    id: str
    fn: Callable[[Any], Any]  # x [2, 4] -> output; the weights are tf.constant inside
    folded: int  # splits the pass folds


def _w() -> Any:
    return tf.constant(W)


CASES = [
    SplitCase("even-columns", lambda x: tf.concat([tf.matmul(x, w) for w in tf.split(_w(), 3, axis=1)], 1), 1),
    SplitCase("negative-axis-rows", lambda x: tf.concat([tf.matmul(x[:, :2], w) for w in tf.split(_w(), 2, axis=-2)],
                                                        1), 1),
    SplitCase("uneven-sizes-with-rest", lambda x: tf.concat(
        [tf.matmul(x, w) for w in tf.split(_w(), [2, -1, 5], axis=1)], 1), 1),
    SplitCase("through-identity", lambda x: tf.concat(
        [tf.matmul(x, w) for w in tf.split(tf.identity(tf.identity(_w())), 4, axis=1)], 1), 1),
    SplitCase("activation-split-stays", lambda x: tf.concat([a * 2.0 for a in tf.split(x, 2, axis=1)][::-1], 1), 0),
]


def _graph(fn: Callable[[Any], Any]) -> Any:
    concrete = tf.function(fn, input_signature=[tf.TensorSpec([2, 4], tf.float32, name="x")]).get_concrete_function()
    return concrete.graph.as_graph_def(), concrete.outputs[0].name


def _run(graph_def: Any, output: str, x: np.ndarray) -> np.ndarray:
    def body() -> None:
        tf.compat.v1.import_graph_def(graph_def, name="")
    wrapped = tf.compat.v1.wrap_function(body, [])
    fn = wrapped.prune(wrapped.graph.get_tensor_by_name("x:0"), wrapped.graph.get_tensor_by_name(output))
    return fn(tf.constant(x)).numpy()


X = np.random.default_rng(3).standard_normal((2, 4)).astype(np.float32)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_split_case(case: SplitCase) -> None:
    graph_def, output = _graph(case.fn)
    want = _run(graph_def, output, X)
    assert has_const_splits(graph_def) is bool(case.folded)
    assert fold_const_splits(graph_def, {"x", output.split(":")[0]}) == case.folded
    np.testing.assert_array_equal(_run(graph_def, output, X), want)
    splits = [n for n in graph_def.node if n.op in ("Split", "SplitV")]
    assert (not splits) is bool(case.folded), [n.name for n in splits]


def test_pieces_match_numpy() -> None:
    assert [p.shape for p in split_pieces(W, 1, 3, [2, -1, 5])] == [(4, 2), (4, 5), (4, 5)]
    np.testing.assert_array_equal(np.concatenate(split_pieces(W, 0, 2, None), 0), W)


def test_pieces_in_wrong_order_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Must-fail twin: pieces written in reverse order give other numbers, which the same comparison sees."""
    graph_def, output = _graph(CASES[0].fn)
    want = _run(graph_def, output, X)
    monkeypatch.setattr(const_splits, "split_pieces", lambda *a: split_pieces(*a)[::-1])
    fold_const_splits(graph_def)
    assert not np.array_equal(_run(graph_def, output, X), want)
