"""Spatial sampling: grid_sample (bilinear and nearest; zeros, border and reflection padding; both align_corners)
and affine_grid, for 2-D images.

TF.js has no grid-sample op. The sampler is spelled with ops every TF.js backend runs: the grid's coordinates are
unnormalised to pixel positions (and clipped or reflected for the padding mode) with arithmetic, the taps are
floor/round of them, and each tap is one GatherV2 of the image flattened to [N*H*W, C] rows (the row index
n*H*W + y*W + x), weighted and masked (zeros padding) in float. The image is NHWC (channels-last policy), the
grid stays in PyTorch order [N, H_out, W_out, 2], the output is NHWC.

affine_grid builds the base grid from PyTorch's own linspace values (literals, so the numbers are the same) and
applies theta by broadcasting (no matmul over a broadcast batch).
"""

from __future__ import annotations

import torch

from bridge.native.codegen import OpContext, lit
from bridge.native.ir import Node
from bridge.native.ops._common import first_tensor, static_dims
from bridge.native.registry import LayoutPolicy, converter

_MODES = {0: "bilinear", 1: "nearest", 2: "bicubic"}
_PADDINGS = {0: "zeros", 1: "border", 2: "reflection"}


def _check_grid_sample(node: Node) -> str | None:
    image, grid = node.args["input"], node.args["grid"]
    if image.rank != 4 or grid.rank != 4:
        return "only 4-D input and grid (2-D sampling) convert"
    if not static_dims(image.shape[1:]):
        return "dynamic image size (a dynamic batch converts)"
    mode = int(node.args["interpolation_mode"])
    if mode not in (0, 1):
        return f"{_MODES.get(mode, mode)} interpolation (bilinear and nearest convert)"
    if int(node.args["padding_mode"]) not in _PADDINGS:
        return f"padding mode {node.args['padding_mode']}"
    return None


def _unnormalized(ctx: OpContext, coord: str, size: int, align: bool, padding: str, hint: str) -> str:
    """A grid coordinate in [-1, 1] as a pixel position, clipped (border) or reflected (reflection) as PyTorch's
    grid_sampler_compute_source_index does."""
    if align:
        pos = ctx.let(f"({coord} + 1.0) / 2.0 * {lit(float(size - 1))}", hint)
    else:
        pos = ctx.let(f"(({coord} + 1.0) * {lit(float(size))} - 1.0) / 2.0", hint)
    if padding == "zeros":
        return pos
    if padding == "reflection":
        pos = _reflected(ctx, pos, size, align, hint)
    return ctx.let(f"tf.clip_by_value({pos}, 0.0, {lit(float(size - 1))})", f"{hint}_clipped")


def _shifted(expr: str, offset: float) -> str:
    """`expr + offset`, spelled without a double sign."""
    if offset == 0:
        return expr
    return f"{expr} + {lit(offset)}" if offset > 0 else f"{expr} - {lit(-offset)}"


def _reflected(ctx: OpContext, pos: str, size: int, align: bool, hint: str) -> str:
    """PyTorch's reflect_coordinates over [twice_low / 2, twice_high / 2]: the distance from the low edge folded
    into one span, mirrored on odd folds."""
    twice_low, twice_high = (0, 2 * (size - 1)) if align else (-1, 2 * size - 1)
    if twice_low == twice_high:
        return ctx.let(f"tf.zeros_like({pos})", f"{hint}_reflected")
    low, span = twice_low / 2, (twice_high - twice_low) / 2
    dist = ctx.let(f"tf.math.abs({_shifted(pos, -low)})", f"{hint}_from_edge")
    extra = ctx.let(f"tf.math.floormod({dist}, {lit(span)})", f"{hint}_in_span")
    even = f"tf.math.equal(tf.math.floormod(tf.math.floor({dist} / {lit(span)}), 2.0), 0.0)"
    return ctx.let(f"tf.where({even}, {_shifted(extra, low)}, {_shifted(f'{lit(span)} - {extra}', low)})",
                   f"{hint}_reflected")


def _inside(tap: str, size: int) -> str:
    """1.0 where an integral tap position lies inside [0, size - 1], else 0.0."""
    return (f"tf.cast(tf.math.logical_and(tf.math.greater_equal({tap}, 0.0), tf.math.less_equal({tap}, "
            f"{lit(float(size - 1))})), tf.float32)")


class _Gatherer:
    """Reads image rows at integral (x, y) tap positions: one GatherV2 of the image flattened to [N*H*W, C]
    (a dynamic batch N, None here, is read from the image's shape)."""

    def __init__(self, ctx: OpContext, n: int | None, h: int, w: int, c: int) -> None:
        self.ctx, self.h, self.w = ctx, h, w
        image = ctx.t("input")
        self.rows = ctx.let(f"tf.reshape({image}, [{-1 if n is None else n * h * w}, {c}])", "rows")
        batch = f"tf.shape({image})[0]" if n is None else str(n)
        self.base = "" if n == 1 else ctx.let(
            f"tf.reshape(tf.range({batch}) * {h * w}, [{-1 if n is None else n}, 1, 1])", "batch_row")
        self.clipped: dict[str, str] = {}

    def _clip(self, tap: str, size: int) -> str:
        """A tap position clipped into the image, once per position (masks are applied apart)."""
        if tap not in self.clipped:
            hint = tap.removeprefix(f"{self.ctx.node.name}_") + "_in"
            self.clipped[tap] = self.ctx.let(f"tf.clip_by_value({tap}, 0.0, {lit(float(size - 1))})", hint)
        return self.clipped[tap]

    def tap(self, x: str, y: str) -> str:
        """The [N, H_out, W_out, C] values at positions x, y."""
        index = f"tf.cast({self._clip(y, self.h)} * {lit(float(self.w))} + {self._clip(x, self.w)}, tf.int32)"
        if self.base:
            index = f"{index} + {self.base}"
        return self.ctx.let(f"tf.gather({self.rows}, {index})", "tap")


@converter("aten.grid_sampler_2d.default", layout=LayoutPolicy.CHANNELS_LAST, check=_check_grid_sample,
           emits=("StridedSlice", "AddV2", "Sub", "Mul", "RealDiv", "Floor", "Round", "ClipByValue", "Abs",
                  "FloorMod", "Equal", "SelectV2", "GreaterEqual", "LessEqual", "LogicalAnd", "Cast", "Reshape",
                  "Range", "GatherV2", "ExpandDims"))
def grid_sampler_2d(ctx: OpContext, node: Node) -> str:
    """aten::grid_sampler_2d(Tensor input, Tensor grid, int interpolation_mode, int padding_mode,
    bool align_corners) -> Tensor   (F.grid_sample: bilinear or nearest; zeros, border or reflection padding)"""
    batch, *sizes = first_tensor(node).shape
    c, h, w = (int(d) for d in sizes)  # type: ignore[arg-type]
    n = None if batch is None else int(batch)
    padding, align = _PADDINGS[int(ctx.arg("padding_mode"))], bool(ctx.arg("align_corners"))
    grid = ctx.t("grid")
    ix = _unnormalized(ctx, f"{grid}[..., 0]", w, align, padding, "ix")
    iy = _unnormalized(ctx, f"{grid}[..., 1]", h, align, padding, "iy")
    gather = _Gatherer(ctx, n, h, w, c)
    if int(ctx.arg("interpolation_mode")) == 1:
        x, y = ctx.let(f"tf.math.round({ix})", "x"), ctx.let(f"tf.math.round({iy})", "y")  # half to even
        value = gather.tap(x, y)
        if padding != "zeros":
            return value
        return f"{value} * tf.expand_dims({_inside(x, w)} * {_inside(y, h)}, -1)"
    x0, y0 = ctx.let(f"tf.math.floor({ix})", "x0"), ctx.let(f"tf.math.floor({iy})", "y0")
    x1, y1 = ctx.let(f"{x0} + 1.0", "x1"), ctx.let(f"{y0} + 1.0", "y1")
    wx = {x0: f"{x1} - {ix}", x1: f"{ix} - {x0}"}
    wy = {y0: f"{y1} - {iy}", y1: f"{iy} - {y0}"}
    if padding == "zeros":  # taps outside the image read zeros: their weight is masked out
        wx = {x: ctx.let(f"({weight}) * {_inside(x, w)}", "wx") for x, weight in wx.items()}
        wy = {y: ctx.let(f"({weight}) * {_inside(y, h)}", "wy") for y, weight in wy.items()}
    else:
        wx = {x: ctx.let(weight, "wx") for x, weight in wx.items()}
        wy = {y: ctx.let(weight, "wy") for y, weight in wy.items()}
    terms = [f"{gather.tap(x, y)} * tf.expand_dims({wx[x]} * {wy[y]}, -1)" for y in (y0, y1) for x in (x0, x1)]
    return " + ".join(terms)


def _check_affine_grid(node: Node) -> str | None:
    size = node.args["size"]
    if len(size) != 4:
        return "only 4-D sizes (2-D grids) convert"
    if not all(isinstance(s, int) for s in size[2:]):
        return "dynamic grid size"
    return None


def _base_coords(size: int, align: bool) -> list[float]:
    """PyTorch's base grid coordinates along one axis (its own linspace, so the values agree exactly)."""
    coords = torch.linspace(-1.0, 1.0, size) if size > 1 else torch.zeros(1)
    if not align and size > 1:
        coords = coords * (size - 1) / size
    return [float(v) for v in coords]


@converter("aten.affine_grid_generator.default", layout=LayoutPolicy.SOURCE, check=_check_affine_grid,
           emits=("Reshape", "StridedSlice", "Mul", "AddV2"))
def affine_grid_generator(ctx: OpContext, node: Node) -> str:
    """aten::affine_grid_generator(Tensor theta, SymInt[] size, bool align_corners) -> Tensor   (F.affine_grid,
    2-D: theta [N, 2, 3] and size [N, C, H, W] give the [N, H, W, 2] sampling grid)"""
    _, _, h, w = ctx.arg("size")
    align = bool(ctx.arg("align_corners"))
    xs = ctx.let(f"tf.reshape(tf.constant({lit(_base_coords(w, align))}, tf.float32), [1, 1, {w}, 1])", "base_x")
    ys = ctx.let(f"tf.reshape(tf.constant({lit(_base_coords(h, align))}, tf.float32), [1, {h}, 1, 1])", "base_y")
    theta = ctx.let(f"tf.reshape({ctx.t('theta')}, [-1, 1, 1, 2, 3])", "theta")
    return f"{xs} * {theta}[..., 0] + {ys} * {theta}[..., 1] + {theta}[..., 2]"
