"""Loading MODEL and weights: good files load; every bad file is one clear ModelLoadError; pickles never run."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from bridge.errors import ModelLoadError, UsageError
from bridge.source.model import load_model

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


# ------------------------------------------------------------------------------- whole pickled modules (--trust-pickle)

_NET_SOURCE = """
import torch


class PickledNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)

    def forward(self, x):
        return torch.relu(self.fc(x))
"""


def _save_whole_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> Path:
    """torch.save(model) of a class defined in an importable file `name`.py in tmp_path (on sys.path)."""
    import importlib

    (tmp_path / f"{name}.py").write_text(_NET_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(0)
    path = tmp_path / "whole.pt"
    torch.save(importlib.import_module(name).PickledNet(), path)
    return path


def test_whole_pickled_module_is_refused_naming_trust_pickle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save_whole_module(tmp_path, monkeypatch, "pickled_net_refused")
    with pytest.raises(ModelLoadError) as info:
        load_model(str(path))
    text = str(info.value)
    assert info.value.stage == "load-model" and "weights_only" in text
    assert "--trust-pickle" in text and "run any code" in text


def test_whole_pickled_module_loads_with_trust_pickle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save_whole_module(tmp_path, monkeypatch, "pickled_net_trusted")
    loaded = load_model(str(path), trust_pickle=True)
    assert loaded.kind == "pickled-module" and loaded.pickle_trusted and loaded.parameter_count == 8
    assert not loaded.module.training


def test_code_running_model_pickle_is_refused_without_the_flag(tmp_path: Path) -> None:
    """As MODEL, in torch.save's zip format and as a raw pickle: refused, naming the flag; the payload never runs."""
    marker = tmp_path / "pwned"
    zipped, raw = tmp_path / "evil.pt", tmp_path / "evil.pth"
    torch.save({"a": _Payload(str(marker))}, zipped)
    with open(raw, "wb") as handle:
        pickle.dump({"a": _Payload(str(marker))}, handle)
    for path in (zipped, raw):
        with pytest.raises(ModelLoadError) as info:
            load_model(str(path))
        assert "--trust-pickle" in str(info.value)
    assert not marker.exists()


def test_whole_module_as_weights_needs_trust_pickle(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("import torch\n\ndef make():\n    return torch.nn.Sequential(torch.nn.Linear(2, 1))\n")
    whole = torch.nn.Sequential(torch.nn.Linear(2, 1))
    torch.save(whole, tmp_path / "whole.pt")
    spec = f"{tmp_path / 'm.py'}:make"
    with pytest.raises(ModelLoadError) as info:
        load_model(spec, weights=tmp_path / "whole.pt")
    assert "--trust-pickle" in str(info.value)
    loaded = load_model(spec, weights=tmp_path / "whole.pt", trust_pickle=True)
    assert loaded.pickle_trusted
    assert torch.equal(loaded.module[0].weight, whole[0].weight)


def test_state_dict_weights_never_count_as_trusted_pickle(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    torch.save({"a": torch.tensor([1.0, 1.0]), "b": torch.tensor([0.5])}, path)
    assert not load_model(f"{LINEAR}:LinearModel", weights=path, trust_pickle=True).pickle_trusted


@pytest.mark.node
def test_cli_converts_a_whole_pickled_module_with_trust_pickle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from bridge.cli import main as cli_main

    path = _save_whole_module(tmp_path, monkeypatch, "pickled_net_cli")
    out = tmp_path / "out"
    args = ["convert", str(path), "--input", "x:2x3", "--out", str(out), "--route", "native", "--no-browser",
            "--node-backends", "wasm"]
    assert cli_main(args) == 1
    assert "--trust-pickle" in capsys.readouterr().err and not out.exists()
    assert cli_main([*args, "--trust-pickle"]) == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["kind"] == "pickled-module" and report["model"]["untrusted_pickle_loaded"] is True
    assert report["options"]["trust_pickle"] is True
    assert any("--trust-pickle" in note for note in report["notes"])
    assert "untrusted pickle" in (out / "report.md").read_text()
    assert "Untrusted pickle loading was allowed" in (out / "report.html").read_text()


# ------------------------------------------------------------------------------------------------ multi-file model code

BLOCKS = '''
import torch.nn as nn


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x).relu()
'''

NET = '''
import torch.nn as nn
{import_line}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = Encoder()
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        return self.head(self.enc(x))
'''

LAYOUT_CASES = [
    # (id, files relative to tmp, MODEL); each defines Net from an Encoder in a sibling module
    ("sibling module", {"proj/blocks.py": BLOCKS, "proj/model.py": NET.format(import_line="from blocks import Encoder")},
     "proj/model.py:Net"),
    ("package, relative import", {"pkg/__init__.py": "", "pkg/nets/__init__.py": "", "pkg/nets/blocks.py": BLOCKS,
                                  "pkg/nets/net.py": NET.format(import_line="from .blocks import Encoder")},
     "pkg/nets/net.py:Net"),
    ("package, absolute import", {"app/__init__.py": "", "app/blocks.py": BLOCKS,
                                  "app/net.py": NET.format(import_line="from app.blocks import Encoder")},
     "app/net.py:Net"),
]


@pytest.mark.parametrize("files, spec", [c[1:] for c in LAYOUT_CASES], ids=[c[0] for c in LAYOUT_CASES])
def test_model_code_over_several_files_loads_as_python_runs_it(tmp_path: Path, files: dict[str, str],
                                                                spec: str) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    loaded = load_model(str(tmp_path / spec))
    assert type(loaded.module.enc).__name__ == "Encoder"
    x = torch.randn(2, 4)
    assert loaded.module(x).shape == (2, 2)


def test_a_missing_module_names_itself_and_the_way_out(tmp_path: Path) -> None:
    (tmp_path / "model.py").write_text(NET.format(import_line="from nowhere_to_be_found import Encoder"))
    with pytest.raises(ModelLoadError) as caught:
        load_model(str(tmp_path / "model.py:Net"))
    assert "'nowhere_to_be_found'" in (caught.value.hint or "") and "PYTHONPATH" in (caught.value.hint or "")
