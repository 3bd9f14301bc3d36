"""Input specs and sample inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bridge.errors import UsageError
from bridge.source.inputs import InputSpec, load_sample_inputs, make_sample_inputs, parse_input_spec

GOOD = [
    ("x:1x3x64x64", InputSpec("x", (1, 3, 64, 64))),
    ("x:?x3x224x224", InputSpec("x", (None, 3, 224, 224))),
    ("ids:1x128:int64", InputSpec("ids", (1, 128), "int64")),
    ("ids:?x8:int64:0..999", InputSpec("ids", (None, 8), "int64", 0.0, 999.0)),
    ("mask:1x8:bool", InputSpec("mask", (1, 8), "bool")),
    ("s:", InputSpec("s", ())),
]
BAD = ["x", "x:1x0", "x:1xa", "1x:1x2", "x:1x2:complex64", "x:1x2:float32:5..1", "x:1:float32:a..b:c"]


@pytest.mark.parametrize("text, spec", GOOD, ids=[g[0] for g in GOOD])
def test_parse_good(text: str, spec: InputSpec) -> None:
    assert parse_input_spec(text) == spec


@pytest.mark.parametrize("text", BAD)
def test_parse_bad_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_input_spec(text)
    assert info.value.exit_code == 2 and info.value.stage == "inputs"


def test_samples_are_seeded_and_dynamic_dims_vary() -> None:
    specs = [parse_input_spec("x:?x3"), parse_input_spec("ids:2x4:int64:5..7")]
    first, again = make_sample_inputs(specs, 3, seed=1), make_sample_inputs(specs, 3, seed=1)
    assert all(np.array_equal(a["x"], b["x"]) for a, b in zip(first, again))
    assert [s["x"].shape[0] for s in first] == [2, 3, 2]
    assert all(s["ids"].dtype == np.int64 and s["ids"].min() >= 5 and s["ids"].max() <= 7 for s in first)


def test_load_sample_inputs_single_and_stacked(tmp_path: Path) -> None:
    specs = [parse_input_spec("x:1x2")]
    np.savez(tmp_path / "one.npz", x=np.ones((1, 2)))
    np.savez(tmp_path / "many.npz", x=np.ones((4, 1, 2)))
    assert len(load_sample_inputs(tmp_path / "one.npz", specs)) == 1
    assert len(load_sample_inputs(tmp_path / "many.npz", specs)) == 4


@pytest.mark.parametrize("content", [{"y": np.ones((1, 2))}, {"x": np.ones((1, 3))}])
def test_load_sample_inputs_refuses_mismatch(tmp_path: Path, content: dict) -> None:
    np.savez(tmp_path / "s.npz", **content)
    with pytest.raises(UsageError):
        load_sample_inputs(tmp_path / "s.npz", [parse_input_spec("x:1x2")])
