"""Reductions, arg-reductions, statistics, norms, logical reductions and cumulative ops. 4-D inputs are NCHW
stored NHWC by the native route, so reducing over dim 1 (channels) or dims 2/3 (spatial) exercises the axis
mapping. Index outputs are compared exactly: either as the model's (int) output, or folded into a float output
as `values * (indices + 1)`. clamp() makes ties, where PyTorch returns the first extremal index."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tests.native_op_cases.base import A, IMG, Fn, OpCase


def _values_times_indices(result: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    values, indices = result
    return values * (indices + 1)


def _var_mean_std_mean(x: torch.Tensor) -> torch.Tensor:
    variance, mean = torch.var_mean(x, 1)
    std, mean_hw = torch.std_mean(x, (2, 3), keepdim=True, correction=0)
    return x * std + mean_hw + (variance - mean).unsqueeze(1)


CASES = [
    # argmax / argmin: int64 indices in PyTorch, int32 on the web
    OpCase("argmax-channels-on-nhwc", lambda: Fn(lambda x: x.argmax(1)), [IMG], (A + "argmax.default",),
           max_transposes=0),
    OpCase("argmax-ties-channels-keepdim", lambda: Fn(lambda x: x.clamp(max=0.3).argmax(1, keepdim=True)), [IMG],
           (A + "argmax.default",), max_transposes=0),
    OpCase("argmax-ties-width", lambda: Fn(lambda x: x.clamp(max=0.2).argmax(-1)), [IMG], (A + "argmax.default",),
           max_transposes=1),  # the 3-D (N, C, H) result is stored NHC: restored to PyTorch order at the output
    OpCase("argmax-flattened-on-nhwc", lambda: Fn(lambda x: x.clamp(max=1.0).argmax()), [IMG],
           (A + "argmax.default",)),
    OpCase("argmax-flattened-keepdim", lambda: Fn(lambda x: x.argmax(keepdim=True)), [(3, 5)],
           (A + "argmax.default",)),
    OpCase("argmin-ties-height-keepdim", lambda: Fn(lambda x: x.clamp(min=-0.2).argmin(2, keepdim=True)), [IMG],
           (A + "argmin.default",), max_transposes=0),
    OpCase("argmin-ties-channels", lambda: Fn(lambda x: x.clamp(min=-0.3).argmin(1)), [IMG],
           (A + "argmin.default",), max_transposes=0),
    OpCase("argmin-flattened-on-nhwc", lambda: Fn(lambda x: x.clamp(min=-1.0).argmin()), [IMG],
           (A + "argmin.default",)),
    OpCase("argmax-int-input", lambda: Fn(lambda i: i.argmax(1)), [(3, 6)], (A + "argmax.default",), ints=(0,)),
    # max.dim / min.dim: values and indices
    OpCase("max-dim-channels-values-indices", lambda: Fn(lambda x: _values_times_indices(x.clamp(max=0.3).max(1))),
           [IMG], (A + "max.dim", A + "add.Tensor", A + "mul.Tensor"), max_transposes=0),
    OpCase("max-dim-indices-height-keepdim", lambda: Fn(lambda x: x.clamp(max=0.3).max(2, keepdim=True)[1]), [IMG],
           (A + "max.dim",), max_transposes=0),
    OpCase("max-dim-values-keepdim-broadcast", lambda: Fn(lambda x: x - x.max(1, keepdim=True)[0]), [IMG],
           (A + "max.dim",), max_transposes=0),
    OpCase("min-dim-width-values-indices", lambda: Fn(lambda x: _values_times_indices(x.clamp(min=-0.2).min(3))),
           [IMG], (A + "min.dim",), max_transposes=1),
    OpCase("min-dim-indices-channels-keepdim", lambda: Fn(lambda x: x.clamp(min=-0.3).min(1, keepdim=True)[1]),
           [IMG], (A + "min.dim",), max_transposes=0),
    # full max / min
    OpCase("max-min-all", lambda: Fn(lambda x: x * x.max() - x.min()), [IMG], (A + "max.default", A + "min.default"),
           max_transposes=0),
    OpCase("max-all-scalar-output", lambda: Fn(lambda x: x.max()), [IMG], (A + "max.default",)),
    # prod
    OpCase("prod-channels-on-nhwc", lambda: Fn(lambda x: x.prod(1)), [IMG], (A + "prod.dim_int",), max_transposes=0),
    OpCase("prod-width-keepdim", lambda: Fn(lambda x: (x * 0.5 + 1).prod(3, keepdim=True)), [IMG],
           (A + "prod.dim_int",), max_transposes=0),
    OpCase("prod-all", lambda: Fn(lambda x: x.prod() * x), [(3, 4)], (A + "prod.default",)),
    OpCase("prod-int", lambda: Fn(lambda i: i.prod(1)), [(3, 5)], (A + "prod.dim_int",), ints=(0,)),
    # var / std (correction)
    OpCase("var-channels-on-nhwc", lambda: Fn(lambda x: x.var(1)), [IMG], (A + "var.correction",), max_transposes=0),
    OpCase("var-hw-biased-keepdim", lambda: Fn(lambda x: x.var((2, 3), unbiased=False, keepdim=True)), [IMG],
           (A + "var.correction",), max_transposes=0),
    OpCase("var-all", lambda: Fn(lambda x: x.var() * x), [(3, 4)], (A + "var.correction",)),
    OpCase("var-correction-2", lambda: Fn(lambda x: torch.var(x, -1, correction=2)), [(3, 7)],
           (A + "var.correction",)),
    OpCase("std-channels-keepdim", lambda: Fn(lambda x: x.std(1, keepdim=True)), [IMG], (A + "std.correction",),
           max_transposes=0),
    OpCase("std-hw-correction0", lambda: Fn(lambda x: torch.std(x, (2, 3), correction=0)), [IMG],
           (A + "std.correction",), max_transposes=0),
    OpCase("std-all", lambda: Fn(lambda x: x.std() + x), [(3, 4)], (A + "std.correction",)),
    OpCase("var-mean-std-mean", lambda: Fn(_var_mean_std_mean), [IMG], (A + "var_mean.correction",),
           max_transposes=0),
    # vector norms (F.normalize uses linalg_vector_norm)
    OpCase("norm2-channels-on-nhwc", lambda: Fn(lambda x: x.norm(dim=1)), [IMG], (A + "linalg_vector_norm.default",),
           max_transposes=0),
    OpCase("normalize-channels", lambda: Fn(lambda x: F.normalize(x, dim=1)), [IMG],
           (A + "linalg_vector_norm.default",), max_transposes=0),
    OpCase("norm1-hw-keepdim", lambda: Fn(lambda x: torch.linalg.vector_norm(x, 1, dim=(2, 3), keepdim=True)), [IMG],
           (A + "linalg_vector_norm.default",), max_transposes=0),
    OpCase("norm-inf-channels", lambda: Fn(lambda x: torch.linalg.vector_norm(x, math.inf, dim=1)
                                           + torch.linalg.vector_norm(x, -math.inf, dim=1)), [IMG],
           (A + "linalg_vector_norm.default",), max_transposes=0),
    OpCase("norm-p3-and-all", lambda: Fn(lambda x: x.norm(p=3, dim=-1) * x.norm()), [(3, 6)],
           (A + "linalg_vector_norm.default",)),
    # logical reductions
    OpCase("any-all-channels-on-nhwc", lambda: Fn(lambda x: x.sum(1) * (x > 1).any(1) + (x > -1).all(1) * 2.0),
           [IMG], (A + "any.dim", A + "all.dim"), max_transposes=0),
    OpCase("any-all-hw-keepdim", lambda: Fn(lambda x: x * (x > 2).any((2, 3), keepdim=True)
                                            - (x > -2).all((2, 3), keepdim=True) * 0.5), [IMG],
           (A + "any.dims", A + "all.dims"), max_transposes=0),
    OpCase("any-all-everything", lambda: Fn(lambda x: x * (x > 2).any() + (x > -3).all() * 1.5), [IMG],
           (A + "any.default", A + "all.default"), max_transposes=0),
    # logsumexp (kept whole: its decomposition needs ops without converters)
    OpCase("logsumexp-channels-on-nhwc", lambda: Fn(lambda x: torch.logsumexp(x, 1)), [IMG],
           (A + "logsumexp.default",), max_transposes=0),
    OpCase("logsumexp-hw-keepdim", lambda: Fn(lambda x: torch.logsumexp(x * 30, (2, 3), keepdim=True)), [IMG],
           (A + "logsumexp.default",), max_transposes=0),
    OpCase("logsumexp-minus-inf", lambda: Fn(lambda x: torch.logsumexp(torch.log(torch.relu(x)), 1)), [IMG],
           (A + "logsumexp.default", A + "log.default"), max_transposes=0),
    # cumulative ops
    OpCase("cumsum-channels-on-nhwc", lambda: Fn(lambda x: x.cumsum(1)), [IMG], (A + "cumsum.default",),
           max_transposes=0),
    OpCase("cumsum-width", lambda: Fn(lambda x: x.cumsum(-1)), [IMG], (A + "cumsum.default",), max_transposes=0),
    OpCase("cumsum-ncw", lambda: Fn(lambda x: x.cumsum(1) + x.cumsum(2)), [(2, 4, 10)], (A + "cumsum.default",),
           max_transposes=0),
    OpCase("cumsum-int", lambda: Fn(lambda i: i.cumsum(1)), [(3, 6)], (A + "cumsum.default",), ints=(0,)),
    OpCase("cumprod-height", lambda: Fn(lambda x: (x * 0.5 + 1).cumprod(2)), [IMG], (A + "cumprod.default",),
           max_transposes=0),
]
