"""gunicorn entry point: the mock API (or your app) wrapped in chaos, management API mounted.

    gunicorn mockforge_wsgi.app:app                          # MOCKFORGE_CONFIG, MOCKFORGE_CHAOS_*
    gunicorn "mockforge_wsgi.app:create_app('chaos.yaml')"

``app`` is built on first use, in each worker, from ``MOCKFORGE_CONFIG`` (a YAML path)
and the ``MOCKFORGE_CHAOS_*`` environment; a bad config stops gunicorn with its message
("App failed to load"), not a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from . import _env
from ._extras import MissingExtra, require
from ._guard import BrowserGuard, GuardError
from ._gunicorn import loaded_by_gunicorn
from ._tls import GivenFile, TLSFileError, check_ca_file
from .config import ENV_PREFIX, RULES, ConfigError, load_config, read_yaml
from .middleware import ChaosMiddleware
from .mock_api import MockApp, parse_routes, route_rules
from .scenarios import BUILTIN_SCENARIOS, load_scenarios, unknown_scenario
from .state import StoreUrlError

__all__ = ["create_app"]


def create_app(
    config_path: str | os.PathLike[str] | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    override_sources: Mapping[str, str] | None = None,
    wrap: Any = None,
    upstream: str | None = None,
    upstream_ca_certs: str | None = None,
    upstream_insecure: bool | None = None,
    admin_token: str | None = None,
    environ: Mapping[str, str] | None = None,
    metrics: bool | None = None,
    recorder_db: str | os.PathLike[str] | None = None,
    otlp_endpoint: str | None = None,
    guard: BrowserGuard | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> Any:
    """The mock API (or ``wrap``, a WSGI app, or a proxy to ``upstream``, default
    ``MOCKFORGE_UPSTREAM``, an https one verified with ``upstream_ca_certs`` or
    ``MOCKFORGE_UPSTREAM_CA_CERTS``, or not with ``upstream_insecure`` or
    ``MOCKFORGE_UPSTREAM_INSECURE``) in a ChaosMiddleware; with ``recorder_db``
    (or ``MOCKFORGE_RECORDER_DB``) in a RecorderMiddleware; with ``metrics`` (default:
    ``MOCKFORGE_METRICS=1``) in a MetricsMiddleware serving ``/metrics``; with
    ``otlp_endpoint`` (or ``MOCKFORGE_OTLP_ENDPOINT``) traced, spans sent over OTLP/HTTP.
    ``guard`` (default: ``MOCKFORGE_ALLOWED_HOSTS``, ``MOCKFORGE_ALLOWED_ORIGINS``) refuses
    cross-site management requests and Hosts the server does not answer to.

    Precedence: defaults < YAML < environment < ``overrides`` (CLI flags).
    Raises one ConfigError listing every problem of the file, environment and flags;
    settings that would do nothing go to ``on_warning`` (default: logged).
    """
    environ = os.environ if environ is None else environ
    path = config_path or _env.text(_env.CONFIG, environ)
    problems: list[str] = []
    for switch in (_env.METRICS, _env.DEBUG_HEADERS, _env.UPSTREAM_INSECURE):
        try:
            _env.flag(switch, environ)
        except ValueError as error:
            problems.append(str(error))
    problems += _blank_token(admin_token, environ)
    if guard is None:
        try:
            guard = BrowserGuard.from_env(environ)
        except GuardError as error:
            problems += error.problems
    config = scenarios = routes = None
    try:
        config = load_config(
            path,
            environ=environ,
            overrides=overrides,
            override_sources=override_sources,
            on_warning=on_warning,
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
    if config is not None and config.scenario is not None:
        known = [*BUILTIN_SCENARIOS, *(scenario.name for scenario in scenarios or ())]
        if config.scenario not in known:
            problem = unknown_scenario(config.scenario, dict.fromkeys(known), "chaos.scenario")
            env_name = ENV_PREFIX + "SCENARIO"
            source = (override_sources or {}).get("chaos.scenario") or (
                env_name if env_name in environ else str(path)
            )
            problems.append(f"{problem} (from {source})")
    if problems or config is None:
        raise ConfigError(problems)
    upstream_from = "upstream" if upstream else _env.UPSTREAM  # named in an error
    upstream = upstream or _env.text(_env.UPSTREAM, environ)
    if wrap is None and upstream is not None:
        wrap = _proxy(upstream, upstream_from, upstream_ca_certs, upstream_insecure, environ)
    routes, scenarios = routes or (), scenarios or ()
    extra_rules = route_rules(routes)
    if extra_rules:  # per-route chaos goes first: a route's own override wins
        config = attrs.evolve(config, rules=(*RULES.parse(extra_rules), *config.rules))
    wrap, route_for = _own_chaos_removed(wrap)
    try:
        chaos = ChaosMiddleware(
            wrap if wrap is not None else MockApp(routes),
            config=config,
            scenarios=scenarios,
            admin_token=admin_token,
            guard=guard,
            route_for=route_for,
        )
    except StoreUrlError as error:  # MOCKFORGE_STORE
        raise ConfigError([str(error)]) from None
    if chaos.management is not None:
        # A server's app: its management API is built now, at start, not at its first
        # call (mounting it imported api: Flask stays out of a process without it).
        from .api import LazyManagementApp

        if isinstance(chaos.management, LazyManagementApp):
            chaos.management.app  # noqa: B018
    if upstream is not None and hasattr(wrap, "on_error"):
        wrap.on_error = lambda kind: chaos.store.count(("upstream_errors",))
    app: Any = chaos
    recorder_from = "recorder_db" if recorder_db else _env.RECORDER_DB  # named in an error
    recorder_db = recorder_db or _env.text(_env.RECORDER_DB, environ)
    if recorder_db is not None:
        from .recorder import Recorder, RecorderError, RecorderMiddleware

        try:
            recorder = Recorder(recorder_db)
        except RecorderError as error:
            raise ConfigError([f"{recorder_from}: {error}"]) from None
        app = RecorderMiddleware(app, recorder, admin_token=admin_token, guard=guard)
    if metrics is None:
        metrics = _env.flag(_env.METRICS, environ)
        if metrics:
            _require("metrics", _env.METRICS)
    if metrics:
        from .metrics import MetricsMiddleware  # needs the `metrics` extra

        unshared = _metrics_of_one_worker(environ)
        if unshared is not None:
            (on_warning or _log_warning)(unshared)
        app = MetricsMiddleware(app, route_for=chaos.route_for, engine=chaos.engine)
    if otlp_endpoint is None:
        otlp_endpoint = _env.text(_env.OTLP_ENDPOINT, environ)
        if otlp_endpoint is not None:
            _require("otel", _env.OTLP_ENDPOINT)
    if otlp_endpoint is not None:
        from .tracing import TracingMiddleware, setup_tracing  # needs the `otel` extra

        setup_tracing(otlp_endpoint)
        app = TracingMiddleware(app)
    return app


def _proxy(
    upstream: str,
    upstream_from: str,
    ca_certs: str | None,
    insecure: bool | None,
    environ: Mapping[str, str],
) -> Any:
    """The proxy to ``upstream``, its TLS from the arguments or else the environment;
    a CA file that is no CA bundle is one ConfigError naming where it came from."""
    from .proxy import ChaosProxy

    if ca_certs is None and _env.text(_env.UPSTREAM_CA_CERTS, environ) is not None:
        ca_certs = _env.text(_env.UPSTREAM_CA_CERTS, environ)
        shown = f"{_env.UPSTREAM_CA_CERTS}={ca_certs}"
    else:
        shown = f"upstream_ca_certs {ca_certs}"
    if insecure is None:
        insecure = _env.flag(_env.UPSTREAM_INSECURE, environ)
    try:
        if ca_certs is not None:
            check_ca_file(GivenFile(ca_certs, shown))
        return ChaosProxy(upstream, ca_certs=ca_certs, insecure=insecure)
    except TLSFileError as error:
        raise ConfigError([str(error)]) from None
    except ValueError as error:
        raise ConfigError([f"{upstream_from}: {error}"]) from None


def _metrics_of_one_worker(environ: Mapping[str, str]) -> str | None:
    """Metrics under gunicorn's several workers without prometheus_client's multiprocess
    directory: each worker counts alone, and /metrics shows the one that answers it."""
    loaded = loaded_by_gunicorn()
    if loaded is None or loaded.workers < 2 or environ.get(_env.PROMETHEUS_MULTIPROC_DIR):
        return None
    return (
        f"metrics: gunicorn runs {loaded.workers} workers but {_env.PROMETHEUS_MULTIPROC_DIR} "
        "is not set: each worker counts alone and /metrics shows the one that answers it; "
        "set it to an empty directory (docs/observability.md, Prometheus metrics)"
    )


def _log_warning(message: str) -> None:
    logging.getLogger("mockforge_wsgi").warning("mockforge: %s", message)


def _blank_token(admin_token: str | None, environ: Mapping[str, str]) -> list[str]:
    """An admin token that is empty or blank (``"$TOKEN"`` of an unset variable) would
    leave the management API open while the user thinks it is protected: refused."""
    given = environ.get(_env.ADMIN_TOKEN) if admin_token is None else admin_token
    shown = (
        f"admin_token {given!r}" if admin_token is not None else f"{_env.ADMIN_TOKEN}={given!r}"
    )
    if given is None or given.strip():
        return []
    return [
        f"{shown}: an empty admin token protects nothing; give the token, or unset it for none"
    ]


def _require(extra: str, variable: str) -> None:
    """An extra a variable asks for, or one ConfigError naming the variable."""
    try:
        require(extra, variable)
    except MissingExtra as error:
        raise ConfigError([str(error)]) from None


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
    document = read_yaml(path)[0]
    return document if isinstance(document, Mapping) else {}


def _not_loaded(error: ConfigError) -> None:
    """A config gunicorn's worker cannot load ``app`` with: one message and gunicorn's
    APP_LOAD_ERROR (the worker prints an AppImportError alone and exits 4; the master
    stops, "App failed to load"), not a traceback and "Worker failed to boot". Loaded
    in the master (``--preload``), where gunicorn shows any error as a traceback: the
    message, and the same exit status. Not loaded by gunicorn: the ConfigError stays."""
    loaded = loaded_by_gunicorn()
    if loaded is None:
        return
    from gunicorn.arbiter import Arbiter
    from gunicorn.errors import AppImportError

    if loaded.in_worker:
        raise AppImportError(str(error)) from None
    print(error, file=sys.stderr, flush=True)
    raise SystemExit(Arbiter.APP_LOAD_ERROR)


def __getattr__(name: str) -> Any:
    """``app``: built on first use, so importing this module reads no configuration."""
    if name == "app":
        try:
            application = create_app()
        except ConfigError as error:
            _not_loaded(error)
            raise
        globals()["app"] = application
        return application
    raise AttributeError(name)
