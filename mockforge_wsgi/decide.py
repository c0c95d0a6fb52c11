"""The decision core: one request in, one Plan out, and nothing of WSGI.

:class:`Decider` holds the whole per-request decide step: which config applies (the
first matching rule), chaos asked for by header, the circuit breaker, the rate limiter,
the connection slot, the bulkhead's place, patterns and scripts, plugins, and the choice
of the store a multi-process server shares. Its input is a :class:`~.request.Request`
(method, path, route, headers, client address, test id); its output the existing
:class:`~.plan.Plan`, with the config it was decided from. The inbound middleware calls
it with a lazy view of its environ; the outbound direction (the app's own calls) with a
:class:`~.request.Call`. Each direction keeps only its own apply step.

**The one fail-open boundary** is here: our own failure (a bug, an unreachable store)
never looks like chaos. :meth:`Decider.decide` turns any exception into "no chaos for
this request", counted in ``internal_errors`` and logged once a minute; the apply side
reports its own failures through :meth:`Decider.internal_error` to the same count. An
unreachable store is counted apart, in ``store_errors``; under ``on_store_error: local``
(the default) the limits, places and request numbers come meanwhile from this worker's
share (state/degrading.py), so the request keeps its limits and its chaos. Two
errors are deliberate and raised to the caller, who answers them:
:class:`~.header_control.InvalidHeaders` (a 400 naming each header) and
:class:`~.state.StoreError` when ``on_store_error`` is ``closed`` (a 503, not chaos).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import header_control
from .active_faults import OVERFLOW, ActiveFault
from .active_faults import pool_name as active_pool
from .breaker import GLOBAL, OPEN, Circuit, admit, failed
from .breaker import record as breaker_record
from .bulkhead import Bulkhead, pool_name
from .config import PLUGINS, ChaosConfig, CircuitBreakerConfig, RateLimitConfig, apply_rule
from .engine import ScenarioEngine
from .header_control import InvalidHeaders
from .injections import PARTIAL_RESPONSE, STREAM_CUT
from .patterns import PATTERN_COUNTER, script_counter
from .plan import NO_CHAOS, Plan, decide_plan
from .rate_limit import RateLimiter, client_of
from .state import MemoryStore, Store, StoreError
from .state.base import CONNECTION_SLOTS
from .state.degrading import DegradingStore
from .state.server_store import server_store

if TYPE_CHECKING:
    from .request import Request
    from .rules import Rule

__all__ = ["SEQUENCE_COUNTER", "Decider", "Decision", "InvalidHeaders", "StoreError"]

log = logging.getLogger("mockforge_wsgi")

SEQUENCE_COUNTER = "sequence"  # numbers requests for per-request generators (with a seed)
ERROR_LOG_INTERVAL_S = 60.0
_new = tuple.__new__
# What a decision gives: the Plan, and the config it was decided from (a rule's, or the
# effective config), whose sections the apply step reads.
Decision = tuple[Plan, ChaosConfig]


def _unharmed(plan: Plan, active: ActiveFault | None) -> Plan:
    """``plan`` without its chaos (latency, fault, shaping, plugins): what a request
    over max_active_faults gets; its admission decisions and places stand."""
    left = Plan(
        rate_limit=plan.rate_limit,
        slot=plan.slot,
        circuit=plan.circuit,
        bulkhead=plan.bulkhead,
        active=active,
    )
    return NO_CHAOS if left == NO_CHAOS else left


def _itself(request: Request) -> Request:
    return request


def _limits_only(config: ChaosConfig, explicit_rng: bool) -> bool:
    """Whether ``config`` (enabled) asks for a rate limit and nothing else: then a
    request's whole plan is the limiter's verdict (decide_plan would give just that),
    and nothing else need be looked at. A seed without a given generator numbers
    requests in the store, so it takes the general path."""
    return (
        config.rate_limit.enabled
        and not config.rules
        and not config.header_control.enabled
        and not config.circuit_breaker.enabled
        and (config.seed is None or explicit_rng)
        and not config.fault_injection.enabled
        and not config.latency.enabled
        and not config.traffic_shaping.enabled
        and not any(getattr(config.plugins, plugin.name).enabled for plugin in PLUGINS)
        and not config.bulkhead.enabled
        and config.max_active_faults is None
    )


def _keys(limits: RateLimitConfig, request: Request) -> tuple[str, str]:
    """The client address and endpoint a per-IP and a per-endpoint limit count by."""
    client = endpoint = ""
    if limits.per_ip:
        trusted = limits.trusted_proxies
        forwarded = request.header("X-Forwarded-For") if trusted else None
        client = client_of(request.client_address, forwarded, trusted)
    if limits.per_endpoint:
        endpoint = request.route
    return client, endpoint


class Decider:
    """Decide each request's Plan from the engine's config and the store.

    ``engine`` holds the runtime state (and the store); ``config`` is the startup config
    (default: the engine's); ``rng`` defaults to ``random.Random(config.seed)``: with a
    seed and no ``rng`` given, request n of the store's sequence draws from
    ``(seed, n)``, whichever worker decides it. ``admin_token``: header control counts
    only with it. ``store_named``: the store was chosen by the caller, so
    :meth:`use_server_store` keeps it. ``max_keys``: the server store's bound on tracked
    keys (default: the startup config's). ``counters``: a prefix of the counters that
    number requests (the outbound direction's ``outbound:``). ``workers``: how many
    workers the server was started with (gunicorn's ``-w``), this worker's share of the
    limits while the store is unreachable before it has said how many are alive.

    Per request: :meth:`decide` (or :meth:`decide_lazily`, :meth:`decide_now`); when the
    answer is done, :meth:`releaser`'s callable and :meth:`answered` (the breaker).
    """

    def __init__(
        self,
        engine: ScenarioEngine,
        *,
        config: ChaosConfig | None = None,
        rng: random.Random | None = None,
        admin_token: str | None = None,
        store_named: bool = True,
        max_keys: int | None = None,
        counters: str = "",
        workers: int = 1,
    ) -> None:
        self.engine = engine
        self._workers = workers
        # The store counters that number requests (a seed's sequence, a pattern's, a
        # script's steps), prefixed: the outbound direction numbers its calls apart, so
        # the app's calls never move the inbound sequence (nor the other way round).
        self._counters = counters
        self._sequence = counters + SEQUENCE_COUNTER
        self._pattern_counter = counters + PATTERN_COUNTER
        startup = config if config is not None else engine.startup
        self.rng = rng if rng is not None else random.Random(startup.seed)
        self._explicit_rng = rng is not None
        self._admin_token = admin_token
        self._store_named = store_named
        self._max_keys = max_keys if max_keys is not None else startup.rate_limit.max_tracked_keys
        self.store: Store = engine.store
        # What limits, places and request numbers are taken from: the store, or this
        # worker's share of it while it is unreachable (on_store_error: local).
        self.places = self._degrading(self.store)
        self.limiter = RateLimiter(self.places, prefix=self._counters)
        self.internal_errors = 0
        self.store_errors = 0
        self._quiet_until = 0.0  # our own errors are logged at most once a minute
        self._store_quiet_until = 0.0  # and the store's failures too
        self._rule_configs: tuple[ChaosConfig, list[ChaosConfig]] | None = None
        # (config, does it ask for a rate limit and nothing else?), of the last config.
        self._limits_only: tuple[ChaosConfig | None, bool] = (None, False)

    def decide(self, config: ChaosConfig, request: Request, now: float) -> Decision:
        """The request's Plan and the config it was decided from (the matching rule's,
        or ``config``), inside the one fail-open boundary. ``config``: the effective
        config now, enabled; ``now``: ``time.monotonic()`` at the request's start.

        Raises InvalidHeaders (the chaos headers cannot be honoured) and StoreError
        (the store is unreachable and ``on_store_error`` is ``closed``); any other
        failure is counted and gives ``NO_CHAOS``."""
        return self.decide_lazily(config, request, _itself, now)

    def decide_now(self, request: Request) -> Decision:
        """:meth:`decide` with the engine's config now (NO_CHAOS while chaos is off):
        for a caller that has no config in hand, such as the outbound direction."""
        try:
            config = self.engine.config_now()
        except Exception:
            self.internal_error("reading the chaos state")
            return NO_CHAOS, self.engine.current
        if not config.enabled:
            return NO_CHAOS, config
        return self.decide(config, request, time.monotonic())

    def decide_lazily(
        self, config: ChaosConfig, source: Any, request_of: Callable[[Any], Request], now: float
    ) -> Decision:
        """:meth:`decide` for a request built only if the decision reads it:
        ``request_of(source)``, called at most once. Most decisions read nothing of the
        request (a global limit, latency, faults): the inbound middleware passes its
        environ and the lazy view's constructor, and builds nothing on those paths.

        The whole decide step, in one frame (each call costs on the path of every
        request with chaos): the first matching rule's config, chaos asked for by
        header, the circuit breaker (asked first: open, it is the whole plan), the
        seeded generator, the script's step and the pattern's number, the rate limit,
        ``decide_plan``, plugins, and last the places (a connection slot, a bulkhead's)."""
        request = None
        rule = None
        try:
            only = self._limits_only
            if only[0] is not config:
                only = self._limits_only = (config, _limits_only(config, self._explicit_rng))
            if only[1]:  # a limit and nothing else (most configs under a limit): its verdict
                limits = config.rate_limit
                client = endpoint = ""
                if limits.per_ip or limits.per_endpoint:
                    client, endpoint = _keys(limits, request_of(source))
                try:
                    verdict = self.limiter.check(limits, client, endpoint, now)
                except StoreError:
                    if config.on_store_error == "closed":
                        raise
                    self.internal_error("reaching the rate-limit store")
                    return NO_CHAOS, config
                if verdict is None:
                    return NO_CHAOS, config
                plan: Plan = _new(Plan, (None, None, verdict, None, None, None, None, None, None))
                return plan, config
            if config.rules:
                request = request_of(source)
                config, rule = self._config_for(config, request)
            if config.header_control.enabled:
                if request is None:
                    request = request_of(source)
                if header_control.requested(request, self._admin_token):
                    plan = header_control.decide_from_headers(
                        request, config.header_control, self.rng
                    )
                    if config.max_active_faults is not None and plan.holds:
                        plan = self._take_active(plan, config, rule)
                    return plan, config
            circuit = None
            if config.circuit_breaker.enabled:  # first: an open breaker answers alone
                own = rule is not None and rule[1].has_section("circuit_breaker")
                owner = str(rule[0]) if own and rule is not None else GLOBAL
                circuit = admit(self.places, owner, config.circuit_breaker, time.time())
                if circuit.state == OPEN:
                    return Plan(circuit=circuit), config
            rng = self.rng
            if config.seed is not None and not self._explicit_rng:
                # Request n draws from (seed, n), n numbered in the store: the same
                # sequence of requests gets the same decisions, whichever worker serves.
                rng = random.Random(f"{config.seed}:{self.places.incr(self._sequence)}")
            faults = config.fault_injection
            number = since_change = step = None
            if faults.enabled and faults.script:  # step n of the rule's (or global) script
                own = rule is not None and rule[1].sets("fault_injection", "script")
                counter = script_counter(rule[0] if own and rule is not None else None)
                step = self.places.incr(self._counters + counter if self._counters else counter)
            if faults.enabled and faults.pattern is not None:
                if faults.pattern.timed:  # fail for a while, in bursts: from the change
                    since_change = self.engine.since_change()
                else:  # the first n, every nth, a sequence: numbered in the store
                    number = self.places.incr(self._pattern_counter)
            limits = config.rate_limit
            verdict = None
            if limits.enabled:
                client = endpoint = ""
                if limits.per_ip or limits.per_endpoint:
                    if request is None:
                        request = request_of(source)
                    client, endpoint = _keys(limits, request)
                try:
                    verdict = self.limiter.check(limits, client, endpoint, now)
                except StoreError:
                    if config.on_store_error == "closed":
                        raise
                    self.internal_error("reaching the rate-limit store")
            plan = decide_plan(
                config, rng, verdict, number, since_change_s=since_change, script_step=step
            )
            fault = plan.fault
            if fault is not None and (fault.kind == PARTIAL_RESPONSE or fault.kind == STREAM_CUT):
                # A HEAD answer has no body to cut: the fault is drawn all the same (the
                # requests after it decide as without HEAD), and not planned; as
                # decide_plan(head=True) does, with the method read only here.
                if request is None:
                    request = request_of(source)
                if request.method == "HEAD":
                    plan = plan._replace(fault=None)
                    if plan == NO_CHAOS:
                        plan = NO_CHAOS
            if circuit is not None:  # let through: the answer is counted (closed, a probe)
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
            # Unset (None): unlimited, and nothing more on this path than this check. (A
            # refused plan, or a full bulkhead's, holds nothing; no slot: nothing applied.)
            if config.max_active_faults is not None and plan.slot is not False and plan.holds:
                plan = self._take_active(plan, config, rule)
            return plan, config
        except InvalidHeaders:
            raise
        except StoreError:
            if config.on_store_error == "closed":
                self.store_error("deciding")
                raise
            self.internal_error("reaching the store")
        except Exception:
            self.internal_error("deciding")
        return NO_CHAOS, config

    def _config_for(
        self, config: ChaosConfig, request: Request
    ) -> tuple[ChaosConfig, tuple[int, Rule] | None]:
        """The first matching rule's config, index and rule, or the global config and
        None (conditional chaos)."""
        cached = self._rule_configs
        if cached is None or cached[0] is not config:
            cached = self._rule_configs = (config, [apply_rule(config, r) for r in config.rules])
        for index, (rule, rule_config) in enumerate(zip(config.rules, cached[1], strict=True)):
            if rule.match.matches(request, config.seed):
                return rule_config, (index, rule)
        return config, None

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

    def _take_bulkhead(self, plan: Plan, config: ChaosConfig, owner: str) -> Plan:
        """Wait (up to its queue timeout) for a place in the bulkhead: held, or none came
        (then nothing else of the plan is applied, and a connection slot it holds goes
        back at once)."""
        bulkhead = config.bulkhead
        try:
            held = self.places.acquire_slot(
                pool_name(owner), bulkhead.max_concurrent, bulkhead.queue_timeout_ms / 1000.0
            )
        except StoreError:
            if config.on_store_error == "closed":
                if plan.slot:
                    self._release_slot(self.places)
                raise
            self.internal_error("taking a place in a bulkhead")
            return plan  # served without the cap
        place = Bulkhead(owner, held, bulkhead.status, bulkhead.retry_after_s)
        if held:
            return plan._replace(bulkhead=place)
        if plan.slot:
            self._release_slot(self.places)
        # The breaker's say rides along: a half-open probe refused here must still be
        # counted (this 503 is an answer like any other), or the breaker would wait on it.
        return Plan(rate_limit=plan.rate_limit, circuit=plan.circuit, bulkhead=place)

    def _take_active(self, plan: Plan, config: ChaosConfig, rule: tuple[int, Rule] | None) -> Plan:
        """A place among the active faults (max_active_faults), taken without waiting:
        held (given back when the response ends), or the pool is full: then the request
        gets no injected chaos at all (its admission decisions stand), annotated and
        counted. An unreachable store serves it unharmed too (logged, counted), unless
        ``on_store_error`` is ``closed``."""
        own = rule is not None and rule[1].gives("max_active_faults")
        owner = str(rule[0]) if own and rule is not None else GLOBAL
        cap = config.max_active_faults
        assert cap is not None
        try:
            held = self.places.acquire_slot(active_pool(owner), cap, 0.0)
        except StoreError:
            if config.on_store_error == "closed":
                self._give_back(plan)
                raise
            self.internal_error("taking a place among the active faults")
            return _unharmed(plan, None)
        if held:
            return plan._replace(active=ActiveFault(owner, True))
        try:
            self.places.count((OVERFLOW,))
        except Exception:
            self.internal_error("counting a request over max_active_faults")
        return _unharmed(plan, ActiveFault(owner, False))

    def _give_back(self, plan: Plan) -> None:
        """The places ``plan`` holds, given back at once (it will not be applied)."""
        release = self.releaser(plan)
        if release is not None:
            release()

    def _take_slot(self, plan: Plan, config: ChaosConfig) -> Plan:
        """Wait (up to the queue timeout) for a connection slot: held, or none free (then
        nothing else of the plan is applied: the client gets 503)."""
        shaping = plan.shaping
        assert shaping is not None
        try:
            admitted = self.places.acquire_slot(
                CONNECTION_SLOTS, shaping.max_connections, shaping.queue_timeout_ms / 1000.0
            )
        except StoreError:
            if config.on_store_error == "closed":
                raise
            self.internal_error("taking a connection slot")
            return plan  # served without the limit
        delay_ms, fault, verdict, shaping, _, circuit, bulkhead, plugged, active = plan
        if admitted:  # built directly: NamedTuple._replace is a slow Python-level call
            held: Plan = _new(
                Plan, (delay_ms, fault, verdict, shaping, True, circuit, bulkhead, plugged, active)
            )
            return held
        return Plan(rate_limit=verdict, shaping=shaping, slot=False, circuit=circuit)

    # What the apply side hands back: the places a plan holds, the breaker's answer.

    def releaser(self, plan: Plan) -> Callable[[], None] | None:
        """What gives back the places the plan holds (a connection slot, a bulkhead's,
        one among the active faults), or None when it holds none. Call it once, when
        the answer is done."""
        bulkhead = plan.bulkhead
        active = plan.active
        if active is not None and active.held:  # only with max_active_faults set
            place = bulkhead.pool if bulkhead is not None and bulkhead.held else None
            return functools.partial(
                self._release_active, self.places, bool(plan.slot), place, active.pool
            )
        if bulkhead is None or not bulkhead.held:
            return functools.partial(self._release_slot, self.places) if plan.slot else None
        return functools.partial(self._release_places, self.places, bool(plan.slot), bulkhead.pool)

    def _release_active(self, store: Store, slot: bool, bulkhead: str | None, pool: str) -> None:
        try:
            store.release_slot(pool)
        except Exception:
            self.internal_error("giving back a place among the active faults")
        if bulkhead is not None:
            self._release_places(store, slot, bulkhead)
        elif slot:
            self._release_slot(store)

    def _release_places(self, store: Store, slot: bool, pool: str) -> None:
        try:
            store.release_slot(pool)
        except Exception:
            self.internal_error("releasing a place in a bulkhead")
        if slot:
            self._release_slot(store)

    def _release_slot(self, store: Store) -> None:
        """Give a slot back; if the store cannot hear of it, it will not stay taken (the
        store's own rule: a lease, or the holder's row), so carry on."""
        try:
            store.release_slot(CONNECTION_SLOTS)
        except Exception:
            self.internal_error("releasing a connection slot")

    def answered(self, circuit: Circuit, breaker: CircuitBreakerConfig, status: str) -> None:
        """The breaker counts what the client got: 5xx or no whole answer (``status``
        empty) is a failure."""
        try:
            change = breaker_record(self.places, circuit, breaker, time.time(), failed(status))
        except Exception:
            self.internal_error("counting an answer for the circuit breaker")
            return
        if change is not None:
            log.warning("mockforge: circuit breaker %s %s", circuit.owner, change)

    def use_server_store(self) -> None:
        """Under a server with several processes: one state for all of its workers (the
        embedded store they share), unless the store was named; called once per process,
        on its first request."""
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
        self.use_store(store)

    def use_store(self, store: Store) -> None:
        """Decide from ``store`` from now on (the engine moved to it): limits, places and
        request numbers through this worker's share of it while it is unreachable."""
        self.store = store
        self.places = self._degrading(store)
        self.limiter = RateLimiter(self.places, prefix=self._counters)

    def _degrading(self, store: Store) -> Store:
        """``store`` with this worker's share of its limits while it is unreachable; a
        plain memory store cannot be (and costs nothing more on the request path)."""
        if type(store) is MemoryStore:
            return store
        return DegradingStore(
            store, mode=self._on_store_error, report=self.store_error, workers=self._workers
        )

    def _on_store_error(self) -> str:
        return self.engine.current.on_store_error

    def store_error(self, doing: str, error: BaseException | None = None) -> None:
        """The store could not answer ``error`` (None: not tried, being down): served
        without it, at this worker's share of the limits, or 503, by on_store_error.
        Counted in ``store_errors``; logged once a minute while it lasts."""
        self.store_errors += 1
        with contextlib.suppress(Exception):
            self.store.count(("store_errors",))  # Redis keeps it and sends it when back
        now = time.monotonic()
        if now >= self._store_quiet_until:
            self._store_quiet_until = now + ERROR_LOG_INTERVAL_S
            mode = self._on_store_error()
            workers = getattr(self.places, "workers", 1)
            then = {
                "local": f"each worker limits alone at its share (1/{workers} of each limit)",
                "open": "served without limits or places",
                "closed": "answered 503",
            }.get(mode, mode)
            log.warning(
                "mockforge: the store is unreachable (while %s: %s); on_store_error: %s, so "
                "%s until it answers (%d store errors so far)",
                doing,
                error or sys.exc_info()[1] or "not tried again yet",
                mode,
                then,
                self.store_errors,
            )

    def internal_error(self, doing: str) -> None:
        """Our own failure must not look like chaos: serve unharmed, count, and log one
        line per outage (again each minute while it lasts). An unreachable store is
        counted as a store error."""
        if isinstance(sys.exc_info()[1], StoreError):
            self.store_error(doing)
            return
        self.internal_errors += 1
        with contextlib.suppress(Exception):
            self.store.count(("internal_errors",))
        now = time.monotonic()
        if now >= self._quiet_until:
            self._quiet_until = now + ERROR_LOG_INTERVAL_S
            # A bug of ours: logged with its traceback.
            log.error(
                "mockforge internal error while %s (%d so far); no chaos comes of it: %s",
                doing,
                self.internal_errors,
                sys.exc_info()[1],
                exc_info=True,
            )
