"""The docs are tests: each fenced block of README.md, docs/*.md and examples/**/README.md
is a pytest item (tests/doc_blocks.py says how each kind runs and how to mark one)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "tests"))

from doc_blocks import SYBIL, server_items  # noqa: E402

pytest_collect_file = SYBIL.pytest()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in server_items(iter(items)):
        item.add_marker(pytest.mark.server)
