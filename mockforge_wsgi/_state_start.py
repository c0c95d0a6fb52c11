"""What a starting server does with a shared store's chaos state, and how it says so.

``chaos.state_at_start`` (``auto``, ``adopt``, ``startup``) is applied by the store in
one atomic step (:meth:`Store.start_state`); this module names the server, keeps its
lease on a store that needs one, compares the state with the startup one, and words
the one line a server logs and the ``state`` block of ``/status``.

A server is named ``host:pid`` after the process that started it: the master of
``mockforge serve`` (which decides once, before forking, and tells its workers in
``MOCKFORGE_STATE_STARTED_BY``), the master of any other multi-process server (its
workers group by it, so the first worker decides and the others join), else the one
process.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import threading
import weakref
from collections.abc import Mapping
from typing import Any

from . import _env
from .state.base import LEASE_RENEW_S, WRITES, StartedState, Store, StoreError

__all__ = [
    "MODES",
    "differences",
    "joined_line",
    "keep_alive",
    "server_name",
    "start_mode",
    "start_server",
    "started_line",
    "told_by_master",
    "worker_of_a_master",
]

MODES = ("auto", "adopt", "startup")
# Compared with the startup state: every setting but this one (it says how a server
# starts, not what chaos it injects).
NOT_COMPARED = frozenset({"state_at_start"})


def server_name(*, multiprocess: bool = False) -> str:
    """This process's server: the one ``MOCKFORGE_STATE_STARTED_BY`` names, else its
    master's (several processes), else its own, as ``host:pid``."""
    told = told_by_master()
    if told is not None:
        return told[0]
    return f"{socket.gethostname()}:{os.getppid() if multiprocess else os.getpid()}"


def worker_of_a_master(environ: Mapping[str, Any]) -> bool:
    """Whether the process serving ``environ`` is a worker that its master may replace:
    several processes (``wsgi.multiprocess``), or a gunicorn worker (even ``-w 1``:
    gunicorn respawns it, and the state must follow the server, not the worker)."""
    software = str(environ.get("SERVER_SOFTWARE", ""))
    return bool(environ.get("wsgi.multiprocess")) or software.startswith("gunicorn/")


def told_by_master() -> tuple[str, StartedState] | None:
    """The server and what its master did at start, from ``MOCKFORGE_STATE_STARTED_BY``
    (``host:pid;why``), in a worker of ``mockforge serve``; else None."""
    told = _env.text(_env.STATE_STARTED_BY)
    if not told:
        return None
    server, _, why = told.partition(";")
    return server, StartedState(why in WRITES, why or "own server")


def start_mode(store: Store, mode: str) -> str | None:
    """How a process starts on ``store``: ``mode`` on a store others may share; None
    (seed it if empty, else adopt) on its own memory, or when the serve master already
    applied the mode for this server (``MOCKFORGE_STATE_STARTED_BY``)."""
    if not store.shared or _env.text(_env.STATE_STARTED_BY):
        return None
    return mode


def start_server(engine: Any) -> str:
    """The ``mockforge serve`` master, before forking: apply the state_at_start rule
    once for the whole server and tell the workers (they adopt). Returns the line
    to log."""
    try:
        line: str = engine.start_now()
    except StoreError as error:
        return (
            f"cannot reach the shared store to start the chaos state ({error}); "
            "each worker applies state_at_start when it can"
        )
    # Decided: the workers adopt (they never apply the rule again, even when respawned).
    why = "empty" if engine.started is None else engine.started.why
    os.environ[_env.STATE_STARTED_BY] = f"{engine.server};{why}"
    if engine.started is None:  # a store of this server's own: nothing was there
        return "started the chaos state from this server's startup config (a store of its own)"
    return line


def differences(state: Mapping[str, Any], startup: Mapping[str, Any]) -> list[str]:
    """What a runtime state (``RuntimeState.to_dict()``) has that the startup one does
    not: setting names (``enabled``, ``latency``, ...), then ``scenario`` (another one
    runs), ``overrides``, ``custom scenarios``, ``schedule``."""
    found = []
    if state.get("enabled") != startup.get("enabled"):
        found.append("enabled")
    config, own = state.get("config") or {}, startup.get("config") or {}
    for name in own:
        if name not in NOT_COMPARED and name != "enabled" and config.get(name) != own[name]:
            found.append(name)
    running = (state.get("active") or {}).get("name")
    if running != (startup.get("active") or {}).get("name"):
        found.append("scenario")
    if state.get("overridden"):
        found.append("overrides")
    if state.get("custom") != startup.get("custom"):
        found.append("custom scenarios")
    if state.get("schedule"):
        found.append("schedule")
    return found


def ago(seconds: float) -> str:
    """``3.2 s``, ``4 min``, ``2.5 h``, ``3 days``: how long ago, in words."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86_400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.0f} days"


def started_line(started: StartedState, mode: str) -> str:
    """The line of a server that wrote its startup state to the store."""
    why = {
        "empty": "the store held no state",
        "startup": "state_at_start: startup",
        "no live server": "state_at_start: auto, and no other server is alive on the store",
    }.get(started.why, started.why)
    return f"started the shared state from this server's startup config ({why})"


def joined_line(
    started: StartedState,
    mode: str,
    *,
    version: int,
    written_ago_s: float,
    written_by: str,
    diffs: list[str],
) -> str:
    """The line of a server that adopted the state in the store."""
    by = f" by {written_by}" if written_by else ""
    differs = (
        f"differs from this server's startup config in: {', '.join(diffs)}"
        if diffs
        else "the same as this server's startup config"
    )
    if started.why == "live servers":
        why = f"state_at_start: auto, live: {', '.join(started.others)}"
    elif started.why == "own server":
        why = "started by this server's first worker"
    else:
        why = f"state_at_start: {mode}"
    return (
        f"joined the shared chaos state (version {version}, written {ago(written_ago_s)} "
        f"ago{by}; {differs}; {why})"
    )


def keep_alive(store: Store, server: str) -> None:
    """Renew ``server``'s lease on ``store`` every LEASE_RENEW_S from a thread of this
    process, and drop it when this process, being the server, exits (a store that
    needs no lease: nothing)."""
    if not store.leases:
        return
    stop = threading.Event()
    ref = weakref.ref(store)

    def renew() -> None:
        while not stop.wait(LEASE_RENEW_S):
            alive = ref()
            if alive is None:
                return
            with contextlib.suppress(StoreError):  # the store logs its outage
                alive.renew_lease(server)
            del alive

    def drop() -> None:
        stop.set()
        alive = ref()
        # The server is this process: it stops. (A worker of another master may be one
        # of several, or be respawned: its server's lease runs out LEASE_TTL_S after the
        # last of them is gone.)
        if alive is not None and server.rpartition(":")[2] == str(os.getpid()):
            with contextlib.suppress(StoreError):
                alive.drop_lease(server)

    threading.Thread(target=renew, name="mockforge-lease", daemon=True).start()
    atexit.register(drop)
