"""gunicorn entry point: the mock API (or your app) wrapped in chaos, management API mounted.

    gunicorn mockforge_wsgi.app:app                          # MOCKFORGE_CONFIG, MOCKFORGE_CHAOS_*
    gunicorn "mockforge_wsgi.app:create_app('chaos.yaml')"

``app`` is built on first use, in each worker, from ``MOCKFORGE_CONFIG`` (a YAML path)
and the ``MOCKFORGE_CHAOS_*`` environment; a bad config stops the worker from booting.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import yaml

from . import _env
from .config import RULES, ConfigError, load_config
from .middleware import ChaosMiddleware
from .mock_api import MockApp, parse_routes, route_rules
from .scenarios import load_scenarios

__all__ = ["create_app"]


def create_app(
    config_path: str | os.PathLike[str] | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    override_sources: Mapping[str, str] | None = None,
    wrap: Any = None,
    upstream: str | None = None,
    admin_token: str | None = None,
    environ: Mapping[str, str] | None = None,
    metrics: bool | None = None,
    recorder_db: str | os.PathLike[str] | None = None,
    otlp_endpoint: str | None = None,
) -> Any:
    """The mock API (or ``wrap``, a WSGI app, or a proxy to ``upstream``, default
    ``MOCKFORGE_UPSTREAM``) in a ChaosMiddleware; with ``recorder_db``
    (or ``MOCKFORGE_RECORDER_DB``) in a RecorderMiddleware; with ``metrics`` (default:
    ``MOCKFORGE_METRICS=1``) in a MetricsMiddleware serving ``/metrics``; with
    ``otlp_endpoint`` (or ``MOCKFORGE_OTLP_ENDPOINT``) traced, spans sent over OTLP/HTTP.

    Precedence: defaults < YAML < environment < ``overrides`` (CLI flags).
    Raises one ConfigError listing every problem of the file, environment and flags.
    """
    environ = os.environ if environ is None else environ
    path = config_path or _env.text(_env.CONFIG, environ)
    problems: list[str] = []
    for switch in (_env.METRICS, _env.DEBUG_HEADERS):
        try:
            _env.flag(switch, environ)
        except ValueError as error:
            problems.append(str(error))
    config = scenarios = routes = None
    try:
        config = load_config(
            path, environ=environ, overrides=overrides, override_sources=override_sources
        )
    except ConfigError as error:
        problems += error.problems
    if path is not None and not any(p.startswith(str(path)) for p in problems):
        try:
            scenarios = load_scenarios(path)
        except ConfigError as error:
            problems += error.problems
        try:
            routes = parse_routes(_document(path).get("routes"))
        except ConfigError as error:
            problems += error.problems
    if problems or config is None:
        raise ConfigError(problems)
    upstream = upstream or _env.text(_env.UPSTREAM, environ)
    if wrap is None and upstream is not None:
        from .proxy import ChaosProxy

        try:
            wrap = ChaosProxy(upstream)
        except ValueError as error:
            raise ConfigError([f"{_env.UPSTREAM}: {error}"]) from None
    routes, scenarios = routes or (), scenarios or ()
    extra_rules = route_rules(routes)
    if extra_rules:  # per-route chaos goes first: a route's own override wins
        config = attrs.evolve(config, rules=(*RULES.parse(extra_rules), *config.rules))
    wrap, route_for = _own_chaos_removed(wrap)
    chaos = ChaosMiddleware(
        wrap if wrap is not None else MockApp(routes),
        config=config,
        scenarios=scenarios,
        admin_token=admin_token,
        route_for=route_for,
    )
    if upstream is not None and hasattr(wrap, "on_error"):
        wrap.on_error = lambda kind: chaos.store.count(("upstream_errors",))
    app: Any = chaos
    recorder_db = recorder_db or _env.text(_env.RECORDER_DB, environ)
    if recorder_db is not None:
        from .recorder import Recorder, RecorderMiddleware

        app = RecorderMiddleware(app, Recorder(recorder_db), admin_token=admin_token)
    if metrics is None:
        metrics = _env.flag(_env.METRICS, environ)
    if metrics:
        from .metrics import MetricsMiddleware  # needs the `metrics` extra

        app = MetricsMiddleware(app, route_for=chaos.route_for, engine=chaos.engine)
    otlp_endpoint = otlp_endpoint or _env.text(_env.OTLP_ENDPOINT, environ)
    if otlp_endpoint is not None:
        from .tracing import TracingMiddleware, setup_tracing  # needs the `otel` extra

        setup_tracing(otlp_endpoint)
        app = TracingMiddleware(app)
    return app


def _own_chaos_removed(app: Any) -> tuple[Any, Any]:
    """An app that already wraps itself in a ChaosMiddleware (as both examples do), with
    that one taken out, and its ``route_for``: ours decides instead, once per request.
    Else its own chaos would apply too, under a management API ours hides."""
    if isinstance(app, ChaosMiddleware):  # application = ChaosMiddleware(...) (Django)
        return app.app, app.route_for
    own = getattr(app, "wsgi_app", None)
    if isinstance(own, ChaosMiddleware):  # app.wsgi_app = ChaosMiddleware(...) (Flask)
        app.wsgi_app = own.app
    return app, None


def _document(path: str | os.PathLike[str]) -> Mapping[str, Any]:
    document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return document if isinstance(document, Mapping) else {}


def __getattr__(name: str) -> Any:
    """``app``: built on first use, so importing this module reads no configuration."""
    if name == "app":
        application = create_app()
        globals()["app"] = application
        return application
    raise AttributeError(name)
