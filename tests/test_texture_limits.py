"""The write-time WebGL texture check (bridge/tfjs/textures.py).

- The texture shapes bridge computes equal tfjs-backend-webgl 4.22's own `getTextureShapeFromLogicalShape`, asked
  in Node for a table of shapes, packed and unpacked, at the real limits and at a small one (64) where the
  collapsing and squarifying branches all run.
- The report of a written graph names its largest texture per limit, flags nodes over 8192 (a tensor whose texture
  cannot fit: the "Requested texture size [WxH] greater than WebGL maximum" failure), says which nodes have dynamic
  shapes, and reaches the writer's summary (`WebModelSummary.textures`, report key `webglTextures`) and
  `bridge inspect`.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bridge.tfjs.textures import (COMMON_LIMIT, physical_size, report_from_shapes, texture_need, texture_shape)

SHAPES = [
    [], [1], [7], [64], [65], [5000], [1, 1], [3, 5], [64, 64], [65, 3], [3, 65], [100, 100], [1, 3, 1],
    [2, 3, 4], [8, 8, 3], [1, 30, 30, 3], [1, 114, 114, 16], [2, 9, 7, 5], [1, 1, 1, 1], [4, 1, 33, 2],
    [1, 224, 224, 32], [3, 2, 2, 2, 2], [1, 1024, 1024, 64], [1, 20000, 20000],
]
LIMITS = [64, 8192, 16384]


def _tfjs_texture_shapes(cases: list[tuple[list[int], bool, int]]) -> list[list[int]]:
    """tfjs-backend-webgl's texture shape for each (shape, packed, limit), computed by the real package in Node."""
    from bridge.runtime.node import node_executable, node_modules_dir, node_status

    status = node_status()
    if not status.ok:
        pytest.skip("Node harness unavailable: " + "; ".join(status.problems))
    script = """
const tf = require('@tensorflow/tfjs-core');
const webgl = require('@tensorflow/tfjs-backend-webgl');
const cases = JSON.parse(process.argv[1]);
const out = cases.map(([shape, packed, limit]) => {
  tf.env().set('WEBGL_MAX_TEXTURE_SIZE', limit);
  return webgl.webgl_util.getTextureShapeFromLogicalShape(shape, packed);
});
process.stdout.write(JSON.stringify(out));
"""
    done = subprocess.run([node_executable() or "node", "-e", script, json.dumps(cases)], capture_output=True,
                          text=True, timeout=120, env={"NODE_PATH": str(node_modules_dir())}, check=True)
    return json.loads(done.stdout)


@pytest.mark.node
def test_texture_shapes_match_tfjs_webgl() -> None:
    cases = [(shape, packed, limit) for shape in SHAPES for packed in (False, True) for limit in LIMITS]
    expected = _tfjs_texture_shapes(cases)
    got = [list(texture_shape(shape, packed, limit)) for shape, packed, limit in cases]
    mismatches = [(c, e, g) for c, e, g in zip(cases, expected, got) if e != g]
    assert not mismatches, mismatches[:10]


def test_packed_textures_hold_two_by_two_values() -> None:
    assert physical_size((114 * 114, 16), packed=True) == (8, 6498)
    assert physical_size((3, 5), packed=False) == (5, 3)


@pytest.mark.parametrize("shape,limit,fits", [
    ([1, 224, 224, 64], 8192, True),         # a large feature map still fits: [224, 224*64] packs to 7168 x 112
    ([1, 1024, 1024, 64], 8192, True),       # 67 M values: squarified to exactly 8192 x 8192 (unpacked)
    ([1, 1025, 1024, 64], 8192, False),      # one row more: 8193 wide, over the common limit
    ([1, 1025, 1024, 64], 16384, True),
    ([1, 20000, 20000], 16384, False),       # 400 M values fit no WebGL texture
])
def test_texture_need_against_a_limit(shape: list[int], limit: int, fits: bool) -> None:
    assert (max(texture_need(shape, limit)) <= limit) is fits


def test_report_flags_nodes_over_the_common_limit_and_dynamic_ones() -> None:
    report = report_from_shapes([("x", "Placeholder", [1, 1025, 1024, 64]), ("conv", "Conv2D", [1, 64, 64, 8]),
                                 ("dyn", "Reshape", None)])
    assert [n.node for n in report.over[COMMON_LIMIT]] == ["x"] and not report.over[16384]
    assert report.largest[COMMON_LIMIT].node == "x" and report.largest[COMMON_LIMIT].edge > COMMON_LIMIT
    assert report.unknown == ("dyn",) and report.checked == 2 and not report.fits_common_limit
    data = report.to_dict()
    assert data["over"][str(COMMON_LIMIT)][0]["node"] == "x" and data["unknownShapeNodes"] == ["dyn"]
    assert "1 node(s) over 8192" in report.summary_line() and "dynamic" in report.summary_line()


def _save_big_graph(path: Path) -> None:
    import tensorflow as tf

    module = tf.Module()
    # A static [1, 1100, 1024, 64] map (72 M values: over 8192 texels on an edge) and a dynamic-width branch.
    module.f = tf.function(lambda x, y: {"big": tf.tile(x, [1, 1100, 1024, 1]) * 2.0, "small": tf.nn.relu(y)},
                           input_signature=[tf.TensorSpec([1, 1, 1, 64], tf.float32, name="x"),
                                            tf.TensorSpec([1, None, 3], tf.float32, name="y")])
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.f})


def test_writer_summary_and_inspect_report_textures(tmp_path: Path) -> None:
    from bridge.tfjs.convert import TfjsOptions, convert_saved_model
    from bridge.tfjs.inspect import format_inspection, inspect_web_model

    _save_big_graph(tmp_path / "sm")
    summary = convert_saved_model(tmp_path / "sm", tmp_path / "web", TfjsOptions())
    textures = summary.textures
    assert textures is not None and not textures.fits_common_limit
    over = {n.op for n in textures.over[COMMON_LIMIT]}
    assert over & {"Tile", "Mul"}, textures.to_dict()
    assert textures.unknown, "the dynamic-width branch must be reported as unchecked"
    assert summary.to_dict()["webglTextures"]["fitsCommonLimit"] is False

    info = inspect_web_model(tmp_path / "web")
    assert info["webglTextures"]["over"][str(COMMON_LIMIT)]
    text = format_inspection(info)
    assert f"OVER {COMMON_LIMIT}" in text and "webgl 16384" in text and "dynamic shapes" in text
