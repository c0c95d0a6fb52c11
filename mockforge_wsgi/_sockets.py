"""Reaching and breaking the client's TCP connection from inside a WSGI app.

Servers that expose the client socket put it in the environ: gunicorn as
``gunicorn.socket``, werkzeug's development server as ``werkzeug.socket``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["Connection", "client_socket", "cut_connection", "reset_connection"]

SOCKET_KEYS = ("gunicorn.socket", "werkzeug.socket")


def client_socket(environ: dict[str, Any]) -> socket.socket | None:
    """The client's socket if the server exposes it, else None."""
    for key in SOCKET_KEYS:
        sock = environ.get(key)
        if isinstance(sock, socket.socket) and sock.fileno() >= 0:
            return sock
    return None


class Connection:
    """One request's client connection, for the faults that end it on purpose.

    ``before_cut`` is what must happen before the client can tell the request is over
    (the middleware gives back a connection slot); it runs once, just before a cut.
    Without a socket (a server that does not expose it) ``reachable`` is False and the
    caller answers in the closest way a WSGI app can. The socket is looked up when
    first needed: most requests never cut their connection.
    """

    __slots__ = ("_environ", "before_cut")

    def __init__(
        self, environ: dict[str, Any], before_cut: Callable[[], None] | None = None
    ) -> None:
        self._environ = environ
        self.before_cut = before_cut

    @property
    def reachable(self) -> bool:
        return client_socket(self._environ) is not None

    def reset(self, why: str) -> ConnectionResetError:
        """Abort with a TCP reset; returns the error to raise (the server's "client went
        away"). Only when ``reachable``."""
        sock = self._before_cut()
        reset_connection(sock)
        return dropped(why)

    def close(self, why: str) -> ConnectionResetError:
        """Shut both directions after what was sent; returns the error to raise. Only
        when ``reachable``."""
        sock = self._before_cut()
        cut_connection(sock)
        return dropped(why)

    def send_then_close(self, data: bytes, why: str) -> ConnectionResetError:
        """Write ``data`` on the socket ourselves (bytes no WSGI server would frame so),
        then shut both directions; returns the error to raise. Only when ``reachable``."""
        sock = self._before_cut()
        with contextlib.suppress(OSError):
            sock.sendall(data)
        cut_connection(sock)
        return dropped(why)

    def _before_cut(self) -> socket.socket:
        sock = client_socket(self._environ)
        assert sock is not None, "cut only a reachable connection"
        hook, self.before_cut = self.before_cut, None
        if hook is not None:
            hook()
        return sock


def reset_connection(sock: socket.socket) -> None:
    """Abort the connection so the client sees a TCP RST (``ConnectionResetError``).

    SO_LINGER with a zero timeout makes the kernel answer the close with RST instead
    of FIN. On Linux the abort is done at once with ``connect(AF_UNSPEC)``, which
    resets the connection while the server still holds its descriptor: the server's
    own close then finds an unconnected socket and stays quiet, and no descriptor is
    closed under a server that may still use it (werkzeug keeps file objects on it).
    Elsewhere the socket object is closed.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        return
    if not _disconnect(sock):
        sock.close()


def cut_connection(sock: socket.socket) -> None:
    """Close both directions after what was sent: the client reads EOF mid-body at once."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def dropped(message: str) -> ConnectionResetError:
    """The error a WSGI server treats as a client that went away (logged at debug)."""
    return ConnectionResetError(errno.ECONNRESET, f"mockforge: {message}")


def _load_libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


_LIBC = _load_libc()
# struct sockaddr with sa_family = AF_UNSPEC: Linux's "disconnect this socket".
_UNSPEC_ADDRESS = struct.pack("=H14x", socket.AF_UNSPEC)


def _disconnect(sock: socket.socket) -> bool:
    if _LIBC is None:
        return False
    result = _LIBC.connect(sock.fileno(), _UNSPEC_ADDRESS, len(_UNSPEC_ADDRESS))
    return bool(result == 0)
