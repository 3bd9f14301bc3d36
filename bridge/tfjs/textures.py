"""The largest WebGL texture each node of a written graph needs, against the WebGL limits.

TF.js's webgl backend (tfjs-backend-webgl 4.22) stores every tensor in a 2-D texture whose shape it derives from
the tensor's logical shape (`getTextureShapeFromLogicalShape`), and refuses a texture wider or higher than the
GPU's MAX_TEXTURE_SIZE ("Requested texture size [WxH] greater than WebGL maximum"). Most GPUs give 8192 or 16384
(SwiftShader, what headless Chromium uses here, 8192). The mapping, restated from the backend's source:

- unpacked (one value per texel): size-1 axes dropped (a 2-D shape is kept as it is); then the first layout
  that fits the limit M on both edges: [1, size] for rank <= 1, [rows, cols] for rank 2, [a*b, c] or [a, b*c]
  for rank 3, [a*b*c, d] or [a, b*c*d] for rank 4; else "squarified" to [ceil(sqrt(size)), ceil(size / that)].
  The physical texture is cols wide and rows high.
- packed (2x2 values per texel, the default for most kernels): the last two axes rounded up to even (a 1-D shape
  becomes [2, n]) and the same layouts tried against 2M; squarifying counts texels (batch * rows/2 * cols/2).
  The physical texture is half the texture shape on each edge.

Shapes come from TensorFlow's own shape inference over the written graph (large Consts replaced by Placeholders
of their shape, fused TF.js ops split into TF ops); a dimension only known at run time leaves that node's texture
unknown, which the report says. Textures inside a kernel (a Mean's reshaped copy) are not modelled: node outputs
only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

WEBGL_LIMITS = (8192, 16384)
COMMON_LIMIT = WEBGL_LIMITS[0]
_SMALL_CONST = 4096  # Consts up to this many elements keep their values for shape inference (shapes, axes)


def _squeezed(shape: Sequence[int]) -> list[int]:
    return [d for d in shape if d != 1]


def _fitting_layout(shape: list[int], limit: int) -> tuple[int, int] | None:
    """The first [rows, cols] layout of `shape` (rank <= 4) whose edges both fit `limit`, or None."""
    size = math.prod(shape)
    if len(shape) <= 1:
        return (1, size) if size <= limit else None
    # rank 2: as it is; ranks 3 and 4: all but the last axis as rows, else the first axis as rows
    candidates = [] if len(shape) > 4 else [(math.prod(shape[:-1]), shape[-1]), (shape[0], math.prod(shape[1:]))]
    for rows, cols in candidates[:1] if len(shape) == 2 else candidates:
        if rows <= limit and cols <= limit:
            return rows, cols
    return None


def _squarish(size: int) -> tuple[int, int]:
    width = math.ceil(math.sqrt(size))
    return width, math.ceil(size / width) if width else 0


def texture_shape(shape: Sequence[int], packed: bool, limit: int) -> tuple[int, int]:
    """The texture shape [rows, cols] (in values) TF.js's webgl backend picks for a tensor of logical `shape` when
    the GPU's MAX_TEXTURE_SIZE is `limit`."""
    logical = [int(d) for d in shape]
    edge = limit * 2 if packed else limit
    if packed:
        logical = [d + d % 2 if i >= len(logical) - 2 else d for i, d in enumerate(logical)]
        if len(logical) == 1:
            logical = [2, logical[0]]
    if len(logical) != 2:
        logical = _squeezed(logical)
    fitted = _fitting_layout(logical, edge)
    if fitted is not None:
        return fitted
    if not packed:
        return _squarish(math.prod(logical))
    rows, cols = (logical[-2] if len(logical) > 1 else 1, logical[-1]) if logical else (2, 2)
    texels = math.prod(logical[:-2]) * (rows // 2) * (cols // 2)
    width, height = _squarish(texels)
    return width * 2, height * 2


def physical_size(tex_shape: tuple[int, int], packed: bool) -> tuple[int, int]:
    """(width, height) of the GPU texture holding a texture shape [rows, cols]."""
    rows, cols = tex_shape
    if packed:
        return max(1, math.ceil(cols / 2)), max(1, math.ceil(rows / 2))
    return cols, rows


def texture_need(shape: Sequence[int], limit: int) -> tuple[int, int]:
    """The largest (width, height) texture, packed or unpacked, a tensor of `shape` needs under `limit`."""
    sizes = [physical_size(texture_shape(shape, packed, limit), packed) for packed in (False, True)]
    return max(sizes, key=lambda wh: (max(wh), wh[0] * wh[1]))


@dataclass(frozen=True)
class NodeTexture:
    """One node output's texture under one limit."""

    node: str
    op: str
    shape: tuple[int, ...]
    width: int
    height: int

    @property
    def edge(self) -> int:
        """The longer edge, what the limit is checked against."""
        return max(self.width, self.height)

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "op": self.op, "shape": list(self.shape), "texture": [self.width, self.height]}


@dataclass(frozen=True)
class TextureReport:
    """The write-time WebGL texture check: per limit, the largest texture any node needs and the nodes over it;
    `unknown` lists nodes whose shape is only known at run time (dynamic dimensions), `checked` how many were."""

    largest: Mapping[int, NodeTexture | None]
    over: Mapping[int, tuple[NodeTexture, ...]]
    checked: int
    unknown: tuple[str, ...] = ()
    note: str = ""

    @property
    def fits_common_limit(self) -> bool:
        """True when every node with a known shape fits a 8192 texture."""
        return not self.over.get(COMMON_LIMIT)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for report.json and `bridge inspect --json`."""
        return {
            "limits": list(self.largest),
            "largest": {str(k): (v.to_dict() if v else None) for k, v in self.largest.items()},
            "over": {str(k): [t.to_dict() for t in v] for k, v in self.over.items()},
            "checkedNodes": self.checked, "unknownShapeNodes": list(self.unknown),
            "fitsCommonLimit": self.fits_common_limit, "note": self.note,
        }

    def summary_line(self) -> str:
        """`largest texture 4096x2048 (conv/Relu [1,112,112,64]); fits 8192` style text."""
        top = self.largest.get(COMMON_LIMIT)
        if top is None:
            text = "no node with a static shape"
        else:
            text = f"largest {top.width}x{top.height} at {top.node} ({top.op} {list(top.shape)})"
        over = self.over.get(COMMON_LIMIT, ())
        verdict = f"{len(over)} node(s) over {COMMON_LIMIT}" if over else f"fits {COMMON_LIMIT}"
        unknown = f"; {len(self.unknown)} node(s) with dynamic shapes unchecked" if self.unknown else ""
        return f"{text}; {verdict}{unknown}"


def report_from_shapes(shapes: Iterable[tuple[str, str, Sequence[int] | None]],
                       limits: Sequence[int] = WEBGL_LIMITS, note: str = "") -> TextureReport:
    """The report over (node, op, output shape or None when unknown) triples."""
    largest: dict[int, NodeTexture | None] = {limit: None for limit in limits}
    over: dict[int, list[NodeTexture]] = {limit: [] for limit in limits}
    unknown: list[str] = []
    checked = 0
    for node, op, shape in shapes:
        if shape is None:
            unknown.append(node)
            continue
        if any(d == 0 for d in shape):
            continue  # an empty tensor has no texture
        checked += 1
        for limit in limits:
            width, height = texture_need(shape, limit)
            entry = NodeTexture(node, op, tuple(int(d) for d in shape), width, height)
            best = largest[limit]
            if best is None or (entry.edge, width * height) > (best.edge, best.width * best.height):
                largest[limit] = entry
            if entry.edge > limit:
                over[limit].append(entry)
    return TextureReport(largest, {k: tuple(v) for k, v in over.items()}, checked, tuple(unknown), note)


# ------------------------------------------------------------------------------------------------ graph shapes

def graph_output_shapes(graph_def: Any, const_value: Callable[[Any], np.ndarray | None]
                        ) -> list[tuple[str, str, list[int] | None]]:
    """(node, op, first output's static shape) for every main-graph node of a written graph, by TensorFlow's
    shape inference. `const_value(node)` gives a small Const's value (None: only its shape is known)."""
    import tensorflow as tf

    from bridge.tfjs.freeze import quiet_tf
    from bridge.tfjs.replay import make_tf_runnable

    original = {n.name: n.op for n in graph_def.node}
    shapeable = _shape_graph(graph_def, const_value)
    make_tf_runnable(shapeable)
    graph = tf.Graph()
    with quiet_tf(), graph.as_default():
        tf.graph_util.import_graph_def(shapeable, name="")
    result: list[tuple[str, str, list[int] | None]] = []
    for name, op in original.items():
        try:
            operation = graph.get_operation_by_name(name)
        except KeyError:
            continue
        if not operation.outputs:
            continue
        shape = operation.outputs[0].shape
        dims = None if shape.rank is None or any(d is None for d in shape.as_list()) else shape.as_list()
        result.append((name, op, dims))
    return result


def _shape_graph(graph_def: Any, const_value: Callable[[Any], np.ndarray | None]) -> Any:
    """A copy of the main graph for shape inference: small Consts with their values, large ones (and Consts
    without a value) as Placeholders of their dtype and shape; library functions kept."""
    from tensorflow.core.framework import graph_pb2

    from bridge.tfjs.graph_names import make_const, make_node

    copy = graph_pb2.GraphDef()
    copy.versions.CopyFrom(graph_def.versions)
    if graph_def.HasField("library"):
        copy.library.CopyFrom(graph_def.library)
    for node in graph_def.node:
        if node.op != "Const":
            copy.node.append(node)
            continue
        dims = [d.size for d in node.attr["value"].tensor.tensor_shape.dim]
        value = const_value(node) if math.prod(dims) <= _SMALL_CONST else None
        if value is not None:
            const = make_const(node.name, np.asarray(value).reshape(dims), node.attr["dtype"].type)
            const.input.extend(node.input)
            copy.node.append(const)
            continue
        stand_in = make_node(node.name, "Placeholder", [], {"dtype": ("type", node.attr["dtype"].type)})
        stand_in.attr["shape"].shape.CopyFrom(node.attr["value"].tensor.tensor_shape)
        copy.node.append(stand_in)
    return copy


def texture_report(graph_def: Any, const_value: Callable[[Any], np.ndarray | None],
                   limits: Sequence[int] = WEBGL_LIMITS) -> TextureReport:
    """The texture check of a written graph (see the module docstring); never raises: a graph TensorFlow cannot
    infer shapes for gives an empty report saying why."""
    functions = len(graph_def.library.function) if graph_def.HasField("library") else 0
    note = f"{functions} library function(s) not checked" if functions else ""
    try:
        return report_from_shapes(graph_output_shapes(graph_def, const_value), limits, note=note)
    except Exception as exc:  # noqa: BLE001 - the check informs, it must not fail a conversion
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        return report_from_shapes([], limits, note=f"shape inference failed: {first}")


def frozen_const_value(node: Any) -> np.ndarray | None:
    """A Const's value from its own tensor proto (the writer's graphs still hold values)."""
    from tensorflow.python.framework import tensor_util

    try:
        return tensor_util.MakeNdarray(node.attr["value"].tensor)
    except Exception:  # noqa: BLE001 - a value-cleared Const
        return None


def weights_const_value(weights: Mapping[str, np.ndarray]) -> Callable[[Any], np.ndarray | None]:
    """Const values from a read web model's weights (its graph's Consts are value-cleared)."""
    return lambda node: weights.get(node.name)

