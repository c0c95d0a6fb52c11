"""The ``alone`` marker: no other test at the same time, across pytest-xdist's workers.

Every test holds a shared lock on one file for its setup, call and teardown; a test
marked ``alone`` (wall-clock figures: latency accuracy, pacing) holds it exclusively, so
it starts once every other worker's test has ended and none starts until it ends. A
second file is the turnstile: a test waiting to be alone holds it, and every test
passes through it before taking its shared lock, so a stream of other tests cannot
keep it waiting forever. Without xdist (one process) there is nothing to wait for.

A worker whose next test is ``alone`` too keeps both locks, and the ``alone`` tests come
first in the collection (``alone_first``), so they run as one block: each time an
``alone`` test waits for another worker's test to end, that worker's core was the only
one at work (15 such waits cost 41 s of one core in a run of 5:39).

The root conftest.py registers the hook, so that the docs' blocks take part too.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest


def _lock_files() -> tuple[Path, Path] | None:
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")  # the same in every worker of a run
    if run is None:
        return None
    folder = Path(tempfile.gettempdir())
    return folder / f"mockforge-tests-{run}.lock", folder / f"mockforge-tests-{run}.turn"


@contextlib.contextmanager
def _flock(path: Path, mode: int) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def alone_first(items: list[pytest.Item]) -> None:
    """The ``alone`` tests first, in their order (pytest-xdist then hands them out one
    after another; a group's stay in their group, first in it)."""
    items.sort(key=lambda item: item.get_closest_marker("alone") is None)


# This worker's exclusive hold, kept from one ``alone`` test to the next (a flock lock
# belongs to an open file: opening the files again to lock them would wait for ourselves).
_held: contextlib.ExitStack | None = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    files = _lock_files()
    if files is None:
        return (yield)
    lock, turnstile = files
    if item.get_closest_marker("alone"):
        global _held
        if _held is None:
            _held = contextlib.ExitStack()
            _held.enter_context(_flock(turnstile, fcntl.LOCK_EX))
            _held.enter_context(_flock(lock, fcntl.LOCK_EX))
        try:
            return (yield)
        finally:
            if nextitem is None or nextitem.get_closest_marker("alone") is None:
                _held.close()
                _held = None
    with _flock(turnstile, fcntl.LOCK_EX):
        pass
    with _flock(lock, fcntl.LOCK_SH):
        return (yield)
