"""Port PyTorch weights into a TensorFlow model you wrote yourself (a tf.Module or a Keras model).

`port_weights(torch_model_or_state_dict, tf_model)` pairs every PyTorch parameter/buffer with a TF variable, in
this order: your `mapping` {torch key: tf name}; equal names (after PyTorch -> Keras leaf aliases such as
weight -> kernel/gamma, running_var -> moving_variance); then by structure (layers aligned in creation order,
variables inside a layer by role and shape); then what is left, one by one in order, by shape. Each pair gets
the named layout transform (bridge.native.weights) that turns the PyTorch array into the variable's shape
(conv OIHW -> HWIO, depthwise, transposed conv, Linear (out, in) -> (in, out), ...). When the TF model holds
Keras recurrent cells (a `recurrent_kernel`), PyTorch LSTM/GRU weights are first regrouped per layer and direction
into Keras' kernel / recurrent_kernel / bias (GRU gates reordered, reset_after=True biases). Nothing is assigned
unless every entry found its variable, or `allow_partial=True`.

A Dense layer after flattening an NHWC feature map needs its rows permuted (the flattened order differs from
PyTorch's NCHW flatten); shapes cannot reveal that, so pass it in `mapping` as
`{"fc.weight": ("fc.kernel", my_transform)}` (e.g. with bridge.native.weights.permute_rows).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from bridge.errors import ConversionError
from bridge.native.port_sources import (LEAF_ALIASES, SKIPPED_LEAVES, TfEntry, TorchEntry, Transform,
                                        choose_transform, keras_recurrent_entries, tf_entries, torch_entries)

STAGE = "port-weights"
MappingValue = str | tuple[str, Callable[[np.ndarray], np.ndarray]]


class WeightPortError(ConversionError):
    """A weight port that would leave variables unset or put a value in the wrong shape (refused)."""


@dataclass(frozen=True)
class PortedEntry:
    """One PyTorch entry assigned to one TF variable."""

    torch_key: str
    tf_name: str
    torch_shape: tuple[int, ...]
    tf_shape: tuple[int, ...]
    transform: str
    how: str  # "mapping" | "name" | "structure" | "shape"


@dataclass(frozen=True)
class Mismatch:
    """A PyTorch entry paired (by mapping or name) with a TF variable it cannot fill."""

    torch_key: str
    tf_name: str
    torch_shape: tuple[int, ...]
    tf_shape: tuple[int, ...] | None
    reason: str


@dataclass
class PortReport:
    """What `port_weights` matched, left unmatched on either side, and found mismatched."""

    matched: list[PortedEntry] = field(default_factory=list)
    unmatched_torch: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    unmatched_tf: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    mismatched: list[Mismatch] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # entries with no TF meaning (num_batches_tracked)
    assigned: bool = False

    @property
    def complete(self) -> bool:
        """True when every entry on both sides found its partner."""
        return not (self.unmatched_torch or self.unmatched_tf or self.mismatched)

    def problems(self) -> list[str]:
        """One line per unmatched or mismatched entry."""
        lines = [f"mismatched: torch {m.torch_key} {list(m.torch_shape)} -> tf {m.tf_name} "
                 f"{list(m.tf_shape) if m.tf_shape is not None else '?'}: {m.reason}" for m in self.mismatched]
        lines += [f"no TF variable for torch {key} {list(shape)}" for key, shape in self.unmatched_torch]
        lines += [f"no PyTorch value for tf {name} {list(shape)}" for name, shape in self.unmatched_tf]
        return lines

    def summary(self) -> str:
        """A short human summary: counts, then every problem."""
        head = (f"{len(self.matched)} matched, {len(self.unmatched_torch)} torch and {len(self.unmatched_tf)} TF "
                f"entries unmatched, {len(self.mismatched)} mismatched, {len(self.skipped)} skipped; "
                f"{'assigned' if self.assigned else 'nothing assigned'}")
        return "\n".join([head, *[f"  - {line}" for line in self.problems()]])

    def to_dict(self) -> dict[str, object]:
        """The report as plain data."""
        return {"matched": [vars(m) for m in self.matched], "unmatched_torch": self.unmatched_torch,
                "unmatched_tf": self.unmatched_tf, "mismatched": [vars(m) for m in self.mismatched],
                "skipped": self.skipped, "assigned": self.assigned}


@dataclass
class _Pair:
    torch: TorchEntry
    tf: TfEntry
    transform: tuple[str, Transform]
    how: str


def port_weights(torch_model: Any, tf_model: Any, mapping: Mapping[str, MappingValue] | None = None,
                 allow_partial: bool = False) -> PortReport:
    """Assign the weights of a PyTorch module (or state_dict) to the variables of `tf_model` (a tf.Module or a
    built Keras model); returns the report. Raises WeightPortError, listing every unmatched and mismatched entry,
    when the port would be partial, unless `allow_partial` (then the matched part is assigned)."""
    torch_side = torch_entries(torch_model)
    tf_side = tf_entries(tf_model)
    if any(e.leaf == "recurrent_kernel" for e in tf_side):  # Keras LSTM/GRU cells: regroup PyTorch's weights
        torch_side = keras_recurrent_entries(torch_side)
    if not tf_side:
        raise WeightPortError("the TF model has no variables", stage=STAGE,
                              hint="build it first (call it once on an example input, or model.build(shape))")
    report = PortReport(skipped=[e.key for e in torch_side if e.leaf in SKIPPED_LEAVES])
    pending = [e for e in torch_side if e.leaf not in SKIPPED_LEAVES]
    pairs, pending, free = _match(pending, list(tf_side), dict(mapping or {}), report)
    report.matched = [PortedEntry(p.torch.key, p.tf.name, p.torch.shape, p.tf.shape, p.transform[0], p.how)
                      for p in pairs]
    report.unmatched_torch = [(e.key, e.shape) for e in pending]
    report.unmatched_tf = [(e.name, e.shape) for e in free]
    if not report.complete and not allow_partial:
        raise WeightPortError(f"refusing a partial weight port: {len(report.problems())} problem(s), "
                              f"{len(pairs)} pair(s) matched", stage=STAGE, details=report.problems(),
                              hint="fix the TF model, pass mapping={torch_key: tf_variable_name}, or "
                                   "allow_partial=True to port what matched")
    for pair in pairs:
        _assign(pair)
    report.assigned = True
    return report


def _match(pending: list[TorchEntry], free: list[TfEntry], mapping: dict[str, MappingValue],
           report: PortReport) -> tuple[list[_Pair], list[TorchEntry], list[TfEntry]]:
    """Run the matching phases; returns pairs and what is left on each side."""
    pairs: list[_Pair] = []
    for phase in (_by_mapping, _by_name, _by_structure, _by_shape):
        found = phase(pending, free, mapping, report)
        pairs += found
        used_t, used_f = {id(p.torch) for p in found}, {id(p.tf) for p in found}
        bad_t, bad_f = {m.torch_key for m in report.mismatched}, {m.tf_name for m in report.mismatched}
        pending = [e for e in pending if id(e) not in used_t and e.key not in bad_t]
        free = [e for e in free if id(e) not in used_f and e.name not in bad_f]
    return pairs, pending, free


def _by_mapping(pending: list[TorchEntry], free: list[TfEntry], mapping: dict[str, MappingValue],
                report: PortReport) -> list[_Pair]:
    """Pairs the user named; a name that does not exist is a mismatch."""
    by_name = {e.name: e for e in free}
    by_key = {e.key: e for e in pending}
    pairs = []
    for key, target in mapping.items():
        name, fn = (target, None) if isinstance(target, str) else target
        entry, variable = by_key.get(key), by_name.get(name)
        if entry is None or variable is None:
            missing = f"no torch entry {key!r}" if entry is None else f"no TF variable named {name!r}"
            report.mismatched.append(Mismatch(key, name, entry.shape if entry else (), None, missing))
            continue
        pair = _pair(entry, variable, "mapping", report, fn)
        if pair:
            pairs.append(pair)
    return pairs


def _pair(entry: TorchEntry, variable: TfEntry, how: str, report: PortReport,
          fn: Callable[[np.ndarray], np.ndarray] | None = None) -> _Pair | None:
    """A pair when a transform fits the shapes (recording a mismatch otherwise)."""
    if fn is not None:
        shape = tuple(np.shape(fn(entry.array)))
        if shape == variable.shape:
            return _Pair(entry, variable, (getattr(fn, "__name__", "custom"), fn), how)
        report.mismatched.append(Mismatch(entry.key, variable.name, entry.shape, variable.shape,
                                          f"the mapping's transform gives shape {list(shape)}"))
        return None
    transform = choose_transform(entry, variable.shape, variable.leaf)
    if transform is None:
        report.mismatched.append(Mismatch(entry.key, variable.name, entry.shape, variable.shape,
                                          "no layout transform gives the variable's shape"))
        return None
    return _Pair(entry, variable, transform, how)


def _normal(name: str) -> str:
    """Names compared case-blind, with '/', '_' and '.' as the same separator (conv_kernel == conv.kernel)."""
    return name.lower().replace("/", ".").replace("_", ".")


def _aliases(entry: TorchEntry) -> list[str]:
    leaves = LEAF_ALIASES.get(entry.leaf, (entry.leaf,))
    return [_normal(f"{entry.group}.{leaf}" if entry.group else leaf) for leaf in leaves]


def _by_name(pending: list[TorchEntry], free: list[TfEntry], mapping: dict[str, MappingValue],
             report: PortReport) -> list[_Pair]:
    """Pairs whose names agree (a TF name equal to the torch key up to leaf aliases); shape must then fit."""
    by_name: dict[str, list[TfEntry]] = {}
    for variable in free:
        by_name.setdefault(_normal(variable.name), []).append(variable)
    pairs, taken = [], set()
    for entry in pending:
        hits = list({id(v): v for alias in _aliases(entry) for v in by_name.get(alias, [])
                     if id(v) not in taken}.values())
        if len(hits) != 1:
            continue
        pair = _pair(entry, hits[0], "name", report)
        taken.add(id(hits[0]))
        if pair:
            pairs.append(pair)
    return pairs


def _groups(items: Sequence[Any]) -> list[list[Any]]:
    """Items grouped by their `group` attribute, groups in order of first appearance."""
    table: dict[str, list[Any]] = {}
    for item in items:
        table.setdefault(item.group, []).append(item)
    return list(table.values())


def _by_structure(pending: list[TorchEntry], free: list[TfEntry], mapping: dict[str, MappingValue],
                  report: PortReport) -> list[_Pair]:
    """Layers aligned in order (the longest order-preserving run of layers whose entries pair completely)."""
    torch_groups, tf_groups = _groups(pending), _groups(free)
    fits = [[_pair_group(t, f) for f in tf_groups] for t in torch_groups]
    chosen = _align(len(torch_groups), len(tf_groups), lambda i, j: len(fits[i][j]) if fits[i][j] else 0)
    return [pair for i, j in chosen for pair in fits[i][j] or []]


def _pair_group(entries: list[TorchEntry], variables: list[TfEntry]) -> list[_Pair] | None:
    """Every entry of a torch layer paired with every variable of a TF layer (by role, then order), or None."""
    if len(entries) != len(variables):
        return None
    left, pairs = list(variables), []
    for entry in entries:
        roles = LEAF_ALIASES.get(entry.leaf, (entry.leaf,))
        ordered = sorted(left, key=lambda v: v.leaf.lower() not in roles)  # same role first, else in order
        for variable in ordered:
            transform = choose_transform(entry, variable.shape, variable.leaf)
            if transform is not None:
                pairs.append(_Pair(entry, variable, transform, "structure"))
                left.remove(variable)
                break
        else:
            return None
    return pairs


def _align(n: int, m: int, score: Callable[[int, int], int]) -> list[tuple[int, int]]:
    """The order-preserving set of (i, j) pairs of maximum total score (positive scores only)."""
    best = np.zeros((n + 1, m + 1), dtype=np.int64)
    scores = [[score(i, j) for j in range(m)] for i in range(n)]
    for i in range(n):
        for j in range(m):
            take = best[i, j] + scores[i][j] if scores[i][j] > 0 else -1
            best[i + 1, j + 1] = max(best[i, j + 1], best[i + 1, j], take)
    chosen, i, j = [], n, m
    while i > 0 and j > 0:
        if scores[i - 1][j - 1] > 0 and best[i, j] == best[i - 1, j - 1] + scores[i - 1][j - 1]:
            chosen.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif best[i, j] == best[i - 1, j]:
            i -= 1
        else:
            j -= 1
    return chosen[::-1]


def _by_shape(pending: list[TorchEntry], free: list[TfEntry], mapping: dict[str, MappingValue],
              report: PortReport) -> list[_Pair]:
    """Whatever is left, one entry at a time in order, where a transform fits the shape."""
    transforms = [[choose_transform(e, v.shape, v.leaf) for v in free] for e in pending]
    chosen = _align(len(pending), len(free), lambda i, j: 1 if transforms[i][j] is not None else 0)
    return [_Pair(pending[i], free[j], transforms[i][j], "shape") for i, j in chosen]  # type: ignore[arg-type]


def _assign(pair: _Pair) -> None:
    """Write the transformed PyTorch array into the TF variable."""
    value = np.array(pair.transform[1](pair.torch.array), dtype=pair.tf.np_dtype, order="C")
    pair.tf.variable.assign(value)
