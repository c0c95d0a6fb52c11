"""The guard's decision: when chaos must turn itself off, and the per-process watcher
that asks.

:func:`trip_reason` is the decision, pure: a bound of ``chaos.guard`` breached by the
window's figures (``answer_window.py``) once it holds ``min_requests`` answers, or
chaos on (since start, or switched on by the API) for ``max_duration_s`` without a
renewal.

:class:`Tripwire` asks it in one daemon thread per process, never on a request's path:
at most every ``CHECK_S`` while this process has answers to send, and at the
``max_duration_s`` deadline it knows of (so chaos goes off with no traffic at all).
While neither is due the thread waits on an event; with chaos or the guard off it
ends, and the next switch-on starts it again; a gunicorn worker starts it when it
loads the app, so an idle worker trips at the deadline too. Tripping is the owner's
(:meth:`ScenarioEngine.trip`: chaos off as ``/disable`` does, the trip kept in the
store). A failure in here fails open: logged, counted as an internal error, and chaos
stays as it was.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from .answer_window import CHECK_S, AnswerWindow, Figures

if TYPE_CHECKING:
    from .config import GuardConfig
    from .state import Store

__all__ = ["GUARD_TRIPPED", "GuardView", "Tripwire", "trip_reason"]

log = logging.getLogger("mockforge_wsgi")

GUARD_TRIPPED = "guard_tripped"  # the store counter (and metric) of trips
# With nothing due, the watcher looks again this often (and ends if chaos went off).
IDLE_S = 5.0
ERROR_LOG_INTERVAL_S = 60.0


class GuardView(NamedTuple):
    """What the watcher needs of the runtime state (chaos on, a bound set): the guard,
    when chaos was switched on (the window counts from then), and when it was last
    switched on (at start or by the API) or renewed (None: no deadline)."""

    guard: GuardConfig
    armed_at: float
    renewed_at: float | None

    @property
    def deadline(self) -> float | None:
        """When max_duration_s runs out (clock time), or None."""
        if self.renewed_at is None or self.guard.max_duration_s is None:
            return None
        return self.renewed_at + self.guard.max_duration_s


class Guarded(Protocol):
    """The owner of a tripwire (the engine): its state, its store, and the trip."""

    @property
    def store(self) -> Store: ...

    def clock(self) -> float: ...

    def guard_view(self) -> GuardView | None: ...

    def trip(
        self, reason: str, figures: dict[str, Any], *, armed_at: float, renewed_at: float | None
    ) -> bool: ...


def trip_reason(
    guard: GuardConfig, figures: Figures | None, on_for_s: float | None
) -> tuple[str, dict[str, Any]] | None:
    """Why chaos must go off now (one line, starting with the setting's name, and the
    figures it judged), or None. ``figures`` are the window's (None: not read this
    time); ``on_for_s`` how long since chaos was switched on or renewed."""
    most = guard.max_duration_s
    if most is not None and on_for_s is not None and on_for_s >= most:
        return (
            f"max_duration_s: chaos was on for {on_for_s:.1f} s without a renewal "
            f"(max_duration_s {most:g})",
            {"on_for_s": round(on_for_s, 3), "max_duration_s": most},
        )
    if figures is None or figures.requests < guard.min_requests:
        return None
    window = f"{figures.requests} of the app's answers in the last {figures.span_s:.1f} s"
    ratio = guard.max_error_ratio
    if ratio is not None and figures.error_ratio > ratio:
        return (
            f"max_error_ratio: {figures.errors} errors in {window} "
            f"(ratio {figures.error_ratio:.2f} > {ratio:g})",
            figures.to_dict(),
        )
    p99 = guard.max_p99_ms
    if p99 is not None and figures.p99_ms is not None and figures.p99_ms > p99:
        return (
            f"max_p99_ms: p99 of {window} was {figures.p99_ms:.0f} ms (> {p99:g} ms)",
            figures.to_dict(),
        )
    return None


class Tripwire:
    """One process's guard: the answers it counts (``window``) and the thread that
    checks the window and the deadline. ``record`` is the request path's only call."""

    def __init__(
        self,
        owner: Guarded,
        *,
        check_s: float = CHECK_S,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.owner = owner
        self.check_s = check_s
        # Told of our own failures (the middleware counts them as internal errors).
        self.on_error = on_error if on_error is not None else self._log_error
        self.window = AnswerWindow()
        self._quiet_until = 0.0
        self._setup()

    def _setup(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._next_check = 0.0

    def record(self, error: bool, seconds: float) -> None:
        """An answer of the app (chaos on, the window watched): counted here; the
        watcher sends it at its next check."""
        self.window.record(error, seconds)
        if self._thread is None or self._pid != os.getpid():
            self.changed()
        elif not self._wake.is_set():
            self._wake.set()

    def changed(self) -> None:
        """The runtime state changed (or an answer came): start the watcher if it is
        not running, else wake it to look again."""
        if self._pid != os.getpid():  # forked: the parent's thread and locks are not ours
            self._setup()
            self.window = AnswerWindow()
        with self._lock:  # set inside: a watcher about to end sees it and stays
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="mockforge-guard", daemon=True
                )
                self._thread.start()
            self._wake.set()

    @property
    def running(self) -> bool:
        """Whether the watcher thread runs now (it ends while chaos or the guard is off)."""
        return self._thread is not None

    def _watch(self) -> None:
        """Wait for what is due (answers to send, a deadline), at most one check per
        ``check_s``; end while chaos or the guard is off."""
        wake = self._wake
        while True:
            try:
                view = self.owner.guard_view()
            except Exception:
                self.on_error("reading the guard's state")
                view = None
            if view is None:
                with self._lock:
                    if not wake.is_set():
                        self._thread = None
                        self.window.forget_pending()
                        return
                wake.clear()
                continue
            due = IDLE_S
            deadline = view.deadline
            if deadline is not None:
                due = min(due, deadline - self.owner.clock())
            if self.window.pending:
                due = 0.0
            wait_s = max(due, self._next_check - time.monotonic())
            if wait_s > 0.0 and wake.wait(wait_s):
                wake.clear()
                continue  # woken: look again at what is due
            self._next_check = time.monotonic() + self.check_s
            try:
                self.check()
            except Exception:
                self.on_error("checking the guard")

    def check(self) -> str | None:
        """Send this process's answers and read the window (if a check is due), judge
        it and the deadline, and trip if a bound is breached: the reason, or None."""
        owner = self.owner
        view = owner.guard_view()
        if view is None:
            return None
        guard = view.guard
        figures = None
        if guard.watches_answers and self.window.pending:
            store = owner.store
            sent = self.window.flush(store)
            figures = self.window.figures(
                store, window_s=guard.window_s, now=owner.clock(), since=view.armed_at, sent=sent
            )
        on_for = None if view.renewed_at is None else owner.clock() - view.renewed_at
        decided = trip_reason(guard, figures, on_for)
        if decided is None:
            return None
        reason, shown = decided
        tripped = owner.trip(reason, shown, armed_at=view.armed_at, renewed_at=view.renewed_at)
        return reason if tripped else None

    def _log_error(self, doing: str) -> None:
        """Counted and logged (once a minute): a failure here must not look like chaos."""
        with contextlib.suppress(Exception):
            self.owner.store.count(("internal_errors",))
        now = time.monotonic()
        if now >= self._quiet_until:
            self._quiet_until = now + ERROR_LOG_INTERVAL_S
            log.warning(
                "mockforge internal error while %s; chaos stays as it was", doing, exc_info=True
            )
