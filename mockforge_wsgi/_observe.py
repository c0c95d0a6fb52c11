"""Seeing how a response ended: its status, and when the server closed it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

# (environ, status code as 3 characters or "000" when none was sent, seconds)
Listener = Callable[["WSGIEnvironment", str, float], None]


def observe(
    app: WSGIApplication,
    environ: WSGIEnvironment,
    start_response: StartResponse,
    done: Listener,
    *,
    whole: bool = False,
) -> Iterable[bytes]:
    """Call ``app``; once the response is closed (or the app raised), call ``done``.

    With ``whole``, an answer the client did not get whole (its body broken off before
    its end, or short of its Content-Length) is reported as ``"000"``, no answer: the
    circuit breaker counts a cut like a reset.
    """
    started = time.perf_counter()
    status = ["000"]
    sent = _Sent() if whole else None

    def record_status(code: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        status[0] = code[:3]
        write = start_response(code, headers, exc_info)
        if sent is None:
            return write
        sent.promise(code, headers, environ.get("REQUEST_METHOD") == "HEAD")
        return sent.counting(write)

    def finish() -> None:
        code = status[0]
        if sent is not None and not sent.whole():
            code = "000"
        done(environ, code, time.perf_counter() - started)

    try:
        body = app(environ, record_status)
    except BaseException:
        status[0] = "000"  # no answer: a reset, a drop, a cut
        finish()
        raise
    if sent is None:
        return ClosingBody(body, finish)
    return _CountedBody(body, finish, sent)


class ClosingBody:
    """The app's body; ``close()`` closes it, then calls ``then`` exactly once, even if
    closing raised. Used to release connection slots, record finished requests and end
    spans. (werkzeug's ``ClosingIterator`` skips later callbacks when one raises.)
    """

    def __init__(self, inner: Iterable[bytes], then: Callable[[], None]) -> None:
        self._inner = inner
        self._then: Callable[[], None] | None = then

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._inner)

    def close(self) -> None:
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
        finally:
            self._finish()

    def _finish(self) -> None:
        then, self._then = self._then, None
        if then is not None:
            then()

    def __del__(self) -> None:
        # A server that never calls close() must not leak a slot or lose a record.
        self._finish()


class CompletingBody(ClosingBody):
    """A ClosingBody that calls ``then`` as soon as the response is complete: when the
    bytes handed to the server reach ``length()`` (the Content-Length sent), before the
    last of them goes out, or when the body runs out; ``close()`` still does, if nothing
    did before. A client that has its whole answer never finds ``then`` still pending
    (a connection slot still taken, say)."""

    def __init__(
        self, inner: Iterable[bytes], then: Callable[[], None], length: Callable[[], int | None]
    ) -> None:
        super().__init__(inner, then)
        self._length = length

    def __iter__(self) -> Iterator[bytes]:
        sent = 0
        for chunk in self._inner:
            sent += len(chunk)
            length = self._length()
            if length is not None and sent >= length:
                self._finish()
            yield chunk
        self._finish()


class Once:
    """A callback that runs at most once, whoever calls it first."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback: Callable[[], None] | None = callback

    def __call__(self) -> None:
        callback, self._callback = self._callback, None
        if callback is not None:
            callback()


def content_length(headers: list[tuple[str, str]]) -> int | None:
    """The Content-Length in ``headers``, or None."""
    for name, value in headers:
        if (
            name.lower() == "content-length"
            and value.strip().isascii()
            and value.strip().isdigit()
        ):
            return int(value)
    return None


class _Sent:
    """How much of one answer was handed to the server: the length it promised, the
    bytes, and whether its body ran to its end."""

    __slots__ = ("bodiless", "bytes", "ended", "length")

    def __init__(self) -> None:
        self.length: int | None = None
        self.bytes = 0
        self.ended = False
        self.bodiless = False

    def promise(self, code: str, headers: list[tuple[str, str]], head: bool) -> None:
        self.length = content_length(headers)
        # No body is owed: a HEAD (werkzeug answers it with its length and no bytes),
        # a 204, a 304.
        self.bodiless = head or code[:3] in ("204", "304")

    def counting(self, write: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
        def counting_write(data: bytes) -> Any:
            result = write(data)
            self.bytes += len(data)
            return result

        return counting_write

    def whole(self) -> bool:
        if not self.ended:
            return False
        return self.bodiless or self.length is None or self.bytes >= self.length


class _CountedBody(ClosingBody):
    """A ClosingBody counting what it hands on, and noting when it ran to its end."""

    def __init__(self, inner: Iterable[bytes], then: Callable[[], None], sent: _Sent) -> None:
        super().__init__(inner, then)
        self._sent = sent

    def __iter__(self) -> Iterator[bytes]:
        sent = self._sent
        for chunk in self._inner:
            sent.bytes += len(chunk)
            yield chunk
        sent.ended = True
