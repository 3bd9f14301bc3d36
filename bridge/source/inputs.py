"""Input specs (`--input NAME:SHAPE[:DTYPE[:LOW..HIGH]]`) and the seeded sample inputs parity runs on."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bridge.errors import UsageError

SUPPORTED_DTYPES = ("float32", "float64", "float16", "int32", "int64", "bool")
# Sizes a dynamic (`?`) dimension takes in the sample inputs, in turn (`--dynamic-sizes` chooses others): a dynamic
# batch (axis 0) takes small batches; any other axis (a sequence length, an image side) a small, an odd and a long
# size, so a model is checked where real inputs go (the first size is also the one export traces with).
BATCH_SAMPLE_SIZES = (2, 3)
DYNAMIC_SAMPLE_SIZES = (16, 37, 128)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class InputSpec:
    """One model input: its name, shape (None for a dynamic dimension), dtype and the range of sample values."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"
    low: float | None = None
    high: float | None = None

    @property
    def is_integer(self) -> bool:
        """True for integer inputs (token ids): they cross into TF/TF.js as int32."""
        return self.dtype in ("int32", "int64")

    @property
    def dynamic_dims(self) -> tuple[int, ...]:
        """Indices of the dynamic dimensions."""
        return tuple(i for i, d in enumerate(self.shape) if d is None)

    def describe(self) -> str:
        """The spec as the user would write it."""
        dims = "x".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}:{dims}:{self.dtype}"


def parse_input_spec(text: str) -> InputSpec:
    """Parse `NAME:SHAPE[:DTYPE[:LOW..HIGH]]`, e.g. `x:1x3x224x224`, `ids:?x128:int64:0..999`."""
    parts = text.split(":")
    if len(parts) < 2 or len(parts) > 4:
        raise UsageError(f"input spec {text!r} is not NAME:SHAPE[:DTYPE[:LOW..HIGH]]", stage="inputs",
                         hint="for example --input x:1x3x224x224 or --input ids:1x128:int64:0..999")
    name, shape_text = parts[0], parts[1]
    if not _NAME.match(name):
        raise UsageError(f"input name {name!r} is not a valid identifier", stage="inputs",
                         hint="use letters, digits and underscores, starting with a letter")
    shape = _parse_shape(shape_text, text)
    dtype = parts[2] if len(parts) > 2 and parts[2] else "float32"
    if dtype not in SUPPORTED_DTYPES:
        raise UsageError(f"input {name!r} has unsupported dtype {dtype!r}", stage="inputs",
                         hint=f"use one of {', '.join(SUPPORTED_DTYPES)}")
    low, high = _parse_range(parts[3], text) if len(parts) > 3 else (None, None)
    return InputSpec(name=name, shape=shape, dtype=dtype, low=low, high=high)


def _parse_shape(shape_text: str, spec: str) -> tuple[int | None, ...]:
    dims: list[int | None] = []
    for token in shape_text.split("x") if shape_text else []:
        if token == "?":
            dims.append(None)
        elif token.isdigit() and int(token) > 0:
            dims.append(int(token))
        else:
            raise UsageError(f"bad dimension {token!r} in input spec {spec!r}", stage="inputs",
                             hint="dimensions are positive integers or ? for a dynamic one, joined by x")
    return tuple(dims)


def _parse_range(text: str, spec: str) -> tuple[float, float]:
    match = re.fullmatch(r"(-?[0-9.]+)\.\.(-?[0-9.]+)", text)
    if not match or float(match.group(1)) > float(match.group(2)):
        raise UsageError(f"bad value range {text!r} in input spec {spec!r}", stage="inputs",
                         hint="write LOW..HIGH with LOW <= HIGH, e.g. 0..999")
    return float(match.group(1)), float(match.group(2))


def check_unique_names(specs: Sequence[InputSpec]) -> None:
    """Refuse duplicate input names."""
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise UsageError(f"input {spec.name!r} is given twice", stage="inputs")
        seen.add(spec.name)


INT32_MIN, INT32_MAX = int(np.iinfo(np.int32).min), int(np.iinfo(np.int32).max)


def check_int32_range(specs: Sequence[InputSpec], samples: Sequence[Mapping[str, np.ndarray]]) -> None:
    """Refuse integer sample values outside int32 before any work: TF and TF.js get integer inputs as int32 (TF.js has
    no int64), so such values could not reach the web model unchanged."""
    for spec in specs:
        for index, sample in enumerate(samples):
            value = sample.get(spec.name)
            if value is None or np.asarray(value).dtype.kind not in "iu" or not np.asarray(value).size:
                continue
            low, high = int(np.min(value)), int(np.max(value))
            if low < INT32_MIN or high > INT32_MAX:
                bad = high if high > INT32_MAX else low
                raise UsageError(
                    f"input {spec.name!r} holds {bad} in sample input {index}, outside the int32 range "
                    f"[{INT32_MIN}, {INT32_MAX}]: TF.js has no int64, so the web model takes integer inputs as int32",
                    stage="inputs",
                    hint=f"keep {spec.name!r} within int32: give sample values in range (--input "
                         f"{spec.name}:SHAPE:int64:LOW..HIGH or --sample-inputs), and map larger ids into range in "
                         "the model (e.g. modulo the table size) before the web model sees them")


@dataclass(frozen=True)
class DynamicSizes:
    """The sizes dynamic dimensions take in the sample inputs: per `(input, axis)` when given, else the defaults
    for the axis (a batch axis or another one). Sample set i takes the i-th size of each list, cycling."""

    batch: tuple[int, ...] = BATCH_SAMPLE_SIZES
    other: tuple[int, ...] = DYNAMIC_SAMPLE_SIZES
    given: tuple[tuple[str, int, tuple[int, ...]], ...] = ()

    @classmethod
    def parse(cls, items: Sequence[str]) -> "DynamicSizes":
        """`--dynamic-sizes` values: ``16,64,512`` (every dynamic axis but a batch axis) or ``NAME.AXIS=16,64``."""
        other, given = DYNAMIC_SAMPLE_SIZES, []
        for item in items:
            target, sep, values = item.rpartition("=")
            sizes = _parse_sizes(values, item)
            if not sep:
                other = sizes
                continue
            name, dot, axis = target.rpartition(".")
            if not dot or not _NAME.match(name) or not axis.isdigit():
                raise UsageError(f"--dynamic-sizes {item!r}: {target!r} is not NAME.AXIS", stage="inputs",
                                 hint="e.g. --dynamic-sizes ids.1=8,64,256 (input ids, axis 1)")
            given.append((name, int(axis), sizes))
        return cls(other=other, given=tuple(given))

    def sizes(self, name: str, axis: int) -> tuple[int, ...]:
        """The sizes of axis `axis` of input `name`."""
        for given_name, given_axis, sizes in self.given:
            if (given_name, given_axis) == (name, axis):
                return sizes
        return self.batch if axis == 0 else self.other

    def check(self, specs: Sequence[InputSpec]) -> None:
        """Refuse sizes given for an input or axis that is not dynamic."""
        dynamic = {(s.name, a) for s in specs for a in s.dynamic_dims}
        for name, axis, _ in self.given:
            if (name, axis) not in dynamic:
                raise UsageError(f"--dynamic-sizes names {name}.{axis}, which is not a dynamic (?) dimension",
                                 stage="inputs", hint="dynamic dimensions: " + (", ".join(
                                     f"{n}.{a}" for n, a in sorted(dynamic)) or "none (mark one with ? in --input)"))


def _parse_sizes(text: str, item: str) -> tuple[int, ...]:
    tokens = text.split(",")
    if not all(token.strip().isdigit() and int(token) > 0 for token in tokens):
        raise UsageError(f"--dynamic-sizes {item!r}: sizes must be positive integers separated by commas",
                         stage="inputs", hint="e.g. --dynamic-sizes 16,64,128")
    return tuple(int(token) for token in tokens)


def make_sample_inputs(specs: Sequence[InputSpec], count: int = 3, seed: int = 0,
                       dynamic_sizes: DynamicSizes = DynamicSizes()) -> list[dict[str, np.ndarray]]:
    """Seeded random sample inputs, `count` sets; dynamic dimensions vary between sets (`dynamic_sizes`)."""
    rng = np.random.default_rng(seed)
    samples = []
    for index in range(count):
        sample = {}
        for s in specs:
            shape = tuple(_nth(dynamic_sizes.sizes(s.name, axis), index) if d is None else d
                          for axis, d in enumerate(s.shape))
            sample[s.name] = _random_tensor(s, shape, rng)
        samples.append(sample)
    return samples


def _nth(sizes: tuple[int, ...], index: int) -> int:
    return sizes[index % len(sizes)]


def dynamic_sizes_used(specs: Sequence[InputSpec], samples: Sequence[Mapping[str, np.ndarray]]
                       ) -> dict[str, dict[str, list[int]]]:
    """For the report: the size each dynamic dimension took in each sample set, ``{input: {axis: [sizes]}}``."""
    return {s.name: {str(axis): [int(np.shape(sample[s.name])[axis]) for sample in samples]
                     for axis in s.dynamic_dims} for s in specs if s.dynamic_dims}


def _random_tensor(spec: InputSpec, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if spec.dtype == "bool":
        return rng.random(shape) < 0.5
    if spec.is_integer:
        low = int(spec.low if spec.low is not None else 0)
        high = int(spec.high if spec.high is not None else 9)
        return rng.integers(low, high + 1, size=shape).astype(spec.dtype)
    if spec.low is not None and spec.high is not None:
        return rng.uniform(spec.low, spec.high, size=shape).astype(spec.dtype)
    return rng.standard_normal(shape).astype(spec.dtype)


def load_sample_inputs(path: Path, specs: Sequence[InputSpec]) -> list[dict[str, np.ndarray]]:
    """Read user sample inputs from an .npz: arrays named after the inputs, either one set (`x`) or several
    stacked along a new leading axis and named `x` with one more dimension than the spec."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read sample inputs {path}: {exc}", stage="inputs",
                         hint="give an .npz written with numpy.savez holding one array per input name") from exc
    missing = [s.name for s in specs if s.name not in arrays]
    if missing:
        raise UsageError(f"sample inputs {path} lack {', '.join(missing)}", stage="inputs",
                         hint=f"the .npz holds {', '.join(sorted(arrays)) or 'nothing'}")
    return _split_sets(arrays, specs, path)


def _split_sets(arrays: Mapping[str, np.ndarray], specs: Sequence[InputSpec], path: Path) -> list[dict[str, np.ndarray]]:
    stacked = {s.name: arrays[s.name].ndim == len(s.shape) + 1 for s in specs}
    if len(set(stacked.values())) > 1:
        raise UsageError(f"sample inputs {path}: some arrays are stacked sets and some are not", stage="inputs")
    if not any(stacked.values()):
        sets = [{s.name: arrays[s.name].astype(s.dtype) for s in specs}]
    else:
        count = {arrays[s.name].shape[0] for s in specs}
        if len(count) != 1:
            raise UsageError(f"sample inputs {path}: stacked arrays hold different numbers of sets", stage="inputs")
        sets = [{s.name: arrays[s.name][i].astype(s.dtype) for s in specs} for i in range(count.pop())]
    for sample in sets:
        for spec in specs:
            _check_shape(sample[spec.name].shape, spec, path)
    return sets


def _check_shape(shape: tuple[int, ...], spec: InputSpec, path: Path) -> None:
    ok = len(shape) == len(spec.shape) and all(d is None or d == s for d, s in zip(spec.shape, shape))
    if not ok:
        raise UsageError(f"sample input {spec.name!r} in {path} has shape {list(shape)}, the spec says "
                         f"{spec.describe()}", stage="inputs")
