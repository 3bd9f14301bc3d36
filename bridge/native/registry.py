"""The op registry: one small converter per ATen op, registered with `@converter(...)`.

A spec declares its target (`aten.conv2d.default`), its layout policy (how the layout pass treats its tensor
inputs), the TF ops it emits (for documentation and TF.js support checks) and optionally a `check` that names
argument combinations it cannot convert. Built-in converters live in `bridge.native.ops`; users register theirs
in a layer that wins over the built-ins (`ConverterRegistry(fallback=BUILTINS)`, or the process-wide
`USER_CONVERTERS` through `register_converter`). Registering the same target twice in one layer raises.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

from bridge.errors import ConversionError, UnsupportedOpsError

if TYPE_CHECKING:
    from bridge.native.codegen import OpContext
    from bridge.native.ir import Graph, Layout, Node

ConverterFn = Callable[["OpContext", "Node"], "str | Sequence[str | None]"]
CheckFn = Callable[["Node"], "str | None"]
LayoutRule = Callable[["Node", "Layout"], "Layout | None"]

SUPPORTED_OPS_DOC = "docs/SUPPORTED_OPS.md"
NEXT_STEP = ("either convert with the ONNX route (--route onnx, or route='onnx' in bridge.convert; --route auto "
             "falls back to it by itself), or write a converter for the op and register it with "
             f"bridge.native.register_converter ({SUPPORTED_OPS_DOC} lists what the native route converts; "
             "bridge/native/ops/ holds examples)")


class LayoutPolicy(enum.Enum):
    """How the layout pass prepares a node's tensor inputs and what layout its outputs get."""

    ANY = "any"                      # elementwise: inputs share the leading input's layout, output keeps it
    CHANNELS_LAST = "channels_last"  # first input NHWC (NWC, NDHWC), output channels-last; other inputs source
    SOURCE = "source"                # every input in PyTorch order, outputs in PyTorch order
    AXES = "axes"                    # inputs keep their layout; the converter maps axes; `rule` gives the output
    FEATURES = "features"            # works on the last axis (Linear): any layout keeping that axis last


@dataclass(frozen=True)
class ConverterSpec:
    """A registered converter and what it declares."""

    target: str
    fn: ConverterFn
    layout: LayoutPolicy
    emits: tuple[str, ...]
    check: CheckFn | None = None
    rule: LayoutRule | None = None

    @property
    def doc(self) -> str:
        """The converter's docstring: the ATen schema it handles."""
        return (self.fn.__doc__ or "").strip()


class ConverterRegistry:
    """A layer of converters, looked up before its `fallback` layer."""

    def __init__(self, name: str, fallback: ConverterRegistry | None = None) -> None:
        self.name = name
        self.fallback = fallback
        self._specs: dict[str, ConverterSpec] = {}

    def register(self, spec: ConverterSpec) -> None:
        """Add `spec`; a second converter for the same target in this layer raises ConversionError."""
        if spec.target in self._specs:
            old = self._specs[spec.target].fn
            raise ConversionError(
                f"duplicate converter for {spec.target} in the {self.name} registry "
                f"({old.__module__}.{old.__qualname__} is already registered)",
                stage="rebuild-tf", hint="register user converters in a layer over the built-ins: "
                "ConverterRegistry('user', fallback=BUILTINS)")
        self._specs[spec.target] = spec

    def converter(self, *targets: str, layout: LayoutPolicy, emits: Iterable[str] = (),
                  check: CheckFn | None = None, rule: LayoutRule | None = None) -> Callable[[ConverterFn], ConverterFn]:
        """Decorator registering the function as the converter of every target in `targets`."""
        def wrap(fn: ConverterFn) -> ConverterFn:
            for target in targets:
                self.register(ConverterSpec(target, fn, layout, tuple(emits), check, rule))
            return fn
        return wrap

    def lookup(self, target: str) -> ConverterSpec | None:
        """The spec for `target`, this layer first."""
        spec = self._specs.get(target)
        if spec is None and self.fallback is not None:
            return self.fallback.lookup(target)
        return spec

    def targets(self) -> set[str]:
        """Every target this layer and its fallbacks can convert."""
        own = set(self._specs)
        return own | (self.fallback.targets() if self.fallback else set())

    def own_targets(self) -> set[str]:
        """The targets registered in this layer only."""
        return set(self._specs)


BUILTINS = ConverterRegistry("builtin")
USER_CONVERTERS = ConverterRegistry("user", fallback=BUILTINS)


def converter(*targets: str, layout: LayoutPolicy, emits: Iterable[str] = (), check: CheckFn | None = None,
              rule: LayoutRule | None = None) -> Callable[[ConverterFn], ConverterFn]:
    """Register a built-in converter (used by the family modules in bridge.native.ops)."""
    return BUILTINS.converter(*targets, layout=layout, emits=emits, check=check, rule=rule)


def register_converter(*targets: str, layout: LayoutPolicy, emits: Iterable[str] = (),
                       check: CheckFn | None = None,
                       rule: LayoutRule | None = None) -> Callable[[ConverterFn], ConverterFn]:
    """Register a user converter, process-wide; it wins over the built-in converter of the same target."""
    return USER_CONVERTERS.converter(*targets, layout=layout, emits=emits, check=check, rule=rule)


def default_registry() -> ConverterRegistry:
    """The registry rebuilds use unless told otherwise: user converters over the built-ins."""
    load_builtins()
    return USER_CONVERTERS


def load_builtins() -> None:
    """Import the family modules so their converters register (idempotent)."""
    import bridge.native.ops  # noqa: F401


def scan_unsupported(graph: Graph, registry: ConverterRegistry, *, stage: str = "rebuild-tf") -> None:
    """Raise UnsupportedOpsError listing EVERY node without a usable converter, grouped by op: what is
    unsupported (no converter, or the reason its converter refuses the arguments), where each node is in the user's
    code (module path and source line when known) and the two ways out (NEXT_STEP)."""
    ops: dict[str, list[str]] = {}
    groups: dict[str, UnsupportedGroup] = {}
    for node in graph.nodes:
        spec = registry.lookup(node.target)
        reason = "no converter" if spec is None else (spec.check(node) if spec.check else None)
        if not reason:
            continue
        key = node.target if spec is None else f"{node.target} ({reason})"
        ops.setdefault(key, []).append(node.where())
        groups.setdefault(key, UnsupportedGroup(node.target, reason)).nodes.append(node)
    if ops:
        count = sum(len(v) for v in ops.values())
        names = ", ".join(sorted({g.target for g in groups.values()}))
        error = UnsupportedOpsError(
            f"the native route cannot rebuild {count} node(s) in TensorFlow: {names}", ops=ops, stage=stage,
            hint=NEXT_STEP)
        error.details = [groups[key].describe() for key in sorted(groups)]
        raise error


@dataclass
class UnsupportedGroup:
    """The nodes of one unsupported op (and one refusal reason), for the message."""

    target: str
    reason: str
    nodes: list[Node] = field(default_factory=list)

    def describe(self, shown: int = 3) -> str:
        """`aten.atan.default: no converter; 2 node(s): atan in module head.1 (Atan) at model.py:12, ...`"""
        why = self.reason if self.reason == "no converter" else f"its converter refuses this use: {self.reason}"
        places = "; ".join(_place(node) for node in self.nodes[:shown])
        more = f"; and {len(self.nodes) - shown} more" if len(self.nodes) > shown else ""
        return f"{self.target}: {why}; {len(self.nodes)} node(s): {places}{more}"


def _place(node: Node) -> str:
    """Where a node is in the user's code: its module path (and class) and source line, when known."""
    text = node.name
    if node.module_path:
        text += f" in module {node.module_path}" + (f" ({node.module_type})" if node.module_type else "")
    else:
        text += " in the top-level forward()"
    return text + (f" at {node.source}" if node.source else " (source line unknown)")


def supported_ops(registry: ConverterRegistry) -> list[dict[str, str]]:
    """One row per convertible target (target, layout policy, TF ops emitted, ATen schema, converter): the data
    a supported-ops document is generated from, never written by hand."""
    rows = []
    for target in sorted(registry.targets()):
        spec = registry.lookup(target)
        assert spec is not None
        rows.append({"target": target, "layout": spec.layout.value, "emits": ", ".join(spec.emits),
                     "schema": spec.doc.splitlines()[0] if spec.doc else "",
                     "converter": f"{spec.fn.__module__}.{spec.fn.__qualname__}"})
    return rows
