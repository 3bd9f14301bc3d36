"""Unit tests of the TF.js graph passes (bridge.tfjs: graph_names, op_list, fusions, rewrites, optimize, replay).

Each pass is run on a small hand-built GraphDef and the result is executed in TensorFlow (TF.js-only ops are split
back by `replay`) and compared with the graph before the pass: float32 atol 1e-5, rtol 1e-5 unless stated. Every
check has at least one case where it must refuse or fail.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from tensorflow.core.framework import graph_pb2, node_def_pb2  # noqa: E402

from bridge.errors import BridgeError, ConversionError, ModelLoadError, UnsupportedOpsError  # noqa: E402
from bridge.tfjs import fusions, rewrites  # noqa: E402
from bridge.tfjs.freeze import TensorInfo  # noqa: E402
from bridge.tfjs.graph_names import (NodeRef, dedupe_control_inputs, format_ref, make_const, make_node,  # noqa: E402
                                     node_map, parse_ref, rewire)
from bridge.tfjs.op_list import (LISTED_BUT_UNMAPPED, SUPPORTED_OPS, check_ops, needs_async,  # noqa: E402
                                 unsupported_ops)
from bridge.tfjs.optimize import check_integrity, optimize_for_tfjs, optimize_graph_def, prune_dead_nodes  # noqa: E402
from bridge.tfjs.replay import replay_graph  # noqa: E402

ATOL, RTOL = 1e-5, 1e-5
RNG = np.random.default_rng(0)
X_INFO = [TensorInfo("x", "x:0", "DT_FLOAT", None)]
OUT_INFO = [TensorInfo("out", "out:0", "DT_FLOAT", None)]
OP_LIST_DIR = (Path(__file__).resolve().parent.parent / "bridge" / "js" / "node_modules" / "@tensorflow" /
               "tfjs-converter" / "dist" / "operations" / "op_list")


# ---------------------------------------------------------------------------------------------------------------
# Helpers: build a graph with placeholder "x" and output "out", run it in TF.

def graph_of(build: Callable[[Any], Any], shape: tuple[int, ...]) -> graph_pb2.GraphDef:
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, shape, name="x")
        tf.identity(build(x), name="out")
    return graph.as_graph_def()


def run(graph_def: graph_pb2.GraphDef, x: np.ndarray) -> np.ndarray:
    return replay_graph(graph_def, {}, {"x": x}, X_INFO, OUT_INFO)["out"]


def copy(graph_def: graph_pb2.GraphDef) -> graph_pb2.GraphDef:
    out = graph_pb2.GraphDef()
    out.CopyFrom(graph_def)
    return out


def ops(graph_def: graph_pb2.GraphDef) -> list[str]:
    return [n.op for n in graph_def.node]


def fused_ops(node: node_def_pb2.NodeDef) -> list[str]:
    return [s.decode() for s in node.attr["fused_ops"].list.s]


def w(*shape: int, low: float = -1.0, high: float = 1.0) -> Any:
    return tf.constant(RNG.uniform(low, high, shape).astype(np.float32))


def conv(x: Any, cin: int = 3, cout: int = 4) -> Any:
    return tf.nn.conv2d(x, w(3, 3, cin, cout), 1, "SAME")


def assert_same_numbers(before: graph_pb2.GraphDef, after: graph_pb2.GraphDef, x: np.ndarray,
                        atol: float = ATOL) -> None:
    np.testing.assert_allclose(run(after, x), run(before, x), atol=atol, rtol=RTOL)


X4 = RNG.standard_normal((2, 6, 6, 3)).astype(np.float32)
X2 = RNG.standard_normal((3, 5)).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# graph_names

@pytest.mark.parametrize("text,ref", [
    ("conv", NodeRef("conv", 0, False)),
    ("conv:0", NodeRef("conv", 0, False)),
    ("split:2", NodeRef("split", 2, False)),
    ("^a/b/c", NodeRef("a/b/c", 0, True)),
    ("scope/conv_1:1", NodeRef("scope/conv_1", 1, False)),
])
def test_parse_ref(text: str, ref: NodeRef) -> None:
    assert parse_ref(text) == ref
    assert parse_ref(format_ref(ref)) == ref
    assert format_ref(parse_ref(text)) == text.replace(":0", "") if ":0" in text else text


def test_rewire_matches_exact_nodes_only() -> None:
    gd = graph_pb2.GraphDef()
    gd.node.extend([make_node("a", "X", []), make_node("a_1", "X", []), make_node("b", "Y", ["a", "a_1", "a:1", "^a"]),
                    make_node("new", "X", [])])
    assert rewire(gd, NodeRef("a"), NodeRef("new", 0)) == 2  # "a" and "^a", not "a_1" nor "a:1"
    assert list(node_map(gd)["b"].input) == ["new", "a_1", "a:1", "^new"]
    node = make_node("c", "Z", ["p", "^p", "^q", "^q"])
    dedupe_control_inputs(node)
    assert list(node.input) == ["p", "^q"]


# ---------------------------------------------------------------------------------------------------------------
# op_list

def test_op_list_has_the_248_ops_of_tfjs_4_22() -> None:
    assert len(SUPPORTED_OPS) + len(LISTED_BUT_UNMAPPED) == 248
    assert not SUPPORTED_OPS & set(LISTED_BUT_UNMAPPED)
    if OP_LIST_DIR.is_dir():  # cross-check with the pinned npm package itself
        names: set[str] = set()
        for path in OP_LIST_DIR.glob("*.js"):
            names |= set(re.findall(r"'tfOpName': '([A-Za-z0-9_]+)'", path.read_text()))
        assert names == SUPPORTED_OPS | set(LISTED_BUT_UNMAPPED)


def test_check_ops_lists_every_offender_with_nodes() -> None:
    gd = graph_pb2.GraphDef()
    gd.node.extend([make_node("x", "Placeholder", []), make_node("a", "Lgamma", ["x"]),
                    make_node("b", "Lgamma", ["a"]), make_node("c", "RaggedRange", ["x"]),
                    make_node("d", "Relu", ["c"])])
    func = gd.library.function.add()
    func.signature.name = "body"
    func.node_def.append(make_node("inner", "MatrixInverse", []))
    found = unsupported_ops(gd)
    assert found == {"Lgamma": ["a", "b"], "MatrixInverse": ["body/inner"], "RaggedRange": ["c"]}
    with pytest.raises(UnsupportedOpsError) as info:
        check_ops(gd, when="here")
    assert info.value.stage == "tfjs-write" and info.value.ops == found
    assert all(op in str(info.value) for op in found)
    check_ops(gd, when="here", allow={"Lgamma", "RaggedRange", "MatrixInverse"})  # allowed: no error


def test_needs_async() -> None:
    assert needs_async(graph_of(lambda x: tf.where(x > 0), (4,)))
    assert not needs_async(graph_of(tf.nn.relu, (4,)))


# ---------------------------------------------------------------------------------------------------------------
# Batch-norm folding and Add -> BiasAdd

def _fbn(x: Any, c: int) -> Any:
    return tf.compat.v1.nn.fused_batch_norm(x, w(c, low=0.5, high=1.5), w(c), w(c), w(c, low=0.5, high=2.0),
                                            epsilon=1e-3, is_training=False)[0]


def _keras3_bn(x: Any, c: int) -> Any:
    """Keras 3 BatchNormalization after grappler's constant folding: x * scale + offset."""
    return x * w(c, low=0.5, high=1.5) + w(c)


FOLD_CASES = {
    "conv_fbn": (lambda x: _fbn(conv(x), 4), (2, 6, 6, 3)),
    "conv_bias_fbn": (lambda x: _fbn(tf.nn.bias_add(conv(x), w(4)), 4), (2, 6, 6, 3)),
    "depthwise_mult2_fbn": (lambda x: _fbn(tf.nn.depthwise_conv2d(x, w(3, 3, 3, 2), [1, 1, 1, 1], "SAME"), 6),
                            (2, 6, 6, 3)),
    "conv_mul_add_keras3": (lambda x: _keras3_bn(conv(x), 4), (2, 6, 6, 3)),
    "conv_bias_mul_add_div": (lambda x: (tf.nn.bias_add(conv(x), w(4)) * w(1, 1, 1, 4) + 0.5) / w(4, low=1, high=2),
                              (2, 6, 6, 3)),
    "matmul_mul_sub": (lambda x: tf.matmul(x, w(5, 4)) * w(4) - w(4), (3, 5)),
    "matmul_transpose_b_fbn_like": (lambda x: tf.matmul(x, w(4, 5), transpose_b=True) * w(4) + w(4), (3, 5)),
}


@pytest.mark.parametrize("name", sorted(FOLD_CASES))
def test_fold_batch_norms(name: str) -> None:
    build, shape = FOLD_CASES[name]
    gd = graph_of(build, shape)
    folded = copy(gd)
    assert fusions.fold_batch_norms(folded, {"x", "out"}) == 1
    prune_dead_nodes(folded, {"out", "x"})
    left = [op for op in ops(folded) if op not in ("Placeholder", "Const", "Identity")]
    assert left[-1] == "BiasAdd" and len(left) == 2, left
    x = RNG.standard_normal(shape).astype(np.float32)
    assert_same_numbers(gd, folded, x, atol=1e-4)  # weights are rescaled, so float32 rounding differs


@pytest.mark.parametrize("name,build", [
    ("mul_by_tensor", lambda x: conv(x) * x[:, :, :, :1]),
    ("bn_mean_not_constant", lambda x: tf.compat.v1.nn.fused_batch_norm(
        conv(x), w(4), w(4), tf.reduce_mean(x) * tf.ones([4]), w(4, low=0.5, high=1.5), is_training=False)[0]),
    ("scale_on_wrong_axis", lambda x: conv(x) * w(1, 6, 1, 1)),
    ("conv_read_twice", lambda x: (lambda c: c * w(4) + c)(conv(x))),
])
def test_fold_batch_norms_refuses(name: str, build: Callable[[Any], Any]) -> None:
    gd = graph_of(build, (2, 6, 6, 3))
    before = copy(gd)
    assert fusions.fold_batch_norms(gd, {"x", "out"}) == 0
    assert gd == before


def test_adds_to_bias_add() -> None:
    gd = graph_of(lambda x: tf.matmul(x, w(5, 4)) + w(4), (3, 5))
    changed = copy(gd)
    assert fusions.adds_to_bias_add(changed) == 1
    assert "BiasAdd" in ops(changed) and "AddV2" not in ops(changed)
    assert_same_numbers(gd, changed, X2)
    for build in (lambda x: tf.matmul(x, w(5, 4)) + w(1, 4),  # rank-2 constant: left alone
                  lambda x: (lambda m: m + w(4) + m)(tf.matmul(x, w(5, 4)))):  # matmul read twice
        untouched = graph_of(build, (3, 5))
        assert fusions.adds_to_bias_add(untouched) == 0


def test_regroup_bias_adds() -> None:
    """Grappler turns (conv1 + b1) + (conv2 + b2) into AddN(conv1 + b1, conv2) + b2; bridge regroups it."""
    gd = graph_of(lambda x: tf.math.add_n([tf.nn.bias_add(conv(x), w(4)), conv(x)]) + w(4), (2, 6, 6, 3))
    regrouped = copy(gd)
    assert fusions.regroup_bias_adds(regrouped, {"x", "out"}) == 1
    assert ops(regrouped).count("BiasAdd") == 2 and "AddV2" not in ops(regrouped)
    assert node_map(regrouped)["out"].input[0] in node_map(regrouped)  # the sum kept the outer add's name
    assert_same_numbers(gd, regrouped, X4, atol=1e-4)
    untouched = graph_of(lambda x: tf.math.add_n([conv(x), x[..., :1] * 0 + conv(x)]) + w(1, 4), (2, 6, 6, 3))
    assert fusions.regroup_bias_adds(untouched, {"x", "out"}) == 0  # bias not rank-1


def test_pipeline_fuses_residual_blocks() -> None:
    def block(x: Any) -> Any:  # biases as AddV2, the way Keras 3 batch norms and ONNX exports write them
        first = (conv(x, 3, 3) + w(3)) + x
        return tf.nn.relu((conv(first, 3, 3) + w(3)) + first)

    gd = graph_of(block, (2, 6, 6, 3))
    optimized = optimize_graph_def(gd, X_INFO, OUT_INFO)
    assert ops(optimized).count("_FusedConv2D") == 2 and "Conv2D" not in ops(optimized)
    assert_same_numbers(gd, optimized, X4, atol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# PReLU, depthwise, activation fusion

def _prelu(x: Any, alpha: Any) -> Any:
    return tf.nn.relu(x) + (-alpha) * tf.nn.relu(-x)


def test_fuse_prelu_per_channel() -> None:
    gd = graph_of(lambda x: _prelu(conv(x), w(1, 1, 4, low=0.1, high=0.5)), (2, 6, 6, 3))
    gd = fusions_after_grappler(gd)
    fused = copy(gd)
    assert fusions.fuse_prelu(fused, {"x", "out"}) == 1
    assert "Prelu" in ops(fused) and "Neg" not in ops(fused)
    assert_same_numbers(gd, fused, X4)


def test_fuse_prelu_refuses_full_alpha() -> None:
    gd = fusions_after_grappler(graph_of(lambda x: _prelu(conv(x), w(6, 6, 4, low=0.1, high=0.5)), (2, 6, 6, 3)))
    assert fusions.fuse_prelu(gd, {"x", "out"}) == 0  # wasm's Prelu kernel cannot broadcast a [H, W, C] alpha


def fusions_after_grappler(gd: graph_pb2.GraphDef) -> graph_pb2.GraphDef:
    """Constant-fold (so -alpha is one Const) like the pipeline's first grappler pass."""
    from bridge.tfjs.grappler import PASS1_OPTIMIZERS, run_grappler

    return run_grappler(gd, PASS1_OPTIMIZERS, X_INFO, OUT_INFO)


def _depthwise(x: Any, bias: bool) -> Any:
    y = tf.nn.depthwise_conv2d(x, w(3, 3, 3, 1), [1, 1, 1, 1], "SAME")
    return tf.nn.bias_add(y, w(3)) if bias else y


@pytest.mark.parametrize("build,expected", [
    (lambda x: tf.nn.relu(_depthwise(x, True)), ["BiasAdd", "Relu"]),
    (lambda x: tf.nn.relu6(_depthwise(x, False)), ["NoOp", "Relu6"]),
    (lambda x: _depthwise(x, True), ["BiasAdd"]),
    (lambda x: tf.nn.leaky_relu(_depthwise(x, True), 0.3), ["BiasAdd"]),  # JS's depthwise mapper drops the alpha
    (lambda x: tf.nn.tanh(_depthwise(x, True)), ["BiasAdd"]),  # tanh is not fusable: stays apart
    (lambda x: tf.nn.tanh(_depthwise(x, False)), None),  # nothing to fuse at all
])
def test_fuse_depthwise(build: Callable[[Any], Any], expected: list[str] | None) -> None:
    gd = graph_of(build, (2, 6, 6, 3))
    fused = copy(gd)
    made = fusions.fuse_depthwise(fused, {"x", "out"})
    nodes = [n for n in fused.node if n.op == "FusedDepthwiseConv2dNative"]
    assert made == (expected is not None)
    assert [fused_ops(n) for n in nodes] == ([expected] if expected else [])
    for n in nodes:
        assert n.attr["num_args"].i == expected.count("BiasAdd")  # type: ignore[union-attr]
    assert_same_numbers(gd, fused, X4)


@pytest.mark.parametrize("act,expected", [
    (tf.nn.relu, ["BiasAdd", "Relu"]), (tf.nn.elu, ["BiasAdd", "Elu"]), (tf.nn.sigmoid, ["BiasAdd", "Sigmoid"]),
    (lambda t: tf.nn.leaky_relu(t, 0.1), ["BiasAdd", "LeakyRelu"]),
    (lambda t: _prelu(t, w(4, low=0.1, high=0.5)), ["BiasAdd", "Prelu"]),
    (tf.nn.tanh, ["BiasAdd"]), (tf.nn.softplus, ["BiasAdd"]),
])
def test_pipeline_fuses_only_what_js_runs(act: Callable[[Any], Any], expected: list[str]) -> None:
    gd = graph_of(lambda x: act(tf.nn.bias_add(conv(x), w(4))), (2, 6, 6, 3))
    optimized = optimize_graph_def(gd, X_INFO, OUT_INFO)
    convs = [n for n in optimized.node if n.op == "_FusedConv2D"]
    assert [fused_ops(n) for n in convs] == [expected]
    assert convs[0].attr["num_args"].i == expected.count("BiasAdd") + expected.count("Prelu")
    if expected[-1] == "LeakyRelu":
        assert convs[0].attr["leakyrelu_alpha"].f == pytest.approx(0.1)
    assert_same_numbers(gd, optimized, X4, atol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# The guard

def _fused_matmul(ops_: list[str], extra_args: int = 0, controls: tuple[str, ...] = ()) -> graph_pb2.GraphDef:
    gd = graph_pb2.GraphDef()
    gd.node.extend([make_node("x", "Placeholder", [], {"dtype": ("type", 1)}),
                    make_const("w", RNG.uniform(-1, 1, (5, 4)).astype(np.float32)),
                    make_const("b", RNG.uniform(-1, 1, (4,)).astype(np.float32)),
                    make_const("side", RNG.uniform(-1, 1, (3, 4)).astype(np.float32))])
    args = ["b"] + ["side"] * extra_args
    attrs = {"T": ("type", 1), "num_args": len(args), "transpose_a": False, "transpose_b": False,
             "epsilon": 0.0, "leakyrelu_alpha": 0.2}
    node = make_node("fused", "_FusedMatMul", ["x", "w", *args, *controls], attrs)
    node.attr["fused_ops"].list.s.extend(o.encode() for o in ops_)
    node.attr["TArgs"].list.type.extend([1] * len(args))
    gd.node.extend([node, make_node("out", "Identity", ["fused"], {"T": ("type", 1)})])
    return gd


@pytest.mark.parametrize("ops_,extra,kept,split_ops", [
    (["BiasAdd", "Relu"], 0, ["BiasAdd", "Relu"], []),
    (["BiasAdd", "Tanh"], 0, ["BiasAdd"], ["Tanh"]),
    (["BiasAdd", "GeluExact"], 0, ["BiasAdd"], ["Erf"]),
    (["BiasAdd", "GeluApproximate"], 0, ["BiasAdd"], ["Tanh"]),
    (["BiasAdd", "Add"], 1, ["BiasAdd"], ["AddV2"]),
    (["BiasAdd", "Add", "Relu"], 1, ["BiasAdd"], ["AddV2", "Relu"]),
])
def test_unfuse_unsupported(ops_: list[str], extra: int, kept: list[str], split_ops: list[str]) -> None:
    gd = _fused_matmul(ops_, extra)
    guarded = copy(gd)
    fusions.unfuse_unsupported(guarded)
    heads = [n for n in guarded.node if n.op == "_FusedMatMul"]
    assert [fused_ops(n) for n in heads] == [kept]
    assert heads[0].attr["num_args"].i == 1 and len(heads[0].input) == 3
    assert all(op in ops(guarded) for op in split_ops)
    assert node_map(guarded)["out"].input[0] == "fused"  # consumers unchanged: the last node keeps the name
    check_integrity(guarded, X_INFO, OUT_INFO)
    x = RNG.standard_normal((3, 5)).astype(np.float32)
    np.testing.assert_allclose(run(guarded, x), _fused_reference(gd, ops_, x), atol=1e-5, rtol=1e-5)


def _fused_reference(gd: graph_pb2.GraphDef, ops_: list[str], x: np.ndarray) -> np.ndarray:
    """What the fused node means, in float64 numpy."""
    import math

    consts = {n.name: tf.make_ndarray(n.attr["value"].tensor).astype(np.float64) for n in gd.node if n.op == "Const"}
    erf = np.vectorize(math.erf)
    y = x.astype(np.float64) @ consts["w"]
    tanh_gelu = math.sqrt(2 / math.pi)
    for op in ops_:
        y = {"BiasAdd": lambda v: v + consts["b"], "Add": lambda v: v + consts["side"],
             "Relu": lambda v: np.maximum(v, 0), "Tanh": np.tanh,
             "GeluExact": lambda v: 0.5 * v * (1 + erf(v / math.sqrt(2))),
             "GeluApproximate": lambda v: 0.5 * v * (1 + np.tanh(tanh_gelu * (v + 0.044715 * v ** 3)))}[op](y)
    return y


def _bn_consts() -> tuple[np.ndarray, ...]:
    return tuple(RNG.uniform(lo, hi, 4).astype(np.float32) for lo, hi in ((0.5, 1.5), (-1, 1), (-1, 1), (0.5, 2)))


def _bn_relu_reference(y: np.ndarray, scale: np.ndarray, offset: np.ndarray, mean: np.ndarray,
                       var: np.ndarray) -> np.ndarray:
    return np.maximum((y - mean) / np.sqrt(var + 1e-3) * scale + offset, 0)


def test_unfuse_conv_with_fused_batch_norm() -> None:
    """oneDNN's remapper can emit _FusedConv2D [FusedBatchNorm, Relu]; JS refuses it, the guard splits it."""
    filt = RNG.uniform(-1, 1, (3, 3, 3, 4)).astype(np.float32)
    bn = _bn_consts()
    gd = graph_pb2.GraphDef()
    gd.node.extend([make_node("x", "Placeholder", [], {"dtype": ("type", 1)}), make_const("f", filt),
                    *(make_const(f"bn{i}", v) for i, v in enumerate(bn))])
    node = make_node("fused", "_FusedConv2D", ["x", "f", "bn0", "bn1", "bn2", "bn3"],
                     {"T": ("type", 1), "num_args": 4, "padding": "SAME", "data_format": "NHWC", "epsilon": 1e-3})
    node.attr["strides"].list.i.extend([1, 1, 1, 1])
    node.attr["dilations"].list.i.extend([1, 1, 1, 1])
    node.attr["fused_ops"].list.s.extend([b"FusedBatchNorm", b"Relu"])
    gd.node.extend([node, make_node("out", "Identity", ["fused"], {"T": ("type", 1)})])
    fusions.unfuse_unsupported(gd)
    assert "_FusedConv2D" not in ops(gd) and "FusedBatchNormV3" in ops(gd) and "Relu" in ops(gd)
    want = _bn_relu_reference(tf.nn.conv2d(X4, filt, 1, "SAME").numpy(), *bn)
    np.testing.assert_allclose(run(gd, X4), want, atol=1e-5, rtol=1e-5)


def test_fused_batch_norm_ex_rewrite() -> None:
    bn = _bn_consts()
    gd = _one_op_graph("_FusedBatchNormEx", bn, U=("type", 1), epsilon=1e-3, activation_mode="Relu",
                       data_format="NHWC", is_training=False, num_side_inputs=0)
    x = RNG.standard_normal((2, 3, 3, 4)).astype(np.float32)
    rewritten = copy(gd)
    assert rewrites.apply_rewrites(rewritten) == {"_FusedBatchNormEx": 1}
    check_ops(rewritten, when="after rewriting")
    np.testing.assert_allclose(run(rewritten, x), _bn_relu_reference(x, *bn), atol=1e-5, rtol=1e-5)


def test_guard_strips_control_inputs_and_refuses_unknown_fusions() -> None:
    gd = _fused_matmul(["BiasAdd", "Relu"], controls=("^side",))
    fusions.unfuse_unsupported(gd)
    assert list(node_map(gd)["fused"].input) == ["x", "w", "b"]
    with pytest.raises(ConversionError, match="Frobnicate"):
        fusions.unfuse_unsupported(_fused_matmul(["BiasAdd", "Frobnicate"]))


# ---------------------------------------------------------------------------------------------------------------
# Rewrites

@pytest.mark.parametrize("build,gone,present", [
    (tf.math.erfc, "Erfc", "Erf"),
    (tf.nn.softsign, "Softsign", "Abs"),
    (lambda x: tf.raw_ops.Rint(x=x * 3.0), "Rint", "Round"),
    (lambda x: tf.raw_ops.BatchMatMulV3(x=tf.reshape(x, [3, 1, 5]), y=tf.reshape(x, [3, 5, 1]), Tout=tf.float32),
     "BatchMatMulV3", "BatchMatMulV2"),
    ("_MklSwish", "_MklSwish", "Sigmoid"),
])
def test_rewrites(build: Callable[[Any], Any] | str, gone: str, present: str) -> None:
    gd = graph_of(build, (3, 5)) if callable(build) else _one_op_graph(build)
    assert gone in ops(gd)
    rewritten = copy(gd)
    assert rewrites.apply_rewrites(rewritten) == {gone: 1}
    assert gone not in ops(rewritten) and present in ops(rewritten)
    check_ops(rewritten, when="after rewriting")
    assert_same_numbers(gd, rewritten, X2)


def _one_op_graph(op: str, consts: tuple[np.ndarray, ...] = (), **attrs: Any) -> graph_pb2.GraphDef:
    """x -> op(x, *consts) -> out, for ops (oneDNN-internal ones) Python cannot build directly."""
    gd = graph_pb2.GraphDef()
    gd.node.append(make_node("x", "Placeholder", [], {"dtype": ("type", 1)}))
    gd.node.extend(make_const(f"c{i}", c) for i, c in enumerate(consts))
    gd.node.append(make_node("op", op, ["x", *(f"c{i}" for i in range(len(consts)))], {"T": ("type", 1), **attrs}))
    gd.node.append(make_node("out", "Identity", ["op"], {"T": ("type", 1)}))
    return gd


@pytest.mark.parametrize("equation,shapes,rewritten", [
    ("btnh,bsnh->bnts", [(2, 3, 2, 4), (2, 5, 2, 4)], True),
    ("bnts,bsnh->btnh", [(2, 2, 3, 5), (2, 5, 2, 4)], True),
    ("ik,kj->ij", [(3, 4), (4, 5)], True),
    ("bik,bjk->bji", [(2, 3, 4), (2, 5, 4)], True),
    ("abc,cde->abde", [(2, 3, 4), (4, 2, 3)], False),  # two free indices on one side: needs a reshape
    ("ii->i", [(3, 3)], False),
])
def test_einsum_rewrite(equation: str, shapes: list[tuple[int, ...]], rewritten: bool) -> None:
    second = RNG.uniform(-1, 1, shapes[1:][0] if len(shapes) > 1 else (1,)).astype(np.float32)
    size = int(np.prod(shapes[0]))
    gd = graph_of(lambda x: tf.einsum(equation, tf.reshape(x, shapes[0]), *([tf.constant(second)][:len(shapes) - 1])),
                  (size,))
    if "Einsum" not in ops(gd):
        pytest.skip(f"tf.einsum lowered {equation} itself")
    changed = copy(gd)
    assert rewrites.apply_rewrites(changed) == ({"Einsum": 1} if rewritten else {})
    assert ("Einsum" in ops(changed)) != rewritten
    x = RNG.standard_normal(size).astype(np.float32)
    assert_same_numbers(gd, changed, x)


def test_mkl_layer_norm_rewrite() -> None:
    gd = _one_op_graph("_MklLayerNorm", (RNG.uniform(0.5, 1.5, 5).astype(np.float32),
                                         RNG.uniform(-1, 1, 5).astype(np.float32)), epsilon=1e-3)
    rewritten = copy(gd)
    rewrites.apply_rewrites(rewritten)
    assert "_MklLayerNorm" not in ops(rewritten) and "Rsqrt" in ops(rewritten)
    assert_same_numbers(gd, rewritten, X2, atol=1e-4)


@pytest.mark.parametrize("build,count", [
    (lambda x: x[:, 1:5:2, ::-1, 1], 1),
    (lambda x: x[..., ::2, -1], 1),
    (lambda x: x[1, ::-1], 1),
    (lambda x: x[:, :, :, 1], 0),  # unit strides: TF.js gets it right, left alone
    (lambda x: x[:, tf.newaxis, ::2, 0], 0),  # new axes: left alone
])
def test_split_strided_slice_shrink(build: Callable[[Any], Any], count: int) -> None:
    gd = graph_of(build, (2, 6, 5, 3))
    rewritten = copy(gd)
    assert rewrites.split_strided_slice_shrink(rewritten) == count
    for node in rewritten.node:
        if node.op == "StridedSlice" and count:
            assert node.attr["shrink_axis_mask"].i == 0
    x = RNG.standard_normal((2, 6, 5, 3)).astype(np.float32)
    assert run(rewritten, x).shape == run(gd, x).shape
    assert_same_numbers(gd, rewritten, x, atol=0)


def _lowered_loop() -> graph_pb2.GraphDef:
    """A frozen graph with a v1 (Switch/Merge) while loop: x -> loop -> out."""
    from tensorflow.python.framework import convert_to_constants

    def fn(x: Any) -> Any:
        return tf.identity(tf.while_loop(lambda i, y: i < 3, lambda i, y: (i + 1, y * 0.5 + 1.0), [0, x])[1],
                           name="out")

    concrete = tf.function(fn).get_concrete_function(tf.TensorSpec([4], tf.float32, name="x"))
    return convert_to_constants.convert_variables_to_constants_v2_as_graph(concrete, lower_control_flow=True)[1]


def test_reroute_switch_control_inputs() -> None:
    gd = _lowered_loop()
    assert needs_async(gd)
    switch = next(n.name for n in gd.node if n.op == "Switch")
    gd.node.append(make_node("waits", "NoOp", [f"^{switch}"]))
    rerouted = copy(gd)
    assert rewrites.reroute_switch_control_inputs(rerouted) == 1
    waits = node_map(rerouted)["waits"]
    pivot = node_map(rerouted)[parse_ref(waits.input[0]).node]
    assert pivot.op == "Identity" and pivot.input[0] == node_map(gd)[switch].input[0]
    x = RNG.standard_normal(4).astype(np.float32)
    assert_same_numbers(gd, rerouted, x)


# ---------------------------------------------------------------------------------------------------------------
# Pipeline-level checks

def test_drop_unused_control_flow_inputs() -> None:
    gd = graph_pb2.GraphDef()
    gd.node.extend([make_node("unused_control_flow_input_3", "Placeholder", []), make_node("x", "Placeholder", []),
                    make_node("y", "Identity", ["x", "^unused_control_flow_input_3"])])
    assert fusions.drop_unused_control_flow_inputs(gd) == 1
    assert ops(gd) == ["Placeholder", "Identity"] and list(gd.node[1].input) == ["x"]
    gd.node.extend([make_node("unused_control_flow_input_4", "Placeholder", []),
                    make_node("z", "Identity", ["unused_control_flow_input_4"])])
    with pytest.raises(ConversionError):
        fusions.drop_unused_control_flow_inputs(gd)


def test_debug_ops_are_stripped_or_refused() -> None:
    gd = graph_of(lambda x: tf.debugging.check_numerics(x * 2.0, "bad value"), (3,))
    stripped = optimize_graph_def(gd, X_INFO, OUT_INFO)
    assert "CheckNumerics" not in ops(stripped)
    with pytest.raises(UnsupportedOpsError) as info:
        optimize_graph_def(gd, X_INFO, OUT_INFO, strip_debug_ops=False)
    assert set(info.value.ops) == {"CheckNumerics"}


def test_replay_fetches_intermediate_nodes() -> None:
    gd = graph_of(lambda x: tf.nn.relu(tf.identity(x * 2.0, name="doubled")), (3,))
    x = np.array([-1.0, 0.5, 2.0], np.float32)
    got = replay_graph(gd, {}, {"x:0": x}, X_INFO, OUT_INFO, fetch=["doubled", "doubled:0"])
    np.testing.assert_array_equal(got["doubled"], x * 2)
    np.testing.assert_array_equal(got["doubled:0"], x * 2)
    np.testing.assert_array_equal(got["out"], np.maximum(x * 2, 0))
    with pytest.raises(ConversionError):
        replay_graph(gd, {}, {}, X_INFO, OUT_INFO)


def test_prune_and_integrity() -> None:
    gd = graph_of(lambda x: tf.nn.relu(x) * 2.0, (3,))
    gd.node.append(make_node("dead", "Relu", ["x"]))
    assert prune_dead_nodes(gd, {"out", "x"}) == 1
    check_integrity(gd, X_INFO, OUT_INFO)
    gd.node.append(make_node("bad", "Relu", ["missing:0"]))
    with pytest.raises(ConversionError, match="missing"):
        check_integrity(gd, X_INFO, OUT_INFO)


def _save_small_model(path: Path) -> None:
    module = tf.Module()
    module.w = tf.Variable(RNG.uniform(-1, 1, (3, 3, 2, 4)).astype(np.float32))
    module.b = tf.Variable(RNG.uniform(-1, 1, (4,)).astype(np.float32))
    module.f = tf.function(lambda x: {"y": tf.nn.relu(tf.nn.conv2d(x, module.w, 1, "SAME") + module.b)},
                           input_signature=[tf.TensorSpec([None, 5, 5, 2], tf.float32, name="x")])
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.f, "other": module.f})


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("graph_small") / "sm"
    _save_small_model(path)
    return path


def test_optimize_is_deterministic_and_quiet(small_model: Path, capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    first = optimize_for_tfjs(small_model)
    second = optimize_for_tfjs(small_model)
    assert capfd.readouterr().out == ""
    assert first.graph_def.SerializeToString(deterministic=True) == \
        second.graph_def.SerializeToString(deterministic=True)
    assert first.op_histogram == {"Const": 2, "Identity": 1, "Placeholder": 1, "_FusedConv2D": 1}
    assert [(i.key, i.name, i.dtype, i.shape) for i in first.inputs] == [("x", "x:0", "DT_FLOAT", [-1, 5, 5, 2])]
    assert [o.key for o in first.outputs] == ["y"] and not first.needs_async
    assert all(not n.device for n in first.graph_def.node)


def test_control_flow_v2_is_deterministic(tmp_path: Path) -> None:
    module = tf.Module()
    module.f = tf.function(lambda x: tf.while_loop(lambda i, y: i < 3, lambda i, y: (i + 1, y * 0.5 + 1.0),
                                                   [tf.constant(0), x])[1],
                           input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": module.f})
    first = optimize_for_tfjs(tmp_path / "sm", control_flow_v2=True)
    second = optimize_for_tfjs(tmp_path / "sm", control_flow_v2=True)
    assert first.graph_def.library.function and first.needs_async
    assert first.graph_def.SerializeToString(deterministic=True) == \
        second.graph_def.SerializeToString(deterministic=True)
    lowered = optimize_for_tfjs(tmp_path / "sm")
    assert not lowered.graph_def.library.function and "LoopCond" in lowered.op_histogram


def test_signature_and_folder_errors(small_model: Path, tmp_path: Path) -> None:
    assert optimize_for_tfjs(small_model, signature="other").outputs[0].key == "y"
    with pytest.raises(BridgeError) as info:
        optimize_for_tfjs(small_model, signature="missing")
    assert "other" in str(info.value) and "serving_default" in str(info.value)
    with pytest.raises(ModelLoadError):
        optimize_for_tfjs(tmp_path / "nothing-here")


# ---------------------------------------------------------------------------------------------------------------
# Small constants: shared per reader role, never across roles

def _const_roles(graph_def: graph_pb2.GraphDef) -> dict[str, set[tuple[str, int]]]:
    """For each Const: the (reader op, input index) roles it serves."""
    consts = {n.name for n in graph_def.node if n.op == "Const"}
    roles: dict[str, set[tuple[str, int]]] = {}
    for node in graph_def.node:
        for k, ref in enumerate(node.input):
            parsed = parse_ref(ref)
            if not parsed.control and parsed.node in consts:
                roles.setdefault(parsed.node, set()).add((node.op, k))
    return roles


def _range_and_add(x: Any) -> Any:
    """One Const 1 read as a Range's step (on the CPU in TF.js) and as an AddV2 operand (uploaded on WebGPU)."""
    one = tf.constant(1, tf.int32)
    positions = tf.range(0, tf.shape(x)[0], one) + one
    return x * tf.cast(positions, tf.float32)


def test_small_constants_are_shared_per_role_only() -> None:
    gd = graph_of(_range_and_add, (None,))
    mixed = [name for name, roles in _const_roles(gd).items() if len(roles) > 1]
    assert mixed, "the input graph must share one Const across roles, or this test proves nothing"
    optimized = optimize_graph_def(gd, X_INFO, OUT_INFO)
    assert {name: roles for name, roles in _const_roles(optimized).items() if len(roles) > 1} == {}
    assert ops(optimized).count("Range") == 1
    x = RNG.standard_normal(7).astype(np.float32)
    np.testing.assert_allclose(run(optimized, x), x * np.arange(1, 8, dtype=np.float32), atol=ATOL, rtol=RTOL)


# ---------------------------------------------------------------------------------------------------------------
# Softmax over float32-minimum masks: spelled out (TF.js WebGL/WebGPU get fully hidden rows wrong)

FLOAT32_MIN = float(np.finfo(np.float32).min)


def _masked_scores(x: Any, fill: float) -> Any:
    """Rows 0 and 2 of every batch hidden entirely, column 1 hidden everywhere else."""
    hide = tf.constant(np.array([[1, 1, 1, 1], [0, 1, 0, 0], [1, 1, 1, 1]], bool))
    return tf.nn.softmax(tf.where(hide, tf.constant(fill, tf.float32), x), axis=-1)


@pytest.mark.parametrize("fill,spelled_out", [
    (FLOAT32_MIN, True),
    (-1e30, True),
    (-1e4, False),  # a fill TF.js handles: the single fused Softmax stays
])
def test_masked_softmax_is_spelled_out(fill: float, spelled_out: bool) -> None:
    gd = graph_of(lambda x: _masked_scores(x, fill), (2, 3, 4))
    optimized = optimize_graph_def(gd, X_INFO, OUT_INFO)
    assert ("Softmax" not in ops(optimized)) == spelled_out
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    got = run(optimized, x)
    np.testing.assert_allclose(got, run(gd, x), atol=1e-6, rtol=1e-6)
    if fill <= -1e30:
        np.testing.assert_allclose(got[:, 0], 0.25, atol=1e-7)  # a hidden row: every key the same weight
        assert np.all(got[:, 1, 1] == 0.0)


def test_masked_softmax_numbers_differ_from_the_webgl_formula() -> None:
    """The check above can fail: TF.js WebGL's exp(x - logSumExp(x)) gives a hidden row all ones, not 1/n."""
    row = np.full(4, FLOAT32_MIN, np.float32)
    webgl_like = np.exp(row - (row.max() + np.float32(np.log(np.exp(row - row.max()).sum()))))
    assert not np.allclose(webgl_like, 0.25, atol=1e-7)
