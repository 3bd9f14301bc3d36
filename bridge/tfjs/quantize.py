"""Weight quantization for TF.js graph models: float16 and uint8 / uint16 affine, chosen per weight name.

Specs are strings: ``float16`` (a catch-all: every float32 weight no pattern claims), or ``uint8:*dense*`` /
``uint16:conv*,*kernel`` (fnmatch patterns, case-sensitive, comma-separated). Several specs may be given; at most
one dtype may be a catch-all, and a weight name matched by patterns of two dtypes is refused. Only float32 weights
are ever quantized: int32 (shape) constants, bools, strings and complex weights never are.

The affine math follows the TF.js converter, in float64: ``scale = (max - min) / qmax``; when the range holds zero
the minimum is nudged so that zero is exact; ``q = round((clip(x, min, max) - min) / scale)`` (half to even). The
runtime dequantizes ``q * scale + min`` in double precision and stores float32, which `dequantize` reproduces.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from bridge.errors import UsageError, WeightError

QUANT_DTYPES: tuple[str, ...] = ("float16", "uint8", "uint16")
QUANT_ITEMSIZE: dict[str, int] = {"float16": 2, "uint8": 1, "uint16": 2}
_QMAX: dict[str, int] = {"uint8": 255, "uint16": 65535}
_STAGE = "tfjs-write"
# float16 keeps 11 significant bits: round-to-nearest is within 2^-11 relative for normal values; below the
# smallest normal (2^-14) the absolute spacing is 2^-24, so the absolute error there is at most 2^-25.
FLOAT16_REL_ERROR = 2.0 ** -11
FLOAT16_ABS_ERROR = 2.0 ** -25


@dataclass(frozen=True)
class QuantizeRule:
    """One quantization dtype and the weight-name patterns it applies to (empty patterns = catch-all)."""

    dtype: str
    patterns: tuple[str, ...]

    @property
    def catch_all(self) -> bool:
        """True when this rule applies to every float32 weight that no pattern rule claims."""
        return not self.patterns


@dataclass(frozen=True)
class QuantizePlan:
    """The parsed quantization request: which dtype (if any) each float32 weight gets."""

    rules: tuple[QuantizeRule, ...] = ()

    def dtype_for(self, name: str) -> str | None:
        """The quantization dtype for weight `name`, or None; refuses a name claimed by two dtypes."""
        matched = sorted({r.dtype for r in self.rules if not r.catch_all
                          and any(fnmatch.fnmatchcase(name, p) for p in r.patterns)})
        if len(matched) > 1:
            raise UsageError(f"weight {name!r} matches quantization patterns of several dtypes: {', '.join(matched)}",
                             stage=_STAGE, hint="make the --quantize patterns disjoint")
        if matched:
            return matched[0]
        catch_all = [r.dtype for r in self.rules if r.catch_all]
        return catch_all[0] if catch_all else None

    def is_explicit(self, name: str) -> bool:
        """True when a pattern names weight `name` (not only the catch-all rule)."""
        return any(not r.catch_all and any(fnmatch.fnmatchcase(name, p) for p in r.patterns) for r in self.rules)

    def specs(self) -> list[str]:
        """The plan written back as spec strings (for metadata and reports)."""
        return [r.dtype if r.catch_all else f"{r.dtype}:{','.join(r.patterns)}" for r in self.rules]

    def __bool__(self) -> bool:
        return bool(self.rules)


@dataclass(frozen=True)
class QuantizedWeight:
    """A quantized weight: the stored array, its manifest `quantization` entry and its error bound.

    `step` is the quantization step (the affine scale, or the float16 spacing at the largest magnitude);
    `max_error` bounds |x - dequantize(q)| over the weight (before the final float32 rounding of the runtime).
    """

    data: np.ndarray
    quantization: dict[str, object]
    step: float
    max_error: float


def parse_quantize_specs(specs: Sequence[str]) -> QuantizePlan:
    """Parse ``float16`` / ``uint8:*dense*`` style specs into a `QuantizePlan` (UsageError on a bad spec)."""
    if isinstance(specs, str):
        specs = (specs,)
    merged: dict[str, list[str]] = {}
    catch_all: list[str] = []
    for spec in specs:
        dtype, patterns = _parse_one_spec(spec)
        if not patterns:
            if dtype not in catch_all:
                catch_all.append(dtype)
            continue
        merged.setdefault(dtype, [])
        merged[dtype] += [p for p in patterns if p not in merged[dtype]]
    if len(catch_all) > 1:
        raise UsageError(f"several quantization catch-alls: {', '.join(catch_all)}", stage=_STAGE,
                         hint="give at most one dtype without patterns; add patterns (dtype:PATTERN) to the others")
    rules = [QuantizeRule(d, tuple(p)) for d, p in merged.items()]
    rules += [QuantizeRule(d, ()) for d in catch_all]
    return QuantizePlan(tuple(rules))


def _parse_one_spec(spec: object) -> tuple[str, list[str]]:
    """Split one spec into its dtype and pattern list (empty for a catch-all)."""
    if not isinstance(spec, str) or not spec.strip():
        raise UsageError(f"bad quantization spec {spec!r}", stage=_STAGE,
                         hint="use float16, uint8 or uint16, optionally followed by :PATTERN[,PATTERN]")
    dtype, sep, rest = spec.strip().partition(":")
    dtype = dtype.strip().lower()
    if dtype not in QUANT_DTYPES:
        raise UsageError(f"unknown quantization dtype {dtype!r} in spec {spec!r}", stage=_STAGE,
                         hint=f"choose one of {', '.join(QUANT_DTYPES)}")
    patterns = [p.strip() for p in rest.split(",") if p.strip()] if sep else []
    if sep and not patterns:
        raise UsageError(f"quantization spec {spec!r} has an empty pattern list", stage=_STAGE,
                         hint=f"write {dtype} alone for every float32 weight, or {dtype}:PATTERN")
    return dtype, patterns


def representable(values: np.ndarray, dtype: str) -> bool:
    """Whether `values` survive quantization to `dtype`: no NaN/Inf for the affine dtypes, nothing beyond
    65504 for float16. Constants that fail this are sentinels (a -3.4e38 max-pool pad, a -inf attention mask),
    not learned weights."""
    finite = np.isfinite(values)
    if dtype == "float16":
        with np.errstate(over="ignore"):
            return not bool(np.any(np.isinf(values[finite].astype(np.float16))))
    return bool(finite.all())


def quantize_weight(name: str, values: np.ndarray, dtype: str) -> QuantizedWeight:
    """Quantize one float32 weight to `dtype` (float16, uint8 or uint16); WeightError names the weight on failure."""
    if values.dtype != np.float32:
        raise WeightError(f"weight {name!r} is {values.dtype}, only float32 weights can be quantized",
                          stage=_STAGE, hint="restrict the --quantize patterns to float weights")
    if dtype == "float16":
        return _quantize_float16(name, values)
    if dtype in _QMAX:
        return _quantize_affine(name, values, dtype)
    raise UsageError(f"unknown quantization dtype {dtype!r}", stage=_STAGE,
                     hint=f"choose one of {', '.join(QUANT_DTYPES)}")


def _quantize_float16(name: str, values: np.ndarray) -> QuantizedWeight:
    """Store as float16, refusing finite values that would become infinite."""
    with np.errstate(over="ignore"):
        half = values.astype(np.float16)
    overflow = np.isinf(half) & np.isfinite(values)
    if overflow.any():
        worst = float(np.max(np.abs(values[overflow])))
        raise WeightError(
            f"weight {name!r}: {int(overflow.sum())} value(s) exceed the float16 range (largest |x| = {worst:.6g}, "
            f"float16 max = 65504)", stage=_STAGE,
            hint="quantize this weight with uint8/uint16 instead, or leave it float32")
    finite = np.abs(values[np.isfinite(values)])
    amax = float(finite.max()) if finite.size else 0.0
    max_error = max(amax * FLOAT16_REL_ERROR, FLOAT16_ABS_ERROR)
    return QuantizedWeight(half, {"dtype": "float16", "original_dtype": "float32"}, 2.0 * max_error, max_error)


def affine_range(minimum: float, maximum: float, qmax: int) -> tuple[float, float, float]:
    """The (scale, nudged min, nudged max) of the affine quantization of [minimum, maximum] to 0..qmax."""
    if minimum == maximum:
        return 1.0, minimum, maximum
    scale = (maximum - minimum) / qmax
    if minimum <= 0.0 <= maximum:
        zero_point = float(np.round(-minimum / scale))
        minimum = -zero_point * scale
        maximum = qmax * scale + minimum
    return scale, minimum, maximum


def _quantize_affine(name: str, values: np.ndarray, dtype: str) -> QuantizedWeight:
    """uint8 / uint16 affine quantization, in float64 as the reference does."""
    wide = values.astype(np.float64)
    if wide.size and not np.isfinite(wide).all():
        raise WeightError(f"weight {name!r} holds NaN or Inf and cannot be {dtype}-quantized", stage=_STAGE,
                          hint="leave this weight unquantized or use float16")
    qmax = _QMAX[dtype]
    lo = float(wide.min()) if wide.size else 0.0
    hi = float(wide.max()) if wide.size else 0.0
    scale, nudged_min, nudged_max = affine_range(lo, hi, qmax)
    if lo == hi:
        q = np.zeros(wide.shape, dtype=dtype)
        max_error = 0.0
    else:
        # in place, to hold one float64 copy of the weight at a time: round((clip(x) - min) / scale)
        np.clip(wide, nudged_min, nudged_max, out=wide)
        wide -= nudged_min
        wide /= scale
        q = np.round(wide, out=wide).astype(dtype)
        max_error = scale / 2.0
    entry: dict[str, object] = {"dtype": dtype, "min": nudged_min, "scale": scale, "original_dtype": "float32"}
    return QuantizedWeight(q, entry, scale, max_error)


def dequantize(stored: np.ndarray, quantization: Mapping[str, object], dtype: str) -> np.ndarray:
    """Reproduce the TF.js runtime's dequantization of `stored` into a `dtype` (float32 or int32) array."""
    qdtype = quantization.get("dtype")
    if qdtype == "float16":
        return stored.astype(np.float32)
    scale = float(quantization["scale"])  # type: ignore[arg-type]
    minimum = float(quantization["min"])  # type: ignore[arg-type]
    with np.errstate(over="ignore", invalid="ignore"):  # absurd scales overflow to inf, as they do in JS
        wide = stored.astype(np.float64) * scale + minimum
        if dtype == "int32":
            # Math.round: halves go toward +infinity.
            return np.floor(wide + 0.5).astype(np.int32)
        return wide.astype(np.float32)


def error_bound(values: np.ndarray, quantized: QuantizedWeight) -> np.ndarray:
    """Per-element bound on |x - dequantized x|, including the runtime's final float32 rounding."""
    f32_rounding = np.abs(values.astype(np.float64)) * 2.0 ** -24
    if quantized.quantization["dtype"] == "float16":
        per_element = np.maximum(np.abs(values.astype(np.float64)) * FLOAT16_REL_ERROR, FLOAT16_ABS_ERROR)
        return per_element
    return np.full(values.shape, quantized.max_error) + f32_rounding + math.ulp(quantized.step)
