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
from typing import Any

__all__ = ["BEFORE_CUT_KEY", "before_cut", "client_socket", "cut_connection", "reset_connection"]

# What must happen before the client can tell the request is over (the middleware gives
# back a connection slot): called by whoever cuts the connection, just before the cut.
BEFORE_CUT_KEY = "mockforge.before_cut"

SOCKET_KEYS = ("gunicorn.socket", "werkzeug.socket")


def client_socket(environ: dict[str, Any]) -> socket.socket | None:
    """The client's socket if the server exposes it, else None."""
    for key in SOCKET_KEYS:
        sock = environ.get(key)
        if isinstance(sock, socket.socket) and sock.fileno() >= 0:
            return sock
    return None


def before_cut(environ: dict[str, Any]) -> None:
    """Run the ``BEFORE_CUT_KEY`` callback, if any (once: it is taken out)."""
    hook = environ.pop(BEFORE_CUT_KEY, None)
    if hook is not None:
        hook()


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
