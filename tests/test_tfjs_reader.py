"""Reading and validating TF.js web model folders: round trip, refusals (each a WebModelError), the exact graph
replayed in TensorFlow, `inspect`, and a hypothesis fuzz test over mutated model.json and shards in which only
WebModelError may come out."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.errors import WebModelError
from bridge.tfjs.inspect import format_inspection, inspect_web_model
from bridge.tfjs.reader import graph_with_values, read_web_model
from test_tfjs_weights import const_graph, dense_graph, while_graph, write


def sample_graph() -> Any:
    """A small model with float (quantized), int, bool and string weights, written across several shards."""
    graph = const_graph([("kernel", np.linspace(-1, 1, 24, dtype=np.float32).reshape(4, 6), None),
                         ("shape", np.array([-1, 6], np.int32), None),
                         ("mask", np.array([True, False, True]), None),
                         ("vocab", np.array([b"a", b"bc", b""], object), tf.string),
                         ("bias", np.arange(6, dtype=np.float32), None)], outputs=True)
    return graph


def write_sample(folder: Path) -> Path:
    """Write the sample model (uint8 kernel, float16 bias, 40-byte shards) into `folder`."""
    write(sample_graph(), folder, quantize=("uint8:kernel", "float16:bias"), shard_size=40)
    return folder


@cache
def base_model() -> Path:
    """One sample folder shared by the fuzz examples (copied before every mutation)."""
    return write_sample(Path(tempfile.mkdtemp(prefix="bridge-reader-base-")) / "m")


def run_in_session(graph_def: Any, fetch: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """Run a GraphDef in its own TF1 graph and session (its functions do not clash with eager ones)."""
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as session:
        return session.run(fetch, feeds)


def load(folder: Path) -> dict[str, Any]:
    """model.json of a folder as a dict."""
    return json.loads((folder / "model.json").read_text())


def save(folder: Path, model: dict[str, Any]) -> None:
    """Rewrite model.json."""
    (folder / "model.json").write_text(json.dumps(model))


# ------------------------------------------------------------------------------------------------ round trip

def test_round_trip(tmp_path: Path) -> None:
    """The reader returns the weights (dequantized within their bound), the cleared graph, signature, metadata."""
    folder = write_sample(tmp_path / "m")
    model = read_web_model(folder)
    assert len(model.shards) > 1 and model.weight_bytes == sum(e.nbytes for e in model.entries)
    np.testing.assert_array_equal(model.weights["shape"], [-1, 6])
    np.testing.assert_array_equal(model.weights["mask"], [True, False, True])
    assert list(model.weights["vocab"]) == [b"a", b"bc", b""]
    np.testing.assert_array_equal(model.weights["bias"], np.arange(6, dtype=np.float32))  # exact in float16
    kernel = np.linspace(-1, 1, 24, dtype=np.float32).reshape(4, 6)
    scale = next(e for e in model.entries if e.name == "kernel").quantization["scale"]  # type: ignore[index]
    assert np.abs(model.weights["kernel"] - kernel).max() <= scale / 2 + 1e-7
    consts = [n for n in model.graph_def.node if n.op == "Const"]
    assert consts and all(not n.attr["value"].tensor.tensor_content for n in consts)
    assert list(model.signature["outputs"]) == ["out_kernel", "out_shape", "out_mask", "out_vocab", "out_bias"]
    assert model.metadata["bridge"]["quantization"]["weights"] == {"uint8": 1, "float16": 1}
    assert model.converted_by.startswith("bridge") and model.generated_by == "2.19.0"  # type: ignore[union-attr]


def test_reader_accepts_model_json_path_and_symlink_inside(tmp_path: Path) -> None:
    """Positive controls: the model.json path itself works; a shard symlinked to a file inside the folder is fine."""
    folder = write_sample(tmp_path / "m")
    shard = load(folder)["weightsManifest"][0]["paths"][0]
    os.rename(folder / shard, folder / "real.bin")
    os.symlink("real.bin", folder / shard)
    assert read_web_model(folder / "model.json").weights["shape"].tolist() == [-1, 6]


def test_graph_with_values_replays_in_tensorflow(tmp_path: Path) -> None:
    """The exact graph of model.json, values restored from the weights, runs in TF and matches the float model
    within the uint8 quantization bound (and exactly when unquantized)."""
    rng = np.random.default_rng(3)
    kernel, bias = rng.normal(0, 1, (5, 3)).astype(np.float32), rng.normal(0, 1, 3).astype(np.float32)
    x = rng.normal(0, 1, (4, 5)).astype(np.float32)
    expected = np.maximum(x @ kernel + bias, 0)
    for specs, tol in (((), 1e-6), (("uint8",), None)):
        folder = tmp_path / f"m{len(specs)}"
        summary, _ = write(dense_graph(kernel, bias), folder, quantize=specs)
        model = read_web_model(folder)
        graph_def = graph_with_values(model)
        got = run_in_session(graph_def, model.signature["outputs"]["y"]["name"], {"x:0": x})
        if tol is None:
            errs = summary.quantized
            tol = float(np.abs(x).sum(axis=1).max() * errs["dense/kernel"].max_error
                        + errs["dense/bias"].max_error + 1e-6)
            assert np.abs(got - expected).max() > 1e-7  # quantization visible: the comparison is not vacuous
        np.testing.assert_allclose(got, expected, rtol=0, atol=tol)


def test_graph_with_values_replays_function_consts(tmp_path: Path) -> None:
    """Library-function Consts (renamed <function>/<const>) are restored too: the While graph replays exactly."""
    graph, loop = while_graph()
    write(graph, tmp_path / "m")
    model = read_web_model(tmp_path / "m")
    assert any("/" in name and name.startswith("while_body") for name in model.weights)
    x = np.array([0.5, -1.0, 4.0], np.float32)
    got = run_in_session(graph_with_values(model), graph.outputs[0].name, {"x:0": x})
    np.testing.assert_array_equal(got, loop(tf.constant(x)).numpy())


def test_inspect(tmp_path: Path) -> None:
    """inspect reports ops, transposes, weight bytes by stored dtype, quantization, shards and metadata."""
    folder = write_sample(tmp_path / "m")
    info = inspect_web_model(folder)
    assert info["ops"] == {"Const": 5, "Identity": 5} and info["transposes"] == 0
    assert info["needsAsync"] is False and info["unsupportedOps"] == []
    assert info["weights"]["bytesByDtype"] == {"uint8": 24, "int32": 8, "bool": 3, "string": 15, "float16": 12}
    assert info["quantization"] == {"uint8": 1, "float16": 1}
    assert sum(s["bytes"] for s in info["shards"]) == info["weights"]["bytes"] == 62
    assert [s["bytes"] for s in info["shards"]] == [40, 22]
    assert info["metadata"]["bridge"]["version"]
    text = format_inspection(info)
    assert "62 B" in text and "1 uint8, 1 float16" in text and "execute()" in text


# ------------------------------------------------------------------------------------------------ refusals

def _set_path(model: dict[str, Any], value: str) -> None:
    model["weightsManifest"][0]["paths"][0] = value


def _entry(model: dict[str, Any], name: str) -> dict[str, Any]:
    return next(w for w in model["weightsManifest"][0]["weights"] if w["name"] == name)


def _json_edit(edit: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    """A mutation that edits model.json as a dict."""
    def apply(folder: Path) -> None:
        model = load(folder)
        edit(model)
        save(folder, model)
    return apply


def _symlink_out(folder: Path) -> None:
    outside = folder.parent / "outside.bin"
    shard = load(folder)["weightsManifest"][0]["paths"][0]
    outside.write_bytes((folder / shard).read_bytes())
    (folder / shard).unlink()
    os.symlink(outside, folder / shard)


def _shard(folder: Path, index: int = -1) -> Path:
    return folder / load(folder)["weightsManifest"][0]["paths"][index]


def _append_byte(folder: Path) -> None:
    with open(_shard(folder), "ab") as handle:
        handle.write(b"\0")


def _truncate(folder: Path) -> None:
    path = _shard(folder)
    path.write_bytes(path.read_bytes()[:-3])


REFUSALS: list[tuple[str, Callable[[Path], None], str]] = [
    ("dotdot-path", _json_edit(lambda m: _set_path(m, "../group1-shard1of2.bin")), "escapes"),
    ("nested-dotdot", _json_edit(lambda m: _set_path(m, "sub/../../x.bin")), "escapes"),
    ("absolute-path", _json_edit(lambda m: _set_path(m, "/etc/passwd")), "absolute"),
    ("url-path", _json_edit(lambda m: _set_path(m, "http://example.invalid/x.bin")), "URL-significant"),
    ("percent-dotdot", _json_edit(lambda m: _set_path(m, "%2e%2e/x.bin")), "URL-significant"),
    ("symlink-out", _symlink_out, "outside the model folder"),
    ("missing-shard", lambda f: _shard(f, 0).unlink(), "does not exist"),
    ("size-mismatch", _append_byte, "shards hold"),
    ("truncated-shard", _truncate, "shards end|shards hold"),
    ("unknown-dtype", _json_edit(lambda m: _entry(m, "shape").update(dtype="float64")), "unknown dtype"),
    ("oversized", _json_edit(lambda m: _entry(m, "shape").update(shape=[2 ** 20, 2 ** 20])), "more than TF.js"),
    ("negative-dim", _json_edit(lambda m: _entry(m, "shape").update(shape=[-2])), "invalid shape"),
    ("float-dim", _json_edit(lambda m: _entry(m, "shape").update(shape=[2.0])), "invalid shape"),
    ("bad-quant-dtype", _json_edit(lambda m: _entry(m, "kernel")["quantization"].update(dtype="int4")),
     "unknown quantization"),
    ("quant-no-scale", _json_edit(lambda m: _entry(m, "kernel")["quantization"].pop("scale")), "'scale'"),
    ("quant-of-bool", _json_edit(lambda m: _entry(m, "mask").update(quantization={"dtype": "uint8", "min": 0,
                                                                                   "scale": 1})), "not supported"),
    ("duplicate-weight", _json_edit(lambda m: m["weightsManifest"][0]["weights"].append(_entry(m, "mask"))),
     "twice"),
    ("missing-weight", _json_edit(lambda m: m["weightsManifest"][0]["weights"].remove(_entry(m, "vocab"))),
     "shards hold|no weight"),
    ("malformed-json", lambda f: (f / "model.json").write_text((f / "model.json").read_text()[:-10]), "not valid JSON"),
    ("nan-json", lambda f: (f / "model.json").write_text('{"modelTopology": {}, "x": NaN}'), "not valid JSON"),
    ("not-an-object", lambda f: (f / "model.json").write_text("[1, 2]"), "not a JSON object"),
    ("layers-model", _json_edit(lambda m: m.update(format="layers-model")), "layers-model"),
    ("bad-topology", _json_edit(lambda m: m["modelTopology"].update(node="oops")), "not a valid GraphDef"),
    ("dangling-input", _json_edit(lambda m: m["modelTopology"]["node"][1].update(input=["ghost:0"])),
     "do not exist"),
    ("bad-signature", _json_edit(lambda m: m["signature"].update(inputs=[1])), "not a valid SignatureDef"),
    ("signature-ghost", _json_edit(lambda m: m["signature"]["outputs"]["out_mask"].update(name="ghost:0")),
     "missing from the graph"),
    ("no-manifest", _json_edit(lambda m: m.pop("weightsManifest")), "no weightsManifest"),
    ("no-model-json", lambda f: (f / "model.json").unlink(), "no model.json"),
    ("string-length-past-end", lambda f: _corrupt_string_length(f), "past the end|shards hold"),
]


def _corrupt_string_length(folder: Path) -> None:
    """Overwrite the first string element's uint32 length with a huge value."""
    model = read_web_model(folder)
    entry = next(e for e in model.entries if e.name == "vocab")
    data = bytearray(b"".join((folder / s.path).read_bytes() for s in model.shards))
    data[entry.offset:entry.offset + 4] = (2 ** 31).to_bytes(4, "little")
    sizes = [s.nbytes for s in model.shards]
    pos = 0
    for shard, size in zip(model.shards, sizes):
        (folder / shard.path).write_bytes(bytes(data[pos:pos + size]))
        pos += size


@pytest.mark.parametrize("case,mutate,message", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusals(tmp_path: Path, case: str, mutate: Callable[[Path], None], message: str) -> None:
    """Each malformed or unsafe folder is refused with a WebModelError saying why."""
    folder = write_sample(tmp_path / "m")
    read_web_model(folder)  # the unmutated folder is fine
    mutate(folder)
    with pytest.raises(WebModelError, match=message):
        read_web_model(folder)


# ------------------------------------------------------------------------------------------------ fuzz

PLAUSIBLE = st.sampled_from(["float32", "int32", "bool", "string", "complex64", "uint8", "uint16", "float16",
                             "Const", "Identity", "DT_FLOAT", "DT_STRING", "-1", "kernel", "shape", "vocab",
                             "group1-shard1of2.bin", "group1-shard2of2.bin", "model.json", "../m/model.json", ".",
                             0, 1, 2, 3, 4, 6, 24, 40, -1, 2 ** 31, 0.5, 1e308, [], {}, [0], [2, 2], [4, 6]])
JSON_VALUES = st.recursive(
    PLAUSIBLE | st.none() | st.booleans() | st.integers(-2 ** 40, 2 ** 40) | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8)


def _json_paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (keys / indices) inside a JSON value, the root included."""
    paths = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            paths += _json_paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            paths += _json_paths(item, prefix + (index,))
    return paths


def _mutate_json(model: Any, path: tuple[Any, ...], action: str, new: Any) -> Any:
    """Replace, delete, or extend the value at `path`."""
    if not path:
        return new if action == "replace" else model
    parent = model
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    target = parent[last]
    if action == "delete":
        del parent[last]
    elif action == "extend" and isinstance(target, list):
        target.append(new)
    elif action == "extend" and isinstance(target, dict):
        target["fuzz"] = new
    else:
        parent[last] = new
    return model


@st.composite
def json_mutations(draw: st.DrawFn) -> tuple[tuple[Any, ...], str, Any]:
    """A random path of the base model.json, an action and a new value."""
    paths = _json_paths(load(base_model()))
    return (draw(st.sampled_from(paths)), draw(st.sampled_from(["replace", "delete", "extend"])),
            draw(JSON_VALUES))


@st.composite
def byte_mutations(draw: st.DrawFn) -> tuple[str, int, str, int]:
    """A file of the base folder, an offset, and a change: truncate, flip a byte, append, or cut text."""
    names = sorted(p.name for p in base_model().iterdir())
    return (draw(st.sampled_from(names)), draw(st.integers(0, 4096)),
            draw(st.sampled_from(["truncate", "flip", "append"])), draw(st.integers(1, 255)))


def _apply_bytes(folder: Path, mutation: tuple[str, int, str, int]) -> None:
    name, offset, action, value = mutation
    path = folder / name
    data = bytearray(path.read_bytes())
    offset = offset % (len(data) + 1)
    if action == "truncate":
        data = data[:offset]
    elif action == "flip" and data:
        data[offset % len(data)] ^= value
    else:
        data[offset:offset] = bytes([value]) * value
    path.write_bytes(bytes(data))


def _read_allowing_only_web_model_errors(folder: Path) -> None:
    try:
        read_web_model(folder)
    except WebModelError:
        pass


FUZZ_EXAMPLES = int(os.environ.get("BRIDGE_FUZZ_EXAMPLES", "150"))  # raise it for a longer hunt


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations=st.lists(json_mutations(), min_size=1, max_size=3), byte_change=st.none() | byte_mutations())
def test_fuzz_only_web_model_errors(mutations: list[tuple[tuple[Any, ...], str, Any]],
                                    byte_change: tuple[str, int, str, int] | None) -> None:
    """Random edits of model.json (replace / delete / extend any value) and of shard or model.json bytes either
    read fine or raise WebModelError: no other exception type escapes the reader."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "m"
        shutil.copytree(base_model(), folder)
        model: Any = load(folder)
        for path, action, new in mutations:
            try:
                model = _mutate_json(model, path, action, new)
            except (KeyError, IndexError, TypeError):
                continue  # an earlier mutation removed this path
        (folder / "model.json").write_text(json.dumps(model))
        if byte_change is not None:
            _apply_bytes(folder, byte_change)
        _read_allowing_only_web_model_errors(folder)
