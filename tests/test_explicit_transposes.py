"""Transposed activation operands of matmuls as explicit Transposes (bridge/tfjs/explicit_transposes.py): table
cases run in TensorFlow before and after the pass (equal outputs, no flag left on a computed operand, a weight's
flag kept), and a must-fail twin with a wrong permutation. End to end through grappler and TF.js: the
`matmul_by_transposed_activation` case of tests/test_tfjs_table.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from bridge.tfjs import explicit_transposes as et  # noqa: E402

W = np.random.default_rng(4).standard_normal((5, 5)).astype(np.float32)


@dataclass(frozen=True)
class FlagCase:
    id: str
    fn: Callable[[Any, Any], Any]  # a [5, 5], b [5, 5] -> output
    added: int  # Transposes the pass adds
    kept_flags: int  # flags left (on Const operands)


CASES = [
    FlagCase("transpose-b", lambda a, b: tf.matmul(a, b, transpose_b=True), 1, 0),
    FlagCase("transpose-a", lambda a, b: tf.matmul(a, b, transpose_a=True), 1, 0),
    FlagCase("both", lambda a, b: tf.matmul(a, b, transpose_a=True, transpose_b=True), 2, 0),
    FlagCase("weight-keeps-its-flag", lambda a, b: tf.matmul(a, tf.constant(W), transpose_b=True), 0, 1),
    FlagCase("no-flags", lambda a, b: tf.matmul(a, b), 0, 0),
]


def _graph(fn: Callable[[Any, Any], Any]) -> tuple[Any, str]:
    specs = [tf.TensorSpec([5, 5], tf.float32, name="a"), tf.TensorSpec([5, 5], tf.float32, name="b")]
    concrete = tf.function(fn, input_signature=specs).get_concrete_function()
    return concrete.graph.as_graph_def(), concrete.outputs[0].name


def _run(graph_def: Any, output: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    def body() -> None:
        tf.compat.v1.import_graph_def(graph_def, name="")
    wrapped = tf.compat.v1.wrap_function(body, [])
    get = wrapped.graph.get_tensor_by_name
    return wrapped.prune([get("a:0"), get("b:0")], get(output))(tf.constant(a), tf.constant(b)).numpy()


RNG = np.random.default_rng(5)
A, B = (RNG.standard_normal((5, 5)).astype(np.float32) for _ in range(2))


def _flags(graph_def: Any) -> int:
    return sum(1 for n in graph_def.node if n.op in et.MATMUL_OPS for f, _ in et.FLAGS if n.attr[f].b)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_flag_case(case: FlagCase) -> None:
    graph_def, output = _graph(case.fn)
    want = _run(graph_def, output, A, B)
    before = sum(1 for n in graph_def.node if n.op == "Transpose")
    assert et.explicit_transposes(graph_def) == case.added
    np.testing.assert_allclose(_run(graph_def, output, A, B), want, rtol=1e-6, atol=1e-6)
    assert sum(1 for n in graph_def.node if n.op == "Transpose") - before == case.added
    assert not et.flagged_operands(graph_def)
    assert _flags(graph_def) == case.kept_flags


def test_wrong_permutation_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Must-fail twin: an identity 'transpose' leaves b untransposed, and the comparison sees it."""
    graph_def, output = _graph(CASES[0].fn)
    want = _run(graph_def, output, A, B)
    monkeypatch.setattr(et, "SWAP", (0, 1))
    et.explicit_transposes(graph_def)
    assert not np.allclose(_run(graph_def, output, A, B), want, rtol=1e-6, atol=1e-6)
