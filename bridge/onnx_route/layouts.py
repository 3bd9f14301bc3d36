"""Which inputs and outputs of the TF model are channels-last, and how to get there from PyTorch's order.

bridge's rule for the ONNX route: a 4-D floating-point input follows the user's `input_layouts` entry ("nhwc" by
default, what `tf.browser.fromPixels` gives, or "nchw"); every other input keeps PyTorch's axis order. Outputs keep
whatever onnx2tf produced for 4-D tensors (reported as "nhwc" or "nchw" with the permutation); other ranks are put
back into PyTorch's order. Which permutation an output really has is decided numerically against onnxruntime, never
from shapes alone (a 1x3x3x3 tensor looks the same in both layouts).
"""

from __future__ import annotations

from typing import Literal, Mapping, Sequence

import numpy as np

from bridge.errors import UsageError
from bridge.source.ports import inverse_perm  # noqa: F401 - part of this module's vocabulary

Layout = Literal["nchw", "nhwc", "source"]
IMAGE_LAYOUTS: tuple[str, ...] = ("nhwc", "nchw")
DEFAULT_IMAGE_LAYOUT = "nhwc"
NCHW_TO_NHWC: tuple[int, ...] = (0, 2, 3, 1)
# onnx2tf's channels-last permutation per rank (NCW -> NWC, NCHW -> NHWC, NCDHW -> NDHWC).
CHANNELS_LAST_PERM: dict[int, tuple[int, ...]] = {3: (0, 2, 1), 4: (0, 2, 3, 1), 5: (0, 2, 3, 4, 1)}


def identity_perm(rank: int) -> tuple[int, ...]:
    """The permutation that changes nothing."""
    return tuple(range(rank))


def apply_perm(value: np.ndarray, perm: Sequence[int] | None) -> np.ndarray:
    """`value` transposed by `perm` (contiguous), or unchanged when `perm` is None or the identity."""
    array = np.asarray(value)
    if perm is None or tuple(perm) == identity_perm(array.ndim):
        return array
    if len(perm) != array.ndim:
        raise ValueError(f"permutation {tuple(perm)} does not fit an array of rank {array.ndim}")
    return np.ascontiguousarray(array.transpose(tuple(perm)))


def permute_shape(shape: Sequence[int | None], perm: Sequence[int]) -> tuple[int | None, ...]:
    """`shape` reordered by `perm`."""
    return tuple(shape[axis] for axis in perm)


def is_image_input(rank: int, dtype: np.dtype) -> bool:
    """Whether an input's layout is the user's choice: 4-D and floating point."""
    return rank == 4 and np.issubdtype(np.dtype(dtype), np.floating)


def check_input_layouts(input_layouts: Mapping[str, str], input_names: Sequence[str]) -> dict[str, str]:
    """Validate `input_layouts` against the model's inputs; returns it lower-cased.

    Raises UsageError for a name the model does not have or a layout other than "nhwc"/"nchw".
    """
    known = set(input_names)
    unknown = sorted(set(input_layouts) - known)
    if unknown:
        raise UsageError(
            f"input_layouts names input(s) the model does not have: {', '.join(unknown)}",
            stage="onnx-to-tf",
            hint=f"the model's inputs are: {', '.join(input_names)}",
        )
    checked: dict[str, str] = {}
    for name, layout in input_layouts.items():
        value = str(layout).lower()
        if value not in IMAGE_LAYOUTS:
            raise UsageError(
                f"input {name!r}: layout {layout!r} is not one of {', '.join(IMAGE_LAYOUTS)}",
                stage="onnx-to-tf",
                hint="use nhwc (what tf.browser.fromPixels gives) or nchw (PyTorch's order)",
            )
        checked[name] = value
    return checked


def plan_input(name: str, torch_shape: Sequence[int | None], dtype: np.dtype,
               input_layouts: Mapping[str, str]) -> tuple[Layout, tuple[int, ...]]:
    """The layout and permutation-from-PyTorch bridge wants for one input of the TF model."""
    rank = len(torch_shape)
    if not is_image_input(rank, dtype):
        return "source", identity_perm(rank)
    if input_layouts.get(name, DEFAULT_IMAGE_LAYOUT) == "nhwc":
        return "nhwc", NCHW_TO_NHWC
    return "nchw", identity_perm(rank)


def output_layout(rank: int, perm: Sequence[int]) -> Layout:
    """The layout name of an output with TF permutation `perm`."""
    if rank == 4 and tuple(perm) == NCHW_TO_NHWC:
        return "nhwc"
    if rank == 4 and tuple(perm) == identity_perm(4):
        return "nchw"
    return "source"


def candidate_perms(torch_shape: Sequence[int], tf_shape: Sequence[int], onnx2tf_says_channels_last: bool
                    ) -> list[tuple[int, ...]]:
    """The permutations that could take an output from PyTorch order to the shape TF produced, likeliest first."""
    rank = len(torch_shape)
    if len(tf_shape) != rank:
        return []
    options = [identity_perm(rank)]
    if rank in CHANNELS_LAST_PERM:
        last = CHANNELS_LAST_PERM[rank]
        options = [last, options[0]] if onnx2tf_says_channels_last else [options[0], last]
    return [perm for perm in options if permute_shape(torch_shape, perm) == tuple(tf_shape)]


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Max |a - b| over all elements (inf when shapes differ; NaNs in the same places count as equal)."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        return float("inf")
    if a.size == 0:
        return 0.0
    if a.dtype == np.bool_ or b.dtype == np.bool_:
        return float(np.count_nonzero(a != b))
    a64 = a.astype(np.float64)
    b64 = b.astype(np.float64)
    with np.errstate(invalid="ignore"):
        diff = np.abs(a64 - b64)
    same = (a64 == b64) | (np.isnan(a64) & np.isnan(b64))  # equal infinities and NaN-vs-NaN count as equal
    diff = np.where(same, 0.0, diff)
    return float(np.max(np.where(np.isnan(diff), np.inf, diff)))


def match_tolerance(reference: np.ndarray) -> float:
    """How close a TF output must be to onnxruntime's to count as 'the same tensor' when matching layouts.

    Deliberately loose: it only decides which tensor/permutation is which; accuracy is judged by the parity stages.
    """
    ref = np.asarray(reference)
    if ref.size == 0 or not np.issubdtype(ref.dtype, np.number):
        return 0.0
    scale = float(np.nanmax(np.abs(ref.astype(np.float64)))) if np.isfinite(ref).any() else 0.0
    return 1e-2 * max(scale, 1.0)
