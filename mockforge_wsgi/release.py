"""Holds that chaos off takes back: every injected wait sleeps here, and wakes early.

A synchronous server's threads are held by injected latency, timeout holds, after-app
stalls, connection-timeout waits, paced and dribbled bodies and stream cuts' timers.
Each of those waits goes through :meth:`Releaser.hold`, a wait on one per-process
condition with a generation counter: :meth:`Releaser.release` moves the generation and
every hold in the process wakes at once. A woken hold asks whether chaos still wants it
(``wanted``); if not, it returns False (released) and its request goes on as if chaos
had been off from that moment.

Changes made in another process (another worker, the admin listener, another host on
Redis) are learnt from the store's state version: while anything is held, one daemon
thread per process polls the version of each source a hold names, every ``POLL_S``, and
releases when it moved. While nothing is held the thread waits on an event: no polling,
and no store call on any request's path.

Usage::

    if not RELEASER.hold(2.5, source=engine, wanted=still_wanted):
        ...  # released: chaos went off (or changed) meanwhile
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["POLL_S", "RELEASER", "Releaser", "Watched", "release_all"]

# How often a process polls the store's state version while it holds a request: a
# change made elsewhere reaches the holds of this process within about this long.
POLL_S = 0.02


class Watched(Protocol):
    """What a hold names as its ``source``: the runtime state its chaos comes from."""

    @property
    def known_version(self) -> int:
        """The state version the source last computed its config from (no store call)."""

    def watched_version(self) -> int:
        """The store's state version now (the watcher's poll; may reach the store)."""


class _Entry:
    __slots__ = ("holders", "source", "version")

    def __init__(self, source: Watched, version: int) -> None:
        self.source = source
        self.version = version
        self.holders = 0


class Releaser:
    """One process's holds: a condition every hold waits on, woken by :meth:`release`,
    and a watcher thread that polls the sources of the current holds."""

    def __init__(self, *, poll_s: float = POLL_S) -> None:
        self.poll_s = poll_s
        self._setup()

    def _setup(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._generation = 0
        self._sources: dict[int, _Entry] = {}
        self._busy = threading.Event()  # set while anything names a source
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    @property
    def generation(self) -> int:
        """Moves with every :meth:`release`."""
        return self._generation

    def held_sources(self) -> int:
        """How many sources the watcher polls now (0 while nothing is held)."""
        return len(self._sources)

    def release(self) -> None:
        """Wake every hold of this process; each asks whether it is still wanted."""
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def hold(
        self,
        seconds: float,
        *,
        source: Watched | None = None,
        wanted: Callable[[], bool] | None = None,
    ) -> bool:
        """Wait ``seconds``: True once waited out, False when released first.

        Woken by :meth:`release` (or by the watcher, when ``source``'s state version
        moves), the hold calls ``wanted``: if it says True the hold waits out the rest
        of its time, else it is released. Without ``wanted`` every release ends it.
        ``wanted`` is also asked once before waiting, so a change that came between the
        decision and the hold is not missed.
        """
        if seconds <= 0.0:
            return True
        if self._pid != os.getpid():  # forked: the parent's thread and holds are not ours
            self._setup()
        due = time.monotonic() + seconds
        cond = self._cond
        with cond:
            generation = self._generation
        if source is not None:
            self._enter(source)
        try:
            if wanted is not None and not wanted():
                return False
            while True:
                with cond:
                    while self._generation == generation:
                        left = due - time.monotonic()
                        if left <= 0.0:
                            return True
                        cond.wait(left)
                    generation = self._generation
                if wanted is None or not wanted():
                    return False
        finally:
            if source is not None:
                self._leave(source)

    def _enter(self, source: Watched) -> None:
        key = id(source)
        with self._cond:
            entry = self._sources.get(key)
            if entry is None:
                # The version the source's config came from: a newer one in the store
                # is a change the watcher reports at its first poll.
                entry = self._sources[key] = _Entry(source, source.known_version)
            entry.holders += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="mockforge-release", daemon=True
                )
                self._thread.start()
            self._busy.set()

    def _leave(self, source: Watched) -> None:
        key = id(source)
        with self._cond:
            entry = self._sources.get(key)
            if entry is not None:
                entry.holders -= 1
                if entry.holders <= 0:
                    del self._sources[key]
            if not self._sources:
                self._busy.clear()

    def _watch(self) -> None:
        """Poll the held sources' versions while anything is held; release on a change."""
        busy, cond = self._busy, self._cond
        while True:
            busy.wait()
            with cond:
                entries = list(self._sources.values())
            moved = False
            for entry in entries:
                try:
                    version = entry.source.watched_version()
                except Exception:  # an unreachable store: the next poll tries again
                    continue
                if version != entry.version:
                    entry.version = version
                    moved = True
            if moved:
                self.release()
            time.sleep(self.poll_s)


RELEASER = Releaser()


def release_all() -> None:
    """Wake every hold of this process (a change of the runtime state was made here)."""
    RELEASER.release()


os.register_at_fork(after_in_child=RELEASER._setup)
