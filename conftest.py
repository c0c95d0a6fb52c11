"""The docs are tests: each fenced block of README.md, docs/*.md and examples/**/README.md
is a pytest item (tests/doc_blocks.py says how each kind runs and how to mark one)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from sybil.integration.pytest import SybilItem

if sys.dont_write_bytecode and not sys.pycache_prefix:
    # PYTHONDONTWRITEBYTECODE keeps __pycache__ out of the source tree; so does a prefix,
    # without making each process of the suite compile again what it imports: pytest
    # rewrote every test module in each xdist process (collection ~4.5 s, not ~1.3 s) and
    # every `mockforge` process compiled the package. Set here, before xdist starts its
    # processes, they and every process a test starts inherit it.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = os.path.join(
        tempfile.gettempdir(), f"mockforge-pycache-{os.getuid()}"
    )
    sys.pycache_prefix = os.environ["PYTHONPYCACHEPREFIX"]
    sys.dont_write_bytecode = False

sys.path.insert(0, str(Path(__file__).parent / "tests"))

from alone import alone_first, pytest_runtest_protocol  # noqa: F401  (a hook: the marker `alone`)
from doc_blocks import SYBIL, server_items

pytest_collect_file = SYBIL.pytest()


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups from the markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in server_items(iter(items)):
        item.add_marker(pytest.mark.server)
    for item in items:  # a document's blocks share its namespace: one process, in order
        if isinstance(item, SybilItem):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    alone_first(items)


def _whole_traceback(item: SybilItem, excinfo: pytest.ExceptionInfo[BaseException]) -> Any:
    """Sybil cuts the traceback at its own frame; a failure outside the block (a fixture,
    a server that did not start) has none, and Sybil's cut would fail the report."""
    try:
        return _sybil_filter(item, excinfo)
    except IndexError:
        return excinfo.traceback


_sybil_filter = SybilItem._traceback_filter
SybilItem._traceback_filter = _whole_traceback  # type: ignore[method-assign]
