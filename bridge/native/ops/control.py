"""Control flow: torch.cond as tf.cond, each branch a nested function of the generated __call__ (TF traces both;
the TF.js writer lowers the If to Switch/Merge, which TF.js runs with executeAsync)."""

from __future__ import annotations

from bridge.native.capture import COND
from bridge.native.codegen import OpContext
from bridge.native.ir import SYMINT, Graph, Node, Value
from bridge.native.registry import LayoutPolicy, converter


def _check_cond(node: Node) -> str | None:
    pred = node.args.get("pred")
    if not isinstance(pred, Value) or (pred.dtype not in ("bool", SYMINT)):
        return "a predicate that is not a boolean tensor or a size comparison"
    if isinstance(pred, Value) and pred.dtype == "bool" and any(d not in (1, None) for d in pred.shape):
        return "a predicate with more than one element"
    for key in ("true_graph", "false_graph"):
        branch = node.args.get(key)
        if not isinstance(branch, Graph):
            return "a branch that is not a captured subgraph"
        if any(not isinstance(v, Value) or v.dtype == SYMINT for v in branch.outputs):
            return "a branch returning something other than tensors"
    return None


@converter(COND, layout=LayoutPolicy.SOURCE, check=_check_cond, emits=("If", "StatelessIf", "Reshape"))
def cond(ctx: OpContext, node: Node) -> list[str]:
    """torch.ops.higher_order.cond(Tensor pred, GraphModule true_fn, GraphModule false_fn, Tensor[] operands)
    -> Tensor[]   (torch.cond; a boolean tensor of one element, or a comparison of sizes, as predicate)"""
    where = node.where()
    true_fn = ctx.closure("true", node.args["true_graph"], f"torch.cond's true branch ({where})")
    false_fn = ctx.closure("false", node.args["false_graph"], f"torch.cond's false branch ({where})")
    pred = ctx.t("pred")
    if ctx.value("pred").dtype != SYMINT:
        pred = f"tf.reshape({pred}, [])"
    branches = ctx.let(f"tf.cond({pred}, {true_fn}, {false_fn})", "branches")
    return [f"{branches}[{i}]" for i in range(len(node.outputs))]
