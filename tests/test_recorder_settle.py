"""Verdicts see every request finished before the question: each writer's mark in the
file, waited for by readers (recorder.py, docs/observability.md "Verdicts on the client")."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from servers import Server, mockforge_serve, one_request_per_sync_worker, session

from mockforge_wsgi import recorder as recorder_module
from mockforge_wsgi.recorder import Recorder

ROOT = Path(__file__).parent.parent


def row() -> tuple[Any, ...]:
    """A request served, in COLUMNS order up to ``direction``."""
    return (time.time(), "r", "GET", "/x", 200, 1.0, None, os.getpid(), None, None, "")


def writers(database: Path) -> dict[int, tuple[float, float]]:
    """Each writer's pid: (mark, mark_wall)."""
    with closing(sqlite3.connect(database)) as connection:
        found = connection.execute("SELECT pid, mark, mark_wall FROM writers").fetchall()
    return {pid: (mark, wall) for pid, mark, wall in found}


def test_a_request_that_arrived_holds_readers_until_its_row_is_queued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request in flight (its client may have its answer: the row is queued when the
    server closes the response) keeps its writer's mark before its arrival."""
    monkeypatch.setattr(recorder_module, "MAX_SETTLE_S", 0.3)
    recorder = Recorder(tmp_path / "r.db")
    ticket = recorder.arrived()
    assert recorder.settle() is False  # its row may be on its way: not settled
    assert recorder.unsettled == 1
    recorder.record(row() + (None,) * 5, ticket)
    assert recorder.settle() is True
    mark, wall = writers(recorder.path)[os.getpid()]
    assert mark <= time.monotonic() and abs(wall - time.time()) < 60  # one instant, twice
    assert len(recorder.attempts({})) == 1


def test_a_settle_with_nothing_pending_here_does_not_sleep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This process the only writer: its own flush is its mark, no wait (it was a fixed
    0.4 s sleep before)."""
    recorder = Recorder(tmp_path / "r.db")
    recorder.record(row() + (None,) * 5)
    me = threading.current_thread()
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        if threading.current_thread() is me:
            slept.append(seconds)
        time.sleep(seconds)

    clock = SimpleNamespace(sleep=sleep, time=time.time, monotonic=time.monotonic)
    monkeypatch.setattr(recorder_module, "time", clock)
    assert len(recorder.attempts({})) == 1
    assert recorder.settle() is True
    assert slept == []


def test_a_writer_elsewhere_silent_too_long_is_gone_and_a_live_one_is_waited_for_boundedly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Another host's (or container's) writer: no pid to look at, its beat says whether it
    lives. A live one behind holds the reader, at most MAX_SETTLE_S: then logged, counted."""
    recorder = Recorder(tmp_path / "r.db")
    old = time.time() - recorder_module.GONE_S - 1
    with closing(sqlite3.connect(recorder.path)) as connection, connection:
        connection.execute(
            "INSERT INTO writers VALUES ('other-boot', 'other-ns', 7, 0, ?, ?, 0)", (old, old)
        )
    assert recorder.settle() is True
    assert 7 not in writers(recorder.path)  # removed

    monkeypatch.setattr(recorder_module, "MAX_SETTLE_S", 0.1)
    fresh = time.time() - 1  # it beat a second ago, and has written nothing since then
    with closing(sqlite3.connect(recorder.path)) as connection, connection:
        connection.execute(
            "INSERT INTO writers VALUES ('other-boot', 'other-ns', 8, 0, ?, ?, 0)",
            (fresh, fresh),
        )
    with caplog.at_level(logging.WARNING, logger="mockforge_wsgi"):
        assert recorder.settle() is False
    assert recorder.unsettled == 1
    assert "answering without waiting longer for a writer (pid 8): 0.1 s passed" in caplog.text
    assert 8 in writers(recorder.path)


def sqlite_opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the threads that open the recorder's SQLite file, from now on."""
    opened: list[str] = []
    connect = Recorder._connect

    def counted(self: Recorder) -> sqlite3.Connection:
        opened.append(threading.current_thread().name)
        return connect(self)

    monkeypatch.setattr(Recorder, "_connect", counted)
    return opened


def test_an_idle_writer_opens_no_sqlite_until_a_reader_asks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle writer looks for an ask with one stat() (a fork while its thread is inside
    SQLite can leave the child stuck): no SQLite for five intervals; asked, it answers."""
    # No beat at all: only an ask can make the idle writer write its mark again, and an
    # ask it does not answer leaves settle() waiting out MAX_SETTLE_S and returning False.
    monkeypatch.setattr(recorder_module, "BEAT_S", 3600.0)
    recorder = Recorder(tmp_path / "r.db")
    recorder.record(row() + (None,) * 5)
    recorder.flush()
    opened = sqlite_opens(monkeypatch)
    time.sleep(5 * recorder_module.FLUSH_EVERY_S)
    assert opened == []
    other = Recorder(recorder.path)  # a reader in another process would do the same
    assert other.settle() is True
    assert "mockforge-recorder" in opened  # the writer answered the ask
    recorder.close()


def test_a_closed_or_dropped_recorder_ends_its_thread_and_takes_its_mark_away(
    tmp_path: Path,
) -> None:
    """A recorder done with polls nothing more: its thread ends, its rows are written,
    its mark no longer holds a reader."""

    def threads() -> int:
        return sum(t.name == "mockforge-recorder" for t in threading.enumerate())

    before = threads()
    closed, dropped = Recorder(tmp_path / "a.db"), Recorder(tmp_path / "b.db")
    for recorder in (closed, dropped):
        recorder.record(row() + (None,) * 5)
    assert threads() == before + 2
    closed.close()
    del dropped, recorder
    deadline = time.monotonic() + 2
    while threads() > before:
        assert time.monotonic() < deadline, "a writer thread outlived its recorder"
        time.sleep(0.02)
    for name in ("a.db", "b.db"):
        assert writers(tmp_path / name) == {}
        assert len(Recorder(tmp_path / name).attempts({}, settle=False)) == 1


def children_open_recorders(tmp_path: Path) -> None:
    """Three rounds of eight forked children, each opening a recorder of its own: every
    one must exit 0 (one stuck on SQLite's mutex exits 1 after 5 s)."""
    import multiprocessing

    fork = multiprocessing.get_context("fork")
    for round_ in range(3):
        results = fork.Queue()
        children = [
            fork.Process(
                target=_open_and_report, args=(str(tmp_path / f"c{round_}{n}.db"), results)
            )
            for n in range(8)
        ]
        for child in children:
            child.start()
        for child in children:
            child.join(10)
        assert [child.exitcode for child in children] == [0] * 8


def _open_and_report(path: str, results: Any) -> None:
    import faulthandler

    faulthandler.dump_traceback_later(5, exit=True)  # stuck on SQLite's mutex: exit 1
    Recorder(path)
    results.put("ok")


def test_a_fork_while_writer_threads_write_leaves_the_child_able_to_use_sqlite(
    tmp_path: Path,
) -> None:
    """A child forked while a writer thread is inside SQLite could wait forever on one of
    SQLite's mutexes (a clean-clone CI run's forked workers hung): forks wait for it."""
    busy = [Recorder(tmp_path / f"busy{n}.db") for n in range(40)]
    for recorder in busy:  # started here: the forks meet their writer threads only
        recorder.record(row() + (None,) * 5)
    stop = threading.Event()

    def keep_busy() -> None:  # rows for every writer at every interval
        while not stop.is_set():
            for recorder in busy:
                recorder.record(row() + (None,) * 5)
            time.sleep(0.001)

    feeder = threading.Thread(target=keep_busy)
    feeder.start()
    try:
        children_open_recorders(tmp_path)
    finally:
        stop.set()
        feeder.join()
        for recorder in busy:
            recorder.close()


# A second process that records into the server's file and serves on a real socket; its
# writer thread is held HELD_S at its first write of rows (a writer late on a busy machine).
HELD_S = 3.0
WRITER = """
import sys, threading, time
from werkzeug.serving import make_server
from mockforge_wsgi import recorder as r

held = threading.Event()
flush = r.Recorder.flush

def late_flush(self):
    if not self._queue.empty() and not held.is_set():
        held.set()
        time.sleep({held_s})
    return flush(self)

r.Recorder.flush = late_flush

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]

server = make_server("127.0.0.1", 0, r.RecorderMiddleware(app, r.Recorder(sys.argv[1])))
print(server.port, flush=True)
server.serve_forever()
"""


@contextmanager
def late_writer(database: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """The second process, its URL; killed (SIGKILL: no exit handler runs) at the end."""
    script = WRITER.format(held_s=HELD_S)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), str(database)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield f"http://127.0.0.1:{port}", process
    finally:
        process.kill()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    tmp = tmp_path_factory.mktemp("settle")
    database = tmp / "recorder.db"
    args = ("--workers", "2", "--worker-class", "sync", "--recorder-db", str(database))
    with mockforge_serve(tmp, *args) as server:
        yield server, database


def verdict_calls(server: Server, test_id: str) -> int:
    with session() as http:
        answer = http.get(
            server.url + "/api/chaos/verdicts", params={"test_id": test_id}, timeout=30
        )
    assert answer.status_code == 200, answer.text
    return int(answer.json()["summary"]["calls"])


@pytest.mark.server
def test_a_verdict_waits_for_a_late_writer_in_another_process_and_counts_its_rows(
    served: tuple[Server, Path],
) -> None:
    server, database = served
    with late_writer(database) as (url, process), session() as http:
        tag = {"X-Mockforge-Test-Id": "late"}
        assert http.get(server.url + "/api/test", headers=tag, timeout=10).ok
        assert http.get(url + "/b", headers=tag, timeout=10).ok  # held in its queue
        assert process.pid in writers(database)  # its mark is there before its answer
        # Both requests are finished; the second one's row is written HELD_S later.
        assert verdict_calls(server, "late") == 2
    assert "answering without waiting" not in server.log()


@pytest.mark.server
def test_a_killed_worker_does_not_hold_a_verdict(served: tuple[Server, Path]) -> None:
    server, database = served
    one_request_per_sync_worker(server.url, 2, "/api/test")  # both record: both write
    pids = {found["worker"] for found in Recorder(database).attempts({"path_prefix": "/api"})}
    assert len(pids) == 2
    assert pids <= set(writers(database))
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)  # its mark stays in the file, behind every question
    with session() as http:
        tag = {"X-Mockforge-Test-Id": "after-kill"}
        assert http.get(server.url + "/api/test", headers=tag, timeout=10).ok
    assert verdict_calls(server, "after-kill") == 1
    assert victim not in writers(database)  # seen gone (pid not alive), its mark removed
    assert "answering without waiting" not in server.log()


def test_a_fork_while_a_request_thread_reads_leaves_the_child_able_to_use_sqlite(
    tmp_path: Path,
) -> None:
    """Request threads read the file too (the admin listener in gunicorn's master serves
    searches and verdicts while the master forks a respawned worker): a fork waits until
    no thread of the process is inside SQLite, whoever's it is."""
    recorder = Recorder(tmp_path / "read.db")
    for _ in range(500):
        recorder.record(row() + (None,) * 5)
    recorder.flush()
    stop = threading.Event()

    def keep_reading() -> None:  # a request thread answering searches back to back
        while not stop.is_set():
            assert len(recorder.search({"limit": 500})) == 500

    readers = [threading.Thread(target=keep_reading) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        children_open_recorders(tmp_path)
    finally:
        stop.set()
        for reader in readers:
            reader.join()
        recorder.close()


def test_a_fork_taken_inside_a_database_block_does_not_wait_for_itself(tmp_path: Path) -> None:
    """The fork gate counts the forking thread's own blocks out (a GC-run ``__del__`` or
    a user's fork inside one would otherwise wait for itself forever)."""
    script = textwrap.dedent(
        """
        import os, sys
        from mockforge_wsgi.recorder import Recorder
        recorder = Recorder(sys.argv[1])
        with recorder._database() as connection:
            pid = os.fork()
            if pid == 0:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        with recorder._database() as connection:  # the gate is open again in the parent
            connection.execute("SELECT 1")
        print("forked", os.waitstatus_to_exitcode(status))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "gate.db")],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert done.stdout.strip() == "forked 0", done.stderr


def _record_in_child(recorder: Recorder, results: Any) -> None:
    import faulthandler

    faulthandler.dump_traceback_later(5, exit=True)  # stuck on the parent's lock: exit 1
    recorder.record(row() + (None,) * 5)
    results.put(recorder.flush())


def test_a_child_forked_mid_flush_records_and_leaves_the_parents_rows_to_it(
    tmp_path: Path,
) -> None:
    """A fork taken while one of the parent's threads held the recorder's write lock (a
    writer thread between taking its queue and SQLite, a request thread flushing before a
    search) left the child waiting on that lock forever at its first request; and the
    child wrote the rows it found queued, which the parent writes too."""
    import multiprocessing

    recorder = Recorder(tmp_path / "mid.db")
    recorder.record(row() + (None,) * 5)  # the parent's, queued when the child is forked
    fork = multiprocessing.get_context("fork")
    results = fork.Queue()
    with recorder._write_lock:  # held by "another thread" of the parent at fork time
        child = fork.Process(target=_record_in_child, args=(recorder, results))
        child.start()
    child.join(10)
    assert child.exitcode == 0
    assert results.get(timeout=1) == 1  # its own row only
    recorder.close()
    assert len(recorder.attempts({}, settle=False)) == 2
