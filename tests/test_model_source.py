"""Loading MODEL and weights: good files load; every bad file is one clear ModelLoadError; pickles never run."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from bridge.errors import ModelLoadError, UsageError
from bridge.model_source import load_model

ROOT = Path(__file__).resolve().parents[1]
LINEAR = str(ROOT / "examples" / "linear" / "model.py")
CNN = str(ROOT / "examples" / "tiny_cnn" / "model.py")


def test_python_class_with_init_args_and_safetensors(tmp_path: Path) -> None:
    weights = tmp_path / "w.safetensors"
    save_file({"a": torch.tensor([2.0, 3.0]), "b": torch.tensor([1.0])}, str(weights))
    loaded = load_model(f"{LINEAR}:LinearModel", weights=weights, init_args="[[0.0, 0.0], 0.0]")
    assert loaded.parameter_count == 3
    out = loaded.module(torch.tensor([[0.6, 0.2]]))
    assert torch.allclose(out, torch.tensor([2.0 * 0.6 + 3.0 * 0.2 + 1.0]))


def test_state_dict_pt_with_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    torch.save({"a": torch.tensor([1.0, 1.0]), "b": torch.tensor([0.5])}, path)
    loaded = load_model(f"{LINEAR}:LinearModel", weights=path)
    assert float(loaded.module.b) == 0.5


class _Payload:
    """Unpickling this would create a file: the proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"a": _Payload(str(marker))}, handle)
    with pytest.raises(ModelLoadError) as info:
        load_model(f"{LINEAR}:LinearModel", weights=path)
    assert "weights_only" in str(info.value)
    assert not marker.exists()


def _write_truncated(tmp_path: Path) -> Path:
    good = tmp_path / "good.safetensors"
    save_file({"a": torch.zeros(2), "b": torch.zeros(1)}, str(good))
    bad = tmp_path / "trunc.safetensors"
    bad.write_bytes(good.read_bytes()[:-5])
    return bad


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


BAD_WEIGHTS = [
    ("missing", lambda p: p / "none.pt", "does not exist"),
    ("empty", lambda p: _write(p / "e.pt", b""), "is empty"),
    ("corrupt", lambda p: _write(p / "c.pt", b"\x00garbage" * 10), "cannot load weights"),
    ("truncated-safetensors", _write_truncated, "cannot read safetensors"),
    ("not-a-state-dict", lambda p: torch.save([1, 2], p / "l.pt") or p / "l.pt", "does not hold a state_dict"),
]


@pytest.mark.parametrize("make, text", [c[1:] for c in BAD_WEIGHTS], ids=[c[0] for c in BAD_WEIGHTS])
def test_bad_weight_files(tmp_path: Path, make, text: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ModelLoadError) as info:
        load_model(f"{LINEAR}:LinearModel", weights=make(tmp_path))
    assert text in str(info.value)


def test_mismatching_state_dict_lists_every_problem(tmp_path: Path) -> None:
    state = torch.nn.Module.state_dict(load_model(f"{CNN}:TinyCNN").module)
    del state["classifier.bias"]
    state["extra.weight"] = torch.zeros(1)
    state["features.0.weight"] = torch.zeros(1, 1)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(ModelLoadError) as info:
        load_model(f"{CNN}:TinyCNN", weights=path)
    text = str(info.value)
    assert "missing: classifier.bias" in text and "unexpected: extra.weight" in text
    assert "shape of features.0.weight" in text


BAD_SPECS = [
    ("no-class", f"{LINEAR}", UsageError, "names a Python file"),
    ("constructor-fails", f"{LINEAR}:LinearModel", ModelLoadError, "raised"),
    ("not-a-module", "{tmp}/f.py:make", ModelLoadError, "not a torch.nn.Module"),
    ("import-fails", "{tmp}/broken.py:M", ModelLoadError, "importing"),
    ("not-torchscript", "{tmp}/junk.pt", ModelLoadError, "not a TorchScript archive"),
]


@pytest.mark.parametrize("spec, error, text", [c[1:] for c in BAD_SPECS], ids=[c[0] for c in BAD_SPECS])
def test_bad_model_specs(tmp_path: Path, spec: str, error: type, text: str) -> None:
    (tmp_path / "f.py").write_text("def make():\n    return 3\n")
    (tmp_path / "broken.py").write_text("raise RuntimeError('no')\n")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    init = '{"bogus": 1}' if "constructor" in spec or spec.endswith("LinearModel") else None
    with pytest.raises(error) as info:
        load_model(spec.replace("{tmp}", str(tmp_path)), init_args=init)
    assert text in str(info.value)
