"""Elementwise and activation cases: unary math, rounding, remainders, rounding division, powers, casts, logical
and bitwise ops, softplus and mish. IMG inputs are stored NHWC by the native route, so these also check that the
ops run in the stored layout without relayouts."""

from __future__ import annotations

import torch
import torch.nn as nn

from tests.native_op_cases.base import IMG, A, Fn, OpCase, WithParam


def _unary_math(x: torch.Tensor) -> torch.Tensor:
    return (torch.log1p(x.abs()) + torch.expm1(x) + torch.sin(x) * torch.cos(x) + torch.erf(x) + torch.sign(x)
            + torch.reciprocal(x.abs() + 0.5))


def _logical(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (torch.logical_and(a > 0, b > 0).float() + torch.logical_or(a * (a > 0), b > 0.5).float() * 2
            + torch.logical_xor(a > 0, b).float() * 4 + torch.logical_not(a > 0.3).float() * 8
            + torch.logical_not(b * (b > 0)).float() * 16)


def _bitwise(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((((a > 0) & (b > 0)) | ~(a > b)) ^ (b < -0.5)).float()


def broadcast_mix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Every op whose TF.js wasm kernel is slow on aligned broadcasting, with `b` broadcast against `a`
    (bridge/native/ops/elementwise.py, `suffix_shaped`)."""
    return (((a > b) & (b < 0.3)).float() + torch.maximum(a, b) + torch.minimum(b, a) * 2
            + torch.pow(a.abs() + 0.5, b) + torch.logical_or(a > 0, b > 0).float() * 4 + (b == a).float() * 8)


def _casts(x: torch.Tensor) -> torch.Tensor:
    y = x * 3
    return y.long().float() + y.to(torch.int32).float() * 2 + (x * (x > 0)).bool().float() * 4 + y.float()


CASES = [
    # activations
    OpCase("softplus", lambda: nn.Softplus(), [IMG], (A + "softplus.default",), max_transposes=0),
    OpCase("softplus-beta-threshold", lambda: nn.Softplus(beta=2.0, threshold=1.5), [IMG],
           (A + "softplus.default",)),
    OpCase("mish", lambda: nn.Mish(), [IMG], (A + "mish.default",)),
    # unary math
    OpCase("unary-math-more", lambda: Fn(_unary_math), [IMG],
           (A + "log1p.default", A + "expm1.default", A + "sin.default", A + "cos.default", A + "erf.default",
            A + "sign.default", A + "reciprocal.default"), max_transposes=0),
    OpCase("floor-ceil-trunc", lambda: Fn(lambda x: torch.floor(x * 3) + torch.ceil(x * 3) * 2
                                          + torch.trunc(x * 3) * 4), [IMG],
           (A + "floor.default", A + "ceil.default", A + "trunc.default")),
    # floor(4x) / 2 is a multiple of 0.5: half the values are ties, which round to even
    OpCase("round-half-even", lambda: Fn(lambda x: torch.round(torch.floor(x * 4) / 2)), [IMG],
           (A + "round.default",)),
    OpCase("round-decimals", lambda: Fn(lambda x: torch.round(x, decimals=2) + torch.round(x * 100, decimals=-1)),
           [IMG], (A + "round.decimals",)),
    # remainders: remainder takes the divisor's sign, fmod the dividend's
    OpCase("fmod-remainder-scalar", lambda: Fn(lambda x: torch.fmod(x * 3, 0.7) + torch.remainder(x * 3, -0.7) * 2
                                               + (x * 3) % 1.3 * 4 + torch.fmod(x * 3, -1.1) * 8), [IMG],
           (A + "fmod.Scalar", A + "remainder.Scalar")),
    OpCase("fmod-remainder-tensor", lambda: Fn(lambda a, b: torch.fmod(a * 3, b) + torch.remainder(a * 3, b) * 2),
           [IMG, IMG], (A + "fmod.Tensor", A + "remainder.Tensor"), max_transposes=0),
    OpCase("fmod-remainder-int", lambda: Fn(lambda i: torch.remainder(i - 2, 3) + torch.fmod(i - 2, -3) * 10
                                            + torch.remainder(i - 2, -3) * 100), [(3, 5)],
           (A + "fmod.Scalar", A + "remainder.Scalar"), ints=(0,)),
    OpCase("remainder-pow-param-c11-on-nhwc", lambda: WithParam((4, 1, 1), lambda x, p: torch.remainder(
        x * 3, p.abs() + 0.5) + torch.pow(x.abs(), p)), [IMG], (A + "remainder.Tensor", A + "pow.Tensor_Tensor"),
           max_transposes=0),
    # rounding division
    OpCase("div-rounding-modes", lambda: Fn(lambda a, b: torch.div(a * 3, b, rounding_mode="floor")
                                            + torch.div(a * 3, b, rounding_mode="trunc") * 2
                                            + torch.div(a, 0.7, rounding_mode="floor") * 4), [IMG, IMG],
           (A + "div.Tensor_mode",)),
    OpCase("div-rounding-modes-int", lambda: Fn(lambda i: torch.div(i - 2, 3, rounding_mode="trunc")
                                                + torch.div(i - 2, 3, rounding_mode="floor") * 10
                                                + torch.div(i - 2, -3, rounding_mode="trunc") * 100
                                                + (i - 2) // 2 * 1000), [(3, 5)], (A + "div.Tensor_mode",),
           ints=(0,)),
    # powers and clamps with tensor bounds
    OpCase("pow-scalar-base-and-tensor", lambda: Fn(lambda a, b: 2 ** a + torch.pow(a.abs() + 0.5, b)),
           [IMG, IMG], (A + "pow.Scalar", A + "pow.Tensor_Tensor")),
    OpCase("clamp-tensor", lambda: Fn(lambda a, b: torch.clamp(a, min=b * 0.5) + torch.clamp(a, max=b)
                                      + torch.clamp(a, b - 1, b + 1)), [IMG, IMG], (A + "clamp.Tensor",),
           max_transposes=0),
    # clamps of integer tensors (relative-position buckets): integer bounds keep the dtype, float ones promote
    OpCase("clamp-int", lambda: Fn(lambda i: (i * 3 - 4).clamp(0, 5) + (i - 1).clamp(min=0) * 10
                                   + (i * 2).clamp(max=3) * 100), [(3, 5)], (A + "clamp.default",), ints=(0,)),
    OpCase("clamp-int-float-bounds", lambda: Fn(lambda i: i.clamp(0.5, 2.5) + (i - 2).clamp(min=-0.5) * 10),
           [(3, 5)], (A + "clamp.default",), ints=(0,)),
    # casts, logical and bitwise ops
    OpCase("casts", lambda: Fn(_casts), [IMG], (A + "_to_copy.default",)),
    OpCase("cast-to-long-output", lambda: Fn(lambda x: (x * 3).long()), [IMG], (A + "_to_copy.default",)),
    OpCase("cast-int-input", lambda: Fn(lambda i, x: x * i.float() + i.to(torch.int32) * 2), [(3, 5), (3, 5)],
           (A + "_to_copy.default",), ints=(0,)),
    OpCase("logical-ops", lambda: Fn(_logical), [IMG, IMG],
           (A + "logical_and.default", A + "logical_or.default", A + "logical_xor.default",
            A + "logical_not.default", A + "_to_copy.default"), max_transposes=0),
    OpCase("bitwise-bool", lambda: Fn(_bitwise), [IMG, IMG],
           (A + "bitwise_and.Tensor", A + "bitwise_or.Tensor", A + "bitwise_xor.Tensor", A + "bitwise_not.default")),
    # broadcasting: leading size-1 axes dropped so the smaller operand is a suffix of the other's shape (fast on
    # TF.js wasm); a size-1 axis between others cannot be, and stays
    OpCase("broadcast-leading-ones", lambda: Fn(broadcast_mix), [(1, 1, 6, 5), (1, 1, 1, 5)],
           (A + "gt.Tensor", A + "maximum.default", A + "pow.Tensor_Tensor", A + "bitwise_and.Tensor"),
           layouts={"in0": "source", "in1": "source"}),
    OpCase("broadcast-inner-size-one", lambda: Fn(broadcast_mix), [(2, 3, 4), (2, 1, 4)],
           (A + "gt.Tensor", A + "maximum.default"), layouts={"in0": "source", "in1": "source"}),
]
