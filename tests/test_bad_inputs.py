"""The bad-input corpus: each bad input gives one clear bridge error (stage, what is wrong, what to do) and exit
code 1 or 2, with nothing written to the output folder. Also: NaN weights are warned about, and converting the same
model twice gives byte-identical web model files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import bridge
from bridge.cli import main as cli_main
from bridge.errors import BridgeError, CaptureError, ModelTooLargeError, UsageError

ROOT = Path(__file__).resolve().parents[1]
LINEAR = str(ROOT / "examples/linear/model.py:LinearModel")


class _Nested(torch.nn.Module):
    def forward(self, x):  # type: ignore[no-untyped-def]
        return {"a": (x, x * 2)}


class _NonTensor(torch.nn.Module):
    def forward(self, x):  # type: ignore[no-untyped-def]
        return x.sum().item()


class _Raises(torch.nn.Module):
    def forward(self, x):  # type: ignore[no-untyped-def]
        raise ValueError("this model is broken")


class _Ids(torch.nn.Module):
    """Embedding-like: integer ids in, a float per id out (PyTorch runs it on int64 ids of any size)."""

    def forward(self, ids):  # type: ignore[no-untyped-def]
        return (ids % 1000).float() * 0.5


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


CLI_CASES = [
    # (id, args (with {tmp}), exit code, text in the error)
    ("weights-missing", [LINEAR, "--weights", "{tmp}/none.pt", "--input", "x:4x2"], 1, "does not exist"),
    ("weights-empty", [LINEAR, "--weights", "{tmp}/empty.pt", "--input", "x:4x2"], 1, "is empty"),
    ("weights-corrupt", [LINEAR, "--weights", "{tmp}/corrupt.pt", "--input", "x:4x2"], 1, "cannot load weights"),
    ("no-such-file", ["{tmp}/nope.py:M", "--input", "x:4x2"], 1, "does not exist"),
    ("no-such-class", [str(ROOT / "examples/linear/model.py:Nope"), "--input", "x:4x2"], 1, "has no 'Nope'"),
    ("constructor-fails", [LINEAR, "--init-args", '{"bogus": 1}', "--input", "x:4x2"], 1, "raised"),
    ("bad-shape", [LINEAR, "--input", "x:4x-2"], 2, "bad dimension"),
    ("bad-dtype", [LINEAR, "--input", "x:4x2:complex64"], 2, "unsupported dtype"),
    ("forward-raises-on-shape", [LINEAR, "--input", "x:4x3"], 1, "forward raised"),
    ("not-onnx", ["{tmp}/fake.onnx"], 1, "ONNX"),
    ("bad-init-json", [LINEAR, "--init-args", "{nope", "--input", "x:4x2"], 2, "not JSON"),
    ("bad-node-backend", [LINEAR, "--input", "x:4x2", "--node-backends", "gpu"], 2, "unknown Node backend"),
    ("int64-beyond-int32", [LINEAR, "--input", "x:4x2:int64:0..1099511627776"], 2, "outside the int32 range"),
    ("whole-pickled-module", ["{tmp}/whole.pt", "--input", "x:4x2"], 1, "--trust-pickle"),
    ("folder-as-model", ["{tmp}", "--input", "x:4x2"], 1, "is a folder, not a file"),
    ("corrupt-pt2", ["{tmp}/corrupt.pt2", "--input", "x:4x2"], 1, "cannot load torch.export program"),
    ("truncated-pt2", ["{tmp}/truncated.pt2", "--input", "x:4x2"], 1, "cannot load torch.export program"),
    ("bad-dynamic-sizes", [LINEAR, "--input", "x:?x2", "--dynamic-sizes", "4,zero"], 2, "positive integers"),
    ("dynamic-sizes-for-static-dim", [LINEAR, "--input", "x:4x2", "--dynamic-sizes", "x.1=3"], 2,
     "not a dynamic (?) dimension"),
    ("negative-time-limit", [LINEAR, "--input", "x:4x2", "--time-limit", "-1"], 2, "--time-limit"),
    ("unmatched-quantize-pattern", [LINEAR, "--input", "x:4x2", "--quantize", "uint8:*no_such_weight*"], 2,
     "match no float32 weight"),
]


def _pt2_files(tmp_path: Path) -> None:
    """A torch.export archive with its model.json replaced by garbage, and one cut in half."""
    import zipfile

    good = tmp_path / "good.pt2"
    torch.export.save(torch.export.export(torch.nn.Linear(2, 1), (torch.randn(4, 2),)), str(good))
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(tmp_path / "corrupt.pt2", "w") as target:
        for name in source.namelist():
            target.writestr(name, b"{not json" if name.endswith(".json") else source.read(name))
    data = good.read_bytes()
    _write(tmp_path / "truncated.pt2", data[:len(data) // 2])


@pytest.mark.parametrize("args, code, text", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_bad_cli_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], code: int,
                        text: str) -> None:
    _write(tmp_path / "empty.pt", b"")
    _write(tmp_path / "corrupt.pt", b"\x80\x04garbage" * 8)
    _write(tmp_path / "fake.onnx", b"this is not a protobuf")
    torch.save(torch.nn.Linear(2, 1), tmp_path / "whole.pt")
    _pt2_files(tmp_path)
    out = tmp_path / "out"
    result = cli_main(["convert", *[a.replace("{tmp}", str(tmp_path)) for a in args], "--out", str(out)])
    err = capsys.readouterr().err
    assert result == code, err
    assert text in err and "error: [" in err
    assert "Traceback" not in err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


API_CASES = [
    # (id, module, inputs (specs or example tensors), error type, text in the error)
    ("nested-outputs", _Nested(), ["x:2x3"], CaptureError, "flat"),
    ("non-tensor-output", _NonTensor(), ["x:2x3"], CaptureError, "float"),
    ("forward-raises", _Raises(), ["x:2x3"], CaptureError, "this model is broken"),
    ("int64-ids-beyond-int32", _Ids(), [torch.tensor([[2**40, 3]])], UsageError, "holds 1099511627776"),
]


@pytest.mark.parametrize("module, inputs, error, text", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_bad_models_through_the_api(tmp_path: Path, module: torch.nn.Module, inputs: list, error: type,
                                    text: str) -> None:
    with pytest.raises(error) as info:
        bridge.convert(module, inputs, tmp_path / "out", browser=False)
    assert text in str(info.value) and isinstance(info.value, BridgeError)
    assert info.value.stage and info.value.hint
    assert not (tmp_path / "out").exists()


class _Wide(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(64, 64)  # 16.6 kB of weights

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.fc(x)


def test_model_over_the_protobuf_limit_is_refused_before_any_work(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """With the 2 GB limit shrunk to 10 kB, a 16.6 kB model is refused right after loading, before the reference
    runs (a model whose forward would raise shows it: the size check comes first)."""
    import bridge.source.limits as limits
    import bridge.source.reference

    monkeypatch.setattr(limits, "PROTOBUF_LIMIT_BYTES", 10_000)
    monkeypatch.setattr(limits, "GRAPH_HEADROOM_BYTES", 0)
    monkeypatch.setattr(bridge.source.reference, "run_reference", lambda *a, **k: pytest.fail("work was not spared"))
    with pytest.raises(ModelTooLargeError) as info:
        bridge.convert(_Wide(), ["x:1x64"], tmp_path / "out", browser=False)
    error = info.value
    assert error.stage == "load-model" and "protobuf" in error.message
    assert "split the model" in (error.hint or "")
    assert not (tmp_path / "out").exists()


def test_weight_size_estimate_needs_no_memory() -> None:
    """A 3.6 GB model on the meta device (nothing allocated) is over the real limit; tied weights count once."""
    from bridge.source.limits import check_model_size, module_weight_bytes

    with torch.device("meta"):
        big = torch.nn.Linear(30_000, 30_000)
    assert module_weight_bytes(big) == (30_000 * 30_000 + 30_000) * 4
    with pytest.raises(ModelTooLargeError, match="3.60 GB"):
        check_model_size(big, None, "big")
    tied = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10, bias=False))
    tied[1].weight = tied[0].weight
    assert module_weight_bytes(tied) == 10 * 4 * 4


# ------------------------------------------------------------------------------------- bridge tfjs (SavedModel in)

def _two_signature_saved_model(folder: Path) -> Path:
    import tensorflow as tf

    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 2], tf.float32)])
        def double(self, x):  # type: ignore[no-untyped-def]
            return {"y": x * 2.0}

    module = Doubler()
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.double, "double": module.double})
    return folder


TFJS_CASES = [
    # (id, args ({sm}: a SavedModel with signatures serving_default and double; {tmp}), exit code, texts in the
    # error: the stage first). Reading the input is stage tfjs-read; the graph writer's limits are tfjs-write.
    ("no-such-signature", ["{sm}", "--signature", "nosuch"], 1, ["[tfjs-read]", "'nosuch'", "serving_default",
                                                                 "double", "--signature"]),
    ("not-a-saved-model", ["{tmp}/empty_dir"], 1, ["[tfjs-read]", "no SavedModel"]),
    ("over-protobuf-limit", ["{sm}", "--signature", "double"], 1, ["[tfjs-write]", "protobuf", "split the model"]),
]


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _two_signature_saved_model(tmp_path_factory.mktemp("sm") / "saved_model")


@pytest.mark.parametrize("case", TFJS_CASES, ids=[c[0] for c in TFJS_CASES])
def test_bad_tfjs_inputs(tmp_path: Path, saved_model: Path, capsys: pytest.CaptureFixture[str],
                         monkeypatch: pytest.MonkeyPatch, case: tuple) -> None:  # type: ignore[type-arg]
    import bridge.source.limits as limits

    name, args, code, texts = case
    if name == "over-protobuf-limit":  # the limit shrunk to 100 bytes: no 2 GB SavedModel needed
        monkeypatch.setattr(limits, "PROTOBUF_LIMIT_BYTES", 100)
        monkeypatch.setattr(limits, "GRAPH_HEADROOM_BYTES", 0)
    (tmp_path / "empty_dir").mkdir()
    out = tmp_path / "web"
    argv = [a.replace("{sm}", str(saved_model)).replace("{tmp}", str(tmp_path)) for a in args]
    result = cli_main(["tfjs", argv[0], str(out), *argv[1:]])
    err = capsys.readouterr().err
    assert result == code, err
    assert f"error: {texts[0]}" in err and all(t in err for t in texts), err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".web")]


class _Stuck(torch.nn.Module):
    """A forward that does not end in reasonable time (standing in for an accidental huge intermediate)."""

    def forward(self, x):  # type: ignore[no-untyped-def]
        import time

        time.sleep(60)
        return x


def test_reference_run_past_its_time_limit_is_one_error(tmp_path: Path) -> None:
    from bridge.util.time_limit import TimeLimitError

    out = tmp_path / "out"
    with pytest.raises(TimeLimitError) as caught:
        bridge.convert(_Stuck(), ["x:1x2"], out, time_limit=1)
    assert caught.value.stage == "reference" and "longer than 1 s" in caught.value.message
    assert "--time-limit" in (caught.value.hint or "")
    assert not out.exists()


def test_a_stage_past_its_time_limit_fails_that_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The must-fail twin of the limit on stages: a slow savedmodel check is that stage's failure, and the run
    goes on (exit code 3)."""
    import time

    from bridge.stages import plan, tensorflow

    check = tensorflow.check_saved_model

    def slow(env):  # type: ignore[no-untyped-def]
        time.sleep(120)
        return check(env)

    stages = tuple(plan.Stage(s.name, s.runtime, judges=s.judges, check=slow, layers=s.layers)
                   if s.name == "savedmodel" else s for s in plan.STAGES)
    monkeypatch.setattr(plan, "STAGES", stages)
    result = bridge.convert(torch.nn.Linear(2, 1), ["x:1x2"], tmp_path / "out", time_limit=20, browser=False,
                            node_backends=("wasm",))
    stage = result.stage("savedmodel")
    assert stage.status.value == "fail" and "took longer than 20 s" in (stage.reason or "")
    assert result.stage("tfjs-node-wasm").status.value == "pass" and not result.ok


def test_an_unknown_keyword_argument_names_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        bridge.convert(torch.nn.Linear(2, 1), ["x:1x2"], tmp_path / "out", routee="onnx")
    assert "routee" in caught.value.message and "route," in (caught.value.hint or "")
    assert not (tmp_path / "out").exists()
