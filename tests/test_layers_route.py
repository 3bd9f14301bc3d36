"""The layers route (bridge.layers_route): a PyTorch network as a trainable TF.js layers model, one training step
compared with PyTorch's, and the weights back into PyTorch.

Tolerances: forward parity 1e-4 absolute (TF.js Node wasm and cpu, against PyTorch eval outputs, in the web
layout); weights imported from a folder bridge wrote equal the module's exactly, except LSTM's bias_ih (TF.js keeps
the sum bias_ih + bias_hh, so bias_ih comes back as a float32 difference: within 1e-6); after a TF.js fit, PyTorch
with the imported weights predicts what TF.js predicts within 1e-4; the train step within
bridge.layers_route.train_step.TOLERANCES (stated there).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from bridge.errors import LayersRouteError, WeightImportError
from bridge.native import weights as w
from bridge.runtime.node import node_modules_dir, node_status

sys.path.insert(0, str(Path(__file__).resolve().parent))
from layers_route_models import MODELS, Case, CustomPart, Mlp, TextLstm

needs_node = pytest.mark.skipif(not node_status().ok, reason="Node or the pinned TF.js npm packages are missing")
NODE_CHECK = Path(__file__).resolve().parent / "layers_route_node_check.mjs"
FORWARD_ATOL = 1e-4


# ---------------------------------------------------------------------------------------------- inverse transforms

RNG = np.random.default_rng(0)
INVERSES = [
    ("conv2d", lambda a: w.hwio_to_oihw(w.oihw_to_hwio(a)), (8, 3, 3, 5)),
    ("conv1d", lambda a: w.wio_to_oiw(w.oiw_to_wio(a)), (8, 3, 5)),
    ("depthwise", lambda a: w.depthwise_filter_to_torch(w.depthwise_filter(a, 4)), (8, 1, 3, 3)),
    ("conv_transpose", lambda a: w.hwoi_to_iohw(w.iohw_to_hwoi(a)), (4, 6, 3, 2)),
    ("linear", lambda a: w.in_out_to_linear(w.linear_to_in_out(a)), (7, 5)),
    ("permuted_rows", lambda a: w.unpermute_rows(w.permute_rows(a, np.array([2, 0, 3, 1])),
                                                 np.array([2, 0, 3, 1])), (4, 6)),
    ("gru_gates", lambda a: w.gru_gates_from_keras(w.gru_gates_to_keras(a)), (9, 4)),
    ("gru_kernel", lambda a: w.gru_kernel_from_keras(w.gru_kernel_to_keras(a)), (12, 5)),
    ("lstm_kernel", lambda a: w.lstm_kernel_from_keras(w.lstm_kernel_to_keras(a)), (16, 5)),
]


@pytest.mark.parametrize(("name", "round_trip", "shape"), INVERSES, ids=[c[0] for c in INVERSES])
def test_inverse_layout_transforms_undo_the_forward_ones(name: str, round_trip: Any, shape: tuple[int, ...]) -> None:
    a = RNG.standard_normal(shape).astype(np.float32)
    back = round_trip(a)
    assert back.shape == a.shape and np.array_equal(back, a)


def test_recurrent_bias_inverses() -> None:
    b_ih, b_hh = RNG.standard_normal(9).astype(np.float32), RNG.standard_normal(9).astype(np.float32)
    got_ih, got_hh = w.gru_bias_from_keras(w.gru_bias_to_keras(b_ih, b_hh))
    assert np.array_equal(got_ih, b_ih) and np.array_equal(got_hh, b_hh)
    got_ih, got_hh = w.lstm_bias_from_keras(w.lstm_bias_to_keras(b_ih, b_hh), b_hh)
    assert np.array_equal(got_hh, b_hh) and np.allclose(got_ih, b_ih, atol=1e-6)
    assert not np.array_equal(w.gru_gates_from_keras(b_ih), b_ih)  # the gate reorder is not the identity


# ---------------------------------------------------------------------------------------------- the model table

def _node(request: dict[str, Any], tmp: Path) -> dict[str, Any]:
    request = {**request, "node_modules": str(node_modules_dir()), "result_file": str(tmp / "node_result.json")}
    (tmp / "node_request.json").write_text(json.dumps(request))
    done = subprocess.run([node_status().node_path, str(NODE_CHECK), str(tmp / "node_request.json")],
                          check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((tmp / "node_result.json").read_text())


def _js(values: dict[str, np.ndarray]) -> dict[str, Any]:
    return {k: {"dtype": str(v.dtype), "shape": list(v.shape), "data": v.ravel().tolist()} for k, v in values.items()}


class Converted:
    """One table model converted, written, and run once in Node (predict on wasm and cpu, fit, predict, save)."""

    def __init__(self, case: Case, root: Path) -> None:
        from bridge.layers_route import LayersRouteOptions, write_layers_route

        torch.manual_seed(0)
        gen = torch.Generator().manual_seed(0)
        self.case = case
        self.module = case.make().eval()
        self.inputs = case.inputs(gen)
        self.target = case.target(gen)
        self.dir = root / case.name
        options = LayersRouteOptions(shard_size=4096 if case.name == "cnn_bn" else None)
        self.result = write_layers_route(self.module, self.inputs, self.dir, options)
        self.interface = self.result.conversion.interface
        self.web = {p.name: p.to_web(x.numpy()) for p, x in zip(self.interface.inputs, self.inputs)}
        out_port = self.interface.outputs[0]
        with torch.no_grad():
            self.reference = out_port.to_web(self.module(*self.inputs).numpy())
        fit_y = np.random.default_rng(1).standard_normal(self.reference.shape).astype(np.float32)
        self.upload = root / f"{case.name}_upload"
        self.node = _node({"model_dir": str(self.dir), "backends": ["wasm", "cpu"], "x": _js(self.web),
                           "y": _js({out_port.name: fit_y}),
                           "fit": {"optimizer": "sgd", "learning_rate": 0.05, "epochs": 3,
                                   "loss": "meanSquaredError"},
                           "save_dir": str(self.upload)}, root)


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Converted]:
    if not node_status().ok:
        pytest.skip("Node or the pinned TF.js npm packages are missing")
    root = tmp_path_factory.mktemp("layers_route")
    return {case.name: Converted(case, root) for case in MODELS}


CASES = [c.name for c in MODELS]


@needs_node
@pytest.mark.parametrize("name", CASES)
def test_layers_model_predicts_like_pytorch_in_keras_and_tfjs_node(table: dict[str, Converted], name: str) -> None:
    got = table[name]
    files = sorted(p.name for p in got.dir.iterdir())
    assert "model.json" in files and any(f.endswith(".bin") for f in files)
    assert ("custom_layers.js" in files) == bool(got.result.conversion.plan.custom_classes())
    assert max(got.result.conversion.keras_max_abs_diff.values()) <= FORWARD_ATOL
    for backend in ("wasm", "cpu"):
        out = got.node["before"][backend]
        tfjs = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
        assert tfjs.shape == got.reference.shape
        assert np.max(np.abs(tfjs - got.reference)) <= FORWARD_ATOL, backend
    meta = json.loads((got.dir / "model.json").read_text())["userDefinedMetadata"]["bridge"]
    assert meta["route"] == "layers" and meta["inputs"][0]["name"] == got.interface.inputs[0].name
    if name == "cnn_bn":
        assert meta["inputs"][0]["layout"] == "nhwc" and meta["inputs"][0]["permFromTorch"] == [0, 2, 3, 1]
        assert len(got.result.summary.shards) > 1


@needs_node
def test_custom_parts_become_one_readable_class_each(table: dict[str, Converted]) -> None:
    plan = table["custom_part"].result.conversion.plan
    assert plan.custom_classes() == ["BridgeRMSNorm", "BridgeScaledSwish"]
    source = (table["custom_part"].dir / "custom_layers.js").read_text()
    for needle in ("class BridgeRMSNorm extends tf.layers.Layer", "static className = \"BridgeRMSNorm\"",
                   "tf.serialization.registerClass(cls)", "computeOutputShape(inputShape)", "getConfig()",
                   "tf.rsqrt(", "export function registerCustomLayers(tf)"):
        assert needle in source
    links = {link.torch_keys[0]: link for link in plan.links}
    assert links["norm.weight"].tfjs == ("norm/weight",)
    weights = {layer.name: [(x.name, x.trainable) for x in layer.weights]
               for layer in table["custom_part"].result.conversion.keras_model.layers}
    assert weights["norm"] == [("norm/weight:0", True)]
    assert weights["act"] == [("act/scale:0", False)]  # a buffer: not trainable


@needs_node
@pytest.mark.parametrize("name", CASES)
def test_weights_round_trip_and_a_tfjs_fit_comes_back_to_pytorch(table: dict[str, Converted], name: str) -> None:
    from bridge.layers_route import import_weights

    got = table[name]
    original = got.module.state_dict()
    state = import_weights(got.dir, got.case.make())
    for key, value in original.items():
        if ".bias_" in key and name == "lstm_text":
            # TF.js holds bias_ih + bias_hh: the sum comes back, bias_hh is the receiving module's own.
            layer = key.rsplit("_l", 1)[1]
            got_sum = state[f"lstm.bias_ih_l{layer}"] + state[f"lstm.bias_hh_l{layer}"]
            want_sum = original[f"lstm.bias_ih_l{layer}"] + original[f"lstm.bias_hh_l{layer}"]
            assert torch.allclose(got_sum, want_sum, atol=1e-6, rtol=0), key
            continue
        assert torch.equal(state[key], value), key
    same = import_weights(got.dir, got.module)  # into the module it came from: bias_ih itself within 1e-6
    assert all(torch.allclose(same[k].float(), v.float(), atol=1e-6, rtol=0) for k, v in original.items())
    # What TF.js uploads after fitting (tf.io.http's multipart parts), imported into a fresh module.
    parts = {p["field"]: p for p in got.node["saved"]["parts"]}
    assert set(parts) == {"model.json", "model.weights.bin"}
    assert parts["model.weights.bin"]["type"] == "application/octet-stream"
    assert got.node["loss"][-1] < got.node["loss"][0]
    trained = got.case.make()
    import_weights(got.upload, trained, load=True)
    trained.eval()
    with torch.no_grad():
        mine = got.interface.outputs[0].to_web(trained(*got.inputs).numpy())
    after = np.asarray(got.node["after"]["data"], dtype=np.float32).reshape(got.node["after"]["shape"])
    assert np.max(np.abs(after - got.reference)) > 1e-3  # the fit moved the predictions
    assert np.max(np.abs(mine - after)) <= FORWARD_ATOL


@needs_node
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("name", CASES)
def test_one_train_step_matches_pytorch(table: dict[str, Converted], name: str, optimizer: str) -> None:
    from bridge.layers_route import train_step_parity

    got = table[name]
    result = train_step_parity(got.module, got.dir, got.inputs, got.target, optimizer=optimizer,
                               learning_rate=got.case.lr[optimizer])
    assert result.ok, [c for c in result.checks if not c.ok]
    assert result.first_diverging is None
    assert abs(result.torch_loss - result.tfjs_loss) <= 1e-5 * max(1.0, abs(result.torch_loss))
    trained = {c.key for c in result.checks if c.torch_change > 0}
    assert trained, "the step moved nothing"
    assert len(result.checks) == sum(1 for k in got.module.state_dict() if not k.endswith("num_batches_tracked"))


@needs_node
@pytest.mark.parametrize(("name", "optimizer"), [("cnn_bn", "sgd"), ("lstm_text", "adam"), ("transformer", "adam")])
def test_a_wrong_learning_rate_is_caught(table: dict[str, Converted], name: str, optimizer: str) -> None:
    from bridge.layers_route import train_step_parity

    got = table[name]
    lr = got.case.lr[optimizer]
    result = train_step_parity(got.module, got.dir, got.inputs, got.target, optimizer=optimizer, learning_rate=lr,
                               tfjs_learning_rate=lr * 1.05)
    assert not result.ok
    first = next(link.path for link in got.result.conversion.plan.links
                 if any(not c.ok for c in result.checks if c.path == link.path))
    assert result.first_diverging == first


@needs_node
def test_a_wrong_batch_norm_momentum_is_caught_at_that_layer(table: dict[str, Converted], tmp_path: Path) -> None:
    from bridge.layers_route import train_step_parity

    got = table["cnn_bn"]
    broken = tmp_path / "broken"
    shutil.copytree(got.dir, broken)
    model_json = json.loads((broken / "model.json").read_text())
    for layer in model_json["modelTopology"]["config"]["layers"]:
        if layer["name"] == "features_5":
            layer["config"]["momentum"] = 0.9  # PyTorch's momentum 0.3 is TF momentum 0.7
    (broken / "model.json").write_text(json.dumps(model_json))
    result = train_step_parity(got.module, broken, got.inputs, got.target, optimizer="adam", learning_rate=1e-3)
    assert not result.ok and result.first_diverging == "features.5"
    bad = {c.key for c in result.checks if not c.ok}
    assert bad == {"features.5.running_mean", "features.5.running_var"}


@needs_node
def test_import_refuses_another_architecture_listing_every_mismatch(table: dict[str, Converted]) -> None:
    from bridge.layers_route import import_weights

    class Wider(Mlp):
        def __init__(self) -> None:
            super().__init__()
            self.net[0] = nn.Linear(10, 40)
            self.extra = nn.Linear(2, 2)

    with pytest.raises(WeightImportError) as caught:
        import_weights(table["mlp"].dir, Wider())
    text = "\n".join(caught.value.mismatches)
    assert "net.0.weight: the layers model gives shape [32, 10], the module has [40, 10]" in text
    assert "the layers model has no weight for extra.weight [2, 2]" in text
    assert "extra.bias" in text
    with pytest.raises(WeightImportError):
        import_weights(table["lstm_text"].dir, TextLstm().embed)


@needs_node
def test_imported_weights_save_as_safetensors(table: dict[str, Converted], tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from bridge.layers_route import import_weights, save_state_dict

    got = table["custom_part"]
    path = save_state_dict(import_weights(got.upload, CustomPart()), tmp_path / "trained.safetensors")
    loaded = load_file(str(path))
    fresh = CustomPart()
    fresh.load_state_dict(loaded)
    assert set(loaded) == set(fresh.state_dict())


@needs_node
def test_a_folder_with_custom_layers_reloads_in_tf_keras(table: dict[str, Converted]) -> None:
    import tf_keras

    from bridge.layers_route import custom_objects
    from bridge.tfjs.sources.layers_folder import load_layers_folder

    got = table["custom_part"]
    meta = json.loads((got.dir / "model.json").read_text())["userDefinedMetadata"]["bridge"]["layersRoute"]
    with tf_keras.utils.custom_object_scope(custom_objects(meta)):
        source = load_layers_folder(got.dir)
    model = source.model if hasattr(source, "model") else source.keras_model
    out = np.asarray(model(got.web["x"], training=False))
    assert np.max(np.abs(out - got.reference)) <= FORWARD_ATOL


@pytest.mark.browser
@needs_node
def test_chromium_predicts_like_pytorch_and_keeps_the_model_in_indexeddb(table: dict[str, Converted]) -> None:
    from bridge.runtime.browser import browser_status, run_layers_in_browser

    if not browser_status().ok:
        pytest.skip("Chromium / Playwright missing")
    for name in [c.name for c in MODELS if c.browser and not table[c.name].result.conversion.plan.custom_classes()]:
        got = table[name]
        run = run_layers_in_browser(got.dir, [got.web], backends=("webgl", "wasm"), repeats=1, warmup=0)
        for backend, result in run.backends.items():
            assert result.error is None, (name, backend, result.error)
            out = result.outputs[0][got.interface.outputs[0].name]
            assert np.max(np.abs(out - got.reference)) <= FORWARD_ATOL, (name, backend)
        assert run.indexeddb is not None and run.indexeddb.error is None
        first = run.backends[run.indexeddb.backend].outputs[0]
        for key, value in run.indexeddb.outputs[0].items():
            assert np.array_equal(value, first[key])


class _OneLayerLstm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(30, 8)
        self.lstm = nn.LSTM(8, 6, batch_first=True)
        self.head = nn.Linear(6, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(self.embed(ids))
        return self.head(h.squeeze(0))


@needs_node
def test_a_dynamic_sequence_length_runs_at_other_lengths(tmp_path: Path) -> None:
    from bridge.layers_route import LayersRouteOptions, write_layers_route
    from bridge.runtime.node import run_layers_model

    torch.manual_seed(0)
    module = _OneLayerLstm().eval()
    gen = torch.Generator().manual_seed(0)
    result = write_layers_route(module, [torch.randint(0, 30, (2, 5), generator=gen)], tmp_path / "m",
                                LayersRouteOptions(dynamic_axes={"ids": (1,)}))
    assert result.conversion.interface.inputs[0].web_shape == (None, None)
    sets = [torch.randint(0, 30, (3, n), generator=gen) for n in (3, 12)]
    runs = run_layers_model(tmp_path / "m", [{"ids": s.numpy().astype(np.int32)} for s in sets], backends=("cpu",))
    for ids, out in zip(sets, runs["cpu"].outputs):
        with torch.no_grad():
            assert np.max(np.abs(out["output_0"] - module(ids).numpy())) <= FORWARD_ATOL


@needs_node
def test_frozen_modules_stay_frozen_in_tfjs_training(tmp_path: Path) -> None:
    from bridge.layers_route import train_step_parity, write_layers_route

    torch.manual_seed(0)
    module = CustomPart()
    for p in module.fc1.parameters():
        p.requires_grad_(False)
    x = torch.randn(4, 8)
    result = write_layers_route(module, [x], tmp_path / "m")
    layer = result.conversion.keras_model.get_layer("fc1")
    assert layer.trainable is False
    step = train_step_parity(module, tmp_path / "m", [x], torch.randn(4, 4), optimizer="sgd", learning_rate=0.1)
    assert step.ok
    changes = {c.key: c.torch_change for c in step.checks}
    assert changes["fc1.weight"] == 0 and changes["fc1.bias"] == 0 and changes["fc2.weight"] > 0


class _Shared(nn.Module):
    """One Linear called twice, and a BatchNorm forward() never uses."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(5, 5)
        self.unused = nn.BatchNorm1d(5)
        self.out = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.fc(torch.relu(self.fc(x)))))


@needs_node
def test_a_module_called_twice_shares_one_layer_and_trains_like_pytorch(tmp_path: Path) -> None:
    from bridge.layers_route import (
        import_weights,
        train_step_parity,
        write_layers_route,
    )

    torch.manual_seed(0)
    module, x = _Shared(), torch.randn(4, 5)
    result = write_layers_route(module, [x], tmp_path / "m")
    calls = [(spec.name, spec.shared_with) for spec in result.conversion.plan.layers if spec.path == "fc"]
    assert calls == [("fc", None), ("fc_call", "fc")]
    assert any("unused" in note for note in result.conversion.notes)
    step = train_step_parity(module, tmp_path / "m", [x], torch.randn(4, 2), optimizer="sgd", learning_rate=0.1)
    assert step.ok and {c.key for c in step.checks} == {"fc.weight", "fc.bias", "out.weight", "out.bias"}
    state = import_weights(tmp_path / "m", module)
    assert all(torch.equal(state[k], v) for k, v in module.state_dict().items())


# ---------------------------------------------------------------------------------------------- refusals

class _Grouped(nn.Module):
    """Three parts with no layers-model form: a grouped convolution, a bidirectional GRU, a cumsum."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, groups=2)
        self.rnn = nn.GRU(6, 4, bidirectional=True, batch_first=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out, _ = self.rnn(x.flatten(2)[:, :, :6])
        return self.conv(x), out, torch.cumsum(x, dim=1)


def test_every_part_without_a_layers_form_is_named_up_front(tmp_path: Path) -> None:
    from bridge.layers_route import write_layers_route

    with pytest.raises(LayersRouteError) as caught:
        write_layers_route(_Grouped(), [torch.randn(2, 4, 6, 6)], tmp_path / "out")
    parts = {(where, what) for where, what, _ in caught.value.parts}
    assert ("conv", "Conv2d") in parts and ("rnn", "GRU") in parts
    assert any(what == "cumsum" for _, what in parts)
    assert "graph model" in (caught.value.hint or "")
    assert not (tmp_path / "out").exists()


def test_data_dependent_control_flow_is_refused_with_the_way_out(tmp_path: Path) -> None:
    from bridge.errors import CaptureError
    from bridge.layers_route import write_layers_route

    class Branchy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2 if x.sum() > 0 else x

    with pytest.raises(CaptureError, match="torch.fx cannot trace"):
        write_layers_route(Branchy(), [torch.randn(2, 3)], tmp_path / "out")


def test_compat_accepts_only_bridge_marked_custom_classes() -> None:
    from bridge.tfjs.layers.compat import topology_problems

    def topology(class_name: str, config: dict[str, Any]) -> dict[str, Any]:
        return {"class_name": "Functional", "config": {"layers": [
            {"class_name": class_name, "name": "x", "config": {"name": "x", **config}}]}}

    assert not list(topology_problems(topology("BridgeRMSNorm", {"bridge_custom": 1})))
    assert list(topology_problems(topology("BridgeRMSNorm", {})))
    assert list(topology_problems(topology("MyLayer", {"bridge_custom": 1})))
