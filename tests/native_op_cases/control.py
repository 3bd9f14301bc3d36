"""Control flow: torch.cond (both branches converted; the random input decides which one runs). Its own cases
at several inputs taking each branch are in tests/test_native_cond.py."""

from __future__ import annotations

import torch

from tests.native_op_cases.base import IMG, Fn, OpCase


def _branchy(x: torch.Tensor) -> torch.Tensor:
    return torch.cond(x.mean() > 0, lambda t: t.relu() * 2, lambda t: t.mean(1, keepdim=True) - t, (x,))


CASES = [
    OpCase("cond-on-nhwc-map", lambda: Fn(_branchy), [IMG], ("higher_order.cond",)),
]
