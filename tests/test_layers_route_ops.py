"""Every op of the custom-layer table (bridge.layers_route.custom_ops.OPS) in generated JavaScript, run by TF.js in
Node (wasm and cpu) against PyTorch: one model holds one small module per op, converted once and run in one Node
process. Each module multiplies its input by a buffer of ones first, so the whole module becomes one custom layer
(and ops that also have a Keras layer, relu or softmax, are emitted as table ops). The input is a 4-D image map,
held NHWC in the layers model, so every axis argument goes through the layout. Tolerance 1e-5 absolute (inputs
of order 1)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bridge.layers_route.custom_ops import OPS
from bridge.runtime.node import node_status

ATOL = 1e-5

# (case name, function of x (2, 3, 4, 6), table ops it must be emitted with)
CASES: list[tuple[str, Callable[[torch.Tensor], torch.Tensor], set[str]]] = [
    ("neg", lambda x: -x, {"neg"}),
    ("exp", torch.exp, {"exp"}),
    ("log", lambda x: torch.log(x.abs() + 1), {"log", "abs", "add"}),
    ("sqrt", lambda x: torch.sqrt(x.abs()), {"sqrt"}),
    ("rsqrt", lambda x: torch.rsqrt(x.abs() + 0.5), {"rsqrt"}),
    ("trig", lambda x: torch.sin(x) * torch.cos(x), {"sin", "cos"}),
    ("tanh_sigmoid", lambda x: torch.tanh(x) + torch.sigmoid(x), {"tanh", "sigmoid"}),
    ("relu", lambda x: F.relu(x) - F.relu6(3 * x), {"relu", "relu6", "sub"}),
    ("square_reciprocal", lambda x: x ** 2 + 1 / (x.abs() + 1), {"square", "div"}),
    ("reciprocal", lambda x: torch.reciprocal(x.abs() + 1), {"reciprocal"}),
    ("erf", torch.erf, {"erf"}),
    ("softplus", F.softplus, {"softplus"}),
    ("gelu", F.gelu, {"gelu"}),
    ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"), {"gelu_tanh"}),
    ("silu", F.silu, {"silu"}),
    ("elu", F.elu, {"elu"}),
    ("leaky_relu", lambda x: F.leaky_relu(x, 0.2), {"leaky_relu"}),
    ("hardsigmoid", F.hardsigmoid, {"hardsigmoid"}),
    ("clamp", lambda x: x.clamp(-0.3, 0.5) + torch.clamp(x, min=0.1), {"clamp"}),
    ("pow", lambda x: x.abs() ** 1.5, {"pow_scalar"}),
    ("min_max", lambda x: torch.maximum(x, torch.cos(x)) - torch.minimum(x, 0.5 * x), {"maximum", "minimum"}),
    ("mean_channels", lambda x: x.mean(dim=1, keepdim=True) * x, {"mean"}),
    # A tensor used twice by one step (x * x, x + x): tfjs-layers would dispose it after the first use.
    ("rms_norm", lambda x: x * torch.rsqrt((x * x).mean(dim=1, keepdim=True) + 1e-6) + (x + x), {"square", "mean"}),
    ("sum_width", lambda x: x.sum(dim=3), {"sum"}),
    ("amax_amin", lambda x: x.amax(dim=(2, 3), keepdim=True) - x.amin(dim=2, keepdim=True), {"amax", "amin"}),
    ("softmax", lambda x: F.softmax(x, dim=1), {"softmax"}),
    ("log_softmax_height", lambda x: F.log_softmax(x, dim=2), {"log_softmax"}),
    ("matmul", lambda x: x @ x.transpose(-1, -2), {"matmul"}),
    ("slice", lambda x: x[:, 1:, :, -1] * 2 + x[:, :2, ..., 2:5].mean(dim=3), {"slice"}),
    ("pad", lambda x: F.pad(x, (1, 2, 0, 1), value=0.5), {"pad"}),
    ("resize", lambda x: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False), {"resize_bilinear"}),
    ("resize_corners", lambda x: F.interpolate(x, size=(7, 9), mode="bilinear", align_corners=True),
     {"resize_bilinear"}),
    ("resize_down", lambda x: F.interpolate(x, size=(3, 4), mode="bilinear", align_corners=False),
     {"resize_bilinear"}),
    ("upsample", lambda x: F.interpolate(x, scale_factor=(2, 3), mode="nearest"), {"resize_nearest"}),
    ("resize_nearest", lambda x: F.interpolate(x, size=(3, 9), mode="nearest"), {"resize_nearest"}),
]


class OpCase(nn.Module):
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn
        self.register_buffer("one", torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x * self.one)


class OpsModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ops = nn.ModuleDict({name: OpCase(fn) for name, fn, _ in CASES})

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(case(x) for case in self.ops.values())


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not node_status().ok:
        pytest.skip("Node or the pinned TF.js npm packages are missing")
    from bridge.layers_route import LayersRouteOptions, write_layers_route
    from bridge.runtime.node import run_layers_model

    module = OpsModel().eval()
    x = torch.randn(2, 3, 4, 6, generator=torch.Generator().manual_seed(0))
    out = Path(tmp_path_factory.mktemp("ops")) / "ops"
    result = write_layers_route(module, [x], out, LayersRouteOptions(output_names=[n for n, _, _ in CASES]))
    interface = result.conversion.interface
    web = interface.inputs[0].to_web(x.numpy())
    runs = run_layers_model(out, [{interface.inputs[0].name: web}], backends=("wasm", "cpu"))
    with torch.no_grad():
        reference = [port.to_web(t.numpy()) for port, t in zip(interface.outputs, module(x))]
    return {"result": result, "runs": runs, "reference": dict(zip([n for n, _, _ in CASES], reference)),
            "ports": {p.name: p for p in interface.outputs}}


def test_the_cases_cover_every_table_op() -> None:
    covered = set().union(*(ops for _, _, ops in CASES)) | {"mul"}
    assert covered >= set(OPS) - {"add"} or covered == set(OPS)
    assert covered <= set(OPS)


@pytest.mark.skipif(not node_status().ok, reason="Node or the pinned TF.js npm packages are missing")
@pytest.mark.parametrize(("name", "ops"), [(n, o) for n, _, o in CASES], ids=[n for n, _, _ in CASES])
def test_op_in_generated_javascript_matches_pytorch(ran: dict[str, Any], name: str, ops: set[str]) -> None:
    plan = ran["result"].conversion.plan
    used = {step.op for spec in plan.layers if spec.program is not None and spec.owner == f"ops.{name}"
            for step in spec.program.steps}
    assert ops <= used, f"{name} was emitted with {sorted(used)}"
    want = ran["reference"][name]
    for backend, run in ran["runs"].items():
        assert run.error is None, run.error
        got = run.outputs[0][name]
        assert got.shape == want.shape, (backend, got.shape, want.shape)
        assert np.max(np.abs(got - want)) <= ATOL, (backend, float(np.max(np.abs(got - want))))


@pytest.mark.skipif(not node_status().ok, reason="Node or the pinned TF.js npm packages are missing")
@pytest.mark.parametrize("name", ["log", "trig", "relu", "clamp", "min_max", "mean_channels", "softmax", "pad"])
def test_a_module_of_table_ops_is_one_custom_layer(ran: dict[str, Any], name: str) -> None:
    """Fused: every step of the module in one layer (a module needing a layout change in between, a matmul's
    operands in PyTorch's order, keeps a Permute layer between two custom layers)."""
    plan = ran["result"].conversion.plan
    layers = [spec for spec in plan.layers if spec.owner == f"ops.{name}"]
    assert len(layers) == 1 and layers[0].program is not None, [(s.name, s.class_name) for s in layers]
    assert len(layers[0].program.steps) >= 2


class _Through(nn.Module):
    """conv -> op -> conv: a train step then checks the op's gradient in TF.js against PyTorch's."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.fn = fn
        self.b = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.fn(self.a(x)))


THROUGH = [
    ("resize_bilinear", lambda x: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)),
    ("resize_bilinear_corners", lambda x: F.interpolate(x, size=(9, 7), mode="bilinear", align_corners=True)),
    ("resize_nearest", lambda x: F.interpolate(x, size=(9, 7), mode="nearest")),
    ("gelu_tanh_clamp", lambda x: F.gelu(x, approximate="tanh").clamp(max=0.5)),
]


@pytest.mark.skipif(not node_status().ok, reason="Node or the pinned TF.js npm packages are missing")
@pytest.mark.parametrize(("name", "fn"), THROUGH, ids=[n for n, _ in THROUGH])
def test_training_through_a_custom_op_matches_pytorch(tmp_path: Path, name: str, fn: Any) -> None:
    from bridge.layers_route import train_step_parity, write_layers_route

    torch.manual_seed(0)
    module = _Through(fn)
    x = torch.randn(3, 3, 6, 5)
    with torch.no_grad():
        target = torch.randn_like(module(x))
    write_layers_route(module, [x], tmp_path / "m")
    result = train_step_parity(module, tmp_path / "m", [x], target, optimizer="sgd", learning_rate=0.1)
    assert result.ok, [c for c in result.checks if not c.ok]
    assert all(c.torch_change > 0 for c in result.checks if c.key.startswith("a."))
