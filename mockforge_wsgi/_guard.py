"""What a browser can be tricked into sending to the management API is refused.

A page on another site can make the user's browser send a "simple" request (a form
POST, a ``fetch`` with ``text/plain``) without asking first, and a DNS-rebinding page (a
name of the attacker's that resolves to 127.0.0.1) is same-origin with the server and can
read every answer. So a management request is refused with 403 when its ``Origin`` is
not the server's own (nor one allowed), when ``Sec-Fetch-Site`` says ``cross-site``, or
when its ``Host`` is a name the server does not answer to. Non-browser clients (curl,
the Python client, the Chaos Toolkit driver) send no ``Origin`` and a plain ``Host``.

Usage::

    guard = BrowserGuard.from_env(bound="127.0.0.1")   # what mockforge serve --host says
    refusal = guard.refusal(environ)                      # None, or (403, problems)
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from . import _env
from ._sockets import client_socket

__all__ = ["NOSNIFF", "BrowserGuard", "GuardError", "is_loopback", "listed"]

log = logging.getLogger(__name__)

# A host name, an IPv4 address or a bracketed IPv6 address, then an optional port.
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(:[0-9]{1,5})?$")
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}
# On every management answer: a browser takes it for what its Content-Type says.
NOSNIFF = ("X-Content-Type-Options", "nosniff")


class GuardError(ValueError):
    """An allowed host or origin that is not one; lists every problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _hostname(host: str) -> str:
    """``Host`` without its port and brackets, lower case: ``[::1]:3000`` -> ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _address(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def is_loopback(name: str) -> bool:
    """A loopback address, ``localhost`` or a name under ``.localhost`` (browsers resolve
    those to loopback themselves: no page can rebind them)."""
    address = _address(name)
    if address is not None:
        return address.is_loopback
    return name == "localhost" or name.endswith(".localhost")


def listed(name: str, environ: Mapping[str, str] | None = None) -> list[str]:
    """A comma-separated process variable as a list (unset: empty)."""
    return [item.strip() for item in (_env.text(name, environ) or "").split(",") if item.strip()]


def _arrived_on(environ: Mapping[str, Any]) -> str:
    """The local address the request came in on: the connection's own end when the
    server exposes the socket (gunicorn, werkzeug), else a guess from the client's
    (a client on loopback reached a loopback address). A Unix socket counts as
    loopback: only a local proxy reaches it."""
    sock = client_socket(dict(environ))
    if sock is not None:
        try:
            local = sock.getsockname()
        except OSError:
            local = None
        if isinstance(local, tuple):
            return str(local[0])
        if local is not None:
            return "127.0.0.1"
    return str(environ.get("REMOTE_ADDR") or "127.0.0.1")


class BrowserGuard:
    """Refuses cross-site management requests and requests for Hosts this server is not.

    ``allowed_hosts``: names (or addresses) besides the loopback ones; ``*`` turns the
    Host check off. ``allowed_origins``: origins (``https://tool.example``) besides the
    server's own. ``bound``: the address the server listens on, when known (``mockforge
    serve --host``). Unknown (the middleware in your own app), the check goes by the
    address each request arrived on: on a loopback address only loopback Hosts (and those
    allowed) are answered; on another address, with no names allowed, Hosts are not
    checked, as the names your app is reached by are not known here.
    """

    def __init__(
        self,
        *,
        allowed_hosts: Iterable[str] = (),
        allowed_origins: Iterable[str] = (),
        bound: str | None = None,
    ) -> None:
        hosts, origins = list(allowed_hosts), list(allowed_origins)
        problems = [
            f"allowed host: {host!r} is not a host name or address (with an optional port), or *"
            for host in hosts
            if host != "*" and not _HOST.match(host.strip())
        ]
        for origin in origins:
            parts = urlsplit(origin.strip())
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
                problems.append(
                    f"allowed origin: {origin!r} is not an origin like https://host[:port] "
                    "(scheme and host, no path)"
                )
        if problems:
            raise GuardError(problems)
        self.any_host = "*" in hosts
        self.hosts = frozenset(_hostname(host) for host in hosts if host != "*")
        self.origins = frozenset(origin.strip().rstrip("/").lower() for origin in origins)
        self.bound = None if bound is None else _hostname(bound)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, bound: str | None = None
    ) -> BrowserGuard:
        """The lists of ``MOCKFORGE_ALLOWED_HOSTS`` and ``MOCKFORGE_ALLOWED_ORIGINS``
        (comma-separated). Raises GuardError naming the variable and the value."""
        hosts, origins = listed(_env.ALLOWED_HOSTS, environ), listed(_env.ALLOWED_ORIGINS, environ)
        try:
            guard = cls(allowed_hosts=hosts, allowed_origins=origins, bound=bound)
        except GuardError as error:
            raise GuardError(
                [
                    problem.replace("allowed host:", f"{_env.ALLOWED_HOSTS}:", 1).replace(
                        "allowed origin:", f"{_env.ALLOWED_ORIGINS}:", 1
                    )
                    for problem in error.problems
                ]
            ) from None
        if guard.any_host:
            log.warning(
                "mockforge: %s=*: the Host check of the management API is off; a "
                "DNS-rebinding page can drive it (set an admin token)",
                _env.ALLOWED_HOSTS,
            )
        return guard

    def host_allowed(self, host: str, environ: Mapping[str, Any]) -> bool:
        name = _hostname(host)
        if self.any_host or name in self.hosts or is_loopback(name) or name == self.bound:
            return True
        local = self.bound if self.bound is not None else _hostname(_arrived_on(environ))
        if is_loopback(local):
            return False
        if _address(name) is not None:
            return True  # an address cannot be rebound: only a name can
        # Unknown bind and no names given: the app's own names are not known here.
        return self.bound is None and not self.hosts

    def refusal(self, environ: Mapping[str, Any]) -> tuple[str, list[str]] | None:
        """Why this request is refused (an error and its problems), or None."""
        host = str(environ.get("HTTP_HOST") or "")
        if host and not self.host_allowed(host, environ):  # browsers always send one
            name = _hostname(host)
            return "host not allowed", [
                f"Host: {host!r} is not a name this server answers the management API to "
                "(a DNS-rebinding page sends its own name); allow it with "
                f"--allowed-host {name} ({_env.ALLOWED_HOSTS}={name})"
            ]
        origin = environ.get("HTTP_ORIGIN")
        site = str(environ.get("HTTP_SEC_FETCH_SITE", "")).lower()
        if origin is not None:
            if self._own_origin(str(origin), host):
                return None
            return "cross-origin request refused", [
                f"Origin: {origin!r} is not this server's own origin; a page on another "
                "site cannot drive the management API; allow an origin with "
                f"--allowed-origin ({_env.ALLOWED_ORIGINS})"
            ]
        navigation = (
            environ.get("REQUEST_METHOD") in ("GET", "HEAD")
            and str(environ.get("HTTP_SEC_FETCH_MODE", "")).lower() == "navigate"
        )
        if site == "cross-site" and not navigation:  # <img>, <script>: no Origin sent
            return "cross-site request refused", [
                "Sec-Fetch-Site: 'cross-site': a page on another site cannot drive the "
                f"management API; allow its origin with --allowed-origin ({_env.ALLOWED_ORIGINS})"
            ]
        return None

    def _own_origin(self, origin: str, host: str) -> bool:
        """The Origin is allowed, or names this very Host (the scheme is not compared: a
        proxy that ends TLS forwards http)."""
        origin = origin.strip().rstrip("/").lower()
        if origin in self.origins:
            return True
        scheme, _, netloc = origin.partition("://")
        host = host.strip().lower()
        return bool(netloc) and netloc in (host, host.removesuffix(_DEFAULT_PORTS.get(scheme, "")))
