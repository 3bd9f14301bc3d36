"""The generated ES module beside a web model (bridge.webmodule): model.js, model.d.ts and package.json, used as a
web developer would, for examples/tiny_cnn, examples/mlp, examples/linear, examples/two_io and a text model
(nn.Embedding + a Transformer encoder layer on int64 token ids).

One module-scoped fixture converts every model once (browser and Node stages off: this module runs them itself)
into a scratch npm project, writes the web modules and installs them there offline (`npm install` of the folders,
with @tensorflow/tfjs linked from bridge's pinned packages). Then:

- the packages resolve by name (and a packed tarball installs offline too);
- the declarations and a usage file per model type-check with `tsc --noEmit --strict` (no skipLibCheck, so
  model.d.ts itself is checked), including `@ts-expect-error` lines that must fail (wrong names, wrong arrays);
- in Node (wasm and cpu backends, one process) every model loads (default URL, folder path, file:// URL,
  IOHandler) and predicts PyTorch's reference within 1e-4 from typed arrays, nested arrays, {data, shape},
  BigInt64Array ids and tensors, leaking no tensor; bad inputs fail with clear messages;
- in Chromium (one session, webgl and cpu), a plain page with an import map does the same, plus fromImage() on a
  canvas against PyTorch run on the same pixels;
- the kernel check passes on every converted model and names every kernel the runtime actually ran.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.errors import UsageError, WebModelError
from bridge.runtime import browser as browser_rt
from bridge.runtime import node as node_rt
from bridge.source.ports import Port, interface_from_model_json
from bridge.webmodule import MODULE_FILES, write_web_module
from bridge.webmodule.package import package_name

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
MODULES = node_rt.node_modules_dir()
TSC = MODULES / "typescript" / "bin" / "tsc"
ATOL = 1e-4
_NODE = node_rt.node_status()
_NPM = shutil.which("npm")
_NODE_READY = pytest.mark.skipif(not _NODE.ok or _NPM is None,
                                 reason="; ".join(_NODE.problems) or "npm is not installed")


def needs_node(test: Callable[..., None]) -> Callable[..., None]:
    """Marks a test as needing Node and npm (skipped when they are not ready)."""
    return pytest.mark.node(_NODE_READY(test))
_BROWSER = browser_rt.browser_status()
_BROWSER_READY = pytest.mark.skipif(not _BROWSER.ok, reason="; ".join(_BROWSER.problems) or "browser ready")


def needs_browser(test: Callable[..., None]) -> Callable[..., None]:
    """Marks a test as needing Chromium and Playwright (skipped when they are not ready)."""
    return pytest.mark.browser(_BROWSER_READY(test))


# ------------------------------------------------------------------------------------------------ the models

class TextEncoder:
    """Built lazily (torch imports only when the fixture runs): token ids -> class scores."""

    @staticmethod
    def build() -> Any:
        import torch
        from torch import nn

        class Encoder(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.embed = nn.Embedding(100, 16)
                layer = nn.TransformerEncoderLayer(16, nhead=2, dim_feedforward=32, dropout=0.0, batch_first=True)
                self.encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
                self.head = nn.Linear(16, 3)

            def forward(self, ids: torch.Tensor) -> torch.Tensor:
                return self.head(self.encoder(self.embed(ids)).mean(dim=1))

        Encoder.__name__ = Encoder.__qualname__ = "TextEncoder"
        return Encoder()


def _example(folder: str, cls: str) -> Callable[[], Any]:
    def build() -> Any:
        spec = importlib.util.spec_from_file_location(f"webmodule_example_{folder}", ROOT / "examples" / folder /
                                                      "model.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return getattr(module, cls)()
    return build


@dataclass(frozen=True)
class ModelCase:
    """One model: how to build it, its input specs, how Node loads it and in which forms inputs are given."""

    key: str
    build: Callable[[], Any]
    specs: tuple[str, ...]
    load: str  # default | path | url | memory
    forms: tuple[str, ...]  # one input form per sample set
    output_names: tuple[str, ...] = ()


CASES = (
    ModelCase("tiny_cnn", _example("tiny_cnn", "TinyCNN"), ("x:1x3x64x64",), "default", ("typed", "nested")),
    ModelCase("mlp", _example("mlp", "MLP"), ("x:?x32",), "path", ("nested", "typed")),
    ModelCase("linear", _example("linear", "LinearModel"), ("x:1x2",), "url", ("numbers", "tensor")),
    ModelCase("two_io", _example("two_io", "TwoInTwoOut"), ("image:1x3x16x16", "features:1x6"), "memory",
              ("tensor", "typed"), ("scores", "value")),
    ModelCase("text", TextEncoder.build, ("ids:1x?:int64:0..99",), "default", ("bigint", "numbers")),
)


@dataclass
class Converted:
    """A converted model inside the scratch project: its web model folder, ports, samples and reference."""

    case: ModelCase
    folder: Path
    package: str
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    samples: list[dict[str, np.ndarray]]  # web layout (int64 kept for int64 inputs)
    reference: list[dict[str, np.ndarray]]  # web layout
    state_dict: Any = None

    def torch_output(self, web_inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """PyTorch's outputs (web layout) for inputs given in the web layout."""
        import torch

        module = self.case.build()
        module.load_state_dict(self.state_dict)
        module.eval()
        args = [torch.from_numpy(np.ascontiguousarray(p.to_torch(web_inputs[p.name]))) for p in self.inputs]
        with torch.no_grad():
            result = module(*args)
        values = result if isinstance(result, tuple) else (result,)
        return {p.name: p.to_web(v.numpy()) for p, v in zip(self.outputs, values)}


@dataclass
class Project:
    """The scratch npm project: the converted models installed in it, and npm's output."""

    root: Path
    models: dict[str, Converted]
    install_log: str


def _read_sets(path: Path, ports: tuple[Port, ...]) -> list[dict[str, np.ndarray]]:
    arrays = np.load(path)
    count = 1 + max(int(key.split("/")[0]) for key in arrays.files)
    return [{p.name: p.move_to_web(arrays[f"{i}/{p.name}"]) for p in ports} for i in range(count)]


def _convert(case: ModelCase, out: Path) -> Converted:
    import torch

    import bridge

    torch.manual_seed(0)
    module = case.build().eval()
    result = bridge.convert(module, list(case.specs), out, browser=False, node_backends=(), samples=2,
                            output_names=case.output_names)
    assert result.ok, [(s.name, s.status, s.reason) for s in result.stages]
    folder = out / "web_model"
    interface = interface_from_model_json(json.loads((folder / "model.json").read_text()), "test")
    written = write_web_module(folder)
    assert [p.name for p in written] == list(MODULE_FILES)
    converted = Converted(case=case, folder=folder, package=json.loads((folder / "package.json").read_text())["name"],
                          inputs=interface.inputs, outputs=interface.outputs,
                          samples=_read_sets(out / "parity" / "samples.npz", interface.inputs),
                          reference=_read_sets(out / "parity" / "reference.npz", interface.outputs))
    converted.state_dict = module.state_dict()
    return converted


def _npm(args: list[str], cwd: Path) -> str:
    assert _NPM is not None
    env = {**os.environ, "npm_config_update_notifier": "false", "npm_config_fund": "false",
           "npm_config_audit": "false"}
    done = subprocess.run([_NPM, *args], check=False, cwd=cwd, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, f"npm {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def _scratch_project(root: Path, name: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "package.json").write_text(json.dumps({"name": name, "private": True, "type": "module"}))
    return root


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """Every case converted into a scratch npm project and installed there offline."""
    if not _NODE.ok or _NPM is None:
        pytest.skip("Node/npm not ready")
    root = _scratch_project(tmp_path_factory.mktemp("webmodule") / "app", "webmodule-scratch")
    models = {case.key: _convert(case, root / "models" / case.key) for case in CASES}
    tfjs = [str(MODULES / "@tensorflow" / name) for name in ("tfjs", "tfjs-backend-wasm")]
    log = _npm(["install", "--offline", "--ignore-scripts", *tfjs,
                *(f"./models/{key}/web_model" for key in models)], root)
    return Project(root=root, models=models, install_log=log)


def _node(args: list[str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    assert _NODE.node_path is not None
    return subprocess.run([_NODE.node_path, *args], check=False, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


# ------------------------------------------------------------------------------------------------ npm

@needs_node
def test_npm_install_offline_resolves_every_package(project: Project) -> None:
    """`npm install ./models/<name>/web_model` worked offline and `import ... from '<name>'` resolves."""
    names = [m.package for m in project.models.values()]
    assert names == ["tiny-cnn", "mlp", "linear-model", "two-in-two-out", "text-encoder"]
    script = ("const names = JSON.parse(process.argv[1]); const out = {};"
              "for (const n of names) { const m = await import(n); out[n] = Object.keys(m).sort(); }"
              "console.log(JSON.stringify(out));")
    done = _node(["--input-type=module", "-e", script, json.dumps(names)], project.root)
    assert done.returncode == 0, done.stderr
    exported = json.loads(done.stdout.strip().splitlines()[-1])
    for name in names:
        assert exported[name] == ["IMAGE_INPUTS", "INPUTS", "LABELS", "Model", "NEEDS_ASYNC", "OUTPUTS", "dispose",
                                  "fromImage", "load", "predict"]


@needs_node
def test_packed_tarball_installs_offline_with_its_model_files(project: Project, tmp_path: Path) -> None:
    """`npm pack` of a web model folder holds model.json and its shards; the tarball installs offline into a
    project that has TF.js, and the module loads the model from inside node_modules."""
    tiny = project.models["tiny_cnn"]
    _npm(["pack", "--offline", str(tiny.folder), "--pack-destination", str(tmp_path)], tmp_path)
    tarball = next(tmp_path.glob("tiny-cnn-*.tgz"))
    app = _scratch_project(tmp_path / "app", "webmodule-pack")
    _npm(["install", "--offline", "--ignore-scripts", str(MODULES / "@tensorflow" / "tfjs"), str(tarball)], app)
    installed = app / "node_modules" / "tiny-cnn"
    assert not installed.is_symlink()
    shards = json.loads((tiny.folder / "model.json").read_text())["weightsManifest"][0]["paths"]
    assert sorted(p.name for p in installed.iterdir()) == sorted([*MODULE_FILES, "model.json", *shards])
    script = ("import * as tf from '@tensorflow/tfjs'; import { load, predict } from 'tiny-cnn';"
              "await tf.setBackend('cpu'); await load();"
              "const out = await predict(new Float32Array(64 * 64 * 3), { output: 'data' });"
              "console.log(JSON.stringify(out.output_0.shape));")
    done = _node(["--input-type=module", "-e", script], app)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [1, 10]


# ------------------------------------------------------------------------------------------------ TypeScript

def _ts_array(port: Port) -> str:
    return {"float32": "Float32Array", "int32": "Int32Array", "bool": "Uint8Array"}[port.web_dtype]


def _ts_size(port: Port) -> int:
    return int(np.prod([d if d is not None else 2 for d in port.web_shape]))


_TS_RANKS = {1: "tf.Tensor1D", 2: "tf.Tensor2D", 3: "tf.Tensor3D", 4: "tf.Tensor4D"}


def _usage_ts(model: Converted, index: int) -> str:
    """A usage file for one model: correct calls that must compile, and @ts-expect-error lines that must not."""
    values = ", ".join(f"{p.name}: new {_ts_array(p)}({_ts_size(p)})" for p in model.inputs)
    tensors = ", ".join(f"{p.name}: tf.zeros([{', '.join(str(d or 2) for d in p.web_shape)}]) as "
                        f"{_TS_RANKS[len(p.web_shape)]}" for p in model.inputs)
    first_in, first_out = model.inputs[0], model.outputs[0]
    rank_type = _TS_RANKS[len(first_out.web_shape)]
    shape = "[" + ", ".join("number" if d is None else str(d) for d in first_out.web_shape) + "]"
    wrong_array = "Int32Array" if first_in.web_dtype == "float32" else "Float32Array"
    lines = [
        f"import {{ load, predict, fromImage, INPUTS, OUTPUTS, type Outputs }} from '{model.package}';",
        "import * as tf from '@tensorflow/tfjs';",
        f"export async function use{index}(): Promise<number> {{",
        f"  const feed = {{ {values} }};",
        "  const model = await load(undefined, { backend: 'cpu', onProgress: (f: number) => void f });",
        "  const out: Outputs = await predict(feed);",
        f"  const first: {rank_type} = out.{first_out.name};",
        "  const data = await model.predict(feed, { output: 'data' });",
        f"  const values: {_ts_array(first_out)} = data.{first_out.name}.data;",
        f"  const shape: {shape} = data.{first_out.name}.shape;",
        f"  const inputName: '{first_in.name}' = INPUTS[0].name;",
        f"  const outputName: '{first_out.name}' = OUTPUTS[0].name;",
        f"  await predict({{ {tensors} }});",
        "  // @ts-expect-error: not an input of this model",
        "  await predict({ ...feed, notAnInput: new Float32Array(1) });",
        "  // @ts-expect-error: not an output of this model",
        "  void out.notAnOutput;",
        f"  // @ts-expect-error: {first_in.name} does not take {wrong_array}",
        f"  await predict({{ ...feed, {first_in.name}: new {wrong_array}(1) }});",
        "  // @ts-expect-error: 'data' outputs are not tensors",
        f"  (await predict(feed, {{ output: 'data' }})).{first_out.name}.dispose();",
    ]
    if first_in.dtype == "int64":
        lines += [f"  await predict({{ {first_in.name}: new BigInt64Array(4) }});",
                  f"  await predict({{ {first_in.name}: {{ data: [1n, 2n], shape: [1, 2] }} }});"]
    else:
        lines += ["  // @ts-expect-error: bigint ids are for int64 inputs only",
                  f"  await predict({{ ...feed, {first_in.name}: new BigInt64Array(4) }});"]
    if len(model.inputs) == 1:
        lines.append(f"  await predict(new {_ts_array(first_in)}({_ts_size(first_in)}));")
    if model.case.key in ("tiny_cnn", "two_io"):
        image = model.inputs[0].name
        lines += ["  const picture: tf.Tensor4D = fromImage(document.createElement('canvas'));",
                  f"  await predict({{ ...feed, {image}: document.createElement('img') }});",
                  "  // @ts-expect-error: not an image input",
                  "  fromImage(document.createElement('canvas'), { input: 'notAnInput' });",
                  "  picture.dispose();"]
    else:
        lines += ["  // @ts-expect-error: this model has no image input",
                  "  fromImage(document.createElement('canvas'));"]
    lines += ["  first.dispose();", "  return values.length + shape.length + inputName.length + outputName.length;",
              "}", ""]
    return "\n".join(lines)


@needs_node
def test_declarations_type_check_strictly(project: Project) -> None:
    """Every model.d.ts and a usage file per model pass `tsc --noEmit --strict` with library checks on.

    '@tensorflow/tfjs' is mapped to a shim re-exporting tfjs-core and tfjs-converter (the parts the declarations
    use): the tfjs package's own typings include tfjs-layers, whose declarations do not pass --strict with
    library checks on, which would hide errors in model.d.ts behind skipLibCheck."""
    checks = project.root / "ts"
    checks.mkdir(exist_ok=True)
    (checks / "tfjs-shim.d.ts").write_text("export * from '@tensorflow/tfjs-core';\n"
                                            "export * from '@tensorflow/tfjs-converter';\n")
    files = []
    for index, model in enumerate(project.models.values()):
        path = checks / f"use_{model.case.key}.ts"
        path.write_text(_usage_ts(model, index))
        files.append(path.name)
    (checks / "tsconfig.json").write_text(json.dumps({
        "compilerOptions": {"strict": True, "noEmit": True, "target": "es2020", "lib": ["es2020", "dom"],
                            "module": "esnext", "moduleResolution": "bundler", "skipLibCheck": False,
                            "typeRoots": [str(MODULES / "@types")],
                            "paths": {"@tensorflow/tfjs": ["./tfjs-shim.d.ts"],
                                                      "@tensorflow/*": [str(MODULES / "@tensorflow" / "*")]}},
        "files": files}))
    done = _node([str(TSC), "-p", str(checks / "tsconfig.json"), "--pretty", "false"], checks)
    assert done.returncode == 0, done.stdout + done.stderr
    # Each usage file really went through the checker: a broken one must fail.
    broken = checks / "broken.ts"
    broken.write_text(f"import {{ predict }} from '{project.models['mlp'].package}';\n"
                      "export const p = predict({ x: 'not numbers' });\n")
    config = json.loads((checks / "tsconfig.json").read_text())
    config["files"] = ["broken.ts"]
    (checks / "tsconfig.broken.json").write_text(json.dumps(config))
    failed = _node([str(TSC), "-p", str(checks / "tsconfig.broken.json"), "--pretty", "false"], checks)
    assert failed.returncode != 0 and "broken.ts" in failed.stdout, failed.stdout


# ------------------------------------------------------------------------------------------------ Node

def _input_spec(port: Port, array: np.ndarray, form: str) -> dict[str, Any]:
    values = np.asarray(array)
    return {"form": form, "dtype": port.web_dtype, "shape": list(values.shape),
            "values": [int(v) for v in values.ravel()] if values.dtype.kind in "iu" else values.ravel().tolist()}


def _node_request(project: Project) -> dict[str, Any]:
    models = []
    for model in project.models.values():
        sets = [{p.name: _input_spec(p, sample[p.name], form) for p in model.inputs}
                for sample, form in zip(model.samples, model.case.forms)]
        models.append({"package": model.package, "folder": str(model.folder), "load": model.case.load,
                       "backends": ["wasm", "cpu"], "sets": sets})
    text, mlp, two = project.models["text"], project.models["mlp"], project.models["two_io"]
    ids = {"ids": {"form": "bigint", "dtype": "int32", "shape": [1, 3], "values": [1, 2 ** 31, 3]}}
    checks = [
        {"package": text.package, "folder": str(text.folder), "inputs": ids},
        {"package": text.package, "folder": str(text.folder), "raw": True, "inputs": {"ids": [[1, 2.5]]}},
        {"package": mlp.package, "folder": str(mlp.folder), "raw": True, "inputs": {"nope": [[1]]}},
        {"package": mlp.package, "folder": str(mlp.folder), "raw": True, "inputs": {"x": [[1, 2, 3]]}},
        {"package": mlp.package, "folder": str(mlp.folder),
         "inputs": {"x": {"form": "typed", "dtype": "float32", "shape": [3], "values": [1, 2, 3]}}},
        {"package": mlp.package, "folder": str(mlp.folder), "raw": True,
         "inputs": {"x": {"data": [0, 0, 0, 255], "width": 1, "height": 1}}},
        {"package": mlp.package, "folder": str(mlp.folder),
         "inputs": {"x": {"form": "tensor", "dtype": "int32", "shape": [1, 32], "values": [0] * 32}}},
        {"package": two.package, "folder": str(two.folder), "raw": True, "inputs": {"features": [[0] * 6]}},
        {"package": mlp.package, "folder": str(mlp.folder), "raw": True, "inputs": {"x": [[0] * 32]},
         "options": {"output": "arrays"}},
    ]
    wasm_dir = str(MODULES / "@tensorflow" / "tfjs-backend-wasm" / "dist") + os.sep
    return {"wasmDir": wasm_dir, "models": models, "checks": checks}


@pytest.fixture(scope="module")
def node_run(project: Project) -> dict[str, Any]:
    """The Node check script run once in the scratch project (every model, wasm and cpu, and the error cases)."""
    script = project.root / "node_check.mjs"
    shutil.copyfile(HERE / "webmodule_node_check.mjs", script)
    request, result = project.root / "node_request.json", project.root / "node_result.json"
    request.write_text(json.dumps(_node_request(project)))
    done = _node([str(script), str(request), str(result)], project.root)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(result.read_text())


def _assert_outputs(model: Converted, outputs: list[dict[str, Any]], where: str) -> None:
    assert len(outputs) == len(model.reference)
    for index, (got, want) in enumerate(zip(outputs, model.reference)):
        assert list(got) == [p.name for p in model.outputs], where
        for port in model.outputs:
            value = np.asarray(got[port.name]["data"], dtype=np.float64).reshape(got[port.name]["shape"])
            assert value.shape == want[port.name].shape, f"{where} set {index} {port.name}"
            delta = float(np.max(np.abs(value - want[port.name]))) if value.size else 0.0
            assert delta <= ATOL, f"{where} set {index} {port.name}: max |Δ| {delta:.3g} > {ATOL}"


@needs_node
def test_node_predicts_match_pytorch(project: Project, node_run: dict[str, Any]) -> None:
    """Every model, loaded each way, on wasm and cpu: outputs named and ordered as in PyTorch, within 1e-4 of
    its reference for every input form, and no tensor left behind by predict()."""
    assert [m["package"] for m in node_run["models"]] == [m.package for m in project.models.values()]
    for model, result in zip(project.models.values(), node_run["models"]):
        assert [run["backend"] for run in result["runs"]] == ["wasm", "cpu"]
        for run in result["runs"]:
            where = f"{model.case.key} on {run['backend']} (load {model.case.load})"
            _assert_outputs(model, run["outputs"], where)
            assert run["tensorOutputs"] == [p.name for p in model.outputs], where
            assert run["tensorsAfter"] == run["tensorsBefore"], f"{where}: predict() leaked tensors"


@needs_node
def test_node_bad_inputs_fail_with_clear_errors(node_run: dict[str, Any]) -> None:
    """int64 ids beyond int32, non-integers, unknown or missing inputs, wrong sizes, a single-input value for a
    model taking names, a tensor of the wrong dtype and a bad option each fail naming what is wrong."""
    errors = [check["error"] for check in node_run["checks"]]
    expected = [
        ("'ids'", "int32", "PyTorch int64", "out of range: 2147483648 at index 1"),
        ("'ids'", "not an integer: 2.5 at index 1"),
        ("unknown input(s) nope", "the model takes 'x'"),
        ("'x'", "must have shape [?, 32] (PyTorch's axis order)", "got [1, 3]"),
        ("needs a multiple of 32 values", "got 3"),
        ("input 'x' is not an image input",),
        ("'x' must be a float32 tensor, got int32",),
        ("input 'image' is missing", "'image', 'features'"),
        ("options.output must be 'tensor' or 'data'",),
    ]
    assert len(errors) == len(expected)
    for error, parts in zip(errors, expected):
        assert error is not None, f"no error where one was expected: {parts}"
        for part in parts:
            assert part in error, f"{part!r} not in {error!r}"


@needs_node
def test_kernel_check_covers_every_kernel_the_runtime_ran(project: Project, node_run: dict[str, Any]) -> None:
    """check_kernels passes on every converted model, and the kernels it derived for the graph's ops include
    every kernel TF.js actually ran (tf.profile in Node, wasm and cpu)."""
    from bridge.tfjs.kernels import check_kernels

    for model, result in zip(project.models.values(), node_run["models"]):
        report = check_kernels(model.folder)
        assert report.ok, report.findings()
        assert [b.name for b in report.backends] == ["cpu", "webgl", "wasm", "webgpu"]
        derived = {kernel for kernels in report.ops.values() for kernel in kernels}
        for run in result["runs"]:
            # customGrad ops (the fused ones) are profiled under their op scope name ("fusedConv2d__op") as well
            # as under the kernels they run: only the latter are kernel lookups.
            ran = {name for name in run["kernels"] if not name.endswith("__op")}
            assert ran, f"{model.case.key}: tf.profile recorded no kernel"
            assert ran <= derived, f"{model.case.key} on {run['backend']}: ran {sorted(ran - derived)} not derived"


# ------------------------------------------------------------------------------------------------ Chromium

@contextmanager
def _chromium() -> Iterator[tuple[Any, Any]]:
    """A fresh headless Chromium as bridge's harness launches it (requests off 127.0.0.1 refused)."""
    from playwright.sync_api import sync_playwright

    status = browser_rt.require_browser()
    assert status.launch_path is not None
    session = browser_rt._Session(base_url="")
    with tempfile.TemporaryDirectory(prefix="bridge-webmodule-") as tmp, sync_playwright() as playwright:
        context = browser_rt._launch(playwright, status.launch_path, Path(tmp), browser_rt._Deadline(120))
        try:
            context.route("**/*", lambda route: browser_rt._route(session, route))
            page = context.pages[0] if context.pages else context.new_page()
            page.on("console", lambda message: browser_rt._console_line(session, message))
            page.on("pageerror", lambda error: session.console.append(f"page error: {error}"))
            yield page, session
        finally:
            context.close()
            browser_rt._kill_leftovers(Path(tmp))


def _browser_site(project: Project, site: Path) -> None:
    site.mkdir()
    shutil.copyfile(HERE / "webmodule_page.html", site / "index.html")
    (site / "tfjs").symlink_to(MODULES / "@tensorflow" / "tfjs" / "dist", target_is_directory=True)
    (site / "models").mkdir()
    models = []
    for key, model in project.models.items():
        (site / "models" / key).symlink_to(model.folder, target_is_directory=True)
        sets = [{p.name: _input_spec(p, sample[p.name], "nested" if i else "typed") for p in model.inputs}
                for i, sample in enumerate(model.samples)]
        models.append({"url": f"./models/{key}/model.js", "backends": ["webgl", "cpu"], "sets": sets})
    (site / "request.json").write_text(json.dumps({"models": models}))


@needs_node
@needs_browser
def test_browser_page_with_import_map_predicts_and_reads_pictures(project: Project, tmp_path: Path) -> None:
    """A plain page (import map for '@tensorflow/tfjs', each model.js by relative URL, model.json found next to
    it) predicts every model on webgl and cpu within 1e-4 of PyTorch, without leaking tensors; fromImage() of a
    canvas gives pixels / 255 in NHWC, and the picture's outputs match PyTorch run on those pixels."""
    from bridge.demo.server import serving

    site = tmp_path / "site"
    _browser_site(project, site)
    with serving(site) as base, _chromium() as (page, session):
        session.base_url = base
        page.goto(f"{base}/index.html", wait_until="load", timeout=120_000)
        page.wait_for_function("() => window.__result !== undefined", timeout=180_000, polling=100)
        result = page.evaluate("() => window.__result")
    assert "error" not in result, result.get("error")
    assert not session.blocked, session.blocked
    assert result["tfjs"] == "4.22.0"
    for model, entry in zip(project.models.values(), result["models"]):
        assert [run["backend"] for run in entry["runs"]] == ["webgl", "cpu"]
        for run in entry["runs"]:
            where = f"{model.case.key} in Chromium on {run['backend']}"
            _assert_outputs(model, run["outputs"], where)
            assert run["tensorsAfter"] == run["tensorsBefore"], f"{where}: leaked tensors"
            if model.case.key in ("tiny_cnn", "two_io"):
                _assert_picture(model, run["picture"], where)
            else:
                assert run["picture"] is None


def _assert_picture(model: Converted, picture: dict[str, Any], where: str) -> None:
    image = model.inputs[0]
    height, width = image.web_shape[1], image.web_shape[2]
    pixels = np.asarray(picture["pixels"], dtype=np.float32).reshape(height, width, 4)[..., :3]
    expected = (pixels * (1.0 / 255.0))[None]
    got = np.asarray(picture["input"]["data"], dtype=np.float32).reshape(picture["input"]["shape"])
    np.testing.assert_allclose(got, expected, atol=1e-6, err_msg=f"{where}: fromImage() preprocessing")
    inputs = {image.name: got, **{p.name: model.samples[0][p.name] for p in model.inputs[1:]}}
    want = model.torch_output(inputs)
    for port in model.outputs:
        value = np.asarray(picture["outputs"][port.name]).reshape(want[port.name].shape)
        delta = float(np.max(np.abs(value - want[port.name])))
        assert delta <= ATOL, f"{where}: picture output {port.name} max |Δ| {delta:.3g}"


# ------------------------------------------------------------------------------------------------ writer

def _model_json(folder: Path, bridge_meta: dict[str, Any] | None, nodes: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model = {"format": "graph-model", "modelTopology": {"node": nodes}, "weightsManifest": [
        {"paths": ["group1-shard1of1.bin"], "weights": []}]}
    if bridge_meta is not None:
        model["userDefinedMetadata"] = {"bridge": bridge_meta}
    (folder / "model.json").write_text(json.dumps(model))
    return folder


def _port(name: str, shape: list[int | None], dtype: str = "float32", layout: str = "source") -> dict[str, Any]:
    return {"name": name, "shape": shape, "dtype": "int32" if dtype == "int64" else dtype, "layout": layout,
            "torchShape": shape, "torchDtype": dtype, "permFromTorch": None}


def test_needs_async_is_detected_from_the_graph_when_not_recorded(tmp_path: Path) -> None:
    """Without needsAsync in the metadata, a graph with control flow gets NEEDS_ASYNC = true, one without false."""
    meta = {"source": "Looping", "inputs": [_port("x", [1, 4])], "outputs": [_port("y", [1, 4])]}
    looping = _model_json(tmp_path / "loop", meta, [{"name": "w", "op": "StatelessWhile"}])
    plain = _model_json(tmp_path / "plain", meta, [{"name": "r", "op": "Relu"}])
    write_web_module(looping)
    write_web_module(plain)
    assert "export const NEEDS_ASYNC = true;" in (looping / "model.js").read_text()
    assert "export const NEEDS_ASYNC = false;" in (plain / "model.js").read_text()
    assert "NEEDS_ASYNC: true;" in (looping / "model.d.ts").read_text()


def test_package_json_names_the_package_and_ships_the_model_files(tmp_path: Path) -> None:
    """package.json: the name from the model's name (or the one given), ES module entry and types, the shards
    model.json lists, TF.js as a peer dependency; labels and preprocessing from the metadata reach model.js."""
    meta = {"source": "MyNet_v2", "inputs": [_port("pixels", [1, 8, 8, 3], layout="nhwc")],
            "outputs": [_port("logits", [1, 2])],
            "labels": ["cat", "dog"], "preprocessing": {"pixels": {"range": [-1, 1], "mean": [0.5, 0.5, 0.5]}}}
    folder = _model_json(tmp_path / "m", meta, [{"name": "r", "op": "Relu"}])
    write_web_module(folder)
    package = json.loads((folder / "package.json").read_text())
    assert package["name"] == "my-net-v2"
    assert package["type"] == "module" and package["exports"]["."] == {"types": "./model.d.ts",
                                                                         "default": "./model.js"}
    assert package["files"] == ["model.js", "model.d.ts", "model.json", "group1-shard1of1.bin"]
    assert package["peerDependencies"] == {"@tensorflow/tfjs": "^4.22.0"} and "dependencies" not in package
    script = (folder / "model.js").read_text()
    assert 'export const LABELS = ["cat", "dog"];' in script
    assert '"range": [-1.0, 1.0], "mean": [0.5, 0.5, 0.5]' in script
    write_web_module(folder, name="@me/pets", version="2.1.0")
    package = json.loads((folder / "package.json").read_text())
    assert (package["name"], package["version"]) == ("@me/pets", "2.1.0")
    assert "from '@me/pets'" in (folder / "model.js").read_text()


def test_write_web_module_refuses_bad_folders_and_names(tmp_path: Path) -> None:
    """No model.json, a model.json without bridge's interface, a shard path leaving the folder, or an invalid
    package name: typed errors, nothing written."""
    with pytest.raises(WebModelError, match="cannot read"):
        write_web_module(tmp_path / "missing")
    bare = _model_json(tmp_path / "bare", None, [])
    with pytest.raises(WebModelError, match="userDefinedMetadata.bridge"):
        write_web_module(bare)
    meta = {"source": "Net", "inputs": [_port("x", [1])], "outputs": [_port("y", [1])]}
    escaping = _model_json(tmp_path / "escaping", meta, [])
    model = json.loads((escaping / "model.json").read_text())
    model["weightsManifest"][0]["paths"] = ["../outside.bin"]
    (escaping / "model.json").write_text(json.dumps(model))
    with pytest.raises(WebModelError, match="outside"):
        write_web_module(escaping)
    good = _model_json(tmp_path / "good", meta, [])
    with pytest.raises(UsageError, match="not a valid npm package name"):
        write_web_module(good, name="Has Spaces")
    for folder in (bare, escaping, good):
        assert not any((folder / name).exists() for name in MODULE_FILES)


@pytest.mark.parametrize(("title", "expected"), [("TinyCNN", "tiny-cnn"), ("MLP", "mlp"),
                                                  ("LinearModel", "linear-model"), ("my_net", "my-net"),
                                                  ("ResNet50V2", "res-net50-v2"), ("__", "web-model")])
def test_package_names_follow_npm_rules(title: str, expected: str) -> None:
    """Model names become lowercase, URL-safe npm names."""
    assert package_name(title) == expected

