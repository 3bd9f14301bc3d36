"""The native route's small IR: values that carry shape, dtype, layout and module path; nodes that name an ATen
op with schema-named arguments; a graph that owns the weights (as numpy, in PyTorch layout).

The layout of a value says how its physical (TensorFlow) tensor relates to the PyTorch (source) tensor:
`perm[i]` is the source axis held by physical axis i; a `flat` block says the last axis is a flattened block
whose elements are stored in a permuted order (what flattening an NHWC feature map gives).
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal

import numpy as np

Dim = int | None  # None: a dynamic dimension (a torch.export symbol)
# A size as torch.export knows it: an int, or a sympy expression over the input sizes' symbols (s0, s1, ...), e.g.
# `s1`, `2*s1`, `((s2 - 1)//2) + 1`; None where nothing is known. Values carry both: `shape` (None for dynamic,
# what static-only code tests) and `sizes` (the symbols, what dynamic-shape code compares and generates from).
Size = Any
ValueKind = Literal["input", "param", "const", "node"]
SYMINT = "symint"  # dtype of a symbolic int (a dynamic dimension read with tf.shape), not a tensor


@dataclass(frozen=True)
class FlatBlock:
    """The last axis flattens a block of source shape `shape`, stored transposed by `perm` (physical order)."""

    shape: tuple[int, ...]
    perm: tuple[int, ...]

    def feature_order(self) -> np.ndarray:
        """Source feature index held at each physical position of the flattened axis."""
        return np.arange(int(np.prod(self.shape))).reshape(self.shape).transpose(self.perm).ravel()

    def physical_shape(self) -> tuple[int, ...]:
        """The block's shape as stored (before flattening)."""
        return tuple(self.shape[p] for p in self.perm)


@dataclass(frozen=True)
class Layout:
    """How a value's TF tensor is laid out relative to its PyTorch tensor (see the module docstring)."""

    perm: tuple[int, ...]
    flat: FlatBlock | None = None

    @staticmethod
    def source(rank: int) -> Layout:
        """PyTorch's own axis order."""
        return Layout(tuple(range(rank)))

    @staticmethod
    def channels_last(rank: int) -> Layout:
        """NCHW -> NHWC (and NCW -> NWC, NCDHW -> NDHWC); ranks below 3 stay in source order."""
        if rank < 3:
            return Layout.source(rank)
        return Layout((0, *range(2, rank), 1))

    @property
    def rank(self) -> int:
        """Number of axes."""
        return len(self.perm)

    @property
    def is_source(self) -> bool:
        """True when the TF tensor is exactly the PyTorch tensor."""
        return self.flat is None and self.perm == tuple(range(len(self.perm)))

    @property
    def is_channels_last(self) -> bool:
        """True for NHWC-style layouts of rank 3 or more."""
        return self.rank >= 3 and self.flat is None and self == Layout.channels_last(self.rank)

    def axis(self, dim: int) -> int:
        """Physical axis holding source axis `dim` (negative dims allowed)."""
        if self.flat is not None:
            raise ValueError("axis lookup on a flattened-permuted layout")
        return self.perm.index(dim % self.rank) if self.rank else 0

    def physical_shape(self, shape: tuple[Dim, ...]) -> tuple[Dim, ...]:
        """The TF tensor's shape for a value of source shape `shape`."""
        return tuple(shape[p] for p in self.perm)

    def name(self) -> str:
        """A short human name: nchw/nhwc for 4-D, 'source' or the permutation otherwise."""
        if self.flat is not None:
            return f"flat{self.flat.perm}"
        if self.is_source:
            return {3: "ncw", 4: "nchw", 5: "ncdhw"}.get(self.rank, "source")
        if self.is_channels_last:
            return {3: "nwc", 4: "nhwc", 5: "ndhwc"}[self.rank]
        return "perm" + "".join(str(p) for p in self.perm)


@dataclass(eq=False)
class Value:
    """A tensor (or symbolic int) flowing through the graph."""

    name: str
    shape: tuple[Dim, ...]
    dtype: str
    kind: ValueKind = "node"
    module_path: str = ""
    layout: Layout | None = None
    key: str | None = None  # state_dict key (params/buffers) or constant name; the TF variable is named after it
    variant: str = ""  # for weights stored transformed (e.g. "hwio"): what was done to the PyTorch array
    producer: Node | None = None
    sizes: tuple[Size, ...] = ()  # per axis: an int or a sympy expression (see `Size`); defaults to `shape`
    expr: Any = None  # a SYMINT value's sympy expression over the input sizes (None: computed by its producer)

    def __post_init__(self) -> None:
        if len(self.sizes) != len(self.shape):
            self.sizes = tuple(self.shape)

    @property
    def is_dynamic(self) -> bool:
        """True when some axis has a size known only at run time."""
        return any(d is None for d in self.shape)

    @property
    def rank(self) -> int:
        """Number of axes."""
        return len(self.shape)

    @property
    def is_weight(self) -> bool:
        """Params, buffers and constants: their layout changes are folded into the stored array."""
        return self.kind in ("param", "const")

    def __repr__(self) -> str:
        return f"Value({self.name}, {list(self.shape)}, {self.dtype}, {self.kind})"


@dataclass(eq=False)
class Node:
    """One ATen op call; `args` maps schema argument names to Values, python constants or lists of them."""

    name: str
    target: str
    args: dict[str, Any]
    outputs: list[Value | None]
    module_path: str = ""
    module_type: str = ""
    source: str = ""

    def tensor_args(self) -> Iterator[tuple[str, Value]]:
        """(argument name, Value) for every tensor argument, including inside lists."""
        for key, arg in self.args.items():
            if isinstance(arg, Value):
                yield key, arg
            elif isinstance(arg, (list, tuple)):
                for item in arg:
                    if isinstance(item, Value):
                        yield key, item

    def where(self) -> str:
        """Where the node comes from, for messages: `name @ module.path (file.py:12)`."""
        text = self.name
        if self.module_path:
            text += f" @ {self.module_path}"
        if self.source:
            text += f" ({self.source})"
        return text


@dataclass
class Graph:
    """A captured model: user inputs, weights (numpy, PyTorch layout), nodes in topological order, outputs."""

    name: str
    inputs: list[Value]
    nodes: list[Node]
    outputs: list[Value]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # weight Value name -> array (stored layout)
    input_names: list[str] = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)
    _derived: dict[str, Value] = field(default_factory=dict, repr=False)

    def add_weight(self, value: Value, array: np.ndarray) -> Value:
        """Register a weight Value (param, buffer or constant) with its array."""
        self.arrays[value.name] = array
        return value

    def derive_weight(self, origin: Value, variant: str, fn: Callable[[np.ndarray], np.ndarray],
                      layout: Layout | None = None) -> Value:
        """A weight computed from `origin` by `fn` (a named transform), cached per (origin, variant)."""
        name = f"{origin.name}__{py_identifier(variant)}"
        if name not in self.arrays:
            array = np.ascontiguousarray(fn(self.arrays[origin.name]))
            self.arrays[name] = array
            shape = tuple(array.shape) if layout is None else _source_shape(array.shape, layout)
            self._derived[name] = Value(name, shape, origin.dtype, kind=origin.kind, module_path=origin.module_path,
                                        layout=layout or Layout.source(array.ndim), key=origin.key,
                                        variant=(origin.variant + "+" if origin.variant else "") + variant)
        return self._derived[name]

    def combine_weights(self, origins: list[Value], variant: str, fn: Callable[..., np.ndarray]) -> Value:
        """A weight computed from several weights by `fn(*arrays)` (e.g. an RNN's two biases summed), named and
        keyed after the first, cached per (first origin, variant): `variant` must say which others it reads."""
        first = origins[0]
        name = f"{first.name}__{py_identifier(variant)}"
        if name not in self.arrays:
            array = np.ascontiguousarray(fn(*[self.arrays[o.name] for o in origins]))
            self.arrays[name] = array
            self._derived[name] = Value(name, tuple(array.shape), first.dtype, kind=first.kind,
                                        module_path=first.module_path, layout=Layout.source(array.ndim),
                                        key=first.key, variant=(first.variant + "+" if first.variant else "") + variant)
        return self._derived[name]

    def readers(self) -> dict[int, list[Node | None]]:
        """Map id(value) -> the nodes reading it, over every node (torch.cond branches included, a branch's outputs
        read by the node holding the branch); None stands for the graph's own outputs."""
        table: dict[int, list[Node | None]] = {}
        for node in self.all_nodes():
            for _, value in node.tensor_args():
                table.setdefault(id(value), []).append(node)
            for sub in self.subgraphs(node):
                for out in sub.outputs:
                    table.setdefault(id(out), []).append(node)
        for out in self.outputs:
            table.setdefault(id(out), []).append(None)
        return table

    def subgraphs(self, node: Node) -> list[Graph]:
        """The graphs a node holds as arguments (a torch.cond's branches)."""
        return [arg for arg in node.args.values() if isinstance(arg, Graph)]

    def all_nodes(self) -> Iterator[Node]:
        """Every node, those inside subgraphs (torch.cond branches) included, each before its subgraphs' nodes."""
        for node in self.nodes:
            yield node
            for sub in self.subgraphs(node):
                yield from sub.all_nodes()

    def op_counts(self) -> dict[str, int]:
        """How many nodes use each target (inside torch.cond branches too)."""
        counts: dict[str, int] = {}
        for node in self.all_nodes():
            counts[node.target] = counts.get(node.target, 0) + 1
        return counts


def static_size(size: Size) -> int | None:
    """The int value of a size; None when it is symbolic or unknown."""
    if size is None or isinstance(size, bool):
        return None
    if isinstance(size, (int, np.integer)):
        return int(size)
    return int(size) if getattr(size, "is_Integer", False) else None


def same_size(a: Size, b: Size) -> bool:
    """True when two sizes are provably equal (equal ints, or equal sympy expressions)."""
    if a is None or b is None:
        return False
    if static_size(a) is not None or static_size(b) is not None:
        return static_size(a) == static_size(b)
    if a == b:
        return True
    import sympy

    return sympy.simplify(sympy.sympify(a) - sympy.sympify(b)) == 0


def size_ratio(big: Size, small: Size) -> Size | None:
    """`big / small` when it is a whole size (an int, or a sympy expression with no denominator), else None."""
    if static_size(big) is not None and static_size(small) is not None:
        b, s = static_size(big), static_size(small)
        return b // s if s and b % s == 0 else None
    if big is None or small is None:
        return None
    import sympy

    ratio = sympy.simplify(sympy.sympify(big) / sympy.sympify(small))
    _, denominator = sympy.fraction(sympy.together(ratio))
    return ratio if denominator == 1 else None


def _source_shape(physical: tuple[int, ...], layout: Layout) -> tuple[int, ...]:
    """Invert `Layout.physical_shape`."""
    shape = [0] * len(physical)
    for axis, src in enumerate(layout.perm):
        shape[src] = physical[axis]
    return tuple(shape)


_IDENT_BAD = re.compile(r"[^0-9a-zA-Z_]")
RESERVED = {"self", "tf", "np", "w", "weights_path", "load_file", "Path"}


def py_identifier(text: str, taken: set[str] | None = None) -> str:
    """`text` made into a fresh python identifier (dots and dashes become underscores), unique within `taken`."""
    ident = _IDENT_BAD.sub("_", text) or "v"
    if ident[0].isdigit():
        ident = "v_" + ident
    if keyword.iskeyword(ident) or ident in RESERVED:
        ident += "_"
    if taken is None:
        return ident
    base, i = ident, 1
    while ident in taken:
        ident, i = f"{base}_{i}", i + 1
    taken.add(ident)
    return ident
