"""The ``alone`` marker's scheduling (tests/alone.py): the alone tests first, and a
worker keeps its exclusive lock from one alone test to the next."""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import Any

import alone
import pytest


class _Item:
    def __init__(self, name: str, *, is_alone: bool) -> None:
        self.name, self.is_alone = name, is_alone

    def get_closest_marker(self, name: str) -> Any:
        return object() if name == "alone" and self.is_alone else None


def _locked(path: Path) -> bool:
    """Whether another holder has ``path`` exclusively (a second open file is another
    holder to flock, even in this process)."""
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def _run(item: _Item, nextitem: _Item | None) -> None:
    protocol = alone.pytest_runtest_protocol(item, nextitem)  # type: ignore[arg-type]
    next(protocol)  # the locks are taken: the test would run now
    with pytest.raises(StopIteration):
        protocol.send(None)


def test_the_alone_tests_come_first_in_their_order() -> None:
    items = [_Item(n, is_alone=n in "bd") for n in "abcde"]
    alone.alone_first(items)  # type: ignore[arg-type]
    assert [i.name for i in items] == ["b", "d", "a", "c", "e"]


def test_a_worker_keeps_the_lock_between_two_alone_tests(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PYTEST_XDIST_TESTRUNUID", f"unit-{tmp_path.name}")
    files = alone._lock_files()
    assert files is not None
    lock, turnstile = files
    first, second, other = (_Item(n, is_alone=n != "c") for n in "abc")
    try:
        _run(first, second)
        assert _locked(lock) and _locked(turnstile)  # no other test may start between
        _run(second, other)
        assert not _locked(lock) and not _locked(turnstile)  # the block is over
        _run(other, None)
        assert not _locked(lock) and not _locked(turnstile)
    finally:
        if alone._held is not None:
            alone._held.close()
            alone._held = None
        lock.unlink(missing_ok=True)
        turnstile.unlink(missing_ok=True)
