"""The demo page beyond pictures, in real headless Chromium: the input editor of a text model (token ids) and the
train-and-save panel of a layers model.

- A PyTorch text model (nn.Embedding + a small head, ``ids:1x8:int64:0..99``), converted by `bridge.convert`, its
  page rebuilt from the stored parity data (`write_demo_page_from_parity`, which knows the 0..99 range), served by
  `bridge serve`'s server: the editor shows the sample's ids, the unedited run matches PyTorch (< 1e-4, shown in
  the page), edited ids give PyTorch's outputs for the edited ids (computed here) and the page says the reference
  no longer applies; bad edits (count, non-integers, out of range) are refused in the page, not thrown.
  A screenshot is kept in test-results/demo_text_model.png.
- webgpu is offered only where the browser has an adapter: not in the default launch, and with
  `--enable-unsafe-webgpu` (SwiftShader's adapter) it is offered and matches PyTorch.
- A Keras layers model (`bridge tfjs`'s output: model.json at the folder's root): the page trains it, the loss
  falls, and the trained model saved to IndexedDB, localStorage, the upload endpoint and downloads comes back
  bit-identical; the uploaded folder, loaded in Node, predicts what the page's trained model predicted.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.demo.page import write_demo_page_from_parity
from bridge.demo.server import serving
from bridge.runtime import browser as browser_rt

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "test-results" / "demo_text_model.png"
LAYERS_SCREENSHOT = ROOT / "test-results" / "demo_layers_model.png"
SETTLED = "() => ['done', 'error'].includes(document.body.dataset.state)"
TIMEOUT_MS = 120_000
_STATUS = browser_rt.browser_status()
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not _STATUS.ok, reason="; ".join(_STATUS.problems) or "browser ready")]


# ------------------------------------------------------------------------------------------------ fixtures

@dataclass
class TextModel:
    """The converted text model: its output folder, the torch module and the bundled sample ids."""

    out: Path
    module: Any
    samples: list[np.ndarray]

    def torch_logits(self, ids: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.module(torch.from_numpy(ids.astype(np.int64))).numpy()


@pytest.fixture(scope="module")
def text_model(tmp_path_factory: pytest.TempPathFactory) -> TextModel:
    import torch

    import bridge
    from bridge.parity.store import load_parity_data

    class TextNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(100, 16)
            self.head = torch.nn.Sequential(torch.nn.Linear(16, 12), torch.nn.Tanh(), torch.nn.Linear(12, 4))

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.head(self.embed(ids).mean(dim=1))

    torch.manual_seed(0)
    module = TextNet().eval()
    out = tmp_path_factory.mktemp("demo-text") / "text"
    result = bridge.convert(module, ["ids:1x8:int64:0..99"], out, browser=False, node_backends=("wasm",))
    assert result.ok, [(s.name, s.status, s.reason) for s in result.stages]
    write_demo_page_from_parity(out)
    samples = [s["ids"] for s in load_parity_data(out).samples]
    return TextModel(out=out, module=module, samples=samples)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    """One Playwright driver for the module (the sync API allows one at a time)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        yield driver


@contextmanager
def chromium(playwright: Any, extra_args: tuple[str, ...] = ()) -> Iterator[tuple[Any, browser_rt._Session]]:
    """A fresh headless Chromium context (the harness's launch, `extra_args` added); requests off the local
    server are refused and recorded in the session."""
    status = browser_rt.require_browser()
    assert status.launch_path is not None
    session = browser_rt._Session(base_url="")
    with tempfile.TemporaryDirectory(prefix="bridge-browser-demo-") as tmp:
        context = browser_rt._launch(playwright, status.launch_path, Path(tmp), browser_rt._Deadline(120),
                                     accept_downloads=True, extra_args=extra_args)
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


@pytest.fixture(scope="module")
def browser(playwright: Any) -> Iterator[tuple[Any, browser_rt._Session]]:
    """One Chromium for the module (the default launch: no WebGPU adapter)."""
    with chromium(playwright) as pair:
        yield pair


def open_page(page: Any, session: browser_rt._Session, base: str, query: str = "") -> dict[str, Any]:
    session.base_url = base
    page.goto(f"{base}/{query}", wait_until="load", timeout=TIMEOUT_MS)
    return settle(page)


def settle(page: Any) -> dict[str, Any]:
    page.wait_for_function(SETTLED, timeout=TIMEOUT_MS, polling=100)
    return page.evaluate("() => window.__bridgeDemo")


def click_and_settle(page: Any, selector: str, changed: str) -> dict[str, Any]:
    """Clicks `selector` and waits until the JS condition `changed` holds and the page is settled again."""
    page.click(selector)
    page.wait_for_function(f"() => ({changed}) || document.body.dataset.state === 'error'", timeout=30_000,
                           polling=100)
    return settle(page)


def editor_values(demo: dict[str, Any], name: str = "output_0") -> np.ndarray:
    out = demo["editor"]["outputs"][name]
    return np.asarray(out["values"], np.float32).reshape(out["shape"])


def ids_text(ids: np.ndarray) -> str:
    return ", ".join(str(int(v)) for v in ids.reshape(-1))


# ------------------------------------------------------------------------------------------------ text model

def test_written_page_knows_the_text_input(text_model: TextModel) -> None:
    html = (text_model.out / "index.html").read_text()
    data = json.loads(html.split('id="bridge-demo-data">')[1].split("</script>")[0])
    assert data["format"] == "graph" and data["preprocessing"] == []
    assert data["editors"] == [{"input": "ids", "dtype": "int32", "kind": "int", "range": [0, 99],
                                "editable": True, "maxValues": 4096, "rangeGiven": True}]
    assert 'id="editor-card"' in html and 'id="train-card"' not in html
    assert (text_model.out / "tfjs" / "tf-backend-webgpu.min.js").is_file() == data["webgpu"]


def test_edit_token_ids_and_run(text_model: TextModel, browser: tuple[Any, browser_rt._Session]) -> None:
    page, session = browser
    with serving(text_model.out) as base:
        demo = open_page(page, session, base, "?backend=wasm")
        assert demo["state"] == "done", demo["error"]
        # The editor starts from sample set 1, unedited, compared with PyTorch in the page.
        area = page.locator("#editors textarea")
        assert area.input_value() == ids_text(text_model.samples[0])
        assert "int32 [1, 8] · 8 value(s) · integers in 0..99" in page.locator("#editors").inner_text()
        assert demo["editor"]["edited"] is False
        shown = float(page.locator("#edit-outputs .badge").first.get_attribute("data-max-abs"))
        assert shown < 1e-4
        unedited = editor_values(demo)
        np.testing.assert_allclose(unedited, text_model.torch_logits(text_model.samples[0]), atol=1e-5, rtol=1e-4)
        assert shown == pytest.approx(float(np.max(np.abs(unedited - text_model.torch_logits(text_model.samples[0])))),
                                      abs=1e-7)
        # Edited ids: the page's outputs are PyTorch's for the edited ids, and no difference is claimed.
        edited_ids = np.array([[5, 17, 99, 0, 42, 42, 63, 8]], np.int64)
        area.fill("5 17 99 0\n42, 42, [63], 8")
        demo = click_and_settle(page, "#edit-run", "window.__bridgeDemo.editor.edited === true")
        assert demo["editor"]["inputs"]["ids"] == edited_ids.reshape(-1).tolist()
        got = editor_values(demo)
        np.testing.assert_allclose(got, text_model.torch_logits(edited_ids), atol=1e-5, rtol=1e-4)
        assert not np.allclose(got, unedited, atol=1e-3)
        assert demo["editor"]["outputs"]["output_0"]["maxAbsDiff"] is None
        assert "no longer applies" in page.locator("#edit-outputs").inner_text()
        assert "no difference is computed" in page.locator("#edit-message").inner_text()
        page.locator("#editor-card").scroll_into_view_if_needed()
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        # Another sample set, unedited again: compared with PyTorch once more.
        page.select_option("#edit-set", "1")
        page.wait_for_function("() => window.__bridgeDemo.editor.setIndex === 1", timeout=TIMEOUT_MS)
        demo = settle(page)
        assert demo["editor"]["edited"] is False
        np.testing.assert_allclose(editor_values(demo), text_model.torch_logits(text_model.samples[1]), atol=1e-5,
                                   rtol=1e-4)
        assert demo["editor"]["outputs"]["output_0"]["maxAbsDiff"] < 1e-4
    assert session.blocked == []


BAD_EDITS = [
    ("too few", "1, 2, 3", "3 value(s) given, 8 needed for shape [1, 8]"),
    ("too many", " ".join(["1"] * 9), "9 value(s) given, 8 needed for shape [1, 8]"),
    ("not an integer", "1 2 3 4 5 6 7 1.5", "value 8: '1.5' is not an integer"),
    ("a word", "1 2 three 4 5 6 7 8", "value 3: 'three' is not an integer"),
    ("out of range", "1 2 3 4 5 6 7 100", "value 8: 100 is outside 0..99 (the range given at conversion)"),
    ("negative", "-1 2 3 4 5 6 7 8", "value 1: -1 is outside 0..99 (the range given at conversion)"),
]


def test_bad_edits_are_refused_in_the_page(text_model: TextModel, browser: tuple[Any, browser_rt._Session]) -> None:
    page, session = browser
    with serving(text_model.out) as base:
        before = open_page(page, session, base, "?backend=cpu")["editor"]["outputs"]
        for name, text, says in BAD_EDITS:
            page.fill("#editors textarea", text)
            demo = click_and_settle(page, "#edit-run", "window.__bridgeDemo.editor.state === 'invalid' && "
                                    f"window.__bridgeDemo.editor.errors[0] === {json.dumps('ids: ' + says)}")
            assert demo["state"] == "done" and demo["error"] is None, name
            assert demo["editor"]["errors"] == [f"ids: {says}"], name
            assert says in page.locator("#edit-message").inner_text(), name
            assert "invalid" in (page.locator("#editors textarea").get_attribute("class") or ""), name
            assert page.locator("#error").is_hidden(), name
            # The outputs shown are still those of the last good run.
            assert page.evaluate("() => window.__bridgeDemo.editor.outputs") is None
            assert page.locator("#edit-outputs .output").count() == 1, name
        page.click("#edit-reset")
        page.wait_for_function("() => window.__bridgeDemo.editor.state === 'done'", timeout=TIMEOUT_MS)
        assert settle(page)["editor"]["outputs"] == before
    assert [line for line in session.console if "error" in line.lower()] == []


def test_webgpu_offered_only_with_an_adapter(text_model: TextModel, browser: tuple[Any, browser_rt._Session]) -> None:
    """The default launch has no WebGPU adapter: not offered, and the page says why."""
    page, session = browser
    with serving(text_model.out) as base:
        demo = open_page(page, session, base, "?backend=webgpu")
    assert demo["state"] == "done" and demo["backend"] == "webgl"
    assert demo["webgpu"]["offered"] is False and demo["webgpu"]["reason"]
    assert "webgpu" not in demo["backends"]
    assert page.locator("#backend option[value=webgpu]").count() == 0


def test_webgpu_runs_where_an_adapter_exists(text_model: TextModel, playwright: Any) -> None:
    """With --enable-unsafe-webgpu headless Chromium has SwiftShader's adapter: webgpu is offered and matches."""
    if not (text_model.out / "tfjs" / "tf-backend-webgpu.min.js").is_file():
        pytest.skip("@tensorflow/tfjs-backend-webgpu is not installed")
    with chromium(playwright, ("--enable-unsafe-webgpu",)) as (page, session), serving(text_model.out) as base:
        demo = open_page(page, session, base, "?backend=webgpu")
        if not demo["webgpu"]["offered"]:
            pytest.skip(f"no WebGPU adapter in this Chromium: {demo['webgpu']['reason']}")
    assert demo["state"] == "done" and demo["backend"] == "webgpu", demo["error"]
    for got, ids in zip(demo["samples"], text_model.samples):
        values = np.asarray(got["output_0"]["values"], np.float32).reshape(got["output_0"]["shape"])
        np.testing.assert_allclose(values, text_model.torch_logits(ids), atol=1e-4, rtol=1e-3)


# ------------------------------------------------------------------------------------------------ layers model

UPLOAD_TOKEN = "demo-token"


@dataclass
class LayersSite:
    """A `bridge tfjs` layers output (model.json at the root) with its demo page, and where uploads go."""

    out: Path
    uploads: Path
    samples: list[dict[str, np.ndarray]]
    reference: list[dict[str, np.ndarray]]


@pytest.fixture(scope="module")
def layers_site(tmp_path_factory: pytest.TempPathFactory) -> LayersSite:
    import tf_keras as keras

    from bridge.options import ConvertOptions
    from bridge.parity.store import load_parity_data
    from bridge.tf_pipeline import convert_tf

    root = tmp_path_factory.mktemp("demo-layers")
    keras.utils.set_random_seed(1)
    ids = keras.Input((8,), dtype="int32", name="ids")
    x = keras.layers.Embedding(50, 8, name="embed")(ids)
    x = keras.layers.GlobalAveragePooling1D()(x)
    x = keras.layers.Dense(6, activation="tanh", name="hidden")(x)
    keras.Model(ids, keras.layers.Dense(3, name="logits")(x)).save(root / "text.h5")
    out = root / "web"
    result = convert_tf(root / "text.h5", out, options=ConvertOptions(browser=False, node_backends=("cpu",)))
    assert result.ok, [(s.name, s.status, s.reason) for s in result.stages]
    assert (out / "model.json").is_file() and (out / "index.html").exists()  # bridge tfjs writes the page
    write_demo_page_from_parity(out)  # and it can be written again from the folder alone
    stored = load_parity_data(out)
    return LayersSite(out=out, uploads=root / "uploads", samples=stored.samples, reference=stored.reference)


def _sample_outputs(demo: dict[str, Any], index: int) -> np.ndarray:
    out = demo["samples"][index]["logits"]
    return np.asarray(out["values"], np.float32).reshape(out["shape"])


def test_layers_page_trains_and_saves_everywhere(layers_site: LayersSite, browser: tuple[Any, browser_rt._Session]
                                                 ) -> None:
    from bridge.runtime.node import node_status, run_layers_model

    page, session = browser
    downloads: list[Any] = []
    page.on("download", lambda download: downloads.append(download))
    with serving(layers_site.out, accept_uploads=layers_site.uploads, token=UPLOAD_TOKEN) as base:
        demo = open_page(page, session, base, f"?backend=cpu&token={UPLOAD_TOKEN}")
        assert demo["state"] == "done" and demo["format"] == "layers", demo["error"]
        assert "tf.loadLayersModel" in page.locator("#model-card").inner_text()
        assert "Sample inputs vs TensorFlow" in page.locator("#run-card").inner_text()
        for index, want in enumerate(layers_site.reference):
            np.testing.assert_allclose(_sample_outputs(demo, index), want["logits"], atol=1e-5, rtol=1e-4)
        assert page.locator("#save-scheme option[value=upload]").is_enabled()
        assert page.locator("#save-token").input_value() == UPLOAD_TOKEN

        # A target that is not a number: refused in the page, nothing trained.
        page.locator("#targets-box summary").click()
        page.fill("#target-editors textarea", "0.5, x, 1, 0, 0, 0")
        demo = click_and_settle(page, "#train-run", "(window.__bridgeDemo.training || {}).state === 'invalid'")
        assert "'x' is not a finite number" in demo["training"]["error"]
        page.click("#edit-reset")
        page.wait_for_function("() => window.__bridgeDemo.editor.state === 'done'", timeout=TIMEOUT_MS)

        # The reference outputs are what the model already gives (loss ~0): teach it other targets for set 1.
        page.fill("#target-editors textarea", "1, 0, 0\n0, 1, 0")
        page.fill("#train-epochs", "4")
        page.fill("#train-lr", "0.05")
        demo = click_and_settle(page, "#train-run", "(window.__bridgeDemo.training || {}).state === 'done'")
        training = demo["training"]
        assert training["epochs"] == 4 and len(training["losses"]) == 4
        assert training["samples"] == sum(len(s["ids"]) for s in layers_site.samples)
        assert training["edited"] is True and training["losses"][-1] < training["losses"][0]
        assert page.locator("#train-loss-table tbody tr").count() == 4

        demo = click_and_settle(page, "#edit-run", "window.__bridgeDemo.editor.outputs.logits.maxAbsDiff === null")
        trained = editor_values(demo, "logits")
        assert not np.allclose(trained, layers_site.reference[0]["logits"], atol=1e-4)
        assert "trained model: no reference" in page.locator("#edit-outputs").inner_text()

        saved: dict[str, dict[str, Any]] = {}
        for scheme in ("indexeddb", "localstorage", "upload", "downloads"):
            page.select_option("#save-scheme", scheme)
            demo = click_and_settle(page, "#save-run", f"(window.__bridgeDemo.saved || {{}}).scheme === '{scheme}'")
            saved[scheme] = demo["saved"]
            assert demo["saved"]["ok"] and demo["saved"]["trained"], demo["saved"]
            assert demo["saved"]["identical"] is (None if scheme == "downloads" else True), scheme
        page.select_option("#save-scheme", "upload")
        demo = click_and_settle(page, "#save-run", "window.__bridgeDemo.saved.answer !== null && "
                                f"window.__bridgeDemo.saved.answer.id !== {json.dumps(saved['upload']['answer']['id'])}")
        assert "bit-identical" in page.locator("#save-message").inner_text()
        page.screenshot(path=str(LAYERS_SCREENSHOT), full_page=True)
        page.wait_for_timeout(200)
        keys = page.evaluate("async () => Object.keys(await tf.io.listModels())")
        assert "indexeddb://bridge-trained-text.h5" in keys

        # Back to the converted weights: the samples match the reference again.
        demo = click_and_settle(page, "#train-reset", "window.__bridgeDemo.training === null")
        np.testing.assert_allclose(_sample_outputs(demo, 0), layers_site.reference[0]["logits"], atol=1e-5, rtol=1e-4)

        # TF.js 4.22's wasm backend has no embedding gradient: the page says so instead of failing.
        page.select_option("#backend", "wasm")
        page.wait_for_function("() => window.__bridgeDemo.backend === 'wasm'", timeout=TIMEOUT_MS)
        settle(page)
        demo = click_and_settle(page, "#train-run", "['done', 'error'].includes((window.__bridgeDemo.training || "
                                                    "{}).state)")
        assert demo["state"] == "done" and demo["error"] is None
        assert demo["training"]["state"] == "error" and demo["training"]["backend"] == "wasm"
        assert "pick cpu or webgl" in page.locator("#train-message").inner_text()
    assert session.blocked == []

    answer = saved["upload"]["answer"]
    folder = layers_site.uploads / answer["id"]
    assert len(list(layers_site.uploads.iterdir())) == 2  # the second upload: a new folder, the first kept
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.weights.bin"]
    assert json.loads((folder / "model.json").read_text())["format"] == "layers-model"
    names = sorted(Path(d.suggested_filename).name for d in downloads)
    assert names == ["text.h5-trained.json", "text.h5-trained.weights.bin"]
    weights = next(d for d in downloads if d.suggested_filename.endswith(".bin"))
    assert Path(weights.path()).read_bytes() == (folder / "model.weights.bin").read_bytes()
    if node_status().ok:
        runs = run_layers_model(folder, [layers_site.samples[0]], backends=("cpu",))
        np.testing.assert_allclose(runs["cpu"].outputs[0]["logits"], trained, rtol=0, atol=1e-6)


def test_layers_page_without_uploads(layers_site: LayersSite, browser: tuple[Any, browser_rt._Session]) -> None:
    """Served without --accept-uploads: the upload choice stays off, the other schemes are there."""
    page, session = browser
    with serving(layers_site.out) as base:
        demo = open_page(page, session, base, "?backend=cpu")
    assert demo["state"] == "done" and demo["uploads"] is None
    assert page.locator("#save-scheme option[value=upload]").is_disabled()
    assert page.locator("#save-scheme option:not([disabled])").count() == 3
