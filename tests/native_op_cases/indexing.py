"""Indexing, creation and padding cases: advanced indexing (constant and input indices, one or several index
tensors), index_select, gather, flip, roll, arange, full_like, scalar_tensor, triu/tril (and a causal mask built
inside forward), reflection/replication padding and convs with padding_mode reflect/replicate. IMG inputs are
stored NHWC: indexing, flipping and padding them on channel and spatial axes must map to the stored axes (most of
these cases allow no transposes). Index inputs are int64 in PyTorch and int32 in the web model."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from tests.native_op_cases.base import IMG, A, Fn, OpCase, WithParam

IDX = A + "index.Tensor"
CUBE = (1, 2, 4, 5, 6)


def _causal_scores(x: torch.Tensor) -> torch.Tensor:
    """Attention-style scores masked with a causal mask made inside forward."""
    t = x.shape[-1]
    mask = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
    return x.masked_fill(mask, float("-inf")).softmax(-1)


def _aranges(x: torch.Tensor) -> torch.Tensor:
    return (x + torch.arange(8) + torch.arange(1, 9) * 0.5 + torch.arange(0, 16, 2, dtype=torch.float32)
            + torch.arange(0.0, 1.0, 0.125) + torch.arange(x.shape[-1]).flip(0))


def _likes(x: torch.Tensor) -> torch.Tensor:
    return (torch.zeros_like(x) + torch.ones_like(x) * x - torch.full_like(x, 2.5)
            + torch.full_like(x, 3, dtype=torch.int64))


CASES = [
    # advanced indexing
    OpCase("index-channels-list-on-nhwc", lambda: Fn(lambda x: x[:, [0, 2]] * 2 + x[:, [3, -1]]), [IMG], (IDX,),
           max_transposes=0),
    OpCase("index-spatial-list-on-nhwc",
           lambda: Fn(lambda x: x[:, :, [1, 0, 5]][..., :3] + x[..., [-1, 2, 2]][:, :, :3]), [IMG], (IDX,),
           max_transposes=0),
    OpCase("index-input-rows", lambda: Fn(lambda x, i: x[i]), [(4, 5), (3,)], (IDX,), ints=(1,)),
    OpCase("index-input-batch-on-nhwc", lambda: Fn(lambda x, i: x[i]), [(4, 3, 5, 5), (3,)], (IDX,), ints=(1,),
           max_transposes=0),
    OpCase("index-2d-index-on-nhwc-channels", lambda: Fn(lambda x, i: x[:, i].sum(-1)), [IMG, (2, 3)], (IDX,),
           ints=(1,)),
    OpCase("index-two-tensors-broadcast", lambda: Fn(lambda x, i, j: x[i, j]), [(4, 4, 5), (3,), (2, 1)], (IDX,),
           ints=(1, 2)),
    OpCase("index-two-tensors-inner-on-nhwc", lambda: Fn(lambda x, i, j: x[:, i, j]), [IMG, (3,), (3,)], (IDX,),
           ints=(1, 2)),
    OpCase("index-two-tensors-separated", lambda: Fn(lambda x, i, j: x[i, :, j]), [(4, 3, 4), (2, 3), (3,)],
           (IDX,), ints=(1, 2)),
    OpCase("index-with-slice-and-int", lambda: Fn(lambda x, i: x[i, 1:3] + x[:, 1, [0, 2]].sum()), [(4, 4, 5), (3,)],
           (IDX,), ints=(1,)),
    OpCase("index-negative-input-indices", lambda: Fn(lambda x, i: x[:, i - 2]), [(3, 4), (5,)], (IDX,), ints=(1,)),
    OpCase("index-weight-table", lambda: WithParam((4, 6), lambda i, p: p[i] * 2), [(2, 3)], (IDX,), ints=(0,)),
    # index_select, gather
    OpCase("index-select-on-nhwc", lambda: Fn(lambda x, i: torch.index_select(x, 1, i) + torch.index_select(x, 3, i)
                                              .sum(-1, keepdim=True)), [IMG, (4,)],
           (A + "index_select.default",), ints=(1,), max_transposes=0),
    OpCase("gather-channels-on-nhwc", lambda: Fn(lambda x, i: torch.gather(x, 1, i)), [IMG, (2, 3, 8, 8)],
           (A + "gather.default",), ints=(1,), max_transposes=0),
    OpCase("gather-height-on-nhwc", lambda: Fn(lambda x, i: torch.gather(x, 2, i)), [IMG, (2, 4, 5, 8)],
           (A + "gather.default",), ints=(1,)),
    OpCase("gather-smaller-index", lambda: Fn(lambda x, i: torch.gather(x, 0, i) + x.gather(-1, i[:, :2]).sum()),
           [(4, 6), (3, 5)], (A + "gather.default",), ints=(1,)),
    # flip, roll
    OpCase("flip-on-nhwc", lambda: Fn(lambda x: torch.flip(x, [1, 3]) + x.flip(-2)), [IMG], (A + "flip.default",),
           max_transposes=0),
    OpCase("roll-on-nhwc", lambda: Fn(lambda x: torch.roll(x, 2, 3) + torch.roll(x, (1, -3), (1, 2))), [IMG],
           (A + "roll.default",), max_transposes=0),
    OpCase("roll-flattened", lambda: Fn(lambda x: torch.roll(x, 7) - torch.roll(x, -2, 0)), [(3, 5)],
           (A + "roll.default",)),
    # creation
    OpCase("arange", lambda: Fn(_aranges), [(3, 8)], (A + "arange.default", A + "arange.start",
                                                     A + "arange.start_step")),
    OpCase("full-like-on-nhwc", lambda: Fn(_likes), [IMG], (A + "full_like.default",), max_transposes=0),
    OpCase("new-zeros-ones-full", lambda: Fn(lambda x: x.new_zeros(3, 5) + x.new_ones(5) * x + x.new_full((5,), 2.0)),
           [(3, 5)], (A + "full.default",)),
    OpCase("scalar-tensor", lambda: Fn(lambda x: torch.where(x > 0, x, torch.scalar_tensor(2.0))), [IMG],
           (A + "scalar_tensor.default",)),
    OpCase("triu-tril", lambda: Fn(lambda x: torch.triu(x) + torch.tril(x, -1) * 2 + torch.triu(x, 2) * 3
                                   + torch.tril(x, 1) * 4), [(3, 5, 6)], (A + "triu.default", A + "tril.default")),
    OpCase("triu-tril-on-nhwc", lambda: Fn(lambda x: torch.triu(x, 1) + torch.tril(x, -2)), [IMG],
           (A + "triu.default", A + "tril.default"), max_transposes=0),
    OpCase("causal-mask-masked-fill", lambda: Fn(_causal_scores), [(2, 3, 6, 6)], (A + "triu.default",),
           layouts={"x": "source"}),
    OpCase("causal-mask-masked-fill-3d", lambda: Fn(_causal_scores), [(2, 5, 5)], (A + "triu.default",)),
    # padding
    OpCase("reflection-pad1d", lambda: nn.ReflectionPad1d((2, 1)), [(2, 3, 8)], (A + "reflection_pad1d.default",)),
    OpCase("reflection-pad2d-on-nhwc", lambda: nn.ReflectionPad2d((1, 2, 3, 0)), [IMG],
           (A + "reflection_pad2d.default",), max_transposes=0),
    OpCase("reflection-pad3d", lambda: nn.ReflectionPad3d((1, 0, 2, 1, 1, 2)), [CUBE],
           (A + "reflection_pad3d.default",)),
    OpCase("replication-pad1d", lambda: nn.ReplicationPad1d((3, 1)), [(2, 3, 8)], (A + "replication_pad1d.default",)),
    OpCase("replication-pad-unbatched", lambda: Fn(lambda x: F.pad(x, (2, 3), mode="replicate")), [(3, 5)],
           (A + "replication_pad1d.default",)),
    OpCase("replication-pad2d-on-nhwc", lambda: nn.ReplicationPad2d((1, 2, 3, 0)), [IMG],
           (A + "replication_pad2d.default",), max_transposes=0),
    OpCase("replication-pad3d", lambda: nn.ReplicationPad3d((1, 0, 2, 1, 0, 2)), [CUBE],
           (A + "replication_pad3d.default",)),
    OpCase("conv2d-padding-mode-reflect", lambda: nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect"), [IMG],
           (A + "reflection_pad2d.default", A + "conv2d.default"), max_transposes=0),
    OpCase("conv2d-padding-mode-replicate", lambda: nn.Conv2d(4, 6, 3, padding=(2, 1), padding_mode="replicate"),
           [IMG], (A + "replication_pad2d.default", A + "conv2d.default"), max_transposes=0),
]
