"""The guide's generated tables are current. Every block of it (the curl line of each route
included) runs as a doc test: tests/doc_blocks.py."""

from __future__ import annotations

from pathlib import Path

from mockforge_wsgi.config_docs import render_into

GUIDE = Path(__file__).parent.parent / "docs" / "CHAOS_ENGINEERING.md"


def test_the_guide_is_generated_and_current() -> None:
    document = GUIDE.read_text(encoding="utf-8")
    assert render_into(document) == document, (
        "docs/CHAOS_ENGINEERING.md is stale: python -m mockforge_wsgi.config_docs "
        "--write docs/CHAOS_ENGINEERING.md"
    )
