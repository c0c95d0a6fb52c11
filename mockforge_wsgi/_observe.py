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
    return ObservedBody(body, finish)


class ObservedBody:
    """The app's body; ``close()`` closes it, then reports the finished request once."""

    def __init__(self, inner: Iterable[bytes], done: Callable[[], None]) -> None:
        self._inner = inner
        self._done: Callable[[], None] | None = done

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._inner)

    def close(self) -> None:
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
        finally:
            done, self._done = self._done, None
            if done is not None:
                done()
