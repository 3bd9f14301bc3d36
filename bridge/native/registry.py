"""The op registry: one small converter per ATen op, registered with `@converter(...)`.

A spec declares its target (`aten.conv2d.default`), its layout policy (how the layout pass treats its tensor
inputs), the TF ops it emits (for documentation and TF.js support checks) and optionally a `check` that names
argument combinations it cannot convert. Built-in converters live in `bridge.native.ops`; users register theirs
in a layer that wins over the built-ins (`ConverterRegistry(fallback=BUILTINS)`, or the process-wide
`USER_CONVERTERS` through `register_converter`). Registering the same target twice in one layer raises.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

from bridge.errors import ConversionError, UnsupportedOpsError

if TYPE_CHECKING:
    from bridge.native.codegen import OpContext
    from bridge.native.ir import Graph, Layout, Node

ConverterFn = Callable[["OpContext", "Node"], "str | Sequence[str | None]"]
CheckFn = Callable[["Node"], "str | None"]
LayoutRule = Callable[["Node", "Layout"], "Layout | None"]

NEXT_STEP = ("convert this model with the ONNX route (route='onnx'), or register a converter for the op with "
             "bridge.native.register_converter (see bridge/native/ops/ for examples)")


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
    """Raise UnsupportedOpsError listing EVERY node without a usable converter, grouped by op."""
    ops: dict[str, list[str]] = {}
    for node in graph.nodes:
        spec = registry.lookup(node.target)
        if spec is None:
            ops.setdefault(node.target, []).append(node.where())
            continue
        reason = spec.check(node) if spec.check else None
        if reason:
            ops.setdefault(f"{node.target} ({reason})", []).append(node.where())
    if ops:
        count = sum(len(v) for v in ops.values())
        raise UnsupportedOpsError(
            f"{count} node(s) in {len(ops)} op group(s) cannot be rebuilt in TensorFlow by the native route",
            ops=ops, stage=stage, hint=NEXT_STEP)


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
