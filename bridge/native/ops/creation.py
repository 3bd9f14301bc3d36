"""Tensors created from nothing: full (what nn.LSTM/GRU's default zero states and torch.full capture as)."""

from __future__ import annotations

from bridge.native.codegen import OpContext, lit
from bridge.native.ir import Node, Value
from bridge.native.registry import LayoutPolicy, converter


@converter("aten.full.default", layout=LayoutPolicy.SOURCE, emits=("Fill", "Pack"))
def full(ctx: OpContext, node: Node) -> str:
    """aten::full(SymInt[] size, Scalar fill_value, *, ScalarType? dtype=None, Layout? layout=None,
    Device? device=None, bool? pin_memory=None) -> Tensor"""
    size = list(ctx.arg("size", []))
    dtype = ctx.out().dtype
    value = ctx.arg("fill_value")
    value = bool(value) if dtype == "bool" else float(value) if dtype.startswith(("float", "bfloat")) else int(value)
    dims = f"[{', '.join(lit(d) for d in size)}]" if not any(isinstance(d, Value) for d in size) else \
        f"tf.stack([{', '.join(ctx.sym(d) for d in size)}])"
    return f"tf.fill({dims}, tf.constant({lit(value)}, tf.{dtype}))"
