"""The store interface: where runtime state that must be shared lives.

One interface, several backends chosen by URL (``memory://``, ``file://`` for the
embedded cross-process store, ``redis://``). Every backend raises :class:`StoreError`
for its own failures, so callers have one thing to catch. Algorithms (rate limiting,
connection limits) take a store and never know which backend they use.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from .gcra import Bucket, BucketOutcome

__all__ = [
    "CONNECTION_SLOTS",
    "LEASE_RENEW_S",
    "LEASE_TTL_S",
    "StartedState",
    "StateTooLarge",
    "Store",
    "StoreError",
    "StoreUrlError",
]

# The slots of the server-wide connection limit (traffic_shaping.max_connections).
CONNECTION_SLOTS = "connections"


# A server that uses a store renews its lease this often; a lease not renewed for
# LEASE_TTL_S is a server that is gone (stores that see their processes need neither).
LEASE_RENEW_S = 2.0
LEASE_TTL_S = 10.0


class StartedState(NamedTuple):
    """What :meth:`Store.start_state` did: whether it wrote the startup state, why
    (``empty``, ``own server``, ``adopt``, ``startup``, ``no live server``, ``live
    servers``), and the other servers it found alive on the store."""

    wrote: bool
    why: str
    others: tuple[str, ...] = ()


def start_decision(mode: str, *, exists: bool, own: bool, others: bool) -> str:
    """The one rule every store applies, in one atomic step with its data: the reason
    :class:`StartedState` carries. Written when it is ``empty``, ``startup`` or ``no
    live server``."""
    if not exists:
        return "empty"
    if own:
        return "own server"  # a worker of a server whose master (or sibling) started it
    if mode == "adopt":
        return "adopt"
    if mode == "startup":
        return "startup"
    return "live servers" if others else "no live server"


WRITES = frozenset({"empty", "startup", "no live server"})


class StoreError(RuntimeError):
    """A backend failed (unreachable, timed out). Callers fail open and count it."""


class StoreUrlError(ValueError):
    """A store URL names no store this process can open (a wrong scheme, a missing
    extra, a directory that cannot be made): a usage error, reported before serving."""


class StateTooLarge(StoreError):
    """The runtime state does not fit the store: the change that grew it is refused."""


class Store(abc.ABC):
    """Shared runtime state: token buckets, connection slots, event counters, and the
    runtime state (enabled flag, config, active scenario) with a version number."""

    # Whether other processes use the same state: rate limits are then taken in leases
    # (rate_limit.store_mode), since each call costs a lock or a round trip.
    shared = True
    # Whether servers must renew a lease to count as alive on it (renew_lease).
    leases = False
    # Whether it is reached over a network, so a process can be cut off from it: an idle
    # worker then reads its state version in the background (engine.poll_while_idle).
    remote = False

    @abc.abstractmethod
    def acquire(self, buckets: Sequence[Bucket], now: float) -> tuple[int, BucketOutcome]:
        """Charge one request to every bucket, all or nothing (see :func:`gcra.charge`).

        Returns the index of the tightest bucket and its outcome.
        """

    @abc.abstractmethod
    def take(
        self, buckets: Sequence[Bucket], now: float, want: int, give_back: int = 0
    ) -> tuple[int, BucketOutcome, int]:
        """Lease up to ``want`` tokens of every bucket at once, after giving back
        ``give_back`` unspent ones of an earlier lease (see :func:`gcra.take`).

        Returns the tightest bucket's index, its outcome, and the tokens granted (0 is a
        refusal). One call, one lock or round trip, for a batch of requests.
        """

    @abc.abstractmethod
    def acquire_slot(self, name: str, limit: int, timeout_s: float) -> bool:
        """Take one of ``limit`` slots, waiting up to ``timeout_s``; False if none came."""

    @abc.abstractmethod
    def release_slot(self, name: str) -> None:
        """Give back a slot taken with :meth:`acquire_slot`."""

    def release_worker(self, pid: int) -> None:  # noqa: B027 (optional, empty by default)
        """A worker process died: give back the connection slots it held (gunicorn's
        ``child_exit``). Nothing to do for a store that lives inside that process."""

    def live_workers(self) -> int:
        """Say this process is a live worker of the store, and count the live ones (this
        one included): what a worker divides a limit by while the store is unreachable
        (state/degrading.py). Called about once a second per worker. A store inside one
        process has one."""
        return 1

    @abc.abstractmethod
    def slots_in_use(self, name: str) -> int:
        """How many slots of ``name`` are taken now."""

    @abc.abstractmethod
    def incr(self, counter: str, amount: int = 1) -> int:
        """Add to an event counter; returns its new value."""

    def count(self, events: Iterable[str]) -> None:
        """Add one to each event counter when no caller needs the new values (metrics of
        what was injected): a store may batch these, unlike :meth:`incr`."""
        for event in events:
            self.incr(event)

    def add_counts(self, amounts: Mapping[str, int]) -> None:
        """Add each amount to its counter now, in one step where the store can (the
        guard's window: a process's answers since its last check, sent at most 4 times
        a second)."""
        for counter, amount in amounts.items():
            self.incr(counter, amount)

    @abc.abstractmethod
    def set_counter(self, counter: str, value: int) -> None:
        """Set a counter (the pattern's request count restarts at zero on changes)."""

    @abc.abstractmethod
    def counters(self) -> dict[str, int]:
        """Every counter's current value."""

    @abc.abstractmethod
    def tracked_keys(self) -> int:
        """How many bucket keys are held (for memory bounds and tests)."""

    @abc.abstractmethod
    def state_version(self) -> int:
        """Version of the runtime state; changes with every save. Cheap: read per request."""

    def watch_version(self) -> int:
        """The state version read now, for the watcher of held requests (release.py),
        which polls it while anything is held: a store that caches its version on the
        request path reads it afresh here."""
        return self.state_version()

    def subscribe(self, callback: Callable[[], None]) -> bool:
        """Call ``callback`` after every state save, if this store can (in-process ones
        can); returns whether it will. Stores that cannot are polled by version."""
        return False

    @abc.abstractmethod
    def load_state(self) -> tuple[int, dict[str, Any] | None]:
        """The runtime state (JSON-ready data) and its version; None before any save."""

    @abc.abstractmethod
    def save_state(self, state: dict[str, Any]) -> int:
        """Replace the runtime state; returns the new version."""

    @abc.abstractmethod
    def replace_state(self, state: dict[str, Any], version: int) -> int:
        """Replace the runtime state only if its version is still ``version``, in one
        atomic step: the new version, or 0 (someone saved meanwhile; nothing written).
        Of processes deciding the same change at once, one wins (a guard's trip)."""

    @abc.abstractmethod
    def init_state(self, state: dict[str, Any]) -> bool:
        """Save ``state`` only if no state was ever saved, in one atomic step; whether it
        was saved. The first of many processes to start seeds the state; the rest, even
        those racing it, adopt what is there."""

    def start_state(self, state: dict[str, Any], *, server: str, mode: str) -> StartedState:
        """A server starts on this store: write ``state`` (its startup state) or adopt
        what is there, by ``mode`` (``auto``, ``adopt``, ``startup``; see
        :func:`start_decision`), in one atomic step, and count ``server`` as alive on it.
        This default knows no other server (a store inside one process)."""
        if mode == "startup" and self.load_state()[1] is not None:
            self.save_state(state)
            return StartedState(True, "startup")
        wrote = self.init_state(state)
        return StartedState(wrote, "empty" if wrote else "own server")

    def renew_lease(self, server: str) -> None:  # noqa: B027 (optional, empty by default)
        """``server`` still uses this store (called every LEASE_RENEW_S by the process
        that started it); stores that see their processes need not be told."""

    def drop_lease(self, server: str) -> None:  # noqa: B027 (optional, empty by default)
        """``server`` stops: it no longer counts as alive on this store."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget buckets and counters (slots in use stay: their requests are running)."""
