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
) -> Iterable[bytes]:
    """Call ``app``; once the response is closed (or the app raised), call ``done``."""
    started = time.perf_counter()
    status = ["000"]

    def record_status(code: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        status[0] = code[:3]
        return start_response(code, headers, exc_info)

    def finish() -> None:
        done(environ, status[0], time.perf_counter() - started)

    try:
        body = app(environ, record_status)
    except BaseException:
        status[0] = "000"  # no answer: a reset, a drop, a cut
        finish()
        raise
    return ClosingBody(body, finish)


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
