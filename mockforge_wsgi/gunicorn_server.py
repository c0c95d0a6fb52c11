"""gunicorn, run in this process for ``mockforge serve``: the application class, the
logger, the access log format and the master's hooks (a worker's exit, the ports opened
when ready).

A room of its own because it is gunicorn's side of ``serve``: what gunicorn calls, and
what plain ``gunicorn`` users name on its command line
(``--logger-class mockforge_wsgi.gunicorn_server.GunicornLogger``); ``cli.py`` keeps the
flags, their checks and the choice of options.

Usage::

    GunicornServer(factory, {"bind": "127.0.0.1:3000", "logger_class": GunicornLogger}).run()
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from gunicorn import glogging
from gunicorn.app.base import BaseApplication
from gunicorn.config import KNOWN_SETTINGS
from gunicorn.sock import ssl_context

from ._guard import BrowserGuard
from ._headers import ANNOTATION_HEADER, REQUEST_ID_KEY
from .admin import start_admin_listener, start_listener
from .engine import ScenarioEngine
from .state import Store, StoreError

__all__ = [
    "ACCESS_LOG_FORMAT",
    "GunicornLogger",
    "GunicornServer",
    "child_exit",
    "log_opened",
    "run_all",
    "serve_admin_port",
    "serve_metrics_port",
]

# gunicorn's combined format, the time taken, then what chaos did: the request id (set
# for a request that got chaos, or was recorded) and the annotation header, '-' if none.
ACCESS_LOG_FORMAT = (
    '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(M)sms '
    f"request_id=%({{{REQUEST_ID_KEY}}}e)s "
    f'chaos="%({{{ANNOTATION_HEADER.lower()}}}o)s"'
)


class GunicornLogger(glogging.Logger):  # type: ignore[misc]
    """gunicorn's logger, which also gives the ``mockforge_wsgi`` logger (one INFO line
    per injection, our own failures) its error log and level: gunicorn sets up only its
    own loggers, and a logger without a handler prints warnings and worse only.

    ``mockforge serve`` uses it; with plain gunicorn: ``gunicorn --logger-class
    mockforge_wsgi.gunicorn_server.GunicornLogger mockforge_wsgi.app:app`` (the old
    path, ``mockforge_wsgi.cli.GunicornLogger``, names the same class).
    """

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)  # again on a reload (HUP): the handlers are replaced, not added
        ours = logging.getLogger("mockforge_wsgi")
        ours.handlers = list(self.error_log.handlers)
        ours.setLevel(self.loglevel)
        ours.propagate = False  # gunicorn's handlers already have it


class GunicornServer(BaseApplication):  # type: ignore[misc]
    """gunicorn run in this process, configured from our flags, not from argv."""

    def __init__(self, factory: Any, options: dict[str, Any]) -> None:
        self._factory = factory
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)
        if _CAN_DISABLE_CONTROL_SOCKET:  # its default path would be shared by every server
            self.cfg.set("control_socket_disable", True)

    def load(self) -> Any:
        return self._factory()


_CAN_DISABLE_CONTROL_SOCKET = any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS)


# -- hooks (gunicorn calls them in the master) ---------------------------------


def child_exit(shared: Store | None, metrics_dir: str | None, server: Any, worker: Any) -> None:
    """gunicorn hook: a worker died; give back its slots, retire its live gauges."""
    if shared is not None:
        # An unreachable store must not take the master down; the dead worker's slots
        # expire by themselves (its row, or its lease), and the store logs the outage.
        with contextlib.suppress(StoreError):
            shared.release_worker(worker.pid)
    if metrics_dir is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid, metrics_dir)  # type: ignore[no-untyped-call]


def run_all(hooks: list[Any], server: Any) -> None:
    """gunicorn hook: each of ``hooks`` in turn (gunicorn takes one per setting)."""
    for hook in hooks:
        hook(server)


def log_opened(opened: list[str], server: Any) -> None:
    """gunicorn hook (master, when ready): every endpoint this server opened, once bound
    (``--port 0`` is known by now)."""
    main = str(server.LISTENERS[0]) if server.LISTENERS else ""
    first, *rest = opened
    server.log.info("mockforge: %s on %s", first, main)
    for line in rest:
        server.log.info("mockforge: %s", line.format(main=main))


def serve_admin_port(
    host: str,
    port: int,
    engine: ScenarioEngine,
    admin_token: str | None,
    metrics: bool,
    guard: BrowserGuard,
    opened: list[str],
    server: Any,
) -> None:
    """gunicorn hook (master, when ready): the management API (and the workers'
    metrics, with --metrics) on a port of its own."""
    metrics_app = None
    if metrics:
        from prometheus_client import CollectorRegistry, make_wsgi_app, multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        metrics_app = make_wsgi_app(registry)
    # Over TLS when the main port is: gunicorn's own context (its certfile, keyfile,
    # ca_certs and cert_reqs, and a user's ssl_context hook).
    context = ssl_context(server.cfg) if server.cfg.is_ssl else None
    listener = start_admin_listener(
        host,
        port,
        engine,
        admin_token=admin_token,
        metrics=metrics_app,
        guard=guard,
        ssl_context=context,
    )
    admin = f"{'https' if context else 'http'}://{host}:{listener.server_port}"
    also = f" and {admin}/metrics" if metrics else ""
    opened.insert(2, f"admin listener at {admin}/api/chaos{also}")  # after the main one's


def serve_metrics_port(host: str, port: int, server: Any) -> None:
    """gunicorn hook (master, when ready): the workers' metrics on a port of their own,
    served as the admin listener is (over TLS when the main port is)."""
    from prometheus_client import CollectorRegistry, make_wsgi_app, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    context = ssl_context(server.cfg) if server.cfg.is_ssl else None
    start_listener(
        host, port, make_wsgi_app(registry), ssl_context=context, name="mockforge-metrics"
    )
