"""The README's two commands work from a clean clone (using this checkout's already-built virtualenv, so the test
stays quick; CI itself runs `make test` in a fresh clone, which proves the from-scratch install)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _first_screen_commands() -> list[str]:
    first_screen = "\n".join(ROOT.joinpath("README.md").read_text().splitlines()[:30])
    block = re.search(r"```bash\n(.*?)```", first_screen, re.S)
    assert block, "the README's first screen has no bash block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_first_screen_has_exactly_two_commands() -> None:
    assert _first_screen_commands() == ["make demo", "make test"]


def test_ci_runs_the_readme_test_command_and_nothing_else() -> None:
    lines = [line.strip() for line in ROOT.joinpath(".ci", "run").read_text().splitlines()]
    commands = [line for line in lines if line and not line.startswith("#") and not line.startswith("set ")
                and not line.startswith("cd ")]
    assert commands == ["make test"]


@pytest.mark.node
def test_demo_from_a_clean_clone(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    venv = Path(sys.prefix)
    # Borrow this checkout's virtualenv without re-pointing its editable install at the clone.
    env = {**os.environ, "BRIDGE_VENV": str(venv), "PYTHONPATH": str(clone), "BRIDGE_SETUP_NO_PIP": "1"}
    result = subprocess.run(["make", "demo", f"VENV={venv}"], cwd=clone, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((clone / "out" / "tiny_cnn" / "report.json").read_text())
    assert report["status"] == "pass"
    assert (clone / "out" / "tiny_cnn" / "web_model" / "model.json").is_file()
    stage_names = [s["name"] for s in report["stages"]]
    assert report["route"] == "native"
    assert {"capture", "tf", "savedmodel", "tfjs-graph", "tfjs-node-wasm", "tfjs-node-cpu", "browser-webgl",
            "browser-wasm", "browser-indexeddb"} <= set(stage_names)


def _documented_gaps(readme: str) -> dict[str, list[str]]:
    import argparse

    from bridge.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {name: [o for a in parser._actions for o in a.option_strings
                   if o.startswith("--") and o != "--help" and o not in readme]
            for name, parser in sub.choices.items()}


def test_readme_mentions_every_cli_option() -> None:
    gaps = _documented_gaps(ROOT.joinpath("README.md").read_text())
    assert {name: missing for name, missing in gaps.items() if missing} == {}


def test_option_check_can_fail() -> None:
    assert _documented_gaps("nothing here")["convert"]


def test_readme_lists_every_python_api_keyword() -> None:
    """The README's Python API paragraph names every ConvertOptions field (the keywords bridge.convert takes)."""
    from dataclasses import fields

    from bridge.options import ConvertOptions

    text = ROOT.joinpath("README.md").read_text()
    section = text[text.index("takes the fields\nof `bridge.options.ConvertOptions`"):][:1200]
    assert [f.name for f in fields(ConvertOptions) if f"`{f.name}`" not in section] == []
