"""Linear algebra: linear (absorbs a flattened channels-last input by permuting its weight rows), matmul, mm,
bmm, addmm."""

from __future__ import annotations

from bridge.native.codegen import OpContext, lit
from bridge.native.ir import Node
from bridge.native.registry import LayoutPolicy, converter
from bridge.native.weights import linear_to_in_out, permute_rows


@converter("aten.linear.default", layout=LayoutPolicy.FEATURES, emits=("MatMul", "BiasAdd", "Reshape"))
def linear(ctx: OpContext, node: Node) -> str:
    """aten::linear(Tensor input, Tensor weight, Tensor? bias=None) -> Tensor"""
    layout = ctx.layout()
    if layout.flat is not None:
        order = layout.flat.feature_order()
        kernel = ctx.weight("weight", f"in_out, rows in {_block_order(layout.flat.perm)} order",
                            lambda w: permute_rows(linear_to_in_out(w), order))
    else:
        kernel = ctx.weight("weight", "in_out", linear_to_in_out, lambda e: f"tf.transpose({e})")
    x = ctx.t()
    rank = ctx.value().rank
    if rank != 2:
        x = f"tf.reshape({x}, [-1, {ctx.value().shape[-1]}])"
    y = f"tf.linalg.matmul({x}, {kernel})"
    if ctx.has("bias"):  # on the 2-D product, where grappler fuses MatMul + BiasAdd (one TF.js kernel)
        y = f"tf.nn.bias_add({y}, {ctx.t('bias')})"
    return y if rank == 2 else f"tf.reshape({y}, {ctx.shape_list(ctx.out_dims())})"


def _block_order(perm: tuple[int, ...]) -> str:
    """`hwc` for the (1, 2, 0) storage order of a flattened (c, h, w) block."""
    letters = {2: "cl", 3: "chw", 4: "cdhw"}.get(len(perm))
    return "".join(letters[p] for p in perm) if letters else str(perm)


def _check_matmul(node: Node) -> str | None:
    tensors = [v for _, v in node.tensor_args()]
    return "matmul with a 1-D operand" if any(v.rank < 2 for v in tensors) else None


@converter("aten.matmul.default", "aten.mm.default", "aten.bmm.default", layout=LayoutPolicy.SOURCE,
           emits=("MatMul", "BatchMatMulV2"), check=_check_matmul)
def matmul(ctx: OpContext, node: Node) -> str:
    """aten::matmul(Tensor self, Tensor other) -> Tensor   (also mm(self, mat2) and bmm(self, mat2))"""
    other = "other" if "other" in node.args else "mat2"
    return f"tf.linalg.matmul({ctx.t('self')}, {ctx.t(other)})"


@converter("aten.addmm.default", layout=LayoutPolicy.SOURCE, emits=("MatMul", "AddV2", "Mul"))
def addmm(ctx: OpContext, node: Node) -> str:
    """aten::addmm(Tensor self, Tensor mat1, Tensor mat2, *, Scalar beta=1, Scalar alpha=1) -> Tensor"""
    beta, alpha = ctx.arg("beta", 1), ctx.arg("alpha", 1)
    product = f"tf.linalg.matmul({ctx.t('mat1')}, {ctx.t('mat2')})"
    bias = ctx.t("self")
    product = product if alpha == 1 else f"{lit(float(alpha))} * {product}"
    bias = bias if beta == 1 else f"{lit(float(beta))} * {bias}"
    return f"{bias} + {product}"

