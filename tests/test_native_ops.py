"""Native route, op by op: each case is a tiny PyTorch module rebuilt as generated TF source and compared with
PyTorch on the same inputs (atol 1e-5 / rtol 1e-4 unless the case says why not). Also: the weight transforms,
the layout pass on its own, and coverage (every built-in converter has a case)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from bridge.native import BUILTINS, fold, rebuild_tf
from bridge.native.ir import FlatBlock, Layout
from bridge.native.layout import RELAYOUT, apply_steps, conversion_steps
from bridge.native.registry import load_builtins
from bridge.native import weights as W
from tests.native_op_cases import EXTRA_CASES
from tests.native_op_cases.base import ATOL, RTOL, A, IMG, Fn, OpCase, Rnn, WithParam, bn

load_builtins()

CORE_CASES = [
    # convolutions
    OpCase("conv2d", lambda: nn.Conv2d(4, 6, 3), [IMG], (A + "conv2d.default",), max_transposes=0),
    OpCase("conv2d-stride-pad", lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1), [IMG], (A + "conv2d.default",)),
    OpCase("conv2d-dilated", lambda: nn.Conv2d(4, 6, 3, padding=2, dilation=2), [IMG], (A + "conv2d.default",)),
    OpCase("conv2d-grouped", lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2), [IMG], (A + "conv2d.default",)),
    OpCase("conv2d-depthwise", lambda: nn.Conv2d(4, 8, 3, padding=1, groups=4, bias=False), [IMG],
           (A + "conv2d.default",)),
    OpCase("conv2d-depthwise-stride", lambda: nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4), [IMG],
           (A + "conv2d.default",)),
    OpCase("conv2d-same-even-kernel", lambda: nn.Conv2d(4, 6, 4, padding="same"), [IMG], (A + "conv2d.padding",)),
    OpCase("conv2d-rect", lambda: nn.Conv2d(4, 6, (1, 3), stride=(2, 1), padding=(0, 1)), [IMG],
           (A + "conv2d.default",)),
    OpCase("conv2d-nchw-input", lambda: nn.Conv2d(4, 6, 3, padding=1), [IMG], (A + "conv2d.default",),
           layouts={"x": "nchw"}),
    OpCase("pad-asymmetric-then-conv", lambda: nn.Sequential(Fn(lambda x: F.pad(x, (1, 2, 0, 1))),
                                                             nn.Conv2d(4, 6, 3)), [IMG],
           (A + "constant_pad_nd.default", A + "conv2d.default"), max_transposes=0),
    OpCase("conv1d", lambda: nn.Conv1d(4, 6, 3, padding=1), [(2, 4, 10)], (A + "conv1d.default",)),
    OpCase("conv1d-depthwise", lambda: nn.Conv1d(4, 8, 3, stride=2, groups=4), [(2, 4, 10)],
           (A + "conv1d.default",)),
    OpCase("conv1d-grouped", lambda: nn.Conv1d(4, 6, 3, groups=2), [(2, 4, 10)], (A + "conv1d.default",)),
    OpCase("conv-transpose2d", lambda: nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1), [IMG],
           (A + "conv_transpose2d.input",)),
    OpCase("conv-transpose2d-plain", lambda: nn.ConvTranspose2d(4, 3, 2, stride=2), [IMG],
           (A + "conv_transpose2d.input",)),
    # linear algebra
    OpCase("linear", lambda: nn.Linear(5, 3), [(4, 5)], (A + "linear.default",)),
    OpCase("linear-3d", lambda: nn.Linear(5, 3), [(2, 4, 5)], (A + "linear.default",)),
    OpCase("matmul", lambda: Fn(lambda a, b: a @ b), [(2, 3, 4), (2, 4, 5)], (A + "matmul.default",)),
    OpCase("bmm", lambda: Fn(torch.bmm), [(2, 3, 4), (2, 4, 5)], (A + "bmm.default",)),
    OpCase("mm", lambda: Fn(torch.mm), [(3, 4), (4, 5)], (A + "mm.default",)),
    OpCase("addmm", lambda: Fn(lambda c, a, b: torch.addmm(c, a, b, beta=0.5, alpha=2.0)), [(5,), (3, 4), (4, 5)],
           (A + "addmm.default",)),
    # normalisation
    OpCase("batch_norm2d", lambda: bn(4), [IMG], (A + "_native_batch_norm_legit_no_training.default",)),
    OpCase("batch_norm1d", lambda: bn(5, nn.BatchNorm1d), [(3, 5)],
           (A + "_native_batch_norm_legit_no_training.default",)),
    OpCase("layer_norm", lambda: nn.LayerNorm(6), [(2, 3, 6)], (A + "layer_norm.default",)),
    OpCase("layer_norm-chw-on-nhwc", lambda: nn.LayerNorm([4, 8, 8]), [IMG], (A + "layer_norm.default",)),
    OpCase("group_norm", lambda: nn.GroupNorm(2, 4), [IMG], (A + "group_norm.default",), max_transposes=0),
    # pooling and resizing
    OpCase("max_pool2d", lambda: nn.MaxPool2d(2), [IMG], (A + "max_pool2d.default",)),
    OpCase("max_pool2d-k3s2p1", lambda: nn.MaxPool2d(3, 2, 1), [IMG], (A + "max_pool2d.default",)),
    OpCase("max_pool2d-ceil", lambda: nn.MaxPool2d(3, 2, ceil_mode=True), [(1, 2, 8, 8)],
           (A + "max_pool2d.default",)),
    OpCase("avg_pool2d", lambda: nn.AvgPool2d(2), [IMG], (A + "avg_pool2d.default",)),
    OpCase("avg_pool2d-pad-include", lambda: nn.AvgPool2d(3, 2, 1), [IMG], (A + "avg_pool2d.default",)),
    OpCase("avg_pool2d-pad-exclude", lambda: nn.AvgPool2d(3, 1, 1, count_include_pad=False), [IMG],
           (A + "avg_pool2d.default",)),
    OpCase("adaptive_avg_pool-global", lambda: nn.AdaptiveAvgPool2d(1), [IMG], (A + "adaptive_avg_pool2d.default",)),
    OpCase("adaptive_avg_pool-divisible", lambda: nn.AdaptiveAvgPool2d((4, 2)), [IMG],
           (A + "adaptive_avg_pool2d.default",)),
    OpCase("upsample-nearest", lambda: nn.Upsample(scale_factor=2, mode="nearest"), [IMG],
           (A + "upsample_nearest2d.vec",)),
    OpCase("upsample-nearest-size", lambda: Fn(lambda x: F.interpolate(x, size=(12, 16))), [IMG],
           (A + "upsample_nearest2d.vec",)),
    OpCase("upsample-bilinear", lambda: nn.Upsample(scale_factor=2, mode="bilinear"), [IMG],
           (A + "upsample_bilinear2d.vec",)),
    OpCase("upsample-bilinear-corners", lambda: nn.Upsample(size=(11, 5), mode="bilinear", align_corners=True), [IMG],
           (A + "upsample_bilinear2d.vec",)),
    OpCase("pixel_shuffle", lambda: nn.PixelShuffle(2), [(1, 8, 3, 5)], (A + "pixel_shuffle.default",),
           max_transposes=0),
    # right after a conv: one conv per output row (bridge/native/ops/conv.py, conv_rows_for_pixel_shuffle)
    OpCase("conv-pixel_shuffle", lambda: nn.Sequential(nn.Conv2d(4, 27, 3, padding=1), nn.PixelShuffle(3)),
           [(2, 4, 5, 6)], (A + "conv2d.default", A + "pixel_shuffle.default"), max_transposes=0),
    OpCase("conv-pixel_shuffle-strided-no-bias", lambda: nn.Sequential(
        nn.Conv2d(4, 12, 3, stride=2, padding=1, bias=False), nn.PixelShuffle(2)), [(1, 4, 7, 6)],
        (A + "conv2d.default", A + "pixel_shuffle.default"), max_transposes=0),
    OpCase("conv-pixel_shuffle-conv-read-twice", lambda: Fn(lambda x: (lambda y: F.pixel_shuffle(y, 2) + y.mean())(
        F.conv2d(x, torch.linspace(-1, 1, 8 * 4 * 9).reshape(8, 4, 3, 3)))), [(1, 4, 6, 5)],
        (A + "conv2d.default", A + "pixel_shuffle.default")),
    # activations
    OpCase("relu", lambda: nn.ReLU(), [IMG], (A + "relu.default",)),
    OpCase("relu6", lambda: Fn(lambda x: F.relu6(x * 4)), [IMG], (A + "relu6.default",)),
    OpCase("hardtanh", lambda: nn.Hardtanh(-0.5, 0.7), [IMG], (A + "hardtanh.default",)),
    OpCase("leaky_relu", lambda: nn.LeakyReLU(0.2), [IMG], (A + "leaky_relu.default",)),
    OpCase("elu", lambda: nn.ELU(), [IMG], (A + "elu.default",)),
    OpCase("elu-alpha", lambda: nn.ELU(alpha=0.5), [IMG], (A + "elu.default",)),
    OpCase("gelu", lambda: nn.GELU(), [IMG], (A + "gelu.default",)),
    OpCase("gelu-tanh", lambda: nn.GELU(approximate="tanh"), [IMG], (A + "gelu.default",)),
    OpCase("silu", lambda: nn.SiLU(), [IMG], (A + "silu.default",)),
    OpCase("sigmoid", lambda: nn.Sigmoid(), [IMG], (A + "sigmoid.default",)),
    OpCase("tanh", lambda: nn.Tanh(), [IMG], (A + "tanh.default",)),
    OpCase("hardswish", lambda: Fn(lambda x: F.hardswish(x * 4)), [IMG], (A + "hardswish.default",)),
    OpCase("hardsigmoid", lambda: Fn(lambda x: F.hardsigmoid(x * 4)), [IMG], (A + "hardsigmoid.default",)),
    OpCase("softmax-channels-on-nhwc", lambda: nn.Softmax(dim=1), [IMG], (A + "softmax.int",), max_transposes=0),
    OpCase("log_softmax", lambda: nn.LogSoftmax(dim=-1), [(3, 7)], (A + "log_softmax.int",)),
    OpCase("clamp", lambda: Fn(lambda x: x.clamp(-0.5, 0.5) + x.clamp(min=0.1) + x.clamp(max=-0.1)), [IMG],
           (A + "clamp.default",)),
    OpCase("dropout-eval", lambda: nn.Sequential(nn.Dropout(0.5), nn.ReLU()), [IMG], (A + "relu.default",)),
    # elementwise
    OpCase("add-sub-mul-div", lambda: Fn(lambda a, b: (a + b) * (a - b) / (b.abs() + 1.0)), [IMG, IMG],
           (A + "add.Tensor", A + "sub.Tensor", A + "mul.Tensor", A + "div.Tensor", A + "abs.default")),
    OpCase("scalar-arith", lambda: Fn(lambda x: (x + 2) * 3 - 1.5), [IMG], (A + "add.Tensor", A + "mul.Tensor")),
    OpCase("add-alpha", lambda: Fn(lambda a, b: torch.add(a, b, alpha=0.5) - torch.sub(a, b, alpha=2)),
           [IMG, IMG], (A + "add.Tensor", A + "sub.Tensor")),
    OpCase("rsub", lambda: Fn(lambda x: 1 - x), [IMG], (A + "rsub.Scalar",)),
    OpCase("broadcast-param-c11-on-nhwc", lambda: WithParam((4, 1, 1), lambda x, p: x * p + p), [IMG],
           (A + "mul.Tensor", A + "add.Tensor"), max_transposes=0),
    OpCase("broadcast-param-w-on-nhwc", lambda: WithParam((8,), lambda x, p: x + p), [IMG], (A + "add.Tensor",)),
    OpCase("broadcast-up-to-param-rank", lambda: WithParam((3, 4), lambda v, p: v * p), [(4,)], (A + "mul.Tensor",)),
    OpCase("broadcast-activation-nc11", lambda: Fn(lambda x: x * x.mean((2, 3), keepdim=True)), [IMG],
           (A + "mul.Tensor", A + "mean.dim"), max_transposes=0),
    OpCase("unary-math", lambda: Fn(lambda x: torch.exp(-x).sqrt() + torch.log(x.abs() + 1) + torch.rsqrt(x * x + 1)),
           [IMG], (A + "exp.default", A + "neg.default", A + "sqrt.default", A + "log.default",
                   A + "rsqrt.default")),
    OpCase("maximum-minimum-pow", lambda: Fn(lambda a, b: torch.maximum(a, b) + torch.minimum(a, b) ** 2 +
                                             a.abs() ** 1.5), [IMG, IMG],
           (A + "maximum.default", A + "minimum.default", A + "pow.Tensor_Scalar")),
    OpCase("compare-tensor", lambda: Fn(lambda a, b: a * (a > b) + b * (a < b) - (a >= b) * 2.0 + (a <= b) * 3.0
                                        + (a == a) * 0.5 - (a != b) * 0.25), [IMG, IMG],
           (A + "gt.Tensor", A + "lt.Tensor", A + "ge.Tensor", A + "le.Tensor", A + "eq.Tensor", A + "ne.Tensor"),
           max_transposes=0),
    OpCase("compare-scalar", lambda: Fn(lambda x: x * (x > 0.1) + (x < -0.2) * 2.0 - (x >= 0.5) * 3.0
                                        + (x <= 0) * 0.5 + (x.relu() == 0) * 4.0 + (x.relu() != 0) * 0.25), [IMG],
           (A + "gt.Scalar", A + "lt.Scalar", A + "ge.Scalar", A + "le.Scalar", A + "eq.Scalar", A + "ne.Scalar")),
    OpCase("compare-int-indices", lambda: Fn(lambda i, x: x * (i > 1) + (i == 2) * 1.5), [(2, 4), (2, 4)],
           (A + "gt.Scalar", A + "eq.Scalar"), ints=(0,)),
    OpCase("where", lambda: Fn(lambda a, b: torch.where(a > b, a, b * 2) + torch.where(a > 0, a, 0.0)
                               + torch.where(b < 0, 1.5, b)), [IMG, IMG],
           (A + "where.self", A + "where.ScalarOther", A + "where.ScalarSelf"), max_transposes=0),
    OpCase("where-param-on-nhwc", lambda: WithParam((4, 1, 1), lambda x, p: torch.where(x > p, x, p)), [IMG],
           (A + "where.self",), max_transposes=0),
    # reductions
    OpCase("mean-hw", lambda: Fn(lambda x: x.mean((2, 3))), [IMG], (A + "mean.dim",), max_transposes=0),
    OpCase("mean-all", lambda: Fn(lambda x: x.mean()), [IMG], (A + "mean.default",)),
    OpCase("sum-keepdim", lambda: Fn(lambda x: x.sum(1, keepdim=True)), [IMG], (A + "sum.dim_IntList",)),
    OpCase("sum-all", lambda: Fn(lambda x: x.sum() * x), [(3, 4)], (A + "sum.default",)),
    OpCase("amax-amin", lambda: Fn(lambda x: x.amax(1) - x.amin(-1).mean()), [IMG],
           (A + "amax.default", A + "amin.default")),
    # shape ops
    OpCase("flatten-not-into-linear", lambda: nn.Flatten(), [IMG], (A + "view.default",), max_transposes=1),
    OpCase("view", lambda: Fn(lambda x: x.view(2, 4, 64).sum(-1)), [IMG], (A + "view.default",)),
    OpCase("reshape-source", lambda: Fn(lambda x: x.reshape(-1, 6)), [(4, 3)], (A + "view.default",)),
    OpCase("permute-transpose", lambda: Fn(lambda x: x.permute(0, 2, 3, 1).transpose(1, 2).relu()), [IMG],
           (A + "permute.default", A + "transpose.int"), max_transposes=1),
    OpCase("t", lambda: Fn(lambda a: a.t() * 2), [(3, 4)], (A + "t.default",)),
    OpCase("weight-only-ops-fold", lambda: WithParam((5, 3), lambda x, p: x @ torch.flip(p, [0]).t()[:, 1:] * 2),
           [(4, 3)], (A + "matmul.default",), max_transposes=0),
    OpCase("flatten-relu-linear", lambda: nn.Sequential(nn.Conv2d(4, 3, 3), nn.Flatten(), nn.ReLU(), nn.Dropout(),
                                                        nn.Linear(3 * 6 * 6, 5)), [IMG],
           (A + "view.default", A + "linear.default"), max_transposes=0),
    OpCase("unsqueeze-squeeze", lambda: Fn(lambda x: x.unsqueeze(1).squeeze(1).unsqueeze(-1).squeeze()), [(3, 4)],
           (A + "unsqueeze.default", A + "squeeze.dim", A + "squeeze.default")),
    OpCase("squeeze-dim", lambda: Fn(lambda x: torch.squeeze(x.mean(2, keepdim=True), 2)), [IMG],
           (A + "squeeze.dim",)),
    OpCase("cat-channels", lambda: Fn(lambda a, b: torch.cat([a, b, a], 1)), [IMG, IMG], (A + "cat.default",),
           max_transposes=0),
    OpCase("embedding", lambda: nn.Embedding(4, 5), [(2, 3)], (A + "embedding.default",), ints=(0,)),
    OpCase("slice-select-on-nhwc", lambda: Fn(lambda x: x[:, 1:3, ::2, 1:-1].sum(1) + x[:, 0, :4, :6]), [IMG],
           (A + "slice.Tensor", A + "select.int"), max_transposes=1),
    OpCase("split-chunk-channels", lambda: Fn(lambda x: torch.split(x, [1, 3], 1)[1] * x.chunk(2, 1)[0].sum(1,
                                              keepdim=True)), [IMG], (A + "split_with_sizes.default",
                                                                      A + "split.Tensor"), max_transposes=0),
    OpCase("expand-repeat", lambda: Fn(lambda x: x.mean(1, keepdim=True).expand(-1, 4, -1, -1) + x.repeat(1, 1, 1, 1)
                                       + x[:, :1].repeat(1, 4, 1, 1)), [IMG],
           (A + "expand.default", A + "repeat.default"), max_transposes=0),
    OpCase("expand-new-axis", lambda: Fn(lambda v: v.expand(3, 2, 5)), [(2, 1)], (A + "expand.default",)),
    # recurrent (unrolled over static time steps)
    OpCase("lstm", lambda: Rnn(nn.LSTM(4, 5)), [(6, 2, 4)], (A + "lstm.input", A + "full.default")),
    OpCase("lstm-batch-first-bi-stacked-states",
           lambda: Rnn(nn.LSTM(4, 5, num_layers=2, batch_first=True, bidirectional=True),
                       lambda y, hc: y.sum(-1, keepdim=True) + hc[0].mean(0).unsqueeze(1) - hc[1].mean(0).unsqueeze(1)),
           [(2, 3, 4)], (A + "lstm.input",)),
    OpCase("lstm-given-state-no-bias", lambda: Rnn(nn.LSTM(4, 5, bias=False), state=2),
           [(3, 2, 4), (1, 2, 5), (1, 2, 5)], (A + "lstm.input",)),
    OpCase("lstm-stacked-wavefront-states",  # three layers in one flat wavefront, every layer's final states read
           lambda: Rnn(nn.LSTM(4, 5, num_layers=3, batch_first=True),
                       lambda y, hc: y.sum(-1, keepdim=True) + hc[0].mean(0).unsqueeze(1) * hc[1].sum(0).unsqueeze(1),
                       state=2),
           [(2, 5, 4), (3, 2, 5), (3, 2, 5)], (A + "lstm.input",)),
    OpCase("gru", lambda: Rnn(nn.GRU(4, 5)), [(4, 2, 4)], (A + "gru.input",)),
    OpCase("gru-stacked-wavefront-state",
           lambda: Rnn(nn.GRU(4, 3, num_layers=2), lambda y, hn: y.mean(-1) + hn.sum(0).mean(-1),
                       state=1),
           [(5, 2, 4), (2, 2, 3)], (A + "gru.input",)),
    OpCase("gru-batch-first-bi-stacked-state",
           lambda: Rnn(nn.GRU(4, 3, num_layers=2, batch_first=True, bidirectional=True),
                       lambda y, hn: y.mean(-1) + hn.sum(0).mean(-1, keepdim=True), state=1),
           [(2, 3, 4), (4, 2, 3)], (A + "gru.input",)),
    # attention
    OpCase("sdpa", lambda: Fn(F.scaled_dot_product_attention), [(2, 3, 5, 8), (2, 3, 6, 8), (2, 3, 6, 4)],
           (A + "scaled_dot_product_attention.default",), layouts={"in0": "source", "in1": "source", "in2": "source"}),
    OpCase("sdpa-causal-scale", lambda: Fn(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                                                           scale=0.3)),
           [(2, 5, 8), (2, 5, 8), (2, 5, 8)], (A + "scaled_dot_product_attention.default",)),
    OpCase("sdpa-float-mask", lambda: WithParam((5, 5), lambda q, m: F.scaled_dot_product_attention(
        q, q * 0.5, (q - 0.3).neg(), attn_mask=m)), [(2, 3, 5, 8)], (A + "scaled_dot_product_attention.default",),
        layouts={"x": "source"}),
]
CASES = CORE_CASES + EXTRA_CASES


def _inputs(case: OpCase) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randint(0, 4, shape, generator=gen) if i in case.ints else torch.randn(shape, generator=gen)
            for i, shape in enumerate(case.shapes)]


def count_tf_ops(model: object, op_type: str) -> int:
    """How many `op_type` nodes the generated model's traced graph holds."""
    graph = model.__call__.get_concrete_function().graph.as_graph_def()  # type: ignore[attr-defined]
    return sum(1 for node in graph.node if node.op == op_type)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_op_case(case: OpCase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the converters are under test: constant sources (arange, full, ...) must reach them, not be folded away
    monkeypatch.setattr(fold, "CONSTANT_SOURCES", frozenset())
    torch.manual_seed(0)
    module = case.make().eval()
    inputs = _inputs(case)
    names = [f"in{i}" for i in range(len(inputs))] if len(inputs) > 1 else ["x"]
    result = rebuild_tf(module, inputs, tmp_path, input_names=names, input_layouts=case.layouts,
                        dynamic_dims=case.dynamic or None)
    for target in case.covers:
        assert target in result.op_counts, f"{target} not in the captured graph: {sorted(result.op_counts)}"
    with torch.no_grad():
        expected = module(*inputs)
    got = result.run_torch_layout(*[t.numpy() for t in inputs])[0]
    np.testing.assert_allclose(got, expected.numpy(), atol=case.atol, rtol=case.rtol)
    if case.max_transposes is not None:
        assert count_tf_ops(result.model, "Transpose") <= case.max_transposes
    web = _tfjs_wasm_output(result, inputs, tmp_path / "web")
    np.testing.assert_allclose(web, expected.numpy(), atol=case.tfjs_atol or case.atol, rtol=case.rtol,
                               err_msg="TF.js (Node, wasm) differs from PyTorch")


def _tfjs_wasm_output(result: object, inputs: list[torch.Tensor], web_dir: Path) -> np.ndarray:
    """The generated model's SavedModel written as a TF.js graph model and run in Node on wasm; first output in
    PyTorch layout."""
    from bridge.runtime.node import node_status, run_graph_model
    from bridge.tfjs.convert import TfjsOptions, convert_saved_model

    status = node_status()
    if not status.ok:
        pytest.skip("Node harness unavailable: " + "; ".join(status.problems))
    convert_saved_model(result.saved_model_dir, web_dir, TfjsOptions())  # type: ignore[attr-defined]
    feeds = {i.name: i.move_to_web(t.numpy()) for i, t in zip(result.inputs, inputs)}  # type: ignore[attr-defined]
    run = run_graph_model(web_dir, [feeds], backends=["wasm"])["wasm"]
    assert run.ok, run.error
    first = result.outputs[0]  # type: ignore[attr-defined]
    return first.to_torch(run.outputs[0][first.name])


# Registered aliases a strict capture never produces (non-strict captures or other decompositions do); each
# shares its converter with a target that has a case. sym_size is covered by the dynamic-batch model case.
ALIASES_WITHOUT_CASE = {A + "flatten.using_ints", A + "conv1d.padding", A + "_unsafe_view.default",
                        A + "reshape.default", A + "squeeze.dims", A + "sym_size.int"}


def test_every_builtin_converter_has_a_case() -> None:
    covered = {target for case in CASES for target in case.covers}
    untested = BUILTINS.own_targets() - covered - ALIASES_WITHOUT_CASE - {RELAYOUT}
    assert not untested, f"registered converters without an op case: {sorted(untested)}"


def test_every_builtin_converter_declares_schema_and_emits() -> None:
    for target in BUILTINS.own_targets():
        spec = BUILTINS.lookup(target)
        assert spec is not None and spec.doc, f"{target}: converter needs its ATen schema as docstring"


# ------------------------------------------------------------------------------------------- weight transforms

def _tf():
    import tensorflow as tf
    return tf


@pytest.mark.parametrize("stride,dilation", [(1, 1), (2, 1), (1, 2)])
def test_oihw_to_hwio_matches_conv(stride: int, dilation: int) -> None:
    tf = _tf()
    x, w = torch.randn(1, 3, 9, 9), torch.randn(5, 3, 3, 3)
    expected = F.conv2d(x, w, stride=stride, dilation=dilation).numpy()
    got = tf.nn.conv2d(x.numpy().transpose(0, 2, 3, 1), W.oihw_to_hwio(w.numpy()), strides=stride, padding="VALID",
                       dilations=dilation).numpy().transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("multiplier", [1, 3])
def test_depthwise_filter_matches_conv(multiplier: int) -> None:
    tf = _tf()
    x, w = torch.randn(1, 4, 7, 7), torch.randn(4 * multiplier, 1, 3, 3)
    expected = F.conv2d(x, w, groups=4).numpy()
    got = tf.nn.depthwise_conv2d(x.numpy().transpose(0, 2, 3, 1), W.depthwise_filter(w.numpy(), 4), [1, 1, 1, 1],
                                 "VALID").numpy().transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=RTOL)


def test_iohw_to_hwoi_matches_conv_transpose() -> None:
    tf = _tf()
    x, w = torch.randn(1, 4, 5, 5), torch.randn(4, 2, 3, 3)
    expected = F.conv_transpose2d(x, w, stride=2).numpy()
    got = tf.nn.conv2d_transpose(x.numpy().transpose(0, 2, 3, 1), W.iohw_to_hwoi(w.numpy()), [1, 11, 11, 2], 2,
                                 "VALID").numpy().transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=RTOL)


def test_oiw_to_wio_matches_conv1d() -> None:
    tf = _tf()
    x, w = torch.randn(2, 3, 9), torch.randn(4, 3, 3)
    expected = F.conv1d(x, w).numpy()
    got = tf.nn.conv1d(x.numpy().transpose(0, 2, 1), W.oiw_to_wio(w.numpy()), 1, "VALID").numpy().transpose(0, 2, 1)
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=RTOL)


def test_linear_in_out_and_flat_rows() -> None:
    x, w = torch.randn(2, 3, 2, 2), torch.randn(5, 12)
    expected = (x.flatten(1) @ w.T).numpy()
    flat = FlatBlock((3, 2, 2), (1, 2, 0))  # NHWC storage flattened
    x_nhwc_flat = x.numpy().transpose(0, 2, 3, 1).reshape(2, 12)
    got = x_nhwc_flat @ W.permute_rows(W.linear_to_in_out(w.numpy()), flat.feature_order())
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=RTOL)


def test_unpermuted_rows_fail() -> None:
    """Must-fail twin of the test above: without the row permutation the result is wrong."""
    x, w = torch.randn(2, 3, 2, 2), torch.randn(5, 12)
    x_nhwc_flat = x.numpy().transpose(0, 2, 3, 1).reshape(2, 12)
    assert not np.allclose(x_nhwc_flat @ W.linear_to_in_out(w.numpy()), (x.flatten(1) @ w.T).numpy(), atol=1e-3)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_recurrent_gate_transforms_match_keras(kind: str) -> None:
    """PyTorch LSTM/GRU weights through the gate-order transforms into Keras layers give PyTorch's outputs."""
    tf = _tf()
    torch.manual_seed(0)
    layer = (nn.LSTM if kind == "lstm" else nn.GRU)(4, 5, batch_first=True).eval()
    x = torch.randn(2, 6, 4)
    with torch.no_grad():
        expected = layer(x)[0].numpy()
    p = {k: v.detach().numpy() for k, v in layer.state_dict().items()}
    if kind == "lstm":
        keras_layer = tf.keras.layers.LSTM(5, return_sequences=True)
        values = [W.lstm_kernel_to_keras(p["weight_ih_l0"]), W.lstm_kernel_to_keras(p["weight_hh_l0"]),
                  W.lstm_bias_to_keras(p["bias_ih_l0"], p["bias_hh_l0"])]
    else:
        keras_layer = tf.keras.layers.GRU(5, return_sequences=True, reset_after=True)
        values = [W.gru_kernel_to_keras(p["weight_ih_l0"]), W.gru_kernel_to_keras(p["weight_hh_l0"]),
                  W.gru_bias_to_keras(p["bias_ih_l0"], p["bias_hh_l0"])]
    keras_layer.build((2, 6, 4))
    keras_layer.set_weights(values)
    np.testing.assert_allclose(keras_layer(x.numpy()).numpy(), expected, atol=ATOL, rtol=RTOL)
    if kind == "gru":  # must-fail twin: PyTorch's gate order used as it is gives other numbers
        keras_layer.set_weights([p["weight_ih_l0"].T, p["weight_hh_l0"].T, np.stack([p["bias_ih_l0"],
                                                                                   p["bias_hh_l0"]])])
        assert not np.allclose(keras_layer(x.numpy()).numpy(), expected, atol=1e-3)


# ------------------------------------------------------------------------------------------- layout conversions

@pytest.mark.parametrize("src,dst,shape", [
    (Layout.channels_last(4), Layout.source(4), (2, 3, 4, 5)),
    (Layout.source(4), Layout.channels_last(4), (2, 3, 4, 5)),
    (Layout.source(3), Layout.channels_last(4), (3, 1, 1)),      # broadcast-aligned weight [C,1,1] on NHWC
    (Layout((0, 1), FlatBlock((3, 2, 2), (1, 2, 0))), Layout.source(2), (2, 12)),
    (Layout.source(2), Layout((0, 1), FlatBlock((3, 2, 2), (1, 2, 0))), (2, 12)),
])
def test_conversion_steps_match_numpy(src: Layout, dst: Layout, shape: tuple[int, ...]) -> None:
    source = np.random.default_rng(0).standard_normal(shape)
    stored = _store(source, src)
    got = apply_steps(stored, conversion_steps(src, dst, shape))
    expanded = source.reshape((1,) * (dst.rank - len(shape)) + shape)
    np.testing.assert_array_equal(got, _store(expanded, dst))


def _store(array: np.ndarray, layout: Layout) -> np.ndarray:
    """The reference: how `array` (PyTorch order) is stored in `layout`."""
    if layout.flat is not None:
        lead = array.shape[:-1]
        block = array.reshape(lead + layout.flat.shape)
        k = len(lead)
        return block.transpose(tuple(range(k)) + tuple(k + p for p in layout.flat.perm)).reshape(array.shape)
    return array.transpose(layout.perm)


def test_size_one_moves_are_reshapes() -> None:
    steps = conversion_steps(Layout.source(4), Layout.channels_last(4), (2, 5, 1, 1))
    assert [s.kind for s in steps] == ["reshape"]


# ------------------------------------------------------------------------------------------- average pooling divisors

@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("include_pad", [False, True])
@pytest.mark.parametrize("size,kernel,stride,pad", [(8, 3, 2, 1), (7, 2, 2, 0), (10, 2, 3, 1), (9, 4, 3, 2)])
def test_avg_pool_divisors_match_torch(size: int, kernel: int, stride: int, pad: int, ceil_mode: bool,
                                       include_pad: bool) -> None:
    """The per-axis divisors the avg_pool converter rescales by are PyTorch's (window sum / output), and without
    the rescaling (TF's VALID average over the zero-padded input: sum / kernel area) the numbers differ whenever a
    divisor is not the kernel size (must-fail twin)."""
    from bridge.native.ops.pool import _axis_divisors

    x = torch.rand(1, 1, 1, size) + 0.5
    args = dict(kernel_size=(1, kernel), stride=(1, stride), padding=(0, pad), ceil_mode=ceil_mode,
                count_include_pad=include_pad)
    torch_avg = F.avg_pool2d(x, **args)[0, 0, 0].numpy()
    window_sum = F.avg_pool2d(x, **args, divisor_override=1)[0, 0, 0].numpy()
    divisors = np.asarray(_axis_divisors(size, torch_avg.size, kernel, stride, pad, include_pad), np.float32)
    np.testing.assert_allclose(window_sum / divisors, torch_avg, rtol=1e-6)
    unscaled = window_sum / kernel
    assert np.allclose(unscaled, torch_avg, rtol=1e-4) == bool(np.all(divisors == kernel))
