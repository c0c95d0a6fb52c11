"""The embedded store: one memory-mapped file shared by every worker process of a host.

Each process maps the same file and serialises its changes with an fcntl record lock
that it takes itself (after fork). The kernel drops a process's record locks when it
dies, so a worker that gunicorn kills mid-update cannot leave the others deadlocked (a
``multiprocessing.Lock`` made before fork would stay held). fcntl locks belong to the
process, not the thread, so a thread lock stands in front of it.

Layout (native byte order, 8-byte aligned)::

    header    state version | state length | counter rows in use | bucket entries
    state     the runtime state as JSON (at most 1 MiB)
    names     counter names, 32 bytes each
    counters  a row per worker process: owner pid, then one u64 per name; summed on read
    slots     a row per worker process: owner pid, owner start time, in-flight requests
    buckets   open-addressing table of (key hash, TAT); a TAT in the past is a free entry

The state version is read without the lock (an aligned 8-byte read is never torn), so
checking it per request costs one memory read.

Rows expire with their process: a process claiming its row first frees the rows of
processes that are gone (pid and start time checked), as do a full slot table and
``slots_in_use``, so worker churn under ``--max-requests`` never runs out of rows and a
killed worker's slots come back with no hook. Every
``OSError`` of the file or its lock reaches callers as :class:`StoreError`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import mmap
import os
import socket
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence, Set
from pathlib import Path
from typing import Any

from ._process import is_alive, parent_pid, start_time
from .base import WRITES, StartedState, StateTooLarge, Store, StoreError, start_decision
from .gcra import Bucket, BucketOutcome, charge, take

__all__ = ["EmbeddedStore"]

# The name carries the layout: a file of another layout (an older version) is never read.
FILE_NAME = "mockforge-store-3.bin"
MAX_STATE_BYTES = 1 << 20
# Names: the injection counters, fault scripts (17 owners), circuit breakers (6 each, 17
# owners) and a few more; each column costs 8 bytes per worker row (256 rows).
MAX_COUNTERS = 256
# Named slot pools: the server-wide connection limit, each bulkhead (17 owners) and
# each pool of active faults (max_active_faults: 17 owners).
MAX_SLOT_NAMES = 48
NAME_BYTES = 32
MAX_WORKERS = 256
# How far a key may sit from its home entry; beyond it the oldest probed bucket goes.
MAX_PROBES = 32
MAX_CACHED_HOMES = 4096  # bucket keys whose hash this process keeps
# Polling interval while waiting for a connection slot another process holds.
SLOT_POLL_S = 0.002
# With the slot table full, how often (per process) to look for holders that are gone.
DEAD_HOLDER_CHECK_S = 0.25

_NONE_TAKEN: frozenset[int] = frozenset()
_VERSION, _LENGTH, _ROWS, _ENTRIES = 0, 1, 2, 3  # header words
_STATE = 32
_NAMES = _STATE + MAX_STATE_BYTES
_COUNTERS = _NAMES + NAME_BYTES * MAX_COUNTERS
_COUNTER_ROW = 1 + MAX_COUNTERS  # words
_SLOT_NAMES = _COUNTERS + 8 * _COUNTER_ROW * MAX_WORKERS
_SLOTS = _SLOT_NAMES + NAME_BYTES * MAX_SLOT_NAMES
_SLOT_ROW = 2 + MAX_SLOT_NAMES  # words: owner pid, owner start time, in flight per name
_BUCKETS = _SLOTS + 8 * _SLOT_ROW * MAX_WORKERS


class EmbeddedStore(Store):
    """Runtime state for every process on this host that opens the same directory.

    Usage (gunicorn workers of one server)::

        store = EmbeddedStore("/run/mockforge")     # or MOCKFORGE_STORE=file:///run/mockforge
        app = ChaosMiddleware(app, config=config, store=store)
    """

    def __init__(self, directory: str | os.PathLike[str], *, max_keys: int = 100_000) -> None:
        folder = Path(directory)
        self.path = folder / FILE_NAME
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            raise StoreError(f"embedded store {self.path}: {error}") from error
        # fcntl locks exclude processes, not threads, nor two stores of one process.
        self._thread_lock = _thread_lock_for(self.path)
        self._lock = _FileLock(self)
        with self._locked():  # the first process sizes the file; later ones use its size
            if os.fstat(self._fd).st_size == 0:
                entries = max(1024, 2 * max_keys)
                os.ftruncate(self._fd, _BUCKETS + 16 * entries)
                os.pwrite(self._fd, entries.to_bytes(8, sys.byteorder), 8 * _ENTRIES)
        self._map = _map_for(self._fd)
        self._words = memoryview(self._map).cast("Q")
        self._floats = memoryview(self._map).cast("d")
        self._entries = int(self._words[_ENTRIES])
        self._pid = 0
        self._row = -1
        # Releases not yet written (the lock failed), by slot pool: owed.
        self._unreleased: dict[int, int] = {}
        self._slot_names: dict[str, int] = {}  # slot pool name -> its column
        self._sweep_at = 0.0  # when a full slot table may next look for gone holders
        self._names: dict[str, int] = {}  # counter name -> its column
        self._homes: dict[str, tuple[int, int]] = {}  # bucket key -> (tag, home entry)
        self.evicted = 0

    def _locked(self) -> _FileLock:
        return self._lock

    # -- runtime state ------------------------------------------------------------------

    def state_version(self) -> int:
        return int(self._words[_VERSION])

    def load_state(self) -> tuple[int, dict[str, Any] | None]:
        with self._locked():
            version, length = int(self._words[_VERSION]), int(self._words[_LENGTH])
            raw = bytes(self._map[_STATE : _STATE + length])
        return version, (json.loads(raw) if length else None)

    def save_state(self, state: dict[str, Any]) -> int:
        raw = self._encode(state)
        with self._locked():
            return self._write_state(raw)

    def replace_state(self, state: dict[str, Any], version: int) -> int:
        raw = self._encode(state)
        with self._locked():
            if int(self._words[_VERSION]) != version:
                return 0
            return self._write_state(raw)

    def init_state(self, state: dict[str, Any]) -> bool:
        raw = self._encode(state)
        with self._locked():
            if self._words[_VERSION]:
                return False
            self._write_state(raw)
            return True

    def start_state(self, state: dict[str, Any], *, server: str, mode: str) -> StartedState:
        """The rows are the leases: a live process other than this one that holds a row
        uses the store. One of ``server`` (its pid, or a child of it: a sibling worker),
        or a state started by ``server`` (a respawned worker), means this server
        already started it."""
        raw = self._encode(state)
        server_pid = _pid_of(server)
        me = os.getpid()
        with self._locked():
            self._free_dead_rows()
            owners = {
                int(self._words[_SLOTS // 8 + row * _SLOT_ROW])
                for row in range(int(self._words[_ROWS]))
            } - {0, me}
            own, others = False, set()
            for owner in owners:
                parent = parent_pid(owner)
                if server_pid and server_pid in (owner, parent):
                    own = True
                else:  # a worker is named by its master, when that holds a row too
                    others.add(f"{socket.gethostname()}:{parent if parent in owners else owner}")
            if not own and self._words[_VERSION]:  # a respawned worker of the server
                length = int(self._words[_LENGTH])
                with contextlib.suppress(ValueError):
                    raw_state = json.loads(bytes(self._map[_STATE : _STATE + length]))
                    own = raw_state.get("started_by") == server
            self._own_row()  # this process now counts as alive on the store
            why = start_decision(
                mode, exists=bool(self._words[_VERSION]), own=own, others=bool(others)
            )
            wrote = why in WRITES
            if wrote:
                self._write_state(raw)
        return StartedState(wrote, why, tuple(sorted(others)))

    @staticmethod
    def _encode(state: dict[str, Any]) -> bytes:
        raw = json.dumps(state, separators=(",", ":")).encode()
        if len(raw) > MAX_STATE_BYTES:
            raise StateTooLarge(
                f"the runtime state would be {len(raw)} bytes; the embedded store holds "
                f"at most {MAX_STATE_BYTES} (custom scenarios and rules take the room)"
            )
        return raw

    def _write_state(self, raw: bytes) -> int:
        """Write the state (call with the lock held)."""
        self._map[_STATE : _STATE + len(raw)] = raw
        self._words[_LENGTH] = len(raw)
        self._words[_VERSION] += 1  # last, so a reader that sees it sees the state
        return int(self._words[_VERSION])

    # -- rows: each process counts in its own row, claimed after fork --------------------

    def _own_row(self) -> int:
        """This process's row in the counter and slot tables (call with the lock held).

        Claimed once per process. Claiming first frees the rows of processes that are
        gone (pid and start time checked), as does waiting for a slot: a killed
        worker's slots come back with no hook telling us of its death."""
        pid = os.getpid()
        if pid == self._pid:
            return self._row
        started = start_time(pid)
        for row in range(int(self._words[_ROWS])):
            slot = _SLOTS // 8 + row * _SLOT_ROW
            if int(self._words[slot]) == pid and int(self._words[slot + 1]) == started:
                self._pid, self._row = pid, row  # another store object of this process
                return row
        self._free_dead_rows()
        free = next(
            (
                row
                for row in range(int(self._words[_ROWS]))
                if not self._words[_SLOTS // 8 + row * _SLOT_ROW]
            ),
            -1,
        )
        if free < 0:
            free = int(self._words[_ROWS])
            if free >= MAX_WORKERS:
                raise StoreError(f"more than {MAX_WORKERS} live processes share {self.path}")
            self._words[_ROWS] = free + 1
        slot = _SLOTS // 8 + free * _SLOT_ROW
        self._words[slot], self._words[slot + 1] = pid, started
        _zero_in_flight(self._words, slot)
        self._unreleased = {}  # owed by the process this object was forked from
        self._words[_COUNTERS // 8 + free * _COUNTER_ROW] = pid
        self._pid, self._row = pid, free
        return free

    def _free_dead_rows(self) -> None:
        """Free the rows of processes that are gone (call with the lock held): their
        in-flight slots come back; their counts stay summed."""
        for row in range(int(self._words[_ROWS])):
            slot = _SLOTS // 8 + row * _SLOT_ROW
            owner = int(self._words[slot])
            if owner and not is_alive(owner, int(self._words[slot + 1])):
                self._words[slot] = self._words[slot + 1] = 0
                _zero_in_flight(self._words, slot)
                self._words[_COUNTERS // 8 + row * _COUNTER_ROW] = 0

    def live_workers(self) -> int:
        """The processes holding a row (this one too), once the rows of gone ones are
        freed; not this process's parent (a master that started the state serves nothing)."""
        master = os.getppid()
        with self._locked():
            self._own_row()
            self._free_dead_rows()
            owners = (
                int(self._words[_SLOTS // 8 + row * _SLOT_ROW])
                for row in range(int(self._words[_ROWS]))
            )
            return sum(1 for owner in owners if owner and owner != master)

    def release_worker(self, pid: int) -> None:
        """A worker died: give back its in-flight slots and its rows. Its counts stay in
        its counter row (still summed); the next process to claim the row adds to them."""
        with self._locked():
            for row in range(int(self._words[_ROWS])):
                slot = _SLOTS // 8 + row * _SLOT_ROW
                if int(self._words[slot]) == pid:
                    self._words[slot] = self._words[slot + 1] = 0
                    _zero_in_flight(self._words, slot)
                    self._words[_COUNTERS // 8 + row * _COUNTER_ROW] = 0

    # -- counters -----------------------------------------------------------------------

    def _name_index(self, name: str) -> int:
        """The counter's column (lock held). Names are only ever added, so a column once
        found is cached."""
        index = self._names.get(name)
        if index is None:
            index = self._names[name] = self._find_name(name)
        return index

    def _find_name(self, name: str, table: int = _NAMES, size: int = MAX_COUNTERS) -> int:
        """The column of ``name`` in a name table (lock held), added if new."""
        encoded = name.encode()[:NAME_BYTES].ljust(NAME_BYTES, b"\0")
        for index in range(size):
            at = table + index * NAME_BYTES
            current = self._map[at : at + NAME_BYTES]
            if current == encoded:
                return index
            if current == bytes(NAME_BYTES):
                self._map[at : at + NAME_BYTES] = encoded
                return index
        kind = "counter" if table == _NAMES else "slot pool"
        raise StoreError(f"more than {size} {kind} names")

    def _sum(self, index: int) -> int:
        base = _COUNTERS // 8 + 1 + index
        rows = int(self._words[_ROWS])
        return sum(int(self._words[base + row * _COUNTER_ROW]) for row in range(rows))

    def incr(self, counter: str, amount: int = 1) -> int:
        with self._locked():  # increment and sum together: a pattern's numbers are unique
            index = self._name_index(counter)
            cell = _COUNTERS // 8 + self._own_row() * _COUNTER_ROW + 1 + index
            self._words[cell] = (int(self._words[cell]) + amount) % (1 << 64)
            return self._sum(index)

    def count(self, events: Iterable[str]) -> None:
        if events:
            with self._locked():  # one lock for them all, and no sum to read
                row = _COUNTERS // 8 + self._own_row() * _COUNTER_ROW + 1
                for event in events:
                    cell = row + self._name_index(event)
                    self._words[cell] = (int(self._words[cell]) + 1) % (1 << 64)

    def add_counts(self, amounts: Mapping[str, int]) -> None:
        if amounts:
            with self._locked():  # one lock for them all
                row = _COUNTERS // 8 + self._own_row() * _COUNTER_ROW + 1
                for counter, amount in amounts.items():
                    cell = row + self._name_index(counter)
                    self._words[cell] = (int(self._words[cell]) + amount) % (1 << 64)

    def set_counter(self, counter: str, value: int) -> None:
        with self._locked():
            index = self._name_index(counter)
            own = self._own_row()
            for row in range(int(self._words[_ROWS])):
                cell = _COUNTERS // 8 + row * _COUNTER_ROW + 1 + index
                self._words[cell] = value if row == own else 0

    def counters(self) -> dict[str, int]:
        result = {}
        with self._locked():
            for index in range(MAX_COUNTERS):
                at = _NAMES + index * NAME_BYTES
                raw = bytes(self._map[at : at + NAME_BYTES]).rstrip(b"\0")
                if not raw:
                    break
                value = self._sum(index)
                if value:
                    result[raw.decode()] = value
        return result

    # -- connection slots -----------------------------------------------------------------

    def _slot_index(self, name: str) -> int:
        """The slot pool's column (lock held); names are only ever added."""
        index = self._slot_names.get(name)
        if index is None:
            index = self._slot_names[name] = self._find_name(name, _SLOT_NAMES, MAX_SLOT_NAMES)
        return index

    def _in_flight(self, index: int) -> int:
        rows = int(self._words[_ROWS])
        base = _SLOTS // 8 + 2 + index
        return sum(int(self._words[base + row * _SLOT_ROW]) for row in range(rows))

    def acquire_slot(self, name: str, limit: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + max(timeout_s, 0.0)
        while True:
            with self._locked():
                index = self._slot_index(name)
                cell = self._settle_releases(index)
                if self._in_flight(index) >= limit:
                    # Full: are the slots of a killed worker among them? (Looked at
                    # most every DEAD_HOLDER_CHECK_S per process: a syscall per row.)
                    now = time.monotonic()
                    if now >= self._sweep_at:
                        self._sweep_at = now + DEAD_HOLDER_CHECK_S
                        self._free_dead_rows()
                if self._in_flight(index) < limit:
                    self._words[cell] += 1
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(SLOT_POLL_S)

    def release_slot(self, name: str) -> None:
        with self._thread_lock:
            index = self._slot_names.get(name)  # known once a slot of it was taken here
            if index is None:
                with self._locked():
                    index = self._slot_index(name)
            # Given back here first: a failed write is kept owed.
            self._unreleased[index] = self._unreleased.get(index, 0) + 1
            with self._locked():
                self._settle_releases(index)

    def _settle_releases(self, index: int) -> int:
        """Write the releases this process owes to its row (call with the lock held);
        returns the row's in-flight cell of pool ``index``."""
        row = _SLOTS // 8 + self._own_row() * _SLOT_ROW + 2
        if self._unreleased:  # mostly empty: no list made on every take
            for owed_index, owed in list(self._unreleased.items()):
                owed_cell = row + owed_index
                self._words[owed_cell] = max(int(self._words[owed_cell]) - owed, 0)
                del self._unreleased[owed_index]
        return row + index

    def slots_in_use(self, name: str) -> int:
        with self._locked():
            self._free_dead_rows()
            return self._in_flight(self._slot_index(name))

    # -- buckets --------------------------------------------------------------------------

    def _home(self, key: str) -> tuple[int, int]:
        home = self._homes.get(key)
        if home is None:
            digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
            tag = int.from_bytes(digest, "little") or 1  # 0 marks a never-used entry
            home = (tag, tag % self._entries)
            if len(self._homes) >= MAX_CACHED_HOMES:
                self._homes.clear()  # per-IP keys come and go: start the cache again
            self._homes[key] = home
        return home

    def _entry(self, position: int) -> int:
        """Word index of entry ``position``: the tag, then the TAT as a double."""
        return _BUCKETS // 8 + 2 * (position % self._entries)

    def _find(self, key: str, now: float, taken: Set[int]) -> tuple[int, int, float | None]:
        """The entry of ``key`` (or where it may go, avoiding ``taken``), its tag, and its
        TAT if live."""
        tag, home = self._home(key)
        reusable = -1
        oldest, oldest_tat = -1, float("inf")
        for step in range(MAX_PROBES):
            entry = self._entry(home + step)
            if entry in taken:
                continue
            stored, tat = int(self._words[entry]), float(self._floats[entry + 1])
            if stored == tag and tat > now:
                return entry, tag, tat
            if stored == 0:
                return (reusable if reusable >= 0 else entry), tag, None
            if tat <= now and reusable < 0:
                reusable = entry  # a full bucket is the same as none: its entry is free
            if tat < oldest_tat:
                oldest, oldest_tat = entry, tat
        if reusable >= 0:
            return reusable, tag, None
        self.evicted += 1  # every probed bucket is live: drop the one nearest to full
        return oldest, tag, None

    def acquire(self, buckets: Sequence[Bucket], now: float) -> tuple[int, BucketOutcome]:
        with self._locked():
            found = self._find_all(buckets, now)
            index, outcome, new_tats = charge(lambda key: found[key][2], buckets, now)
            if new_tats is not None:
                self._store_tats(found, buckets, new_tats)
            return index, outcome

    def _find_all(
        self, buckets: Sequence[Bucket], now: float
    ) -> dict[str, tuple[int, int, float | None]]:
        """Each bucket's entry, tag and live TAT, in distinct entries (lock held)."""
        if len(buckets) == 1:
            return {buckets[0].key: self._find(buckets[0].key, now, _NONE_TAKEN)}
        found: dict[str, tuple[int, int, float | None]] = {}
        for bucket in buckets:
            found[bucket.key] = self._find(bucket.key, now, {f[0] for f in found.values()})
        return found

    def _store_tats(
        self,
        found: dict[str, tuple[int, int, float | None]],
        buckets: Sequence[Bucket],
        tats: Sequence[float],
    ) -> None:
        for bucket, tat in zip(buckets, tats, strict=True):
            entry, tag, _ = found[bucket.key]
            self._words[entry] = tag
            self._floats[entry + 1] = tat

    def take(
        self, buckets: Sequence[Bucket], now: float, want: int, give_back: int = 0
    ) -> tuple[int, BucketOutcome, int]:
        with self._locked():
            found = self._find_all(buckets, now)
            index, outcome, granted, new_tats = take(
                lambda key: found[key][2], buckets, now, want, give_back
            )
            if new_tats is not None:
                self._store_tats(found, buckets, new_tats)
            return index, outcome, granted

    def tracked_keys(self) -> int:
        now = time.monotonic()
        with self._locked():
            return sum(
                1
                for position in range(self._entries)
                if self._words[self._entry(position)]
                and self._floats[self._entry(position) + 1] > now
            )

    def reset(self) -> None:
        with self._locked():
            self._map[_BUCKETS : _BUCKETS + 16 * self._entries] = bytes(16 * self._entries)
            for row in range(int(self._words[_ROWS])):
                start = _COUNTERS + 8 * (row * _COUNTER_ROW + 1)
                self._map[start : start + 8 * MAX_COUNTERS] = bytes(8 * MAX_COUNTERS)


class _FileLock:
    """The thread lock, then the file's record lock; an OSError inside is a StoreError.

    A class, not a generator context manager: this is taken on every rate-limit check
    in exact mode, and a generator costs ~1 us more per use."""

    __slots__ = ("store",)

    def __init__(self, store: EmbeddedStore) -> None:
        self.store = store

    def __enter__(self) -> None:
        store = self.store
        store._thread_lock.acquire()
        try:
            fcntl.lockf(store._fd, fcntl.LOCK_EX, 1, 0)
        except OSError as error:
            store._thread_lock.release()
            raise StoreError(f"embedded store {store.path}: {error}") from error

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        store = self.store
        try:
            with contextlib.suppress(OSError):
                fcntl.lockf(store._fd, fcntl.LOCK_UN, 1, 0)
        finally:
            store._thread_lock.release()
        if isinstance(error, OSError):
            raise StoreError(f"embedded store {store.path}: {error}") from error


_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def _thread_lock_for(path: Path) -> threading.RLock:
    """One thread lock per store file in this process, shared by its store objects."""
    key = os.path.realpath(path)
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.RLock())


_MAPS: dict[tuple[int, int], mmap.mmap] = {}  # by the file's (device, inode)


def _map_for(fd: int) -> mmap.mmap:
    """One mapping of a store file per process, kept for good. An mmap holds a copy of
    its file descriptor and closes it when collected, and closing any descriptor of a
    file drops every fcntl lock the process holds on it: a second store of the same
    file, collected while the first held the lock, let another process in (a rate
    limit admitted one request too many). Keyed by inode: a file made anew at the same
    path is mapped anew."""
    stat = os.fstat(fd)
    key = (stat.st_dev, stat.st_ino)
    with _LOCKS_GUARD:
        found = _MAPS.get(key)
        if found is None:
            found = _MAPS[key] = mmap.mmap(fd, 0)
        return found


def _reinit_locks_in_child() -> None:
    """A fork copies a lock another thread held (the master's admin listener, say) as
    held forever: in the child, every one starts free."""
    global _LOCKS_GUARD
    _LOCKS_GUARD = threading.Lock()
    for lock in _LOCKS.values():
        lock._at_fork_reinit()  # type: ignore[attr-defined]


os.register_at_fork(after_in_child=_reinit_locks_in_child)


def _pid_of(server: str) -> int:
    """The pid in a server's name (``host:pid``); 0 when there is none."""
    tail = server.rpartition(":")[2]
    return int(tail) if tail.isdigit() else 0


def _zero_in_flight(words: memoryview, slot: int) -> None:
    """A row's in-flight counts, every pool, back to zero (its holder is gone or new)."""
    for index in range(MAX_SLOT_NAMES):
        words[slot + 2 + index] = 0
