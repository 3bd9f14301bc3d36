"""Capture: torch.export (strict first, then non-strict) into the native IR.

High-level ATen ops that have a converter (conv, linear, norms, pools, ...) are kept whole; everything else is
decomposed by torch's default decomposition table. Each IR node records its module path (`layer3.1.conv2`, from
`nn_module_stack`) and the user source line (from `stack_trace`).
"""

from __future__ import annotations

import contextlib
import functools
import operator
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch

from bridge.errors import CaptureError, DataDependentBranchError, UsageError
from bridge.native.ir import SYMINT, Dim, Graph, Node, Size, Value, py_identifier

# Nodes that only copy or re-label a tensor at inference time; they become aliases in the IR.
_IDENTITY_TARGETS = {"aten.clone.default", "aten.lift_fresh_copy.default", "aten.detach_.default",
                     "aten.detach.default", "aten.alias.default", "aten.contiguous.default",
                     "aten.dropout.default", "aten.feature_dropout.default", "aten.alpha_dropout.default",
                     "aten._assert_tensor_metadata.default"}
# Run-time checks torch.export adds on data-dependent sizes; the web model has no use for them.
_RUNTIME_CHECKS = {"aten._assert_scalar.default", "aten.sym_constrain_range_for_size.default",
                   "aten.sym_constrain_range.default", "aten._assert_async.msg"}
COND = "higher_order.cond"  # torch.cond: its branches are subgraphs (see _GraphBuilder._branch)
_NAME_ALIASES = (("_native_batch_norm_legit_no_training", "batch_norm"), ("_unsafe_view", "view"))
_FRAME = re.compile(r'File "([^"]+)", line (\d+)')
_TORCH_DIR = str(Path(torch.__file__).parent)


@dataclass
class Captured:
    """The exported program, how it was captured and how long it took."""

    program: torch.export.ExportedProgram
    method: str
    seconds: float


def _in_eval_mode(module: torch.nn.Module) -> torch.nn.Module:
    """`module` in eval mode; a module unlifted from a saved torch.export program has no train/eval switch (it was
    exported in the mode it has) and is returned as it is."""
    try:
        return module.eval()
    except NotImplementedError:
        return module


def capture(module: torch.nn.Module, example_inputs: Sequence[torch.Tensor], *, keep: Iterable[str],
            dynamic_dims: Mapping[int, Mapping[int, str]] | None = None, strict: bool | None = None) -> Captured:
    """Export `module` (put in eval mode) and decompose every op not in `keep` (targets like
    `aten.conv2d.default`). `strict=None` tries strict then non-strict export; True/False tries only that one
    (non-strict skips TorchDynamo: about half the time on a cold start). `dynamic_dims` maps input index ->
    {axis: dim name}."""
    module = _in_eval_mode(module)
    args = tuple(example_inputs)
    shapes = _dynamic_shapes(args, dynamic_dims)
    start, errors, failures = time.perf_counter(), [], []
    table = _decomp_table(keep)
    for mode in ((True, False) if strict is None else (strict,)):
        try:
            with torch.no_grad(), _mha_fast_path_off(), _symbolic_rnn_shapes():
                program = torch.export.export(module, args, strict=mode, dynamic_shapes=shapes)
                program = program.run_decompositions(table)
        except Exception as exc:  # noqa: BLE001 - torch raises many types; both attempts are reported
            errors.append(f"torch.export (strict={mode}): {_export_failure(exc)}")
            failures.append(str(exc))
            continue
        return Captured(program, "torch.export strict" if mode else "torch.export non-strict",
                        time.perf_counter() - start)
    branch = _data_dependent_branch(failures, errors)
    if branch is not None:
        raise branch
    raise CaptureError("torch.export could not capture the model", stage="capture", details=errors,
                       hint="make forward() traceable (no data-dependent python control flow), or try the ONNX "
                            "route (route='onnx')")


def output_shape_mismatches(program: torch.export.ExportedProgram, input_names: Sequence[str],
                            sample_shapes: Sequence[Mapping[str, tuple[int, ...]]],
                            reference_shapes: Sequence[Sequence[tuple[int, ...]]]) -> list[str]:
    """Where the captured program's output shapes, evaluated at each sample's input sizes, differ from PyTorch's
    outputs on that sample (one line each). Strict torch.export can turn a dynamic size into a Python int the
    model computed from it (e.g. `int(x.shape[-1])`) without a guard; the program then holds only at the example's
    size, and this is how that shows before anything is built. Empty when the output counts do not line up."""
    import sympy

    kinds = torch.export.graph_signature
    user_in = [s.arg.name for s in program.graph_signature.input_specs if s.kind == kinds.InputKind.USER_INPUT]
    user_out = [s.arg.name for s in program.graph_signature.output_specs if s.kind == kinds.OutputKind.USER_OUTPUT]
    nodes = {n.name: n for n in program.graph.nodes}
    symbols: dict[Any, tuple[str, int]] = {}
    for input_name, node_name in zip(input_names, user_in):
        for axis, dim in enumerate(getattr(nodes[node_name].meta.get("val"), "shape", ())):
            if isinstance(dim, torch.SymInt) and dim.node.expr.is_Symbol:
                symbols.setdefault(dim.node.expr, (input_name, axis))
    outputs = [getattr(nodes[name].meta.get("val"), "shape", None) if name in nodes else None for name in user_out]
    problems: list[str] = []
    for index, (shapes, reference) in enumerate(zip(sample_shapes, reference_shapes)):
        if len(reference) != len(outputs):
            return []
        values = {sym: shapes[name][axis] for sym, (name, axis) in symbols.items() if name in shapes}
        for position, (shape, want) in enumerate(zip(outputs, reference)):
            if shape is None:
                continue
            got = [sympy.sympify(_size(d)).subs(values) for d in shape]
            if all(g.is_Integer for g in got) and [int(g) for g in got] != list(want):
                problems.append(f"sample {index}: output {position} would have shape {[int(g) for g in got]}, "
                                f"PyTorch's has {list(want)}")
    return problems


def guard_failures(program: torch.export.ExportedProgram, samples: Sequence[Sequence[tuple[tuple[int, ...], Any]]]
                   ) -> list[str]:
    """The input guards torch.export recorded (e.g. `pixel_values.size()[3] % 2 == 0`, from a branch on a size)
    that a sample breaks, one line per sample. Each sample is (shape, dtype) per forward() input; the exported
    module is called on meta tensors of those shapes, so its guards run and nothing is computed (the call stops at
    the first weight, which lives on the CPU)."""
    module = program.module()
    problems = []
    for index, sample in enumerate(samples):
        args = [torch.empty(shape, dtype=dtype, device="meta") for shape, dtype in sample]
        try:
            module(*args)
        except AssertionError as exc:
            if "Guard failed" in str(exc):
                problems.append(f"sample {index} ({', '.join('x'.join(map(str, s)) for s, _ in sample)}): "
                                f"{str(exc).strip().splitlines()[0]}")
        except Exception:  # noqa: BLE001 - past the guards the meta call may stop anywhere: that is expected
            pass
    return problems


_DATA_DEPENDENT = ("Data-dependent branching", "data-dependent expression", "GuardOnDataDependentSymNode")
_USER_FRAME = re.compile(r'File "([^"]+)", line (\d+), in \w+\n\s+(.+)')


def _data_dependent_branch(failures: Sequence[str], errors: list[str]) -> CaptureError | None:
    """The error for a Python `if` on a tensor's value (torch.export's messages name it in several ways), with the
    user's source line when torch gave it; None for other failures."""
    if not any(marker in text for text in failures for marker in _DATA_DEPENDENT):
        return None
    frames = [m for text in failures for m in _USER_FRAME.findall(text) if _TORCH_DIR not in m[0]]
    where = f"{Path(frames[-1][0]).name}:{frames[-1][1]}" if frames else None
    code = f" (`{frames[-1][2].strip()}`)" if frames else ""
    return DataDependentBranchError(
        f"forward() branches on the value of a tensor{f' at {where}' if where else ''}{code}: torch.export cannot "
        "capture a Python `if` that depends on the input's numbers", where=where, stage="capture", details=errors,
        hint="write the branch as torch.where(cond, a, b) (both sides computed, then picked per element) or "
             "torch.cond(pred, true_fn, false_fn) (bridge converts it to tf.cond); the ONNX route would trace only "
             "the branch the example input takes, so that web model takes it for every input")


_SPECIALIZED = re.compile(r"You marked (\S+) as dynamic but your code specialized it to be a constant \((\d+)\)")


def _export_failure(exc: Exception) -> str:
    """One line for a failed torch.export: the exception's first line, and, when a dynamic dimension was fixed
    by the model's code, which one and to what."""
    text = str(exc) or "?"
    line = f"{type(exc).__name__}: {text.splitlines()[0]}"
    fixed = _SPECIALIZED.findall(text)
    if fixed:
        dims = ", ".join(f"{dim} to {value}" for dim, value in fixed)
        line += f" (the model's code fixes the dynamic dimension {dims}: give it a static size)"
    return line


@contextlib.contextmanager
def _mha_fast_path_off() -> Iterator[None]:
    """Switch off nn.MultiheadAttention / nn.TransformerEncoderLayer's inference fast path while exporting, so the
    graph holds the plain ops (linear, sdpa, layer_norm) instead of fused kernels like
    aten._transformer_encoder_layer_fwd; the numbers are the same, the module's own setting is restored."""
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


_RNN_OPS = ("lstm", "gru")
_RNN_KEYS = ("CompositeImplicitAutograd", "Autograd")


@contextlib.contextmanager
def _symbolic_rnn_shapes() -> Iterator[None]:
    """While capturing, let aten.lstm.input / aten.gru.input on fake tensors only compute their output shapes.
    torch.export keeps these ops whole, but finds their output shapes by running their Python decomposition,
    which unbinds the time steps and so fixes a dynamic sequence length to the example's; the shape rule below
    keeps it symbolic. Real tensors still run the decomposition; the op's kernels are restored afterwards."""
    from torch._C import DispatchKey
    from torch._decomp import decomposition_table
    from torch._subclasses.fake_tensor import FakeTensor

    ops = [getattr(torch.ops.aten, name).input for name in _RNN_OPS]
    saved = {op: op.py_kernels.copy() for op in ops}
    tabled = {op: decomposition_table[op] for op in ops if op in decomposition_table}
    for op, original in tabled.items():  # fake tensors prefer this table's decomposition over the op's kernels
        decomposition_table[op] = functools.partial(_rnn_shapes, op, original, FakeTensor)
    for op in ops:
        for key in (getattr(DispatchKey, k) for k in _RNN_KEYS):
            original = op.py_kernels.get(key)
            if original is not None:
                op.py_kernels[key] = functools.partial(_rnn_shapes, op, original, FakeTensor)
        op._dispatch_cache.clear()
    try:
        yield
    finally:
        decomposition_table.update(tabled)
        for op in ops:
            op.py_kernels.clear()
            op.py_kernels.update(saved[op])
            op._dispatch_cache.clear()


def _rnn_shapes(op: Any, original: Any, fake_type: type, *args: Any, **kwargs: Any) -> Any:
    """lstm.input / gru.input on fake tensors: output [T, B, D*H] (or [B, T, D*H] batch_first) and final states
    shaped like the initial ones, from the shapes alone; anything else runs the op's own decomposition."""
    named = {arg.name: value for arg, value in zip(op._schema.arguments, args)} | kwargs
    x, hx = named["input"], named["hx"]
    states = list(hx) if isinstance(hx, (list, tuple)) else [hx]
    if not isinstance(x, fake_type):
        return original(*args, **kwargs)
    directions = 2 if named.get("bidirectional") else 1
    output = x.new_empty((*x.shape[:2], directions * states[0].shape[-1]))
    return (output, *[state.new_empty(state.shape) for state in states])


def _dynamic_shapes(args: tuple[torch.Tensor, ...],
                    dynamic_dims: Mapping[int, Mapping[int, str]] | None) -> tuple[Any, ...] | None:
    """torch.export dynamic_shapes for the positional inputs; dims sharing a name share one Dim."""
    if not dynamic_dims:
        return None
    dims: dict[str, Any] = {}
    spec: list[dict[int, Any] | None] = []
    for index, _ in enumerate(args):
        axes = dynamic_dims.get(index) or {}
        spec.append({axis: dims.setdefault(name, torch.export.Dim.DYNAMIC) for axis, name in axes.items()} or None)
    return tuple(spec)


def _decomp_table(keep: Iterable[str]) -> dict[Any, Any]:
    """torch's default decompositions minus the ops we convert whole, and minus the linear-algebra ops that
    decompose into an error-checking op with side effects (`aten._linalg_check_errors`), which would hide the op
    itself behind an effect token; kept whole, an unconverted one is reported by name."""
    table = torch.export.default_decompositions()
    for target in keep:
        op = resolve_op(target)
        if op is not None and op in table:
            del table[op]
    for op in [op for op in table if op.name().split("::")[-1].split(".")[0] in _CHECKED_LINALG]:
        del table[op]
    return table


# Linear-algebra ops whose decomposition checks its result with an effectful op (seen in torch 2.13).
_CHECKED_LINALG = {"linalg_inv", "inverse", "linalg_cholesky", "linalg_solve", "linalg_lu_factor", "linalg_inv_ex",
                   "linalg_cholesky_ex", "linalg_lu_factor_ex", "linalg_solve_ex"}


def resolve_op(target: str) -> torch._ops.OpOverload | None:
    """`aten.conv2d.default` -> torch.ops.aten.conv2d.default (None for non-ATen targets)."""
    parts = target.split(".")
    if len(parts) != 3 or parts[0] != "aten":
        return None
    packet = getattr(torch.ops.aten, parts[1], None)
    return getattr(packet, parts[2], None) if packet is not None else None


def build_graph(captured: Captured, *, name: str, input_names: Sequence[str] | None,
                output_names: Sequence[str] | None) -> Graph:
    """Turn the exported program into the native IR, naming inputs and outputs as the user asked."""
    return _GraphBuilder(captured.program, name).build(input_names, output_names)


class _GraphBuilder:
    """Walks the exported FX graph once, creating IR values and nodes."""

    def __init__(self, program: torch.export.ExportedProgram, name: str) -> None:
        self.program = program
        self.graph = Graph(name=name, inputs=[], nodes=[], outputs=[])
        self.env: dict[str, Any] = {}
        self.taken: set[str] = set()
        self.input_symbols: set[Any] = set()  # the sympy symbols of the user inputs' dynamic sizes

    def build(self, input_names: Sequence[str] | None, output_names: Sequence[str] | None) -> Graph:
        """Run the walk and attach names."""
        specs = {spec.arg.name: spec for spec in self.program.graph_signature.input_specs
                 if hasattr(spec.arg, "name")}
        user_inputs = [n for n in self.program.graph.nodes if n.op == "placeholder"
                       and specs[n.name].kind == torch.export.graph_signature.InputKind.USER_INPUT]
        names = list(input_names or [n.name for n in user_inputs])
        if len(names) != len(user_inputs):
            raise UsageError(f"{len(names)} input name(s) given for {len(user_inputs)} model input(s)",
                             stage="capture", hint="pass one name per positional forward() argument")
        rename = dict(zip((n.name for n in user_inputs), names))
        for fx_node in self.program.graph.nodes:
            if fx_node.op == "placeholder":
                self._placeholder(fx_node, specs[fx_node.name], rename)
            elif fx_node.op == "call_function":
                self._call(fx_node)
            elif fx_node.op == "get_attr":
                self._get_attr(fx_node, self.program.graph_module)
            elif fx_node.op == "output":
                self._outputs(fx_node, output_names)
        self.graph.input_names = names
        return self.graph

    def _get_attr(self, fx_node: torch.fx.Node, owner: torch.nn.Module) -> None:
        """A subgraph (a torch.cond branch) is kept as its GraphModule until the op using it reads it; a tensor
        attribute becomes a constant."""
        attr = owner
        for part in str(fx_node.target).split("."):
            attr = getattr(attr, part)
        if isinstance(attr, torch.Tensor):
            shape, dtype = _val_meta(attr)
            value = Value(py_identifier(str(fx_node.target), self.taken), shape, dtype, kind="const",
                          key=str(fx_node.target))
            self.env[fx_node.name] = self.graph.add_weight(value, attr.detach().cpu().numpy().copy())
        else:
            self.env[fx_node.name] = attr

    def _branch(self, module: torch.fx.GraphModule, operands: list[Any], label: str) -> Graph:
        """A torch.cond branch as a graph of its own: its placeholders are the cond's operands (the outer graph's
        values, weights included, which the generated branch function reads where they are), its nodes are
        converted like the outer ones, sharing the weights."""
        sub = _GraphBuilder(self.program, f"{self.graph.name}.{label}")
        sub.graph = Graph(name=sub.graph.name, inputs=[], nodes=[], outputs=[], arrays=self.graph.arrays,
                          _derived=self.graph._derived)
        sub.taken, sub.input_symbols = self.taken, self.input_symbols
        placeholders = [n for n in module.graph.nodes if n.op == "placeholder"]
        sub.env.update({ph.name: value for ph, value in zip(placeholders, operands)})
        for fx_node in module.graph.nodes:
            if fx_node.op == "call_function":
                sub._call(fx_node)
            elif fx_node.op == "get_attr":
                sub._get_attr(fx_node, module)
            elif fx_node.op == "output":
                results = fx_node.args[0]
                sub.graph.outputs = [sub._lookup(r) for r in (results if isinstance(results, (list, tuple))
                                                              else [results])]
        return sub.graph

    def _placeholder(self, fx_node: torch.fx.Node, spec: Any, rename: dict[str, str]) -> None:
        kinds = torch.export.graph_signature.InputKind
        shape, dtype = _meta(fx_node)
        if spec.kind == kinds.USER_INPUT:
            user = rename[fx_node.name]
            sizes = _val_sizes(fx_node.meta.get("val"))
            value = Value(py_identifier(user, self.taken), shape, dtype, kind="input", key=user, sizes=sizes)
            self.input_symbols |= {d for d in sizes if getattr(d, "is_Symbol", False)}
            self.graph.inputs.append(value)
        elif spec.kind in (kinds.PARAMETER, kinds.BUFFER, kinds.CONSTANT_TENSOR):
            key = spec.target
            tensor = self.program.state_dict.get(key)
            if tensor is None:
                tensor = self.program.constants[key]
            kind = "const" if spec.kind == kinds.CONSTANT_TENSOR else "param"
            value = Value(py_identifier(key, self.taken), shape, dtype, kind=kind, key=key)
            self.graph.add_weight(value, tensor.detach().cpu().numpy().copy())
        else:
            raise _input_kind_error(spec, fx_node)
        self.env[fx_node.name] = value

    def _call(self, fx_node: torch.fx.Node) -> None:
        if fx_node.target is operator.getitem:
            source, index = fx_node.args
            self.env[fx_node.name] = self.env[source.name][index]
            return
        target = _target_name(fx_node.target)
        if _is_runtime_check(fx_node):
            return
        size = self._size_value(fx_node)
        if size is not None:
            self.env[fx_node.name] = size
            return
        if target in _IDENTITY_TARGETS:
            self.env[fx_node.name] = self._lookup(fx_node.args[0])
            return
        path, mtype = _module_path(fx_node)
        args = self._cond_args(fx_node) if target == COND else self._named_args(fx_node)
        node = Node(name=fx_node.name, target=target, args=args, outputs=[],
                    module_path=path, module_type=mtype, source=_source_line(fx_node))
        node.outputs = self._output_values(fx_node, node, path)
        self.graph.nodes.append(node)
        self.env[fx_node.name] = node.outputs if isinstance(fx_node.meta.get("val"), (tuple, list)) \
            else node.outputs[0]

    def _cond_args(self, fx_node: torch.fx.Node) -> dict[str, Any]:
        """torch.cond(pred, true_fn, false_fn, operands): the predicate and both branches as subgraphs."""
        pred, true_module, false_module, operands = fx_node.args[:4]
        values = [self._lookup(o) for o in operands]
        return {"pred": self._lookup(pred),
                "true_graph": self._branch(self.env[true_module.name], values, f"{fx_node.name}_true"),
                "false_graph": self._branch(self.env[false_module.name], values, f"{fx_node.name}_false")}

    def _size_value(self, fx_node: torch.fx.Node) -> Value | None:
        """A symbolic int computed from the input sizes alone (sym_size, and python arithmetic on sizes) becomes
        a value holding its expression, generated from the inputs' shapes: no node. None for anything else."""
        import sympy

        val = fx_node.meta.get("val")
        if isinstance(val, torch.SymBool):
            expr = val.node.expr
        elif isinstance(val, (torch.SymInt, int)) and not isinstance(val, bool):
            expr = _size(val)
        else:
            return None
        expr = sympy.sympify(expr)
        if not expr.free_symbols <= self.input_symbols:
            return None  # a data-dependent size (e.g. from .item()): its producer stays a node
        return Value(py_identifier(fx_node.name, self.taken), (), SYMINT, expr=expr)

    def _output_values(self, fx_node: torch.fx.Node, node: Node, path: str) -> list[Value | None]:
        val = fx_node.meta.get("val")
        base = fx_node.name
        for ugly, nice in _NAME_ALIASES:
            base = base.replace(ugly, nice)
        vals = list(val) if isinstance(val, (tuple, list)) else [val]
        read = {u.args[1] for u in fx_node.users if u.target is operator.getitem}
        outputs: list[Value | None] = []
        for i, item in enumerate(vals):
            if item is None or (i > 0 and i not in read):  # an extra output nothing reads (e.g. pool indices)
                outputs.append(None)
                continue
            shape, dtype = _val_meta(item)
            name = base if i == 0 else f"{base}_out{i}"
            outputs.append(Value(py_identifier(name, self.taken), shape, dtype, module_path=path, producer=node,
                                 sizes=_val_sizes(item)))
        return outputs

    def _named_args(self, fx_node: torch.fx.Node) -> dict[str, Any]:
        schema = getattr(fx_node.target, "_schema", None)
        if schema is None:
            return {f"arg{i}": self._lookup(a) for i, a in enumerate(fx_node.args)} | \
                {k: self._lookup(v) for k, v in fx_node.kwargs.items()}
        named: dict[str, Any] = {}
        positional = list(fx_node.args)
        for i, arg in enumerate(schema.arguments):
            if i < len(positional) and not arg.kwarg_only:
                named[arg.name] = self._lookup(positional[i])
            elif arg.name in fx_node.kwargs:
                named[arg.name] = self._lookup(fx_node.kwargs[arg.name])
            elif arg.has_default_value():
                named[arg.name] = arg.default_value
        return named

    def _lookup(self, arg: Any) -> Any:
        if isinstance(arg, torch.fx.Node):
            return self.env[arg.name]
        if isinstance(arg, (list, tuple)):
            return [self._lookup(a) for a in arg]
        if isinstance(arg, (torch.dtype, torch.device, torch.memory_format, torch.layout)):
            return str(arg)
        return arg

    def _outputs(self, fx_node: torch.fx.Node, output_names: Sequence[str] | None) -> None:
        kinds = torch.export.graph_signature.OutputKind
        user = [spec.arg.name for spec in self.program.graph_signature.output_specs
                if spec.kind == kinds.USER_OUTPUT]
        by_name = {getattr(a, "name", None): a for a in fx_node.args[0]}
        for name in user:
            value = self._lookup(by_name[name])
            if not isinstance(value, Value) or value.dtype == SYMINT:
                raise CaptureError(f"model output {name} is not a tensor", stage="capture")
            self.graph.outputs.append(value)
        count = len(self.graph.outputs)
        names = list(output_names or _default_output_names(self.program, count))
        if len(names) != count:
            raise UsageError(f"{len(names)} output name(s) given for {count} model output(s)", stage="capture",
                             hint="pass one name per model output, in order")
        self.graph.output_names = names


def _default_output_names(program: torch.export.ExportedProgram, count: int) -> list[str]:
    """The keys of a dict (or fields of a named tuple) the model returns, else output / output_<i>."""
    spec = program.call_spec.out_spec
    keys = getattr(spec, "context", None)
    if getattr(spec, "type", None) is dict and isinstance(keys, list) and len(keys) == count:
        return [str(k) for k in keys]
    if isinstance(keys, list) and len(keys) == count and all(isinstance(k, str) for k in keys):
        return list(keys)
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


def _is_runtime_check(fx_node: torch.fx.Node) -> bool:
    """A run-time size assertion, or a value only such assertions read (e.g. `u0 >= 0` on a masked index)."""
    if _target_name(fx_node.target) in _RUNTIME_CHECKS:
        return True
    return bool(fx_node.users) and all(_is_runtime_check(user) for user in fx_node.users)


def _target_name(target: Any) -> str:
    """`aten.conv2d.default` for OpOverloads, `higher_order.cond` for higher-order ops, the qualified python
    name otherwise."""
    if isinstance(target, torch._ops.OpOverload):
        return str(target)
    if isinstance(target, torch._ops.HigherOrderOperator):
        return f"higher_order.{target.name()}"
    return f"{getattr(target, '__module__', '')}.{getattr(target, '__name__', str(target))}".lstrip(".")


def _meta(fx_node: torch.fx.Node) -> tuple[tuple[Dim, ...], str]:
    return _val_meta(fx_node.meta.get("val"))


def _val_meta(val: Any) -> tuple[tuple[Dim, ...], str]:
    """(shape with None for symbolic dims, dtype name) of a FakeTensor or SymInt."""
    if isinstance(val, torch.Tensor):
        shape = tuple(int(d) if isinstance(d, int) or _is_static(d) else None for d in val.shape)
        return shape, str(val.dtype).replace("torch.", "")
    if isinstance(val, (torch.SymInt, int)):
        return (), SYMINT
    if isinstance(val, (torch.SymFloat, float)):
        return (), "float32"
    raise CaptureError(f"cannot read the metadata of a graph value ({type(val).__name__})", stage="capture")


def _val_sizes(val: Any) -> tuple[Size, ...]:
    """Per axis of a FakeTensor: its int size, or torch.export's sympy expression of a dynamic one."""
    return tuple(_size(d) for d in val.shape) if isinstance(val, torch.Tensor) else ()


def _size(dim: Any) -> Size:
    if isinstance(dim, torch.SymInt):
        expr = dim.node.expr
        return int(expr) if expr.is_number else expr
    return int(dim)


def _input_kind_error(spec: Any, fx_node: torch.fx.Node) -> CaptureError:
    """A typed error for a graph input the native route cannot feed (an effect token, a custom object)."""
    kinds = torch.export.graph_signature.InputKind
    if spec.kind == kinds.TOKEN:
        users = [u for u in fx_node.users if u.op == "call_function"]
        ops = sorted({str(u.args[1]) if len(u.args) > 1 else _target_name(u.target) for u in users})
        where = [f"{', '.join(ops) or 'an op'} @ {_module_path(u)[0] or 'forward'}"
                 + (f" ({_source_line(u)})" if _source_line(u) else "") for u in users]
        return CaptureError(
            f"the model calls an op with side effects ({', '.join(ops) or 'unknown'}): torch.export orders such "
            "ops with an effect token, which a TensorFlow graph has no use for", stage="capture", details=where,
            hint="make the op pure (register the custom op without effects) or remove it from forward(), or "
                 "convert with the ONNX route (route='onnx')")
    what = {kinds.CUSTOM_OBJ: "a script object (torch.classes)"}.get(spec.kind, str(spec.kind))
    return CaptureError(f"the exported graph takes {what} as input {fx_node.name}, which the native route cannot "
                        "feed", stage="capture", hint="convert with the ONNX route (route='onnx')")


def _is_static(dim: Any) -> bool:
    # never int() a SymInt: that guards on its example value and specialises the dimension for the whole graph
    if isinstance(dim, torch.SymInt):
        return bool(dim.node.expr.is_number)
    try:
        int(dim)
    except Exception:  # noqa: BLE001 - unbacked/symbolic dims raise various errors
        return False
    return True


def _module_path(fx_node: torch.fx.Node) -> tuple[str, str]:
    """(`layer3.1.conv2`, `Conv2d`) of the innermost module that produced the node."""
    stack = fx_node.meta.get("nn_module_stack") or {}
    entries = [v for v in stack.values() if isinstance(v, tuple) and not str(v[0]).startswith("_empty")]
    if not entries:
        return "", ""
    path, mtype = entries[-1][0], entries[-1][1]
    path = re.sub(r"^L\['self'\]\.?", "", str(path))
    path = re.sub(r"^_export_root\.?", "", path)
    path = re.sub(r"\[(\d+)\]", r".\1", path).replace("._modules['", ".").replace("']", "")
    mtype = mtype.__name__ if isinstance(mtype, type) else str(mtype).rsplit(".", 1)[-1]
    return path, mtype


def _source_line(fx_node: torch.fx.Node) -> str:
    """`model.py:12`: the innermost stack frame outside torch itself."""
    frames = _FRAME.findall(fx_node.meta.get("stack_trace") or "")
    user = [(f, line) for f, line in frames if not f.startswith(_TORCH_DIR)]
    if not user:
        return ""
    file, line = user[-1]
    return f"{Path(file).name}:{line}"


def example_arrays(example_inputs: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """The example inputs as numpy arrays (PyTorch layout)."""
    return [t.detach().cpu().numpy() for t in example_inputs]
