"""The ONNX route: torch -> ONNX (onnxruntime parity) -> onnx2tf (offline) -> SavedModel (signature parity).

Tolerances: onnxruntime vs PyTorch atol 1e-5; reloaded SavedModel vs PyTorch atol 1e-4 (after the documented
permutation of each input and output). The ResNet-18 case is `slow` (BRIDGE_SLOW=1); it prints time and peak RSS.
"""

from __future__ import annotations

import resource
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from torch import nn

from benchmarks.models import ResNet18
from bridge.errors import BridgeError, ExportError, ModelLoadError, UsageError
from bridge.onnx_route.export import condense_reason, export_onnx
from shared_models import TutorialLinear
from bridge.onnx_route.layouts import NCHW_TO_NHWC, inverse_perm, max_abs_diff
from bridge.source.ports import Port
from bridge.onnx_route.onnxrt import load_onnx_checked, run_onnx
from bridge.util.quiet import captured_output, network_blocked
from bridge.onnx_route.to_tf import TfRebuild, _match_outputs, onnx_to_saved_model

ORT_ATOL = 1e-5
TF_ATOL = 1e-4


# ------------------------------------------------------------------------------------------------ test models


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8 * 8 * 8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


class TwoInTwoOut(nn.Module):
    """An image and a vector in; a feature map (4-D) and a vector out."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(6, 4)

    def forward(self, image: torch.Tensor, vec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = torch.relu(self.conv(image))
        return fmap, self.fc(vec) + fmap.mean((2, 3))


class Conv1dNet(nn.Module):
    """A 3-D input [1, 12, 20] through a Conv1d: onnx2tf would silently make it [1, 20, 12]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(12, 6, 3)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(seq))


class TokenModel(nn.Module):
    """int64 token ids [1, 8] through an embedding: an integer input keeps its order and dtype."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 6)
        self.fc = nn.Linear(6, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(ids).mean(1))


class SquareCNN(nn.Module):
    """1x3x3x3 in, 1x3x3x3 out: a shape that reads the same in NCHW and NHWC."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * 2.0


class DataDependent(nn.Module):
    """Python control flow on a value: torch.export refuses it, the TorchScript tracer records one branch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x * 2
        return x - 1


class Raises(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("this forward always fails")


# -------------------------------------------------------------------------------------------------- case table


@dataclass(frozen=True)
class Case:
    """One model through the whole route, and what its serving interface must look like."""

    id: str
    make: Callable[[], nn.Module]
    inputs: dict[str, tuple[int, ...]]
    outputs: list[str]
    layouts: dict[str, str] = field(default_factory=dict)
    dynamic: dict[str, list[int]] = field(default_factory=dict)
    expect_in: dict[str, str] = field(default_factory=dict)  # input name -> layout
    expect_out: dict[str, str] = field(default_factory=dict)  # output name -> layout
    run_shapes: dict[str, tuple[int, ...]] | None = None  # other shapes to feed the SavedModel (dynamic dims)
    integer_inputs: tuple[str, ...] = ()  # inputs filled with int64 ids in [0, 10)


CASES = [
    Case("mlp", MLP, {"x": (2, 16)}, ["y"], expect_in={"x": "source"}, expect_out={"y": "source"}),
    Case("small_cnn_nhwc", SmallCNN, {"image": (1, 3, 16, 16)}, ["logits"], expect_in={"image": "nhwc"},
         expect_out={"logits": "source"}),
    Case("small_cnn_nchw", SmallCNN, {"image": (1, 3, 16, 16)}, ["logits"], layouts={"image": "nchw"},
         expect_in={"image": "nchw"}, expect_out={"logits": "source"}),
    Case("linear_ab", lambda: TutorialLinear((0.5, -2.0), 0.25), {"x": (4, 2)}, ["y"], expect_in={"x": "source"},
         expect_out={"y": "source"}),
    Case("two_in_two_out", TwoInTwoOut, {"image": (1, 3, 8, 8), "vec": (1, 6)}, ["fmap", "scores"],
         expect_in={"image": "nhwc", "vec": "source"}, expect_out={"fmap": "nhwc", "scores": "source"}),
    Case("conv1d_3d_input", Conv1dNet, {"seq": (1, 12, 20)}, ["feat"], expect_in={"seq": "source"},
         expect_out={"feat": "source"}),
    Case("int64_tokens", TokenModel, {"ids": (1, 8)}, ["scores"], integer_inputs=("ids",),
         expect_in={"ids": "source"}, expect_out={"scores": "source"}),
    Case("square_1x3x3x3", SquareCNN, {"x": (1, 3, 3, 3)}, ["y"], expect_in={"x": "nhwc"}, expect_out={"y": "nhwc"}),
    Case("dynamic_batch", SmallCNN, {"image": (2, 3, 16, 16)}, ["logits"], dynamic={"image": [0]},
         expect_in={"image": "nhwc"}, expect_out={"logits": "source"}, run_shapes={"image": (3, 3, 16, 16)}),
]


def _case(case_id: str) -> Case:
    return next(c for c in CASES if c.id == case_id)


def _samples(shapes: dict[str, tuple[int, ...]], seed: int, integer: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.integers(0, 10, shape).astype(np.int64) if name in integer
            else rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}


def _torch_outputs(module: nn.Module, inputs: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        result = module(*[torch.from_numpy(v) for v in inputs.values()])
    values = result if isinstance(result, tuple) else (result,)
    return {name: v.numpy() for name, v in zip(names, values)}


def _make(case: Case) -> nn.Module:
    torch.manual_seed(0)
    module = case.make().eval()
    for sub in module.modules():  # non-trivial BatchNorm statistics, so a wrong layout cannot hide
        if isinstance(sub, nn.BatchNorm2d):
            sub.running_mean.uniform_(-0.5, 0.5)
            sub.running_var.uniform_(0.5, 1.5)
    return module


def _run_saved_model(rebuild: TfRebuild, torch_inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Reload the SavedModel, call its serving signature in the documented layout, return PyTorch-ordered outputs."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(rebuild.saved_model_dir)).signatures[rebuild.signature_key]
    feeds = {k: tf.constant(v) for k, v in rebuild.tf_inputs_from_torch(torch_inputs).items()}
    return rebuild.torch_outputs_from_tf({k: v.numpy() for k, v in signature(**feeds).items()})


def _assert_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray], atol: float, what: str) -> None:
    assert list(got) == list(want), f"{what}: outputs {list(got)} != {list(want)}"
    for name in want:
        assert got[name].shape == want[name].shape, f"{what} {name}: shape {got[name].shape} != {want[name].shape}"
        err = max_abs_diff(got[name], want[name])
        assert err <= atol, f"{what} {name}: max|Δ| {err:.3g} > {atol}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_route_matches_pytorch(case: Case, tmp_path: Path) -> None:
    module = _make(case)
    samples = _samples(case.inputs, seed=1, integer=case.integer_inputs)
    torch_ref = _torch_outputs(module, samples, case.outputs)

    exported = export_onnx(module, tuple(torch.from_numpy(v) for v in samples.values()), tmp_path / "model.onnx",
                           input_names=list(case.inputs), output_names=case.outputs, dynamic_dims=case.dynamic)
    assert exported.exporter == "dynamo", exported.fallback_reason
    assert exported.external_data == []
    _assert_close(run_onnx(exported.path, samples), torch_ref, ORT_ATOL, "onnxruntime")

    rebuild = onnx_to_saved_model(exported.path, tmp_path / "saved_model", input_layouts=case.layouts,
                                  sample_inputs=samples)
    assert [i.name for i in rebuild.inputs] == list(case.inputs)
    assert [o.name for o in rebuild.outputs] == case.outputs
    for info in rebuild.inputs:
        assert info.layout == case.expect_in.get(info.name, info.layout)
        torch_shape = case.inputs[info.name]
        expected = tuple(None if a in case.dynamic.get(info.name, []) else torch_shape[a]
                         for a in info.perm or range(len(torch_shape)))
        assert info.web_shape == expected, f"{info.name}: signature shape {info.web_shape} != {expected}"
    for info in rebuild.outputs:
        assert info.layout == case.expect_out.get(info.name, info.layout)
    assert not list(rebuild.saved_model_dir.rglob("*.tflite"))

    in_memory = rebuild.torch_outputs_from_tf(rebuild.run_tf(rebuild.tf_inputs_from_torch(samples)))
    _assert_close(in_memory, torch_ref, TF_ATOL, "tf in memory")
    _assert_close(_run_saved_model(rebuild, samples), torch_ref, TF_ATOL, "SavedModel")
    if case.run_shapes:
        other = _samples(case.run_shapes, seed=2, integer=case.integer_inputs)
        _assert_close(_run_saved_model(rebuild, other), _torch_outputs(module, other, case.outputs), TF_ATOL,
                      "SavedModel at other shapes")


# ---------------------------------------------------------------------------------------- checks that must fail


@dataclass(frozen=True)
class FailCase:
    id: str
    run: Callable[[Path], object]
    error: type[BaseException]
    text: str


def _convert_cnn(tmp_path: Path, layouts: dict[str, str]) -> TfRebuild:
    module = _make(_case("small_cnn_nhwc"))
    samples = _samples({"image": (1, 3, 16, 16)}, seed=3)
    onnx_file = export_onnx(module, (torch.from_numpy(samples["image"]),), tmp_path / "m.onnx",
                            input_names=["image"], output_names=["logits"]).path
    return onnx_to_saved_model(onnx_file, tmp_path / "sm", input_layouts=layouts, sample_inputs=samples)


def _perturbed_reference_is_caught(tmp_path: Path) -> None:
    module = _make(_case("mlp"))
    samples = _samples({"x": (2, 16)}, seed=4)
    path = export_onnx(module, (torch.from_numpy(samples["x"]),), tmp_path / "m.onnx", input_names=["x"],
                       output_names=["y"]).path
    wrong = {k: v + 10 * ORT_ATOL for k, v in _torch_outputs(module, samples, ["y"]).items()}
    _assert_close(run_onnx(path, samples), wrong, ORT_ATOL, "onnxruntime vs perturbed reference")


def _swapped_layout_is_caught(tmp_path: Path) -> None:
    """Reading an NHWC 1x3x3x3 output as NCHW keeps every shape right; only the numbers can catch it."""
    case = _case("square_1x3x3x3")
    module = _make(case)
    samples = _samples(case.inputs, seed=5)
    path = export_onnx(module, (torch.from_numpy(samples["x"]),), tmp_path / "m.onnx", input_names=["x"],
                       output_names=["y"]).path
    rebuild = onnx_to_saved_model(path, tmp_path / "sm", input_layouts={}, sample_inputs=samples)
    assert rebuild.outputs[0].layout == "nhwc"
    lying = [Port.from_web_shape(o.name, o.web_shape, o.dtype, "nchw", (0, 1, 2, 3)) for o in rebuild.outputs]
    fooled = TfRebuild(rebuild.saved_model_dir, rebuild.inputs, lying, rebuild.run_tf)
    _assert_close(_run_saved_model(fooled, samples), _torch_outputs(module, samples, ["y"]), TF_ATOL,
                  "SavedModel read with the wrong layout")


def _unmatchable_outputs(tmp_path: Path) -> None:
    reference = {"y": np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)}
    _match_outputs([_spec("y")], reference, [np.zeros((1, 3, 4, 2), np.float32)], {})


def _spec(name: str):  # noqa: ANN202 - tiny helper for the unmatchable case
    from bridge.onnx_route.onnxrt import OnnxValueSpec

    return OnnxValueSpec(name, (1, 2, 3, 4), np.dtype(np.float32))


def _not_onnx_text(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_text("this is not a model\n" * 20)
    load_onnx_checked(bad)


def _not_onnx_binary(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(bytes(range(256)) * 8)
    load_onnx_checked(bad)


def _empty_file(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"")
    load_onnx_checked(bad)


def _missing_file(tmp_path: Path) -> None:
    load_onnx_checked(tmp_path / "nope.onnx")


def _both_exporters_fail(tmp_path: Path) -> None:
    export_onnx(Raises(), (torch.ones(1, 2),), tmp_path / "m.onnx", input_names=["x"], output_names=["y"])


def _wrong_name_count(tmp_path: Path) -> None:
    export_onnx(MLP(), (torch.ones(1, 16),), tmp_path / "m.onnx", input_names=["x", "y"], output_names=["z"])


def _network_attempt_is_reported(tmp_path: Path) -> None:
    with network_blocked("test", "a test block"):
        try:
            socket.create_connection(("localhost", 9), timeout=1)
        except OSError:
            pass  # swallowed, like a library retrying offline; the block must still report it


def _convert_with_fake_onnx2tf(tmp_path: Path, fake: Callable[..., object]) -> None:
    """Run the conversion with onnx2tf.convert replaced by `fake` (after the real import)."""
    from unittest import mock

    from bridge.util.quiet import import_onnx2tf

    onnx2tf = import_onnx2tf()
    with mock.patch.object(onnx2tf, "convert", fake):
        _convert_cnn(tmp_path, {})


def _onnx2tf_exits(**kwargs: object) -> None:
    print("ERROR: Frobnicate OP is not yet implemented.")
    raise SystemExit(1)


def _onnx2tf_tries_download(**kwargs: object) -> None:
    try:
        socket.create_connection(("example.invalid", 443), timeout=1)
    except OSError:
        pass  # onnx2tf would carry on with dummy data; bridge must still refuse the run
    return None


FAIL_CASES = [
    FailCase("perturbed_reference", _perturbed_reference_is_caught, AssertionError, "max|Δ|"),
    FailCase("output_read_in_wrong_layout", _swapped_layout_is_caught, AssertionError, "max|Δ|"),
    FailCase("unknown_input_layout_name", lambda p: _convert_cnn(p, {"imagee": "nchw"}), UsageError, "imagee"),
    FailCase("bad_layout_value", lambda p: _convert_cnn(p, {"image": "chw"}), UsageError, "chw"),
    FailCase("unmatchable_outputs", _unmatchable_outputs, ExportError, "matches no ONNX output"),
    FailCase("not_onnx_text", _not_onnx_text, ModelLoadError, "not an ONNX model"),
    FailCase("not_onnx_binary", _not_onnx_binary, ModelLoadError, "not an ONNX model"),
    FailCase("empty_file", _empty_file, ModelLoadError, "not an ONNX model"),
    FailCase("missing_file", _missing_file, ModelLoadError, "not found"),
    FailCase("both_exporters_fail", _both_exporters_fail, ExportError, "this forward always fails"),
    FailCase("wrong_name_count", _wrong_name_count, UsageError, "2 input name(s)"),
    FailCase("network_attempt_reported", _network_attempt_is_reported, BridgeError, "network"),
    FailCase("onnx2tf_exits", lambda p: _convert_with_fake_onnx2tf(p, _onnx2tf_exits), ExportError,
             "Frobnicate OP is not yet implemented"),
    FailCase("onnx2tf_network_attempt", lambda p: _convert_with_fake_onnx2tf(p, _onnx2tf_tries_download),
             BridgeError, "onnx2tf tried to access the network"),
]


@pytest.mark.parametrize("case", FAIL_CASES, ids=[c.id for c in FAIL_CASES])
def test_checks_fail_when_they_should(case: FailCase, tmp_path: Path) -> None:
    with pytest.raises(case.error) as caught:
        case.run(tmp_path)
    assert case.text in str(caught.value)


# ------------------------------------------------------------------------------------------- focused behaviours


def test_dynamo_failure_falls_back_to_torchscript(tmp_path: Path) -> None:
    x = torch.ones(2, 3)
    exported = export_onnx(DataDependent(), (x,), tmp_path / "m.onnx", input_names=["x"], output_names=["y"])
    assert exported.exporter == "torchscript"
    assert "GuardOnDataDependentSymNode" in (exported.fallback_reason or "")
    assert "in forward" in (exported.fallback_reason or "")  # points at the user's source line
    np.testing.assert_allclose(run_onnx(exported.path, {"x": x.numpy()})["y"], (x * 2).numpy(), atol=ORT_ATOL)


def test_conversion_succeeds_with_sockets_failing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1x3xHxW image model is exactly what makes onnx2tf download sample images; it must not even try."""
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    rebuild = _convert_cnn(tmp_path, {})
    assert attempts == []
    assert rebuild.inputs[0].layout == "nhwc" and rebuild.inputs[0].perm == NCHW_TO_NHWC
    assert (rebuild.saved_model_dir / "saved_model.pb").is_file()


def test_quiet_conversion_prints_nothing(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    _convert_cnn(tmp_path, {"image": "nchw"})
    out, err = capfd.readouterr()
    assert out == "" and err == "", f"stdout: {out[-500:]!r} stderr: {err[-500:]!r}"


def test_captured_output_keeps_native_writes() -> None:
    import os

    with captured_output(False) as log:
        os.write(1, b"native stdout\n")
        os.write(2, b"native stderr\n")
        print("python print")
    assert "native stdout" in log.text and "native stderr" in log.text and "python print" in log.text


def test_large_weights_go_to_external_data_only_when_needed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bridge.onnx_route.export as export_module

    monkeypatch.setattr(export_module, "SINGLE_FILE_LIMIT_BYTES", 1024)  # pretend the MLP's 2.7 kB is huge
    x = torch.ones(1, 16)
    exported = export_onnx(_make(_case("mlp")), (x,), tmp_path / "m.onnx", input_names=["x"], output_names=["y"])
    assert [p.name for p in exported.external_data] == ["m.onnx.data"]
    assert exported.external_data[0].is_file()
    monkeypatch.setattr(export_module, "SINGLE_FILE_LIMIT_BYTES", 2**30)
    again = export_onnx(_make(_case("mlp")), (x,), tmp_path / "m.onnx", input_names=["x"], output_names=["y"])
    assert again.external_data == [] and not (tmp_path / "m.onnx.data").exists()


def test_condense_reason_names_the_root_cause() -> None:
    try:
        try:
            raise ValueError("inner detail\nmore lines")
        except ValueError as inner:
            raise RuntimeError("outer wrapper. Next steps: lots of text") from inner
    except RuntimeError as outer:
        text = condense_reason(outer)
    assert text == "outer wrapper. <- ValueError: inner detail"


def test_input_specs_of_a_given_onnx_file(tmp_path: Path) -> None:
    from bridge.onnx_route.onnxrt import input_specs_of

    path = export_onnx(_make(_case("mlp")), (torch.ones(2, 16),), tmp_path / "m.onnx", input_names=["x"],
                       output_names=["y"], dynamic_dims={"x": [0]}).path
    (spec,) = input_specs_of(path)
    assert (spec.name, spec.shape, spec.dtype) == ("x", (None, 16), "float32")


def test_inverse_perm_round_trip() -> None:
    value = np.arange(24).reshape(1, 2, 3, 4)
    info = Port.from_web_shape("x", (1, 3, 4, 2), "int64", "nhwc", NCHW_TO_NHWC)
    assert info.move_to_web(value).shape == (1, 3, 4, 2)
    np.testing.assert_array_equal(info.to_torch(info.move_to_web(value)), value)
    assert inverse_perm(NCHW_TO_NHWC) == (0, 3, 1, 2)


# ----------------------------------------------------------------------------------------------------- slow case


@pytest.mark.slow
def test_resnet18_route_time_and_memory(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = ResNet18().eval()
    samples = _samples({"image": (1, 3, 224, 224)}, seed=6)
    torch_ref = _torch_outputs(module, samples, ["logits"])
    start = time.perf_counter()
    exported = export_onnx(module, (torch.from_numpy(samples["image"]),), tmp_path / "resnet18.onnx",
                           input_names=["image"], output_names=["logits"])
    rebuild = onnx_to_saved_model(exported.path, tmp_path / "saved_model", input_layouts={}, sample_inputs=samples)
    wall = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    scale = max(1.0, float(np.abs(torch_ref["logits"]).max()))
    _assert_close(run_onnx(exported.path, samples), torch_ref, ORT_ATOL * scale, "onnxruntime")
    _assert_close(_run_saved_model(rebuild, samples), torch_ref, TF_ATOL * scale, "SavedModel")
    print(f"\nresnet18 torch->SavedModel: {wall:.1f} s wall (export {exported.seconds:.1f} s, "
          f"{', '.join(f'{k} {v:.1f} s' for k, v in rebuild.seconds.items())}), "
          f"peak RSS {peak_mb:.0f} MB (process), |logits| max {scale:.2f}, "
          f"max|TF - onnxruntime| {rebuild.onnx_max_abs_diff['logits']:.2g}")
