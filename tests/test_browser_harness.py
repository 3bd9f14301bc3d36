"""The browser harness (bridge.runtime.browser + bridge/js/browser_runner.mjs) in real headless Chromium.

Tiny hand-written graph models (the builders of test_node_harness.py) run on webgl and wasm and are compared with
numpy. Tolerances: wasm runs float32 kernels on the CPU like the Node runner, so atol 1e-6 / rtol 1e-6. webgl runs on
SwiftShader (a CPU implementation of the GPU) through GLSL shaders: float32 textures, but a different summation order
in MatMul, `exp`/`tanh`/`sigmoid` built from GLSL's approximate built-ins, and packed (vec4) arithmetic, so it is
compared at atol 1e-4 / rtol 1e-4. The error measured here is <= 5e-7, but the bound must also hold for GPUs whose
float32 is less exact than SwiftShader's and for longer reductions. Integer and bool outputs must match exactly
everywhere; the IndexedDB copy must give bit-identical outputs to the http-loaded model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.errors import MissingDependencyError, RuntimeStageError, UsageError
from bridge.runtime import browser as browser_rt
from bridge.runtime.browser import BrowserRun, browser_status, run_in_browser
from bridge.runtime.node import BackendRun
from bridge.runtime.tensor_io import to_js_array
from test_node_harness import (TinyModel, _drop_shard, _escape_folder, _no_model_json, _op, _placeholder,
                               _truncate_shard, assert_broken_folder_fails_fast, dense_no_signature, dense_relu,
                               einsum, int_bool, where_positive)

TOLERANCE = {"webgl": 1e-4, "wasm": 1e-6, "cpu": 1e-6}
PROCESS_MARKER = "bridge-browser-"
_STATUS = browser_status()
needs_browser = pytest.mark.skipif(not _STATUS.ok, reason="; ".join(_STATUS.problems) or "browser ready")
pytestmark = pytest.mark.browser


def activations() -> TinyModel:
    """y = tanh(x) * sigmoid(x) + exp(-x^2): the GLSL transcendental built-ins webgl approximates."""
    ft = {"T": {"type": "DT_FLOAT"}}
    return TinyModel(
        nodes=[_placeholder("x", "float32", (-1, 8)),
               _op("t", "Tanh", ["x"], **ft), _op("s", "Sigmoid", ["x"], **ft), _op("ts", "Mul", ["t", "s"], **ft),
               _op("sq", "Square", ["x"], **ft), _op("nsq", "Neg", ["sq"], **ft), _op("e", "Exp", ["nsq"], **ft),
               _op("y", "AddV2", ["ts", "e"], **ft)],
        weights={}, inputs={"x": ("x:0", "float32", (-1, 8))}, outputs={"y": ("y:0", "float32", (-1, 8))},
        reference=lambda x: {"y": (np.tanh(x.astype(np.float64)) / (1 + np.exp(-x.astype(np.float64)))
                                   + np.exp(-np.square(x.astype(np.float64)))).astype(np.float32)})


_TEMP_ROOT: list[str] = []  # this module's own temp folder: other bridge runs on the machine have other profiles


def _no_leftover_chromium() -> list[str]:
    """Command lines of Chromium processes this module's harness runs started (their profile lives in a
    bridge-browser- dir inside the module's own temp folder, so a conversion running beside the tests is not
    counted)."""
    marker = os.path.join(_TEMP_ROOT[0], PROCESS_MARKER) if _TEMP_ROOT else PROCESS_MARKER
    listing = subprocess.run(["ps", "-eww", "-o", "pid=,args="], capture_output=True, text=True, check=True).stdout
    return [line for line in listing.splitlines() if marker in line and "chrom" in line.lower()]


@pytest.fixture(scope="module", autouse=True)
def _chromium_is_gone_afterwards(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The module's temp files (Chromium profiles included) go to its own folder, also for the subprocesses it
    starts; after every test of this module, no Chromium started by the harness may be left running."""
    root = str(tmp_path_factory.mktemp("harness-temp"))
    saved_dir, saved_env = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir, os.environ["TMPDIR"] = root, root
    _TEMP_ROOT.append(root)
    try:
        yield
        assert _no_leftover_chromium() == []
    finally:
        _TEMP_ROOT.clear()
        tempfile.tempdir = saved_dir
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env


def _assert_matches(run: BackendRun, expected: list[dict[str, np.ndarray]]) -> None:
    assert run.error is None, run.error
    assert len(run.outputs) == len(expected)
    tol = TOLERANCE[run.backend]
    for got, want in zip(run.outputs, expected):
        assert list(got) == list(want), "outputs must come keyed and ordered as in the signature"
        for key, value in want.items():
            assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
            if value.dtype.kind == "f":
                np.testing.assert_allclose(got[key], value, atol=tol, rtol=tol, err_msg=f"{run.backend}/{key}")
            else:
                np.testing.assert_array_equal(got[key], value, err_msg=f"{run.backend}/{key}")


def _assert_identical(got: list[dict[str, np.ndarray]], want: list[dict[str, np.ndarray]]) -> None:
    assert len(got) == len(want) and all(list(g) == list(w) for g, w in zip(got, want))
    for g, w in zip(got, want):
        for key in w:
            assert g[key].dtype == w[key].dtype and g[key].tobytes() == w[key].tobytes(), key


RNG = np.random.default_rng(0)
CASES: dict[str, tuple[Callable[[], TinyModel], list[dict[str, np.ndarray]], bool]] = {
    "dense_relu": (dense_relu, [{"x": RNG.standard_normal((4, 3)).astype(np.float32)}], False),
    "dense_no_signature": (dense_no_signature, [{"x": RNG.standard_normal((2, 3))}], False),
    "activations": (activations, [{"x": RNG.uniform(-4, 4, (3, 8)).astype(np.float32)}], False),
    "int_bool_from_int64": (int_bool, [{"a": np.array([1, -2, 3, 40000]), "m": np.array([True, False, True, False])}],
                            False),
    "where_needs_async": (where_positive, [{"x": np.array([0.5, -1.0, 0.0, 2.0], dtype=np.float32)}], True),
}


@needs_browser
@pytest.mark.parametrize("case", sorted(CASES))
def test_outputs_match_numpy(tmp_path: Path, case: str) -> None:
    """webgl and wasm reproduce numpy (at their tolerances); the IndexedDB copy gives bit-identical outputs."""
    build, input_sets, wants_async = CASES[case]
    model = build()
    run = run_in_browser(model.write(tmp_path / case), input_sets, warmup=0, repeats=1)
    assert list(run.backends) == ["webgl", "wasm"]
    expected = [model.reference(**{k: to_js_array(v, k) for k, v in s.items()}) for s in input_sets]
    for backend in run.backends.values():
        _assert_matches(backend, expected)
        assert backend.used_async is wants_async, backend.async_reason
        assert backend.tensors_leaked == 0 and len(backend.infer_ms) == 1
    assert run.indexeddb is not None and run.indexeddb.ok and run.indexeddb.backend == "webgl", run.indexeddb
    _assert_identical(run.indexeddb.outputs, run.backends["webgl"].outputs)
    assert run.blocked == []


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[BrowserRun, list[dict[str, np.ndarray]]]:
    """One browser session shared by several checks: wasm first, three input sets, a fetched node, timing."""
    sets = [{"x": RNG.standard_normal((n, 3))} for n in (1, 2, 5)]
    folder = dense_relu().write(tmp_path_factory.mktemp("dense") / "web_model")
    run = run_in_browser(folder.parent, sets, backends=("wasm", "webgl"), fetch=["dense/MatMul"], warmup=1,
                         repeats=3)
    return run, sets


@needs_browser
def test_several_sets_fetch_timing_and_flags(dense_run: tuple[BrowserRun, list[dict[str, np.ndarray]]]) -> None:
    """Input sets of batch 1, 2, 5, a fetched intermediate, 3 timed repeats; backend facts are reported."""
    run, sets = dense_run
    model = dense_relu()
    for backend in run.backends.values():
        _assert_matches(backend, [model.reference(to_js_array(s["x"], "x")) for s in sets])
        assert len(backend.infer_ms) == 3 and backend.load_ms >= 0
        for fetched, s in zip(backend.fetched, sets):
            want = (to_js_array(s["x"], "x").astype(np.float64) @ model.weights["w"]).astype(np.float32)
            tol = TOLERANCE[backend.backend]
            np.testing.assert_allclose(fetched["dense/MatMul"], want, atol=tol, rtol=tol)
    assert run.backends["wasm"].flags == {"simd": True, "threads": False}
    assert run.backends["webgl"].flags["render_float32"] is True, "webgl would fall back to float16 textures"
    assert run.versions["tfjs"] == "4.22.0" and run.versions["tfjs_backend_wasm"] == "4.22.0"
    assert run.chromium_version and "Chromium" in run.chromium_version


@needs_browser
def test_indexeddb_round_trip_is_identical(dense_run: tuple[BrowserRun, list[dict[str, np.ndarray]]]) -> None:
    """The model saved to and loaded from IndexedDB runs on the first backend (wasm) with identical outputs."""
    run, _ = dense_run
    trip = run.indexeddb
    assert trip is not None and trip.ok and trip.backend == "wasm" and trip.key.startswith("indexeddb://bridge-")
    assert trip.save_ms is not None and trip.load_ms is not None
    _assert_identical(trip.outputs, run.backends["wasm"].outputs)
    _assert_identical(trip.fetched, run.backends["wasm"].fetched)


@needs_browser
def test_identity_check_can_fail(dense_run: tuple[BrowserRun, list[dict[str, np.ndarray]]]) -> None:
    """The checks can fail: one ulp in the IndexedDB outputs, or a bias off by 1e-4 on wasm, is caught."""
    run, sets = dense_run
    assert run.indexeddb is not None
    nudged = [{k: np.nextafter(v, np.float32(np.inf)) for k, v in s.items()} for s in run.indexeddb.outputs]
    with pytest.raises(AssertionError):
        _assert_identical(nudged, run.backends["wasm"].outputs)
    x = to_js_array(sets[0]["x"], "x")
    wrong = [{"y": np.maximum(x @ dense_relu().weights["w"] + dense_relu().weights["b"] + 1e-4, 0)}]
    first_only = dataclasses.replace(run.backends["wasm"], outputs=run.backends["wasm"].outputs[:1])
    with pytest.raises(AssertionError):
        _assert_matches(first_only, wrong)


@needs_browser
def test_overhead_is_measured(dense_run: tuple[BrowserRun, list[dict[str, np.ndarray]]]) -> None:
    """Per-call fixed cost (driver, launch, page + TF.js load, close) is recorded and printed (pytest -s)."""
    run, _ = dense_run
    for key in ("driver", "launch", "ready", "http_load", "page_total", "close", "total"):
        assert run.timings[key] > 0, key
    fixed = run.timings["driver"] + run.timings["launch"] + run.timings["ready"] + run.timings["close"]
    assert run.overhead_ms == pytest.approx(fixed) and run.overhead_ms < run.timings["total"]
    print("\nbrowser timings (ms):", {k: round(v, 1) for k, v in run.timings.items()},
          "overhead", round(run.overhead_ms, 1))


@needs_browser
def test_one_backend_failing_leaves_the_other(tmp_path: Path) -> None:
    """Einsum has no wasm kernel: wasm records the error, webgl computes it, IndexedDB falls to webgl."""
    model = einsum()
    x = RNG.standard_normal((2, 3)).astype(np.float32)
    run = run_in_browser(model.write(tmp_path / "m"), [{"x": x}], backends=("wasm", "webgl"), repeats=1)
    assert run.backends["wasm"].error is not None and "Einsum" in run.backends["wasm"].error
    _assert_matches(run.backends["webgl"], [model.reference(x)])
    assert run.indexeddb is not None and run.indexeddb.backend == "webgl"
    _assert_identical(run.indexeddb.outputs, run.backends["webgl"].outputs)


def _corrupt_json(folder: Path) -> None:
    (folder / "model.json").write_text(json.dumps({"format": "layers-model", "modelTopology": {}}))


BROKEN_FOLDERS = {
    "truncated_shard": (_truncate_shard, "bytes"), "missing_shard": (_drop_shard, "group1-shard1of1.bin: HTTP 404"),
    "shard_outside_folder": (_escape_folder, "outside"), "no_model_json": (_no_model_json, "model.json"),
    "not_a_graph_model": (_corrupt_json, "graph model"),
}


@needs_browser
@pytest.mark.parametrize("case", sorted(BROKEN_FOLDERS))
def test_broken_model_folder_raises(tmp_path: Path, case: str) -> None:
    """A bad folder is a WebModelError with stage browser, raised quickly instead of hanging."""
    assert_broken_folder_fails_fast(run_in_browser, tmp_path, *BROKEN_FOLDERS[case], stage="browser")


@needs_browser
def test_tfjs_failing_to_load_in_the_page_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """If the page cannot load tf.min.js (status check bypassed), the run stops at once with the script named."""
    monkeypatch.setattr(browser_rt, "require_browser", lambda: _STATUS)
    monkeypatch.setenv("BRIDGE_NODE_MODULES", str(tmp_path / "empty"))
    started = time.monotonic()
    with pytest.raises(MissingDependencyError) as info:
        run_in_browser(dense_relu().write(tmp_path / "m"), [{"x": np.zeros((1, 3), np.float32)}], timeout_s=60)
    assert info.value.stage == "browser" and "tfjs/tf.min.js" in info.value.message
    assert time.monotonic() - started < 30


TIMEOUTS: dict[str, tuple[float, int, str]] = {
    "during_launch": (0.2, 1, "launch"),
    "during_run": (6.0, 10**8, "page"),
}


@needs_browser
@pytest.mark.parametrize("case", sorted(TIMEOUTS))
def test_timeout_stops_chromium(tmp_path: Path, case: str) -> None:
    """Running out of time at launch or mid-run is a RuntimeStageError, and Chromium is gone right after."""
    timeout_s, repeats, step = TIMEOUTS[case]
    started = time.monotonic()
    with pytest.raises(RuntimeStageError) as info:
        run_in_browser(dense_relu().write(tmp_path / "m"), [{"x": np.zeros((1, 3), np.float32)}],
                       backends=("wasm",), repeats=repeats, indexeddb_roundtrip=False, timeout_s=timeout_s)
    assert info.value.stage == "browser" and f"{timeout_s:g} s" in str(info.value) and step in str(info.value)
    assert time.monotonic() - started < timeout_s + 15
    assert _no_leftover_chromium() == []


@needs_browser
def test_keyboard_interrupt_stops_chromium(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while the page runs propagates as KeyboardInterrupt and leaves no Chromium behind."""
    def interrupted(page: Any, session: Any, deadline: Any) -> dict[str, Any]:
        page.goto(session.base_url + "/index.html")
        raise KeyboardInterrupt

    monkeypatch.setattr(browser_rt, "_wait_for_result", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_in_browser(dense_relu().write(tmp_path / "m"), [{"x": np.zeros((1, 3), np.float32)}], timeout_s=60)
    assert _no_leftover_chromium() == []


_SIGINT_SCRIPT = """
import sys, numpy as np
from bridge.runtime.browser import run_in_browser
print("started", flush=True)
run_in_browser(sys.argv[1], [{"x": np.zeros((1, 3), np.float32)}], backends=("wasm",), repeats=10**8, timeout_s=120)
"""


@needs_browser
def test_real_sigint_stops_chromium(tmp_path: Path) -> None:
    """A real SIGINT to the process group (the terminal's Ctrl-C) ends the run and every Chromium process."""
    folder = dense_relu().write(tmp_path / "m")
    proc = subprocess.Popen([sys.executable, "-c", _SIGINT_SCRIPT, str(folder)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True, cwd=Path(__file__).parent.parent)
    try:
        deadline = time.monotonic() + 60
        while not _no_leftover_chromium() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _no_leftover_chromium(), "Chromium never started"
        time.sleep(1.5)  # let the page get into its timing loop
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert b"KeyboardInterrupt" in stderr and proc.returncode != 0
    time.sleep(0.5)
    assert _no_leftover_chromium() == []


class _FakeRequest:
    def __init__(self, url: str) -> None:
        self.url = url


class _FakeRoute:
    def __init__(self, url: str) -> None:
        self.request = _FakeRequest(url)
        self.outcome = ""

    def continue_(self) -> None:
        self.outcome = "continue"

    def abort(self, reason: str) -> None:
        self.outcome = f"abort:{reason}"


ROUTES = {
    "served_file": ("http://127.0.0.1:4000/web_model/model.json", "continue"),
    "other_local_port": ("http://127.0.0.1:4001/x", "abort:blockedbyclient"),
    "prefix_trick": ("http://127.0.0.1:40000/x", "abort:blockedbyclient"),
    "remote_host": ("https://remote.invalid/tf.min.js", "abort:blockedbyclient"),
}


@pytest.mark.parametrize("case", sorted(ROUTES))
def test_only_the_local_server_is_reachable(case: str) -> None:
    """The request filter lets the served folder through and aborts (and records) anything else."""
    url, outcome = ROUTES[case]
    session = browser_rt._Session(base_url="http://127.0.0.1:4000")
    route = _FakeRoute(url)
    browser_rt._route(session, route)
    assert route.outcome == outcome
    assert session.blocked == ([] if outcome == "continue" else [url])


@needs_browser
def test_page_requests_elsewhere_are_blocked(tmp_path: Path) -> None:
    """In real Chromium a page fetch to another host fails and is listed in `blocked`."""
    site, scratch = tmp_path / "site", tmp_path / f"{PROCESS_MARKER}scratch"
    site.mkdir()
    scratch.mkdir()
    (site / "index.html").write_text(
        "<script>fetch('http://192.0.2.1/probe.json').then(() => window.__bridgeResult = {reached: true},"
        " (e) => window.__bridgeResult = {reached: false})</script>")
    with browser_rt.serving(site) as base_url:
        session = browser_rt._Session(base_url=base_url)
        result = browser_rt._run_session(str(_STATUS.launch_path), session, scratch, browser_rt._Deadline(60))
    assert result == {"reached": False} and session.blocked == ["http://192.0.2.1/probe.json"]


BAD_REQUESTS: dict[str, dict[str, Any]] = {
    "unknown_backend": {"backends": ("gpu",)},  # webgpu is a backend now (browser-webgpu)
    "repeated_backend": {"backends": ("wasm", "wasm")},
    "unknown_fetch": {"fetch": ["nope"]},
    "single_mapping": {"input_sets": {"x": np.zeros((1, 3), np.float32)}},
    "wrong_rank": {"input_sets": [{"x": np.zeros(3, np.float32)}]},
    "negative_repeats": {"repeats": -1},
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_requests_raise_usage_errors(tmp_path: Path, case: str) -> None:
    """Wrong requests are refused in Python before Chromium starts, with stage browser."""
    args: dict[str, Any] = {"input_sets": [{"x": np.zeros((1, 3), np.float32)}], **BAD_REQUESTS[case]}
    with pytest.raises(UsageError) as info:
        run_in_browser(dense_relu().write(tmp_path / "m"), args.pop("input_sets"), **args)
    assert info.value.stage == "browser"


MISSING = {
    "no_chromium": ("BRIDGE_CHROMIUM", "no-such-chromium", "apt-get install -y chromium"),
    "no_tfjs_builds": ("BRIDGE_NODE_MODULES", "empty", "tf.min.js"),
}


@pytest.mark.parametrize("case", sorted(MISSING))
def test_missing_pieces_are_problems_not_tracebacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    case: str) -> None:
    """A missing Chromium or TF.js build is listed with its fix; running raises MissingDependencyError."""
    variable, value, fix = MISSING[case]
    monkeypatch.setenv(variable, str(tmp_path / value))
    status = browser_status()
    assert not status.ok and any(fix in problem for problem in status.problems)
    with pytest.raises(MissingDependencyError) as info:
        run_in_browser(dense_relu().write(tmp_path / "m"), [{"x": np.zeros((1, 3), np.float32)}])
    assert info.value.stage == "browser" and any(fix in line for line in info.value.details)


@needs_browser
def test_status_on_this_machine() -> None:
    """On a set-up machine Chromium and Playwright are found with their versions."""
    assert _STATUS.ok and _STATUS.chromium_version and _STATUS.playwright_version and _STATUS.launch_path

