"""The request recorder: one SQLite row per request, with what the Plan injected.

Requests only put a tuple on a queue; a background thread per process writes them in
batches (SQLite in WAL mode, so several worker processes can share one file), and keeps
the table under ``max_rows``. ``RecorderMiddleware`` records and serves the search API::

    POST /api/recorder/search  {"status_code": 500, "path_prefix": "/api", "fault_type":
                                "http_error", "method": "GET", "since": 1.7e9, "until": ...,
                                "limit": 100, "offset": 0}
    GET  /api/recorder/export?format=jsonl|csv     every row, streamed in pages
    GET  /api/recorder/events                      the server's events (a guard's trip)

Rows queued in a process are written when it exits (gunicorn stops workers with SIGTERM
and they exit normally), so a stop right after load loses none. With an admin token set,
both routes need it: they expose request data.

Verdicts must see every request a client finished before it asked, and each process
writes its own rows late. So each writer keeps a mark in the file ("every request that
arrived here before this time is written": the time it last emptied its queue, or the
arrival of its oldest request whose row is not queued yet), and a reader that starts at
S waits until every live writer's mark is at least S (:meth:`Recorder.attempts`). The
reader asks by appending to a file beside the database (``<db>-asks``): an idle writer
looks at its size with one stat() and opens SQLite only when asked, when it has rows, or
every ``BEAT_S`` (a process that forks while a thread is inside SQLite can leave the
child stuck on SQLite's locks, so the writer thread also keeps forks out while it
writes).
"""

from __future__ import annotations

import atexit
import csv
import functools
import hashlib
import io
import itertools
import json
import logging
import math
import os
import queue
import socket
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from werkzeug.http import parse_date

from . import _env, outbound
from ._answers import answer, answer_json
from ._guard import NOSNIFF, BrowserGuard
from ._headers import REQUEST_ID_KEY, TEST_ID_KEY, bearer_matches, new_request_id
from ._kinds import shown, strict_json
from ._observe import observe
from .outcome import LATENCY, OUTCOME_KEY, Outcome
from .request import peek_body

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["REQUEST_ID_KEY", "Recorder", "RecorderError", "RecorderMiddleware"]

COLUMNS = (
    "time",
    "request_id",
    "method",
    "path",
    "status",
    "duration_ms",
    "client",
    "worker",
    "fault_type",
    "latency_ms",
    "injected",
    # What verdicts on the client need (docs/observability.md, "Verdicts"):
    "test_id",
    "idempotency_key",
    "body_hash",
    "retry_after_s",
    "scenario",
    # The app's own calls (outbound.py) are rows too: direction "outbound", the host:port
    # called, and the exception the call raised (status 0 then).
    "direction",
    "host",
    "error",
)
INBOUND, OUTBOUND = "inbound", "outbound"
_BEFORE_DIRECTION = COLUMNS.index("direction")
DIRECTIONS = (INBOUND, OUTBOUND)
# Columns added after the first release: a table made before gets them at open (a new
# table has them from the start); the rows it holds are the requests it served, so
# their direction reads "inbound" (the column's default).
_ADDED = {
    "test_id": "TEXT",
    "idempotency_key": "TEXT",
    "body_hash": "TEXT",
    "retry_after_s": "REAL",
    "scenario": "TEXT",
    "direction": f"TEXT NOT NULL DEFAULT '{INBOUND}'",
    "host": "TEXT",
    "error": "TEXT",
}
MAX_HASHED_BODY = 64 * 1024  # bodies hashed to group retries; larger ones are not read
MAX_VERDICT_ROWS = 100_000  # rows one verdict or report reads at most (max_rows' default)
BATCH = 500
FLUSH_EVERY_S = 0.2  # each writer writes its queue, and looks for a reader's ask, this often
# A reader waits for the writers' marks at most this long: a writer late on a busy machine
# (issue 12 saw rows 4.6 s late) or a request still being served (a held latency) holds
# it; past this it answers with what is written, and logs it.
MAX_SETTLE_S = 5.0
SETTLE_POLL_S = 0.02  # how often a waiting reader reads the marks
ASKS_MAX = 4096  # the asks file's size at most (bytes)
BEAT_S = 5.0  # an idle writer rewrites its mark this often: it is alive...
GONE_S = 10.0  # ...and one on another host (or pid namespace) silent this long is gone
MAX_LIMIT = 1000
MAX_OFFSET = 10_000_000  # max_rows' own bound: no table holds more
EXPORT_PAGE = 1000
FILTERS = (
    "status_code",
    "path_prefix",
    "method",
    "fault_type",
    "since",
    "until",
    "test_id",
    "direction",
    "limit",
    "offset",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL, request_id TEXT NOT NULL, method TEXT NOT NULL, path TEXT NOT NULL,
    status INTEGER NOT NULL, duration_ms REAL NOT NULL, client TEXT, worker INTEGER,
    fault_type TEXT, latency_ms REAL, injected TEXT,
    test_id TEXT, idempotency_key TEXT, body_hash TEXT, retry_after_s REAL, scenario TEXT,
    direction TEXT NOT NULL DEFAULT 'inbound', host TEXT, error TEXT
);
CREATE INDEX IF NOT EXISTS requests_time ON requests (time);
CREATE INDEX IF NOT EXISTS requests_status ON requests (status);
CREATE TABLE IF NOT EXISTS events (
    time REAL NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL, UNIQUE (kind, time)
);
CREATE TABLE IF NOT EXISTS writers (
    boot TEXT NOT NULL, pidns TEXT NOT NULL, pid INTEGER NOT NULL,
    mark REAL NOT NULL, mark_wall REAL NOT NULL, beat REAL NOT NULL,
    answered INTEGER NOT NULL, PRIMARY KEY (boot, pidns, pid)
);
"""
log = logging.getLogger("mockforge_wsgi")


class RecorderError(ValueError):
    """The database file cannot be opened as the recorder's (not SQLite, not writable)."""


class Recorder:
    """Buffers request rows and writes them to SQLite from a background thread."""

    def __init__(self, path: str | os.PathLike[str], *, max_rows: int = 100_000) -> None:
        self.path = Path(path)
        self.max_rows = max_rows
        self._queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._write_lock = threading.Lock()
        self._pid = 0
        self._pending = _Pending()
        self._asks = Path(f"{self.path}-asks")  # readers append to it: a writer stat()s it
        self._answered: tuple[int, int] | None = None  # the asks file as last answered
        self._beat = 0.0  # when it last wrote its mark (time.time())
        self._stop = threading.Event()  # close(): the writer thread ends
        self.unsettled = 0  # reads that gave up waiting (MAX_SETTLE_S), in this process
        _RECORDERS.add(self)
        try:
            self._open()
        except sqlite3.Error as error:
            raise RecorderError(
                f"{str(path)!r}: cannot open it as the recorder's SQLite database ({error})"
            ) from None

    def _open(self) -> None:
        """Make the table (or add the columns a newer version records)."""
        with self._database() as connection:
            connection.executescript(_SCHEMA)
            # Every worker opens the file at once: one at a time looks and adds.
            connection.execute("BEGIN IMMEDIATE")
            try:
                present = {row[1] for row in connection.execute("PRAGMA table_info(requests)")}
                for name, kind in _ADDED.items():
                    if name not in present:
                        connection.execute(f"ALTER TABLE requests ADD COLUMN {name} {kind}")
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise

    @contextmanager
    def _database(self) -> Iterator[sqlite3.Connection]:
        """A connection for one block, closed at its end; a fork waits while any thread
        of the process is in such a block (``_FORK_GATE``)."""
        with _FORK_GATE, closing(self._connect()) as connection:
            yield connection

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        try:
            _wal(connection)
            connection.execute("PRAGMA synchronous=NORMAL")
        except BaseException:  # not a database: closed here, not by the GC in a later test
            connection.close()
            raise
        return connection

    def record_event(self, kind: str, at: float, detail: Mapping[str, Any]) -> None:
        """Write one event of the server (``guard_tripped``: the trip as /status shows
        it) now. Every worker that sees it writes it; the first write counts (an event is
        its kind and its time)."""
        with self._database() as connection:
            connection.execute(
                "INSERT OR IGNORE INTO events (time, kind, detail) VALUES (?, ?, ?)",
                (at, kind, json.dumps(detail, sort_keys=True)),
            )

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """The server's events, oldest first (``GET /api/recorder/events``)."""
        sql, args = "SELECT time, kind, detail FROM events", []
        if kind is not None:
            sql, args = sql + " WHERE kind = ?", [kind]
        with self._database() as connection:
            rows = connection.execute(sql + " ORDER BY time", args).fetchall()
        return [
            {"time": at, "kind": name, "detail": json.loads(detail)} for at, name, detail in rows
        ]

    def arrived(self) -> int:
        """A request arrived (the middleware calls it first): until :meth:`record` queues
        its row with this ticket, this process's mark stays before it. Cheap: a lock and
        a dict entry."""
        if self._pid != os.getpid():  # first request in this process (workers fork)
            self._start()
        return self._pending.add(time.monotonic())

    def record(self, row: tuple[Any, ...], ticket: int | None = None) -> None:
        """Queue one row (``COLUMNS`` order); cheap, never blocks on the database. A row
        of the columns before ``direction`` is a request served (inbound); ``ticket`` is
        its :meth:`arrived`."""
        if ticket is None and self._pid != os.getpid():  # its first row (workers fork)
            self._start()  # (a request's ticket started it, in this process)
        if len(row) == _BEFORE_DIRECTION:
            row = (*row, INBOUND, None, None)
        self._queue.put(row)
        if ticket is not None:  # queued first, then no longer pending: flush() relies on it
            self._pending.remove(ticket)

    def forget(self, ticket: int) -> None:
        """A request that :meth:`arrived` ended with no row (recording it failed): it no
        longer holds this process's mark back."""
        self._pending.remove(ticket)

    def _forked(self) -> None:
        """In a forked child, before anything else runs: the parent's write lock may have
        been held by one of its threads (never released here), and its queued rows and
        pending requests are the parent's to write, not this process's."""
        self._write_lock = threading.Lock()
        self._queue = queue.SimpleQueue()
        self._pending = _Pending()

    def _start(self) -> None:
        with self._write_lock:
            if self._pid == os.getpid():
                return
            # This process's mark is in the file before any of its requests can have been
            # answered: a reader never misses a writer it does not know of yet.
            now = time.monotonic()
            asked = self._asked()
            with self._database() as connection:
                self._write(connection, [], now, time.time(), asked)
            self._pid = os.getpid()
            self._stop = threading.Event()
            # The thread holds the recorder weakly: one dropped ends its thread.
            threading.Thread(
                target=_drain,
                args=(weakref.ref(self), self._stop),
                name="mockforge-recorder",
                daemon=True,
            ).start()
            _STARTED.add(self)  # a worker stopped right after load loses nothing (atexit)

    def close(self) -> None:
        """Write what is queued, take this process's mark away (it holds no reader back
        once done) and end the writer thread. Recording again starts it again."""
        self._stop.set()
        _STARTED.discard(self)
        self._exit()
        self._pid = 0

    def __del__(self) -> None:
        if getattr(self, "_pid", 0) == os.getpid():  # dropped without close()
            with suppress(sqlite3.Error):
                self._exit()

    def _exit(self) -> None:
        """Write what is queued, then take this process's mark away."""
        self.flush()
        if self._pid == os.getpid():
            boot, pidns = _place()
            with self._database() as connection:
                connection.execute(
                    "DELETE FROM writers WHERE boot = ? AND pidns = ? AND pid = ?",
                    (boot, pidns, self._pid),
                )

    def _asked(self) -> tuple[int, int] | None:
        """The asks file as it is now (size, mtime), without SQLite: it changes with
        each ask."""
        try:
            found = os.stat(self._asks)
        except FileNotFoundError:
            return None
        return found.st_size, found.st_mtime_ns

    def flush(self) -> int:
        """Write every queued row now, with this process's mark; returns how many rows.
        Idle, it writes its mark only when a reader asked or every ``BEAT_S``."""
        with self._write_lock:
            writer = self._pid == os.getpid()
            if not writer and self._queue.empty():
                return 0
            # The readers' ask first, then the time: a mark that answers an ask is never
            # from before it.
            asked = self._asked() if writer else None
            # Read before the queue is emptied: a request that arrived before `now` is
            # pending still, or its row was queued (then left pending): taken below.
            now, wall = time.monotonic(), time.time()
            oldest = self._pending.oldest()
            mark = now if oldest is None else min(now, oldest)
            rows: list[tuple[Any, ...]] = []
            while True:
                try:
                    rows.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if rows or (writer and (asked != self._answered or wall - self._beat >= BEAT_S)):
                with self._database() as connection:
                    self._write(connection, rows, mark, wall - (now - mark), asked, writer)
        return len(rows)

    def _write(
        self,
        connection: sqlite3.Connection,
        rows: list[tuple[Any, ...]],
        mark: float,
        mark_wall: float,
        asked: tuple[int, int] | None,
        writer: bool = True,
    ) -> None:
        """Rows and this process's mark in one transaction: a reader that sees the mark
        sees the rows."""
        placeholders = ", ".join("?" * len(COLUMNS))
        connection.execute("BEGIN IMMEDIATE")
        try:
            for start in range(0, len(rows), BATCH):
                connection.executemany(
                    f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({placeholders})",
                    rows[start : start + BATCH],
                )
            if rows:
                connection.execute(
                    "DELETE FROM requests WHERE id <= (SELECT MAX(id) FROM requests) - ?",
                    (self.max_rows,),
                )
            if writer:
                beat = time.time()
                connection.execute(
                    "INSERT OR REPLACE INTO writers VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (*_place(), os.getpid(), mark, mark_wall, beat, asked[0] if asked else 0),
                )
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        if writer:
            self._answered, self._beat = asked, beat

    def search(self, filters: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Rows matching ``filters`` (see the module docstring), newest first."""
        self.flush()
        sql, args = _matching(filters)
        sql += " ORDER BY id DESC LIMIT ? OFFSET ?"
        args += [min(int(filters.get("limit", 100)), MAX_LIMIT), int(filters.get("offset", 0))]
        return self._select(sql, args)

    def attempts(self, filters: Mapping[str, Any], *, settle: bool = True) -> list[dict[str, Any]]:
        """The newest ``MAX_VERDICT_ROWS`` rows matching ``filters``, oldest first: what
        verdicts and the report read. With ``settle``, first wait until every process
        that records has written what arrived before this call (:meth:`settle`): a test
        asks right after its last request, which another worker may still hold."""
        if settle:
            self.settle()
        else:
            self.flush()
        sql, args = _matching(filters)
        sql = f"SELECT * FROM ({sql} ORDER BY id DESC LIMIT ?) ORDER BY time"
        return self._select(sql, [*args, MAX_VERDICT_ROWS])

    def settle(self) -> bool:
        """Wait until every live writer's mark is at least now, ``MAX_SETTLE_S`` at most
        (then log it, count it in ``unsettled`` and return False). It asks the writers
        (each answers within ``FLUSH_EVERY_S``) and reads their marks every
        ``SETTLE_POLL_S``; a writer whose process is gone is skipped and its mark
        removed."""
        since, since_wall = time.monotonic(), time.time()
        give_up = since + MAX_SETTLE_S
        self.flush()  # this process's own rows, at once
        self._ask()
        asked_at = time.monotonic()
        while True:
            behind = self._behind(since, since_wall)
            if not behind:
                return True
            if time.monotonic() >= give_up:
                self.unsettled += 1
                log.warning(
                    "recorder: answering without waiting longer for %s (pid %s): %g s "
                    "passed and its rows from before the question may be missing",
                    "a writer" if len(behind) == 1 else f"{len(behind)} writers",
                    ", ".join(str(pid) for pid in behind),
                    MAX_SETTLE_S,
                )
                return False
            if time.monotonic() - asked_at >= FLUSH_EVERY_S:  # missed, or answered early
                self._ask()
                asked_at = time.monotonic()
            time.sleep(SETTLE_POLL_S)

    def _ask(self) -> None:
        """Ask every writer for its mark: one byte more in the asks file (they stat() it
        each ``FLUSH_EVERY_S``); past ``ASKS_MAX`` bytes it starts again at one."""
        with open(self._asks, "ab") as asks:
            asks.write(b".")
            if asks.tell() >= ASKS_MAX:
                asks.truncate(0)
                asks.write(b".")

    def _behind(self, since: float, since_wall: float) -> list[int]:
        """The pids of the live writers whose mark is before ``since``; the marks of
        gone writers are removed."""
        boot, pidns = _place()
        behind, gone = [], []
        with self._database() as connection:
            writers = connection.execute("SELECT * FROM writers").fetchall()
            for row in writers:
                their_boot, their_pidns, pid, mark, mark_wall, beat, _ = row
                # One boot shares CLOCK_MONOTONIC (time.monotonic): no wall-clock steps.
                if (mark >= since) if their_boot == boot else (mark_wall >= since_wall):
                    continue
                if their_boot == boot and their_pidns == pidns:
                    alive = _alive(pid)
                else:  # another host or container: no pid to look at, its beat tells
                    alive = time.time() - beat < GONE_S
                if alive:
                    behind.append(pid)
                else:
                    gone.append((their_boot, their_pidns, pid, beat))
            for key in gone:
                connection.execute(
                    "DELETE FROM writers WHERE boot = ? AND pidns = ? AND pid = ? AND beat = ?",
                    key,
                )
        return behind

    def _select(self, sql: str, args: list[Any]) -> list[dict[str, Any]]:
        with self._database() as connection:
            found = connection.execute(sql, args).fetchall()
        return [dict(zip(COLUMNS, row, strict=True)) for row in found]

    def export(self) -> Iterator[dict[str, Any]]:
        """Every row, oldest first, read a page at a time (bounded memory)."""
        self.flush()
        after = 0
        while True:
            with self._database() as connection:
                page = connection.execute(
                    f"SELECT id, {', '.join(COLUMNS)} FROM requests WHERE id > ? "
                    "ORDER BY id LIMIT ?",
                    (after, EXPORT_PAGE),
                ).fetchall()
            for row in page:
                yield dict(zip(COLUMNS, row[1:], strict=True))
            if len(page) < EXPORT_PAGE:
                return
            after = page[-1][0]


class _Pending:
    """This process's requests that arrived and whose row is not queued yet: their
    arrival (time.monotonic()) by ticket. No lock: a dict's item set, pop and copy are
    each one step for other threads (the GIL; a free-threaded build locks the dict)."""

    def __init__(self) -> None:
        self._arrived: dict[int, float] = {}
        self._tickets = itertools.count()

    def add(self, at: float) -> int:
        ticket = next(self._tickets)
        self._arrived[ticket] = at
        return ticket

    def remove(self, ticket: int) -> None:
        self._arrived.pop(ticket, None)

    def oldest(self) -> float | None:
        return min(self._arrived.copy().values(), default=None)


_STARTED: weakref.WeakSet[Recorder] = weakref.WeakSet()  # writing in this process


class _ForkGate:
    """The threads of this process inside SQLite, counted: a fork waits until none is,
    and no thread enters while a fork is being taken. A child forked while a thread held
    one of SQLite's own mutexes (its allocator's, taken on every malloc) would wait on it
    forever at its first connection: writer threads and request threads alike (gunicorn's
    master forks respawned workers while its admin listener answers searches). A thread
    may enter again while inside (a recorder's ``__del__`` run by the GC there)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._inside = 0
        self._forking = False
        self._depth = threading.local()

    def __enter__(self) -> None:
        depth = getattr(self._depth, "n", 0)
        with self._cond:
            while self._forking and not depth:
                self._cond.wait()
            self._inside += 1
        self._depth.n = depth + 1

    def __exit__(self, *exc_info: object) -> None:
        self._depth.n -= 1
        with self._cond:
            self._inside -= 1
            if not self._inside:
                self._cond.notify_all()

    def before_fork(self) -> None:
        """Held from here to the fork's end: every other thread out of SQLite."""
        self._cond.acquire()
        self._forking = True
        own = getattr(self._depth, "n", 0)  # a fork from inside a block waits for the others
        while self._inside > own:
            self._cond.wait()

    def after_fork_in_parent(self) -> None:
        self._forking = False
        self._cond.notify_all()
        self._cond.release()

    def after_fork_in_child(self) -> None:
        """The only thread now is the one that forked: the others' blocks are not ours."""
        self._cond = threading.Condition()
        self._inside = getattr(self._depth, "n", 0)
        self._forking = False


_FORK_GATE = _ForkGate()
_RECORDERS: weakref.WeakSet[Recorder] = weakref.WeakSet()  # every one in this process


def _after_fork_in_child() -> None:
    _FORK_GATE.after_fork_in_child()
    for recorder in list(_RECORDERS):
        recorder._forked()


os.register_at_fork(
    before=_FORK_GATE.before_fork,
    after_in_parent=_FORK_GATE.after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)


def _drain(recorder_ref: weakref.ref[Recorder], stop: threading.Event) -> None:
    """A recorder's writer thread: its queue written each ``FLUSH_EVERY_S`` until it is
    closed or dropped."""
    while not stop.wait(FLUSH_EVERY_S):
        recorder = recorder_ref()
        if recorder is None:
            return
        try:
            recorder.flush()
        except sqlite3.Error as error:  # the file locked past its timeout: next time
            log.warning("recorder: could not write its rows (%s); retrying", error)
        del recorder  # dropped here, its __del__ writes (through the fork gate too)


@atexit.register
def _at_exit() -> None:
    """A worker stopped right after load loses nothing: each recorder writes its queue."""
    for recorder in list(_STARTED):
        recorder._exit()


@functools.cache
def _place() -> tuple[str, str]:
    """Where pids and time.monotonic() mean the same: this boot (one CLOCK_MONOTONIC for
    every process on it, unless a time namespace moves it) and this pid namespace (a
    container has its own). Elsewhere than Linux, the host name for both."""
    host = socket.gethostname()
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pidns = os.readlink("/proc/self/ns/pid")
    except OSError:
        return host, host
    return boot, pidns


def _alive(pid: int) -> bool:
    """Whether process ``pid`` (in this pid namespace) runs: not gone, not a zombie (a
    killed worker until its master reaps it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _wal(connection: sqlite3.Connection, *, patience_s: float = 10.0) -> None:
    """Put the file in WAL mode. Changing the journal mode can return SQLITE_BUSY without
    calling the busy handler (the connection's timeout), so workers opening a new file at
    once retry it here, backing off, for up to ``patience_s``; then the error stands."""
    deadline = time.monotonic() + patience_s
    pause = 0.005
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.25)


def _matching(filters: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """The SELECT of the rows the search filters (checked before) match, and its
    arguments."""
    where: list[str] = []
    args: list[Any] = []
    if filters.get("status_code") is not None:
        where.append("status = ?")
        args.append(int(filters["status_code"]))
    if filters.get("path_prefix"):
        where.append("substr(path, 1, ?) = ?")
        args += [len(filters["path_prefix"]), filters["path_prefix"]]
    if filters.get("method"):
        where.append("method = ?")
        args.append(str(filters["method"]).upper())
    for key in ("fault_type", "test_id"):
        if filters.get(key):
            where.append(f"{key} = ?")
            args.append(filters[key])
    # The requests served unless asked for the app's own calls: verdicts and the report
    # judge a client by what it sent, apart from what the app sent on.
    where.append("direction = ?")
    args.append(filters.get("direction") or INBOUND)
    if filters.get("since") is not None:
        where.append("time >= ?")
        args.append(float(filters["since"]))
    if filters.get("until") is not None:
        where.append("time <= ?")
        args.append(float(filters["until"]))
    sql = f"SELECT {', '.join(COLUMNS)} FROM requests"
    return (sql + " WHERE " + " AND ".join(where) if where else sql), args


def _filter_problems(filters: Any) -> list[str]:
    if not isinstance(filters, Mapping):
        return [f"body: {shown(filters)} is not a JSON object"]
    problems = [
        f"{key}: unknown filter; allowed: {', '.join(FILTERS)}"
        for key in filters
        if key not in FILTERS
    ]
    # Every number bounded (SQLite takes 64-bit integers; times are finite).
    bounds = {
        "status_code": (100, 599, True),
        "limit": (0, MAX_LIMIT, True),
        "offset": (0, MAX_OFFSET, True),
        "since": (0.0, 1e11, False),
        "until": (0.0, 1e11, False),
    }
    for key, (low, high, whole) in bounds.items():
        value = filters.get(key)
        if value is None:
            continue
        number = not isinstance(value, bool) and isinstance(value, (int, float))
        if (
            not number
            or (isinstance(value, float) and not math.isfinite(value))
            or not low <= value <= high
            or (whole and value != int(value))
        ):
            kind = "a whole number" if whole else "a number"
            problems.append(f"{key}: {shown(value)} is not {kind} in [{low:g}, {high:g}]")
    for key in ("path_prefix", "method", "fault_type", "test_id"):
        if filters.get(key) is not None and not isinstance(filters[key], str):
            problems.append(f"{key}: {shown(filters[key])} is not a string")
    direction = filters.get("direction")
    if direction is not None and direction not in DIRECTIONS:
        problems.append(f"direction: {shown(direction)} is not one of {', '.join(DIRECTIONS)}")
    return problems


class RecorderMiddleware:
    """Records every request and serves ``/api/recorder/search`` and ``/export``."""

    def __init__(
        self,
        app: WSGIApplication,
        recorder: Recorder,
        *,
        prefix: str = "/api/recorder",
        admin_token: str | None = None,
        guard: BrowserGuard | None = None,
    ) -> None:
        self.app = app
        # Pages on other sites and rebound names read no request data (the management
        # API's own checks; default: from MOCKFORGE_ALLOWED_HOSTS/ORIGINS).
        self.guard = guard if guard is not None else BrowserGuard.from_env()
        self.recorder = recorder
        self.prefix = prefix.rstrip("/")
        # Request data (paths, client addresses): with a token set, only for its holder.
        self.admin_token = admin_token or _env.text(_env.ADMIN_TOKEN)
        # A ChaosMiddleware inside serves verdicts and the report from this recorder, and
        # tells which scenario each request ran under.
        attach = getattr(app, "attach_recorder", None)
        self._scenario_now: Callable[[], str | None] | None = None
        self._is_management: Callable[[str], bool] = _never
        if attach is not None:
            self._scenario_now, self._is_management = attach(recorder)
        outbound.watch(self._call_done)  # the app's own calls, recorded apart

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith(self.prefix + "/"):
            return self._api(path[len(self.prefix) :], environ, start_response)
        if self._is_management(path):  # the harness's calls, not the client's requests
            return self.app(environ, start_response)
        environ.setdefault(REQUEST_ID_KEY, new_request_id())
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):  # retries are grouped by it
            data = peek_body(environ, MAX_HASHED_BODY)
            if data is not None:
                environ[_BODY_HASH_KEY] = hashlib.sha1(data).hexdigest()[:16]

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            for name, value in headers:
                if name.lower() == "retry-after":
                    environ[_RETRY_AFTER_KEY] = value
            return start_response(status, headers, exc_info)

        environ[_TICKET_KEY] = self.recorder.arrived()
        return observe(self.app, environ, start, self._done)

    def _done(self, environ: WSGIEnvironment, status: str, seconds: float) -> None:
        try:
            self._record(environ, status, seconds)
        except BaseException:  # no row: the request must not hold this process's mark
            self.recorder.forget(environ[_TICKET_KEY])
            raise

    def _record(self, environ: WSGIEnvironment, status: str, seconds: float) -> None:
        scenario = None
        if self._scenario_now is not None:
            try:
                scenario = self._scenario_now()
            except Exception:  # the store is down: the row is still worth keeping
                scenario = None
        outcome = environ.get(OUTCOME_KEY)
        kinds, delay_ms, injected = [], None, ""
        if isinstance(outcome, Outcome):
            kinds = [injection.type for injection in outcome.injections()]
            delay_ms, injected = outcome.plan.delay_ms, outcome.annotation()
        fault = next((k for k in kinds if k != LATENCY), kinds[0] if kinds else None)
        self.recorder.record(
            (
                time.time(),
                environ.get(REQUEST_ID_KEY, ""),
                environ.get("REQUEST_METHOD", "GET"),
                environ.get("PATH_INFO", "/"),
                int(status),
                seconds * 1000.0,
                environ.get("REMOTE_ADDR"),
                os.getpid(),
                fault,
                delay_ms,
                injected,
                environ.get(TEST_ID_KEY) or None,
                environ.get("HTTP_IDEMPOTENCY_KEY") or None,
                environ.get(_BODY_HASH_KEY),
                retry_after_seconds(environ.get(_RETRY_AFTER_KEY)),
                scenario,
                INBOUND,
                None,
                None,
            ),
            environ[_TICKET_KEY],
        )

    def _call_done(self, call: outbound.CallRecord) -> None:
        """One of the app's own calls (outbound.watch's callback): a row of its own."""
        kinds = [injection.type for injection in call.injections]
        fault = next((k for k in kinds if k != LATENCY), kinds[0] if kinds else None)
        scenario = None
        if self._scenario_now is not None:
            try:
                scenario = self._scenario_now()
            except Exception:  # the store is down: the row is still worth keeping
                scenario = None
        self.recorder.record(
            (
                call.time,
                call.request_id or "",
                call.method,
                call.path,
                call.status or 0,
                call.duration_ms,
                None,
                os.getpid(),
                fault,
                call.delay_ms,
                call.annotation,
                call.test_id,
                None,
                None,
                retry_after_seconds(call.retry_after),
                scenario,
                OUTBOUND,
                call.host,
                call.error,
            )
        )

    def _api(
        self, route: str, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        refusal = self.guard.refusal(environ)
        if refusal is not None:
            body = {"error": refusal[0], "problems": refusal[1]}
            return answer_json(start_response, 403, body, [NOSNIFF])
        if self.admin_token and not bearer_matches(
            str(environ.get("HTTP_AUTHORIZATION", "")), self.admin_token
        ):
            problems = ["Authorization: a valid Bearer token is required"]
            return answer_json(
                start_response, 401, {"error": "unauthorized", "problems": problems}
            )
        if route == "/search" and method == "POST":
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
                if length > MAX_SEARCH_BODY:
                    raise ValueError(f"larger than {MAX_SEARCH_BODY} bytes")
                raw = environ["wsgi.input"].read(length) if length else b"{}"
                filters = strict_json(raw or b"{}")
            except ValueError as error:
                return answer_json(
                    start_response,
                    400,
                    {"error": "invalid request", "problems": [f"body: not valid JSON ({error})"]},
                )
            problems = _filter_problems(filters)
            if problems:
                return answer_json(
                    start_response, 400, {"error": "invalid request", "problems": problems}
                )
            rows = self.recorder.search(filters)
            return answer_json(start_response, 200, {"count": len(rows), "requests": rows})
        if route == "/events" and method == "GET":
            events = self.recorder.events()
            return answer_json(start_response, 200, {"count": len(events), "events": events})
        if route == "/export" and method == "GET":
            query = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
            problems = _export_problems(query)
            if problems:
                return answer_json(
                    start_response, 400, {"error": "invalid request", "problems": problems}
                )
            exported = self.recorder.export()
            if dict(query).get("format") == "csv":
                start_response("200 OK", [("Content-Type", "text/csv; charset=utf-8")])
                return _csv_lines(exported)
            start_response("200 OK", [("Content-Type", "application/x-ndjson")])
            return ((json.dumps(row) + "\n").encode() for row in exported)
        return answer_json(
            start_response, 404, {"error": "not found", "problems": [f"path: {route!r}"]}
        )


MAX_SEARCH_BODY = 64 * 1024
EXPORT_FORMATS = ("jsonl", "csv")


def _export_problems(query: list[tuple[str, str]]) -> list[str]:
    """An export query takes ``format`` only, once, jsonl (the default) or csv: a
    misspelt name or value is refused, not answered in the default format."""
    problems = [
        f"{name}: unknown parameter; allowed: format" for name, _ in query if name != "format"
    ]
    formats = [value for name, value in query if name == "format"]
    if len(formats) > 1:
        problems.append("format: given more than once")
    problems += [
        f"format: {shown(value)} is not one of {', '.join(EXPORT_FORMATS)}"
        for value in formats
        if value not in EXPORT_FORMATS
    ]
    return problems


def _never(path: str) -> bool:
    return False


_BODY_HASH_KEY = "mockforge.body_hash"
_TICKET_KEY = "mockforge.recorder_ticket"
_RETRY_AFTER_KEY = "mockforge.retry_after"


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After value in seconds: a number of seconds, or an HTTP date from now
    (None when absent or unreadable)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    when = parse_date(value)
    return None if when is None else max(0.0, when.timestamp() - time.time())


def _csv_lines(rows: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    """CSV, a line at a time: the header, then each row."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue().encode()  # the header alone, when there are no rows


def _text(start_response: StartResponse, text: str, content_type: str) -> Iterable[bytes]:
    return answer(start_response, 200, text.encode(), content_type)
