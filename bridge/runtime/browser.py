"""Runs a TF.js graph model in real headless Chromium (webgl and wasm backends) and checks the IndexedDB round trip.

One call: build a temporary site (the harness page, the pinned TF.js dist folders and the model folder, linked not
copied, plus request.json and the packed inputs), serve it on 127.0.0.1 (`bridge.server.serving`), launch Debian's
Chromium through Playwright with a fresh profile and every request off that server blocked, and wait for the page's
``window.__bridgeResult`` marker. The page (bridge/js/browser_runner.mjs) reuses the Node runner's core, so both
runtimes load, run and time the model the same way. Failures of the harness raise typed errors with stage
``browser``; a failure of one backend is recorded in its `BackendRun.error`. Chromium is always shut down.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bridge.errors import BridgeError, MissingDependencyError, RuntimeStageError, UsageError, WebModelError
from bridge.runtime import node as node_rt
from bridge.runtime.node import BackendRun, InputSet
from bridge.runtime.tensor_io import pack_writer
from bridge.demo.server import serving

STAGE = "browser"
BROWSER_BACKENDS = ("webgl", "wasm", "cpu", "webgpu")
WEBGPU_DIST = Path("@tensorflow") / "tfjs-backend-webgpu" / "dist"
# WebGPU needs the flag in headless Chromium; without a GPU, Chromium then offers a SwiftShader adapter.
WEBGPU_ARGS = ("--enable-unsafe-webgpu",)
PAGE = node_rt.JS_DIR / "browser_page.html"
PAGE_RUNNER = node_rt.JS_DIR / "browser_runner.mjs"
CHROMIUM_HINT = "apt-get install -y chromium (or set BRIDGE_CHROMIUM to a Chromium binary)"
PLAYWRIGHT_HINT = "install the Python package playwright (pip install 'bridge-torch-tfjs[browser]'); it drives " \
                  "the system Chromium, no browser download is needed"
DIST_FILES = ("@tensorflow/tfjs/dist/tf.min.js", "@tensorflow/tfjs-backend-wasm/dist/tf-backend-wasm.min.js",
              "@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm",
              "@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm")
# Headless, no sandbox (we run as root), no background traffic, and no DNS for anything but the local server.
# SwiftShader must be allowed explicitly for WebGL on machines without a GPU (Chromium >= 137 refuses it otherwise).
CHROMIUM_ARGS = ("--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic", "--disable-default-apps", "--disable-extensions",
                 "--enable-unsafe-swiftshader", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
RESULT_READY = "() => window.__bridgeResult !== undefined"
MAX_CONSOLE_LINES = 20


@dataclass(frozen=True)
class BrowserStatus:
    """Chromium and Playwright as found on this machine; `problems` says how to fix what is missing.

    `chromium_path` is what was found on PATH (or $BRIDGE_CHROMIUM), `launch_path` the binary actually started.
    """

    chromium_path: str | None
    launch_path: str | None
    chromium_version: str | None
    playwright_version: str | None
    node_modules: Path
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when the browser harness can run."""
        return not self.problems


@dataclass(frozen=True)
class IndexedDbRun:
    """The model saved to ``indexeddb://<key>``, loaded back and run on `backend` with the same input sets.

    `outputs` are comparable (bit for bit) with `BrowserRun.backends[backend].outputs`; `error` says which step
    (``save``, ``load``, ``run``) failed and why.
    """

    key: str
    backend: str | None
    outputs: list[dict[str, np.ndarray]]
    fetched: list[dict[str, np.ndarray]]
    save_ms: float | None
    load_ms: float | None
    error: str | None

    @property
    def ok(self) -> bool:
        """True when the model went through IndexedDB and ran every input set."""
        return self.error is None


@dataclass(frozen=True)
class BrowserRun:
    """What one Chromium session gave: a `BackendRun` per backend (in request order), the IndexedDB round trip.

    `timings` (ms): ``driver`` (Playwright's driver start), ``launch`` (Chromium start), ``ready`` (navigation to
    the runner starting, i.e. page and TF.js scripts loaded), ``http_load`` (model fetched and loaded over http),
    ``page_total`` (runner start to result), ``close`` and ``total`` (the whole call). `console` holds the page's
    error and warning lines, `blocked` every request that was refused because it did not go to the local server.
    """

    backends: dict[str, BackendRun]
    indexeddb: IndexedDbRun | None
    chromium_version: str | None
    versions: dict[str, str]
    timings: dict[str, float]
    console: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)

    @property
    def overhead_ms(self) -> float:
        """The fixed cost of one call: Playwright's driver, Chromium launch, page and TF.js load, and shutdown."""
        return sum(self.timings.get(key, 0.0) for key in ("driver", "launch", "ready", "close"))


@dataclass
class _Session:
    """What the page told us while it ran (filled by Playwright event handlers)."""

    base_url: str
    console: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    chromium_args: tuple[str, ...] = ()  # flags this run needs on top of CHROMIUM_ARGS (WebGPU's)


# ---------------------------------------------------------------------------------------------------- environment

def chromium_executable() -> str | None:
    """The Chromium binary: $BRIDGE_CHROMIUM if set, else `chromium` (or `chromium-browser`) on PATH."""
    override = os.environ.get("BRIDGE_CHROMIUM")
    if override:
        return shutil.which(override) or (override if Path(override).is_file() else None)
    return shutil.which("chromium") or shutil.which("chromium-browser")


def launchable_binary(chromium: str) -> str:
    """The binary to start: Debian's `chromium` is a shell wrapper that adds flags (remote extensions, crash
    reporting) and environment we do not want, so its real binary in ../lib/chromium/ is used when present."""
    path = Path(chromium)
    try:
        with open(path, "rb") as stream:
            is_script = stream.read(2) == b"#!"
    except OSError:
        return chromium
    real = path.resolve().parent.parent / "lib" / "chromium" / "chromium"
    return str(real) if is_script and real.is_file() and os.access(real, os.X_OK) else chromium


def _chromium_version(chromium: str) -> str | None:
    try:
        done = subprocess.run([chromium, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def _playwright_version() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return None
    try:
        return importlib.metadata.version("playwright")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _file_problems(modules: Path) -> list[str]:
    missing = [name for name in DIST_FILES if not (modules / name).is_file()]
    problems = [f"TF.js browser builds are missing from {modules}: {', '.join(missing)}: {node_rt.SETUP_HINT}"] \
        if missing else []
    for path in (PAGE, PAGE_RUNNER, node_rt.RUNNER):
        if not path.is_file():
            problems.append(f"the harness file {path} is missing: reinstall bridge")
    return problems


def browser_status() -> BrowserStatus:
    """Chromium's path and version, Playwright's version, and every problem with its fix. Never raises."""
    chromium = chromium_executable()
    version = _chromium_version(chromium) if chromium else None
    playwright = _playwright_version()
    modules = node_rt.node_modules_dir()
    problems = []
    if chromium is None:
        problems.append(f"Chromium not found: {CHROMIUM_HINT}")
    elif version is None:
        problems.append(f"`{chromium} --version` failed: {CHROMIUM_HINT}")
    if playwright is None:
        problems.append(f"Playwright is not installed: {PLAYWRIGHT_HINT}")
    problems += _file_problems(modules)
    return BrowserStatus(chromium_path=chromium, launch_path=launchable_binary(chromium) if chromium else None,
                         chromium_version=version, playwright_version=playwright,
                         node_modules=modules, problems=tuple(problems))


def require_browser() -> BrowserStatus:
    """Returns the status when the browser harness can run; raises `MissingDependencyError` listing fixes otherwise."""
    status = browser_status()
    if status.problems:
        hint = CHROMIUM_HINT if status.chromium_path is None else (
            PLAYWRIGHT_HINT if status.playwright_version is None else node_rt.SETUP_HINT)
        raise MissingDependencyError("the browser runtime (Chromium + Playwright) is not ready", stage=STAGE,
                                     hint=hint, details=list(status.problems))
    return status


# ---------------------------------------------------------------------------------------------------- request

@contextmanager
def _as_browser_stage() -> Iterator[None]:
    """Input checks are shared with the Node harness: report their errors as this stage's."""
    try:
        yield
    except BridgeError as exc:
        if exc.stage == node_rt.STAGE:
            exc.stage = STAGE
        raise


def web_model_folder(model_dir: Path) -> Path:
    """The folder holding model.json: `model_dir` itself, or its ``web_model`` subfolder (a conversion's output)."""
    model_dir = Path(model_dir).resolve()
    if not (model_dir / "model.json").is_file() and (model_dir / "web_model" / "model.json").is_file():
        return model_dir / "web_model"
    return model_dir


def _read_interface(folder: Path) -> Any:
    """The model's inputs and node names; a WebModelError before Chromium starts if model.json is not a graph model."""
    path = folder / "model.json"
    try:
        model = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise WebModelError(f"cannot read {path}: {exc}", stage=STAGE,
                            hint="pass the web model folder holding model.json and its weight shards") from exc
    if not isinstance(model, dict) or model.get("format") != "graph-model":
        found = model.get("format") if isinstance(model, dict) else type(model).__name__
        raise WebModelError(f"{path} is not a TF.js graph model (format '{found}')", stage=STAGE,
                            hint="the browser harness runs graph models (tf.loadGraphModel), as bridge writes them")
    try:
        return node_rt._interface_from(model)
    except (KeyError, AttributeError, TypeError) as exc:
        raise WebModelError(f"cannot read the graph in {path}: {exc!r}", stage=STAGE,
                            hint="re-export the web model") from exc


def _check_request(input_sets: Sequence[InputSet], backends: Sequence[str], fetch: Sequence[str],
                   node_names: frozenset[str], warmup: int, repeats: int, timeout_s: float) -> None:
    if isinstance(input_sets, Mapping):
        raise UsageError("input_sets must be a list of input sets, not one mapping", stage=STAGE,
                         hint="wrap it: run_in_browser(model_dir, [inputs])")
    if not backends or len(set(backends)) != len(backends) or any(b not in BROWSER_BACKENDS for b in backends):
        raise UsageError(f"backends must be distinct names from {list(BROWSER_BACKENDS)}, got {list(backends)}",
                         stage=STAGE)
    unknown = [name for name in fetch if name.split(":")[0] not in node_names]
    if unknown:
        raise UsageError(f"cannot fetch {unknown}: no such node in the graph", stage=STAGE,
                         hint="fetch names are node names from model.json (optionally with :index)")
    if warmup < 0 or repeats < 0 or timeout_s <= 0:
        raise UsageError("warmup and repeats must be >= 0 and timeout_s > 0", stage=STAGE)


def _link(link: Path, target: Path) -> None:
    try:
        link.symlink_to(target, target_is_directory=target.is_dir())
    except OSError:  # no symlinks here (some containers, Windows): fall back to a copy
        if target.is_dir():
            shutil.copytree(target, link)
        else:
            shutil.copy2(target, link)


def _args_for(backends: Sequence[str]) -> tuple[str, ...]:
    """The Chromium flags the backends need."""
    return WEBGPU_ARGS if "webgpu" in backends else ()


def _build_site(site: Path, model_dir: Path, sets: list[dict[str, np.ndarray]], backends: Sequence[str],
                fetch: Sequence[str], warmup: int, repeats: int, indexeddb: bool,
                extra_request: Callable[[Any], dict[str, Any]] | None = None) -> None:
    """Lays out the served folder: page, runners, TF.js dist folders and the model (linked), request and inputs.
    `extra_request(pack_writer)` may add request fields (and arrays to the packed inputs)."""
    modules = node_rt.node_modules_dir()
    page = PAGE.read_text()
    if "webgpu" in backends:  # loaded only when asked for: the page ends the run if a listed script is missing
        _link(site / "tfjs-backend-webgpu", modules / WEBGPU_DIST)
        page = page.replace('<script type="module" src="browser_runner.mjs">',
                            '<script src="tfjs-backend-webgpu/tf-backend-webgpu.min.js"></script>\n'
                            '<script type="module" src="browser_runner.mjs">')
    (site / "index.html").write_text(page)
    _link(site / "browser_runner.mjs", PAGE_RUNNER)
    _link(site / "tfjs_runner.mjs", node_rt.RUNNER)
    _link(site / "tfjs", modules / "@tensorflow" / "tfjs" / "dist")
    _link(site / "tfjs-backend-wasm", modules / "@tensorflow" / "tfjs-backend-wasm" / "dist")
    _link(site / "web_model", model_dir)
    with pack_writer(site / "inputs.bin") as writer:
        refs = [{key: writer.add(array).to_json() for key, array in s.items()} for s in sets]
        extra = extra_request(writer) if extra_request is not None else {}
    request = {
        "protocol": 1, "model_url": "web_model/model.json", "inputs_url": "inputs.bin",
        "wasm_path": "tfjs-backend-wasm/", "backends": list(backends), "fetch": list(fetch), "warmup": warmup,
        "repeats": repeats, "input_sets": refs, "indexeddb": indexeddb, "idb_key": f"bridge-{secrets.token_hex(8)}",
        **extra,
    }
    (site / "request.json").write_text(json.dumps(request))


# ---------------------------------------------------------------------------------------------------- chromium

class _Deadline:
    """One time budget shared by every browser step."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def ms(self) -> float:
        """Milliseconds left (at least 1, so a spent budget still makes Playwright time out instead of waiting)."""
        return max(1.0, (self._end - time.monotonic()) * 1000.0)


def _console_line(session: _Session, message: Any) -> None:
    if message.type in ("error", "warning") and len(session.console) < MAX_CONSOLE_LINES:
        session.console.append(f"console.{message.type}: {message.text}")


def _route(session: _Session, route: Any) -> None:
    """Lets requests to the local server through; aborts (and records) everything else."""
    url = route.request.url
    if url.startswith(session.base_url + "/"):
        route.continue_()
    else:
        session.blocked.append(url)
        route.abort("blockedbyclient")


def _launch(playwright: Any, chromium: str, scratch: Path, deadline: _Deadline, *, accept_downloads: bool = False,
            extra_args: Sequence[str] = ()) -> Any:
    """Starts Chromium with a fresh profile in `scratch`; its config and cache folders (the crash reporter's
    database among them) go there too, so nothing is written to the user's home and every Chromium process,
    crashpad included, names `scratch` on its command line."""
    env = {**os.environ, "XDG_CONFIG_HOME": str(scratch / "xdg-config"), "XDG_CACHE_HOME": str(scratch / "xdg-cache")}
    return playwright.chromium.launch_persistent_context(
        str(scratch / "profile"), executable_path=chromium, headless=True, chromium_sandbox=False,
        args=[*CHROMIUM_ARGS, *extra_args], env=env, timeout=deadline.ms(), service_workers="block",
        handle_sigint=False, handle_sigterm=False, handle_sighup=False, accept_downloads=accept_downloads)


def _wait_for_result(page: Any, session: _Session, deadline: _Deadline) -> dict[str, Any]:
    """Opens the harness page and waits for its done marker; returns window.__bridgeResult."""
    page.on("console", lambda message: _console_line(session, message))
    page.on("pageerror", lambda error: session.console.append(f"page error: {error}"))
    page.goto(session.base_url + "/index.html", wait_until="load", timeout=deadline.ms())
    page.wait_for_function(RESULT_READY, timeout=deadline.ms(), polling=50)
    result = page.evaluate("() => window.__bridgeResult")
    if not isinstance(result, dict):
        raise RuntimeStageError(f"the harness page returned {type(result).__name__}, not a result", stage=STAGE)
    return result


def _kill_leftovers(scratch: Path) -> None:
    """SIGKILLs any process still running whose command line names our private scratch folder (Linux /proc)."""
    marker = str(scratch).encode()
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if marker in (entry / "cmdline").read_bytes():
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue


def _playwright_errors() -> tuple[type[BaseException], type[BaseException]]:
    from playwright.sync_api import Error, TimeoutError as PlaywrightTimeout
    return Error, PlaywrightTimeout


def _drive_chromium(chromium: str, session: _Session, scratch: Path, deadline: _Deadline, *,
                    accept_downloads: bool = False,
                    wait: Callable[[Any, _Session, _Deadline], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Launches Chromium, runs the page (`wait`, default: until its result marker) and closes Chromium again,
    whatever happens."""
    from playwright.sync_api import sync_playwright

    started = time.monotonic()
    with sync_playwright() as playwright:
        session.timings["driver"] = (time.monotonic() - started) * 1000.0
        context = None
        try:
            started = time.monotonic()
            context = _launch(playwright, chromium, scratch, deadline, accept_downloads=accept_downloads,
                              extra_args=session.chromium_args)
            session.timings["launch"] = (time.monotonic() - started) * 1000.0
            context.route("**/*", lambda route: _route(session, route))
            page = context.pages[0] if context.pages else context.new_page()
            return (wait or _wait_for_result)(page, session, deadline)
        finally:
            closing = time.monotonic()
            if context is not None:
                try:
                    context.close()
                except Exception:  # noqa: BLE001 - Chromium may already be gone; the leftover sweep follows
                    pass
            _kill_leftovers(scratch)
            session.timings["close"] = (time.monotonic() - closing) * 1000.0


def _run_session(chromium: str, session: _Session, scratch: Path, deadline: _Deadline,
                 **drive: Any) -> dict[str, Any]:
    """`_drive_chromium` (with its keywords `drive`) with Playwright's failures turned into typed errors."""
    error, timeout = _playwright_errors()
    try:
        return _drive_chromium(chromium, session, scratch, deadline, **drive)
    except timeout as exc:
        step = "launch" if "launch" not in session.timings else "page"
        raise RuntimeStageError(f"Chromium did not finish within {deadline.seconds:g} s (stopped at the {step} "
                                "step) and was shut down", stage=STAGE, details=_page_details(session, exc),
                                hint="raise timeout_s, or run fewer input sets/backends/repeats") from None
    except error as exc:
        raise RuntimeStageError(f"Chromium failed: {str(exc).splitlines()[0]}", stage=STAGE,
                                details=_page_details(session, exc),
                                hint=f"check `{chromium} --version` runs; {CHROMIUM_HINT}") from None


def _page_details(session: _Session, exc: BaseException | None = None) -> list[str]:
    lines = list(session.console)
    if session.blocked:
        lines.append(f"blocked non-local requests: {', '.join(session.blocked[:5])}")
    if exc is not None:
        lines += [line for line in str(exc).splitlines()[1:6] if line.strip()]
    return lines


# ---------------------------------------------------------------------------------------------------- results

def _fatal_error(fatal: Mapping[str, str], session: _Session) -> BridgeError:
    kind, message = fatal.get("kind", ""), fatal.get("message", "unknown failure")
    details = _page_details(session)
    if kind == "model":
        return WebModelError(message, stage=STAGE, details=details, hint="re-export the web model; every shard "
                             "listed in model.json must be complete and inside its folder")
    if kind == "deps":
        return MissingDependencyError(message, stage=STAGE, hint=node_rt.SETUP_HINT, details=details)
    if kind == "request":
        return UsageError(message, stage=STAGE, details=details)
    return RuntimeStageError(f"the harness page failed: {message}", stage=STAGE, details=details)


def _indexeddb_run(entry: Mapping[str, Any] | None, blob: bytes,
                   read_entry: Callable[[Mapping[str, Any], bytes], BackendRun] = node_rt._backend_run
                   ) -> IndexedDbRun | None:
    if entry is None:
        return None
    run = read_entry(entry["entry"], blob) if entry.get("entry") else None
    return IndexedDbRun(key=str(entry["key"]), backend=entry.get("backend"), outputs=run.outputs if run else [],
                        fetched=run.fetched if run else [], save_ms=entry.get("save_ms"),
                        load_ms=entry.get("load_ms"), error=entry.get("error"))


def _browser_run(result: Mapping[str, Any], session: _Session, chromium_version: str | None,
                 read_entry: Callable[[Mapping[str, Any], bytes], BackendRun] = node_rt._backend_run) -> BrowserRun:
    if result.get("fatal"):
        raise _fatal_error(result["fatal"], session)
    blob = base64.b64decode(result.get("outputs_b64") or "")
    backends = {entry["backend"]: read_entry(entry, blob) for entry in result["backends"]}
    page_timings = result.get("timings") or {}
    timings = dict(session.timings)
    for key in ("ready", "http_load"):
        if page_timings.get(f"{key}_ms") is not None:
            timings[key] = float(page_timings[f"{key}_ms"])
    if page_timings.get("total_ms") is not None:
        timings["page_total"] = float(page_timings["total_ms"])
    return BrowserRun(backends=backends, indexeddb=_indexeddb_run(result.get("indexeddb"), blob, read_entry),
                      chromium_version=chromium_version, versions=dict(result.get("versions") or {}),
                      timings=timings, console=list(session.console), blocked=list(session.blocked))


@contextmanager
def _workspace(timeout_s: float) -> Iterator[tuple[BrowserStatus, _Deadline, float, Path, Path]]:
    """Chromium checked (MissingDependencyError), the time budget started, and a scratch folder holding an empty
    `site/` to serve; the folder is removed afterwards."""
    status = require_browser()
    assert status.launch_path is not None
    deadline = _Deadline(timeout_s)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bridge-browser-") as tmp:
        scratch = Path(tmp)
        site = scratch / "site"
        site.mkdir()
        yield status, deadline, started, scratch, site


def run_in_browser(model_dir: Path, input_sets: Sequence[InputSet], *, backends: Sequence[str] = ("webgl", "wasm"),
                   fetch: Sequence[str] = (), warmup: int = 1, repeats: int = 3, indexeddb_roundtrip: bool = True,
                   timeout_s: float = 180.0) -> BrowserRun:
    """Runs the TF.js graph model in `model_dir` in headless Chromium on each backend, in one browser session.

    `model_dir` is the folder holding model.json (or a conversion output holding ``web_model/``). Input sets are
    given as for `bridge.runtime.node.run_graph_model` (keyed by signature key or tensor name, or listed in
    signature order; int64/float64 are narrowed when the values fit). The page loads the model over http with
    tf.loadGraphModel, runs every input set on each backend, then times `repeats` runs of the first set after
    `warmup` untimed ones. With `indexeddb_roundtrip`, the http-loaded model is saved to IndexedDB, loaded back and
    run on the first backend that succeeded; compare `BrowserRun.indexeddb.outputs` with that backend's outputs.
    Everything (launch included) must finish within `timeout_s`, or a `RuntimeStageError` is raised.
    """
    folder = web_model_folder(model_dir)
    with _as_browser_stage():
        interface = _read_interface(folder)
        _check_request(input_sets, backends, fetch, interface.node_names, warmup, repeats, timeout_s)
        sets = [node_rt._normalise_set(s, interface, i) for i, s in enumerate(input_sets)]
    with _workspace(timeout_s) as (status, deadline, started, scratch, site):
        _build_site(site, folder, sets, backends, fetch, warmup, repeats, indexeddb_roundtrip)
        with serving(site) as base_url:
            session = _Session(base_url=base_url, chromium_args=_args_for(backends))
            result = _run_session(status.launch_path, session, scratch, deadline)
    session.timings["total"] = (time.monotonic() - started) * 1000.0
    return _browser_run(result, session, status.chromium_version)


def run_layers_in_browser(model_dir: Path, input_sets: Sequence[InputSet], *,
                          backends: Sequence[str] = ("webgl", "wasm"), fit: node_rt.LayersFit | None = None,
                          warmup: int = 1, repeats: int = 3, indexeddb_roundtrip: bool = True,
                          timeout_s: float = 180.0) -> BrowserRun:
    """Runs the TF.js layers model in `model_dir` in headless Chromium, as `run_in_browser` does for graph models:
    loaded over http with tf.loadLayersModel, ``predict`` on every input set per backend (outputs keyed by output
    name), timing, then `fit` once per backend if given (each `BackendRun` is a `LayersBackendRun`, its ``fit``
    holding the weights before and after). With `indexeddb_roundtrip`, the model saved to IndexedDB and loaded
    back is run on the first backend that succeeded; its outputs must be bit-identical."""
    folder = web_model_folder(model_dir)
    with _as_browser_stage():
        _, outputs, interface = node_rt._read_layers_interface(folder)
        _check_request(input_sets, backends, (), interface.node_names, warmup, repeats, timeout_s)
        sets = [node_rt._normalise_set(s, interface, i) for i, s in enumerate(input_sets)]

    def extra(writer: Any) -> dict[str, Any]:
        with _as_browser_stage():
            return {"kind": "layers", "output_keys": outputs,
                    "fit": node_rt._fit_request(fit, interface, outputs, writer) if fit is not None else None}

    with _workspace(timeout_s) as (status, deadline, started, scratch, site):
        _build_site(site, folder, sets, backends, (), warmup, repeats, indexeddb_roundtrip, extra)
        with serving(site) as base_url:
            session = _Session(base_url=base_url, chromium_args=_args_for(backends))
            result = _run_session(status.launch_path, session, scratch, deadline)
    session.timings["total"] = (time.monotonic() - started) * 1000.0
    return _browser_run(result, session, status.chromium_version, node_rt._layers_backend_run)


# ---------------------------------------------------------------------------------------------------- train and save

SAVE_SCHEMES = ("indexeddb", "localstorage", "downloads", "http")
SAVE_BACKENDS = ("cpu", "webgl")
FILES_WANTED = "() => window.__bridgeResult !== undefined || window.__bridgeAwaitFiles !== undefined"


@dataclass(frozen=True)
class SavedCopy:
    """The trained model saved to one scheme with ``model.save()`` and loaded back in the same page.

    `status` is ``ok``, ``skipped`` (localStorage full: it did not fit) or ``failed`` (`reason` names the step:
    ``save``, ``load``, ``run``). `outputs` and `weights` come from the copy; `identical` says they equal the
    trained model's bit for bit. `files` holds what was written where Python can see it: the two files caught
    from ``downloads://``, or the upload folder's files for ``http``. `answer` is the upload endpoint's reply."""

    scheme: str
    url: str | None
    status: str
    reason: str | None
    save_ms: float | None
    load_ms: float | None
    outputs: list[dict[str, np.ndarray]]
    weights: dict[str, np.ndarray]
    identical: bool
    files: dict[str, bytes] = field(default_factory=dict)
    answer: dict[str, Any] | None = None


@dataclass(frozen=True)
class BrowserTrainRun:
    """A layers model trained in Chromium (`loss` per epoch on `backend`), its weights `before` and after
    (`trained_weights`), its predictions on the input sets after training (`trained_outputs`), and each saved
    copy by scheme. `upload_folder` is the folder the http copy was written to (under the caller's upload folder).
    """

    backend: str
    loss: list[float]
    fit_ms: float
    before: dict[str, np.ndarray]
    trained_weights: dict[str, np.ndarray]
    trained_outputs: list[dict[str, np.ndarray]]
    copies: dict[str, SavedCopy]
    upload_folder: Path | None
    chromium_version: str | None
    timings: dict[str, float]
    console: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every copy that was not skipped loaded back bit-identical."""
        return all(c.identical for c in self.copies.values() if c.status != "skipped")


def same_bits(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> bool:
    """True when both hold the same keys with arrays of the same dtype, shape and bytes."""
    return a.keys() == b.keys() and all(
        np.asarray(a[k]).dtype == np.asarray(b[k]).dtype and np.shape(a[k]) == np.shape(b[k])
        and np.asarray(a[k]).tobytes() == np.asarray(b[k]).tobytes() for k in a)


def _wait_with_downloads(scratch: Path, saved: dict[str, Path]) -> Callable[[Any, _Session, _Deadline],
                                                                             dict[str, Any]]:
    """A page wait that, when the page asks for its downloads back, saves the files Chromium downloaded into
    `scratch/downloads/` (recorded in `saved`) and gives them to the page's file input."""

    def wait(page: Any, session: _Session, deadline: _Deadline) -> dict[str, Any]:
        downloads: list[Any] = []
        page.on("download", lambda download: downloads.append(download))
        page.on("console", lambda message: _console_line(session, message))
        page.on("pageerror", lambda error: session.console.append(f"page error: {error}"))
        page.goto(session.base_url + "/index.html", wait_until="load", timeout=deadline.ms())
        page.wait_for_function(FILES_WANTED, timeout=deadline.ms(), polling=50)
        wanted = page.evaluate("() => window.__bridgeAwaitFiles || null")
        if wanted is not None:
            while len(downloads) < int(wanted["count"]):
                if deadline.ms() <= 1:
                    raise RuntimeStageError(f"Chromium downloaded {len(downloads)} of {wanted['count']} files",
                                            stage=STAGE, details=_page_details(session))
                page.wait_for_timeout(50)
            folder = scratch / "downloads"
            folder.mkdir(exist_ok=True)
            for download in downloads:
                name = Path(download.suggested_filename).name
                download.save_as(folder / name)
                saved[name] = folder / name
            page.set_input_files("#bridge-files", [str(p) for p in saved.values()])
        page.wait_for_function(RESULT_READY, timeout=deadline.ms(), polling=50)
        result = page.evaluate("() => window.__bridgeResult")
        if not isinstance(result, dict):
            raise RuntimeStageError(f"the harness page returned {type(result).__name__}, not a result", stage=STAGE)
        return result

    return wait


def _unpack_items(items: Sequence[Mapping[str, Any]], blob: bytes) -> dict[str, np.ndarray]:
    from bridge.runtime.tensor_io import TensorRef, read_tensor

    return {str(item["key"]): read_tensor(blob, TensorRef.from_json(item["ref"])) for item in items}


def _saved_copy(entry: Mapping[str, Any], blob: bytes, trained_outputs: list[dict[str, np.ndarray]],
                trained_weights: dict[str, np.ndarray], files: dict[str, bytes]) -> SavedCopy:
    outputs = [_unpack_items(s, blob) for s in entry.get("outputs") or []]
    weights = _unpack_items(entry.get("weights") or [], blob)
    ok = entry.get("status") == "ok"
    identical = ok and len(outputs) == len(trained_outputs) and all(
        same_bits(a, b) for a, b in zip(outputs, trained_outputs)) and same_bits(weights, trained_weights)
    return SavedCopy(scheme=str(entry["scheme"]), url=entry.get("url"), status=str(entry.get("status")),
                     reason=entry.get("reason"), save_ms=entry.get("save_ms"), load_ms=entry.get("load_ms"),
                     outputs=outputs, weights=weights, identical=bool(identical), files=files,
                     answer=entry.get("answer"))


def _train_run(result: Mapping[str, Any], session: _Session, chromium_version: str | None,
               downloaded: Mapping[str, Path], upload_root: Path | None) -> BrowserTrainRun:
    if result.get("fatal"):
        raise _fatal_error(result["fatal"], session)
    blob = base64.b64decode(result.get("outputs_b64") or "")
    save = result["save"]
    trained_outputs = [_unpack_items(s, blob) for s in save["trained_outputs"]]
    trained_weights = _unpack_items(save["trained_weights"], blob)
    copies: dict[str, SavedCopy] = {}
    upload_folder = None
    for entry in save["copies"]:
        files: dict[str, bytes] = {}
        if entry["scheme"] == "downloads":
            files = {name: path.read_bytes() for name, path in downloaded.items()}
        answer = entry.get("answer")
        if entry["scheme"] == "http" and upload_root is not None and isinstance(answer, dict) and answer.get("id"):
            upload_folder = upload_root / str(answer["id"])
            files = {p.name: p.read_bytes() for p in sorted(upload_folder.iterdir())} if upload_folder.is_dir() else {}
        copies[entry["scheme"]] = _saved_copy(entry, blob, trained_outputs, trained_weights, files)
    timings = dict(session.timings)
    if (result.get("timings") or {}).get("total_ms") is not None:
        timings["page_total"] = float(result["timings"]["total_ms"])
    return BrowserTrainRun(backend=str(save["backend"]), loss=[float(v) for v in save["loss"]],
                           fit_ms=float(save["fit_ms"]), before=_unpack_items(save["before"], blob),
                           trained_weights=trained_weights, trained_outputs=trained_outputs, copies=copies,
                           upload_folder=upload_folder, chromium_version=chromium_version, timings=timings,
                           console=list(session.console), blocked=list(session.blocked))


def _check_save_request(fit: node_rt.LayersFit, backend: str, schemes: Sequence[str], timeout_s: float) -> None:
    if backend not in SAVE_BACKENDS:
        raise UsageError(f"backend must be one of {list(SAVE_BACKENDS)}, got {backend!r}", stage=STAGE,
                         hint="TF.js wasm has no gradient kernels for convolutions and embeddings")
    if not schemes or len(set(schemes)) != len(schemes) or any(s not in SAVE_SCHEMES for s in schemes):
        raise UsageError(f"schemes must be distinct names from {list(SAVE_SCHEMES)}, got {list(schemes)}",
                         stage=STAGE)
    if fit.loss is None or fit.optimizer is None:
        raise UsageError("training in the browser needs a loss and an optimizer", stage=STAGE,
                         hint="LayersFit(x, y, loss='mean_squared_error', optimizer='sgd', learning_rate=0.05)")
    if timeout_s <= 0:
        raise UsageError("timeout_s must be > 0", stage=STAGE)


def train_and_save_in_browser(model_dir: Path, input_sets: Sequence[InputSet], fit: node_rt.LayersFit, *,
                              backend: str = "cpu", schemes: Sequence[str] = SAVE_SCHEMES,
                              upload_dir: Path | None = None, timeout_s: float = 180.0) -> BrowserTrainRun:
    """Trains the TF.js layers model in `model_dir` in headless Chromium and saves it anywhere TF.js saves.

    The page loads the model over http (``tf.loadLayersModel``) on `backend` (cpu or webgl), compiles it with
    `fit`'s loss and optimizer and fits `fit.epochs` epochs on `fit.x`/`fit.y` without shuffling, predicts
    `input_sets`, then for each of `schemes` calls ``model.save()``: ``indexeddb://`` and ``localstorage://``
    (skipped when it does not fit), ``downloads://`` (the two files are caught from Chromium's download events and
    given back to the page, which loads them with ``tf.io.browserFiles``), and ``http`` (``tf.io.http`` posting to
    this harness's ``/upload`` endpoint, `bridge.demo.server` with ``accept_uploads``, into `upload_dir` or a
    temporary folder, with a bearer token). Each copy is loaded back and its predictions and weights compared bit
    for bit with the trained model's (`SavedCopy.identical`). Everything must finish within `timeout_s`.
    """
    folder = web_model_folder(model_dir)
    with _as_browser_stage():
        _, outputs, interface = node_rt._read_layers_interface(folder)
        _check_request(input_sets, ("cpu",), (), interface.node_names, 0, 0, timeout_s)
        _check_save_request(fit, backend, schemes, timeout_s)
        sets = [node_rt._normalise_set(s, interface, i) for i, s in enumerate(input_sets)]
    token = secrets.token_urlsafe(16)

    def extra(writer: Any) -> dict[str, Any]:
        with _as_browser_stage():
            return {"kind": "layers-save", "output_keys": outputs, "backend": backend, "schemes": list(schemes),
                    "fit": node_rt._fit_request(fit, interface, outputs, writer),
                    "save_key": f"bridge-trained-{secrets.token_hex(6)}", "upload_url": "/upload",
                    "upload_token": token}

    with _workspace(timeout_s) as (status, deadline, started, scratch, site):
        uploads = Path(upload_dir).resolve() if upload_dir is not None else scratch / "uploads"
        _build_site(site, folder, sets, ("cpu",), (), 0, 0, False, extra)
        downloaded: dict[str, Path] = {}
        with serving(site, accept_uploads=uploads, token=token) as base_url:
            session = _Session(base_url=base_url)
            result = _run_session(status.launch_path, session, scratch, deadline, accept_downloads=True,
                                  wait=_wait_with_downloads(scratch, downloaded))
        session.timings["total"] = (time.monotonic() - started) * 1000.0
        run = _train_run(result, session, status.chromium_version, downloaded, uploads)
    # Without the caller's upload folder the upload lived in the temporary folder: its files are in the copy.
    return run if upload_dir is not None else dataclasses.replace(run, upload_folder=None)
