"""The per-backend kernel check (bridge.tfjs.kernels): graph ops against the kernels each installed TF.js backend
registers, both read from bridge's pinned npm packages.

Graphs are tiny model.json files written here (the check reads only modelTopology). Every backend must run the
common graphs, including ops whose gradients need kernels wasm lacks (gradient code is not inference); the
must-fail graphs use ops a backend really lacks in 4.22.0 (wasm has no Einsum, FFT or complex kernels; webgpu has
no Unique or BitwiseAnd), and each must be named as a finding for exactly that backend.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bridge.errors import MissingDependencyError, WebModelError
from bridge.runtime import node as node_rt
from bridge.tfjs import kernels
from bridge.tfjs.kernels import BACKENDS, check_kernels, tokenize

MODULES = node_rt.node_modules_dir()
_NODE = node_rt.node_status()
pytestmark = [pytest.mark.node, pytest.mark.skipif(
    not _NODE.ok or not (MODULES / "@tensorflow" / "tfjs-backend-webgpu").is_dir(),
    reason="; ".join(_NODE.problems) or "@tensorflow/tfjs-backend-webgpu not installed")]

COMPLEX = {"T": {"type": "DT_COMPLEX64"}}


def _node(name: str, op: str, attr: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "op": op, "attr": attr or {}}


def _graph(folder: Path, nodes: list[dict[str, Any]], functions: dict[str, list[dict[str, Any]]] | None = None
           ) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    topology: dict[str, Any] = {"node": [_node("x", "Placeholder"), _node("w", "Const"), *nodes]}
    if functions:
        topology["library"] = {"function": [{"signature": {"name": name}, "nodeDef": body}
                                            for name, body in functions.items()]}
    (folder / "model.json").write_text(json.dumps({"format": "graph-model", "modelTopology": topology,
                                                   "weightsManifest": []}))
    return folder


PASSING = {
    "conv net": [_node("conv", "_FusedConv2D"), _node("pool", "MaxPool"), _node("relu", "Relu"),
                 _node("mean", "Mean"), _node("dense", "_FusedMatMul"), _node("softmax", "Softmax"),
                 _node("out", "Identity")],
    "transformer block": [_node("embed", "GatherV2"), _node("qk", "BatchMatMulV2"), _node("t", "Transpose"),
                          _node("r", "Reshape"), _node("gelu", "Erf"), _node("norm", "Rsqrt"),
                          _node("var", "SquaredDifference"), _node("tanh", "Tanh"), _node("pow", "Pow"),
                          _node("cat", "ConcatV2"), _node("slice", "StridedSlice"), _node("stack", "Pack"),
                          _node("cast", "Cast"), _node("sm", "LogSoftmax")],
    # Their gradients need Conv2DBackpropFilter / DepthwiseConv2dNativeBackprop*, which wasm lacks: not inference.
    "convolutions wasm trains without": [_node("dw", "DepthwiseConv2dNative"), _node("up", "Conv2DBackpropInput"),
                                         _node("fdw", "FusedDepthwiseConv2dNative"), _node("c", "Conv2D")],
    # Abs and Transpose have complex64 branches (ComplexAbs, Complex/Real/Imag: not in wasm); float graphs skip them.
    "float ops with complex branches": [_node("abs", "Abs"), _node("t", "Transpose"), _node("cat", "ConcatV2")],
    "control flow": [_node("loop", "StatelessWhile"), _node("list", "TensorListStack"),
                     _node("nms", "NonMaxSuppressionV5")],
}


@pytest.mark.parametrize("name", list(PASSING))
def test_every_backend_has_every_kernel(name: str, tmp_path: Path) -> None:
    """Common graphs: every installed backend (cpu, webgl, wasm, webgpu) registers every kernel they need."""
    report = check_kernels(_graph(tmp_path, PASSING[name]))
    assert report.ok, report.findings()
    assert [b.name for b in report.backends] == list(BACKENDS)
    assert report.findings() == [] and not report.unmapped
    assert report.summary() == f"kernels: cpu, webgl, wasm, webgpu register every kernel for the " \
                               f"{len(PASSING[name]) + 2} op type(s)"


MISSING = [
    ("Einsum", {}, "wasm", {"Einsum"}),
    ("Unique", {}, "webgpu", {"Unique"}),
    ("BitwiseAnd", {}, "webgpu", {"BitwiseAnd"}),
    ("FFT", COMPLEX, "wasm", {"FFT"}),
    # The complex64 branch of Transpose counts once the graph holds complex tensors.
    ("Transpose", COMPLEX, "wasm", {"Complex", "Imag", "Real"}),
]


@pytest.mark.parametrize(("op", "attr", "backend", "lacking"), MISSING, ids=[f"{m[0]}-{m[2]}" for m in MISSING])
def test_a_backend_lacking_a_kernel_is_named(op: str, attr: dict[str, Any], backend: str, lacking: set[str],
                                              tmp_path: Path) -> None:
    """A graph using an op a backend lacks kernels for: one finding for that backend naming the op, the missing
    kernels and the node; the other backends are fine."""
    report = check_kernels(_graph(tmp_path, [_node("a", "Relu"), _node(f"the_{op.lower()}", op, attr),
                                             _node(f"second_{op.lower()}", op, attr)]))
    assert not report.ok
    (finding,) = report.missing(backend)
    assert finding.op == op
    assert lacking <= set(finding.kernels), finding
    assert finding.nodes == (f"the_{op.lower()}", f"second_{op.lower()}")
    assert [b.name for b in report.backends if not b.ok] == [backend], report.findings()
    line = next(f for f in report.findings() if f.startswith(backend))
    assert op in line and f"2 node(s): the_{op.lower()}, second_{op.lower()}" in line
    assert f"{backend} lacks" in report.summary() and f"(op {op})" in report.summary()
    data = report.to_dict()
    assert data["ok"] is False
    entry = next(b for b in data["backends"] if b["name"] == backend)
    assert entry["missing"][0]["op"] == op and set(entry["missing"][0]["missingKernels"]) >= lacking


def test_ops_inside_library_functions_are_checked(tmp_path: Path) -> None:
    """An op used only inside a control-flow body (a library function) is checked and named with its function."""
    report = check_kernels(_graph(tmp_path, [_node("loop", "StatelessWhile")],
                                  {"while_body_7": [_node("mix", "Einsum"), _node("add", "AddV2")]}))
    (finding,) = report.missing("wasm")
    assert (finding.op, finding.nodes) == ("Einsum", ("while_body_7/mix",))


def test_an_op_without_executor_fails_for_every_backend(tmp_path: Path) -> None:
    """An op TF.js has no executor for (a custom op) cannot run anywhere: reported as unmapped."""
    report = check_kernels(_graph(tmp_path, [_node("mine", "MyCustomOp"), _node("r", "Relu")]))
    assert not report.ok
    assert report.unmapped == {"MyCustomOp": ("mine",)}
    assert all(b.ok for b in report.backends)
    assert report.findings() == ["no TF.js executor for op MyCustomOp (1 node(s): mine)"]
    assert "1 op type(s) without a TF.js executor (MyCustomOp)" in report.summary()


def test_the_op_map_is_derived_from_the_installed_converter() -> None:
    """Spot checks of the derived map: aliases share a kernel, fused ops use their fused kernel, ops TF.js
    computes in JavaScript need none; every op bridge's writer accepts has an entry."""
    from bridge.tfjs.op_list import SUPPORTED_OPS

    facts = kernels.installed_kernel_facts(MODULES)
    table = facts.op_kernels
    assert SUPPORTED_OPS <= set(table), sorted(SUPPORTED_OPS - set(table))
    assert table["Relu"] == ("Relu",)
    assert table["AddV2"] == table["BiasAdd"] == table["Add"] == ("Add",)
    assert table["MatMul"] == table["BatchMatMulV2"] == ("BatchMatMul",)
    assert table["_FusedConv2D"] == ("FusedConv2D", "Reshape")
    assert table["Split"] == ("SplitV",)
    for op in ("Const", "Placeholder", "Shape", "NonMaxSuppressionV5", "RandomUniform", "StatelessWhile"):
        assert table[op] == (), (op, table[op])
    assert facts.kernels_for("Abs", complex_dtype=False) == ("Abs",)
    assert facts.kernels_for("Abs", complex_dtype=True) == ("Abs", "ComplexAbs")
    assert {"Einsum", "FFT"} - facts.registered["wasm"] == {"Einsum", "FFT"}
    assert "Einsum" in facts.registered["cpu"] and "Unique" not in facts.registered["webgpu"]


def test_facts_are_cached_per_installed_versions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the first read, neither Node nor the JavaScript scan runs again for the same packages."""
    check_kernels(_graph(tmp_path / "a", PASSING["conv net"]))  # fills the cache if it was empty
    kernels._facts.cache_clear()

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(kernels, "registered_kernels", refuse)
    monkeypatch.setattr(kernels, "derive_op_kernels", refuse)
    assert check_kernels(_graph(tmp_path / "b", PASSING["conv net"])).ok


def _partial_modules(target: Path, leave_out: set[str]) -> Path:
    """A node_modules folder linking bridge's packages except the @tensorflow ones in `leave_out`."""
    modules = target / "node_modules"
    (modules / "@tensorflow").mkdir(parents=True)
    for entry in MODULES.iterdir():
        if entry.name not in ("@tensorflow", ".cache"):
            (modules / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    for entry in (MODULES / "@tensorflow").iterdir():
        if entry.name not in leave_out:
            (modules / "@tensorflow" / entry.name).symlink_to(entry, target_is_directory=True)
    return modules


def test_backends_not_installed_are_listed(tmp_path: Path) -> None:
    """Without the wasm and webgpu packages, those two are listed as not installed and only cpu and webgl are
    checked."""
    modules = _partial_modules(tmp_path / "partial", {"tfjs-backend-wasm", "tfjs-backend-webgpu"})
    report = check_kernels(_graph(tmp_path / "m", [_node("mix", "Einsum")]), node_modules=modules)
    assert [b.name for b in report.backends] == ["cpu", "webgl"]
    assert report.not_installed == ("wasm", "webgpu")
    assert report.ok


def test_bad_folders_and_missing_packages_are_typed_errors(tmp_path: Path) -> None:
    """No model.json, a layers model, or no TF.js in node_modules: WebModelError / MissingDependencyError."""
    with pytest.raises(WebModelError, match="cannot read"):
        check_kernels(tmp_path / "nothing")
    layers = tmp_path / "layers"
    layers.mkdir()
    (layers / "model.json").write_text(json.dumps({"format": "layers-model", "modelTopology": {}}))
    with pytest.raises(WebModelError, match="not a TF.js graph model"):
        check_kernels(layers)
    empty = tmp_path / "empty_modules"
    empty.mkdir()
    with pytest.raises(MissingDependencyError, match="TF.js is not installed"):
        check_kernels(_graph(tmp_path / "g", [_node("r", "Relu")]), node_modules=empty)


def test_the_scanner_keeps_braces_inside_strings_templates_and_regexes_apart() -> None:
    """Brace matching (what finds a function's body) is not fooled by '}' in strings, template literals (with
    nested ${...}) or regular expressions, and comments are dropped."""
    source = "function f(a) { const s = '}'; const t = `x${ {b: '}'}.b }}`; const r = /[}]\\//g; /* } */ " \
             "return a / 2 / r; } const after = 1;"
    tokens = tokenize(source)
    values = [t.value for t in tokens]
    body = values.index("{")
    close = kernels.matching(tokens, body)
    assert values[close + 1:close + 3] == ["const", "after"]
    assert [t.kind for t in tokens if t.kind in ("tpl", "re")] == ["tpl", "re"]
    assert "*/" not in " ".join(values)
