"""Code generation: run each node's converter to get a line of TensorFlow source, then render
templates/tf_model.py.j2 into a readable `tf.Module` subclass (one tf.Variable per weight, named after its
state_dict key; one line per op, grouped under `tf.name_scope(<module path>)`)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

import jinja2
import numpy as np

from bridge.errors import BridgeError, ConversionError
from bridge.source.ports import web_dtype
from bridge.native.ir import SYMINT, Dim, Graph, Layout, Node, Size, Value, py_identifier, static_size
from bridge.native.layout import RELAYOUT, node_failure, relayout_label
from bridge.native.registry import ConverterRegistry
from bridge.native.sizes import render_size

_SCOPE_OK = re.compile(r"[^A-Za-z0-9_.\-]")
_WEIGHT_REF = re.compile(r"\x00(\w+)\x00")


@dataclass
class GeneratedModel:
    """The generated source, the weights to store (variable key -> array) and what was emitted."""

    source: str
    class_name: str
    weights: dict[str, np.ndarray]
    op_counts: dict[str, int] = field(default_factory=dict)


class OpContext:
    """What a converter sees: its node's arguments as TF expressions or python constants, layout helpers and a
    way to emit helper lines. Converters return the expression of each output."""

    def __init__(self, gen: _Generator, node: Node) -> None:
        self._gen = gen
        self.node = node

    # -- arguments

    def value(self, name: str = "input") -> Value:
        """The IR value passed as tensor argument `name`."""
        arg = self.node.args.get(name)
        if not isinstance(arg, Value):
            raise ConversionError(f"{self.node.target}: argument {name} is not a tensor", stage="rebuild-tf",
                                  details=[self.node.where()])
        return arg

    def t(self, name: str = "input") -> str:
        """TF expression of tensor argument `name` (a local variable or `self.<weight>`)."""
        return self._gen.expr(self.value(name))

    def expr(self, value: Value) -> str:
        """TF expression of an IR value (e.g. one item of a list argument)."""
        return self._gen.expr(value)

    def ts(self, name: str) -> list[str]:
        """TF expressions of a list-of-tensors argument (cat)."""
        return [self._gen.expr(v) for v in self.node.args[name]]

    def has(self, name: str) -> bool:
        """True when argument `name` is a tensor (optional tensors such as `bias` may be None)."""
        return isinstance(self.node.args.get(name), Value)

    def arg(self, name: str, default: Any = None) -> Any:
        """Python value of a non-tensor argument (ints, floats, lists, strings), or `default` when absent/None."""
        value = self.node.args.get(name, default)
        return default if value is None else value

    def sym(self, item: Any) -> str:
        """A python literal, or the expression of a symbolic value (sym_size), for shape lists."""
        return self._gen.expr(item) if isinstance(item, Value) else lit(item)

    def size(self, size: Size | Value) -> str:
        """TF source of one size: an int literal, a symbolic int argument, or torch.export's expression of a
        dynamic size computed from the inputs' shapes."""
        if isinstance(size, Value):
            return self._gen.expr(size)
        return self._gen.render_size(size, self.node.where())

    def dims(self, value: Value | str = "input") -> tuple[Size, ...]:
        """The TF (physical) sizes of a tensor argument (or a Value): ints and symbolic expressions."""
        value = self.value(value) if isinstance(value, str) else value
        assert value.layout is not None
        return value.layout.physical_shape(value.sizes) if value.layout.flat is None else value.sizes

    # -- layout

    def layout(self, name: str = "input") -> Layout:
        """Layout of tensor argument `name` after the layout pass."""
        layout = self.value(name).layout
        assert layout is not None
        return layout

    def axis(self, dim: int, name: str = "input") -> int:
        """Physical (TF) axis of source axis `dim` of argument `name`."""
        return self.layout(name).axis(dim)

    def out(self, index: int = 0) -> Value:
        """Output value `index` (shape, dtype, layout)."""
        out = self.node.outputs[index]
        assert out is not None
        return out

    def out_physical_shape(self, index: int = 0) -> tuple[Dim, ...]:
        """The TF shape of output `index`."""
        out = self.out(index)
        assert out.layout is not None
        return out.layout.physical_shape(out.shape) if out.layout.flat is None else out.shape

    def out_dims(self, index: int = 0) -> tuple[Size, ...]:
        """The TF sizes of output `index`: ints and torch.export's symbolic expressions (for reshape targets)."""
        return self.dims(self.out(index))

    # -- weights and helper lines

    def weight(self, name: str, variant: str, fn: Callable[[np.ndarray], np.ndarray],
               tf_fn: Callable[[str], str] | None = None) -> str:
        """Argument `name` transformed by the named weight transform `fn`; folded into the stored array when it is
        a weight, else done in TF by `tf_fn` (a ConversionError if not given)."""
        return self.transformed(self.value(name), variant, fn, tf_fn)

    def transformed(self, value: Value, variant: str, fn: Callable[[np.ndarray], np.ndarray],
                    tf_fn: Callable[[str], str] | None = None) -> str:
        """`weight` for a Value itself (e.g. an item of a list argument such as an RNN's params)."""
        if value.is_weight:
            return self._gen.expr(self._gen.graph.derive_weight(value, variant, fn))
        if tf_fn is None:
            raise ConversionError(f"{self.node.target}: a weight must be a parameter, not a computed tensor",
                                  stage="rebuild-tf", details=[self.node.where()], hint="try the ONNX route")
        return tf_fn(self._gen.expr(value))

    def combined(self, values: Sequence[Value], variant: str, fn: Callable[..., np.ndarray],
                 tf_fn: Callable[..., str]) -> str:
        """One stored weight computed by `fn` from several weights (folded at conversion time); when one of them
        is computed at run time, `tf_fn` of their expressions instead."""
        if all(v.is_weight for v in values):
            return self._gen.expr(self._gen.graph.combine_weights(list(values), variant, fn))
        return tf_fn(*[self._gen.expr(v) for v in values])

    def closure(self, hint: str, graph: Graph, doc: str) -> str:
        """A nested function of __call__ running `graph` (see _Generator.closure); returns its name."""
        return self._gen.closure(f"{self.node.name}_{hint}", graph, doc)

    def method(self, hint: str, params: Sequence[str], doc: str, body: Callable[[list[str]], Sequence[str]]) -> str:
        """A helper method of the generated module, named after this node (see _Generator.method); returns
        `self.<name>` for calling it."""
        return "self." + self._gen.method(f"{self.node.name}_{hint}", params, doc, body)

    def sole_user(self, value: Value, node: Node) -> bool:
        """True when `node` is the only reader of `value` and the value is no graph output: a converter may then
        compute what it needs from `value`'s producers instead of `value` itself, and `value` is never computed."""
        return self._gen.sole_user(value, node)

    def let(self, expr: str, hint: str = "t") -> str:
        """Emit `name = expr` as a helper line and return the fresh local name."""
        name = py_identifier(f"{self.node.name}_{hint}", self._gen.taken)
        self._gen.emit(name, expr, None)
        return name

    def shape_list(self, shape: Sequence[Size | Value]) -> str:
        """A reshape target: a literal list (-1 standing for the one unknown dim), else tf.stack of the sizes,
        dynamic ones computed from the inputs' shapes."""
        missing = [i for i, d in enumerate(shape) if isinstance(d, Value) or static_size(d) in (None, -1)]
        if len(missing) <= 1:
            return "[" + ", ".join("-1" if i in missing else str(static_size(d)) for i, d in enumerate(shape)) + "]"
        fills = [i for i, d in enumerate(shape) if d is None or static_size(d) == -1]  # nothing to compute them from
        fill = fills[0] if fills else None
        if len(fills) > 1:
            raise ConversionError(f"{self.node.target}: reshape with several unknown dims", stage="rebuild-tf",
                                  details=[self.node.where()])
        return "tf.stack([" + ", ".join("-1" if i == fill else self.size(d) for i, d in enumerate(shape)) + "])"


def lit(value: Any) -> str:
    """A python literal for a constant argument (infinities spelled so the generated file runs)."""
    if isinstance(value, float) and math.isinf(value):
        return "float('inf')" if value > 0 else "-float('inf')"
    if isinstance(value, float) and math.isnan(value):
        return "float('nan')"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(lit(v) for v in value) + "]"
    return repr(value)


class _Generator:
    def __init__(self, graph: Graph, registry: ConverterRegistry) -> None:
        self.graph = graph
        self.registry = registry
        self.taken: set[str] = {v.name for v in graph.inputs} | {
            o.name for n in graph.all_nodes() for o in n.outputs if o is not None}
        self.blocks: list[tuple[str, list[_Line]]] = []
        self.weights: dict[str, Value] = {}
        self.op_counts: dict[str, int] = {}
        self.symbols: dict[Any, str] = {}  # sympy symbol of a dynamic input size -> local holding it
        self.methods: list[_Method] = []
        self._sinks: list[list[_Line]] = []  # bodies of the methods being written (innermost last)
        self._readers: dict[int, list[Node | None]] | None = None  # id(value) -> reading nodes, built on demand
        self._size_lines = self._input_sizes()

    def _input_sizes(self) -> list[_Line]:
        """`<input>_size<axis> = tf.shape(<input>)[<TF axis>]` for every dynamic input size torch.export named
        by a symbol (unused ones are pruned)."""
        lines = []
        for value in self.graph.inputs:
            layout = value.layout or Layout.source(value.rank)
            for axis, size in enumerate(value.sizes):
                if getattr(size, "is_Symbol", False) and size not in self.symbols:
                    name = py_identifier(f"{value.name}_size{axis}", self.taken)
                    self.symbols[size] = name
                    lines.append(_Line(name, f"tf.shape({value.name})[{layout.axis(axis)}]",
                                       f"{value.key or value.name}.shape[{axis}] in PyTorch ({size})"))
        return lines

    def sole_user(self, value: Value, node: Node) -> bool:
        """See OpContext.sole_user (the graph's readers, Graph.readers, are listed once)."""
        if self._readers is None:
            self._readers = self.graph.readers()
        readers = self._readers.get(id(value), [])
        return len(readers) == 1 and readers[0] is node

    def render_size(self, size: Size, where: str = "") -> str:
        """TF source computing `size` from the inputs' dynamic sizes."""
        return render_size(size, self.symbols, where)

    def expr(self, value: Value) -> str:
        """How the generated code refers to `value` (weights through a marker resolved once names are known)."""
        if value.is_weight:
            self.weights.setdefault(value.name, value)
            return f"self.\x00{value.name}\x00"
        if value.dtype == SYMINT and value.producer is None and value.expr is not None:
            return self.render_size(value.expr, value.name)
        return value.name

    def emit(self, target: str, expr: str, comment: str | None, *, raw: bool = False) -> None:
        """Append `target = expr  # comment` (or, `raw`, the statement `expr` defining `target`) to the function
        being written, else to the current module block."""
        sink = self._sinks[-1] if self._sinks else self.blocks[-1][1]
        sink.append(_Line(target, expr, comment, raw))

    def closure(self, hint: str, graph: Graph, doc: str) -> str:
        """Emit `def <name>():` holding the converted nodes of `graph` (a torch.cond branch) and returning its
        outputs; it reads the enclosing __call__'s values directly. Returns the function's name."""
        name = py_identifier(hint, self.taken)
        self._sinks.append([])
        try:
            for node in graph.nodes:
                self._convert(node)
            returns = [self.expr(v) for v in graph.outputs]
        finally:
            lines = self._sinks.pop()
        body = [f'    """{doc}"""'] + ["    " + line.render(lambda text: text).replace("\n", "\n    ")
                                       for line in lines]
        body.append(f"    return ({', '.join(returns)}{',' if len(returns) == 1 else ''})")
        self.emit(name, "\n".join([f"def {name}():", *body]), None, raw=True)
        return name

    def method(self, hint: str, params: Sequence[str], doc: str,
               body: Callable[[list[str]], Sequence[str]]) -> str:
        """Define a helper method of the generated tf.Module (a loop body): `body` gets the parameter names, emits
        the method's lines (helper lines go there while it runs) and returns the expressions the method returns.
        The method sees only its parameters and the module's weights. Returns the method's name."""
        name = py_identifier(hint, self.taken)
        names = [py_identifier(p) for p in params]  # the method's own locals; kept out of generated line names
        self.taken |= set(names)
        self._sinks.append([])
        try:
            returns = list(body(names))
        finally:
            lines = self._sinks.pop()
        self.methods.append(_Method(name, names, doc, lines, returns))
        return name

    def run(self) -> list[tuple[str, list[_Line]]]:
        if self._size_lines:
            self.blocks.append(("", list(self._size_lines)))
        for node in self.graph.nodes:
            scope = _SCOPE_OK.sub("_", node.module_path)
            if not self.blocks or self.blocks[-1][0] != scope:
                self.blocks.append((scope, []))
            self._convert(node)
        return self.blocks

    def _convert(self, node: Node) -> None:
        spec = self.registry.lookup(node.target)
        if spec is None:
            raise ConversionError(f"no converter for {node.target}", stage="rebuild-tf", details=[node.where()])
        try:
            result = spec.fn(OpContext(self, node), node)
        except BridgeError:
            raise
        except Exception as exc:  # noqa: BLE001 - a converter bug must still name its node
            raise node_failure(node, "generating TensorFlow code for", exc) from exc
        exprs = [result] if isinstance(result, str) else list(result)
        comment: str | None = " · ".join(x for x in (node.module_path or node.name, node.source, _note(node)) if x)
        for out, expr in zip(node.outputs, exprs):
            if out is not None and expr is not None:
                self.emit(out.name, expr, comment)
                comment = None
        self.op_counts[node.target] = self.op_counts.get(node.target, 0) + 1


@dataclass
class _Line:
    """One generated assignment."""

    target: str
    expr: str
    comment: str | None

    raw: bool = False  # `expr` is a whole statement (a nested function definition), not an expression

    def render(self, resolve: Callable[[str], str]) -> str:
        if self.raw:
            return resolve(self.expr)
        return f"{self.target} = {resolve(self.expr)}" + (f"  # {self.comment}" if self.comment else "")


@dataclass
class _Method:
    """A helper method of the generated module (a loop body): its lines and what it returns."""

    name: str
    params: list[str]
    doc: str
    lines: list[_Line]
    returns: list[str]

    def weight_refs(self) -> set[str]:
        return {m for text in [line.expr for line in self.lines] + self.returns for m in _WEIGHT_REF.findall(text)}

    def render(self, resolve: Callable[[str], str]) -> dict[str, Any]:
        returns = ", ".join(resolve(r) for r in self.returns)
        return {"name": self.name, "params": self.params, "doc": self.doc,
                "lines": [line.render(resolve) for line in self.lines],
                "returns": returns + ("," if len(self.returns) == 1 else "")}


def _note(node: Node) -> str:
    """Extra comment text: what a layout conversion does."""
    if node.target != RELAYOUT:
        return ""
    value, layout = node.args["input"], node.args["layout"]
    return f"layout {relayout_label(value.layout)} -> {relayout_label(layout)}"


def _prune(blocks: list[tuple[str, list[_Line]]], roots: list[str]) -> list[tuple[str, list[_Line]]]:
    """Drop assignments nothing reads (e.g. a sym_size a converter did not need), last to first."""
    used = set(roots)
    kept: list[tuple[str, list[_Line]]] = []
    for scope, lines in reversed(blocks):
        keep = []
        for line in reversed(lines):
            if line.target in used:
                used |= set(_IDENT.findall(line.expr))
                keep.append(line)
        if keep:
            kept.append((scope, keep[::-1]))
    return kept[::-1]


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def generate(graph: Graph, registry: ConverterRegistry, *, source_info: dict[str, str]) -> GeneratedModel:
    """Run every converter and render the tf.Module source."""
    gen = _Generator(graph, registry)
    raw_outputs = [(name, gen.expr(value)) for name, value in zip(graph.output_names, graph.outputs)]
    blocks = _prune(gen.run(), [ident for _, expr in raw_outputs for ident in _IDENT.findall(expr)])
    referenced = set(_WEIGHT_REF.findall(" ".join(e for _, e in raw_outputs)))
    referenced |= {m for _, lines in blocks for line in lines for m in _WEIGHT_REF.findall(line.expr)}
    referenced |= {m for method in gen.methods for m in method.weight_refs()}
    used = [v for name, v in gen.weights.items() if name in referenced]
    names = _variable_names(used)
    taken: set[str] = set()
    attrs = {value_name: py_identifier(key, taken) for value_name, key in names.items()}

    def resolve(text: str) -> str:
        return _WEIGHT_REF.sub(lambda m: attrs[m.group(1)], text)

    body = [(scope, [line.render(resolve) for line in lines]) for scope, lines in blocks]
    class_name = py_identifier(graph.name) if graph.name[:1].isupper() else "TFModel"
    variables = [{"attr": attrs[n], "key": names[n], "tf_name": _tf_name(names[n]),
                  "shape": list(graph.arrays[n].shape), "variant": gen.weights[n].variant} for n in names]
    outputs = [{"name": name, "expr": resolve(expr), "op_name": _SCOPE_OK.sub("_", name)}
               for name, expr in raw_outputs]
    inputs = [{"ident": v.name, "name": v.key, "shape": _spec_shape(v), "dtype": v.dtype,
               "web_dtype": web_dtype(v.dtype),  # the signature takes the narrower type, widened inside
               "layout": v.layout.name() if v.layout else "source"} for v in graph.inputs]
    methods = [method.render(resolve) for method in gen.methods]
    source = _template().render(class_name=class_name, body=body, variables=variables, inputs=inputs,
                                outputs=outputs, info=source_info, methods=methods)
    weights = {names[n]: graph.arrays[n] for n in names}
    return GeneratedModel(source, class_name, weights, gen.op_counts)


def _variable_names(values: list[Value]) -> dict[str, str]:
    """Weight value name -> stored key: the state_dict key, suffixed by its variant only when one key is used
    in several forms."""
    by_key: dict[str, list[Value]] = {}
    for value in values:
        by_key.setdefault(value.key or value.name, []).append(value)
    names: dict[str, str] = {}
    for key, group in by_key.items():
        for value in group:
            variant = re.sub(r"[^A-Za-z0-9_]+", "_", value.variant).strip("_")
            names[value.name] = key if len(group) == 1 or not value.variant else f"{key}.{variant}"
    return names


def _tf_name(key: str) -> str:
    """A valid TF variable name for a state_dict key (they usually already are)."""
    name = _SCOPE_OK.sub("_", key)
    return name if name[:1].isalnum() or name[:1] == "." else "v" + name


def _spec_shape(value: Value) -> list[int | None]:
    layout = value.layout or Layout.source(value.rank)
    return list(layout.physical_shape(value.shape))


def _template() -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_dir())), keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined, autoescape=False)
    return env.get_template("tf_model.py.j2")


def template_dir() -> Path:
    """The folder holding tf_model.py.j2 (the installed bridge.templates package, else the repo's templates/)."""
    try:
        path = Path(str(resources.files("bridge.templates")))
        if (path / "tf_model.py.j2").exists():
            return path
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parents[2] / "templates"
