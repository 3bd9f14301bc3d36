"""Shared by the native dynamic-shape tests: rebuild a model natively, compare the generated TF model with PyTorch
at several input sizes, write the web model and compare TF.js (Node, and Chromium when asked) with PyTorch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
import torch

from bridge.native import NativeRebuild, rebuild_tf

InputSet = Sequence[np.ndarray]  # PyTorch layout, in forward() order


@dataclass(frozen=True)
class Tolerance:
    """allclose tolerances against PyTorch eager (float32)."""

    atol: float
    rtol: float


def torch_outputs(module: torch.nn.Module, arrays: InputSet) -> list[np.ndarray]:
    """PyTorch eager outputs (a tensor or a tuple of tensors) as arrays."""
    with torch.no_grad():
        result = module(*[torch.from_numpy(np.asarray(a)) for a in arrays])
    items = result if isinstance(result, (tuple, list)) else (result,)
    return [t.detach().numpy() for t in items]


def rebuild(module: torch.nn.Module, example: InputSet, out: Path, names: Sequence[str],
            dynamic: dict[str, dict[int, str]]) -> NativeRebuild:
    """rebuild_tf on the example arrays with the dynamic dims given."""
    return rebuild_tf(module.eval(), [torch.from_numpy(np.asarray(a)) for a in example], out,
                      input_names=list(names), dynamic_dims=dynamic)


def check_tf(result: NativeRebuild, module: torch.nn.Module, sets: Sequence[InputSet], tol: Tolerance) -> float:
    """The generated TF model on every input set vs PyTorch; returns the largest |difference|."""
    worst = 0.0
    for arrays in sets:
        got = result.run_torch_layout(*arrays)
        for g, w in zip(got, torch_outputs(module, arrays)):
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w, atol=tol.atol, rtol=tol.rtol)
            worst = max(worst, float(np.abs(g - w).max()))
    return worst


def node_problem() -> str | None:
    """Why TF.js in Node cannot run here (None when it can)."""
    from bridge.runtime.node import node_status

    problems = node_status().problems
    return "; ".join(problems) if problems else None


def browser_problem() -> str | None:
    """Why TF.js in headless Chromium cannot run here (None when it can)."""
    from bridge.runtime.browser import browser_status

    problems = browser_status().problems
    return "; ".join(problems) if problems else None


def write_web_model(result: NativeRebuild, out: Path) -> Path:
    """The SavedModel through bridge's TF.js writer."""
    from bridge.tfjs.convert import TfjsOptions, convert_saved_model

    convert_saved_model(result.saved_model_dir, out, TfjsOptions())
    return out


def _feeds(result: NativeRebuild, sets: Sequence[InputSet]) -> list[dict[str, np.ndarray]]:
    """Web-layout input sets keyed by input name (the signature may list inputs in another order)."""
    return [{port.name: port.to_web(a) for port, a in zip(result.inputs, arrays)} for arrays in sets]


def _compare_runs(result: NativeRebuild, module: torch.nn.Module, sets: Sequence[InputSet], runs: dict,
                  tol: Tolerance) -> dict[str, float]:
    worst: dict[str, float] = {}
    for backend, run in runs.items():
        assert run.ok, f"{backend}: {run.error}"
        assert len(run.outputs) == len(sets)
        worst[backend] = 0.0
        for outputs, arrays in zip(run.outputs, sets):
            for port, want in zip(result.outputs, torch_outputs(module, arrays)):
                got = port.to_torch(outputs[port.name])
                assert got.shape == want.shape, (backend, port.name)
                np.testing.assert_allclose(got, want, atol=tol.atol, rtol=tol.rtol, err_msg=f"{backend} {port.name}")
                worst[backend] = max(worst[backend], float(np.abs(got - want).max()))
    return worst


def check_node(result: NativeRebuild, module: torch.nn.Module, sets: Sequence[InputSet], web: Path, tol: Tolerance,
               backends: Sequence[str] = ("wasm", "cpu")) -> dict[str, float]:
    """TF.js in Node on every backend and input set vs PyTorch (skips when Node is missing); returns the largest
    |difference| per backend."""
    problem = node_problem()
    if problem:
        pytest.skip(problem)
    from bridge.runtime.node import run_graph_model

    runs = run_graph_model(web, _feeds(result, sets), backends=backends)
    return _compare_runs(result, module, sets, runs, tol)


def check_browser(result: NativeRebuild, module: torch.nn.Module, sets: Sequence[InputSet], web: Path,
                  tol: Tolerance, backends: Sequence[str] = ("webgl", "wasm")) -> dict[str, float]:
    """TF.js in headless Chromium vs PyTorch (skips when Chromium or Playwright is missing)."""
    problem = browser_problem()
    if problem:
        pytest.skip(problem)
    from bridge.runtime.browser import run_in_browser

    run = run_in_browser(web, _feeds(result, sets), backends=backends, indexeddb_roundtrip=False, warmup=0,
                         repeats=1)
    return _compare_runs(result, module, sets, run.backends, tol)
