"""ChaosMiddleware: per request, decide one Plan, then apply it around the wrapped app."""

from __future__ import annotations

import functools
import logging
import operator
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, RequestRedirect

from . import _env, _gunicorn, _state_start, outbound
from ._answers import answer, answer_json
from ._headers import REQUEST_ID_HEADER, REQUEST_ID_KEY, new_request_id
from ._observe import observe
from ._sections import DEFAULT_PREFIX as DEFAULT_API_PREFIX
from .apply import Delivery, with_headers
from .config import ChaosConfig, CircuitBreakerConfig
from .decide import Decider, InvalidHeaders, StoreError
from .engine import ScenarioEngine
from .outcome import LATENCY, OUTCOME_KEY, Injection, Outcome
from .plan import NO_CHAOS, Plan
from .rate_limit import RateLimiter
from .request import WSGIRequest
from .scenarios import Scenario
from .state import Store, store_from_env
from .tracing import record_injections
from .tripwire import GUARD_TRIPPED

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from ._guard import BrowserGuard
    from .breaker import Circuit

__all__ = ["DEFAULT_EXEMPT_PATHS", "ChaosMiddleware", "route_resolver"]

log = logging.getLogger("mockforge_wsgi")

# The management API and metrics must stay reachable: a user can always turn chaos off.
DEFAULT_EXEMPT_PATHS = (DEFAULT_API_PREFIX, "/metrics")
# The outcome of a request that gets no chaos (shared: nothing is applied to it).
NOTHING_INJECTED = Outcome(NO_CHAOS, [])
_new = tuple.__new__
_TYPE_OF = operator.itemgetter(0)  # an Injection's type
WORKER_HEADER = "X-Mockforge-Worker"

RouteResolver = Callable[["WSGIEnvironment"], str]


class ChaosMiddleware:
    """Wrap a WSGI app and inject the chaos its config describes.

    Usage::

        app.wsgi_app = ChaosMiddleware(app.wsgi_app, config=load_config("chaos.yaml"))

    ``config`` is the startup config; the ``engine`` (a :class:`ScenarioEngine`) holds
    what management calls change, and each request reads the effective config once.
    ``rng`` defaults to ``random.Random(config.seed)``: with a seed, one process
    replays the same decisions for the same request sequence. ``store`` holds rate
    limit buckets, connection slots and the runtime state (default: the one
    ``MOCKFORGE_STORE`` names; else, under a server with several processes
    (``wsgi.multiprocess``), the embedded store all of that server's workers share,
    found on the first request; else this process's memory).
    ``route_for`` names a request's endpoint for per-endpoint limits; by default the
    route template of a wrapped Flask app, else the path. ``guard`` (a
    :class:`~mockforge_wsgi._guard.BrowserGuard`; default: ``MOCKFORGE_ALLOWED_HOSTS``,
    ``MOCKFORGE_ALLOWED_ORIGINS``) refuses cross-site management calls and rebound Hosts.
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        config: ChaosConfig | None = None,
        exempt_paths: Sequence[str] = DEFAULT_EXEMPT_PATHS,
        rng: random.Random | None = None,
        store: Store | None = None,
        route_for: RouteResolver | None = None,
        engine: ScenarioEngine | None = None,
        scenarios: Iterable[Scenario] = (),
        api_prefix: str | None = DEFAULT_API_PREFIX,
        admin_token: str | None = None,
        protect_reads: bool = False,
        debug_headers: bool | None = None,
        guard: BrowserGuard | None = None,
    ) -> None:
        self.app = app
        startup = config if config is not None else ChaosConfig()
        # Prefixes matched on whole path segments: "/api/chaos" exempts "/api/chaos/x",
        # not "/api/chaosmonkey".
        self.exempt_paths = tuple(path.rstrip("/") for path in exempt_paths)
        self._exempt_exact = frozenset(self.exempt_paths)
        self._exempt_below = tuple(prefix + "/" for prefix in self.exempt_paths)
        admin_token = admin_token or _env.text(_env.ADMIN_TOKEN)
        # Named by the caller or MOCKFORGE_STORE: used as given. Else chosen on the first
        # request of each process, when the server says whether it runs several.
        store_named = engine is not None or store is not None or bool(_env.text(_env.STORE))
        max_keys = startup.rate_limit.max_tracked_keys
        self._server_checked = False
        self._server_lock = threading.Lock()
        self._engine_ours = engine is None
        # Built by a gunicorn worker (or its master, --preload): its configured worker
        # count is this worker's share of the limits until the store says how many live.
        loaded = _gunicorn.loaded_by_gunicorn()
        if engine is None:
            if store is None:
                store = store_from_env(max_keys=max_keys)
            # A store others may share: chaos.state_at_start says whether to adopt
            # its state, on the first read (a worker knows its server by then).
            start = _state_start.start_mode(store, startup.state_at_start)
            engine = ScenarioEngine(startup, store=store, custom=scenarios, start=start)
        self.engine = engine
        # The decide step (decide.py): rules, header control, breaker, limiter, slots,
        # bulkheads, patterns, plugins, the server's store, the fail-open boundary.
        self.decider = Decider(
            engine,
            config=startup,
            rng=rng,
            admin_token=admin_token,
            store_named=store_named,
            max_keys=max_keys,
            workers=1 if loaded is None else loaded.workers,
        )
        # The app's own calls: this engine's chaos.outbound; those made while serving a
        # request carry its test id and request id (outbound.CALLER).
        self._carries = startup.outbound.enabled
        if startup.outbound.enabled:
            outbound.install()
            outbound.serve(engine)
        # The guard (chaos.guard) counts the app's own answers while a bound over its
        # window is set; the config it was last looked up for, and the answer.
        self.tripwire = engine.tripwire
        self.tripwire.on_error = self.decider.internal_error
        self._guard_for: ChaosConfig | None = None
        self._watching = False
        # The environ is read as a Request only where the decision asks (decide_lazily).
        self._decide = self.decider.decide_lazily
        self._request_of = self._wsgi_request
        self.route_for = route_for if route_for is not None else route_resolver(app)
        # X-Mockforge-Worker: <pid> on every response with chaos: which worker decided.
        if debug_headers is None:
            debug_headers = _env.flag(_env.DEBUG_HEADERS)
        self.debug_headers = debug_headers
        # The management API answers under its prefix before any chaos is considered.
        self.management: WSGIApplication | None = None
        self._api_root = (api_prefix or "").rstrip("/")
        self._api_below = self._api_root + "/"
        if api_prefix:
            # Flask is imported here, where the API is mounted: the chaos core (decide,
            # apply) does not need it, and api_prefix=None keeps it out of the process.
            # The app itself is built at the first management call.
            from .api import LazyManagementApp

            self.management = LazyManagementApp(
                engine,
                prefix=self._api_root,
                admin_token=admin_token,
                protect_reads=protect_reads,
                guard=guard,
            )
        if loaded is not None and loaded.in_worker:
            self._started_in_worker(loaded)

    def _started_in_worker(self, loaded: _gunicorn.Loaded) -> None:
        """A gunicorn worker, after fork, before its first request: the store of its
        server chosen now, as its first request would (gunicorn says ``wsgi.multiprocess``
        when it runs more than one worker), and the state read, so the guard's watcher
        runs from the start: an idle worker still turns chaos off at max_duration_s."""
        try:
            self._check_server(
                {"wsgi.multiprocess": loaded.workers > 1, "SERVER_SOFTWARE": "gunicorn/"}
            )
            self.engine.watch_from_start()
        except Exception:
            self.decider.internal_error("starting in a gunicorn worker")

    def attach_recorder(
        self, recorder: Any
    ) -> tuple[Callable[[], str | None], Callable[[str], bool]]:
        """Serve verdicts and the report (``/verdicts``, ``/report``) from ``recorder``;
        called by a RecorderMiddleware around this one. Returns how it reads the active
        scenario's name for each row, and which paths are management calls (not the
        client's requests: not recorded)."""
        extensions = getattr(self.management, "extensions", None)
        if extensions is not None:
            extensions["mockforge_recorder"] = recorder
        record_event = getattr(recorder, "record_event", None)
        if record_event is not None:  # a guard's trip, seen by this process, is recorded
            self.engine.trip_listeners.append(
                lambda trip: record_event(GUARD_TRIPPED, trip["at"], trip)
            )
        return self.engine.active_scenario_now, self._is_api

    @property
    def config(self) -> ChaosConfig:
        """The effective config now (the active scenario's, or the runtime one)."""
        return self.engine.effective()

    @config.setter
    def config(self, config: ChaosConfig) -> None:
        self.engine.set_config(config)

    # The decider's state, read here as before it moved to decide.py.
    @property
    def store(self) -> Store:
        """Where the runtime state, limits and slots live (the server's once joined)."""
        return self.decider.store

    @property
    def limiter(self) -> RateLimiter:
        return self.decider.limiter

    @property
    def rng(self) -> random.Random:
        return self.decider.rng

    @property
    def internal_errors(self) -> int:
        """Our own failures so far, each served unharmed (decide.py's boundary)."""
        return self.decider.internal_errors

    @property
    def store_errors(self) -> int:
        """Calls the store could not answer so far (the decision's, served without it or
        at this worker's share; the engine's reads of the state)."""
        return self.decider.store_errors + self.engine.store_errors

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Management or exempt -> decide one Plan -> report it -> apply it."""
        if self._carries and outbound.CALLER.get() is not environ:
            return self._carrying(environ, start_response)
        if not self._server_checked:
            self._check_server(environ)
        path = environ.get("PATH_INFO", "")
        if path.startswith(self._api_root) and self._is_api(path):
            return self.management(environ, start_response)  # type: ignore[misc]
        try:
            config = self.engine.config_now()
        except Exception:
            self.decider.internal_error("reading the chaos state")
            return self.app(environ, start_response)
        if not config.enabled or path in self._exempt_exact or path.startswith(self._exempt_below):
            return self.app(environ, start_response)
        if config is not self._guard_for:  # one comparison while the config stands
            self._guard_for = config
            self._watching = config.guard.watches_answers
        app = self._watched if self._watching else self.app
        started = time.monotonic()
        try:  # fails open inside: only the errors meant for the client come out
            plan, config = self._decide(config, environ, self._request_of, started)
        except InvalidHeaders as error:
            return _render_bad_headers(start_response, error.problems)
        except StoreError:  # on_store_error: closed
            return _render_store_down(start_response)
        if plan is NO_CHAOS:
            environ[OUTCOME_KEY] = NOTHING_INJECTED
            return app(environ, start_response)
        outcome = environ[OUTCOME_KEY] = _new(Outcome, (plan, []))
        request_id = environ.get(REQUEST_ID_KEY) or environ.setdefault(
            REQUEST_ID_KEY, new_request_id()
        )
        if plan.admitted_only:  # admitted by the limiter, nothing else: its headers only
            limits = config.rate_limit
            verdict = plan.rate_limit
            headers = verdict.headers(limits.headers) if limits.expose_headers else []  # type: ignore[union-attr]
            headers.append((REQUEST_ID_HEADER, request_id))
            if self.debug_headers:
                headers.append((WORKER_HEADER, str(os.getpid())))
            return app(environ, with_headers(start_response, headers))
        headers = self._response_headers(plan, config, request_id)
        self._report(environ, request_id, plan.delay_ms, plan.injections())
        circuit = plan.circuit
        if circuit is not None and not plan.circuit_open:  # its answer counts for the breaker
            deliver = functools.partial(self._deliver, app, outcome, config, headers, started)
            done = functools.partial(self._circuit_answered, circuit, config.circuit_breaker)
            return observe(deliver, environ, start_response, done, whole=True)
        return self._deliver(app, outcome, config, headers, started, environ, start_response)

    def _watched(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """The app, its answer counted for the guard's window: an error (5xx, or it
        raised before answering) or not, and its own time to the status line (injected
        delays come before it and are not in it; answers chaos gives instead of the app
        never get here)."""
        started = time.perf_counter()
        record = self.tripwire.record
        answered = [False]

        def start_seen(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if not answered[0]:
                answered[0] = True
                record(status[:1] == "5", time.perf_counter() - started)
            return start_response(status, headers, exc_info)

        try:
            return self.app(environ, start_seen)
        except BaseException:
            if not answered[0]:
                answered[0] = True
                record(True, time.perf_counter() - started)
            raise

    def _carrying(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        """This request served with ``environ`` as the thread's outbound caller: the
        app's calls made meanwhile carry its test id (a body streamed after this returns
        is not covered)."""
        token = outbound.CALLER.set(environ)
        try:
            return self(environ, start_response)
        finally:
            outbound.CALLER.reset(token)

    def _deliver(
        self,
        app: WSGIApplication,
        outcome: Outcome,
        config: ChaosConfig,
        headers: list[tuple[str, str]],
        started: float,
        environ: WSGIEnvironment,
        start_response: StartResponse,
    ) -> Iterable[bytes]:
        plugged = outcome.plan.plugged
        return Delivery(
            app if plugged is None else self._wrapped(app, plugged),
            outcome,
            config.fault_injection,
            environ,
            start_response,
            headers,
            started,
            self.decider.releaser(outcome.plan),
            self._report_found,
            self.engine,
        )()

    def _circuit_answered(
        self,
        circuit: Circuit,
        breaker: CircuitBreakerConfig,
        environ: WSGIEnvironment,
        status: str,
        seconds: float,
    ) -> None:
        """The breaker counts what the client got (observe's callback, once closed)."""
        self.decider.answered(circuit, breaker, status)

    def _wsgi_request(self, environ: WSGIEnvironment) -> WSGIRequest:
        """The decision core's view of this request (built only when it reads one)."""
        request: WSGIRequest = _new(WSGIRequest, (environ, self.route_for))
        return request

    def _response_headers(
        self, plan: Plan, config: ChaosConfig, request_id: str
    ) -> list[tuple[str, str]]:
        """What every answer with chaos carries: the annotation, RateLimit-* when
        exposed, the request id, and the worker's pid with debug headers on."""
        limits = config.rate_limit
        headers = plan.response_headers(limits.expose_headers, limits.headers)
        headers.append((REQUEST_ID_HEADER, request_id))
        if self.debug_headers:  # the pid at request time: workers fork after __init__
            headers.append((WORKER_HEADER, str(os.getpid())))
        return headers

    def _check_server(self, environ: WSGIEnvironment) -> None:
        """Once per process: under a server with several processes, one state for all.

        A forked worker runs this on its first request (also when the app was built in
        the master, as ``--preload`` does), so the state follows the server, not a hook.
        """
        with self._server_lock:
            if self._server_checked:
                return
            try:
                if self._engine_ours and _state_start.worker_of_a_master(environ):
                    self.engine.server = _state_start.server_name(multiprocess=True)
                if environ.get("wsgi.multiprocess"):
                    self.decider.use_server_store()
                if self._engine_ours:
                    self.engine.poll_while_idle()  # on Redis: read while no request comes
            finally:
                # Set last: a thread that saw False waits on the lock, then uses the
                # store chosen here (a management call must not land in the old one).
                self._server_checked = True

    def _is_api(self, path: str) -> bool:
        return self.management is not None and (
            path == self._api_root or path.startswith(self._api_below)
        )

    def _wrapped(
        self, inner: WSGIApplication, plugged: tuple[tuple[Any, Any], ...]
    ) -> WSGIApplication:
        """The app inside each plugin's wrapper, the first plugin outermost; a plugin
        that fails to wrap is left out (counted, logged), as our own failures are."""
        app = inner
        try:
            for plugin, decision in reversed(plugged):
                app = plugin.wrap(decision, app)
        except Exception:
            self.decider.internal_error("a plugin's wrap()")
            return inner
        return app

    def _report(
        self,
        environ: WSGIEnvironment,
        request_id: str,
        delay_ms: float | None,
        found: list[Injection],
    ) -> None:
        """Count, trace and log what a request gets (at decide) or got (found at apply).
        Our failure to tell never changes what the client gets."""
        if not found:
            return
        try:
            self.decider.store.count(list(map(_TYPE_OF, found)))
            record_injections(found, request_id, delay_ms)
        except Exception:
            self.decider.internal_error("reporting an injection")
        if log.isEnabledFor(logging.INFO):
            for kind, detail in found:
                delay = f" delay_ms={delay_ms:.0f}" if kind == LATENCY and delay_ms else ""
                log.info(
                    "chaos injected request_id=%s type=%s detail=%s method=%s path=%s%s",
                    request_id,
                    kind,
                    detail,
                    environ.get("REQUEST_METHOD"),
                    environ.get("PATH_INFO"),
                    delay,
                )

    def _report_found(self, environ: WSGIEnvironment, found: list[Injection]) -> None:
        """What applying found, told as what was decided is (at close)."""
        self._report(environ, environ.get(REQUEST_ID_KEY, ""), None, found)


def _render_bad_headers(start_response: StartResponse, problems: list[str]) -> Iterable[bytes]:
    """A chaos request header we cannot honour: say which, change nothing."""
    return answer_json(
        start_response, 400, {"error": "invalid chaos headers", "problems": problems}
    )


def _render_store_down(start_response: StartResponse) -> Iterable[bytes]:
    """on_store_error: closed. Not chaos: the store we need is gone, and we say so."""
    body = b'{"error":"chaos store unreachable","injected_by":"mockforge"}'
    headers = [("X-Mockforge-Chaos", "store=unreachable")]
    return answer(start_response, 503, body, headers=headers)


def route_resolver(app: Any) -> RouteResolver:
    """The endpoint key for a request: the route template where the app exposes a
    werkzeug URL map (Flask: ``app.wsgi_app`` is bound to the Flask app), else the path."""
    url_map = getattr(getattr(app, "__self__", None), "url_map", None)
    if url_map is None:
        url_map = getattr(app, "url_map", None)
    if not isinstance(url_map, Map):
        return _path_of
    return functools.partial(_route_in, url_map)


def _path_of(environ: WSGIEnvironment) -> str:
    return str(environ.get("PATH_INFO") or "/")


def _route_in(url_map: Map, environ: WSGIEnvironment) -> str:
    try:
        rule, _ = url_map.bind_to_environ(environ).match(return_rule=True)
    except (HTTPException, RequestRedirect):
        return _path_of(environ)
    return str(rule.rule)
