"""The layers plan: what a PyTorch module becomes before any Keras object exists.

A `LayersPlan` lists Keras layers (`LayerSpec`, in execution order) over symbolic tensors (`TensorSpec`, Keras
layout, batch first), the model's inputs and outputs as ports, and the `WeightLink`s that say which PyTorch
state_dict entries fill which TF.js weights and through which named transform. Custom parts carry a `Program`
(a few table-driven ops) instead of a Keras class. The plan is plain data: it is turned into a tf_keras model by
`keras_model`, into JavaScript by `js_codegen`, and its links are stored in model.json so weights can go back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bridge.source.ports import Interface

STAGE = "tfjs-layers-plan"

Shape = tuple[int | None, ...]


@dataclass(frozen=True)
class TensorSpec:
    """A symbolic Keras tensor: its id, its Keras shape (batch axis first, None where the size varies) and dtype."""

    id: int
    shape: Shape
    dtype: str = "float32"


@dataclass(frozen=True)
class Arg:
    """One operand of a custom-program step: a layer input (``in``), a weight (``w``), an earlier step (``step``) or
    a scalar constant (``const``)."""

    kind: str
    index: int = 0
    value: float = 0.0


@dataclass(frozen=True)
class Step:
    """One op of a custom program: `op` names an entry of `custom_ops.OPS`; `attrs` are its JSON-able options."""

    op: str
    args: tuple[Arg, ...]
    attrs: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class WeightDecl:
    """A weight a custom layer owns: its name inside the layer, Keras-side shape and trainability."""

    name: str
    shape: tuple[int, ...]
    trainable: bool


@dataclass(frozen=True)
class Program:
    """A custom layer's computation: `inputs` tensors and `weights` in, `steps` in order, `output` out."""

    inputs: int
    weights: tuple[WeightDecl, ...]
    steps: tuple[Step, ...]
    output: Arg

    def code_key(self) -> tuple[Any, ...]:
        """What makes two programs the same JavaScript class (weight shapes are per-instance config)."""
        return (self.inputs, tuple((w.name, w.trainable, len(w.shape)) for w in self.weights), self.steps,
                self.output)


@dataclass(frozen=True)
class WeightLink:
    """PyTorch state_dict entries `torch_keys` <-> TF.js weights `tfjs` (``layer/leaf`` names) through the named
    transform of `weight_links.TRANSFORMS` with `params`. `shared_delta`: PyTorch keeps several parameters where
    TF.js keeps their sum (LSTM biases), so a training step moves each PyTorch entry by TF.js's change."""

    torch_keys: tuple[str, ...]
    tfjs: tuple[str, ...]
    transform: str
    params: tuple[tuple[str, Any], ...] = ()
    path: str = ""
    shared_delta: bool = False

    def to_json(self) -> dict[str, Any]:
        """The link as model.json metadata."""
        return {"torch": list(self.torch_keys), "tfjs": list(self.tfjs), "transform": self.transform,
                "params": {k: _jsonable(v) for k, v in self.params}, "path": self.path,
                **({"sharedDelta": True} if self.shared_delta else {})}

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> WeightLink:
        """A link from its model.json form."""
        return cls(torch_keys=tuple(entry["torch"]), tfjs=tuple(entry["tfjs"]), transform=str(entry["transform"]),
                   params=tuple((str(k), _from_json(v)) for k, v in (entry.get("params") or {}).items()),
                   path=str(entry.get("path", "")), shared_delta=bool(entry.get("sharedDelta", False)))


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def _from_json(value: Any) -> Any:
    return tuple(_from_json(v) for v in value) if isinstance(value, list) else value


@dataclass
class LayerSpec:
    """One Keras layer call. `class_name` is a Keras class (``Dense``), or a custom class (`program` or
    `template` set). `config` holds the constructor's keyword arguments (without ``name``). `shared_with` names an
    earlier layer this call reuses (a module called twice). `path` is the PyTorch module path (or graph node) it
    comes from; `owner` the innermost user module, used to group custom ops into one layer."""

    name: str
    class_name: str
    config: dict[str, Any]
    inputs: list[int]
    outputs: list[int]
    path: str
    owner: str = ""
    program: Program | None = None
    template: str | None = None
    shared_with: str | None = None
    trainable: bool = True


@dataclass
class LayersPlan:
    """Everything the Keras model, model.json and custom_layers.js are made from."""

    tensors: dict[int, TensorSpec]
    inputs: list[tuple[str, int]]  # (input name, tensor id)
    outputs: list[tuple[str, int]]  # (output name, tensor id)
    layers: list[LayerSpec]
    links: list[WeightLink]
    interface: Interface
    skipped: list[str] = field(default_factory=list)  # state_dict keys with no TF.js meaning
    notes: list[str] = field(default_factory=list)
    batch_norms: list[tuple[str, float]] = field(default_factory=list)  # (module path, torch momentum)

    def custom_classes(self) -> list[str]:
        """Names of the custom classes the plan uses, in first-use order."""
        seen: list[str] = []
        for spec in self.layers:
            if (spec.program is not None or spec.template is not None) and spec.class_name not in seen:
                seen.append(spec.class_name)
        return seen
