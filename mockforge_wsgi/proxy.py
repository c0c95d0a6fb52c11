"""ChaosProxy: a WSGI app that forwards every request to an upstream HTTP service.

Wrapped in ChaosMiddleware (``mockforge serve --upstream URL`` does it), chaos goes in
front of any service, Python or not. Built on urllib3's keep-alive connection pool;
request and response bodies stream through in chunks (never held whole), so pacing and
partial responses work on proxied bodies as on any app's. Hop-by-hop headers are
dropped (RFC 9110, section 7.6.1), ``X-Forwarded-For/-Proto/-Host`` are set, redirects
are passed on, not followed. An upstream that fails gets 502 (or 504 when it timed out)
with ``X-Mockforge-Upstream: unreachable|timeout|tls``: not injected chaos, and
counted apart (``upstream_errors``). An ``https://`` upstream is verified (the system's
CAs, or ``ca_certs``), unless ``insecure``.

Usage::

    app = ChaosMiddleware(ChaosProxy("http://127.0.0.1:8080"), config=config)
"""

from __future__ import annotations

import logging
import urllib.parse
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import urllib3
from werkzeug.http import is_hop_by_hop_header
from werkzeug.wsgi import LimitedStream

from ._answers import answer_json, status_line

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["UPSTREAM_HEADER", "ChaosProxy"]

log = logging.getLogger("mockforge_wsgi")

UPSTREAM_HEADER = "X-Mockforge-Upstream"  # on our own answers for a failed upstream
CHUNK_BYTES = 64 * 1024
TLS_HINT = (
    "the TLS handshake with the upstream failed; for a certificate of a private CA, give "
    "that CA (mockforge serve --upstream-ca-certs FILE, or MOCKFORGE_UPSTREAM_CA_CERTS)"
)


class ChaosProxy:
    """Forward each request to ``upstream`` (``http://host:port``, optionally with a
    path prefix), streaming both bodies; one connection pool per process.

    ``connect_timeout_s`` and ``read_timeout_s`` bound the wait for the upstream (the
    read timeout is per read, so a slow stream may take longer in all). An ``https://``
    upstream's certificate is verified against the system's CAs, or ``ca_certs`` (a PEM
    bundle: a private CA), or not at all with ``insecure``."""

    def __init__(
        self,
        upstream: str,
        *,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 30.0,
        pool_size: int = 16,
        ca_certs: str | None = None,
        insecure: bool = False,
    ) -> None:
        parts = urllib.parse.urlsplit(upstream)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"upstream {upstream!r}: expected http://host[:port][/prefix] or https://..."
            )
        tls: dict[str, Any] = {}
        if ca_certs is not None or insecure:
            if parts.scheme != "https":
                raise ValueError(
                    f"upstream {upstream!r} is not https://: a CA or an unverified "
                    "certificate applies to TLS only"
                )
            if ca_certs is not None and insecure:
                raise ValueError("a CA to verify with, and no verification: choose one")
            if insecure:
                tls = {"cert_reqs": "CERT_NONE", "assert_hostname": False}
                # Said once, loudly, at start; not once per request.
                warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
            else:
                tls = {"cert_reqs": "CERT_REQUIRED", "ca_certs": ca_certs}
        self.insecure = insecure
        self.upstream = upstream.rstrip("/")
        self._host = parts.netloc
        self._prefix = parts.path.rstrip("/")
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self.timeout = urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s)
        # One origin: its pool directly (a PoolManager would look the pool up by URL on
        # every request).
        self.pool = urllib3.connection_from_url(
            self._origin, maxsize=pool_size, block=False, **tls
        )
        # Told of each failure ("unreachable", "timeout" or "tls"): create_app counts them in
        # the chaos store as upstream_errors, apart from the injections.
        self.on_error: Callable[[str], None] | None = None

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        # PATH_INFO holds the path's bytes as latin-1 (PEP 3333): quote those bytes.
        path_info = environ.get("PATH_INFO", "") or "/"
        try:
            raw_path = path_info.encode("latin-1")
        except UnicodeEncodeError:  # a server that decoded the path itself
            raw_path = path_info.encode("utf-8")
        path = urllib.parse.quote(raw_path, safe="/%:@!$&'()*+,;=~")
        query = environ.get("QUERY_STRING", "")
        url = self._prefix + path + (f"?{query}" if query else "")
        body, chunked = _request_body(environ)
        try:
            response = self.pool.urlopen(
                environ.get("REQUEST_METHOD", "GET"),
                url,
                body=body,
                headers=self._request_headers(environ),
                redirect=False,
                retries=False,
                preload_content=False,
                decode_content=False,
                timeout=self.timeout,
                chunked=chunked,
            )
        except urllib3.exceptions.HTTPError as error:
            return self._failed(start_response, error)
        listed = _listed_in_connection(response.headers.get("Connection", ""))
        headers = [
            (name, value)
            for name, value in response.headers.iteritems()  # each Set-Cookie on its own
            if not is_hop_by_hop_header(name) and name.lower() not in listed
        ]
        reason = response.reason or status_line(response.status).partition(" ")[2]
        start_response(f"{response.status} {reason}", headers)
        return UpstreamBody(response)

    def _request_headers(self, environ: WSGIEnvironment) -> dict[str, str]:
        """The client's headers, less hop-by-hop ones, with X-Forwarded-* set."""
        listed = _listed_in_connection(str(environ.get("HTTP_CONNECTION", "")))
        headers: dict[str, str] = {}
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                name = key[5:].replace("_", "-").title()
            elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
                name = key.replace("_", "-").title()
            else:
                continue
            if is_hop_by_hop_header(name) or name.lower() in listed or name == "Host":
                continue
            headers[name] = str(value)
        client = str(environ.get("REMOTE_ADDR") or "")
        before = headers.get("X-Forwarded-For")
        if client:
            headers["X-Forwarded-For"] = f"{before}, {client}" if before else client
        headers["X-Forwarded-Proto"] = str(environ.get("wsgi.url_scheme", "http"))
        original_host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
        if original_host:
            headers["X-Forwarded-Host"] = str(original_host)
        headers["Host"] = self._host
        return headers

    def _failed(self, start_response: StartResponse, error: Exception) -> Iterable[bytes]:
        """The upstream failed: 502, or 504 when it did not answer in time; said plainly."""
        # A refused connection is a NewConnectionError, which urllib3 also makes a
        # ConnectTimeoutError: unreachable, not slow.
        timed_out = isinstance(error, urllib3.exceptions.TimeoutError) and not isinstance(
            error, urllib3.exceptions.NewConnectionError
        )
        extra: dict[str, str] = {}
        if isinstance(error, urllib3.exceptions.SSLError):
            # Mostly a certificate we cannot verify: a private CA, a wrong name.
            kind = "tls"
            extra = {"detail": str(error), "hint": TLS_HINT}
        else:
            kind = "timeout" if timed_out else "unreachable"
        log.warning("mockforge proxy: upstream %s %s: %s", self.upstream, kind, error)
        if self.on_error is not None:
            try:
                self.on_error(kind)
            except Exception:  # counting is not worth failing the answer for
                log.exception("mockforge proxy: counting an upstream error")
        return answer_json(
            start_response,
            504 if timed_out else 502,
            {"error": f"upstream {kind}", "upstream": self.upstream, **extra, "injected": False},
            headers=[(UPSTREAM_HEADER, kind)],
        )


class UpstreamBody:
    """The upstream's body in chunks as they arrive; ``close()`` gives the connection
    back to the pool when the body was read to its end, else closes it (a cut response,
    a client gone: what is left of the body must not reach the next request)."""

    def __init__(self, response: Any) -> None:
        self._response = response
        self._complete = False

    def __iter__(self) -> Iterator[bytes]:
        yield from self._response.stream(CHUNK_BYTES, decode_content=False)
        self._complete = True

    def close(self) -> None:
        if not self._complete:
            self._response.close()
        self._response.release_conn()


def _request_body(environ: WSGIEnvironment) -> tuple[Any, bool]:
    """What to send upstream: the input read as it goes under its Content-Length, a
    chunked stream when the client sent one chunked, or nothing. (gunicorn marks every
    input ``wsgi.input_terminated``: that alone says nothing about a body.)"""
    stream = environ.get("wsgi.input")
    declared = environ.get("CONTENT_LENGTH")
    if stream is None:
        return None, False
    if declared not in (None, ""):
        try:
            length = int(declared)
        except ValueError:
            return None, False
        return (LimitedStream(stream, length), False) if length > 0 else (None, False)
    if "chunked" in str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower():
        return iter(lambda: stream.read(CHUNK_BYTES), b""), True
    return None, False


def _listed_in_connection(value: str) -> set[str]:
    """The headers a ``Connection`` header names: hop-by-hop too (RFC 9110, 7.6.1)."""
    return {token.strip().lower() for token in value.split(",") if token.strip()}
