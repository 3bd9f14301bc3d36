"""Walk a captured fx graph and build the `LayersPlan`: each node's emitter adds Keras layer specs over symbolic
tensors and links PyTorch weights to them.

Layouts: every PyTorch tensor is held as a Keras tensor plus `perm` (Keras axis i holds PyTorch axis perm[i]; the
batch is always Keras axis 0). Convolution-family layers work channels-last, so their outputs keep an NHWC (or
NWC) perm, and layout-free layers (activations, dropout, elementwise merges) pass the perm on; a layer that needs
another order gets a Permute first. A Flatten of a channels-last map whose only consumers are Dense layers keeps
the NHWC order and the Dense kernel's rows are permuted instead (`flat_order`), so no transpose runs at all.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import fx

from bridge.errors import LayersRouteError
from bridge.layers_route.capture import Captured
from bridge.layers_route.ir import (
    STAGE,
    Arg,
    LayerSpec,
    LayersPlan,
    Program,
    Shape,
    Step,
    TensorSpec,
    WeightDecl,
    WeightLink,
)
from bridge.source.ports import Interface, Port

GRAPH_MODEL_HINT = "convert to a graph model instead (--web-format graph): it holds any op, but is not trainable"


class Refused(Exception):
    """An emitter cannot convert this node: `what` (a class or op name) and why."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"{what}: {reason}")
        self.what = what
        self.reason = reason


@dataclass(frozen=True)
class KT:
    """A PyTorch tensor held as the Keras tensor `id`: `perm` maps Keras axes to PyTorch axes; `flat_order`, for a
    flattened channels-last map kept in Keras' order, is (the map's PyTorch sizes, the perm it was held in), from
    which `weight_links.flat_order` says which PyTorch feature each Keras feature holds."""

    id: int
    perm: tuple[int, ...]
    torch_shape: Shape
    dtype: str = "float32"
    flat_order: Any = None

    @property
    def rank(self) -> int:
        """The tensor's rank."""
        return len(self.perm)

    def keras_axis(self, torch_axis: int) -> int:
        """The Keras axis holding PyTorch axis `torch_axis` (negative counts from the end)."""
        return self.perm.index(torch_axis % self.rank)

    @property
    def keras_shape(self) -> Shape:
        """The Keras-side shape."""
        return tuple(self.torch_shape[p] for p in self.perm)


@dataclass(frozen=True)
class WeightRef:
    """A parameter or buffer read directly in forward() (an fx ``get_attr``): only custom layers can own it."""

    key: str
    array: np.ndarray
    trainable: bool


@dataclass(frozen=True)
class Stack:
    """PyTorch's stacked recurrent state (``h_n``: [layers * directions, batch, hidden]) as one tensor per layer."""

    items: tuple[KT, ...]


class _Unknown:
    """The value of a node that could not be converted (its problem is already recorded)."""


UNKNOWN = _Unknown()

ModuleEmitter = Callable[["Builder", torch.nn.Module, tuple[Any, ...], dict[str, Any]], Any]
FunctionEmitter = Callable[["Builder", tuple[Any, ...], dict[str, Any]], Any]

MODULE_EMITTERS: dict[type, ModuleEmitter] = {}
FUNCTION_EMITTERS: dict[Any, FunctionEmitter] = {}
METHOD_EMITTERS: dict[str, FunctionEmitter] = {}


def module_emitter(*types: type) -> Callable[[ModuleEmitter], ModuleEmitter]:
    """Register an emitter for modules of `types` (they become fx leaves)."""
    def register(fn: ModuleEmitter) -> ModuleEmitter:
        for t in types:
            MODULE_EMITTERS[t] = fn
        return fn
    return register


def function_emitter(*targets: Any) -> Callable[[FunctionEmitter], FunctionEmitter]:
    """Register an emitter for fx ``call_function`` targets (functions) or ``call_method`` names (strings)."""
    def register(fn: FunctionEmitter) -> FunctionEmitter:
        for target in targets:
            if isinstance(target, str):
                METHOD_EMITTERS[target] = fn
            else:
                FUNCTION_EMITTERS[target] = fn
        return fn
    return register


def load_emitters() -> None:
    """Import the emitter modules (they register themselves)."""
    import bridge.layers_route.attention
    import bridge.layers_route.emit_functions
    import bridge.layers_route.emit_modules
    import bridge.layers_route.recurrent  # noqa: F401


def is_leaf(module: torch.nn.Module) -> bool:
    """True for modules an emitter converts whole."""
    load_emitters()
    return type(module) in MODULE_EMITTERS


@dataclass(frozen=True)
class InputDecl:
    """One model input: its name and web layout (``nhwc`` for an image input moved channels-last, else
    ``source``)."""

    name: str
    layout: str


_NAME_BAD = re.compile(r"[^A-Za-z0-9_]")


@dataclass
class Builder:
    """The conversion state while walking the graph."""

    captured: Captured
    tensors: dict[int, TensorSpec] = field(default_factory=dict)
    layers: list[LayerSpec] = field(default_factory=list)
    links: list[WeightLink] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    batch_norms: list[tuple[str, float]] = field(default_factory=list)
    node: fx.Node | None = None
    _names: set[str] = field(default_factory=set)
    _shared: dict[str, str] = field(default_factory=dict)
    _linked: dict[str, str] = field(default_factory=dict)
    _scopes: list[tuple[str, Shape]] = field(default_factory=list)
    custom_owners: frozenset[str] = frozenset()
    reserved: frozenset[str] = frozenset()

    # ------------------------------------------------------------------------------------------ the current node

    @property
    def path(self) -> str:
        """The module path of the current call_module node (or the node's name for glue); inside a composite's
        `scope`, the sub-module's path."""
        if self._scopes:
            return self._scopes[-1][0]
        assert self.node is not None
        return str(self.node.target) if self.node.op == "call_module" else self.node.name

    @property
    def owner(self) -> str:
        """The innermost module the current node was traced in."""
        if self._scopes:
            return self._scopes[-1][0]
        assert self.node is not None
        return self.captured.owners.get(self.node, "")

    @contextmanager
    def scope(self, path: str, torch_shape: Shape) -> Iterator[None]:
        """Inside a composite module's emitter: convert the sub-module at `path`, whose output has `torch_shape`
        (the graph records only the composite's own output)."""
        self._scopes.append((path, tuple(torch_shape)))
        try:
            yield
        finally:
            self._scopes.pop()

    def out_shape(self, *index: int) -> Shape:
        """The PyTorch shape of the current node's output (or of its element at `index`, for tuple outputs)."""
        if self._scopes:
            return self._scopes[-1][1]
        assert self.node is not None
        a, b = self.captured.values[self.node], self.captured.probe_values[self.node]
        for i in index:
            a, b = a[i], b[i]
        return self.captured.shape(self.node, a, b)

    def out_dtype(self) -> str:
        """The dtype of the current node's tensor output, as a web dtype name."""
        assert self.node is not None
        return web_dtype(self.captured.values[self.node].dtype)

    @property
    def prefer_custom(self) -> bool:
        """True inside a user module that needs a custom layer anyway: its glue ops all become steps of that one
        layer (instead of a few Keras layers between custom pieces)."""
        return bool(self.owner) and self.owner in self.custom_owners and not self._scopes

    # ------------------------------------------------------------------------------------------ tensors, layers

    def new_tensor(self, keras_shape: Shape, dtype: str) -> int:
        """A fresh symbolic tensor id."""
        tid = len(self.tensors)
        self.tensors[tid] = TensorSpec(tid, tuple(keras_shape), dtype)
        return tid

    def layer_name(self, hint: str, reserved_ok: bool = False) -> str:
        """A unique Keras layer name from `hint` (a module path or node name); the model's output names are kept
        for its output layers (`reserved_ok`)."""
        base = _NAME_BAD.sub("_", hint.replace(".", "_")).strip("_") or "layer"
        if base[0].isdigit():
            base = f"l_{base}"
        name, n = base, 1
        while name in self._names or (name in self.reserved and not reserved_ok):
            name, n = f"{base}_{n}", n + 1
        self._names.add(name)
        return name

    def add(self, class_name: str, config: Mapping[str, Any], inputs: Sequence[KT],
            outs: Sequence[tuple[Shape, tuple[int, ...], str, Any]], *, hint: str | None = None,
            shared: str | None = None, program: Program | None = None, template: str | None = None,
            trainable: bool = True, output_name: bool = False) -> list[KT]:
        """Add one layer call; `outs` gives each output's (PyTorch shape, perm, dtype, flat_order). With `shared`
        (a module path) a second call reuses the first call's layer."""
        reuse = self._shared.get(shared) if shared is not None else None
        name = self.layer_name(f"{hint or self.path}_call" if reuse else (hint or self.path), output_name)
        results = []
        for torch_shape, perm, dtype, order in outs:
            keras_shape = tuple(torch_shape[p] for p in perm)
            results.append(KT(self.new_tensor(_batchless(keras_shape), dtype), tuple(perm), tuple(torch_shape), dtype,
                              order))
        self.layers.append(LayerSpec(name=name, class_name=class_name, config=dict(config),
                                     inputs=[kt.id for kt in inputs], outputs=[kt.id for kt in results],
                                     path=self.path if self.node is not None else name,
                                     owner=self.owner if self.node is not None else "", program=program,
                                     template=template, shared_with=reuse, trainable=trainable))
        if shared is not None and reuse is None:
            self._shared[shared] = name
        return results

    def add1(self, class_name: str, config: Mapping[str, Any], inputs: Sequence[KT], torch_shape: Shape,
             perm: tuple[int, ...], *, dtype: str = "float32", order: Any = None,
             **kwargs: Any) -> KT:
        """`add` for a layer with one output."""
        return self.add(class_name, config, inputs, [(torch_shape, perm, dtype, order)], **kwargs)[0]

    def main_layer(self) -> str:
        """The name of the layer the current module's weights live in (its first call's)."""
        return self._shared[self.path]

    def link(self, torch_leaves: Sequence[str], tfjs_leaves: Sequence[str], transform: str, *,
             layer: str | None = None, params: Mapping[str, Any] | None = None, path: str | None = None,
             shared_delta: bool = False, tfjs_layers: Sequence[str] | None = None) -> None:
        """Link the current module's `torch_leaves` (``weight``) to TF.js weights `tfjs_leaves` of `layer` (or one
        layer per leaf in `tfjs_layers`)."""
        base = self.path if path is None else path
        keys = tuple(f"{base}.{leaf}" if base else leaf for leaf in torch_leaves)
        layers = list(tfjs_layers) if tfjs_layers is not None else [layer or self.main_layer()] * len(tfjs_leaves)
        names = tuple(f"{lay}/{leaf}" for lay, leaf in zip(layers, tfjs_leaves))
        for key in keys:
            if key in self._linked:
                raise Refused("parameter", f"{key} is read by two parts ({self._linked[key]} and {names[0]}); a "
                                           "layers model keeps each weight in one layer")
            self._linked[key] = names[0]
        self.links.append(WeightLink(keys, names, transform, tuple(sorted((params or {}).items())), base,
                                     shared_delta))

    # ------------------------------------------------------------------------------------------ layouts

    def permute(self, kt: KT, perm: Sequence[int], hint: str = "") -> KT:
        """`kt` with Keras axes in `perm` order (a Permute layer when it differs)."""
        perm = tuple(perm)
        if kt.perm == perm:
            return kt
        plain(kt)
        if perm[0] != kt.perm[0]:
            raise Refused("layout", f"the batch axis sits at PyTorch axis {kt.perm[0]} here, and a layers model "
                                    "keeps the batch first")
        dims = [kt.perm.index(p) for p in perm[1:]]
        return self.add1("Permute", {"dims": dims}, [kt], kt.torch_shape, perm, dtype=kt.dtype,
                         hint=f"{hint or self.path}_permute")

    def canonical(self, kt: KT, hint: str = "") -> KT:
        """`kt` in PyTorch's own axis order."""
        return self.permute(kt, tuple(range(kt.rank)), hint)

    def channels_last(self, kt: KT, hint: str = "") -> KT:
        """`kt` channels-last (PyTorch axis 1 last), as Keras convolutions want it."""
        return self.permute(kt, (0, *range(2, kt.rank), 1), hint)

    def with_last(self, kt: KT, torch_axis: int, hint: str = "") -> KT:
        """`kt` with PyTorch axis `torch_axis` as the Keras last axis (other axes kept in order)."""
        axis = torch_axis % kt.rank
        if kt.perm[-1] == axis:
            return kt
        return self.permute(kt, tuple(p for p in kt.perm if p != axis) + (axis,), hint)

    # ------------------------------------------------------------------------------------------ custom ops

    def custom(self, op: str, operands: Sequence[Any], attrs: Mapping[str, Any], perm: tuple[int, ...],
               torch_shape: Shape | None = None, dtype: str = "float32") -> KT:
        """A one-step custom layer running table op `op` on `operands` (KT, WeightRef or numbers); the merge pass
        later fuses neighbouring steps of one module into one layer."""
        inputs: list[KT] = []
        weights: list[tuple[WeightRef, WeightDecl]] = []
        args: list[Arg] = []
        main = next((o for o in operands if isinstance(o, KT)), None)
        for operand in operands:
            if isinstance(operand, KT):
                plain(operand)
                args.append(Arg("in", len(inputs)))
                inputs.append(operand)
            elif isinstance(operand, WeightRef):
                decl = WeightDecl(operand.key.rsplit(".", 1)[-1].replace("-", "_"),
                                  _weight_shape(operand.array, main), operand.trainable)
                args.append(Arg("w", len(weights)))
                weights.append((operand, decl))
            elif isinstance(operand, (int, float, bool)):
                args.append(Arg("const", value=float(operand)))
            else:
                raise Refused(op, f"an operand of type {type(operand).__name__}")
        program = Program(inputs=len(inputs), weights=tuple(d for _, d in weights),
                          steps=(Step(op, tuple(args), tuple(sorted(attrs.items()))),), output=Arg("step", 0))
        shape = self.out_shape() if torch_shape is None else torch_shape
        out = self.add1(f"custom:{op}", {}, inputs, shape, perm, dtype=dtype, program=program)
        layer = self.layers[-1].name
        for ref, decl in weights:
            self._link_weight_ref(ref, decl, layer, main)
        return out

    def _link_weight_ref(self, ref: WeightRef, decl: WeightDecl, layer: str, main: KT | None) -> None:
        """Link a directly read parameter to the custom layer owning it (moved into the operand's layout)."""
        if ref.key in self._linked:
            raise Refused("parameter", f"{ref.key} is read by two parts; a layers model keeps each weight in one "
                                       "layer")
        self._linked[ref.key] = f"{layer}/{decl.name}"
        torch_shape = tuple(ref.array.shape)
        if tuple(decl.shape) == torch_shape:
            link = WeightLink((ref.key,), (f"{layer}/{decl.name}",), "identity", path=ref.key.rsplit(".", 1)[0])
        else:
            assert main is not None
            full = (1,) * (main.rank - len(torch_shape)) + torch_shape
            link = WeightLink((ref.key,), (f"{layer}/{decl.name}",), "reshape_permute",
                              (("full", full), ("perm", main.perm), ("torch_shape", torch_shape)),
                              path=ref.key.rsplit(".", 1)[0])
        self.links.append(link)

    # ------------------------------------------------------------------------------------------ values

    def tensor_arg(self, value: Any, what: str = "input") -> KT:
        """`value` as a tensor, or Refused."""
        if isinstance(value, Stack):
            raise Refused(what, "a stacked recurrent state used as a whole (index it, e.g. h_n[-1])")
        if not isinstance(value, KT):
            raise Refused(what, f"expected a tensor, got {type(value).__name__}")
        return value


def plain(kt: KT) -> KT:
    """`kt`, refusing a flattened channels-last map whose features are not in PyTorch's order (an internal
    invariant: the flatten emitter only keeps that order when every consumer can take it)."""
    if kt.flat_order is not None:
        raise Refused("flatten", "a flattened channels-last feature map reached a layer that needs PyTorch's order")
    return kt


def _weight_shape(array: np.ndarray, main: KT | None) -> tuple[int, ...]:
    """The Keras shape of a weight broadcast against the tensor `main` in its layout."""
    shape = tuple(array.shape)
    if main is None or len(shape) == 0:
        return shape
    if main.perm == tuple(range(main.rank)):
        return shape
    full = (1,) * (main.rank - len(shape)) + shape
    return tuple(full[p] for p in main.perm)


def _batchless(keras_shape: Shape) -> Shape:
    return (None, *keras_shape[1:]) if keras_shape else keras_shape


def web_dtype(dtype: torch.dtype) -> str:
    """The TF.js dtype of a torch dtype (int64 crosses as int32, floats as float32)."""
    if dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        return "int32"
    if dtype == torch.bool:
        return "bool"
    return "float32"


def torch_dtype_name(dtype: torch.dtype) -> str:
    """A torch dtype's numpy-style name (``int64``, ``float32``)."""
    return str(dtype).replace("torch.", "")


# ---------------------------------------------------------------------------------------------- the walk

def build_plan(captured: Captured, inputs: Sequence[InputDecl], output_names: Sequence[str] | None = None
               ) -> LayersPlan:
    """Convert every node; raise `LayersRouteError` naming every part that has no layers-model form. A user
    module that needed a custom step is converted again with all its glue as custom steps, so it becomes one
    custom layer."""
    plan = _build_plan(captured, inputs, output_names, frozenset())
    owners = frozenset(spec.owner for spec in plan.layers if spec.program is not None and spec.owner
                       and spec.owner not in _leaf_paths(captured))
    return _build_plan(captured, inputs, output_names, owners) if owners else plan


def _leaf_paths(captured: Captured) -> set[str]:
    """Paths of the leaf modules (converted whole by an emitter)."""
    return {str(n.target) for n in captured.nodes() if n.op == "call_module"}


def _build_plan(captured: Captured, inputs: Sequence[InputDecl], output_names: Sequence[str] | None,
                custom_owners: frozenset[str]) -> LayersPlan:
    load_emitters()
    ctx = Builder(captured, custom_owners=custom_owners, reserved=frozenset(output_names or ()))
    env: dict[fx.Node, Any] = {}
    problems: list[tuple[str, str, str]] = []
    placeholders = [n for n in captured.nodes() if n.op == "placeholder"]
    if len(placeholders) != len(inputs):
        raise LayersRouteError(f"forward() takes {len(placeholders)} inputs, {len(inputs)} were described",
                               parts=[], stage=STAGE, hint="give one example input per forward() argument")
    input_ports: list[Port] = []
    plan_inputs: list[tuple[str, int]] = []
    for node, decl in zip(placeholders, inputs):
        kt, port = _input(ctx, node, decl)
        env[node] = kt
        input_ports.append(port)
        plan_inputs.append((decl.name, kt.id))
    result: Any = None
    for node in captured.nodes():
        if node.op == "placeholder":
            continue
        if node.op == "output":
            result = fx.node.map_arg(node.args[0], lambda n: env[n])
            continue
        ctx.node = node
        args = fx.node.map_arg(node.args, lambda n: env[n])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
        if _has_unknown(args) or _has_unknown(kwargs):
            missing = _missing_converter(ctx, node)
            if missing:
                problems.append((_where(ctx, node), missing, "no layers-model converter for this op"))
            env[node] = UNKNOWN
            continue
        try:
            env[node] = _convert_node(ctx, node, args, kwargs)
        except Refused as refused:
            problems.append((_where(ctx, node), refused.what, refused.reason))
            env[node] = UNKNOWN
    ctx.node = None
    outputs, output_ports = ([], []) if problems else _outputs(ctx, result, output_names, problems)
    if problems:
        raise LayersRouteError(f"{len(problems)} part(s) of {type(captured.module).__name__} have no TF.js layers "
                               "form", parts=problems, stage=STAGE, hint=GRAPH_MODEL_HINT)
    _check_links(ctx, captured.module)
    return LayersPlan(tensors=ctx.tensors, inputs=plan_inputs, outputs=outputs, layers=ctx.layers, links=ctx.links,
                      interface=Interface(tuple(input_ports), tuple(output_ports)), skipped=ctx.skipped,
                      notes=ctx.notes, batch_norms=ctx.batch_norms)


def _missing_converter(ctx: Builder, node: fx.Node) -> str | None:
    """The op or module class of a node no emitter handles (known even when its inputs failed to convert)."""
    if node.op == "call_module":
        module = ctx.captured.graph_module.get_submodule(str(node.target))
        return None if type(module) in MODULE_EMITTERS else type(module).__name__
    if node.op == "call_function" and node.target not in FUNCTION_EMITTERS:
        value = ctx.captured.values.get(node)
        return getattr(node.target, "__name__", str(node.target)) if isinstance(value, torch.Tensor) else None
    if node.op == "call_method" and str(node.target) not in METHOD_EMITTERS:
        return f"Tensor.{node.target}" if isinstance(ctx.captured.values.get(node), torch.Tensor) else None
    return None


def _where(ctx: Builder, node: fx.Node) -> str:
    if node.op == "call_module":
        return str(node.target)
    owner = ctx.captured.owners.get(node, "")
    return f"{owner}:{node.name}" if owner else node.name


def _has_unknown(value: Any) -> bool:
    found = False

    def visit(v: Any) -> Any:
        nonlocal found
        found = found or v is UNKNOWN
        return v

    fx.node.map_aggregate(value, visit)
    return found


def _input(ctx: Builder, node: fx.Node, decl: InputDecl) -> tuple[KT, Port]:
    """A model input: an Input spec (NHWC for 4-D image inputs unless the layout says otherwise) and its port."""
    value = ctx.captured.values[node]
    if not isinstance(value, torch.Tensor):
        raise LayersRouteError(f"input {decl.name} is a {type(value).__name__}, not a tensor", parts=[], stage=STAGE)
    shape = ctx.captured.shape(node)
    if value.dim() == 0:
        raise LayersRouteError(f"input {decl.name} is a scalar: a layers model's inputs have a batch axis",
                               parts=[], stage=STAGE)
    perm = (0, 2, 3, 1) if decl.layout == "nhwc" and value.dim() == 4 else tuple(range(value.dim()))
    dtype = web_dtype(value.dtype)
    kt = KT(ctx.new_tensor(_batchless(tuple(shape[p] for p in perm)), dtype), perm, (None, *shape[1:]), dtype)
    ctx.layers.append(LayerSpec(name=ctx.layer_name(decl.name), class_name="InputLayer", config={"dtype": dtype},
                                inputs=[], outputs=[kt.id], path=decl.name))
    port = Port(decl.name, (None, *shape[1:]), torch_dtype_name(value.dtype),
                "nhwc" if perm == (0, 2, 3, 1) else decl.layout, perm)
    return kt, port


def _convert_node(ctx: Builder, node: fx.Node, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """One node's value."""
    if node.op == "get_attr":
        return _get_attr(ctx, node)
    if node.op == "call_module":
        module = ctx.captured.graph_module.get_submodule(str(node.target))
        emitter = MODULE_EMITTERS.get(type(module))
        if emitter is None:
            raise Refused(type(module).__name__, "no layers-model converter for this module")
        return emitter(ctx, module, args, kwargs)
    if node.op == "call_function":
        emitter = FUNCTION_EMITTERS.get(node.target)
        if emitter is None:
            return _python_value(ctx, node, args, kwargs, getattr(node.target, "__name__", str(node.target)))
        return emitter(ctx, args, kwargs)
    if node.op == "call_method":
        emitter = METHOD_EMITTERS.get(str(node.target))
        if emitter is None:
            return _python_value(ctx, node, args, kwargs, f"Tensor.{node.target}")
        return emitter(ctx, args, kwargs)
    raise Refused(node.op, "unexpected fx node kind")


def _python_value(ctx: Builder, node: fx.Node, args: Any, kwargs: Any, what: str) -> Any:
    """A node computing on plain Python values (sizes, constants) keeps its recorded value; one touching a
    tensor has no converter."""
    tensors = []
    fx.node.map_aggregate((args, kwargs), lambda v: tensors.append(v) if isinstance(v, (KT, Stack, WeightRef))
                          else v)
    if tensors:
        raise Refused(what, "no layers-model converter for this op")
    value = ctx.captured.values[node]
    if isinstance(value, torch.Tensor):
        raise Refused(what, "creates a tensor from Python values (a layers model computes only from its inputs)")
    if value != ctx.captured.probe_values[node]:
        return DynamicInt(value)
    return value


@dataclass(frozen=True)
class DynamicInt:
    """A Python number that depends on a dynamic size (``x.size(0)``): usable only where it is not baked in."""

    example: Any


def _get_attr(ctx: Builder, node: fx.Node) -> WeightRef:
    key = str(node.target)
    value = ctx.captured.values[node]
    if not isinstance(value, torch.Tensor):
        raise Refused("get_attr", f"{key} is not a tensor")
    trainable = isinstance(value, torch.nn.Parameter) and value.requires_grad
    return WeightRef(key, value.detach().cpu().numpy().astype(np.float32), trainable)


def _outputs(ctx: Builder, result: Any, names: Sequence[str] | None, problems: list[tuple[str, str, str]]
             ) -> tuple[list[tuple[str, int]], list[Port]]:
    """The model outputs: each named (an identity Activation or a Permute named after the output), NHWC kept for
    4-D channels-last maps, anything else back in PyTorch's order."""
    if isinstance(result, Mapping):
        items = [(str(k), v) for k, v in result.items()]
    elif isinstance(result, (tuple, list)):
        items = [(f"output_{i}", v) for i, v in enumerate(result)]
    else:
        items = [("output_0", result)]
    if names:
        if len(names) != len(items):
            raise LayersRouteError(f"{len(names)} output names for {len(items)} outputs", parts=[], stage=STAGE)
        items = [(n, v) for n, (_, v) in zip(names, items)]
    outputs, ports = [], []
    for name, value in items:
        if isinstance(value, Stack):
            problems.append((name, "output", "a stacked recurrent state as a model output (index it: h_n[-1])"))
            continue
        if not isinstance(value, KT):
            problems.append((name, "output", f"an output of type {type(value).__name__}"))
            continue
        try:
            kt = plain(value)
        except Refused as refused:
            problems.append((name, refused.what, refused.reason))
            continue
        nhwc = kt.rank == 4 and kt.perm == (0, 2, 3, 1)
        if nhwc:
            out = ctx.add1("Activation", {"activation": "linear"}, [kt], kt.torch_shape, kt.perm, dtype=kt.dtype,
                           hint=name, output_name=True)
        elif kt.perm != tuple(range(kt.rank)):
            try:
                if kt.perm[0] != 0:
                    raise Refused("output", "the batch axis is not first")
                out = ctx.add1("Permute", {"dims": [kt.perm.index(p) for p in range(1, kt.rank)]}, [kt],
                               kt.torch_shape, tuple(range(kt.rank)), dtype=kt.dtype, hint=name, output_name=True)
            except Refused as refused:
                problems.append((name, refused.what, refused.reason))
                continue
        else:
            out = ctx.add1("Activation", {"activation": "linear"}, [kt], kt.torch_shape, kt.perm, dtype=kt.dtype,
                           hint=name, output_name=True)
        layer = ctx.layers[-1].name
        outputs.append((layer, out.id))
        ports.append(Port(layer, out.torch_shape, kt.dtype, "nhwc" if nhwc else "source", out.perm))
    return outputs, ports


def _check_links(ctx: Builder, module: torch.nn.Module) -> None:
    """Every state_dict entry is linked to a TF.js weight, knowingly skipped, or unused by forward() on the example
    inputs: those are skipped with a note (the layers model cannot hold them; importing keeps the module's)."""
    linked = {key for link in ctx.links for key in link.torch_keys} | set(ctx.skipped)
    unused = [key for key in module.state_dict() if key not in linked]
    if unused:
        ctx.skipped.extend(unused)
        ctx.notes.append(f"{len(unused)} state_dict entries are not used by forward() on the example inputs and are "
                         f"not in the layers model (importing weights keeps the module's): {', '.join(unused[:8])}"
                         + (" ..." if len(unused) > 8 else ""))
