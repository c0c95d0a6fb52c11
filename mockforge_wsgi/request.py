"""What the decision core reads of a request, whichever direction it goes.

:class:`Request` is the small input of ``decide.Decider``: method, path, query, route,
headers, client address, test id, and a JSON body read once. Two kinds satisfy it:

- :class:`WSGIRequest`, the inbound one: a lazy view of a WSGI ``environ``, built per
  request as a tuple (no ``__init__`` runs) whose values are read only when the decision
  asks for one; a request the limiter only admits reads its method, nothing else.
- :class:`Call`, plain values: a request the app itself sends (outbound chaos), a test.

Nothing here imports the rest of the package but the names of two headers.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ._headers import TEST_ID_HEADER

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

__all__ = ["MAX_JSON_BODY", "Call", "Request", "WSGIRequest", "peek_body"]

MAX_JSON_BODY = 64 * 1024  # a json_field match reads bodies up to this size
_JSON_KEY = "mockforge.json_body"  # the parsed body, read once per request
_NO_BODY = object()


class Request(Protocol):
    """One request as the decision core sees it. Header names are HTTP names
    (``X-Forwarded-For``), matched without regard to case."""

    @property
    def method(self) -> str: ...

    @property
    def path(self) -> str: ...

    @property
    def query(self) -> str:
        """The query string, undecoded (``a=1&b=2``)."""

    @property
    def route(self) -> str:
        """The route template (``/users/<int:id>``) where one is known, else the path."""

    @property
    def client_address(self) -> str: ...

    @property
    def test_id(self) -> str | None:
        """``X-Mockforge-Test-Id``: which test sent it."""

    def header(self, name: str) -> str | None: ...

    def json_body(self) -> Any:
        """The body parsed as JSON, when it is 1 byte to MAX_JSON_BODY long by its
        Content-Length; None otherwise or when it is not JSON. Read once."""


@functools.lru_cache(maxsize=256)
def environ_key(name: str) -> str:
    """The environ key of an HTTP header: ``X-Forwarded-For`` -> ``HTTP_X_FORWARDED_FOR``
    (``Content-Type`` and ``Content-Length`` have no ``HTTP_`` prefix)."""
    key = name.upper().replace("-", "_")
    return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key


class WSGIRequest(tuple):  # type: ignore[type-arg]
    """A lazy :class:`Request` over a WSGI environ, with the app's route resolver.

    Built per request as ``tuple.__new__(WSGIRequest, (environ, route_of))`` (or
    :meth:`of`): a C-level call, where an ``__init__`` would cost a Python frame on the
    path of every request with chaos. Each value is read from the environ when asked."""

    __slots__ = ()

    @classmethod
    def of(cls, environ: WSGIEnvironment, route_of: Callable[[Any], str] | None = None) -> Any:
        return tuple.__new__(cls, (environ, route_of))

    @property
    def environ(self) -> WSGIEnvironment:
        environ: WSGIEnvironment = self[0]
        return environ

    @property
    def method(self) -> str:
        return str(self[0].get("REQUEST_METHOD") or "GET").upper()

    @property
    def path(self) -> str:
        return str(self[0].get("PATH_INFO") or "/")

    @property
    def query(self) -> str:
        return str(self[0].get("QUERY_STRING", ""))

    @property
    def route(self) -> str:
        environ, route_of = self
        return self.path if route_of is None else route_of(environ)

    @property
    def client_address(self) -> str:
        return str(self[0].get("REMOTE_ADDR") or "")

    @property
    def test_id(self) -> str | None:
        return self.header(TEST_ID_HEADER)

    def header(self, name: str) -> str | None:
        value = self[0].get(environ_key(name))
        return None if value is None else str(value)

    def json_body(self) -> Any:
        environ = self[0]
        body = environ.get(_JSON_KEY, _NO_BODY)
        if body is _NO_BODY:
            body = environ[_JSON_KEY] = _parsed(peek_body(environ, MAX_JSON_BODY))
        return body


class Call:
    """A :class:`Request` of plain values: what the app sends (outbound chaos), or a
    test's request to the decision core."""

    __slots__ = (
        "_headers",
        "_json",
        "_route",
        "body",
        "client_address",
        "method",
        "path",
        "query",
    )

    def __init__(
        self,
        method: str = "GET",
        path: str = "/",
        *,
        query: str = "",
        route: str | None = None,
        headers: Mapping[str, str] | None = None,
        client_address: str = "",
        body: bytes = b"",
    ) -> None:
        self.method = method.upper()
        self.path = path or "/"
        self.query = query
        self._route = route
        self._headers = {name.lower(): value for name, value in (headers or {}).items()}
        self.client_address = client_address
        self.body = body
        self._json: Any = _NO_BODY

    @property
    def route(self) -> str:
        return self.path if self._route is None else self._route

    @property
    def test_id(self) -> str | None:
        return self.header(TEST_ID_HEADER)

    def header(self, name: str) -> str | None:
        return self._headers.get(name.lower())

    def json_body(self) -> Any:
        if self._json is _NO_BODY:
            fits = 0 < len(self.body) <= MAX_JSON_BODY
            self._json = _parsed(self.body if fits else None)
        return self._json

    def __repr__(self) -> str:
        return f"Call({self.method} {self.path}{'?' + self.query if self.query else ''})"


def _parsed(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def peek_body(environ: WSGIEnvironment, limit: int) -> bytes | None:
    """A request body of 1 to ``limit`` bytes by its Content-Length, read and put back
    for the app (None: none, too large, or chunked; nothing read then)."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    stream = environ.get("wsgi.input")
    if not 0 < length <= limit or stream is None:
        return None
    data: bytes = stream.read(length)
    environ["wsgi.input"] = io.BytesIO(data)  # the app reads what we read
    return data
