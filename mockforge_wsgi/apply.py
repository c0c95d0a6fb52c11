"""Applying one request's Plan around the app: what the middleware decided, done.

Nothing here decides or touches the store (a held connection slot comes with the
callback that gives it back); everything a request needs is carried by one
:class:`Delivery`, and what applying finds goes into its :class:`Outcome`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ._answers import answer
from ._observe import ClosingBody, CompletingBody, Once, content_length
from ._sockets import Connection
from .config import FaultInjectionConfig
from .fault import (
    CorruptBody,
    CutBody,
    Fault,
    PartialBody,
    answer_fault,
    broken_framing,
    drain_input,
    read_upload,
    render_fault,
    reset_or_cut,
)
from .outcome import CONNECTION_TIMEOUT, Injection, Outcome
from .plan import Plan
from .rate_limit import render_refusal
from .release import RELEASER
from .traffic_shaping import (
    DEADLINE,
    RELEASED,
    DribbleBody,
    PacedBody,
    PacedInput,
    sleep_until,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from .engine import HoldBasis, ScenarioEngine

__all__ = ["Delivery", "with_headers"]

_BUSY_BODY = b'{"error":"too many connections","injected_by":"mockforge"}'
_OPEN_BODY = b'{"error":"circuit open","injected_by":"mockforge"}'
_FULL_BODY = b'{"error":"bulkhead full","injected_by":"mockforge"}'
# Faults answered before the app would run (the others wrap or follow it).
_INSTEAD_OF_THE_APP = frozenset({"http_error", "timeout", "connection_reset", "upload_reset"})
# Corruptions that replace the whole reply once the app ran (not a body broken in place).
_REPLACING = frozenset({"empty_reply", "malformed_chunk", "random_then_close"})


class Delivery:
    """One request's apply step: the app, the decided plan (in ``outcome``), and the
    request it is applied to.

    ``release_slot`` gives back the connection slot the plan holds (None: it holds
    none); ``report(environ, found)`` hears what applying found (a body cut at the
    connection deadline). Both run once the response is complete or closed, the slot
    before a cut.

    Every hold (latency, a timeout's, an after-app stall, pacing, a dribble, a stream
    cut's timer, a connection-timeout wait) goes through :meth:`hold`: chaos turned
    off, a reset, a scenario stopped or a change of the holding settings in
    ``engine``'s state, made in any process sharing its store, releases it within
    about 100 ms, and the request goes on as if chaos had been off from that moment
    (``released``)."""

    __slots__ = (
        "_basis",
        "_connection",
        "_engine",
        "app",
        "environ",
        "faults",
        "headers",
        "outcome",
        "release_slot",
        "released",
        "report",
        "start_response",
        "started",
    )

    def __init__(
        self,
        app: WSGIApplication,
        outcome: Outcome,
        faults: FaultInjectionConfig,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        headers: list[tuple[str, str]],
        started: float,
        release_slot: Callable[[], None] | None,
        report: Callable[[WSGIEnvironment, list[Injection]], None],
        engine: ScenarioEngine | None = None,
    ) -> None:
        self.app = app
        self.outcome = outcome
        self.faults = faults
        self.environ = environ
        self.start_response = start_response
        self.headers = headers
        self.started = started
        self.report = report
        self.release_slot = Once(release_slot) if release_slot is not None else None
        self._connection: Connection | None = None
        self._engine = engine
        # What this request's holds were decided under (read now: one attribute).
        self._basis: HoldBasis | None = engine.basis if engine is not None else None
        self.released = False

    def hold(self, seconds: float) -> bool:
        """Wait ``seconds`` (an injected hold): True once waited out; False when chaos
        went off or changed meanwhile (see the class), and at once for every hold after."""
        if self.released:
            return False
        engine = self._engine
        if engine is None:
            held = RELEASER.hold(seconds)
        else:
            held = RELEASER.hold(seconds, source=engine, wanted=self._still_wanted)
        if not held:
            self.released = True
        return held

    def _still_wanted(self) -> bool:
        assert self._engine is not None and self._basis is not None
        return self._engine.still_holds(self._basis)

    @property
    def connection(self) -> Connection:
        """The client connection, for the faults that end it (most requests never do)."""
        if self._connection is None:
            self._connection = Connection(self.environ, before_cut=self.release_slot)
        return self._connection

    def __call__(self) -> Iterable[bytes]:
        plan = self.outcome.plan
        if plan.circuit is not None or plan.bulkhead is not None:  # rarely: one check
            answered = self._answer_at_once(plan)
            if answered is not None:
                return answered
        if plan.refused:
            assert plan.rate_limit is not None
            return render_refusal(plan.rate_limit, self.start_response, self.headers)
        if plan.slot is False:
            headers = [("Retry-After", "1"), *self.headers]
            return answer(self.start_response, 503, _BUSY_BODY, headers=headers)
        shaping = plan.shaping
        if shaping is not None and shaping.drop:
            return self._end(self.start_response, "injected request drop")
        paced = shaping is not None and shaping.paces_body
        if self.release_slot is None and not paced:
            return self._serve(self.start_response)  # nothing to finish
        # The slot comes back before the client can tell its answer is complete: before
        # the last byte of the promised length goes out, before a cut, or at the end.
        sent_length: list[int | None] = [None]

        def start_response_seen(
            status: str, response_headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            sent_length[0] = content_length(response_headers)
            return self.start_response(status, response_headers, exc_info)

        try:
            body = self._serve(start_response_seen)
        except BaseException:
            self._finish()
            raise
        if self.release_slot is None:  # a paced body: what it found is reported at close
            return ClosingBody(body, self._finish)
        return CompletingBody(body, self._finish, lambda: sent_length[0])

    def _answer_at_once(self, plan: Plan) -> Iterable[bytes] | None:
        """The breaker's answer while open, the bulkhead's when full; else None."""
        circuit, bulkhead = plan.circuit, plan.bulkhead
        if circuit is not None and plan.circuit_open:
            headers = [("Retry-After", circuit.retry_after), *self.headers]
            return answer(self.start_response, circuit.status, _OPEN_BODY, headers=headers)
        if bulkhead is not None and not bulkhead.held:
            wait = [("Retry-After", str(bulkhead.retry_after_s))] if bulkhead.retry_after_s else []
            return answer(
                self.start_response, bulkhead.status, _FULL_BODY, headers=[*wait, *self.headers]
            )
        return None

    def _serve(self, start_response: StartResponse) -> Iterable[bytes]:
        """Latency, then a fault or the app, with the body shaped as planned."""
        plan = self.outcome.plan
        environ = self.environ
        shaping = plan.shaping
        timeout = shaping.connection_timeout_ms if shaping is not None else 0.0
        deadline = self.started + timeout / 1000.0 if timeout else None
        dribble = None
        if shaping is not None and shaping.body_duration_ms:
            dribble = DribbleBody(shaping, sleep=self.hold)
            start_response = dribble.seeing(start_response)
        if shaping is not None and shaping.upload_bps:
            environ["wsgi.input"] = PacedInput(
                environ["wsgi.input"], shaping.upload_bps, sleep=self.hold
            )
        if plan.delay_ms is not None:
            waited = sleep_until(
                time.monotonic() + plan.delay_ms / 1000.0, deadline, sleep=self.hold
            )
            if waited == DEADLINE:
                return self._end(start_response, "connection timeout")
            if waited == RELEASED:
                return self._unharmed(start_response)
        fault = plan.fault
        kind = fault.kind if fault is not None else None
        if kind in _INSTEAD_OF_THE_APP:
            assert fault is not None
            if kind == "timeout" and not self.hold(fault.hold_ms / 1000.0):
                return self._unharmed(start_response)  # released before it answered
            if kind == "upload_reset":  # part of the body read, the rest still coming
                read_upload(environ, fault.limit_bytes)
                why = "injected reset during the upload"
                return reset_or_cut(self.connection, start_response, self.headers, why)
            drain_input(environ)  # the answer the client sees is ours, not a send error
            if kind == "connection_reset":
                return reset_or_cut(
                    self.connection, start_response, self.headers, "injected connection reset"
                )
            return render_fault(fault, self.faults, start_response, self.headers)
        if kind == "after_app" or (kind == "corrupted" and fault.mode in _REPLACING):  # type: ignore[union-attr]
            assert fault is not None
            return self._after_app(fault, start_response)
        body: Iterable[bytes]
        if kind == "partial_response" or kind == "corrupted" or kind == "stream_cut":
            assert fault is not None
            wrapper: PartialBody | CorruptBody | CutBody
            if kind == "partial_response":
                wrapper = PartialBody(fault.fraction, self.connection, fault.limit_bytes)
            elif kind == "corrupted":
                wrapper = CorruptBody(fault)
            else:
                wrapper = CutBody(fault, self.connection, self.hold)
            app_start_response = wrapper.start_response(start_response, self.headers)
            body = wrapper.wrap(self.app(environ, app_start_response))
        else:
            body = self.app(environ, with_headers(start_response, self.headers))
        if dribble is not None:
            body = dribble.wrap(body)
        if shaping is not None and shaping.paces_body:
            body = PacedBody(
                body,
                shaping,
                self.connection,
                started=self.started,
                on_cut=self._cut_mid_body,
                sleep=self.hold,
            )
        return body

    def _unharmed(self, start_response: StartResponse) -> Iterable[bytes]:
        """Released: the app answers as if chaos had been off (an upload's pacing, if
        any, is released too)."""
        return self.app(self.environ, with_headers(start_response, self.headers))

    def _after_app(self, fault: Fault, start_response: StartResponse) -> Iterable[bytes]:
        """Commit, then fail: the app runs to the end of its body (its side effects
        done, its answer discarded), then the client gets the fault instead."""

        answered: list[Any] = ["200 OK", []]  # the app's status and headers
        first = b""  # its first body bytes (a malformed chunk carries half of them)

        def discard(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            answered[:] = [status, headers]
            return lambda data: None  # the app's write() goes nowhere either

        body = self.app(self.environ, discard)
        try:
            for chunk in body:
                first = first or chunk
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        if fault.kind == "corrupted" and fault.mode != "empty_reply":
            return self._break_framing(fault, answered, first, start_response)
        if fault.mode == "reset":
            why = "injected reset after the app ran"
            return reset_or_cut(self.connection, start_response, self.headers, why)
        if fault.mode == "http_error":
            return answer_fault(fault, self.faults, start_response, self.headers)
        if fault.mode == "stall":  # released: the close comes at once
            self.hold(fault.hold_ms / 1000.0)
        return self._end(start_response, f"injected {fault.label} after the app ran")

    def _break_framing(
        self, fault: Fault, answered: list[Any], first: bytes, start_response: StartResponse
    ) -> Iterable[bytes]:
        """A malformed chunk or random bytes, written on the socket by us (no WSGI server
        frames a reply so), then a close; without a socket, ``reset_or_cut``'s fallback."""
        why = f"injected {fault.label}"
        connection = self.connection
        if not connection.reachable:
            return self._end(start_response, why)
        status, headers = answered
        data = broken_framing(fault, status, [*headers, *self.headers], first)
        raise connection.send_then_close(data, why)

    def _end(self, start_response: StartResponse, why: str) -> Iterable[bytes]:
        """End the request without an answer: a plain close, before anything was sent."""
        return reset_or_cut(self.connection, start_response, self.headers, why, reset=False)

    def _cut_mid_body(self) -> None:
        if not self.outcome.plan.cut_by_timeout:  # else planned, and reported as such
            self.outcome.found.append(Injection(CONNECTION_TIMEOUT))

    def _finish(self) -> None:
        """Once the response is complete or closed (the wrappers call it once): the slot
        back, and what applying found told."""
        if self.release_slot is not None:
            self.release_slot()
        found = self.outcome.found
        if found:
            self.report(self.environ, found)


def with_headers(start_response: StartResponse, extra: list[tuple[str, str]]) -> StartResponse:
    """``start_response`` adding ``extra`` to the app's headers."""
    if not extra:
        return start_response

    def start_response_with_headers(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Any:
        return start_response(status, [*headers, *extra], exc_info)

    return start_response_with_headers
