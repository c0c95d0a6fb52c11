"""The ``mockforge`` command: serve, the chaos client verbs, validate, report.

``serve`` turns its flags into a config and gunicorn options, then runs gunicorn in this
process; what gunicorn itself calls (the application, logger, hooks) is in
``gunicorn_server.py``.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import math
import os
import reprlib
import shutil
import socket
import sqlite3
import ssl
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click
from click.core import ParameterSource

from . import _env, _state_start
from ._extras import MissingExtra, require
from ._guard import BrowserGuard, GuardError, is_loopback, listed
from ._tls import GivenFile, TLSFileError, check_ca_file, check_server_files
from .active_faults import most_held
from .app import create_app
from .config import ChaosConfig, ConfigError, SettingInfo, iter_settings, longest_delay_s
from .engine import ScenarioEngine, UnknownScenario
from .scenarios import BUILTIN_SCENARIOS, Scenario, load_scenarios
from .state import MemoryStore, Store, StoreError, store_from_env, store_from_url
from .state.server_store import server_store_directory
from .tracing import traces_url
from .verdicts import DEFAULT_WINDOW_S

if TYPE_CHECKING:
    from .gunicorn_server import ACCESS_LOG_FORMAT, GunicornLogger

# Imported by the verbs that use them, not here: gunicorn (and Flask, through the admin
# listener) for serve, the HTTP client for the client verbs, the recorder and the report
# for report. Every verb pays for the others' imports otherwise (a console script that
# only says what is wrong took ~0.1 s longer).

DEFAULT_URL = "http://127.0.0.1:3000"
# gunicorn's own default worker timeout; we only ever raise it.
BASE_WORKER_TIMEOUT_S = 30
DEFAULT_BURST = 10


class BadValue(click.ClickException):
    """A flag, variable or file whose value is wrong: the command was typed right, so the
    error alone, without click's usage lines; exit status 2, as a usage error's."""

    exit_code = 2


class IntRange(click.IntRange):
    """click's IntRange; a value that is no integer is refused naming the range."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            int(value)
        except (TypeError, ValueError):
            self.fail(
                f"{value!r} is not an integer in the range {self._describe_range()}.", param, ctx
            )
        return super().convert(value, param, ctx)


class FloatRange(click.FloatRange):
    """click's FloatRange; a value that is no number is refused naming the range."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            float(value)
        except (TypeError, ValueError):
            self.fail(
                f"{value!r} is not a number in the range {self._describe_range()}.", param, ctx
            )
        return super().convert(value, param, ctx)


@click.group()
@click.version_option(package_name="mockforge-wsgi")
def main() -> None:
    """Chaos engineering for synchronous Python web stacks."""


# -- serve ----------------------------------------------------------------------------

# The settings ``mockforge serve`` has a flag for: each declares it (config.setting's
# ``flag``), so the option, its help, the docs table and validation come from there.
FLAGGED = tuple(info for info in iter_settings() if info.flag is not None)


def flag_effect(info: SettingInfo) -> str:
    """What a flag sets, in words: its setting, and the section it turns on."""
    turns_on = f"; turns {info.switches_on[0]} on" if info.switches_on else ""
    return f"[{info.dotted}{turns_on}]"


def chaos_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add a click option for every flagged setting, in declaration order."""
    for info in reversed(FLAGGED):
        flag = info.flag
        assert flag is not None
        help = " ".join(filter(None, (info.help, flag.note, flag_effect(info))))
        if not flag.metavar:  # an on/off switch
            command = click.option(flag.name, flag.parameter, is_flag=True, help=help)(command)
        else:
            option = click.option(flag.name, flag.parameter, metavar=flag.metavar, help=help)
            command = option(command)
    return command


def _flag_overrides(flags: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """CLI flags as a nested overrides layer, and which flag each path came from. The
    values are the flags' text: the config checks them as it checks env variables."""
    overrides: dict[str, Any] = {}
    sources: dict[str, str] = {}

    def put(path: tuple[str, ...], value: Any, source: str) -> None:
        *parents, leaf = path
        target = overrides
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
        sources[".".join(("chaos", *path))] = source

    for info in FLAGGED:
        flag = info.flag
        assert flag is not None
        value = flags.get(flag.parameter)
        if value is None or value is False:
            continue
        put(info.path, value, flag.name)
        if info.switches_on:
            put(info.switches_on, True, flag.name)
    try:
        rate = float(flags.get("chaos_rate_limit") or "nan")
    except ValueError:
        rate = math.nan  # the config check reports it
    if 0 < rate < DEFAULT_BURST:
        # A burst above one second's worth would hide a low limit from a short test.
        put(("rate_limit", "burst_size"), max(1, math.ceil(rate)), "--chaos-rate-limit")
    return overrides, sources


def worker_timeout(config: ChaosConfig, scenarios: Iterable[Scenario]) -> int:
    """A gunicorn worker timeout above the longest delay the config or a scenario injects.

    (gthread workers beat their heartbeat from the main thread, so a sleeping request
    thread never trips it; a sync worker is blocked for the whole delay.)"""
    configs = [config, *(scenario.config for scenario in scenarios)]
    return BASE_WORKER_TIMEOUT_S + math.ceil(longest_delay_s(configs))


def _check_port(host: str, port: int, flag: str = "--port") -> None:
    """Bind and let go, so a busy port is one line naming the flag that asked for it."""
    probe = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
    try:
        probe.bind((host, port))
    except OSError as error:
        raise BadValue(
            f"--host {host} {flag} {port}: cannot bind ({error.strerror}); "
            f"choose another {flag} (0: any free port)"
        ) from None
    finally:
        probe.close()


def url_problem(value: str) -> str | None:
    """What is wrong with ``value`` as the http(s) URL of a server, with the fix; None
    when nothing is."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (parsing it raises ValueError when it is not a port)
    except ValueError:
        return f"{value!r}: the port is not a number in 0-65535"
    if "://" not in value:
        return f"{value!r} has no scheme; did you mean http://{value}?"
    if parts.scheme not in ("http", "https"):
        return f"{value!r}: expected an http:// or https:// URL"
    if not parts.hostname:
        return f"{value!r} names no host; expected http://host:port"
    return None


def _checked_url(name: str, value: str | None) -> None:
    """Raise one usage error naming the flag or the environment variable that gave
    ``value`` (the option ``name`` of the running command) unless it is an http(s) URL.
    (Called once parsing is done: only then does click know where a value came from.)"""
    problem = None if value is None else url_problem(value)
    if problem is None:
        return
    ctx = click.get_current_context()
    param = next(param for param in ctx.command.params if param.name == name)
    if ctx.get_parameter_source(name) is ParameterSource.ENVIRONMENT:
        raise BadValue(f"{param.envvar}={value}: {problem}")
    raise BadValue(click.BadParameter(problem, ctx, param).format_message())


def _import_app(spec: str) -> Any:
    """gunicorn's import of ``--app``, each way it fails said for what it is: the module
    not found (where it looks), a module the app imports missing, or no WSGI callable."""
    from gunicorn.errors import AppImportError
    from gunicorn.util import import_app

    module = spec.split(":", 1)[0]
    try:
        return import_app(spec)
    except ModuleNotFoundError as error:
        missing = error.name or ""
        if missing and missing != module and not module.startswith(f"{missing}."):
            raise BadValue(
                f"--app {spec}: {module} imports {missing!r}, which is not installed "
                f"(ModuleNotFoundError: {error})"
            ) from None
        problem: BaseException = error
    except AppImportError as error:
        if str(error) == "Application object must be callable.":
            name = spec.split(":", 1)[-1]
            found = getattr(sys.modules.get(module), name, None) if name.isidentifier() else None
            what = (
                ""
                if found is None
                else f" ({reprlib.repr(found)}, of type {type(found).__name__})"
            )
            raise BadValue(
                f"--app {spec}: {module} imported, but {name}{what} is not a WSGI callable; "
                "expected module:name of a WSGI app (a callable taking environ and "
                "start_response) or module:factory() returning one"
            ) from None
        problem = error
    except BaseException as error:  # gunicorn raises SystemExit-like errors, too
        problem = error
    raise BadValue(
        f"--app {spec}: could not import it ({type(problem).__name__}: {problem}); "
        "expected module:name or module:factory(), importable from the current directory "
        "(or --chdir DIR, --pythonpath DIRS)"
    )


def _import_paths(chdir: str | None, pythonpath: str | None) -> None:
    """Where ``--app`` imports from, set as gunicorn sets it
    (``Application.chdir``, then ``Application.run``): the directory it runs in first on
    sys.path, each ``--pythonpath`` entry before it. The console script's own sys.path
    starts at its bin directory, not here. Workers are forked from this process: they
    import from the same places."""
    from gunicorn.config import validate_chdir
    from gunicorn.errors import ConfigError as GunicornConfigError

    try:
        directory = validate_chdir(chdir or os.getcwd())  # gunicorn's: absolute, exists
    except GunicornConfigError as error:
        raise BadValue(f"--chdir {chdir}: {error}: no such directory") from None
    if not os.path.isdir(directory):
        raise BadValue(f"--chdir {chdir}: can't chdir to {chdir!r}: not a directory")
    os.chdir(directory)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    for entry in filter(None, (pythonpath or "").split(",")):
        path = os.path.abspath(entry)  # relative to --chdir, as gunicorn resolves it
        if not os.path.exists(path):
            raise BadValue(
                f"--pythonpath {pythonpath}: {entry!r} does not exist (from {directory}); "
                "expected directories separated by commas"
            )
        if path not in sys.path:
            sys.path.insert(0, path)


def _access_log(value: str) -> str | None:
    """gunicorn's ``accesslog`` for ``--access-log``: '-' (stdout, as gunicorn writes
    it), None for 'off', else a file opened here first, so a bad path is a usage error,
    not a master that dies at boot."""
    if value == "off":
        return None
    if value == "-":
        return value
    path = os.path.abspath(value)
    try:
        with open(path, "a"):
            pass
    except OSError as error:
        raise BadValue(
            f"--access-log {value}: cannot write it ({error.strerror}); "
            "expected -, off or a file path"
        ) from None
    return path


@main.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar=_env.CONFIG,
    help="YAML config file.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port",
    default=3000,
    show_default=True,
    type=IntRange(0, 65535),
    help="0: any free port (gunicorn logs which).",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=IntRange(1, 64),
    help="Worker processes (several share one state).",
)
@click.option(
    "--threads",
    type=IntRange(1, 1000),
    show_default="8 for gthread, 1 for sync",
    help="Threads per worker (a sync worker has one).",
)
@click.option(
    "--worker-class",
    default="gthread",
    show_default=True,
    type=click.Choice(["gthread", "sync"]),
    help="gthread: injected latency does not block other requests.",
)
@click.option(
    "--app",
    "app_spec",
    metavar="MODULE:APP",
    help="Wrap your WSGI app instead of the mock API (imported as gunicorn does: from the "
    "current directory).",
)
@click.option(
    "--chdir",
    metavar="DIR",
    help="Change to DIR before importing --app, as gunicorn's --chdir (--config and other "
    "paths stay relative to where you run the command).",
)
@click.option(
    "--pythonpath",
    metavar="DIRS",
    help="Comma-separated directories put first on sys.path (relative to --chdir), as "
    "gunicorn's --pythonpath.",
)
@click.option(
    "--upstream",
    metavar="URL",
    envvar=_env.UPSTREAM,
    help="Proxy mode: forward every request (but the management API) to this HTTP "
    "service, with chaos in front of it.",
)
@click.option(
    "--upstream-ca-certs",
    type=click.Path(dir_okay=False),
    envvar=_env.UPSTREAM_CA_CERTS,
    help="Proxy mode: verify an https:// --upstream with these CA certificates (PEM), "
    "for a private CA.",
)
@click.option(
    "--upstream-insecure",
    is_flag=True,
    help="Proxy mode: do not verify an https:// --upstream's certificate at all "
    f"(said in the startup line; {_env.UPSTREAM_INSECURE}=1).",
)
@click.option(
    "--certfile",
    type=click.Path(dir_okay=False),
    envvar=_env.CERTFILE,
    help="Serve HTTPS: the server's certificate (PEM, with its chain; gunicorn's "
    "--certfile), on every port it opens.",
)
@click.option(
    "--keyfile",
    type=click.Path(dir_okay=False),
    envvar=_env.KEYFILE,
    help="The private key of --certfile (PEM, unencrypted; gunicorn's --keyfile).",
)
@click.option(
    "--ca-certs",
    type=click.Path(dir_okay=False),
    envvar=_env.CA_CERTS,
    help="With --certfile: require a client certificate issued by these CAs (PEM; "
    "mutual TLS: gunicorn's --ca-certs with --cert-reqs 2).",
)
@click.option(
    "--admin-token",
    envvar=_env.ADMIN_TOKEN,
    help="Bearer token the management API requires for changes.",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    help=f"A Host name the management API answers to besides the loopback ones (repeat; "
    f"{_env.ALLOWED_HOSTS}, comma-separated); bound to another address, IP addresses "
    "too; * turns the Host check off.",
)
@click.option(
    "--allowed-origin",
    "allowed_origins",
    multiple=True,
    metavar="URL",
    help=f"A browser origin (https://host[:port]) allowed to call the management API "
    f"besides the server's own (repeat; {_env.ALLOWED_ORIGINS}, comma-separated).",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error", "critical"]),
    help="gunicorn's, and mockforge_wsgi's (one INFO line per injection).",
)
@click.option(
    "--access-log",
    "access_log",
    default="-",
    show_default=True,
    metavar="-|FILE|off",
    help="gunicorn's access log with the request id and the chaos annotation: "
    "- for stdout, a file, or off.",
)
@click.option(
    "--metrics", is_flag=True, help="Prometheus metrics at /metrics (the `metrics` extra)."
)
@click.option("--metrics-port", type=IntRange(1, 65535), help="Also serve /metrics on this port.")
@click.option(
    "--admin-port",
    type=IntRange(0, 65535),
    help="Also serve the management API (and /metrics, with --metrics) on this port, from "
    "the master process: injected delays and slow clients cannot occupy it (0: a free "
    "port, logged).",
)
@click.option("--recorder", is_flag=True, help="Record every request (SQLite).")
@click.option(
    "--recorder-db",
    type=click.Path(dir_okay=False),
    help="Recorder database (SQLite; turns --recorder on).  [default: mockforge-recorder.db]",
)
@click.option(
    "--tracing", is_flag=True, help="A span per request, chaos as span events (the `otel` extra)."
)
@click.option(
    "--otlp-endpoint",
    metavar="URL",
    help="OTLP/HTTP collector (turns --tracing on).  [default: http://localhost:4318]",
)
@click.option(
    "--jaeger-endpoint", metavar="URL", help="Alias of --otlp-endpoint (Jaeger speaks OTLP)."
)
@chaos_options
def serve(
    config_path: str | None,
    host: str,
    port: int,
    workers: int,
    threads: int | None,
    worker_class: str,
    app_spec: str | None,
    chdir: str | None,
    pythonpath: str | None,
    upstream: str | None,
    upstream_ca_certs: str | None,
    upstream_insecure: bool,
    certfile: str | None,
    keyfile: str | None,
    ca_certs: str | None,
    admin_token: str | None,
    allowed_hosts: tuple[str, ...],
    allowed_origins: tuple[str, ...],
    log_level: str,
    access_log: str,
    metrics: bool,
    metrics_port: int | None,
    admin_port: int | None,
    recorder: bool,
    recorder_db: str | None,
    tracing: bool,
    otlp_endpoint: str | None,
    jaeger_endpoint: str | None,
    **flags: Any,
) -> None:
    """Serve the mock API (or --app, or a proxy to --upstream) wrapped in chaos, under gunicorn.

    Precedence: flags > MOCKFORGE_CHAOS_* environment > --config YAML > defaults.
    """
    threads = _threads_for(worker_class, threads)
    if admin_token is not None and not admin_token.strip():
        # "$TOKEN" of an unset variable: a server with no token, thought protected.
        source = click.get_current_context().get_parameter_source("admin_token")
        if source is ParameterSource.ENVIRONMENT:
            given, fix = f"{_env.ADMIN_TOKEN}={admin_token!r}", f"unset {_env.ADMIN_TOKEN}"
        else:
            given, fix = f"--admin-token {admin_token!r}", "leave --admin-token out"
        raise BadValue(
            f"{given}: an empty token protects nothing; give the token, or {fix} for none"
        )
    _checked_url("upstream", upstream)
    if app_spec and upstream:
        raise click.UsageError("--app and --upstream: serve one of them, not both")
    tls = _served_tls(certfile, keyfile, ca_certs)  # paths made absolute before --chdir
    upstream_ca_certs, insecure = _upstream_tls(upstream, upstream_ca_certs, upstream_insecure)
    upstream_insecure = insecure is not None
    overrides, sources = _flag_overrides(flags)
    guard = _guard(host, allowed_hosts, allowed_origins)
    metrics = metrics or metrics_port is not None
    if recorder or recorder_db:
        from .recorder import Recorder, RecorderError

        recorder_db = os.path.abspath(recorder_db or "mockforge-recorder.db")
        try:
            Recorder(recorder_db)  # made here, so the workers need not fail to boot
        except RecorderError as error:
            raise BadValue(f"--recorder-db: {error}") from None
    _checked_url("otlp_endpoint", otlp_endpoint)
    _checked_url("jaeger_endpoint", jaeger_endpoint)
    if chdir and config_path:
        config_path = os.path.abspath(config_path)
    accesslog = _access_log(access_log)
    _import_paths(chdir, pythonpath)
    wrapped = _import_app(app_spec) if app_spec else None
    otlp_endpoint = otlp_endpoint or jaeger_endpoint
    if tracing or otlp_endpoint:
        otlp_endpoint = otlp_endpoint or "http://localhost:4318"
        _require("otel", "--tracing" if tracing else "--otlp-endpoint")
    try:
        middleware = create_app(
            config_path,
            overrides=overrides,
            override_sources=sources,
            wrap=wrapped,
            upstream=upstream,
            upstream_ca_certs=upstream_ca_certs,
            upstream_insecure=upstream_insecure,
            admin_token=admin_token,
            metrics=False,  # checked here; the workers build their own
            guard=guard,
            on_warning=_warn,  # said once, here
        )
    except ConfigError as error:
        raise BadValue(str(error)) from None
    except UnknownScenario as error:
        known = ", ".join(BUILTIN_SCENARIOS)
        raise BadValue(
            f"--chaos-scenario: {error} is not a scenario (built-in: {known})"
        ) from None
    ports = {"--port": port, "--admin-port": admin_port, "--metrics-port": metrics_port}
    asked: dict[int, str] = {}
    for flag, number in ports.items():
        if not number:  # unset, or 0: any free port
            continue
        if number in asked:
            raise BadValue(f"{flag} {number}: the same port as {asked[number]}")
        asked[number] = flag
        _check_port(host, number, flag)
    # chaos.state_at_start, applied once for the server, before forking (workers adopt).
    state_line = _state_start.start_server(middleware.engine)
    if admin_port is not None and not _env.text(_env.STORE):
        # The master answers management calls: the workers (even one) must share its
        # store, the embedded one of this server.
        os.environ[_env.STORE] = f"file://{server_store_directory(os.getpid())}"
    shared = _named_store()
    startup = middleware.engine.startup
    custom = middleware.engine.scenarios().values()
    timeout = worker_timeout(startup, custom)
    # gunicorn, and Flask with the admin listener, once the input is known to be good.
    from .gunicorn_server import (
        ACCESS_LOG_FORMAT,
        GunicornLogger,
        GunicornServer,
        child_exit,
        log_opened,
        run_all,
        serve_admin_port,
        serve_metrics_port,
    )

    held_warning = _all_threads_held(middleware.engine, workers, threads)
    if held_warning:
        _warn(held_warning)
    options: dict[str, Any] = {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": worker_class,
        "timeout": timeout,
        "loglevel": log_level,
        "logger_class": GunicornLogger,
        "accesslog": accesslog,
        "access_log_format": ACCESS_LOG_FORMAT,
        **tls,
    }
    if worker_class == "sync":
        # A sync worker sleeps through injected latency without beating its heartbeat:
        # the management API refuses a change that would hold a request past the
        # timeout (less a second of the worker's own work), saying why.
        os.environ[_env.MAX_HOLD_S] = str(timeout - 1)
    if os.path.isdir("/dev/shm"):
        # Heartbeats on a disk file can stall gthread's main loop, and with it the
        # hand-off of every keep-alive request: injected latency should be all there is.
        options["worker_tmp_dir"] = "/dev/shm"
    metrics_dir = _metrics_dir() if metrics else None
    options["child_exit"] = functools.partial(child_exit, shared, metrics_dir)
    url = _env.text(_env.STORE) or ""
    if url:
        store = f"store {url}"
    elif workers > 1:
        store = "one embedded store for all workers"
    else:
        store = "in-process store"
    serving = f"a proxy to {upstream}" if upstream else (app_spec or "the mock API")
    if insecure is not None:
        serving += f" (UPSTREAM CERTIFICATE NOT VERIFIED: {insecure})"
    elif upstream_ca_certs:
        serving += f" (its certificate verified with {upstream_ca_certs})"
    opened = [
        f"serving {serving} ({workers} {worker_class} worker(s), {store}, "
        f"chaos {'on' if startup.enabled else 'off'})",
        "management API {main}/api/chaos (dashboard {main}/api/chaos/ui)",
    ]
    if tls:
        clients = f", clients' certificates required ({ca_certs})" if ca_certs else ""
        opened.append(f"TLS certificate {tls['certfile']}{clients}")
    scheme = "https" if tls else "http"
    if metrics:
        on_port = f", {scheme}://{host}:{metrics_port}/metrics" if metrics_port is not None else ""
        opened.append(f"metrics {{main}}/metrics{on_port}")
    if recorder_db:
        opened.append(f"recorder database {recorder_db}")
    if otlp_endpoint:
        opened.append(f"tracing: spans over OTLP/HTTP to {traces_url(otlp_endpoint)}")
    if accesslog is not None:
        opened.append(f"access log {'stdout' if accesslog == '-' else accesslog}")
    opened.append(state_line)
    when_ready = []
    if metrics_port is not None:
        when_ready.append(functools.partial(serve_metrics_port, host, metrics_port))
    if admin_port is not None:
        engine = ScenarioEngine(
            startup, store=store_from_env(), custom=middleware.engine.state().custom
        )
        when_ready.append(
            functools.partial(
                serve_admin_port,
                host,
                admin_port,
                engine,
                admin_token,
                metrics_dir is not None,
                guard,
                opened,
            )
        )
    when_ready.append(functools.partial(log_opened, opened))
    options["when_ready"] = functools.partial(run_all, when_ready)

    def factory() -> Any:
        return create_app(
            config_path,
            overrides=overrides,
            override_sources=sources,
            wrap=_import_app(app_spec) if app_spec else None,
            upstream=upstream,
            upstream_ca_certs=upstream_ca_certs,
            upstream_insecure=upstream_insecure,
            admin_token=admin_token,
            metrics=metrics,
            recorder_db=recorder_db,
            otlp_endpoint=otlp_endpoint,
            guard=guard,
            on_warning=lambda warning: None,  # the master said it at start
        )

    if insecure is not None:
        _warn(
            f"{insecure}: the certificate of {upstream} is not verified; anyone "
            "between this proxy and it can read and change the traffic"
        )
    for warning in _exposure_warnings(host, guard, admin_token):
        click.echo(f"mockforge: WARNING: {warning}", err=True)
    try:
        GunicornServer(factory, options).run()
    finally:
        # The store this server's workers found (a later server's first worker would
        # remove it too; tidy now).
        with contextlib.suppress(StoreError):
            shutil.rmtree(server_store_directory(os.getpid()), ignore_errors=True)
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _given(name: str, value: str) -> GivenFile:
    """The file of option ``name`` as an absolute path (``--chdir`` changes directory
    later), and how the user gave it, for an error."""
    ctx = click.get_current_context()
    param = next(param for param in ctx.command.params if param.name == name)
    if ctx.get_parameter_source(name) is ParameterSource.ENVIRONMENT:
        shown = f"{param.envvar}={value}"
    else:
        shown = f"{param.opts[0]} {value}"
    return GivenFile(os.path.abspath(value), shown)


def _served_tls(certfile: str | None, keyfile: str | None, ca_certs: str | None) -> dict[str, Any]:
    """gunicorn's TLS options for ``--certfile``, ``--keyfile`` and ``--ca-certs``, each
    file checked here: a wrong one is a usage error, not workers that fail to boot."""
    if certfile is None:
        for name, value in (("keyfile", keyfile), ("ca_certs", ca_certs)):
            if value is not None:
                raise click.UsageError(
                    f"{_given(name, value).shown}: needs --certfile (the server's "
                    "certificate) to serve TLS"
                )
        return {}
    cert = _given("certfile", certfile)
    key = None if keyfile is None else _given("keyfile", keyfile)
    cas = None if ca_certs is None else _given("ca_certs", ca_certs)
    try:
        check_server_files(cert, key, cas)
    except TLSFileError as error:
        raise BadValue(str(error)) from None
    options: dict[str, Any] = {"certfile": cert.path, "keyfile": key and key.path}
    if cas is not None:
        # gunicorn loads ca_certs but asks clients for nothing unless cert_reqs says so.
        options.update(ca_certs=cas.path, cert_reqs=ssl.CERT_REQUIRED)
    return options


def _upstream_tls(
    upstream: str | None, ca_certs: str | None, insecure_flag: bool
) -> tuple[str | None, str | None]:
    """The CA file of ``--upstream-ca-certs`` (checked, absolute), and how the user asked
    for no verification (``--upstream-insecure``, or the variable; None: verify). Either
    without an https ``--upstream`` is a usage error, as are both together."""
    insecure = "--upstream-insecure" if insecure_flag else None
    try:  # the variable, read as every boolean variable is
        if insecure is None and _env.flag(_env.UPSTREAM_INSECURE):
            insecure = f"{_env.UPSTREAM_INSECURE}={_env.text(_env.UPSTREAM_INSECURE)}"
    except ValueError as error:
        raise BadValue(str(error)) from None
    if ca_certs is None and insecure is None:
        return None, None
    given = None if ca_certs is None else _given("upstream_ca_certs", ca_certs)
    shown = given.shown if given is not None else insecure
    if upstream is None or urlsplit(upstream).scheme != "https":
        what = f"--upstream {upstream}" if upstream else "no --upstream"
        raise click.UsageError(f"{shown}: applies to an https:// --upstream only, not {what}")
    if given is None:
        return None, insecure
    if insecure is not None:
        raise click.UsageError(f"{given.shown} and {insecure}: verify with that CA, or not at all")
    try:
        check_ca_file(given)
    except TLSFileError as error:
        raise BadValue(str(error)) from None
    return given.path, None


def _all_threads_held(engine: ScenarioEngine, workers: int, threads: int) -> str | None:
    """One line when the startup config (its scenario, the custom ones) can hold every
    thread of the server with injected chaos: max_active_faults unset, or not below
    workers x threads (docs/serving.md)."""
    state = engine.state()
    configs = [engine.startup, *(scenario.config for scenario in state.custom)]
    if engine.startup.scenario in engine.scenarios():
        configs.append(engine.scenarios()[engine.startup.scenario].config)
    most = most_held(configs)
    total = workers * threads
    if most == 0 or (most is not None and most < total):
        return None
    below = max(1, total * 3 // 4)  # a quarter left, as docs/serving.md sizes it
    return (
        f"injected chaos can hold all {total} threads ({workers} worker(s) x {threads}), "
        f"leaving none for real work: set max_active_faults below {total}, e.g. "
        f"--chaos-max-active-faults {below} (or chaos.max_active_faults in the YAML, "
        "MOCKFORGE_CHAOS_MAX_ACTIVE_FAULTS; docs/serving.md)"
    )


def _guard(host: str, hosts: tuple[str, ...], origins: tuple[str, ...]) -> BrowserGuard:
    """The management API's Host and Origin checks, for a server bound to ``host``: each
    list from its flags, else from its environment variable."""
    labels = {
        "allowed host:": "--allowed-host:" if hosts else f"{_env.ALLOWED_HOSTS}:",
        "allowed origin:": "--allowed-origin:" if origins else f"{_env.ALLOWED_ORIGINS}:",
    }
    try:
        return BrowserGuard(
            allowed_hosts=hosts or listed(_env.ALLOWED_HOSTS),
            allowed_origins=origins or listed(_env.ALLOWED_ORIGINS),
            bound=host,
        )
    except GuardError as error:
        problems = []
        for problem in error.problems:
            for label, source in labels.items():
                problem = problem.replace(label, source, 1)
            problems.append(problem)
        raise BadValue("; ".join(problems)) from None


def _exposure_warnings(host: str, guard: BrowserGuard, admin_token: str | None) -> list[str]:
    """What makes the management API drivable by others, said at startup."""
    warnings = []
    if guard.any_host:
        warnings.append(
            "--allowed-host '*': the Host check is off; a DNS-rebinding page in any "
            "browser that reaches this server can drive the management API"
        )
    if not is_loopback(host.strip("[]")) and not admin_token:
        warnings.append(
            f"bound to {host}, reachable by others, and no --admin-token: anyone who "
            "reaches the port can change the chaos"
        )
    return warnings


def _warn(warning: str) -> None:
    click.echo(f"mockforge: warning: {warning.removeprefix('mockforge: ')}", err=True)


def _metrics_dir() -> str:
    """An empty directory for prometheus_client's multiprocess mode, set before any
    worker imports it (workers are forked: they inherit the environment)."""
    # Looked up, not imported: prometheus_client picks its value class at import time,
    # which must come after the environment variable is set.
    _require("metrics", "--metrics")
    directory = tempfile.mkdtemp(suffix="-mockforge-metrics")
    os.environ[_env.PROMETHEUS_MULTIPROC_DIR] = directory
    os.environ[_env.METRICS] = "1"
    return directory


def _require(extra: str, flag: str) -> None:
    """An extra a flag needs, or one usage error naming the flag and the pip command."""
    try:
        require(extra, flag)
    except MissingExtra as error:
        raise BadValue(str(error)) from None


def _threads_for(worker_class: str, threads: int | None) -> int:
    """Threads per worker. gunicorn runs gthread workers whenever threads > 1, whatever
    the worker class says: so sync means one thread, and asking for more is an error."""
    if worker_class == "gthread":
        return 8 if threads is None else threads
    if threads is not None and threads > 1:
        raise click.UsageError(
            f"--threads {threads} with --worker-class sync: gunicorn would run gthread "
            "workers instead (it switches whenever threads > 1); a sync worker serves one "
            "request at a time. Use --worker-class gthread for threads."
        )
    return 1


def _named_store() -> Store | None:
    """The store MOCKFORGE_STORE names, for the master to give back a dead worker's
    slots at once. Without one, several workers share the embedded store of this server
    (they find it themselves; its rows expire with their worker)."""
    url = _env.text(_env.STORE)
    if not url:
        return None
    store = store_from_url(url)
    return None if isinstance(store, MemoryStore) else store


# -- client verbs ---------------------------------------------------------------------


def _request(server: ServerAddress, method: str, path: str, body: Any = None) -> Any:
    """One management call through the client; a refusal or an unreachable server is
    one line on stderr (with what to do) and exit status 1."""
    from .client import ChaosApiError, ChaosClient

    url, token = server
    client = ChaosClient(url, token=token)
    target = f"{method} {client.url}{client.prefix}{path}"
    try:
        return client.call(method, path, body)
    except ChaosApiError as error:
        fix = ""
        if error.status == 401:
            fix = f"; give the server's admin token with --token or {_env.ADMIN_TOKEN}"
        click.echo(f"{target}: {error}{fix}", err=True)
    except ValueError as error:  # an answer that is not JSON
        click.echo(f"{target}: not a mockforge answer ({error}); is --url {url} right?", err=True)
    except (OSError, http.client.HTTPException) as error:  # URLError, timeouts, resets
        reason = getattr(error, "reason", None) or error
        if isinstance(reason, ssl.SSLCertVerificationError):  # it answered: not trusted
            click.echo(
                f"cannot verify the certificate of {url} ({reason.verify_message}); trust "
                "it with SSL_CERT_FILE=cert.pem (the server's --certfile, or its CA)",
                err=True,
            )
        else:
            click.echo(
                f"cannot reach {url} ({reason}); start a server (mockforge serve) or give "
                "its address with --url",
                err=True,
            )
    sys.exit(1)


def _show(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


# (url, admin token) of the server a client verb talks to.
ServerAddress = tuple[str, "str | None"]


def server_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--url`` and ``--token`` (each also from the environment), passed as ``server``."""

    @click.option(
        "--url",
        default=DEFAULT_URL,
        show_default=True,
        envvar=_env.URL,
        help=f"The server [{_env.URL}].",
    )
    @click.option(
        "--token",
        envvar=_env.ADMIN_TOKEN,
        help=f"The server's admin token (--admin-token) [{_env.ADMIN_TOKEN}].",
    )
    @functools.wraps(command)
    def wrapper(url: str, token: str | None, **kwargs: Any) -> Any:
        _checked_url("url", url)
        return command((url, token), **kwargs)

    return wrapper


@main.group()
def chaos() -> None:
    """Drive a running server's chaos (--url, --token on each verb)."""


@chaos.command()
@server_options
def status(server: ServerAddress) -> None:
    """Enabled flag, active scenario, effective config, counters."""
    _show(_request(server, "GET", "/status"))


@chaos.command()
@server_options
def enable(server: ServerAddress) -> None:
    """Turn chaos on."""
    _show(_request(server, "POST", "/enable"))


@chaos.command()
@server_options
def disable(server: ServerAddress) -> None:
    """Turn chaos off."""
    _show(_request(server, "POST", "/disable"))


@chaos.command()
@server_options
def reset(server: ServerAddress) -> None:
    """Startup config back, scenario stopped, counters zeroed."""
    _show(_request(server, "POST", "/reset"))


@chaos.command()
@server_options
@click.argument("name")
@click.option("--duration", type=FloatRange(min=0, min_open=True), help="Seconds, then stop.")
@click.option("--ramp", type=FloatRange(min=0, min_open=True), help="Seconds to grow to full.")
def scenario(server: ServerAddress, name: str, duration: float | None, ramp: float | None) -> None:
    """Start scenario NAME now."""
    body = {k: v for k, v in (("duration_s", duration), ("ramp_s", ramp)) if v is not None}
    _show(_request(server, "POST", f"/scenarios/{name}", body))


@chaos.command()
@server_options
@click.option("--all", "everything", is_flag=True, help="Resume none of those it replaced.")
def stop(server: ServerAddress, everything: bool) -> None:
    """Stop the active scenario; the one it replaced (the startup one too) resumes."""
    _show(_request(server, "DELETE", "/scenarios?all=true" if everything else "/scenarios"))


@main.command()
@server_options
def scenarios(server: ServerAddress) -> None:
    """List the server's scenarios as a table."""
    answer = _request(server, "GET", "/scenarios")
    listed = answer.get("scenarios") if isinstance(answer, dict) else None
    if not listed or not all(isinstance(item, dict) for item in listed):
        click.echo(
            f"GET /scenarios: not a mockforge answer; is --url {server[0]} right?", err=True
        )
        sys.exit(1)
    width = max(len(s["name"]) for s in listed)
    click.echo(f"{'NAME':<{width}}  {'KIND':<15}  DESCRIPTION")
    for item in listed:
        click.echo(f"{item['name']:<{width}}  {item['kind']:<15}  {item['description']}")


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--with-env/--no-env",
    default=True,
    show_default=True,
    help="Also check MOCKFORGE_CHAOS_* variables, as a server would read them.",
)
def validate(file: str, with_env: bool) -> None:
    """Check a YAML config FILE (chaos, scenarios, routes); exit 1 listing every problem."""
    try:
        middleware = create_app(
            file, environ=None if with_env else {}, metrics=False, on_warning=_warn
        )
    except (ConfigError, UnknownScenario) as error:
        problems = error.problems if isinstance(error, ConfigError) else [f"scenario: {error}"]
        click.echo(str(ConfigError(problems)), err=True)
        sys.exit(1)
    config = middleware.engine.startup
    custom = len(load_scenarios(file))
    state = "enabled" if config.enabled else "disabled"
    click.echo(f"{file}: valid (chaos {state}, {custom} custom scenarios)")


@main.command()
@click.option(
    "--db",
    "db",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The recorder's SQLite file (mockforge serve --recorder-db).",
)
@click.option("--out", "out", default="report.html", show_default=True, type=click.Path())
@click.option("--since", type=FloatRange(0, 1e11), help="From this Unix time.")
@click.option("--until", type=FloatRange(0, 1e11), help="Up to this Unix time.")
@click.option("--path", "path_prefix", help="Only paths starting so.")
@click.option("--test-id", help="Only requests that sent this X-Mockforge-Test-Id.")
@click.option(
    "--window-s",
    type=FloatRange(0, 3600, min_open=True),
    default=DEFAULT_WINDOW_S,
    show_default=True,
    help="Attempts of one call are at most this far apart.",
)
def report(
    db: str,
    out: str,
    since: float | None,
    until: float | None,
    path_prefix: str | None,
    test_id: str | None,
    window_s: float,
) -> None:
    """Write the experiment report: one HTML file that opens offline."""
    from .recorder import Recorder
    from .report import render_report

    filters = {
        key: value
        for key, value in (
            ("since", since),
            ("until", until),
            ("path_prefix", path_prefix),
            ("test_id", test_id),
        )
        if value is not None
    }
    _check_recorder_db(db)
    rows = Recorder(db).attempts(filters, settle=False)  # the servers are done with it
    try:
        calls = Recorder(db).attempts({**filters, "direction": "outbound"}, settle=False)
        page = render_report(rows, window_s=window_s, outbound=calls)
        Path(out).write_text(page, encoding="utf-8")
    except OSError as error:
        raise click.ClickException(f"--out {out}: cannot write it ({error.strerror})") from None
    click.echo(f"{out}: {len(rows)} requests")


def _check_recorder_db(db: str) -> None:
    """A usage error unless ``db`` is a recorder's SQLite file (looked at read-only: the
    recorder would otherwise make its table in whatever file it is given)."""
    fix = "give the file of mockforge serve --recorder-db (default mockforge-recorder.db)"
    try:
        connection = sqlite3.connect(f"{Path(db).resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        finally:
            connection.close()
    except sqlite3.Error as error:
        problem = f"{db!r} is not a SQLite database ({error}); {fix}"
        raise BadValue(click.BadParameter(problem, param_hint="--db").format_message()) from None
    if "requests" not in tables:
        problem = f"{db!r} holds no recorded requests; {fix}"
        raise BadValue(click.BadParameter(problem, param_hint="--db").format_message())


# The gunicorn parts lived here: GunicornLogger and ACCESS_LOG_FORMAT stay importable
# from this module (``--logger-class mockforge_wsgi.cli.GunicornLogger`` keeps working),
# and the worker-exit hook under its old name; looked up when asked for, so that importing
# the CLI does not import gunicorn.
_MOVED = {
    "ACCESS_LOG_FORMAT": "ACCESS_LOG_FORMAT",
    "GunicornLogger": "GunicornLogger",
    "_child_exit": "child_exit",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        from . import gunicorn_server

        return getattr(gunicorn_server, _MOVED[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ACCESS_LOG_FORMAT", "GunicornLogger", "longest_delay_s", "main", "worker_timeout"]
