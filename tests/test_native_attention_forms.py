"""The forms bridge writes scaled_dot_product_attention in for TF.js's wasm backend (bridge/native/ops/attention.py):
one plain matmul per head instead of a batch matmul over heads, and masks added as a bias instead of selected with
tf.where. The table cases in tests/native_op_cases/attention.py prove them exact; here: the graph really has the
fast form (no Tile-ing Select, no batch matmul over heads, no adjoint flag), and must-fail twins: a per-head form
that puts heads back in the wrong order, or a mask bias that does not mask, is caught by the same comparison."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bridge.native import rebuild_tf
from bridge.native.ops import attention
from tests.native_op_cases.attention import PROJECTED_CASES, CausalHeads, PaddedHeads, ProjectedAttention

SOURCE = {"in0": "source", "in1": "source", "in2": "source"}


def _inputs(shapes: list[tuple[int, ...]], ints: tuple[int, ...] = ()) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    out = [torch.randint(0, 4, s, generator=gen) if i in ints else torch.randn(s, generator=gen)
           for i, s in enumerate(shapes)]
    if ints:  # at least one kept key per row and at least one padded key
        out[ints[0]][..., 0], out[ints[0]][..., -1] = 1, 0
    return out


def _rebuild(module: torch.nn.Module, inputs: list[torch.Tensor], tmp: Path) -> tuple[np.ndarray, np.ndarray, object]:
    names = [f"in{i}" for i in range(len(inputs))]
    result = rebuild_tf(module, inputs, tmp, input_names=names, input_layouts=SOURCE)
    with torch.no_grad():
        expected = module(*inputs).numpy()
    return result.run_torch_layout(*[t.numpy() for t in inputs])[0], expected, result


def _graph_ops(result: object) -> list[object]:
    graph = result.model.__call__.get_concrete_function().graph.as_graph_def()  # type: ignore[attr-defined]
    return list(graph.node)


PADDED = ([(1, 4, 7, 8), (1, 4, 7, 8), (1, 4, 7, 6), (1, 7)], (3,))


def test_per_head_form_has_no_slow_ops(tmp_path: Path) -> None:
    got, expected, result = _rebuild(PaddedHeads().eval(), _inputs(*PADDED), tmp_path)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-4)
    nodes = _graph_ops(result)
    ops = [n.op for n in nodes]
    assert "SelectV2" not in ops and "Select" not in ops, "the mask must be a bias (TF.js's where Tiles)"
    matmuls = [n for n in nodes if n.op in ("BatchMatMulV2", "BatchMatMul", "BatchMatMulV3")]
    assert len(matmuls) == 2 * 4, f"one scores and one values matmul per head: {len(matmuls)}"
    assert not any(n.attr["adj_x"].b or n.attr["adj_y"].b for n in matmuls), "an adjoint flag (wasm's slow path)"


def test_wrong_head_order_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Must-fail twin: heads taken (and so concatenated back) in reverse order."""

    monkeypatch.setattr(attention, "_heads", lambda x, heads: f"tf.split({x}, {heads})[::-1]")
    got, expected, _ = _rebuild(PaddedHeads().eval(), _inputs(*PADDED), tmp_path)
    assert not np.allclose(got, expected, atol=1e-5, rtol=1e-4)


def test_non_masking_bias_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Must-fail twin: a mask bias too small to mask (-1 instead of -1e30) changes the padded rows' weights."""
    monkeypatch.setattr(attention, "_MASK_BIAS", "-1.0")
    got, expected, _ = _rebuild(PaddedHeads().eval(), _inputs(*PADDED), tmp_path / "pad")
    assert not np.allclose(got, expected, atol=1e-5, rtol=1e-4)
    inputs = _inputs([(2, 3, 6, 8)] * 3)
    got, expected, _ = _rebuild(CausalHeads().eval(), inputs, tmp_path / "causal")
    assert not np.allclose(got, expected, atol=1e-5, rtol=1e-4)


def test_batch_matmul_form_stays_for_many_heads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Above MAX_SPLIT_HEADS (here set to 2) the one-batch-matmul form is written, and is exact too."""
    monkeypatch.setattr(attention, "MAX_SPLIT_HEADS", 2)
    got, expected, result = _rebuild(PaddedHeads().eval(), _inputs(*PADDED), tmp_path)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-4)
    assert sum(1 for n in _graph_ops(result) if n.op.startswith("BatchMatMul")) == 2



class ConstantMaskHeads(torch.nn.Module):
    """transformers 5.x style: a mask built from an arange alone (`arange(n) >= lowest`), expanded per batch.
    With lowest 0 it allows every key; with lowest 3 it hides the first three queries' keys entirely."""

    def __init__(self, lowest: int) -> None:
        super().__init__()
        self.lowest = lowest

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        n = q.shape[-2]
        allowed = (torch.arange(n) >= self.lowest)[None, None, :, None].expand(1, 1, n, k.shape[-2])
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed)


CONSTANT_MASK_CASES = [
    # (lowest, the mask is dropped: no bias Add feeds the softmaxes, no zeroing of rows without a key)
    (0, True),
    (3, False),  # twin: a constant mask that hides something must stay
]


@pytest.mark.parametrize("lowest, dropped", CONSTANT_MASK_CASES)
def test_constant_mask_that_hides_nothing_is_dropped(tmp_path: Path, lowest: int, dropped: bool) -> None:
    inputs = _inputs([(1, 4, 7, 8), (1, 4, 7, 8), (1, 4, 7, 6)])
    got, expected, result = _rebuild(ConstantMaskHeads(lowest).eval(), inputs, tmp_path)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-4)
    ops = [n.op for n in _graph_ops(result)]
    assert ("Any" not in ops) is dropped, f"row fix-up (reduce_any of the mask) present: {'Any' in ops}"


# Heads from the projections (bridge/native/ops/attention.py, module doc): which cases get the form, that the web
# model then has no Split, no batch matmul and no transpose flag on a computed operand, and a must-fail twin.
PROJECTED_FORM = {case_id: not case_id.endswith(("read-elsewhere", "batch-2")) for case_id, *_ in PROJECTED_CASES}



def _rebuild_case(case_id: str, tmp: Path) -> tuple[np.ndarray, np.ndarray, object]:
    _, kw, shapes, ints, layouts, dynamic = next(c for c in PROJECTED_CASES if c[0] == case_id)
    torch.manual_seed(0)
    module = ProjectedAttention(**kw).eval()
    inputs = _inputs(shapes, ints)
    names = [f"in{i}" for i in range(len(inputs))] if len(inputs) > 1 else ["x"]
    result = rebuild_tf(module, inputs, tmp, input_names=names, input_layouts=layouts, dynamic_dims=dynamic or None)
    with torch.no_grad():
        expected = module(*inputs).numpy()
    return result.run_torch_layout(*[t.numpy() for t in inputs])[0], expected, result


@pytest.mark.parametrize("case_id", sorted(PROJECTED_FORM))
def test_projected_form_is_used_where_it_applies(case_id: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = attention._per_head_projected
    monkeypatch.setattr(attention, "_per_head_projected", lambda *a: calls.append(1) or real(*a))
    got, expected, _ = _rebuild_case(case_id, tmp_path)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-4)
    assert bool(calls) is PROJECTED_FORM[case_id]


@pytest.mark.node
def test_projected_web_model_has_no_splits_or_flags(tmp_path: Path) -> None:
    from bridge.tfjs.convert import TfjsOptions, convert_saved_model
    from bridge.tfjs.explicit_transposes import flagged_operands
    from bridge.tfjs.reader import read_web_model

    _, _, result = _rebuild_case("sdpa-projected-padding-mask", tmp_path / "tf")
    convert_saved_model(result.saved_model_dir, tmp_path / "web", TfjsOptions())  # type: ignore[attr-defined]
    graph = read_web_model(tmp_path / "web").graph_def
    ops = [n.op for n in graph.node]
    assert not {"Split", "SplitV", "BatchMatMulV2", "BatchMatMul"} & set(ops), sorted(set(ops))
    assert not flagged_operands(graph)
    assert ops.count("Transpose") == 3, "one per head's key, and no head Transposes"
    assert ops.count("_FusedMatMul") == 3 * 3 + 1, "each head's q, k and v, and the output projection"
    reads = [n for n in graph.node if n.op == "Reshape" and n.input[0] == "in0"]
    assert len(reads) == 1, "the input made [S, E] once for q, k and v"


def test_projected_heads_in_wrong_order_are_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Must-fail twin: the value heads taken in reverse order put each head's result in another head's columns."""
    real = attention._projected_heads

    def reversed_values(ctx: object, projection: object, x: str, hint: str, **kw: bool) -> str:
        heads = real(ctx, projection, x, hint, **kw)  # type: ignore[arg-type]
        return ctx.let(f"{heads}[::-1]", f"{hint}_reversed") if hint == "value" else heads  # type: ignore[attr-defined]

    monkeypatch.setattr(attention, "_projected_heads", reversed_values)
    got, expected, _ = _rebuild_case("sdpa-projected-padding-mask", tmp_path)
    assert not np.allclose(got, expected, atol=1e-5, rtol=1e-4)
