"""Rate limiting: token buckets at three levels, checked together, and the 429 answer.

Levels: one global bucket, one per client IP, one per endpoint (route template or
path). A request passes only if every enabled level admits it; a refused request is
charged to no level (the store charges all or nothing).
"""

from __future__ import annotations

import functools
import ipaddress
import json
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from .config import RateLimitConfig
from .state import Bucket, BucketOutcome, Store
from .state.gcra import new

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["RateLimitVerdict", "RateLimiter", "client_ip", "render_refusal"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RateLimitVerdict(NamedTuple):
    """The tightest level's outcome: the refusing one, or the one with least left."""

    level: str
    outcome: BucketOutcome

    @property
    def allowed(self) -> bool:
        return self.outcome.allowed

    def headers(self) -> list[tuple[str, str]]:
        """``RateLimit-*`` (IETF draft, delta seconds) and their ``X-RateLimit-*`` twins."""
        outcome = self.outcome
        limit, remaining = str(outcome.limit), str(outcome.remaining)
        reset = str(math.ceil(outcome.reset_s))
        headers = [
            ("RateLimit-Limit", limit),
            ("RateLimit-Remaining", remaining),
            ("RateLimit-Reset", reset),
            ("X-RateLimit-Limit", limit),
            ("X-RateLimit-Remaining", remaining),
            ("X-RateLimit-Reset", reset),
        ]
        if not outcome.allowed:
            headers.append(("Retry-After", str(self.retry_after)))
        return headers

    @property
    def retry_after(self) -> int:
        """Whole seconds until a token is back, rounded up (at least 1)."""
        return max(1, math.ceil(self.outcome.retry_after_s))


class _Levels(NamedTuple):
    """What a config says about levels, computed once per config object."""

    names: tuple[str, ...]
    global_buckets: tuple[Bucket, ...]  # () or (the global bucket,)
    per_ip: tuple[float, int] | None  # interval, burst
    per_endpoint: tuple[float, int] | None
    keyed: bool  # a per-IP or per-endpoint level: buckets named per request


class RateLimiter:
    """Checks one request against the enabled levels of a :class:`RateLimitConfig`.

    Usage::

        limiter = RateLimiter(MemoryStore())
        verdict = limiter.check(config.rate_limit, "10.0.0.7", "/users/<id>", time.monotonic())
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._config: RateLimitConfig | None = None
        self._levels = _levels(RateLimitConfig())

    def check(
        self, config: RateLimitConfig, client: str, endpoint: str, now: float
    ) -> RateLimitVerdict | None:
        """None when no level is enabled; else the verdict (the store is charged if allowed)."""
        if config is not self._config:  # configs are frozen: identity is enough
            self._levels, self._config = _levels(config), config
        levels = self._levels
        buckets: Sequence[Bucket] = levels.global_buckets
        if levels.keyed:
            keyed = list(buckets)
            if levels.per_ip is not None:
                keyed.append(new(Bucket, ("ip:" + client, *levels.per_ip)))
            if levels.per_endpoint is not None:
                keyed.append(new(Bucket, ("endpoint:" + endpoint, *levels.per_endpoint)))
            buckets = keyed
        if not buckets:
            return None
        index, outcome = self.store.acquire(buckets, now)
        return new(RateLimitVerdict, (levels.names[index], outcome))  # type: ignore[no-any-return]


def _levels(config: RateLimitConfig) -> _Levels:
    rate, burst = config.requests_per_second, config.burst_size
    names = []
    global_buckets: tuple[Bucket, ...] = ()
    per_ip = per_endpoint = None
    if config.global_limit:
        names.append("global")
        global_buckets = (Bucket("global", 1.0 / rate, burst),)
    if config.per_ip:
        names.append("per_ip")
        per_ip = (
            1.0 / (config.per_ip_requests_per_second or rate),
            config.per_ip_burst_size or burst,
        )
    if config.per_endpoint:
        names.append("per_endpoint")
        per_endpoint = (
            1.0 / (config.per_endpoint_requests_per_second or rate),
            config.per_endpoint_burst_size or burst,
        )
    keyed = per_ip is not None or per_endpoint is not None
    return _Levels(tuple(names), global_buckets, per_ip, per_endpoint, keyed)


def client_ip(environ: WSGIEnvironment, trusted_proxies: tuple[str, ...] = ()) -> str:
    """The client address: REMOTE_ADDR, or X-Forwarded-For only behind a trusted proxy.

    With trusted proxies, the chain is read from the right and the first address that
    is not itself a trusted proxy is the client (so a client cannot forge its way in
    by prepending addresses).
    """
    remote = str(environ.get("REMOTE_ADDR") or "unknown")
    if not trusted_proxies:
        return remote
    networks = _networks(trusted_proxies)
    if not _trusted(remote, networks):
        return remote
    forwarded = str(environ.get("HTTP_X_FORWARDED_FOR", ""))
    for hop in reversed([part.strip() for part in forwarded.split(",") if part.strip()]):
        if not _trusted(hop, networks):
            return hop
    return remote


@functools.lru_cache(maxsize=16)
def _networks(trusted_proxies: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in trusted_proxies)


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def render_refusal(
    verdict: RateLimitVerdict,
    start_response: StartResponse,
    extra_headers: list[tuple[str, str]],
) -> Iterable[bytes]:
    """The 429 answer: a JSON body; ``extra_headers`` carry Retry-After and RateLimit-*."""
    body = json.dumps(
        {
            "error": "rate limit exceeded",
            "level": verdict.level,
            "limit": verdict.outcome.limit,
            "retry_after_s": verdict.retry_after,
            "injected_by": "mockforge",
        }
    ).encode()
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        *extra_headers,
    ]
    start_response("429 Too Many Requests", headers)
    return [body]
