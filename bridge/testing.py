"""Parity checks for your own test suite: does the web model you ship still compute what your PyTorch model does?

    from bridge.testing import assert_parity

    def test_web_model_matches():
        assert_parity(MyNet().eval(), "web/model", {"x": np.random.rand(1, 3, 64, 64).astype("float32")},
                      atol=1e-4, rtol=1e-3, backends=("wasm",))

`assert_parity` runs the web model in the real TF.js runtime (Node; the browser too with ``browser=True``) and
compares it with the PyTorch model on the given inputs, under bridge's tolerance policy (the quantization of the
web model widens it). On a mismatch it raises an `AssertionError` whose message is the short form of the parity
report, with the first diverging layer when it can be found.

pytest: the ``bridge_parity`` fixture is `assert_parity`, except that a missing TF.js runtime skips the test instead
of failing it. Enable it with ``pytest_plugins = ["bridge.testing"]`` in your conftest.py (or through the
``pytest11`` entry point when bridge is installed with it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bridge.errors import MissingDependencyError, UsageError, WebModelError
from bridge.stages.result import StageResult, Status, stages_ok

STAGE = "assert-parity"


@dataclass
class ParityCheck:
    """What `assert_parity` found: each stage's result and, when a stage did not pass, the per-layer bisection."""

    stages: list[StageResult]
    bisection: Any = None

    @property
    def ok(self) -> bool:
        """True when every stage passed (a test that asked for a stage wants it to run)."""
        return stages_ok(self.stages, strict=True)

    def short_report(self, web_model: str = "the web model") -> str:
        """The report's short form: the verdict, one line per stage, the worst outputs, the first divergence."""
        verdict = "holds" if self.ok else "does not hold"
        lines = [f"bridge parity {verdict} for {web_model}:"]
        for stage in self.stages:
            worst = f" max|Δ| {stage.max_abs:.3g}" if stage.max_abs is not None else ""
            lines.append(f"  {stage.status.symbol} {stage.name} {stage.status.value}{worst}"
                         + (f" ({stage.reason})" if stage.reason else ""))
            lines += [f"      {o.name}: {o.message} (cosine {o.cosine:.7g})" if o.cosine is not None
                      else f"      {o.name}: {o.message}" for o in stage.outputs if o.status is not Status.PASS]
        if self.bisection is not None:
            lines.append(f"  {self.bisection.summary()}")
        return "\n".join(lines)


def _interface(web_model: Path) -> Any:
    """The web model's interface, from bridge's metadata (else the signature, as is)."""
    from bridge.source.ports import interface_from_model_json, interface_from_signature

    path = web_model / "model.json"
    try:
        model = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise WebModelError(f"cannot read {path}: {exc}", stage=STAGE,
                            hint="pass the folder holding model.json and its weight shards") from exc
    try:
        return interface_from_model_json(model, STAGE)
    except WebModelError:
        return interface_from_signature(model)


def _as_array(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)


def _input_sets(inputs: Any, ports: Sequence[Any]) -> list[dict[str, np.ndarray]]:
    """One set ({name: array}, or arrays/tensors in forward() order, or a single array) or a list of sets."""
    names = [p.name for p in ports]
    if isinstance(inputs, Mapping):
        return [{str(k): _as_array(v) for k, v in inputs.items()}]
    if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(s, Mapping) for s in inputs):
        return [{str(k): _as_array(v) for k, v in s.items()} for s in inputs]
    if isinstance(inputs, (list, tuple)):
        if len(inputs) != len(names):
            raise UsageError(f"{len(inputs)} input arrays given, the web model takes {len(names)} ({names})",
                             stage=STAGE)
        return [dict(zip(names, (_as_array(v) for v in inputs)))]
    if len(names) == 1:
        return [{names[0]: _as_array(inputs)}]
    raise UsageError(f"the web model takes {len(names)} inputs ({names}); pass a dict of arrays", stage=STAGE)


def _specs(sets: Sequence[Mapping[str, np.ndarray]], ports: Sequence[Any]) -> list[Any]:
    from bridge.source.inputs import InputSpec

    missing = [p.name for p in ports if any(p.name not in s for s in sets)]
    if missing:
        raise UsageError(f"inputs {missing} are missing", stage=STAGE,
                         hint=f"the web model takes {[p.name for p in ports]}")
    return [InputSpec(name=p.name, shape=tuple(sets[0][p.name].shape), dtype=str(sets[0][p.name].dtype))
            for p in ports]


def _reference(module: Any, sets: Sequence[Mapping[str, np.ndarray]], specs: Sequence[Any],
               out_ports: Sequence[Any]) -> list[dict[str, np.ndarray]]:
    from bridge.source.reference import run_reference

    names = [p.name for p in out_ports]
    default_names, reference = run_reference(module, sets, specs)
    if len(default_names) != len(names):
        raise UsageError(f"the PyTorch model returns {len(default_names)} output(s), the web model has "
                         f"{len(names)} ({names})", stage=STAGE, hint="pass the model the web model was made from")
    return [dict(zip(names, r.values())) for r in reference]


def assert_parity(torch_model: Any, web_model_dir: str | Path, inputs: Any, *, atol: float | None = None,
                  rtol: float | None = None, backends: Sequence[str] = ("wasm",), browser: bool = False,
                  replay: bool = False, layers: bool = True) -> ParityCheck:
    """Assert that the TF.js web model in `web_model_dir` matches `torch_model` on `inputs` (PyTorch layout).

    `inputs`: a {name: array or tensor} dict, a list of such dicts (several sample sets), arrays in forward() order,
    or one array. `backends` are TF.js Node backends (``wasm``, ``cpu``); `browser` adds headless Chromium
    (webgl, wasm); `replay` adds the graph replayed in TensorFlow. Tolerances default to bridge's policy
    (README: atol 1e-4, rtol 1e-3, widened for quantized weights). On a mismatch, with `layers`, the PyTorch
    model's modules are compared with the web graph's nodes to name the first diverging layer. Raises
    AssertionError with the short report; MissingDependencyError when TF.js in Node is not installed.
    """
    check = check_parity(torch_model, web_model_dir, inputs, atol=atol, rtol=rtol, backends=backends,
                         browser=browser, replay=replay, layers=layers)
    if not check.ok:
        raise AssertionError(check.short_report(str(web_model_dir)))
    return check


def check_parity(torch_model: Any, web_model_dir: str | Path, inputs: Any, *, atol: float | None = None,
                 rtol: float | None = None, backends: Sequence[str] = ("wasm",), browser: bool = False,
                 replay: bool = False, layers: bool = True) -> ParityCheck:
    """`assert_parity` without the assertion: returns the `ParityCheck` whatever the verdict."""
    from bridge.bisect.run import BisectInputs, bisect_run
    from bridge.options import ConvertOptions
    from bridge.runtime.node import require_node
    from bridge.stages.artifacts import Artifacts, WebModel
    from bridge.stages.context import RunInputs
    from bridge.stages.plan import Entry, PlanRequest, build_plan
    from bridge.stages.runner import run_plan
    from bridge.util.progress import Progress

    web_model = Path(web_model_dir)
    interface = _interface(web_model)
    if backends:
        require_node()
    sets = _input_sets(inputs, interface.inputs)
    specs = _specs(sets, interface.inputs)
    torch_model = torch_model.eval() if hasattr(torch_model, "eval") else torch_model
    reference = _reference(torch_model, sets, specs, interface.outputs)
    options = ConvertOptions(atol=atol, rtol=rtol, node_backends=tuple(backends), browser=browser, samples=len(sets))
    run = RunInputs(tuple(specs), tuple(sets), tuple(reference), tuple(p.name for p in interface.outputs), options,
                    web_model.parent, Progress(quiet=True))
    artifacts = Artifacts(module=torch_model, web_model=WebModel.read(web_model), interface=interface)
    plan = build_plan(PlanRequest(Entry.ASSERT, None, options, replay=replay))
    check = ParityCheck(list(run_plan(plan, run, artifacts, omit_missing=True).stages))
    if layers and not check.ok:
        check.bisection = bisect_run(BisectInputs(run, artifacts), plan, check.stages)
    return check


def _parity_fixture() -> Callable[..., ParityCheck]:
    """`assert_parity`, skipping the calling test when TF.js in Node (or Chromium) is not installed."""
    import pytest

    def check(*args: Any, **kwargs: Any) -> ParityCheck:
        try:
            return assert_parity(*args, **kwargs)
        except MissingDependencyError as exc:
            pytest.skip(f"bridge parity needs TF.js: {exc.message}")
            raise  # unreachable: pytest.skip raises

    return check


try:  # the fixture exists only where pytest does; bridge itself does not depend on it
    import pytest as _pytest
except ImportError:  # pragma: no cover - pytest-less installs
    _pytest = None

if _pytest is not None:
    bridge_parity = _pytest.fixture(name="bridge_parity")(_parity_fixture)
