"""Custom layers: fusing one module's custom steps into one layer, naming the classes, the Python (tf_keras)
classes that run a program, bridge's template GRU, and the programs' JSON form (stored in model.json so the
Python classes can be rebuilt from a folder alone).

Every custom layer's config carries ``bridge_custom: 1``: bridge.tfjs.layers.compat accepts a class tfjs-layers
does not register only with that marker (and a ``Bridge`` class name), because bridge ships its JavaScript.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from bridge.layers_route.custom_ops import OPS
from bridge.layers_route.ir import (
    Arg,
    LayerSpec,
    LayersPlan,
    Program,
    Step,
    WeightDecl,
    WeightLink,
)
from bridge.tfjs.layers.registry import BRIDGE_CUSTOM_KEY

CUSTOM_PREFIX = "custom:"

# ---------------------------------------------------------------------------------------------- fusing steps


def _is_custom_step(spec: LayerSpec) -> bool:
    return spec.program is not None and spec.class_name.startswith(CUSTOM_PREFIX)


def fuse_custom_steps(plan: LayersPlan, owner_class: Callable[[str], str]) -> None:
    """Fuse each run of one-step custom layers traced inside one module (connected, with a single output) into
    one custom layer named after that module, then give every custom layer its class name (one class per
    distinct program). Mutates `plan`."""
    producers = {tid: spec for spec in plan.layers for tid in spec.outputs}
    consumers: dict[int, list[LayerSpec]] = {}
    for spec in plan.layers:
        for tid in spec.inputs:
            consumers.setdefault(tid, []).append(spec)
    model_outputs = {tid for _, tid in plan.outputs}
    parent: dict[str, str] = {spec.name: spec.name for spec in plan.layers if _is_custom_step(spec)}

    def root(name: str) -> str:
        while parent[name] != name:
            name = parent[name]
        return name

    for spec in plan.layers:
        if not _is_custom_step(spec):
            continue
        for tid in spec.inputs:
            source = producers.get(tid)
            if source is None or not _is_custom_step(source) or source.owner != spec.owner or not spec.owner:
                continue
            users = consumers.get(tid, [])
            if tid in model_outputs or any(not _is_custom_step(u) or u.owner != spec.owner for u in users):
                continue
            parent[root(spec.name)] = root(source.name)
    groups: dict[str, list[LayerSpec]] = {}
    for spec in plan.layers:
        if _is_custom_step(spec):
            groups.setdefault(root(spec.name), []).append(spec)
    taken = {spec.name for spec in plan.layers}
    for members in groups.values():
        if len(members) > 1:
            _fuse(plan, members, consumers, model_outputs, taken)
    _name_classes(plan, owner_class)


def _fuse(plan: LayersPlan, members: list[LayerSpec], consumers: Mapping[int, list[LayerSpec]],
          model_outputs: set[int], taken: set[str]) -> None:
    """Replace `members` (in plan order) by one layer, when the group has exactly one output."""
    names = {m.name for m in members}
    produced = {tid: m for m in members for tid in m.outputs}
    outputs = [tid for tid in produced if tid in model_outputs
               or any(u.name not in names for u in consumers.get(tid, []))]
    if len(outputs) != 1:
        return
    inputs: list[int] = []
    weights: list[WeightDecl] = []
    steps: list[Step] = []
    step_of: dict[int, int] = {}  # tensor id -> index of the step producing it
    renames: dict[str, str] = {}
    used_weight_names: set[str] = set()
    for member in members:
        assert member.program is not None
        local_weights: dict[int, int] = {}
        for j, decl in enumerate(member.program.weights):
            name, n = decl.name, 1
            while name in used_weight_names:
                name, n = f"{decl.name}_{n}", n + 1
            used_weight_names.add(name)
            local_weights[j] = len(weights)
            renames[f"{member.name}/{decl.name}"] = name
            weights.append(replace(decl, name=name))

        def mapped(arg: Arg, member: LayerSpec = member, local_weights: dict[int, int] = local_weights,
                   offset: int = len(steps)) -> Arg:
            if arg.kind == "in":
                tid = member.inputs[arg.index]
                if tid in step_of:
                    return Arg("step", step_of[tid])
                if tid not in inputs:
                    inputs.append(tid)
                return Arg("in", inputs.index(tid))
            if arg.kind == "w":
                return Arg("w", local_weights[arg.index])
            if arg.kind == "step":
                return Arg("step", arg.index + offset)
            return arg

        for step in member.program.steps:
            steps.append(Step(step.op, tuple(mapped(a) for a in step.args), step.attrs))
        out = mapped(member.program.output)
        step_of[member.outputs[0]] = out.index
    first = members[0]
    fused_name = _unique(first.owner.replace(".", "_") or first.name, taken)
    fused = LayerSpec(name=fused_name, class_name=f"{CUSTOM_PREFIX}fused", config={}, inputs=inputs,
                      outputs=outputs, path=first.owner, owner=first.owner,
                      program=Program(len(inputs), tuple(weights), tuple(steps), Arg("step", step_of[outputs[0]])),
                      trainable=all(m.trainable for m in members))
    at = plan.layers.index(members[-1])
    plan.layers[at] = fused
    for member in members[:-1]:
        plan.layers.remove(member)
    plan.links[:] = [_rename_link(link, renames, fused_name) for link in plan.links]


def _rename_link(link: WeightLink, renames: Mapping[str, str], layer: str) -> WeightLink:
    names = tuple(f"{layer}/{renames[n]}" if n in renames else n for n in link.tfjs)
    return replace(link, tfjs=names) if names != link.tfjs else link


def _unique(base: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_]", "_", base) or "custom"
    name, n = base, 1
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    taken.add(name)
    return name


def _camel(text: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", text) if part)


def _name_classes(plan: LayersPlan, owner_class: Callable[[str], str]) -> None:
    """Class names: ``Bridge<ModuleClass>`` for a module's fused layer, ``Bridge<Op>`` for a lone step; one
    class per distinct program code, a numeric suffix when two programs would share a name."""
    by_code: dict[Any, str] = {}
    used: set[str] = set()
    for spec in plan.layers:
        if spec.program is None or not spec.class_name.startswith(CUSTOM_PREFIX):
            continue
        key = spec.program.code_key()
        if key in by_code:
            spec.class_name = by_code[key]
            continue
        lone = len(spec.program.steps) == 1
        base = "Bridge" + (_camel(spec.program.steps[0].op) if lone or not spec.owner
                           else _camel(owner_class(spec.owner)))
        name, n = base, 2
        while name in used:
            name, n = f"{base}{n}", n + 1
        used.add(name)
        by_code[key] = name
        spec.class_name = name


def custom_config(spec: LayerSpec, plan: LayersPlan) -> dict[str, Any]:
    """The constructor config of a program custom layer: its output shape without the batch (None where dynamic),
    its weights' shapes, and bridge's marker."""
    assert spec.program is not None
    shape = plan.tensors[spec.outputs[0]].shape
    weight_shapes = []
    for decl in spec.program.weights:
        weight_shapes.append(list(decl.shape))
    return {"out_shape": list(shape[1:]), "weight_shapes": weight_shapes, BRIDGE_CUSTOM_KEY: 1}


# ---------------------------------------------------------------------------------------------- programs as JSON

def program_to_json(program: Program) -> dict[str, Any]:
    """A program as model.json metadata."""
    return {"inputs": program.inputs,
            "weights": [{"name": w.name, "shape": list(w.shape), "trainable": w.trainable} for w in program.weights],
            "steps": [{"op": s.op, "args": [[a.kind, a.index, a.value] for a in s.args],
                       "attrs": {k: _plain(v) for k, v in s.attrs}} for s in program.steps],
            "output": [program.output.kind, program.output.index, program.output.value]}


def program_from_json(entry: Mapping[str, Any]) -> Program:
    """A program from its metadata form; refuses ops outside the table."""
    steps = []
    for s in entry["steps"]:
        if s["op"] not in OPS:
            raise ValueError(f"unknown custom op {s['op']!r}")
        steps.append(Step(str(s["op"]), tuple(Arg(str(k), int(i), float(v)) for k, i, v in s["args"]),
                          tuple(sorted((str(k), _frozen(v)) for k, v in s["attrs"].items()))))
    kind, index, value = entry["output"]
    return Program(int(entry["inputs"]), tuple(WeightDecl(str(w["name"]), tuple(w["shape"]), bool(w["trainable"]))
                                             for w in entry["weights"]),
                   tuple(steps), Arg(str(kind), int(index), float(value)))


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, (tuple, list)) else value


def _frozen(value: Any) -> Any:
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


# ---------------------------------------------------------------------------------------------- Python classes

def run_program(program: Program, inputs: Sequence[Any], weights: Sequence[Any]) -> Any:
    """Evaluate `program` with TensorFlow ops (the Python twin of the generated JavaScript)."""
    values: list[Any] = []

    def arg(a: Arg) -> Any:
        if a.kind == "in":
            return inputs[a.index]
        if a.kind == "w":
            return weights[a.index]
        if a.kind == "step":
            return values[a.index]
        return a.value

    for step in program.steps:
        values.append(OPS[step.op].py([arg(a) for a in step.args], dict(step.attrs)))
    return arg(program.output)


_CLASSES: dict[tuple[str, Any], type] = {}


def program_layer_class(class_name: str, program: Program) -> type:
    """The tf_keras layer class running `program` (cached per name and code)."""
    key = (class_name, program.code_key())
    if key not in _CLASSES:
        _CLASSES[key] = type(class_name, (_base_class(),), {"PROGRAM": program, "__module__": __name__})
    return _CLASSES[key]


_BASE: list[type] = []


def _base_class() -> type:
    """`BridgeProgramLayer`, built on first use so importing this module does not import TensorFlow."""
    if _BASE:
        return _BASE[0]
    import tensorflow as tf
    import tf_keras

    class BridgeProgramLayer(tf_keras.layers.Layer):  # type: ignore[misc]
        """A layer computing the class's PROGRAM over its inputs and weights."""

        PROGRAM: Program

        def __init__(self, out_shape: Sequence[int | None], weight_shapes: Sequence[Sequence[int]],
                     bridge_custom: int = 1, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.out_shape = list(out_shape)
            self.weight_shapes = [list(s) for s in weight_shapes]
            self.bridge_custom = bridge_custom

        def build(self, input_shape: Any) -> None:
            self.program_weights = [
                self.add_weight(name=decl.name, shape=tuple(shape), initializer="zeros", trainable=decl.trainable)
                for decl, shape in zip(self.PROGRAM.weights, self.weight_shapes)]
            super().build(input_shape)

        @tf.autograph.experimental.do_not_convert
        def call(self, inputs: Any, training: Any = None) -> Any:
            values = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
            return run_program(self.PROGRAM, values, self.program_weights)

        def compute_output_shape(self, input_shape: Any) -> Any:
            first = input_shape[0] if isinstance(input_shape, list) else input_shape
            return (first[0], *self.out_shape)

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "out_shape": self.out_shape, "weight_shapes": self.weight_shapes,
                    BRIDGE_CUSTOM_KEY: self.bridge_custom}

    _BASE.append(BridgeProgramLayer)
    return BridgeProgramLayer


_GRU: list[type] = []


def gru_layer_class() -> type:
    """`BridgeGRU`: PyTorch's GRU (reset gate applied after the recurrent product) with Keras' weight layout."""
    if _GRU:
        return _GRU[0]
    import tensorflow as tf
    import tf_keras

    class BridgeGRU(tf_keras.layers.Layer):  # type: ignore[misc]
        """Returns [sequence (B, T, H), last state (B, H)]."""

        def __init__(self, units: int, use_bias: bool = True, bridge_custom: int = 1, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.units = int(units)
            self.use_bias = bool(use_bias)
            self.bridge_custom = bridge_custom

        def build(self, input_shape: Any) -> None:
            features = int(input_shape[-1])
            self.kernel = self.add_weight(name="kernel", shape=(features, 3 * self.units), initializer="zeros")
            self.recurrent_kernel = self.add_weight(name="recurrent_kernel", shape=(self.units, 3 * self.units),
                                                    initializer="zeros")
            self.bias = self.add_weight(name="bias", shape=(2, 3 * self.units), initializer="zeros") \
                if self.use_bias else None
            super().build(input_shape)

        @tf.autograph.experimental.do_not_convert
        def call(self, inputs: Any, training: Any = None) -> Any:
            x = tf.linalg.matmul(inputs, self.kernel)
            if self.bias is not None:
                x = x + self.bias[0]
            batch = tf.shape(inputs)[0]

            def step(h: Any, x_t: Any) -> Any:
                hh = tf.linalg.matmul(h, self.recurrent_kernel)
                if self.bias is not None:
                    hh = hh + self.bias[1]
                xz, xr, xn = tf.split(x_t, 3, axis=-1)
                hz, hr, hn = tf.split(hh, 3, axis=-1)
                z = tf.sigmoid(xz + hz)
                r = tf.sigmoid(xr + hr)
                n = tf.tanh(xn + r * hn)
                return z * h + (1.0 - z) * n

            states = tf.scan(step, tf.transpose(x, [1, 0, 2]), initializer=tf.zeros([batch, self.units]))
            return [tf.transpose(states, [1, 0, 2]), states[-1]]

        def compute_output_shape(self, input_shape: Any) -> Any:
            return [(input_shape[0], input_shape[1], self.units), (input_shape[0], self.units)]

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "units": self.units, "use_bias": self.use_bias,
                    BRIDGE_CUSTOM_KEY: self.bridge_custom}

    _GRU.append(BridgeGRU)
    return BridgeGRU


TEMPLATES: dict[str, Callable[[], type]] = {"gru": gru_layer_class}


def keras_classes(plan: LayersPlan) -> dict[str, type]:
    """Every custom class the plan uses, by class name (for building and for tf_keras custom_objects)."""
    classes: dict[str, type] = {}
    for spec in plan.layers:
        if spec.program is not None:
            classes[spec.class_name] = program_layer_class(spec.class_name, spec.program)
        elif spec.template is not None:
            classes[spec.class_name] = TEMPLATES[spec.template]()
    return classes


def custom_objects_from_metadata(layers_route: Mapping[str, Any]) -> dict[str, type]:
    """tf_keras custom_objects rebuilt from model.json's ``userDefinedMetadata.bridge.layersRoute`` (to reload
    a folder with bridge.tfjs.sources.layers_folder under ``tf_keras.utils.custom_object_scope``)."""
    custom = layers_route.get("customLayers") or {}
    classes = {name: program_layer_class(name, program_from_json(entry))
               for name, entry in (custom.get("programs") or {}).items()}
    for name, template in (custom.get("templates") or {}).items():
        classes[name] = TEMPLATES[template]()
    return classes
