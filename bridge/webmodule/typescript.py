"""TypeScript text for model.d.ts: property keys, type names and the value types of each input and output."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bridge.source.ports import Port

_IDENTIFIER = re.compile(r"^[A-Za-z_$][\w$]*$")
_RESERVED = frozenset("""break case catch class const continue debugger default delete do else enum export extends false
finally for function if import in instanceof new null return super switch this throw true try typeof var void while
with""".split())
# The typed arrays predict() takes for each web dtype (besides tf.Tensor and nested arrays), and the number type.
_INPUT_ARRAYS = {"float32": ("Float32Array", "Float64Array"), "int32": ("Int32Array",), "bool": ("Uint8Array",)}
_ELEMENTS = {"float32": "number", "int32": "number", "bool": "boolean | number"}
_OUTPUT_ARRAYS = {"float32": "Float32Array", "int32": "Int32Array", "bool": "Uint8Array"}
_RANKED = {0: "tf.Scalar", 1: "tf.Tensor1D", 2: "tf.Tensor2D", 3: "tf.Tensor3D", 4: "tf.Tensor4D", 5: "tf.Tensor5D",
           6: "tf.Tensor6D"}


def property_key(name: str) -> str:
    """`name` as an object-type key: bare when it is an identifier, else a JSON string."""
    return name if _IDENTIFIER.match(name) else json.dumps(name)


def type_names(names: Sequence[str], suffix: str) -> list[str]:
    """A distinct PascalCase type name per port name (``input_ids`` -> ``InputIdsInput``)."""
    taken: set[str] = set()
    found = []
    for name in names:
        base = "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", name) if part) or "Port"
        base = f"_{base}" if base[0].isdigit() else base
        candidate, index = f"{base}{suffix}", 2
        while candidate in taken or candidate in _RESERVED:
            candidate, index = f"{base}{index}{suffix}", index + 1
        taken.add(candidate)
        found.append(candidate)
    return found


def shape_tuple(shape: Sequence[int | None]) -> str:
    """A shape as a tuple type: fixed sizes as literals, dynamic ones as ``number``."""
    return "[" + ", ".join("number" if d is None else str(int(d)) for d in shape) + "]"


def shape_text(shape: Sequence[int | None]) -> str:
    """A shape for comments: ``[1, ?, 16]``."""
    return "[" + ", ".join("?" if d is None else str(int(d)) for d in shape) + "]"


def tensor_type(rank: int) -> str:
    """The tf.Tensor type of a given rank."""
    return _RANKED.get(rank, "tf.Tensor")


def nested_type(element: str, rank: int) -> str:
    """Nested readonly arrays of `element`, `rank` levels deep (rank 0: the element itself)."""
    text = element if " " not in element else f"({element})"
    for level in range(rank):
        text = f"readonly {text}[]" if level == 0 else f"readonly ({text})[]"
    return text


def union(parts: Iterable[str]) -> str:
    """`parts` joined by ``|``, each once, in order."""
    return " | ".join(dict.fromkeys(parts))


@dataclass(frozen=True)
class PortTypes:
    """The TypeScript of one port: its doc comment, key, alias name and the type text."""

    key: str
    alias: str
    doc: str
    type: str


def input_types(ports: Sequence[Port], image_inputs: Iterable[str]) -> list[PortTypes]:
    """What predict() accepts for each input: a tensor of its rank, the typed arrays of its dtype (BigInt64Array
    and bigints too for PyTorch int64), nested arrays, {data, shape}, and pictures for image inputs."""
    images = set(image_inputs)
    found = []
    for port, alias in zip(ports, type_names([p.name for p in ports], "Input")):
        rank, dtype = len(port.web_shape), port.web_dtype
        arrays = list(_INPUT_ARRAYS.get(dtype, ("Float32Array",)))
        elements = [_ELEMENTS.get(dtype, "number")]
        if dtype == "int32" and port.dtype in ("int64", "uint64"):
            arrays.append("BigInt64Array")
            elements.append("bigint")
        data = union([*arrays, *(f"readonly {e}[]" if " " not in e else f"readonly ({e})[]" for e in elements)])
        parts = [tensor_type(rank), *arrays, *(nested_type(e, rank) for e in elements),
                 f"TensorData<{data}>"]
        if port.name in images:
            parts.append("ImageSource")
        found.append(PortTypes(key=property_key(port.name), alias=alias, doc=port_doc(port), type=union(parts)))
    return found


def output_types(ports: Sequence[Port]) -> list[PortTypes]:
    """Each output as a tensor of its rank (``predict()``)."""
    return [PortTypes(key=property_key(p.name), alias=alias, doc=port_doc(p), type=tensor_type(len(p.web_shape)))
            for p, alias in zip(ports, type_names([p.name for p in ports], "Output"))]


def output_data_types(ports: Sequence[Port]) -> list[PortTypes]:
    """Each output as read data (``predict(inputs, {output: 'data'})``): typed array, shape tuple, dtype."""
    return [PortTypes(key=property_key(p.name), alias=alias, doc=port_doc(p),
                      type=f"{{ data: {_OUTPUT_ARRAYS.get(p.web_dtype, 'Float32Array')}; "
                           f"shape: {shape_tuple(p.web_shape)}; dtype: {json.dumps(p.web_dtype)} }}")
            for p, alias in zip(ports, type_names([p.name for p in ports], "Data"))]


def port_doc(port: Port) -> str:
    """One line: web dtype, shape and layout, and what it was in PyTorch."""
    layout = {"nhwc": "NHWC", "nchw": "NCHW"}.get(port.layout, "PyTorch's axis order")
    text = f"{port.web_dtype} {shape_text(port.web_shape)}, {layout}; " \
           f"PyTorch {port.dtype} {shape_text(port.torch_shape)}"
    if port.perm is not None:
        text += f", permFromTorch [{', '.join(str(a) for a in port.perm)}]"
    if port.dtype != port.web_dtype and port.web_dtype == "int32":
        text += " (values must fit int32)"
    return text + "."


def literal_type(value: object) -> str:
    """A JSON value as the TypeScript literal type of itself (readonly tuples and objects)."""
    if isinstance(value, list):
        return "readonly [" + ", ".join(literal_type(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + "; ".join(f"readonly {property_key(str(k))}: {literal_type(v)}" for k, v in value.items()) + " }"
    return json.dumps(value, ensure_ascii=False)
