"""Outbound chaos: the same chaos for the HTTP calls the app itself makes.

:func:`install` (once per process, idempotent) intercepts urllib3's connection pool
(``HTTPConnectionPool._make_request``: one attempt of a call, inside urllib3's own retry
loop, so requests, boto-style clients and anything else on urllib3) and httpx's sync
transport (``HTTPTransport.handle_request``). Each call becomes a
:class:`~.request.Call` (method, path, query, headers, ``Host: host:port``) decided by
the same :class:`~.decide.Decider` as inbound requests, over the ``chaos.outbound``
section, and its fault is raised as the library's own exception for the real event
(docs/outbound.md has the table). A call to a host the section does not cover costs a
dictionary lookup; with chaos off, a pointer comparison.

Where the chaos comes from: a :class:`Source` over an engine. ``ChaosMiddleware``
serves its own (the shared state of a server's workers); :func:`chaos` stacks one for a
block of a test, without a server::

    with outbound.chaos({"fault_injection": {"http_error_probability": 1.0}},
                        hosts=["payments.internal:443"]):
        ...  # the app's calls to payments.internal:443 get 500-504, unsent
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import fnmatch
import http.client
import inspect
import io
import json
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs

from ._headers import ANNOTATION_HEADER, REQUEST_ID_KEY, TEST_ID_HEADER, TEST_ID_KEY
from .config import ChaosConfig, OutboundConfig, RateLimitConfig, config_from_dict
from .decide import Decider
from .engine import ScenarioEngine
from .fault import CorruptBody, Fault, fault_body
from .injections import (
    AFTER_APP,
    CONNECTION_RESET,
    CORRUPTED,
    HTTP_ERROR,
    PARTIAL_RESPONSE,
    TIMEOUT,
    Injection,
)
from .patterns import OUTBOUND_COUNTERS
from .plan import NO_CHAOS, Plan
from .rate_limit import RateLimitVerdict
from .release import RELEASER
from .request import Call
from .rules import host_glob
from .state import MemoryStore, StoreError

__all__ = [
    "CALLER",
    "REFUSED",
    "CallRecord",
    "Source",
    "chaos",
    "install",
    "installed",
    "serve",
    "uninstall",
    "watch",
]

log = logging.getLogger("mockforge_wsgi")

REFUSED = Fault("connection_reset", mode="refused")  # the outbound-only fault
MAX_KNOWN_HOSTS = 4096  # host:port verdicts kept per config (then forgotten, and relearnt)
_DEFAULT_PORTS = {"http": 80, "https": 443}
_LENGTHS = ("transfer-encoding", "content-length")  # replaced for an answer read whole
# The store counters of the calls the section covers: every one, and each injection
# (``outbound_http_error``; a refusal is ``outbound_refused``). No host in the name: a
# store's counter names are few and short; Prometheus has the host (metrics.py).
CALLS_COUNTER = "outbound_calls"
PER_HOST = "per_host"  # the level an outbound rate limit refuses at
COUNTER_PREFIX = "outbound_"
# What the thread is serving: a request's environ (ChaosMiddleware sets it for the
# request's duration), or ``{TEST_ID_KEY: node id}`` (the pytest plugin, for a test's
# body). Its test id goes with the calls made meanwhile (the decision sees it as the
# call's X-Mockforge-Test-Id, so a rule's ``header`` can pick one test's calls; the
# recorder's rows carry it), and its request id names the request that made them.
CALLER: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "mockforge_outbound_caller", default=None
)
# urllib3 2's request step, whose signature the interception keeps (and checks).
URLLIB3_PARAMETERS = (
    "self",
    "conn",
    "method",
    "url",
    "body",
    "headers",
    "retries",
    "timeout",
    "chunked",
    "response_conn",
    "preload_content",
    "decode_content",
    "enforce_content_length",
)


class Source:
    """Where one process's outbound chaos comes from: an engine's ``chaos.outbound``
    (the middleware's, or a :func:`chaos` block's), decided by a Decider of its own
    whose counters are apart from inbound's."""

    def __init__(self, engine: ScenarioEngine) -> None:
        self.engine = engine
        self.decider = Decider(engine, counters=OUTBOUND_COUNTERS)
        # (the config it was computed for, the decider's config or None when off, the
        # host:port -> covered verdicts): recomputed when the effective config changes.
        self._seen: tuple[Any, ChaosConfig | None, dict[tuple[str, int], bool]] = (
            None,
            None,
            {},
        )
        # chaos.outbound.rate_limit as the limiter reads it (a bucket per host:port,
        # named apart from inbound's by the decider's "outbound:" prefix), or None.
        self._limits: RateLimitConfig | None = None

    def covering(self, host: str, port: int) -> ChaosConfig | None:
        """The config to decide a call to ``host:port`` with, or None (no chaos): the
        per-call cost of every intercepted call (one dict lookup once learnt)."""
        config = self.engine.config_now()
        seen = self._seen
        if seen[0] is not config:
            seen = self._renew(config)
        decided = seen[1]
        if decided is None:
            return None
        key = (host, port)
        covered = seen[2].get(key)
        if covered is None:
            covered = self._learn(seen, key)
        return decided if covered else None

    def _renew(self, config: ChaosConfig) -> Any:
        outbound = config.outbound
        decided = None
        if config.enabled and outbound.enabled:
            decided = ChaosConfig(
                enabled=True,
                seed=config.seed,
                on_store_error=config.on_store_error,
                latency=outbound.latency,
                fault_injection=outbound.fault_injection,
                rules=outbound.rules,
            )
        limit = outbound.rate_limit
        self._limits = (
            RateLimitConfig(
                enabled=True,
                requests_per_second=limit.requests_per_second,
                burst_size=limit.burst_size,
                global_limit=False,
                per_endpoint=True,  # the endpoint is the call's host:port
            )
            if decided is not None and limit.enabled
            else None
        )
        seen = self._seen = (config, decided, {})
        return seen

    def _learn(self, seen: Any, key: tuple[str, int]) -> bool:
        outbound: OutboundConfig = seen[0].outbound
        name = _address(*key)
        hosts = outbound.hosts
        covered = not hosts or any(fnmatch.fnmatchcase(name, host_glob(h)) for h in hosts)
        if covered and not (
            outbound.refused_probability
            or outbound.rate_limit.enabled
            or outbound.latency.enabled
            or outbound.fault_injection.enabled
        ):  # only rules: a call no rule's host can match gets nothing
            covered = any(
                r.match.host is None or fnmatch.fnmatchcase(name, host_glob(r.match.host))
                for r in outbound.rules
            )
        known = seen[2]
        if len(known) >= MAX_KNOWN_HOSTS:
            known.clear()
        known[key] = covered
        return covered

    def decide(self, config: ChaosConfig, call: Call) -> tuple[Plan, ChaosConfig]:
        """One call's Plan (REFUSED as its fault for a refusal), inside the decider's
        fail-open boundary."""
        decider = self.decider
        store = self.engine.store
        if decider.store is not store:  # the engine moved to the server's shared store
            decider.use_store(store)
        refused = self._seen[0].outbound.refused_probability
        limited = None
        if refused and (refused >= 1.0 or decider.rng.random() < refused):
            decided: tuple[Plan, ChaosConfig] = (Plan(fault=REFUSED), config)
        elif self._limits is not None and (limited := self._limited(call)) is not None:
            decided = (Plan(rate_limit=limited), config)
        else:
            try:
                decided = decider.decide(config, call, time.monotonic())
            except StoreError:  # on_store_error: closed answers inbound; a call goes unharmed
                decider.store_error("reaching the store for an outbound call")
                return NO_CHAOS, config
        self._count(decided[0])
        return decided

    def _limited(self, call: Call) -> RateLimitVerdict | None:
        """The host's refusal when the call is over its rate limit, else None (admitted,
        or the store unreachable: the call goes on)."""
        limits = self._limits
        if limits is None:
            return None
        try:
            verdict = self.decider.limiter.check(
                limits, "", call.header("Host") or "", time.monotonic()
            )
        except StoreError:
            self.decider.store_error("reaching the store for an outbound rate limit")
            return None
        if verdict is None or verdict.allowed:
            return None
        return RateLimitVerdict(PER_HOST, verdict.outcome)

    def _count(self, plan: Plan) -> None:
        """``outbound_calls`` and each injection's ``outbound_<type>``, in the store (all
        workers'); our failure to count never changes the call."""
        names = [CALLS_COUNTER]
        names.extend(map(counter_name, plan.injections()))
        try:
            self.decider.store.count(names)
        except StoreError:
            self.decider.store_error("counting an outbound call")
        except Exception:
            self.decider.internal_error("counting an outbound call")

    def hold(self, seconds: float) -> bool:
        """Hold the calling thread ``seconds``: True when waited out, False when chaos
        went off (or the outbound section changed) meanwhile (release.py)."""
        engine = self.engine
        then = self._seen[0]
        then_outbound = then.outbound if then is not None else None

        def wanted() -> bool:
            config = engine.config_now()
            return bool(config.enabled) and config.outbound == then_outbound

        return RELEASER.hold(seconds, source=engine, wanted=wanted)


def counter_name(injection: Injection) -> str:
    """The store counter of one outbound injection (a refusal has its own)."""
    if injection.type == CONNECTION_RESET and injection.detail == "refused":
        return COUNTER_PREFIX + "refused"
    return COUNTER_PREFIX + injection.type


@attrs.frozen
class CallRecord:
    """One call the section covered, as it ended: what metrics and the recorder see."""

    time: float  # when it ended (time.time()), as a request's row
    method: str
    host: str  # host:port
    path: str
    status: int | None  # None: the call raised
    error: str | None  # the exception's class name, when it raised
    duration_ms: float
    injections: tuple[Injection, ...]
    delay_ms: float | None
    annotation: str
    test_id: str | None
    request_id: str | None  # the inbound request being served when it was made
    retry_after: str | None  # the answer's Retry-After


# Who is told of each CallRecord (metrics, the recorder): weakly held, so a middleware
# a test dropped stops being told.
_WATCHERS: list[weakref.ref[Any]] = []


def watch(callback: Callable[[CallRecord], None]) -> None:
    """Tell ``callback`` of each call the section covers, as it ends (a bound method is
    held weakly: its object going away ends the watch)."""
    ref: weakref.ref[Any]
    if hasattr(callback, "__self__") and hasattr(callback, "__func__"):
        ref = weakref.WeakMethod(callback)
    else:
        ref = weakref.ref(callback)
    with _install_lock:
        _WATCHERS[:] = [w for w in _WATCHERS if w() is not None]
        _WATCHERS.append(ref)


def _tell(
    call: Call,
    plan: Plan,
    started: float,
    status: int | None,
    retry_after: str | None,
    error: BaseException | None,
) -> None:
    """Each watcher hears of one ended call; a failure here (a watcher's, ours) is
    logged, never the caller's."""
    try:
        record = _record(call, plan, started, status, retry_after, error)
    except Exception:
        log.exception("mockforge: telling of an outbound call")
        return
    for ref in list(_WATCHERS):
        callback = ref()
        if callback is None:
            continue
        try:
            callback(record)
        except Exception:
            log.exception("mockforge: telling of an outbound call")


def _record(
    call: Call,
    plan: Plan,
    started: float,
    status: int | None,
    retry_after: str | None,
    error: BaseException | None,
) -> CallRecord:
    elapsed = time.monotonic() - started
    caller = CALLER.get()
    return CallRecord(
        time=time.time(),
        method=call.method,
        host=call.header("Host") or "",
        path=call.path,
        status=status,
        error=None if error is None else type(error).__name__,
        duration_ms=elapsed * 1000.0,
        injections=tuple(plan.injections()),
        delay_ms=plan.delay_ms,
        annotation=plan.annotation() or "",
        test_id=call.test_id,
        request_id=None if caller is None else caller.get(REQUEST_ID_KEY),
        retry_after=retry_after,
    )


# The process's sources: the server's (its middleware's engine), and over it the chaos()
# blocks in force, the last one deciding.
_served: Source | None = None
_BLOCKS: list[Source] = []
_current: Source | None = None
# What install() replaced: (owner, attribute, original), to put back exactly.
_PATCHED: list[tuple[Any, str, Any]] = []
_install_lock = threading.RLock()
# install() was called (by the middleware, the app): a chaos() block that installed
# first leaves the interception in place when it ends.
_asked = False


def _set_current() -> None:
    global _current
    _current = _BLOCKS[-1] if _BLOCKS else _served


def serve(engine: ScenarioEngine | None) -> Source | None:
    """Make ``engine``'s ``chaos.outbound`` the process's outbound chaos (under any
    :func:`chaos` block in force), replacing the one served before; None: none.
    ChaosMiddleware calls it when its startup config has the section on."""
    global _served
    with _install_lock:
        if engine is None:
            _served = None
        elif _served is None or _served.engine is not engine:
            _served = Source(engine)
        _set_current()
        return _served


def installed() -> bool:
    """Whether the interception is in place."""
    return bool(_PATCHED)


def install() -> None:
    """Intercept urllib3's connection pool and httpx's sync transport, each if it is
    installed; once per process (a second call does nothing)."""
    global _asked
    with _install_lock:
        _asked = True
        _install()


def _install() -> None:
    with _install_lock:
        if _PATCHED:
            return
        try:
            from urllib3 import connectionpool
        except ImportError:  # pragma: no cover - requests brings it
            pass
        else:
            pool = connectionpool.HTTPConnectionPool
            found = tuple(inspect.signature(pool._make_request).parameters)
            if found == URLLIB3_PARAMETERS:
                _patch(pool, "_make_request", _urllib3_make_request(pool._make_request))
            else:  # urllib3 1.x: another request step
                log.warning(
                    "mockforge: outbound chaos does not intercept this urllib3 (%s): it "
                    "needs urllib3 2",
                    getattr(connectionpool, "__version__", "unknown version"),
                )
        try:
            import httpx
        except ImportError:
            pass
        else:
            transport = httpx.HTTPTransport
            _patch(transport, "handle_request", _httpx_handle_request(transport.handle_request))
        if not _PATCHED:  # neither library: a marker, so the next call does not retry
            _PATCHED.append((None, "", None))


def uninstall() -> None:
    """Put back what :func:`install` replaced, exactly (tests; a chaos() block that
    installed)."""
    global _asked
    with _install_lock:
        _asked = False
        while _PATCHED:
            owner, name, original = _PATCHED.pop()
            if owner is not None:
                setattr(owner, name, original)


def _patch(owner: Any, name: str, replacement: Any) -> None:
    _PATCHED.append((owner, name, owner.__dict__[name]))
    setattr(owner, name, replacement)


@contextlib.contextmanager
def chaos(
    settings: Mapping[str, Any] | None = None, *, hosts: Sequence[str] = ()
) -> Iterator[Source]:
    """Outbound chaos for a block, without a server: ``settings`` is what a ``chaos:``
    block holds (``latency``, ``fault_injection``, ``rules``, ``seed``; chaos is on
    unless it says ``enabled: false``), ``hosts`` the ``host:port`` globs it applies to
    (empty: every call). Installs the interception if needed; on exit the process is as
    before, exactly (the interception too, when this block installed it)."""
    raw = dict(settings or {})
    enabled = raw.pop("enabled", True)
    seed = raw.pop("seed", None)
    refused = raw.pop("refused_probability", None)
    section: dict[str, Any] = {"enabled": enabled, "hosts": list(hosts), **raw}
    if refused is not None:
        section["refused_probability"] = refused
    data: dict[str, Any] = {"enabled": True, "outbound": section}
    if seed is not None:
        data["seed"] = seed
    config: ChaosConfig = config_from_dict(data)
    engine = ScenarioEngine(config, store=MemoryStore())
    source = Source(engine)
    with _install_lock:
        installs = not _PATCHED
        _install()
        _BLOCKS.append(source)
        _set_current()
    try:
        yield source
    finally:
        with _install_lock:
            _BLOCKS.remove(source)
            _set_current()
            if installs and not _asked:
                uninstall()


# -- applying a Plan: what each library raises for the real event -------------------


def _target(url: str, host: str, port: int) -> tuple[str, int]:
    """The host and port an absolute request target names (a call through an HTTP
    proxy), else the pool's."""
    from urllib3.util import parse_url

    try:
        parsed = parse_url(url)
    except ValueError:
        return host, port
    if not parsed.host:
        return host, port
    return parsed.host.lower(), parsed.port or _DEFAULT_PORTS.get(parsed.scheme or "http", 80)


def _address(host: str, port: int) -> str:
    """``host:port`` as rules and ``hosts`` match it (``[::1]:8080`` for IPv6)."""
    host = host.lower()
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _call(method: str, target: str, headers: Any, host: str, port: int) -> Call:
    path, _, query = target.partition("?")
    if "://" in path:  # an absolute target (through a proxy)
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    named = dict(headers or {})
    named["Host"] = _address(host, port)  # always with its port: rules match host:port
    caller = CALLER.get()
    if caller is not None:  # the test id of the request (or test) being served
        test_id = caller.get(TEST_ID_KEY)
        if test_id and not any(k.lower() == "x-mockforge-test-id" for k in named):
            named[TEST_ID_HEADER] = test_id
    return Call(method, path, query=query, headers=named)


def _answer(
    fault: Fault, config: ChaosConfig, plan: Plan
) -> tuple[int, list[tuple[str, str]], bytes]:
    """An injected status answer, as inbound's: the fault's body, ``error_headers``,
    ``Retry-After`` on a 503 or 429, the annotation."""
    faults = config.fault_injection
    status = fault.status or 500
    body, content_type = fault_body(fault, faults)
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    headers.extend(faults.error_headers)
    if status in (503, 429) and faults.retry_after_s:
        headers.append(("Retry-After", str(faults.retry_after_s)))
    headers.append((ANNOTATION_HEADER, plan.annotation() or f"fault={fault.label}"))
    return status, headers, body


def _limited_answer(verdict: RateLimitVerdict) -> tuple[int, list[tuple[str, str]], bytes]:
    """The host's 429 over its rate limit: inbound's body, ``Retry-After`` and
    ``RateLimit-*``, and the annotation."""
    body = json.dumps(
        {
            "error": "rate limit exceeded",
            "level": verdict.level,
            "limit": verdict.outcome.limit,
            "retry_after_s": verdict.retry_after,
            "injected_by": "mockforge",
        }
    ).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    headers.extend(verdict.headers())
    headers.append((ANNOTATION_HEADER, f"rate_limit={verdict.level}"))
    return 429, headers, body


def _corrupted(
    fault: Fault, headers: list[tuple[str, str]], data: bytes
) -> tuple[list[tuple[str, str]], bytes]:
    """A whole answer broken as inbound breaks the app's (``flip``, ``random``,
    ``invalid_json``, ``truncate`` under a true shorter length, ``wrong_content_type``),
    by the same code: fault.CorruptBody, from the seed drawn with the decision."""
    dropped = ("transfer-encoding", "content-length")
    kept = [(k, v) for k, v in headers if k.lower() not in dropped]
    kept.append(("Content-Length", str(len(data))))
    corrupt = CorruptBody(fault)
    seen: list[tuple[str, str]] = []

    def start_response(status: str, sent: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen.extend(sent)
        return None

    corrupt.start_response(start_response, [])("200 OK", kept)
    body = b"".join(corrupt.wrap([data]))
    corrupt.close()
    return seen, body


def _cut_at(fault: Fault, total: int) -> int:
    """How many bytes of ``total`` a cut body keeps (at least one short of it)."""
    keep = fault.limit_bytes if fault.limit_bytes else int(total * fault.fraction)
    return max(0, min(keep, total - 1))


def _read_timeout_hold(read_timeout: float | None, fault: Fault) -> float:
    """A read timeout fires when the caller's own would: its read timeout; a caller
    without one (a real outage would hang it for ever) is held ``timeout_ms``."""
    if read_timeout is None:
        return fault.hold_ms / 1000.0
    return max(0.0, float(read_timeout))


def _urllib3_make_request(original: Any) -> Any:
    from urllib3 import HTTPResponse
    from urllib3.exceptions import IncompleteRead, NewConnectionError, ReadTimeoutError
    from urllib3.util.timeout import Timeout

    class _CutBody(io.BytesIO):
        """The first bytes of a real body; read past them, the peer has closed short
        (as http.client's does: urllib3 makes it a ProtocolError, requests a
        ChunkedEncodingError)."""

        def __init__(self, data: bytes, total: int) -> None:
            super().__init__(data)
            self.total = total

        def read(self, amt: int | None = None) -> bytes:
            whole = amt is None or amt < 0
            chunk = super().read(-1 if whole else amt)
            got = self.tell()
            if (whole or not chunk) and got < self.total:
                raise IncompleteRead(got, self.total - got)
            return chunk

    def _make_request(
        self: Any,
        conn: Any,
        method: str,
        url: str,
        body: Any = None,
        headers: Any = None,
        retries: Any = None,
        timeout: Any = Timeout.DEFAULT_TIMEOUT,
        chunked: bool = False,
        response_conn: Any = None,
        preload_content: bool = True,
        decode_content: bool = True,
        enforce_content_length: bool = True,
    ) -> Any:
        # urllib3 2's own signature, passed on by position: a call chaos does not touch
        # costs the lookup below, and no dict of keywords built twice.
        source = _current
        if source is not None:
            seen = source._seen  # Source.covering, inlined
            if seen[0] is not source.engine.config_now():
                seen = source._renew(source.engine.config_now())
            if seen[1] is not None:
                host = self.host
                port = self.port or _DEFAULT_PORTS.get(self.scheme, 80)
                if url[:1] != "/":  # through an HTTP proxy: the pool's is the proxy's
                    host, port = _target(url, host, port)
                covered = seen[2].get((host, port))
                if covered is None:
                    covered = source._learn(seen, (host, port))
                if covered:
                    kw = {
                        "body": body,
                        "headers": headers,
                        "retries": retries,
                        "timeout": timeout,
                        "chunked": chunked,
                        "response_conn": response_conn,
                        "preload_content": preload_content,
                        "decode_content": decode_content,
                        "enforce_content_length": enforce_content_length,
                    }
                    return _chaos_call(source, seen[1], self, conn, method, url, host, port, kw)
        return original(
            self,
            conn,
            method,
            url,
            body,
            headers,
            retries,
            timeout,
            chunked,
            response_conn,
            preload_content,
            decode_content,
            enforce_content_length,
        )

    def _chaos_call(
        source: Source,
        config: ChaosConfig,
        self: Any,
        conn: Any,
        method: str,
        url: str,
        host: str,
        port: int,
        kw: dict[str, Any],
    ) -> Any:
        """A call the section covers: decided, then applied (and told, when watched)."""
        call = _call(method, url, kw["headers"], host, port)
        plan, decided = source.decide(config, call)
        if not _WATCHERS:
            return _apply(source, plan, decided, self, conn, method, url, kw)
        started = time.monotonic()
        try:
            response = _apply(source, plan, decided, self, conn, method, url, kw)
        except BaseException as error:
            _tell(call, plan, started, None, None, error)
            raise
        headers = getattr(response, "headers", None) or {}
        _tell(
            call,
            plan,
            started,
            getattr(response, "status", None),
            headers.get("Retry-After"),
            None,
        )
        return response

    def _apply(
        source: Source,
        plan: Plan,
        decided: ChaosConfig,
        self: Any,
        conn: Any,
        method: str,
        url: str,
        kw: dict[str, Any],
    ) -> Any:
        if plan is NO_CHAOS:
            return original(self, conn, method, url, **kw)
        if plan.refused:  # over the host's rate limit: its 429, the host not called
            status, headers, body = _limited_answer(plan.rate_limit)  # type: ignore[arg-type]
            return _response(self, method, url, kw, status, headers, body, kw.get("response_conn"))
        if plan.delay_ms and not source.hold(plan.delay_ms / 1000.0):
            return original(self, conn, method, url, **kw)  # released: as chaos off
        fault = plan.fault
        if fault is None:
            return original(self, conn, method, url, **kw)
        kind = fault.kind
        if fault is REFUSED:
            raise NewConnectionError(
                conn, "Failed to establish a new connection: [Errno 111] Connection refused"
            )
        if kind == CONNECTION_RESET:
            raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
        if kind == TIMEOUT:
            _time_out(source, self, url, kw, fault)  # raises, unless released
            return original(self, conn, method, url, **kw)
        if kind == HTTP_ERROR:
            try:
                return _answered(self, method, url, kw, fault, decided, plan)
            except Exception:  # our own failure must not look like chaos: the real call
                source.decider.internal_error("answering an outbound call")
                return original(self, conn, method, url, **kw)
        if kind not in (PARTIAL_RESPONSE, CORRUPTED, AFTER_APP):
            return original(self, conn, method, url, **kw)
        # The host is called, and its whole answer read (its connection goes back).
        whole = original(self, conn, method, url, **{**kw, "preload_content": False})
        data = whole.read(decode_content=False)
        whole.release_conn()
        headers = [(k, v) for k, v in whole.headers.items() if k.lower() not in _LENGTHS]
        headers.append(("Content-Length", str(len(data))))
        if kind == PARTIAL_RESPONSE:
            # Short of its Content-Length: urllib3's own check raises where it is read.
            cut = _CutBody(data[: _cut_at(fault, len(data))], len(data))
            return _response(self, method, url, kw, whole.status, headers, cut, like=whole)
        if kind == AFTER_APP:  # the host has done its part; the caller gets the fault
            if fault.mode == "reset":
                raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
            if fault.mode == "http_error":
                return _answered(self, method, url, kw, fault, decided, plan)
            _time_out(source, self, url, kw, fault)  # a stall: raises, unless released
            return _response(self, method, url, kw, whole.status, headers, data, like=whole)
        if fault.mode == "empty_reply":  # the host answered nothing: urlopen's
            # ProtocolError('Connection aborted.', RemoteDisconnected(...)), as for real
            raise http.client.RemoteDisconnected("Remote end closed connection without response")
        headers, body = _corrupted(fault, headers, data)
        return _response(self, method, url, kw, whole.status, headers, body, like=whole)

    def _time_out(source: Source, pool: Any, url: str, kw: dict[str, Any], fault: Fault) -> None:
        """Raise ReadTimeoutError when the caller's own read timeout would fire (after
        holding that long); return when chaos went off meanwhile."""
        timeout = pool._get_timeout(kw.get("timeout", Timeout.DEFAULT_TIMEOUT))
        timeout.start_connect()
        read = Timeout.resolve_default_timeout(timeout.read_timeout)
        if source.hold(_read_timeout_hold(read, fault)):
            raise ReadTimeoutError(pool, url, f"Read timed out. (read timeout={read})")

    def _answered(
        pool: Any,
        method: str,
        url: str,
        kw: dict[str, Any],
        fault: Fault,
        config: ChaosConfig,
        plan: Plan,
    ) -> Any:
        status, headers, body = _answer(fault, config, plan)
        # The connection taken for the call, unused, goes back when the answer is read.
        return _response(pool, method, url, kw, status, headers, body, kw.get("response_conn"))

    def _response(
        pool: Any,
        method: str,
        url: str,
        kw: dict[str, Any],
        status: int,
        headers: list[tuple[str, str]],
        body: Any,
        connection: Any = None,
        like: Any = None,
    ) -> Any:
        """An answer as urllib3's request step gives one (``like``: the host's own, read
        whole: its connection is back already)."""
        return HTTPResponse(
            body=io.BytesIO(body) if isinstance(body, bytes) else body,
            headers=dict(headers),
            status=status,
            version=like.version if like is not None else 11,
            version_string=getattr(like, "version_string", "HTTP/1.1"),
            reason=like.reason if like is not None else http.client.responses.get(status, ""),
            preload_content=kw.get("preload_content", True),
            decode_content=kw.get("decode_content", True),
            pool=pool,
            connection=connection,
            retries=kw.get("retries"),
            enforce_content_length=True,
            request_method=method,
            request_url=url,
        )

    _make_request.__wrapped__ = original  # type: ignore[attr-defined]
    _make_request.__doc__ = original.__doc__
    return _make_request


def _httpx_handle_request(original: Any) -> Any:
    import httpx

    class _CutStream(httpx.SyncByteStream):
        """The first bytes of a real body, then the peer closes: httpx's own error."""

        def __init__(self, data: bytes, total: int) -> None:
            self.data, self.total = data, total

        def __iter__(self) -> Iterator[bytes]:
            if self.data:
                yield self.data
            raise httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body "
                f"(received {len(self.data)} bytes, expected {self.total})"
            )

    def handle_request(self: Any, request: httpx.Request) -> httpx.Response:
        source = _current
        if source is None:
            return original(self, request)  # type: ignore[no-any-return]
        seen = source._seen  # Source.covering, inlined, as for urllib3
        if seen[0] is not source.engine.config_now():
            seen = source._renew(source.engine.config_now())
        if seen[1] is None:
            return original(self, request)  # type: ignore[no-any-return]
        url = request.url
        # httpx's parsed URL: its public properties cost ~0.6 us more per call
        parts = getattr(url, "_uri_reference", url)
        host = parts.host
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 80)
        covered = seen[2].get((host, port))
        if covered is None:
            covered = source._learn(seen, (host, port))
        if not covered:
            return original(self, request)  # type: ignore[no-any-return]
        return _chaos_call(source, seen[1], self, request, host, port)

    def _chaos_call(
        source: Source,
        config: ChaosConfig,
        self: Any,
        request: httpx.Request,
        host: str,
        port: int,
    ) -> httpx.Response:
        """A call the section covers: decided, then applied (and told, when watched)."""
        target = request.url.raw_path.decode("ascii", "replace")
        call = _call(request.method, target, dict(request.headers), host, port)
        plan, decided = source.decide(config, call)
        if not _WATCHERS:
            return _apply(source, plan, decided, self, request)
        started = time.monotonic()
        try:
            response = _apply(source, plan, decided, self, request)
        except BaseException as error:
            _tell(call, plan, started, None, None, error)
            raise
        _tell(call, plan, started, response.status_code, response.headers.get("Retry-After"), None)
        return response

    def _apply(
        source: Source, plan: Plan, decided: ChaosConfig, self: Any, request: httpx.Request
    ) -> httpx.Response:
        if plan is NO_CHAOS:
            return original(self, request)  # type: ignore[no-any-return]
        if plan.refused:  # over the host's rate limit: its 429, the host not called
            status, headers, body = _limited_answer(plan.rate_limit)  # type: ignore[arg-type]
            return httpx.Response(status, headers=headers, content=body, request=request)
        if plan.delay_ms and not source.hold(plan.delay_ms / 1000.0):
            return original(self, request)  # type: ignore[no-any-return]
        fault = plan.fault
        if fault is None:
            return original(self, request)  # type: ignore[no-any-return]
        kind = fault.kind
        if fault is REFUSED:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        if kind == CONNECTION_RESET:
            raise httpx.ReadError("[Errno 104] Connection reset by peer", request=request)
        if kind == TIMEOUT:
            _time_out(source, request, fault)  # raises, unless released
            return original(self, request)  # type: ignore[no-any-return]
        if kind == HTTP_ERROR:
            try:
                return _answered(request, fault, decided, plan)
            except Exception:  # our own failure must not look like chaos: the real call
                source.decider.internal_error("answering an outbound call")
                return original(self, request)  # type: ignore[no-any-return]
        if kind not in (PARTIAL_RESPONSE, CORRUPTED, AFTER_APP):
            return original(self, request)  # type: ignore[no-any-return]
        # The host is called, and its whole answer read.
        whole = original(self, request)
        try:
            data = b"".join(_iter(whole.stream))
        finally:
            whole.close()
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in whole.headers.raw
            if k.lower().decode("latin-1") not in _LENGTHS
        ]
        headers.append(("Content-Length", str(len(data))))
        stream: httpx.SyncByteStream = httpx.ByteStream(data)
        if kind == PARTIAL_RESPONSE:
            stream = _CutStream(data[: _cut_at(fault, len(data))], len(data))
        elif kind == AFTER_APP:  # the host has done its part; the caller gets the fault
            if fault.mode == "reset":
                raise httpx.ReadError("[Errno 104] Connection reset by peer", request=request)
            if fault.mode == "http_error":
                return _answered(request, fault, decided, plan)
            _time_out(source, request, fault)  # a stall: raises, unless released
        elif fault.mode == "empty_reply":
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        else:
            headers, body = _corrupted(fault, headers, data)
            stream = httpx.ByteStream(body)
        return httpx.Response(
            whole.status_code,
            headers=headers,
            stream=stream,
            request=request,
            extensions=whole.extensions,
        )

    def _time_out(source: Source, request: httpx.Request, fault: Fault) -> None:
        """Raise ReadTimeout when the caller's own read timeout would fire (after holding
        that long); return when chaos went off meanwhile."""
        read = request.extensions.get("timeout", {}).get("read")
        if source.hold(_read_timeout_hold(read, fault)):
            raise httpx.ReadTimeout("timed out", request=request)

    def _answered(
        request: httpx.Request, fault: Fault, config: ChaosConfig, plan: Plan
    ) -> httpx.Response:
        status, headers, body = _answer(fault, config, plan)
        return httpx.Response(status, headers=headers, content=body, request=request)

    handle_request.__wrapped__ = original  # type: ignore[attr-defined]
    handle_request.__doc__ = original.__doc__
    return handle_request


def _iter(stream: Iterable[bytes]) -> Iterator[bytes]:
    yield from stream
