"""docs/SUPPORTED_OPS.md, generated from the op registry (never edited by hand):
`python -m bridge.native.supported_ops` rewrites it; a test fails when it is stale."""

from __future__ import annotations

import sys
from pathlib import Path

from bridge.native.registry import default_registry, load_builtins, supported_ops
from bridge.util.templating import render

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "SUPPORTED_OPS.md"


def render_supported_ops() -> str:
    """The Markdown document: one row per ATen op the native route converts, grouped by family module."""
    load_builtins()
    rows = supported_ops(default_registry())
    families: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        families.setdefault(_family(row["converter"]), []).append(row)
    return render("supported_ops.md.j2", families=dict(sorted(families.items())), total=len(rows))


def _family(converter: str) -> str:
    """The family module of a converter's dotted path: bridge.native.ops.<family>.<function>."""
    prefix = "bridge.native.ops."
    return converter[len(prefix):].split(".")[0] if converter.startswith(prefix) else "user"


def main(argv: list[str] | None = None) -> int:
    """Write the document (or, with --check, exit 1 when the file on disk differs)."""
    args = sys.argv[1:] if argv is None else argv
    text = render_supported_ops()
    if "--check" in args:
        return 0 if DOC_PATH.is_file() and DOC_PATH.read_text() == text else 1
    DOC_PATH.parent.mkdir(parents=True, exist_ok=True)
    DOC_PATH.write_text(text)
    print(f"wrote {DOC_PATH} ({text.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
