"""A raw upstream on 127.0.0.1 that does each real event the outbound faults stand for:
answers (a 503 with Retry-After too), a reset before the answer, a body cut short, a
close with no answer (an empty reply), an answer too slow to read, and a port where
nothing listens (refused). The exception table test compares each library's exception
for the real event with the one chaos raises."""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

BODY = b"x" * 1000


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return
            data += chunk
        path = data.split(b" ", 2)[1].decode()
        if path.startswith("/reset"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            return
        if path.startswith("/empty"):  # closed with no status line
            sock.shutdown(socket.SHUT_RDWR)
            return
        if path.startswith("/503"):
            sock.sendall(
                b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n"
                b"Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
            return
        if path.startswith("/slow"):
            time.sleep(1.0)
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n" % len(BODY)
        if path.startswith("/cut"):
            sock.sendall(head + b"Connection: close\r\n\r\n" + BODY[:500])
            sock.shutdown(socket.SHUT_WR)
            time.sleep(0.05)
            return
        sock.sendall(head + b"Connection: close\r\n\r\n" + BODY)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@contextmanager
def upstream() -> Iterator[tuple[str, int]]:
    """(host, port) of a running upstream; stopped on exit."""
    server = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield "127.0.0.1", server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (a connection is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
