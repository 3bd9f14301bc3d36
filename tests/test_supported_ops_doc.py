"""docs/SUPPORTED_OPS.md is generated from the registry and must be up to date."""

from __future__ import annotations

from bridge.native.supported_ops import DOC_PATH, main, render_supported_ops


def test_supported_ops_doc_is_current() -> None:
    assert DOC_PATH.read_text() == render_supported_ops(), "run: python -m bridge.native.supported_ops"


def test_stale_check_can_fail(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import bridge.native.supported_ops as module

    stale = tmp_path / "SUPPORTED_OPS.md"
    stale.write_text("old\n")
    monkeypatch.setattr(module, "DOC_PATH", stale)
    assert main(["--check"]) == 1
    assert main([]) == 0 and main(["--check"]) == 0
