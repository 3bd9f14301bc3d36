"""Helpers shared by the converter families: argument normalisation and PyTorch -> TF padding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from bridge.native.ir import Node, Value
from bridge.native.layout import RELAYOUT
from bridge.tfjs.same_padding import same_pad_clamped, tf_same_pads

if TYPE_CHECKING:
    from bridge.native.codegen import OpContext


def ntuple(value: Any, n: int) -> tuple[int, ...]:
    """An int or a 1-/n-element list as an n-tuple."""
    if isinstance(value, (list, tuple)):
        items = tuple(int(v) for v in value)
        return items * n if len(items) == 1 else items
    return (int(value),) * n


def producer_through_relayouts(ctx: OpContext, value: Value, reader: Node) -> Node | None:
    """The node computing `value` for `reader`, looking through the layout pass's conversions; None when some
    value on the way has another reader (its producer must then run anyway)."""
    while True:
        node = value.producer
        if node is None or not ctx.sole_user(value, reader):
            return None
        if node.target != RELAYOUT:
            return node
        value, reader = node.args["input"], node


def first_tensor(node: Node) -> Value:
    """The node's first tensor argument (its main input)."""
    return next(node.tensor_args())[1]


@dataclass(frozen=True)
class Padding:
    """Padding for a windowed op: TF's 'SAME'/'VALID' when one of them matches, else explicit pads
    [(before, after)] per spatial axis to apply with tf.pad before a VALID op."""

    mode: str  # "SAME" | "VALID" | "EXPLICIT"
    pads: tuple[tuple[int, int], ...]

    def literal(self) -> str:
        """The `padding=` argument for the TF op."""
        return '"SAME"' if self.mode == "SAME" else '"VALID"'

    def tf_pad(self, rank: int) -> list[list[int]]:
        """tf.pad paddings for a channels-last tensor of `rank` axes."""
        return [[0, 0], *[list(p) for p in self.pads], [0, 0]][:rank]


def window_padding(sizes: Sequence[int], outs: Sequence[int], kernel: Sequence[int], stride: Sequence[int],
                   dilation: Sequence[int], before: Sequence[int]) -> Padding:
    """Padding reproducing PyTorch's output sizes `outs` from input `sizes` with `before` leading pads; the
    trailing pad is what the last window needs (covers ceil_mode and asymmetric 'same')."""
    pads = []
    for size, out, k, s, d, b in zip(sizes, outs, kernel, stride, dilation, before):
        needed = (out - 1) * s + (k - 1) * d + 1
        pads.append((b, max(needed - size - b, 0)))
    pads_t = tuple(pads)
    if all(p == (0, 0) for p in pads_t):
        return Padding("VALID", pads_t)
    same = tuple(tf_same_pads(size, k, s, d) for size, k, s, d in zip(sizes, kernel, stride, dilation))
    outs_same = tuple(-(-size // s) for size, s in zip(sizes, stride))
    if pads_t == same and tuple(outs) == outs_same and not any(map(same_pad_clamped, sizes, kernel, stride, dilation)):
        return Padding("SAME", pads_t)
    return Padding("EXPLICIT", pads_t)


def dynamic_window_padding(stride: Sequence[int], pads: Sequence[tuple[int, int]], kernel: Sequence[int],
                           dilation: Sequence[int]) -> Padding:
    """Padding for a windowed op over spatial sizes known only at run time, from PyTorch's own (before, after)
    pads: VALID when there are none, TF's SAME when every stride is 1 and the pads are SAME's (for stride 1 they
    do not depend on the size), else explicit pads before a VALID op (PyTorch's formula, exact at every size)."""
    pads_t = tuple((int(b), int(a)) for b, a in pads)
    if all(p == (0, 0) for p in pads_t):
        return Padding("VALID", pads_t)
    same = tuple(((k - 1) * d // 2, (k - 1) * d - (k - 1) * d // 2) for k, d in zip(kernel, dilation))
    if all(s == 1 for s in stride) and pads_t == same:
        return Padding("SAME", pads_t)
    return Padding("EXPLICIT", pads_t)


def static_dims(dims: Sequence[int | None]) -> bool:
    """True when every dim is known."""
    return all(d is not None for d in dims)
