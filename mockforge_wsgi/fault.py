"""Fault injection: decide which fault a request gets, then render or enact it.

Faults are rolled in this order, each with its own probability, and the first hit
wins: HTTP error, timeout, connection error, partial response. So the share of
requests that get a timeout is ``(1 - p_http) * p_timeout``, and so on down the list.
"""

from __future__ import annotations

import functools
import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import attrs

from . import _sockets
from ._answers import answer
from ._headers import add_annotation
from ._observe import content_length
from .config import (
    FAULT_NAMES,
    MAX_DELAY_MS,
    PARAMETERIZED,
    PARAMETERIZED_NAMES,
    FaultInjectionConfig,
    is_fault_step,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = [
    "CorruptBody",
    "CutBody",
    "Fault",
    "PartialBody",
    "broken_framing",
    "decide_fault",
    "drain_input",
    "read_upload",
    "render_fault",
]

# Each kind is also its injection type (injections.py): one name wherever it is reported.
FaultKind = Literal[
    "http_error",
    "timeout",
    "connection_reset",
    "partial_response",
    "after_app",
    "corrupted",
    "stream_cut",
    "upload_reset",
]

# A cut response promises this many bytes and sends none (any non-zero length will do).
_CUT_PROMISED_BYTES = 64

# Bytes of an unread request body we read and discard before answering early. Beyond
# it the client gets the fault on a connection we close, as servers do for big bodies.
DRAIN_LIMIT = 16 * 1024 * 1024
_DRAIN_CHUNK = 64 * 1024


@attrs.frozen
class Fault:
    """One injected fault, decided before anything is applied."""

    kind: FaultKind
    status: int | None = None
    hold_ms: float = 0.0
    fraction: float = 0.0
    # A partial response: cut after this many bytes (0: the fraction); an upload reset:
    # after this many bytes of the request body were read.
    limit_bytes: int = 0
    mode: str = ""  # after_app: reset, http_error, stall; corrupted: how; stream_cut: how
    seed: int = 0  # corrupted: which bytes, drawn at decide time
    after_ms: float = 0.0  # stream_cut: this long after the body's first byte (0: no time)
    after_chunks: int = 0  # stream_cut: after this many chunks (0: no count)

    @property
    def label(self) -> str:
        """Short name used in the annotation header, metrics and logs."""
        if self.kind == "http_error":
            return f"http_{self.status}"
        if self.kind == "timeout":
            return f"timeout_{self.hold_ms:g}ms"
        if self.kind == "after_app":
            return f"after_app_http_{self.status}" if self.status else f"after_app_{self.mode}"
        if self.kind == "corrupted":
            return f"corrupted_{self.mode}"
        if self.kind == "stream_cut":
            return f"stream_cut_{self.mode}"
        return self.kind


def decide_fault(
    config: FaultInjectionConfig,
    rng: random.Random,
    number: int | None = None,
    elapsed_s: float | None = None,
    script_step: int | None = None,
) -> Fault | None:
    """The fault for one request, or None. Pure: draws only from ``rng``.

    ``number`` is the request's number for the count-based pattern, which is checked
    first; a request the pattern lets through still rolls the probabilities.
    """
    if not config.enabled:
        return None
    if script_step is not None and script_step <= len(config.script):
        # The script decides this request (step n of the script, counted in the store).
        return named_fault(config.script[script_step - 1], rng, config.timeout_ms)
    pattern = config.pattern
    if pattern is not None and (number is not None or elapsed_s is not None):
        if pattern.timed:
            status = pattern.status_at(elapsed_s) if elapsed_s is not None else None
        else:
            status = pattern.status_for(number) if number is not None else None
        if status is not None:
            return Fault("http_error", status=status)
    if config.http_errors and _hit(config.http_error_probability, rng):
        return Fault("http_error", status=rng.choice(config.http_errors))
    if _hit(config.timeout_probability, rng):
        return Fault("timeout", status=504, hold_ms=config.timeout_ms)
    if _hit(config.connection_error_probability, rng):
        return Fault("connection_reset")
    if _hit(config.partial_response_probability, rng):
        return Fault(
            "partial_response",
            fraction=config.partial_response_fraction,
            limit_bytes=config.partial_response_limit_bytes,
        )
    if _hit(config.after_app_probability, rng):
        mode = config.after_app_fault
        status = rng.choice(config.http_errors or (502,)) if mode == "http_error" else None
        hold = config.timeout_ms if mode == "stall" else 0.0
        return Fault("after_app", status=status, hold_ms=hold, mode=mode)
    if _hit(config.corruption_probability, rng):
        return Fault("corrupted", mode=config.corruption, seed=rng.getrandbits(32))
    if _hit(config.cut_probability, rng):
        return Fault(
            "stream_cut",
            mode=config.cut_mode,
            after_ms=config.cut_after_ms,
            after_chunks=config.cut_after_chunks,
        )
    if _hit(config.upload_reset_probability, rng):
        return Fault("upload_reset", limit_bytes=config.upload_reset_after_bytes)
    return None


def named_fault(name: str, rng: random.Random, timeout_ms: float = 5000.0) -> Fault | None:
    """The fault a script step or X-Mockforge-Fault names (None for ``ok``): a status
    400-599, ``after-app-<status>``, or one of config.FAULT_NAMES. Raises ValueError
    for anything else. A corruption's bytes are drawn from ``rng`` here."""
    value = name.strip().lower()
    if not is_fault_step(value):
        allowed = ", ".join(
            ["a status 400-599", "after-app-<status>", "ok", *FAULT_NAMES, *PARAMETERIZED_NAMES]
        )
        raise ValueError(f"{name!r} is not a fault; allowed: {allowed}")
    if value == "ok":
        return None
    numbered = PARAMETERIZED.fullmatch(value)
    if numbered is not None:
        cut, cut_n, unit, _, upload_n = numbered.groups()
        if cut:
            by_time = unit == "ms"
            after = min(int(cut_n), int(MAX_DELAY_MS) if by_time else 1_000_000)
            return Fault(
                "stream_cut",
                mode="reset",
                after_ms=after if by_time else 0.0,
                after_chunks=0 if by_time else after,
            )
        return Fault("upload_reset", limit_bytes=int(upload_n))
    code = value.removeprefix("after-app-")
    if code.isascii() and code.isdigit():
        if value.startswith("after-app-"):
            return Fault("after_app", status=int(code), mode="http_error")
        return Fault("http_error", status=int(code))
    if value.startswith("corrupt-") or value == "empty-reply":
        mode = value.removeprefix("corrupt-").replace("empty-reply", "empty_reply")
        return Fault("corrupted", mode=mode, seed=rng.getrandbits(32))
    return {
        "reset": Fault("connection_reset"),
        "timeout": Fault("timeout", status=504, hold_ms=timeout_ms),
        "partial": Fault("partial_response", fraction=0.5),
        "after-app-reset": Fault("after_app", mode="reset"),
        "after-app-stall": Fault("after_app", mode="stall", hold_ms=timeout_ms),
    }[value]


def _hit(probability: float, rng: random.Random) -> bool:
    # No draw for a fault that is off, so enabling one fault leaves the others' draws alone.
    return probability > 0.0 and (probability >= 1.0 or rng.random() < probability)


def drain_input(environ: WSGIEnvironment, limit: int = DRAIN_LIMIT) -> bool:
    """Read and discard the request body so an early answer is the one the client sees.

    Returns False when the body is larger than ``limit`` (it is left unread).
    """
    stream = environ.get("wsgi.input")
    if stream is None:
        return True
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    terminated = environ.get("wsgi.input_terminated", False)
    if length > limit:
        return False
    remaining = limit if terminated and not length else length
    try:
        while remaining > 0:
            chunk = stream.read(min(_DRAIN_CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
    except (OSError, ValueError):
        return False
    return True


def fault_body(fault: Fault, config: FaultInjectionConfig) -> tuple[bytes, str]:
    """The body and content type of an HTTP-error or timeout answer: the status's own
    (``error_bodies``), else ``error_body``, else JSON naming the fault."""
    body = config.error_body
    for status, own in config.error_bodies:
        if status == fault.status:
            body = own
    return _body_of(fault.label, fault.status, body)


@functools.lru_cache(maxsize=64)
def _body_of(label: str, status: int | None, error_body: str | None) -> tuple[bytes, str]:
    """Built once per fault and body setting (a JSON encoding costs ~3 us a request)."""
    if error_body is None:
        fields = {"error": "injected fault", "fault": label, "status": status}
        text = json.dumps({**fields, "injected_by": "mockforge"})
        return text.encode(), "application/json"
    try:
        json.loads(error_body)
    except ValueError:
        return error_body.encode(), "text/plain; charset=utf-8"
    return error_body.encode(), "application/json"


def render_fault(
    fault: Fault,
    config: FaultInjectionConfig,
    start_response: StartResponse,
    extra_headers: list[tuple[str, str]],
) -> Iterable[bytes]:
    """Answer with an HTTP error or a timeout (the caller held it first, in a way
    chaos off can release) instead of calling the app, whose request body the caller
    has drained. A reset is ``reset_or_cut``'s."""
    return answer_fault(fault, config, start_response, extra_headers)


def answer_fault(
    fault: Fault,
    config: FaultInjectionConfig,
    start_response: StartResponse,
    extra_headers: list[tuple[str, str]],
) -> Iterable[bytes]:
    """An injected error answer: the fault's body, the user's ``error_headers``, and
    ``Retry-After`` on a 503 or 429 (``retry_after_s``), then ours."""
    status = fault.status or 500
    headers = list(config.error_headers)
    if status in (503, 429) and config.retry_after_s:
        headers.append(("Retry-After", str(config.retry_after_s)))
    body, content_type = fault_body(fault, config)
    return answer(start_response, status, body, content_type, [*headers, *extra_headers])


def reset_or_cut(
    connection: _sockets.Connection,
    start_response: StartResponse,
    extra_headers: list[tuple[str, str]],
    why: str,
    *,
    reset: bool = True,
) -> Iterable[bytes]:
    """End the request without an answer: a TCP reset (or a plain close with
    ``reset=False``) where the socket is reachable.

    Without a socket, the closest a WSGI app gets: a 502 whose promised body never
    comes, annotated ``fallback=cut``.
    """
    if connection.reachable:
        raise connection.reset(why) if reset else connection.close(why)
    headers = add_annotation(extra_headers, "fallback=cut")
    start_response(
        "502 Bad Gateway",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(_CUT_PROMISED_BYTES)),
            *headers,
        ],
    )
    return []


_Wrapper = TypeVar("_Wrapper", bound="_BodyWrapper")


class _BodyWrapper:
    """A fault that wraps the app: its ``start_response`` and its iterable in one object
    (``wrap`` takes the app's body); ``close()`` always closes the app's iterable."""

    _inner: Iterable[bytes] | None = None

    def wrap(self: _Wrapper, inner: Iterable[bytes]) -> _Wrapper:
        self._inner = inner
        return self

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


class PartialBody(_BodyWrapper):
    """Sends the first ``fraction`` of a body (or its first ``limit_bytes``) under its
    full Content-Length, then cuts.

    Used as the app's ``start_response`` wrapper and as the returned iterable: the
    headers tell the full length, the body stops short, and the connection is shut
    so the client sees an incomplete read at once, not after a keep-alive timeout.
    ``close()`` always closes the app's iterable.
    """

    def __init__(
        self, fraction: float, connection: _sockets.Connection, limit_bytes: int = 0
    ) -> None:
        self._fraction = fraction
        self._connection = connection
        self._budget: int | None = limit_bytes or None
        self._done = False

    def start_response(
        self, start_response: StartResponse, extra_headers: list[tuple[str, str]]
    ) -> StartResponse:
        def partial_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            length = content_length(headers)
            if length is not None:
                share = int(self._fraction * length)
                self._budget = min(self._budget, length) if self._budget else share
            write = start_response(status, [*headers, *extra_headers], exc_info)
            return self._write_through(write)

        return partial_start_response

    def _write_through(self, write: Any) -> Any:
        def partial_write(data: bytes) -> None:
            if self._done:
                return
            write(self._take(data))
            if self._budget == 0:
                self._cut()

        return partial_write

    def _take(self, data: bytes) -> bytes:
        if self._budget is None:  # no Content-Length: send part of the first chunk
            if not data:
                return b""
            self._budget = int(len(data) * self._fraction)
        allowed = data[: self._budget]
        self._budget -= len(allowed)
        return allowed

    def _cut(self) -> None:
        """Shut the connection after what was sent; without a socket, just stop."""
        self._done = True
        if self._connection.reachable:
            raise self._connection.close("injected partial response")

    def __iter__(self) -> Iterator[bytes]:
        assert self._inner is not None
        for chunk in self._inner:
            if self._done:
                return
            # Yielded even when empty: the headers must be out before the cut.
            yield self._take(chunk)
            if self._budget == 0:
                self._cut()
                return


class CorruptBody(_BodyWrapper):
    """The app's answer, broken on its way out as ``fault.mode`` says (``flip``,
    ``random``, ``invalid_json``, ``truncate``, ``wrong_content_type``); the bytes it
    breaks come from ``fault.seed``, drawn when the fault was decided. ``empty_reply``
    is not a body: the apply step closes the connection instead. ``close()`` always
    closes the app's iterable."""

    WRONG_TYPE = "text/html; charset=utf-8"
    NOT_JSON = b"#"

    def __init__(self, fault: Fault) -> None:
        self._mode = fault.mode
        self._rng = random.Random(fault.seed)
        self._budget: int | None = None  # truncate: bytes still to send
        self._first = True

    def start_response(
        self, start_response: StartResponse, extra_headers: list[tuple[str, str]]
    ) -> StartResponse:
        def corrupting_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            headers = list(headers)
            if self._mode == "wrong_content_type":
                headers = [(k, v) for k, v in headers if k.lower() != "content-type"]
                headers.append(("Content-Type", self.WRONG_TYPE))
            elif self._mode == "truncate":
                length = content_length(headers)
                if length is not None:  # a shorter body under a true, shorter length
                    self._budget = length // 2
                    headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
                    headers.append(("Content-Length", str(self._budget)))
            write = start_response(status, [*headers, *extra_headers], exc_info)

            def corrupting_write(data: bytes) -> None:
                write(self._break(data))

            return corrupting_write

        return corrupting_start_response

    def __iter__(self) -> Iterator[bytes]:
        assert self._inner is not None
        for chunk in self._inner:
            yield self._break(chunk)
            if self._budget == 0:
                return

    def _break(self, data: bytes) -> bytes:
        if not data:
            return data
        mode = self._mode
        if mode == "flip":  # about one byte in a hundred, at least one, a bit each
            broken = bytearray(data)
            for _ in range(max(1, len(data) // 100)):
                broken[self._rng.randrange(len(data))] ^= 1 << self._rng.randrange(8)
            return bytes(broken)
        if mode == "random":
            return self._rng.randbytes(len(data))
        if mode == "invalid_json" and self._first:
            self._first = False
            return self.NOT_JSON + data[1:]  # no JSON text starts with '#'
        if mode == "truncate":
            if self._budget is None:  # no length: half of the first chunk, then the end
                self._budget = len(data) // 2
            data, self._budget = data[: self._budget], max(self._budget - len(data), 0)
        return data


# The cut timer wakes this often to see whether the body ended meanwhile (each wait is
# a hold chaos off releases, so it never outlives a released request by more).
_CUT_TICK_S = 0.05


class CutBody(_BodyWrapper):
    """The app's body, cut partway: a reset, or a clean close that leaves a chunked body
    without its terminating chunk (``fault.mode``), after ``fault.after_chunks`` of the
    app's chunks or ``fault.after_ms`` after its first byte, whichever comes first (with
    neither, right after the headers).

    The time is kept by a timer thread, so a stream whose app sits between chunks
    (server-sent events, a model's tokens) is cut on time; a body that ends sooner has
    its end held back until the cut (a chunked body's terminating chunk, the last byte
    of a body with a Content-Length: a client that has every byte it was promised would
    see no cut). Its waits go through ``hold``: chaos off releases
    them and the body ends as the app ends it, uncut. Without a socket the body stops
    at the cut and the server ends it (annotated ``fallback=stop``). ``close()`` always
    closes the app's iterable.
    """

    def __init__(
        self, fault: Fault, connection: _sockets.Connection, hold: Callable[[float], bool]
    ) -> None:
        self._fault = fault
        self._connection = connection
        self._hold = hold
        self._lock = threading.Lock()
        self._cut_done = False  # by whichever thread cut first
        self._over = False  # the body is over: the timer stops at its next tick
        self._timer: threading.Thread | None = None
        self._length: int | None = None  # the Content-Length, if the app gave one

    def start_response(
        self, start_response: StartResponse, extra_headers: list[tuple[str, str]]
    ) -> StartResponse:
        if not self._connection.reachable:
            extra_headers = add_annotation(extra_headers, "fallback=stop")

        def cut_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            self._length = content_length(headers)
            return start_response(status, [*headers, *extra_headers], exc_info)

        return cut_start_response

    def __iter__(self) -> Iterator[bytes]:
        assert self._inner is not None
        fault = self._fault
        if not (fault.after_ms or fault.after_chunks):
            yield b""  # the headers, then the cut
            self._cut()
            return
        chunks = sent = 0
        held = b""  # the end held back until the cut (given back if it is released)
        for chunk in self._inner:
            if self._cut_done:  # the timer cut while the app made this chunk
                self._stopped()
                return
            if chunk and fault.after_ms and self._timer is None:
                self._start_timer()
            length = self._length
            if length is not None and chunk and sent + len(chunk) >= length:
                # The promised length's last byte is this body's end: held back.
                end = max(0, length - sent - 1)
                yield chunk[:end]
                held = chunk[end:]
                break
            yield chunk
            if not chunk:
                continue
            chunks += 1
            sent += len(chunk)
            if fault.after_chunks and chunks >= fault.after_chunks:
                self._cut()
                return
        if fault.after_ms:  # ended before its time: its end waits for the cut
            if self._timer is None:
                self._start_timer()
            assert self._timer is not None
            self._timer.join()
            if self._cut_done:
                self._stopped()
                return
            yield held  # released: the end goes out
            return
        self._cut()  # fewer chunks than the count: the end never comes

    def _start_timer(self) -> None:
        due = time.monotonic() + self._fault.after_ms / 1000.0
        self._timer = threading.Thread(
            target=self._time, args=(due,), name="mockforge-stream-cut", daemon=True
        )
        self._timer.start()

    def _time(self, due: float) -> None:
        while not self._over:
            left = due - time.monotonic()
            if left <= 0:
                self._cut_now()
                return
            if self._hold(min(left, _CUT_TICK_S)) is False:
                return  # released: no cut

    def _cut_now(self) -> bool:
        """Cut the connection once (either thread); True for the thread that did. Under
        the lock ``close()`` takes: once the server closed the response, its socket (and
        a descriptor it may reuse) is never touched."""
        with self._lock:
            if self._cut_done or self._over:
                return False
            self._cut_done = True
            if self._connection.reachable:
                why = f"injected {self._fault.label}"
                if self._fault.mode == "close":
                    self._connection.close(why)
                else:
                    self._connection.reset(why)
        return True

    def _cut(self) -> None:
        self._cut_now()
        self._stopped()

    def _stopped(self) -> None:
        """The body ends at the cut: the server is told the client went away (its
        socket is cut already); without a socket the body just stops."""
        self._over = True
        if self._connection.reachable:
            raise _sockets.dropped(f"injected {self._fault.label}")

    def close(self) -> None:
        with self._lock:
            self._over = True
        super().close()


def read_upload(environ: WSGIEnvironment, limit: int) -> None:
    """Read and drop up to ``limit`` bytes of the request body: what the server took in
    before an upload reset (the rest is still on its way from the client)."""
    stream = environ.get("wsgi.input")
    if stream is None:
        return
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    terminated = environ.get("wsgi.input_terminated", False)
    remaining = min(limit, length) if length else (limit if terminated else 0)
    try:
        while remaining > 0:
            chunk = stream.read(min(_DRAIN_CHUNK, remaining))
            if not chunk:
                return
            remaining -= len(chunk)
    except (OSError, ValueError):
        return


# What a malformed chunk's size line says: not hex, so no parser takes it for a length.
BAD_CHUNK_SIZE = b"zz-not-hex\r\n"


def broken_framing(
    fault: Fault, status: str, headers: list[tuple[str, str]], first: bytes
) -> bytes:
    """The bytes a broken-framing corruption writes on the socket itself, from the app's
    status, headers and first body bytes. ``malformed_chunk``: the status line and
    headers (chunked), a first chunk with half of ``first``, then a chunk-size line that
    is not hex. ``random_then_close``: random bytes (from ``fault.seed``) where the
    status line belongs. The connection is closed after them."""
    rng = random.Random(fault.seed)
    if fault.mode == "random_then_close":
        data = bytearray(rng.randbytes(rng.randint(64, 512)))
        if data[0] in b"Hh":  # never the start of "HTTP/"
            data[0] = 0
        return bytes(data)
    hop = ("content-length", "transfer-encoding", "connection")
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers if k.lower() not in hop)]
    lines += ["Transfer-Encoding: chunked", "Connection: close"]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    good = first[: max(1, len(first) // 2)]
    chunk = b"%x\r\n%s\r\n" % (len(good), good) if good else b""
    return head + chunk + BAD_CHUNK_SIZE + rng.randbytes(16)
