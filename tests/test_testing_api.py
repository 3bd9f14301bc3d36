"""`bridge.testing.assert_parity` and the `bridge_parity` pytest fixture, used the way a user's test suite would:
a PyTorch model, the web model folder it was converted to, some inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from bridge.testing import assert_parity, bridge_parity, check_parity  # noqa: F401 - bridge_parity is the fixture
from test_bisect import CULPRIT, converted, copy_of, culprit_weight, make_net, tamper_web_weight

pytestmark = pytest.mark.node

X = np.random.default_rng(3).standard_normal((1, 3, 16, 16)).astype(np.float32)
X2 = np.random.default_rng(4).standard_normal((1, 3, 16, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def web_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The web model folder a user ships (converted from `make_net()`)."""
    return converted(tmp_path_factory, "clean") / "web_model"


@pytest.fixture()
def broken_web_model(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    """The same web model with features.4's kernel scaled by 1.02 (as if someone edited it by hand)."""
    out = copy_of(converted(tmp_path_factory, "clean"), tmp_path / "out")
    tamper_web_weight(out / "web_model", culprit_weight(make_net()))
    return out / "web_model"


def test_users_test_passes(web_model: Path) -> None:
    """What a user writes."""
    model = make_net()
    assert_parity(model, web_model, {"x": X}, atol=1e-4, rtol=1e-3, backends=("wasm",))


INPUT_FORMS: list[tuple[str, Callable[[], Any], int]] = [
    # (id, inputs, number of sample sets)
    ("dict of arrays", lambda: {"x": X}, 1),
    ("dict of tensors", lambda: {"x": torch.from_numpy(X)}, 1),
    ("list of sets", lambda: [{"x": X}, {"x": X2}], 2),
    ("tuple in forward order", lambda: (X,), 1),
    ("single tensor", lambda: torch.from_numpy(X2), 1),
]


@pytest.mark.parametrize("inputs, sets", [c[1:] for c in INPUT_FORMS], ids=[c[0] for c in INPUT_FORMS])
def test_input_forms(web_model: Path, inputs: Callable[[], Any], sets: int) -> None:
    check = assert_parity(make_net(), web_model, inputs(), backends=("wasm", "cpu"))
    assert check.ok and [s.name for s in check.stages] == ["tfjs-node-wasm", "tfjs-node-cpu"]
    for stage in check.stages:
        assert stage.max_abs is not None and stage.max_abs < 1e-5  # against PyTorch, NHWC handled for the user
        assert stage.outputs[0].atol == 1e-4 and stage.outputs[0].rtol == 1e-3  # README defaults


def test_mismatch_raises_with_the_short_report(broken_web_model: Path) -> None:
    with pytest.raises(AssertionError) as caught:
        assert_parity(make_net(), broken_web_model, [{"x": X}, {"x": X2}], backends=("wasm",), replay=True)
    message = str(caught.value)
    first_line = message.splitlines()[0]
    assert first_line == f"bridge parity does not hold for {broken_web_model}:"
    assert "≈ tfjs-graph inaccurate" in message and "≈ tfjs-node-wasm inaccurate" in message
    assert f"first diverging layer {CULPRIT} (Conv2d" in message
    assert "exceeds atol 0.0001" in message
    assert len(message.splitlines()) <= 10  # short: not the whole report


TOLERANCE_CASES = [
    # (id, model, atol, rtol, passes): the tolerance is the user's; a different model fails
    ("edited weight, default tolerance", "broken", None, None, False),
    ("edited weight, loose tolerance", "broken", 0.1, 0.1, True),
    ("another model", "other", None, None, False),
]


@pytest.mark.parametrize("which, atol, rtol, passes", [c[1:] for c in TOLERANCE_CASES],
                         ids=[c[0] for c in TOLERANCE_CASES])
def test_tolerances_and_wrong_models(web_model: Path, broken_web_model: Path, which: str, atol: float | None,
                                     rtol: float | None, passes: bool) -> None:
    folder = broken_web_model if which == "broken" else web_model
    model = make_net()
    if which == "other":
        torch.manual_seed(1)
        model.fc2.reset_parameters()
    check = check_parity(model, folder, {"x": X}, atol=atol, rtol=rtol, layers=False)
    assert check.ok is passes
    with_error = [o for s in check.stages for o in s.outputs]
    assert all((o.max_abs <= (atol or 1e-4) + (rtol or 1e-3) * 10) or not passes for o in with_error)


def test_the_fixture(bridge_parity: Callable[..., Any], web_model: Path) -> None:
    """The fixture a user's conftest enables with `pytest_plugins = ["bridge.testing"]`."""
    assert bridge_parity(make_net(), web_model, {"x": X}).ok


def test_the_fixture_skips_without_node(web_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge.testing import _parity_fixture

    monkeypatch.setenv("BRIDGE_NODE", "/nonexistent/node")
    with pytest.raises(pytest.skip.Exception):
        _parity_fixture()(make_net(), web_model, {"x": X})


def test_bad_inputs_are_usage_errors(web_model: Path) -> None:
    from bridge.errors import UsageError

    with pytest.raises(UsageError):
        assert_parity(make_net(), web_model, {"y": X})
    with pytest.raises(UsageError):
        assert_parity(make_net(), web_model, (X, X))
