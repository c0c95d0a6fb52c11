"""Finding the store of one's server: named after the master's pid and start time."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

from mockforge_wsgi._env import RUNTIME_DIR
from mockforge_wsgi.state import StoreError
from mockforge_wsgi.state._process import is_alive, start_time
from mockforge_wsgi.state.server_store import (
    remove_stale,
    server_store,
    server_store_directory,
)

FORK = multiprocessing.get_context("fork")


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(RUNTIME_DIR, str(tmp_path))
    return tmp_path / f"mockforge-{os.getuid()}"


def test_a_process_is_its_pid_and_start_time() -> None:
    me = os.getpid()
    assert start_time(me) > 0
    assert is_alive(me, start_time(me))
    assert not is_alive(me, start_time(me) + 1)  # a recycled pid is someone else
    assert not is_alive(0, 0)


def test_a_zombie_is_not_alive() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    time.sleep(0.2)  # exited, not yet reaped
    try:
        assert not is_alive(pid, 0)
    finally:
        os.waitpid(pid, 0)
    assert not is_alive(pid, 0)


def test_the_directory_is_named_after_the_master(runtime: Path) -> None:
    directory = server_store_directory()
    assert directory == runtime / f"{os.getppid()}-{start_time(os.getppid())}"
    assert (runtime.stat().st_mode & 0o777) == 0o700


def _count_in_server_store(results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    store = server_store()
    results.put(store.incr("requests"))


def test_the_workers_of_one_master_share_one_store(runtime: Path) -> None:
    # This test process plays the master: its children find one store.
    results: multiprocessing.Queue = FORK.Queue()  # type: ignore[type-arg]
    children = [FORK.Process(target=_count_in_server_store, args=(results,)) for _ in range(3)]
    for child in children:
        child.start()
    counts = sorted(results.get(timeout=30) for _ in children)
    for child in children:
        child.join(10)
    assert counts == [1, 2, 3]
    assert server_store_directory(os.getpid()).is_dir()


def test_stale_directories_are_removed(runtime: Path) -> None:
    runtime.mkdir(parents=True)
    me = os.getpid()
    live = runtime / f"{me}-{start_time(me)}"
    recycled = runtime / f"{me}-{start_time(me) + 1}"  # a dead master whose pid is reused
    gone = runtime / "999999999-5"
    other = runtime / "not-a-store"
    for directory in (live, recycled, gone, other):
        directory.mkdir()
    assert sorted(remove_stale(runtime)) == sorted([recycled, gone])
    assert live.is_dir() and other.is_dir()


def test_a_base_directory_of_someone_else_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tmp_path / f"mockforge-{os.getuid()}"
    base.write_text("not a directory")
    monkeypatch.setenv(RUNTIME_DIR, str(tmp_path))
    with pytest.raises(StoreError):
        server_store()
