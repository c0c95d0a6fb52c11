"""The embedded store across real processes (fork), including one killed mid-update."""

from __future__ import annotations

import fcntl
import gc
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mockforge_wsgi.state import Bucket, EmbeddedStore, MemoryStore, StoreError, store_from_url
from mockforge_wsgi.state.embedded import MAX_WORKERS

FORK = multiprocessing.get_context("fork")


def test_store_urls(tmp_path: Path) -> None:
    assert isinstance(store_from_url("memory://"), MemoryStore)
    embedded = store_from_url(f"file://{tmp_path}/shared")
    assert isinstance(embedded, EmbeddedStore)
    assert embedded.path.parent == tmp_path / "shared"
    with pytest.raises(ValueError, match="expected memory://, file:///path"):
        store_from_url("ftp://localhost")


def test_state_is_seen_by_another_process(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path)
    assert store.load_state() == (0, None)

    def writer() -> None:
        EmbeddedStore(tmp_path).save_state({"enabled": True})

    child = FORK.Process(target=writer)
    child.start()
    child.join(10)
    assert store.state_version() == 1
    assert store.load_state() == (1, {"enabled": True})


INCREMENTS = 5000  # per process: without the file lock, hundreds of numbers collide


def _charge_many(
    directory: Path,
    count: int,
    start: Any,
    results: multiprocessing.Queue,  # type: ignore[type-arg]
) -> None:
    store = EmbeddedStore(directory)
    bucket = [Bucket("global", 1000.0, 100)]  # one token per 1000 s: only the burst passes
    start.wait(30)  # all four at once: the lock is contended, not taken in turns
    admitted = sum(store.acquire(bucket, time.monotonic())[1].allowed for _ in range(count))
    numbers = [store.incr("pattern_requests") for _ in range(INCREMENTS)]
    results.put((admitted, numbers))


def test_one_bucket_and_unique_counts_across_processes(tmp_path: Path) -> None:
    EmbeddedStore(tmp_path)
    results: multiprocessing.Queue = FORK.Queue()  # type: ignore[type-arg]
    start = FORK.Barrier(4)
    children = [
        FORK.Process(target=_charge_many, args=(tmp_path, 400, start, results)) for _ in range(4)
    ]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=60) for _ in children]
    for child in children:
        child.join(10)
    assert sum(admitted for admitted, _ in outcomes) == 100  # one burst for all four
    numbers = sorted(n for _, ns in outcomes for n in ns)
    total = 4 * INCREMENTS
    assert numbers == list(range(1, total + 1))  # every request got its own number
    assert EmbeddedStore(tmp_path).counters()["pattern_requests"] == total


def _hold_the_lock_forever(directory: Path, ready: multiprocessing.Event) -> None:  # type: ignore[type-arg]
    store = EmbeddedStore(directory)
    with store._locked():
        ready.set()
        time.sleep(600)


def _killed(target: Any, directory: Path, before_kill: Any = None) -> int:
    """Run ``target`` in a child until it says it is ready, then SIGKILL it (no one
    tells the store); returns its pid. ``before_kill`` runs while it is still alive."""
    ready = FORK.Event()
    child = FORK.Process(target=target, args=(directory, ready))
    child.start()
    assert ready.wait(10)
    if before_kill is not None:
        before_kill()
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    return child.pid


def _in_use(store: EmbeddedStore, expected: int) -> None:
    assert store.slots_in_use("connections") == expected


def test_a_worker_killed_holding_the_lock_blocks_nobody(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path)
    _killed(_hold_the_lock_forever, tmp_path)
    start = time.monotonic()
    assert store.incr("after") == 1  # the kernel dropped the dead process's lock
    assert time.monotonic() - start < 5


def _take_a_slot_and_die(directory: Path, ready: multiprocessing.Event) -> None:  # type: ignore[type-arg]
    store = EmbeddedStore(directory)
    assert store.acquire_slot("connections", 5, 0)
    ready.set()
    time.sleep(600)


def test_a_dead_workers_slots_are_released(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path)
    pid = _killed(_take_a_slot_and_die, tmp_path, lambda: _in_use(store, 1))
    store.release_worker(pid)  # what gunicorn's child_exit hook does
    assert store.slots_in_use("connections") == 0
    assert store.acquire_slot("connections", 1, 0)
    assert not store.acquire_slot("connections", 1, 0.01)
    store.release_slot("connections")
    assert store.slots_in_use("connections") == 0


def test_bucket_table_is_bounded_and_drops_full_buckets(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path, max_keys=512)  # 1024 entries
    now = 100.0
    for i in range(5000):
        assert store.acquire([Bucket(f"ip:{i}", 1.0, 5)], now)[1].allowed
    assert store.evicted > 0  # more live keys than entries: the nearest to full went
    later = now + 10  # every bucket is full again: all entries are free
    for i in range(1000):
        assert store.acquire([Bucket(f"ip:new{i}", 1.0, 5)], later)[1].allowed
    assert store.acquire([Bucket("ip:new1", 1.0, 1)], later)[1].allowed is False  # still tracked


def test_reset_and_counters(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path)
    store.incr("latency", 3)
    store.set_counter("pattern_requests", 0)
    assert store.counters() == {"latency": 3}
    store.acquire([Bucket("global", 1.0, 1)], 5.0)
    assert not store.acquire([Bucket("global", 1.0, 1)], 5.0)[1].allowed
    store.reset()
    assert store.counters() == {}
    assert store.acquire([Bucket("global", 1.0, 1)], 5.0)[1].allowed


def _count_once(directory: Path) -> None:
    EmbeddedStore(directory).incr("requests")


# The churn below forks from a small process: a fork copies the page tables of its
# parent, and from a test process (pytest, the whole package, its threads) each of the
# 300 forks took ~10 ms alone and up to ~85 ms under the full suite.
CHURN = """
import os, sys, traceback
from pathlib import Path
from mockforge_wsgi.state import EmbeddedStore

directory = Path(sys.argv[1])
for number in range(int(sys.argv[2])):
    pid = os.fork()
    if pid == 0:  # a worker that counts once and exits without a word to the store
        code = 0
        try:
            EmbeddedStore(directory).incr("requests")
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"worker {number} failed")
"""


def test_worker_churn_never_runs_out_of_rows(tmp_path: Path) -> None:
    # gunicorn --max-requests: a new pid for every worker, no hook gives rows back.
    # More short-lived processes than there are rows: each claims the row of one gone.
    EmbeddedStore(tmp_path)
    processes = MAX_WORKERS + 44
    churn = subprocess.run(
        [sys.executable, "-c", CHURN, str(tmp_path), str(processes)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert churn.returncode == 0, churn.stderr
    store = EmbeddedStore(tmp_path)
    assert store.counters()["requests"] == processes  # a gone worker's counts stay
    assert store.incr("after") == 1


def test_a_dead_workers_slots_come_back_without_any_hook(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path)
    _killed(_take_a_slot_and_die, tmp_path)
    with store._locked():
        assert store._in_flight(store._slot_index("connections")) == 1  # nobody told the store
    # Its replacement (any new process) claims a row and frees those of the gone.
    replacement = FORK.Process(target=_count_once, args=(tmp_path,))
    replacement.start()
    replacement.join(10)
    with store._locked():
        assert store._in_flight(store._slot_index("connections")) == 0


def test_counting_slots_in_use_skips_killed_holders(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path)
    _killed(_take_a_slot_and_die, tmp_path, lambda: _in_use(store, 1))
    assert store.slots_in_use("connections") == 0  # what /stats shows


def test_two_store_objects_of_one_process_share_its_row(tmp_path: Path) -> None:
    first, second = EmbeddedStore(tmp_path), EmbeddedStore(tmp_path)
    assert first.acquire_slot("connections", 5, 0)
    assert second.slots_in_use("connections") == 1  # not wiped by the second claim
    second.incr("x")
    first.release_slot("connections")
    assert second.slots_in_use("connections") == 0


def _seed(directory: Path, value: int, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    results.put(EmbeddedStore(directory).init_state({"seeded_by": value}))


def test_init_state_seeds_once_across_racing_processes(tmp_path: Path) -> None:
    results: multiprocessing.Queue = FORK.Queue()  # type: ignore[type-arg]
    children = [FORK.Process(target=_seed, args=(tmp_path, n, results)) for n in range(6)]
    for child in children:
        child.start()
    seeded = [results.get(timeout=30) for _ in children]
    for child in children:
        child.join(10)
    assert sorted(seeded) == [False] * 5 + [True]
    store = EmbeddedStore(tmp_path)
    assert store.state_version() == 1
    assert not store.init_state({"seeded_by": "late"})
    store.save_state({"changed": True})
    assert store.load_state() == (2, {"changed": True})


def test_os_errors_reach_callers_as_store_errors(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path)
    os.close(store._fd)  # the file's descriptor is gone: fcntl fails with EBADF
    for call in (
        lambda: store.incr("x"),
        lambda: store.acquire_slot("connections", 1, 0),
        store.load_state,
        lambda: store.acquire([Bucket("global", 1.0, 1)], 1.0),
    ):
        with pytest.raises(StoreError, match="embedded store"):
            call()
    (tmp_path / "a-file").write_text("")
    with pytest.raises(StoreError, match="embedded store"):
        EmbeddedStore(tmp_path / "a-file" / "below")  # a directory under a file


def test_a_release_that_could_not_be_written_does_not_stay_taken(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path)
    assert store.acquire_slot("connections", 5, 0)
    assert store.acquire_slot("connections", 5, 0)
    read_only = os.open(tmp_path / "read-only", os.O_RDONLY | os.O_CREAT)
    fd, store._fd = store._fd, read_only  # a write lock on it fails: EBADF
    with pytest.raises(StoreError):
        store.release_slot("connections")
    store._fd = fd
    os.close(read_only)
    assert store.acquire_slot("connections", 5, 0)  # settles the owed release first
    assert store.slots_in_use("connections") == 2


def test_a_waiter_gets_the_slot_of_a_killed_holder(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path)
    store.incr("requests")  # this process has its row: no claim will look for the dead
    _killed(_take_a_slot_and_die, tmp_path)
    # The limit is full with the dead holder's slot; waiting finds it gone.
    assert store.acquire_slot("connections", 1, 5.0)
    assert store.slots_in_use("connections") == 1


def _try_the_lock(path: Path, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
        results.put("taken")
    except OSError:
        results.put("held")
    finally:
        os.close(fd)


def test_a_second_store_collected_leaves_the_first_ones_lock_held(tmp_path: Path) -> None:
    """Closing any descriptor of a file drops every fcntl lock the process holds on it,
    and an mmap closes its own copy of the descriptor when collected: a second store of
    the same file, collected while the first held the lock, let another process in (a
    fast loop once admitted 101 of a burst of 100)."""
    first, second = EmbeddedStore(tmp_path), EmbeddedStore(tmp_path)
    results: multiprocessing.Queue = FORK.Queue()  # type: ignore[type-arg]
    with first._locked():
        del second
        gc.collect()  # a store is in a reference cycle (its lock holds it): collected here
        child = FORK.Process(target=_try_the_lock, args=(first.path, results))
        child.start()
        child.join(10)
    assert results.get(timeout=10) == "held"
