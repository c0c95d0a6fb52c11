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

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["RateLimitVerdict", "RateLimiter", "client_ip", "render_refusal"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RateLimitVerdict(NamedTuple):
    """The outcome of the tightest level: the refusing one, or the one with least left."""

    allowed: bool
    level: str
    limit: int
    remaining: int
    reset_s: float
    retry_after_s: float

    def headers(self) -> list[tuple[str, str]]:
        """``RateLimit-*`` (IETF draft, delta seconds) and their ``X-RateLimit-*`` twins."""
        reset = str(math.ceil(self.reset_s))
        values = [("Limit", str(self.limit)), ("Remaining", str(self.remaining)), ("Reset", reset)]
        headers = [(f"RateLimit-{name}", value) for name, value in values]
        headers += [(f"X-RateLimit-{name}", value) for name, value in values]
        if not self.allowed:
            headers.append(("Retry-After", str(max(1, math.ceil(self.retry_after_s)))))
        return headers


class RateLimiter:
    """Checks one request against the enabled levels of a :class:`RateLimitConfig`.

    Usage::

        limiter = RateLimiter(MemoryStore())
        verdict = limiter.check(config.rate_limit, "10.0.0.7", "/users/<id>", time.monotonic())
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def check(
        self, config: RateLimitConfig, client: str, endpoint: str, now: float
    ) -> RateLimitVerdict | None:
        """None when no level is enabled; else the verdict (the store is charged if allowed)."""
        levels, buckets = _buckets(config, client, endpoint)
        if not buckets:
            return None
        outcomes = self.store.acquire(buckets, now)
        return _tightest(levels, outcomes)


def _buckets(
    config: RateLimitConfig, client: str, endpoint: str
) -> tuple[list[str], list[Bucket]]:
    levels: list[str] = []
    buckets: list[Bucket] = []
    if config.global_limit:
        levels.append("global")
        buckets.append(_global_bucket(config.requests_per_second, config.burst_size))
    if config.per_ip:
        rate = config.per_ip_requests_per_second or config.requests_per_second
        levels.append("per_ip")
        buckets.append(
            Bucket(f"ip:{client}", 1.0 / rate, config.per_ip_burst_size or config.burst_size)
        )
    if config.per_endpoint:
        rate = config.per_endpoint_requests_per_second or config.requests_per_second
        burst = config.per_endpoint_burst_size or config.burst_size
        levels.append("per_endpoint")
        buckets.append(Bucket(f"endpoint:{endpoint}", 1.0 / rate, burst))
    return levels, buckets


@functools.lru_cache(maxsize=64)
def _global_bucket(rate: float, burst: int) -> Bucket:
    return Bucket("global", 1.0 / rate, burst)


def _tightest(levels: Sequence[str], outcomes: Sequence[BucketOutcome]) -> RateLimitVerdict:
    refused = [(o.retry_after_s, i) for i, o in enumerate(outcomes) if not o.allowed]
    if refused:
        index = max(refused)[1]
    else:
        index = min(range(len(outcomes)), key=lambda i: outcomes[i].remaining)
    o = outcomes[index]
    return RateLimitVerdict(
        o.allowed, levels[index], o.limit, o.remaining, o.reset_s, o.retry_after_s
    )


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
            "limit": verdict.limit,
            "retry_after_s": max(1, math.ceil(verdict.retry_after_s)),
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
