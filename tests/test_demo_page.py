"""The demo page (bridge.demo.page + templates/index.html.j2) for a converted TinyCNN, in real headless Chromium.

One conversion (examples/tiny_cnn, ~15-20 s) feeds every browser case. The page's outputs are compared with
PyTorch's in Python, not only through the page's own max |Δ|: wasm and cpu run float32 kernels on the CPU
(atol 1e-5, rtol 1e-4 for this 10-logit head); webgl runs on SwiftShader's float32 shaders (atol 1e-4, rtol 1e-3,
the pipeline's default tolerance). Pictures go through the page's preprocessing and are compared with PyTorch run
on the same preprocessing done in numpy (atol 1e-4: the pixels are exact, only float32 summation order differs).
Cases that must fail: a wrong reference (the page must flag it), a changed model (the IndexedDB copy must not be
used), a missing shard (the page must end in its error state), and bad calls to write_demo_page.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import struct
import sys
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.demo.page import (SAMPLES_BIN, SAMPLES_JSON, editor_record, embedded_json, image_preprocessing,
                              model_fingerprint, ports_from_model_json, read_model_json, write_demo_page,
                              write_demo_page_from_parity)
from bridge.parity.store import ParityDataError
from bridge.errors import MissingDependencyError, UsageError, WebModelError
from bridge.source.ports import Port, to_web_samples
from bridge.runtime import browser as browser_rt
from bridge.runtime.tensor_io import TensorRef, read_tensor

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "test-results" / "demo_page.png"
TOLERANCE = {"webgl": (1e-4, 1e-3), "wasm": (1e-5, 1e-4), "cpu": (1e-5, 1e-4)}
PICTURE_ATOL = 1e-4
SETTLED = "() => ['done', 'error'].includes(document.body.dataset.state)"
PAGE_TIMEOUT_MS = 120_000
_STATUS = browser_rt.browser_status()
needs_browser = pytest.mark.skipif(not _STATUS.ok, reason="; ".join(_STATUS.problems) or "browser ready")


# ------------------------------------------------------------------------------------------------ fixtures

@dataclass
class Converted:
    """A converted TinyCNN with its demo page: the torch module, ports, samples and reference (web layout)."""

    out: Path
    module: Any
    inputs: list[Port]
    outputs: list[Port]
    samples: list[dict[str, np.ndarray]]
    reference: list[dict[str, np.ndarray]]

    def write_page(self, out: Path | None = None, **overrides: Any) -> Path:
        """(Re)writes the demo page into `out` (default: the conversion folder)."""
        args: dict[str, Any] = {"web_model": (out or self.out) / "web_model", "input_ports": self.inputs,
                                "output_ports": self.outputs, "samples": self.samples,
                                "reference": self.reference, "model_name": "TinyCNN"}
        args.update(overrides)
        return write_demo_page(out or self.out, **args)

    def copy(self, target: Path) -> Path:
        """A copy of the output folder (page included), for cases that change files."""
        shutil.copytree(self.out, target)
        return target

    def torch_outputs(self, web_input: np.ndarray) -> np.ndarray:
        """PyTorch's logits for one input given in the web layout (NHWC)."""
        import torch

        with torch.no_grad():
            return self.module(torch.from_numpy(np.transpose(web_input, (0, 3, 1, 2)).copy())).numpy()


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Converted:
    """examples/tiny_cnn converted once (browser stages off: this module drives Chromium itself)."""
    import torch

    import bridge
    from bridge.source.inputs import make_sample_inputs, parse_input_spec

    sys.path.insert(0, str(ROOT / "examples" / "tiny_cnn"))
    try:
        from model import TinyCNN
    finally:
        sys.path.remove(str(ROOT / "examples" / "tiny_cnn"))
    torch.manual_seed(0)
    module = TinyCNN().eval()
    spec = parse_input_spec("x:1x3x64x64")
    samples = make_sample_inputs([spec], count=3, seed=0)
    out = tmp_path_factory.mktemp("demo") / "tiny_cnn"
    result = bridge.convert(module, [spec], out, sample_inputs=samples, samples=3, browser=False,
                            node_backends=("wasm",))
    assert result.ok, [(s.name, s.status, s.reason) for s in result.stages]
    inputs, outputs = ports_from_model_json(read_model_json(out / "web_model"))
    with torch.no_grad():
        reference = [{"output_0": module(torch.from_numpy(s["x"])).numpy()} for s in samples]
    conv = Converted(out=out, module=module, inputs=inputs, outputs=outputs,
                     samples=to_web_samples(samples, inputs), reference=to_web_samples(reference, outputs))
    conv.write_page()
    return conv


@contextmanager
def chromium() -> Iterator[tuple[Any, browser_rt._Session]]:
    """A fresh headless Chromium (the harness's launch, profile in a temporary folder), closed afterwards.

    Yields a page and the session recording console errors and blocked requests; `session.base_url` must be set
    by the caller before navigating (requests elsewhere are refused).
    """
    from playwright.sync_api import sync_playwright

    status = browser_rt.require_browser()
    assert status.launch_path is not None
    session = browser_rt._Session(base_url="")
    with tempfile.TemporaryDirectory(prefix="bridge-browser-demo-") as tmp, sync_playwright() as playwright:
        context = browser_rt._launch(playwright, status.launch_path, Path(tmp), browser_rt._Deadline(120))
        try:
            context.route("**/*", lambda route: browser_rt._route(session, route))
            page = context.pages[0] if context.pages else context.new_page()
            page.set_viewport_size({"width": 1200, "height": 900})
            page.on("console", lambda message: browser_rt._console_line(session, message))
            page.on("pageerror", lambda error: session.console.append(f"page error: {error}"))
            yield page, session
        finally:
            context.close()
            browser_rt._kill_leftovers(Path(tmp))


@contextmanager
def static_server(folder: Path) -> Iterator[str]:
    """A plain `python -m http.server` (the stdlib handler, nothing of bridge's server) for `folder`."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def bridge_server(folder: Path) -> Iterator[str]:
    """`bridge serve`'s server for `folder`."""
    from bridge.demo.server import serving

    with serving(folder) as base:
        yield base


def open_page(page: Any, session: browser_rt._Session, base: str, query: str = "") -> dict[str, Any]:
    """Navigates to the demo page, waits until it settles, returns window.__bridgeDemo."""
    session.base_url = base
    page.goto(f"{base}/{query}", wait_until="load", timeout=PAGE_TIMEOUT_MS)
    return settle(page)


def settle(page: Any) -> dict[str, Any]:
    """Waits for the page's done or error state and returns window.__bridgeDemo."""
    page.wait_for_function(SETTLED, timeout=PAGE_TIMEOUT_MS, polling=100)
    return page.evaluate("() => window.__bridgeDemo")


def switch_backend(page: Any, backend: str) -> dict[str, Any]:
    """Picks `backend` in the page's selector and waits for its sample run."""
    page.select_option("#backend", backend)
    page.wait_for_function(f"() => window.__bridgeDemo.timings['{backend}'] !== undefined || "
                           "document.body.dataset.state === 'error'", timeout=PAGE_TIMEOUT_MS, polling=100)
    return settle(page)


def png_bytes(pixels: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of `pixels` (H, W, 3 uint8), written with zlib alone."""
    height, width, _ = pixels.shape
    raw = b"".join(b"\x00" + pixels[row].astype(np.uint8).tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def assert_samples_match(demo: dict[str, Any], conv: Converted, backend: str) -> None:
    """The page's outputs for every bundled sample against PyTorch's, and its own max |Δ| agreeing."""
    atol, rtol = TOLERANCE[backend]
    assert demo["state"] == "done", demo["error"]
    assert demo["backend"] == backend
    assert len(demo["samples"]) == len(conv.reference)
    for got, want in zip(demo["samples"], conv.reference):
        out = got["output_0"]
        values = np.asarray(out["values"], dtype=np.float32).reshape(out["shape"])
        np.testing.assert_allclose(values, want["output_0"], atol=atol, rtol=rtol, err_msg=backend)
        measured = float(np.max(np.abs(values - want["output_0"])))
        assert out["maxAbsDiff"] == pytest.approx(measured, abs=1e-7)
        assert out["within"] is True


# ------------------------------------------------------------------------------------------------ no browser

def _port(name: str, shape: tuple[int | None, ...], dtype: str = "float32", layout: str = "nhwc") -> Port:
    perm = (0, 2, 3, 1) if len(shape) == 4 and layout == "nhwc" else None
    return Port(name=name, torch_shape=shape, dtype=dtype, layout=layout, perm=perm)


PREPROCESSING_CASES = [
    # (port, sample web shape, override, expected (height, width, channels, layout, shape) or None)
    (_port("x", (1, 3, 64, 48)), None, None, (64, 48, 3, "nhwc", [1, 64, 48, 3])),
    (_port("x", (1, 3, 32, 32), layout="nchw"), None, None, (32, 32, 3, "nchw", [1, 3, 32, 32])),
    (_port("x", (1, 1, 28, 28)), None, None, (28, 28, 1, "nhwc", [1, 28, 28, 1])),
    (_port("x", (None, 3, None, None)), (2, 20, 30, 3), None, (20, 30, 3, "nhwc", [1, 20, 30, 3])),
    (_port("x", (1, 3, 8, 8)), None, {"range": [-1, 1], "mean": [0.1, 0.2, 0.3], "std": 0.5},
     (8, 8, 3, "nhwc", [1, 8, 8, 3])),
    (_port("ids", (1, 3, 8, 8), dtype="int64"), None, None, None),    # not float: no picture
    (_port("x", (1, 2, 8, 8)), None, None, None),                     # 2 channels: not a picture
    (_port("x", (1, 3, 8)), None, None, None),                        # 3-D
]


@pytest.mark.parametrize("port, sample_shape, override, expected", PREPROCESSING_CASES)
def test_image_preprocessing_record(port: Port, sample_shape: tuple[int, ...] | None, override: Any,
                                    expected: tuple[Any, ...] | None) -> None:
    sample = np.zeros(sample_shape, np.float32) if sample_shape else None
    record = image_preprocessing(port, sample, override)
    if expected is None:
        assert record is None
        return
    assert record is not None
    assert (record["height"], record["width"], record["channels"], record["layout"], record["shape"]) == expected
    assert record["range"] == (list(map(float, override["range"])) if override else [0.0, 1.0])
    assert f"[{record['range'][0]:g}, {record['range'][1]:g}]" in record["description"]
    if override and "std" in override:
        assert record["std"] == [0.5] * 3 and "divided by the std" in record["description"]


def test_fingerprint_follows_weight_bytes(converted: Converted, tmp_path: Path) -> None:
    """Same model.json and shard size, one weight changed: a different hash (so a different IndexedDB key)."""
    folder = converted.copy(tmp_path / "copy") / "web_model"
    model_json = read_model_json(folder)
    before = model_fingerprint(folder, model_json)
    shard = folder / "group1-shard1of1.bin"
    data = bytearray(shard.read_bytes())
    data[0] ^= 0x01
    shard.write_bytes(bytes(data))
    after = model_fingerprint(folder, model_json)
    assert before["weightBytes"] == after["weightBytes"] == len(data)
    assert before["sha256"] != after["sha256"]


def test_embedded_json_cannot_close_the_script() -> None:
    text = str(embedded_json({"name": "</script><script>alert(1)</script>", "amp": "a&b"}))
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"name": "</script><script>alert(1)</script>", "amp": "a&b"}


def test_written_files(converted: Converted) -> None:
    """Page, the four TF.js files, samples that read back equal to what was given; no network URL in the page."""
    out = converted.out
    from bridge.demo.page import WEBGPU_FILE
    from bridge.runtime.node import node_modules_dir

    webgpu = ["tf-backend-webgpu.min.js"] if (node_modules_dir() / WEBGPU_FILE).is_file() else []
    assert sorted(p.name for p in (out / "tfjs").iterdir()) == sorted(
        ["tf.min.js", "tf.fesm.min.js", "tf-backend-wasm.min.js", "tfjs-backend-wasm.wasm", "tfjs-backend-wasm-simd.wasm",
         *webgpu])
    info = json.loads((out / SAMPLES_JSON).read_text())
    blob = (out / SAMPLES_BIN).read_bytes()
    for written, inputs, reference in zip(info["sets"], converted.samples, converted.reference):
        np.testing.assert_array_equal(read_tensor(blob, TensorRef.from_json(written["inputs"]["x"])), inputs["x"])
        np.testing.assert_array_equal(read_tensor(blob, TensorRef.from_json(written["reference"]["output_0"])),
                                      reference["output_0"])
    html = (out / "index.html").read_text()
    assert "http://" not in html and "https://" not in html


BAD_CALLS: list[tuple[str, Callable[[Converted, Path], Any], type[Exception]]] = [
    ("web model outside the folder", lambda c, t: c.write_page(t / "elsewhere", web_model=c.out / "web_model"),
     UsageError),
    ("no samples", lambda c, t: c.write_page(c.copy(t / "c"), samples=[], reference=[]), UsageError),
    ("fewer reference sets", lambda c, t: c.write_page(c.copy(t / "c"), reference=c.reference[:1]), UsageError),
    ("sample lacks an input", lambda c, t: c.write_page(c.copy(t / "c"), samples=[{}] * 3), UsageError),
    ("preprocessing for an unknown input", lambda c, t: c.write_page(c.copy(t / "c"), preprocessing={"y": {}}),
     UsageError),
    ("std of zero", lambda c, t: c.write_page(c.copy(t / "c"), preprocessing={"x": {"std": 0}}), UsageError),
    ("no model.json", lambda c, t: c.write_page(t, web_model=t), WebModelError),
    ("value range for an unknown input", lambda c, t: c.write_page(c.copy(t / "c"), input_ranges={"y": (0, 9)}),
     UsageError),
    ("not a TF.js model", lambda c, t: c.write_page(_with_format(c.copy(t / "c"), "onnx-model")), WebModelError),
    ("from parity: no parity data", lambda c, t: write_demo_page_from_parity(t), ParityDataError),
    ("from parity: unknown format", lambda c, t: write_demo_page_from_parity(c.copy(t / "c"), model_format="onnx"),
     UsageError),
    ("from parity: no layers model", lambda c, t: write_demo_page_from_parity(c.copy(t / "c"), model_format="layers"),
     WebModelError),
]


def _with_format(out: Path, fmt: str) -> Path:
    """Leaves `out` with a model.json whose format is `fmt`; returns `out` (the page is written there)."""
    path = out / "web_model" / "model.json"
    model = json.loads(path.read_text())
    path.write_text(json.dumps({**model, "format": fmt}))
    return out


EDITOR_CASES = [
    # (port, sample shape, range, expected record fields)
    (_port("ids", (1, 8), "int64", "source"), (1, 8), (0, 99),
     {"kind": "int", "dtype": "int32", "range": [0, 99], "rangeGiven": True, "editable": True}),
    (_port("ids", (1, 8), "int64", "source"), (1, 8), None,
     {"kind": "int", "range": [-2**31, 2**31 - 1], "rangeGiven": False}),
    (_port("ids", (1, 8), "int64", "source"), (1, 8), (-1e12, 1e12), {"range": [-2**31, 2**31 - 1]}),
    (_port("feats", (2, 5), "float64", "source"), (2, 5), None, {"kind": "float", "dtype": "float32", "range": None}),
    (_port("mask", (1, 8), "bool", "source"), (1, 8), None, {"kind": "bool", "dtype": "bool"}),
    (_port("big", (1, 5000), "float32", "source"), (1, 5000), None, {"editable": False}),
]


@pytest.mark.parametrize("port, shape, value_range, expected", EDITOR_CASES)
def test_editor_record(port: Port, shape: tuple[int, ...], value_range: Any, expected: dict[str, Any]) -> None:
    record = editor_record(port, np.zeros(shape, np.float32), value_range)
    assert record["input"] == port.name
    assert {key: record[key] for key in expected} == expected


def test_page_from_parity_data(converted: Converted, tmp_path: Path) -> None:
    """Rebuilt from OUT/parity/ alone, the page holds the same samples and names the graph model."""
    out = converted.copy(tmp_path / "site")
    (out / "index.html").unlink()
    html = write_demo_page_from_parity(out, model_name="again").read_text()
    data = json.loads(html.split('id="bridge-demo-data">')[1].split("</script>")[0])
    assert data["format"] == "graph" and data["model"]["url"] == "web_model/model.json"
    assert data["reference"] == "PyTorch" and data["editors"] == [] and data["training"] is None
    info = json.loads((out / SAMPLES_JSON).read_text())
    blob = (out / SAMPLES_BIN).read_bytes()
    np.testing.assert_array_equal(read_tensor(blob, TensorRef.from_json(info["sets"][0]["inputs"]["x"])),
                                  converted.samples[0]["x"])


@pytest.mark.parametrize("name, call, error", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_calls_raise(converted: Converted, tmp_path: Path, name: str,
                         call: Callable[[Converted, Path], Any], error: type[Exception]) -> None:
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(error):
        call(converted, tmp_path)


def test_missing_tfjs_builds_raise(converted: Converted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_NODE_MODULES", str(tmp_path / "empty"))
    with pytest.raises(MissingDependencyError):
        converted.write_page(converted.copy(tmp_path / "c"))


# ------------------------------------------------------------------------------------------------ in Chromium

@pytest.mark.browser
@needs_browser
def test_page_runs_switches_backend_and_caches(converted: Converted, tmp_path: Path) -> None:
    """Served by `bridge serve`: webgl first, then wasm and cpu picked in the page; a reload uses IndexedDB."""
    picture = tmp_path / "picture.png"
    grid = np.indices((64, 64)).sum(axis=0)
    picture.write_bytes(png_bytes(np.stack([grid * 2, 255 - grid * 2, (grid % 16) * 16], axis=-1)))
    with bridge_server(converted.out) as base, chromium() as (page, session):
        demo = open_page(page, session, base, "?backend=webgl")
        assert demo["source"] == "http", demo
        assert_samples_match(demo, converted, "webgl")
        assert page.locator(".badge.ok").count() == len(converted.reference)
        assert page.locator(".badge.bad").count() == 0
        assert "IndexedDB" in page.locator("#model-source").inner_text()
        assert page.locator("#signature-inputs tbody tr").count() == 1
        assert "[1, 64, 64, 3]" in page.locator("#signature-inputs").inner_text()
        assert "[1, 3, 64, 64]" in page.locator("#signature-inputs").inner_text()
        for backend in ("wasm", "cpu"):
            assert_samples_match(switch_backend(page, backend), converted, backend)
        assert page.locator("#timings tbody tr").count() == 3
        page.reload(wait_until="load")
        demo = settle(page)
        assert demo["source"] == "indexeddb", demo
        assert_samples_match(demo, converted, demo["backend"])
        assert "Loaded from IndexedDB" in page.locator("#model-source").inner_text()
        page.set_input_files("#picture", str(picture))
        page.wait_for_function("() => window.__bridgeDemo.image !== null", timeout=PAGE_TIMEOUT_MS)
        assert settle(page)["state"] == "done"
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert session.blocked == []
    assert [line for line in session.console if "error" in line.lower()] == []


def _picture_input(pixels: np.ndarray, record: dict[str, Any]) -> np.ndarray:
    """What the page must feed the model for an RGB picture already at the input size, in numpy."""
    lo, hi = record["range"]
    x = pixels.astype(np.float32) * np.float32((hi - lo) / 255.0) + np.float32(lo)
    if record["mean"] is not None:
        x = x - np.asarray(record["mean"], np.float32)
    if record["std"] is not None:
        x = x / np.asarray(record["std"], np.float32)
    return x[None]


_RNG = np.random.default_rng(7)
PICTURE_CASES = [
    # (name, pixels (H, W, 3), preprocessing override or None). Pictures not 64x64 are one flat colour, so the
    # browser's resampling cannot change them and the expected tensor is known exactly.
    ("random 64x64, default [0,1]", _RNG.integers(0, 256, (64, 64, 3)), None),
    ("flat 41x97, resized", np.broadcast_to(np.array([200, 30, 120]), (41, 97, 3)), None),
    ("random 64x64, [-1,1] mean/std", _RNG.integers(0, 256, (64, 64, 3)),
     {"range": [-1, 1], "mean": [0.1, -0.2, 0.0], "std": [0.5, 0.25, 2.0]}),
]


@pytest.mark.browser
@needs_browser
@pytest.mark.parametrize("name, pixels, override", PICTURE_CASES, ids=[c[0] for c in PICTURE_CASES])
def test_picture_matches_pytorch(converted: Converted, tmp_path: Path, name: str, pixels: np.ndarray,
                                 override: dict[str, Any] | None) -> None:
    """A picture picked in the page gives PyTorch's logits for the same preprocessing done in numpy."""
    out = converted.copy(tmp_path / "site")
    converted.write_page(out, preprocessing={"x": override} if override else None)
    data = json.loads(str((out / "index.html").read_text()).split('id="bridge-demo-data">')[1].split("</script>")[0])
    record = data["preprocessing"][0]
    picture = tmp_path / "picture.png"
    picture.write_bytes(png_bytes(np.ascontiguousarray(pixels, dtype=np.uint8)))
    at_size = np.broadcast_to(pixels[:1, :1], (64, 64, 3)) if pixels.shape[:2] != (64, 64) else pixels
    expected = converted.torch_outputs(_picture_input(at_size, record))
    with bridge_server(out) as base, chromium() as (page, session):
        assert open_page(page, session, base, "?backend=wasm")["state"] == "done"
        assert record["description"] in page.locator("#picture-card").inner_text()
        page.set_input_files("#picture", str(picture))
        page.wait_for_function("() => window.__bridgeDemo.image !== null", timeout=PAGE_TIMEOUT_MS)
        demo = settle(page)
    assert demo["state"] == "done", demo["error"]
    got = demo["image"]["outputs"]["output_0"]
    np.testing.assert_allclose(np.asarray(got["values"], np.float32).reshape(got["shape"]), expected,
                               atol=PICTURE_ATOL, rtol=0, err_msg=name)


@pytest.mark.browser
@needs_browser
def test_plain_static_server(converted: Converted) -> None:
    """No bridge server features needed: the stdlib's static handler serves a working page, nothing else asked."""
    with static_server(converted.out) as base, chromium() as (page, session):
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        demo = open_page(page, session, base, "?backend=wasm")
        assert_samples_match(demo, converted, "wasm")
    assert session.blocked == []
    assert requested and all(url.startswith(base + "/") for url in requested)
    assert not any("threaded" in url for url in requested)


@dataclass(frozen=True)
class Breakage:
    """A change to a copy of the output folder, and what the page must then show."""

    name: str
    change: Callable[[Converted, Path], None]
    check: Callable[[dict[str, Any], Any], None]


def _wrong_reference(conv: Converted, out: Path) -> None:
    conv.write_page(out, reference=[{"output_0": r["output_0"] + 0.5} for r in conv.reference])


def _flags_wrong_reference(demo: dict[str, Any], page: Any) -> None:
    assert demo["state"] == "done"
    assert all(s["output_0"]["within"] is False for s in demo["samples"])
    assert all(s["output_0"]["maxAbsDiff"] == pytest.approx(0.5, abs=1e-4) for s in demo["samples"])
    assert page.locator(".badge.bad").count() == 3 and "verdict bad" in page.locator("#verdict").get_attribute(
        "class")


def _missing_shard(conv: Converted, out: Path) -> None:
    (out / "web_model" / "group1-shard1of1.bin").unlink()


def _shows_error(demo: dict[str, Any], page: Any) -> None:
    assert demo["state"] == "error" and "loading the model" in demo["error"]
    assert page.locator("#error").is_visible()
    assert "group1-shard1of1.bin" in page.locator("#error-text").inner_text()


BREAKAGES = [Breakage("wrong reference is flagged", _wrong_reference, _flags_wrong_reference),
             Breakage("missing shard ends in error", _missing_shard, _shows_error)]


@pytest.mark.browser
@needs_browser
@pytest.mark.parametrize("case", BREAKAGES, ids=[b.name for b in BREAKAGES])
def test_page_reports_problems(converted: Converted, tmp_path: Path, case: Breakage) -> None:
    out = converted.copy(tmp_path / "site")
    case.change(converted, out)
    with bridge_server(out) as base, chromium() as (page, session):
        case.check(open_page(page, session, base, "?backend=cpu"), page)


def scale_first_float_weight(web_model: Path, factor: float) -> None:
    """Multiplies the first float32 weight in the (single) shard by `factor`; sizes and model.json stay the same."""
    manifest = read_model_json(web_model)["weightsManifest"][0]
    shard = web_model / manifest["paths"][0]
    data = bytearray(shard.read_bytes())
    offset = 0
    for entry in manifest["weights"]:
        count = int(np.prod(entry["shape"], dtype=np.int64))
        if entry["dtype"] == "float32" and "quantization" not in entry:
            values = np.frombuffer(bytes(data[offset:offset + 4 * count]), np.float32) * np.float32(factor)
            data[offset:offset + 4 * count] = values.tobytes()
            shard.write_bytes(bytes(data))
            return
        offset += count * {"float32": 4, "int32": 4, "bool": 1}[entry["dtype"]]
    raise AssertionError("no float32 weight to change")


@pytest.mark.browser
@needs_browser
def test_changed_model_is_not_taken_from_the_cache(converted: Converted, tmp_path: Path) -> None:
    """New weights (same sizes, same model.json) and a regenerated page: the reload downloads the new model,
    drops the stale copy, and its outputs follow the new weights (so they no longer match the old reference)."""
    out = converted.copy(tmp_path / "site")
    with bridge_server(out) as base, chromium() as (page, session):
        assert open_page(page, session, base, "?backend=cpu")["source"] == "http"
        page.reload(wait_until="load")
        first = settle(page)
        assert first["source"] == "indexeddb"
        scale_first_float_weight(out / "web_model", 1.5)
        converted.write_page(out)
        page.reload(wait_until="load")
        demo = settle(page)
        keys = page.evaluate("async () => Object.keys(await tf.io.listModels())")
    assert demo["source"] == "http" and demo["cacheKey"] != first["cacheKey"]
    assert keys == [f"indexeddb://{demo['cacheKey']}"]
    assert any(s["output_0"]["within"] is False for s in demo["samples"])


def test_user_metadata_is_shown_escaped(converted: Converted, tmp_path: Path) -> None:
    """The user's model.json metadata appears in the page, HTML-escaped, and reaches the page data intact."""
    out = converted.copy(tmp_path / "site")
    path = out / "web_model" / "model.json"
    model = json.loads(path.read_text())
    labels = [f"<b>label {i}</b>" for i in range(10)]
    model["userDefinedMetadata"]["labels"] = labels
    path.write_text(json.dumps(model))
    html = converted.write_page(out).read_text()
    assert "&#34;&lt;b&gt;label 0&lt;/b&gt;&#34;" in html
    assert "<b>label 0</b>" not in html
    data = json.loads(html.split('id="bridge-demo-data">')[1].split("</script>")[0])
    assert data["userMetadata"]["labels"] == labels


@pytest.mark.browser
@needs_browser
def test_opened_as_a_file_says_to_serve_it(converted: Converted) -> None:
    """From file:// the browser refuses fetch(): the page must say how to serve it instead of hanging."""
    with chromium() as (page, session):
        session.base_url = "file://"
        page.goto((converted.out / "index.html").as_uri(), wait_until="load", timeout=PAGE_TIMEOUT_MS)
        demo = settle(page)
        assert demo["state"] == "error" and "bridge serve" in demo["error"]
        assert page.locator("#signature-inputs tbody tr").count() == 1  # the static parts still show


@pytest.mark.parametrize("name", ["demo/demo.js.j2", "demo/demo.css.j2"])
def test_script_and_style_are_included_verbatim(name: str) -> None:
    """The page's script and style are Jinja templates only to be packaged: they must render unchanged."""
    from bridge.util.templating import environment, templates_dir

    assert environment().get_template(name).render() == (templates_dir() / name).read_text()


@pytest.mark.parametrize("limit, bundled", [(10**9, 3), (1, 1)])
def test_samples_are_bundled_up_to_a_size(converted: Converted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          limit: int, bundled: int) -> None:
    """Sample sets go into the bin while they fit the limit; the first always does, and the page says so."""
    import bridge.demo.page as demo_page

    monkeypatch.setattr(demo_page, "MAX_SAMPLE_BYTES", limit)
    out = converted.copy(tmp_path / "site")
    html = converted.write_page(out).read_text()
    info = json.loads((out / SAMPLES_JSON).read_text())
    assert len(info["sets"]) == bundled
    assert (f"(of {len(converted.samples)};" in html) == (bundled < len(converted.samples))
