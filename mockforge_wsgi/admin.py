"""The admin listener: the management API on a port of its own, served by threads that
chaos cannot occupy.

The workers' threads can all be asleep in injected latency, or held by clients that
send their headers slowly; a user must still be able to see and stop the chaos at once.
``mockforge serve --admin-port`` starts this listener in gunicorn's master process:
a thread per connection, each with a read timeout, over the same shared store the
workers use, so a change made here reaches every worker on its next request.

Usage::

    listener = start_admin_listener("127.0.0.1", 9000, engine, admin_token=None)
    ...
    listener.shutdown()
"""

from __future__ import annotations

import ssl
import threading
from typing import TYPE_CHECKING, Any

from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from ._guard import BrowserGuard
from .api import create_management_app
from .engine import ScenarioEngine

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

__all__ = ["ADMIN_READ_TIMEOUT_S", "start_admin_listener", "start_listener"]

# A connection that sends nothing for this long is closed: slow clients cannot pile up.
ADMIN_READ_TIMEOUT_S = 10.0


class _AdminRequestHandler(WSGIRequestHandler):
    timeout = ADMIN_READ_TIMEOUT_S  # socketserver applies it to every read, and over
    # TLS the handshake is the first read: it happens here, in the connection's thread

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass  # gunicorn's log is for the served app; errors are still logged


def start_admin_listener(
    host: str,
    port: int,
    engine: ScenarioEngine,
    *,
    admin_token: str | None = None,
    metrics: WSGIApplication | None = None,
    guard: BrowserGuard | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> BaseWSGIServer:
    """Serve the management API of ``engine`` (and ``metrics`` at ``/metrics``) on
    ``host:port`` (0: a free port) from a daemon thread, a thread per connection, over
    TLS with ``ssl_context``; returns the server (``server_port``). ``guard`` defaults
    to the environment's lists with ``host`` as the bound address."""
    if guard is None:
        guard = BrowserGuard.from_env(bound=host)
    app: WSGIApplication = create_management_app(engine, admin_token=admin_token, guard=guard)
    if metrics is not None:
        app = DispatcherMiddleware(app, {"/metrics": metrics})
    return start_listener(host, port, app, ssl_context=ssl_context, name="mockforge-admin")


def start_listener(
    host: str,
    port: int,
    app: WSGIApplication,
    *,
    ssl_context: ssl.SSLContext | None = None,
    name: str = "mockforge-listener",
) -> BaseWSGIServer:
    """Serve ``app`` on ``host:port`` as the admin listener is served (the master's
    ports: a thread per connection, each read bounded), over TLS with ``ssl_context``."""
    server = make_server(host, port, app, threaded=True, request_handler=_AdminRequestHandler)
    if ssl_context is not None:
        # Not make_server's ssl_context: its socket shakes hands in accept(), in the one
        # accepting thread and with no timeout, so a client that connects and says
        # nothing would stop the listener. Here each handshake is in its own thread.
        server.socket = ssl_context.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
        server.ssl_context = ssl_context  # werkzeug's: wsgi.url_scheme is https
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    return server
