"""`bridge convert --web-format layers`: the layers-route model table (tests/layers_route_models.py) converted
through the pipeline, every layers stage passing: rebuilt in Keras, predicted in TF.js in Node and in Chromium,
one `fit` epoch, and the train-step check against PyTorch for SGD and for Adam; `bridge parity` re-checks the
folder later, and `bridge import-weights` brings its weights back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import bridge
from bridge.cli import main as cli_main
from layers_route_models import MODELS, Case

pytestmark = pytest.mark.node

LAYERS_STAGES = ["tfjs-layers", "tfjs-layers-node-wasm", "tfjs-layers-node-cpu", "tfjs-layers-fit", "train-step"]
BROWSER = ["browser-layers-webgl", "browser-layers-wasm", "browser-layers-indexeddb"]
DEFAULT_TIER = {("cnn_bn", "sgd"), ("mlp", "adam"), ("lstm_text", "sgd"), ("gru", "adam"), ("transformer", "sgd"),
                ("custom_part", "adam")}


def _convert(case: Case, optimizer: str, out: Path, **options: Any) -> Any:
    torch.manual_seed(0)
    module = case.make().eval()
    inputs = case.inputs(torch.Generator().manual_seed(2))
    return module, bridge.convert(module, inputs, out, web_formats=("layers",), train_optimizer=optimizer,
                                  train_learning_rate=case.lr[optimizer], browser=case.browser, **options)


def _params() -> list[Any]:
    return [pytest.param(case, optimizer, id=f"{case.name}-{optimizer}",
                         marks=[] if (case.name, optimizer) in DEFAULT_TIER else [pytest.mark.slow])
            for case in MODELS for optimizer in ("sgd", "adam")]


@pytest.mark.parametrize("case, optimizer", _params())
def test_layers_models_pass_every_stage(tmp_path: Path, case: Case, optimizer: str) -> None:
    module, result = _convert(case, optimizer, tmp_path / "out")
    names = [s.name for s in result.stages]
    assert names == LAYERS_STAGES + BROWSER
    failed = [(s.name, s.status.value, s.reason) for s in result.stages
              if s.status.value != "pass" and not (s.name in BROWSER and not case.browser)]
    assert failed == []
    step = result.stage("train-step").extra["train_step"]
    assert step["optimizer"] == optimizer and step["ok"]
    assert result.report["route"] == "layers" and (tmp_path / "out" / "layers_model" / "model.json").is_file()


def test_train_step_catches_a_wrong_learning_rate(tmp_path: Path) -> None:
    """The must-fail twin at the stage level: the TF.js side stepping with another rate fails the stage and names
    the first diverging module."""
    from bridge.layers_route import train_step as train_step_module

    original = train_step_module.train_step_parity

    def wrong_rate(*args: Any, **kwargs: Any) -> Any:
        return original(*args, tfjs_learning_rate=kwargs["learning_rate"] * 1.05, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_step_module, "train_step_parity", wrong_rate)
        import bridge.layers_route as package

        mp.setattr(package, "train_step_parity", wrong_rate, raising=False)
        _, result = _convert(MODELS[1], "sgd", tmp_path / "out")
    stage = result.stage("train-step")
    assert stage.status.value == "fail" and stage.extra["train_step"]["first_diverging"]


def test_parity_and_import_weights_on_a_layers_folder(tmp_path: Path) -> None:
    from bridge.parity.recheck import run_parity

    module, result = _convert(MODELS[1], "sgd", tmp_path / "out")
    assert result.ok
    run = run_parity(tmp_path / "out", browser=False)
    statuses = {s.name: s.status.value for s in run.stages}
    assert statuses["tfjs-layers-node-cpu"] == "pass" and statuses["train-step"] == "skipped"
    code = cli_main(["import-weights", str(tmp_path / "out" / "layers_model"),
                     f"{Path(__file__).parent / 'layers_route_models.py'}:Mlp", "--out",
                     str(tmp_path / "back.safetensors")])
    assert code == 0
    from safetensors.torch import load_file

    back = load_file(str(tmp_path / "back.safetensors"))
    for key, value in module.state_dict().items():
        np.testing.assert_allclose(back[key].numpy(), value.numpy(), atol=1e-7, err_msg=key)
    meta = json.loads((tmp_path / "out" / "layers_model" / "model.json").read_text())
    assert meta["format"] == "layers-model"
