"""ChaosMiddleware: per request, decide one Plan, then apply it around the wrapped app."""

from __future__ import annotations

import contextlib
import functools
import logging
import operator
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, RequestRedirect

from . import _env, header_control
from ._answers import answer, answer_json
from ._headers import REQUEST_ID_HEADER, REQUEST_ID_KEY, new_request_id
from ._observe import observe
from ._sections import DEFAULT_PREFIX as DEFAULT_API_PREFIX
from .apply import Delivery, with_headers
from .breaker import GLOBAL, OPEN, Circuit, admit, failed
from .breaker import record as breaker_record
from .bulkhead import Bulkhead, pool_name
from .config import PLUGINS, ChaosConfig, CircuitBreakerConfig, apply_rule
from .engine import ScenarioEngine
from .outcome import LATENCY, OUTCOME_KEY, Injection, Outcome
from .patterns import PATTERN_COUNTER, script_counter
from .plan import NO_CHAOS, Plan, decide_plan
from .rate_limit import RateLimiter, client_ip
from .rules import Rule
from .scenarios import Scenario
from .state import MemoryStore, Store, StoreError, store_from_env
from .state.base import CONNECTION_SLOTS
from .state.server_store import server_store
from .tracing import record_injections

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from ._guard import BrowserGuard

__all__ = ["DEFAULT_EXEMPT_PATHS", "ChaosMiddleware", "route_resolver"]

log = logging.getLogger("mockforge_wsgi")

# The management API and metrics must stay reachable: a user can always turn chaos off.
DEFAULT_EXEMPT_PATHS = (DEFAULT_API_PREFIX, "/metrics")
SEQUENCE_COUNTER = "sequence"  # numbers requests for per-request generators (with a seed)
# The outcome of a request that gets no chaos (shared: nothing is applied to it).
NOTHING_INJECTED = Outcome(NO_CHAOS, [])
_new = tuple.__new__
_TYPE_OF = operator.itemgetter(0)  # an Injection's type
WORKER_HEADER = "X-Mockforge-Worker"

ERROR_LOG_INTERVAL_S = 60.0

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
        self.rng = rng if rng is not None else random.Random(startup.seed)
        self._explicit_rng = rng is not None
        self._admin_token = admin_token or _env.text(_env.ADMIN_TOKEN)
        # Named by the caller or MOCKFORGE_STORE: used as given. Else chosen on the first
        # request of each process, when the server says whether it runs several.
        self._store_named = engine is not None or store is not None or bool(_env.text(_env.STORE))
        self._max_keys = startup.rate_limit.max_tracked_keys
        self._server_checked = False
        self._server_lock = threading.Lock()
        if engine is None:
            if store is None:
                store = store_from_env(max_keys=self._max_keys)
            engine = ScenarioEngine(startup, store=store, custom=scenarios)
        self.engine = engine
        self.store = engine.store
        self.limiter = RateLimiter(self.store)
        self.route_for = route_for if route_for is not None else route_resolver(app)
        self.internal_errors = 0
        self._quiet_until = 0.0  # our own errors are logged at most once a minute
        # X-Mockforge-Worker: <pid> on every response with chaos: which worker decided.
        if debug_headers is None:
            debug_headers = _env.flag(_env.DEBUG_HEADERS)
        self.debug_headers = debug_headers
        self._rule_configs: tuple[ChaosConfig, list[ChaosConfig]] | None = None
        # The management API answers under its prefix before any chaos is considered.
        self.management: WSGIApplication | None = None
        self._api_root = (api_prefix or "").rstrip("/")
        self._api_below = self._api_root + "/"
        if api_prefix:
            # Flask is imported here, where the API is mounted: the chaos core (decide,
            # apply) does not need it, and api_prefix=None keeps it out of the process.
            from .api import create_management_app

            self.management = create_management_app(
                engine,
                prefix=self._api_root,
                admin_token=admin_token,
                protect_reads=protect_reads,
                guard=guard,
            )

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
        return self.engine.active_scenario_now, self._is_api

    @property
    def config(self) -> ChaosConfig:
        """The effective config now (the active scenario's, or the runtime one)."""
        return self.engine.effective()

    @config.setter
    def config(self, config: ChaosConfig) -> None:
        self.engine.set_config(config)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Management or exempt -> decide one Plan -> report it -> apply it."""
        if not self._server_checked:
            self._check_server(environ)
        path = environ.get("PATH_INFO", "")
        if path.startswith(self._api_root) and self._is_api(path):
            return self.management(environ, start_response)  # type: ignore[misc]
        try:
            config = self.engine.config_now()
        except Exception:
            self._internal_error("reading the chaos state")
            return self.app(environ, start_response)
        if not config.enabled or self._is_exempt(path):
            return self.app(environ, start_response)
        started = time.monotonic()
        try:  # the fail-open boundary: every call that reaches the store is inside it
            rule = None
            if config.rules:
                config, rule = self._config_for(config, environ)
            plan = self._decide(config, environ, started, rule)
        except header_control.InvalidHeaders as error:
            return _render_bad_headers(start_response, error.problems)
        except StoreError:
            if config.on_store_error == "closed":
                return _render_store_down(start_response)
            self._internal_error("reaching the store")
            plan = NO_CHAOS
        except Exception:
            self._internal_error("deciding")
            plan = NO_CHAOS
        if plan is NO_CHAOS:
            environ[OUTCOME_KEY] = NOTHING_INJECTED
            return self.app(environ, start_response)
        outcome = environ[OUTCOME_KEY] = _new(Outcome, (plan, []))
        request_id = environ.get(REQUEST_ID_KEY) or environ.setdefault(
            REQUEST_ID_KEY, new_request_id()
        )
        headers = self._response_headers(plan, config, request_id)
        if plan.admitted_only:  # admitted by the limiter, nothing else: its headers only
            return self.app(environ, with_headers(start_response, headers))
        self._report(environ, request_id, plan.delay_ms, plan.injections())
        circuit = plan.circuit
        if circuit is not None and not plan.circuit_open:  # its answer counts for the breaker
            deliver = functools.partial(self._deliver, outcome, config, headers, started)
            done = functools.partial(self._circuit_answered, circuit, config.circuit_breaker)
            return observe(deliver, environ, start_response, done, whole=True)
        return self._deliver(outcome, config, headers, started, environ, start_response)

    def _deliver(
        self,
        outcome: Outcome,
        config: ChaosConfig,
        headers: list[tuple[str, str]],
        started: float,
        environ: WSGIEnvironment,
        start_response: StartResponse,
    ) -> Iterable[bytes]:
        plugged = outcome.plan.plugged
        return Delivery(
            self.app if plugged is None else self._wrapped(plugged),
            outcome,
            config.fault_injection,
            environ,
            start_response,
            headers,
            started,
            self._releaser(outcome.plan),
            self._report_found,
            self.engine,
        )()

    def _releaser(self, plan: Plan) -> Callable[[], None] | None:
        """What gives back the places the plan holds (a connection slot, a bulkhead's),
        or None when it holds none."""
        bulkhead = plan.bulkhead
        if bulkhead is None or not bulkhead.held:
            return functools.partial(self._release_slot, self.store) if plan.slot else None
        return functools.partial(self._release_places, self.store, bool(plan.slot), bulkhead.pool)

    def _release_places(self, store: Store, slot: bool, pool: str) -> None:
        try:
            store.release_slot(pool)
        except Exception:
            self._internal_error("releasing a place in a bulkhead")
        if slot:
            self._release_slot(store)

    def _circuit_answered(
        self,
        circuit: Circuit,
        breaker: CircuitBreakerConfig,
        environ: WSGIEnvironment,
        status: str,
        seconds: float,
    ) -> None:
        """The breaker counts what the client got: 5xx or no whole answer is a failure."""
        try:
            change = breaker_record(self.store, circuit, breaker, time.time(), failed(status))
        except Exception:
            self._internal_error("counting an answer for the circuit breaker")
            return
        if change is not None:
            log.warning("mockforge: circuit breaker %s %s", circuit.owner, change)

    def _response_headers(
        self, plan: Plan, config: ChaosConfig, request_id: str
    ) -> list[tuple[str, str]]:
        """What every answer with chaos carries: the annotation, RateLimit-* when
        exposed, the request id, and the worker's pid with debug headers on."""
        headers = plan.response_headers(config.rate_limit.expose_headers)
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
                self._join_server_store(environ)
            finally:
                # Set last: a thread that saw False waits on the lock, then uses the
                # store chosen here (a management call must not land in the old one).
                self._server_checked = True

    def _join_server_store(self, environ: WSGIEnvironment) -> None:
        if not environ.get("wsgi.multiprocess"):
            return
        if self._store_named:
            if isinstance(self.store, MemoryStore):
                log.warning(
                    "mockforge: this server runs several processes, but the chaos state "
                    "was set to per-process memory: a management call reaches only the "
                    "worker that answers it, and each worker enforces its own rate "
                    "limits. Leave MOCKFORGE_STORE unset (or use file:// or redis://) "
                    "for one state for the whole server."
                )
            return
        try:
            store = server_store(max_keys=self._max_keys)
        except StoreError as error:
            log.error(
                "mockforge: cannot open the store this server's workers share (%s); "
                "this worker keeps its own chaos state (management calls and limits "
                "apply per worker)",
                error,
            )
            return
        self.engine.attach(store)
        self.store = store
        self.limiter = RateLimiter(store)

    def _is_api(self, path: str) -> bool:
        return self.management is not None and (
            path == self._api_root or path.startswith(self._api_below)
        )

    def _is_exempt(self, path: str) -> bool:
        return path in self._exempt_exact or path.startswith(self._exempt_below)

    def _config_for(
        self, config: ChaosConfig, environ: WSGIEnvironment
    ) -> tuple[ChaosConfig, tuple[int, Rule] | None]:
        """The first matching rule's config, index and rule, or the global config and
        None (conditional chaos)."""
        cached = self._rule_configs
        if cached is None or cached[0] is not config:
            cached = self._rule_configs = (config, [apply_rule(config, r) for r in config.rules])
        for index, (rule, rule_config) in enumerate(zip(config.rules, cached[1], strict=True)):
            if rule.match.matches(environ, self.route_for):
                return rule_config, (index, rule)
        return config, None

    def _decide(
        self,
        config: ChaosConfig,
        environ: WSGIEnvironment,
        now: float,
        rule: tuple[int, Rule] | None = None,
    ) -> Plan:
        """The request's Plan, admission included (the circuit breaker, the rate limit, a
        connection slot). ``rule``: the matching rule and its index (``config`` is
        already its config)."""
        if config.header_control.enabled and header_control.requested(environ, self._admin_token):
            return header_control.decide_from_headers(environ, config.header_control, self.rng)
        circuit = None
        if config.circuit_breaker.enabled:  # first: an open breaker answers before the rest
            own = rule is not None and rule[1].has_section("circuit_breaker")
            owner = str(rule[0]) if own and rule is not None else GLOBAL
            circuit = admit(self.store, owner, config.circuit_breaker, time.time())
            if circuit.state == OPEN:
                return Plan(circuit=circuit)
        rng = self.rng
        if config.seed is not None and not self._explicit_rng:
            # Request n draws from (seed, n), n numbered in the store: the same sequence
            # of requests gets the same decisions, whichever worker serves each.
            rng = random.Random(f"{config.seed}:{self.store.incr(SEQUENCE_COUNTER)}")
        faults = config.fault_injection
        number = since_change = step = None
        if faults.enabled and faults.script:  # step n of this rule's (or the global) script
            own = rule is not None and rule[1].sets("fault_injection", "script")
            step = self.store.incr(script_counter(rule[0] if own and rule is not None else None))
        if faults.enabled and faults.pattern is not None:
            if faults.pattern.timed:  # fail for a while, in bursts: timed from the change
                since_change = self.engine.since_change()
            else:  # the first n, every nth, a sequence: numbered in the store
                number = self.store.incr(PATTERN_COUNTER)
        limits = config.rate_limit
        verdict = None
        if limits.enabled:
            client = client_ip(environ, limits.trusted_proxies) if limits.per_ip else ""
            endpoint = self.route_for(environ) if limits.per_endpoint else ""
            try:
                verdict = self.limiter.check(limits, client, endpoint, now)
            except StoreError:
                if config.on_store_error == "closed":
                    raise
                self._internal_error("reaching the rate-limit store")
        head = environ.get("REQUEST_METHOD") == "HEAD"
        plan = decide_plan(
            config, rng, verdict, number, head=head, since_change_s=since_change, script_step=step
        )
        if circuit is not None:  # let through: the answer is counted (closed or a probe)
            plan = plan._replace(circuit=circuit)
        if PLUGINS and not plan.refused and plan.fault is None:  # the app will answer
            plugged = self._plugins_decide(config, rng)
            if plugged:
                plan = plan._replace(plugged=plugged)
        # Last: nothing after a place is taken may fail (it would never be given back).
        if plan.shaping is not None and plan.needs_slot:
            plan = self._take_slot(plan, config)
        if config.bulkhead.enabled and plan.slot is not False and not plan.refused:
            dropped = plan.shaping is not None and plan.shaping.drop
            if not dropped:
                own = rule is not None and rule[1].has_section("bulkhead")
                owner = str(rule[0]) if own and rule is not None else GLOBAL
                plan = self._take_bulkhead(plan, config, owner)
        return plan

    def _plugins_decide(
        self, config: ChaosConfig, rng: random.Random
    ) -> tuple[tuple[Any, Any], ...] | None:
        """Each enabled plugin's decision (plugins.py), from the same generator."""
        found = []
        for plugin in PLUGINS:
            settings = getattr(config.plugins, plugin.name)
            if settings.enabled:
                decision = plugin.decide(settings, rng)
                if decision is not None:
                    found.append((plugin, decision))
        return tuple(found) or None

    def _wrapped(self, plugged: tuple[tuple[Any, Any], ...]) -> WSGIApplication:
        """The app inside each plugin's wrapper, the first plugin outermost; a plugin
        that fails to wrap is left out (counted, logged), as our own failures are."""
        app = self.app
        try:
            for plugin, decision in reversed(plugged):
                app = plugin.wrap(decision, app)
        except Exception:
            self._internal_error("a plugin's wrap()")
            return self.app
        return app

    def _take_bulkhead(self, plan: Plan, config: ChaosConfig, owner: str) -> Plan:
        """Wait (up to its queue timeout) for a place in the bulkhead: held, or none came
        (then nothing else of the plan is applied, and a connection slot it holds goes
        back at once)."""
        bulkhead = config.bulkhead
        try:
            held = self.store.acquire_slot(
                pool_name(owner), bulkhead.max_concurrent, bulkhead.queue_timeout_ms / 1000.0
            )
        except StoreError:
            if config.on_store_error == "closed":
                if plan.slot:
                    self._release_slot(self.store)
                raise
            self._internal_error("taking a place in a bulkhead")
            return plan  # served without the cap
        place = Bulkhead(owner, held, bulkhead.status, bulkhead.retry_after_s)
        if held:
            return plan._replace(bulkhead=place)
        if plan.slot:
            self._release_slot(self.store)
        # The breaker's say rides along: a half-open probe refused here must still be
        # counted (this 503 is an answer like any other), or the breaker would wait on it.
        return Plan(rate_limit=plan.rate_limit, circuit=plan.circuit, bulkhead=place)

    def _take_slot(self, plan: Plan, config: ChaosConfig) -> Plan:
        """Wait (up to the queue timeout) for a connection slot: held, or none free (then
        nothing else of the plan is applied: the client gets 503)."""
        shaping = plan.shaping
        assert shaping is not None
        try:
            admitted = self.store.acquire_slot(
                CONNECTION_SLOTS, shaping.max_connections, shaping.queue_timeout_ms / 1000.0
            )
        except StoreError:
            if config.on_store_error == "closed":
                raise
            self._internal_error("taking a connection slot")
            return plan  # served without the limit
        delay_ms, fault, verdict, shaping, _, circuit, bulkhead, plugged = plan
        if admitted:  # built directly: NamedTuple._replace is a slow Python-level call
            held: Plan = _new(
                Plan, (delay_ms, fault, verdict, shaping, True, circuit, bulkhead, plugged)
            )
            return held
        return Plan(rate_limit=verdict, shaping=shaping, slot=False, circuit=circuit)

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
            self.store.count(list(map(_TYPE_OF, found)))
            record_injections(found, request_id, delay_ms)
        except Exception:
            self._internal_error("reporting an injection")
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

    def _release_slot(self, store: Store) -> None:
        """Give a slot back; if the store cannot hear of it, it will not stay taken (the
        store's own rule: a lease, or the holder's row), so carry on."""
        try:
            store.release_slot(CONNECTION_SLOTS)
        except Exception:
            self._internal_error("releasing a connection slot")

    def _internal_error(self, doing: str) -> None:
        """Our own failure must not look like chaos: serve unharmed, count, and log one
        line per outage (again each minute while it lasts)."""
        self.internal_errors += 1
        with contextlib.suppress(Exception):
            self.store.count(("internal_errors",))
        now = time.monotonic()
        if now >= self._quiet_until:
            self._quiet_until = now + ERROR_LOG_INTERVAL_S
            error = sys.exc_info()[1]
            # An unreachable store is an outage, said in one line; anything else is a
            # bug of ours, logged with its traceback.
            log.log(
                logging.WARNING if isinstance(error, StoreError) else logging.ERROR,
                "mockforge internal error while %s (%d so far); no chaos comes of it: %s",
                doing,
                self.internal_errors,
                error,
                exc_info=not isinstance(error, StoreError),
            )


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
