"""Rate limiting: token buckets at three levels, checked together, and the 429 answer.

Levels: one global bucket, one per client IP, one per endpoint (route template or
path). A request passes only if every enabled level admits it; a refused request is
charged to no level (the store charges all or nothing).
"""

from __future__ import annotations

import functools
import ipaddress
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from ._answers import answer_json
from .config import RateLimitConfig
from .state import Bucket, BucketOutcome, Store
from .state.gcra import new

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["RateLimitVerdict", "RateLimiter", "client_ip", "client_of", "render_refusal"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RateLimitVerdict(NamedTuple):
    """The tightest level's outcome: the refusing one, or the one with least left."""

    level: str
    outcome: BucketOutcome

    @property
    def allowed(self) -> bool:
        return self.outcome.allowed

    def headers(self, style: str = "both") -> list[tuple[str, str]]:
        """``RateLimit-*`` (IETF draft, delta seconds) and their ``X-RateLimit-*`` twins,
        as ``style`` (rate_limit.headers) says: both, ietf, legacy or none; a refusal
        adds ``Retry-After`` whatever the style."""
        global _last_admitted
        outcome = self.outcome
        key = (outcome.limit, outcome.remaining, math.ceil(outcome.reset_s), style)
        if outcome.allowed:
            last_key, last_headers = _last_admitted
            if last_key == key:  # well under the limit, every answer says the same
                return list(last_headers)
        limit, remaining, reset = str(key[0]), str(key[1]), str(key[2])
        headers: list[tuple[str, str]] = []
        for prefix in _PREFIXES[style]:
            headers += (
                (prefix + "Limit", limit),
                (prefix + "Remaining", remaining),
                (prefix + "Reset", reset),
            )
        if not outcome.allowed:
            headers.append(("Retry-After", str(self.retry_after)))
        else:
            _last_admitted = (key, tuple(headers))  # swapped whole: threads read a pair
        return headers

    @property
    def retry_after(self) -> int:
        """Whole seconds until a token is back, rounded up (at least 1)."""
        return max(1, math.ceil(self.outcome.retry_after_s))


# Lease mode (a shared store): a worker takes about this long's worth of the rate at a
# time (at most a quarter of the burst, at least one token), and gives back what it has
# not spent after LEASE_TTL_S, on its next check. A refusal is remembered as long
# (at most) and answered locally until a token can be back.
LEASE_WINDOW_S = 0.01
LEASE_TTL_S = 0.05
MAX_LEASES = 4096  # per process (a lease per client IP or endpoint); the oldest goes
MAX_KNOWN_CONFIGS = 64  # rate-limit configs whose levels are kept (the global one, rules)


class _Lease:
    """Tokens of one set of buckets this process holds, or a refusal it remembers."""

    __slots__ = (
        "expires",
        "index",
        "limit",
        "refused",
        "remaining",
        "reset_at",
        "retry_at",
        "tokens",
    )

    def __init__(self, index: int, outcome: BucketOutcome, tokens: int, now: float) -> None:
        self.index, self.limit, self.tokens = index, outcome.limit, tokens
        self.remaining = outcome.remaining  # in the store, after this lease was taken
        self.reset_at = now + outcome.reset_s
        self.refused = not outcome.allowed
        self.retry_at = now + outcome.retry_after_s
        self.expires = now + (
            min(outcome.retry_after_s, LEASE_TTL_S) if self.refused else LEASE_TTL_S
        )


# Forks this process is down from (os.getpid() is a system call on every check; this is
# a global read): a limiter drops leases taken before the fork, which are its parent's.
_forks = 0


def _forked() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_forked)

# The headers of the last admitted verdict, by (limit, remaining, reset, style): a bucket
# far from empty gives the same values request after request.
_last_admitted: tuple[tuple[int, int, int, str], tuple[tuple[str, str], ...]] = (
    (0, -1, 0, ""),
    (),
)
# rate_limit.headers: the header families each style sends (names without the field).
_PREFIXES = {
    "both": ("RateLimit-", "X-RateLimit-"),
    "ietf": ("RateLimit-",),
    "legacy": ("X-RateLimit-",),
    "none": (),
}


class _Levels(NamedTuple):
    """What a config says about levels, computed once per config object."""

    names: tuple[str, ...]
    global_buckets: tuple[Bucket, ...]  # () or (the global bucket,)
    per_ip: tuple[float, int] | None  # interval, burst
    per_endpoint: tuple[float, int] | None
    keyed: bool  # a per-IP or per-endpoint level: buckets named per request
    lease_size: int  # tokens a lease takes (the smallest any level allows)


class RateLimiter:
    """Checks one request against the enabled levels of a :class:`RateLimitConfig`.

    Usage::

        limiter = RateLimiter(MemoryStore())
        verdict = limiter.check(config.rate_limit, "10.0.0.7", "/users/<id>", time.monotonic())

    ``prefix`` goes before every bucket's name: the outbound direction's limiter
    (``outbound:``) shares a store with inbound's, and its buckets never meet theirs.
    """

    def __init__(self, store: Store, *, prefix: str = "") -> None:
        self.store = store
        self.prefix = prefix
        self._ip = prefix + "ip:"
        self._endpoint = prefix + "endpoint:"
        # (config, its levels, leased?) of the last check, replaced whole: threads that
        # switch configs concurrently each read a matching triple.
        default = RateLimitConfig()
        self._current: tuple[RateLimitConfig, _Levels, bool] = (
            default,
            _levels(default, prefix),
            False,
        )
        self._leases: OrderedDict[Any, _Lease] = OrderedDict()
        self._known: dict[int, tuple[RateLimitConfig, _Levels, bool]] = {}
        self._leases_forks = _forks  # the leases were taken in this process
        self._lease_lock = threading.Lock()

    def check(
        self, config: RateLimitConfig, client: str, endpoint: str, now: float
    ) -> RateLimitVerdict | None:
        """None when no level is enabled; else the verdict (the store is charged if allowed)."""
        current = self._current
        if current[0] is not config:  # configs are frozen: identity is enough
            current = self._switch_to(config)
        _, levels, leased = current
        buckets: Sequence[Bucket] = levels.global_buckets
        if levels.keyed:
            keyed = list(buckets)
            if levels.per_ip is not None:
                keyed.append(new(Bucket, (self._ip + client, *levels.per_ip)))
            if levels.per_endpoint is not None:
                keyed.append(new(Bucket, (self._endpoint + endpoint, *levels.per_endpoint)))
            buckets = keyed
        if not buckets:
            return None
        if leased:
            index, outcome = self._from_lease(buckets, levels.lease_size, now)
        else:
            index, outcome = self.store.acquire(buckets, now)
        return new(RateLimitVerdict, (levels.names[index], outcome))  # type: ignore[no-any-return]

    def _switch_to(self, config: RateLimitConfig) -> tuple[RateLimitConfig, _Levels, bool]:
        """Levels of ``config``, computed once per config object. Per-route rules switch
        between a few configs request by request; a config never seen before is a change
        of the state (a reset among them), and the leases of the old one are dropped."""
        known = self._known.get(id(config))
        if known is None or known[0] is not config:
            leased = config.store_mode == "lease" and self.store.shared
            known = (config, _levels(config, self.prefix), leased)
            if len(self._known) >= MAX_KNOWN_CONFIGS:
                self._known.clear()
            self._known[id(config)] = known
            with self._lease_lock:
                self._leases.clear()
        self._current = known
        return known

    def _from_lease(
        self, buckets: Sequence[Bucket], size: int, now: float
    ) -> tuple[int, BucketOutcome]:
        """Spend a token this process already holds, or take a new lease in one store
        call (giving back an expired lease's unspent tokens in the same call)."""
        # By bucket, not key alone: a rule's limit may name the same key at another rate.
        key = buckets[0] if len(buckets) == 1 else tuple(buckets)
        with self._lease_lock:
            if self._leases_forks != _forks:  # forked: the parent's leases are its own
                self._leases.clear()
                self._leases_forks = _forks
            lease = self._leases.get(key)
            give_back = 0
            if lease is not None:
                if now < lease.expires:
                    self._leases.move_to_end(key)  # the least recently used goes first
                    if lease.tokens > 0:
                        lease.tokens -= 1
                        return lease.index, new(
                            BucketOutcome,
                            (
                                True,
                                lease.limit,
                                lease.remaining + lease.tokens,
                                max(lease.reset_at - now, 0.0),
                                0.0,
                            ),
                        )
                    if lease.refused:
                        return lease.index, new(
                            BucketOutcome,
                            (
                                False,
                                lease.limit,
                                0,
                                max(lease.reset_at - now, 0.0),
                                max(lease.retry_at - now, 0.0),
                            ),
                        )
                give_back = lease.tokens
                del self._leases[key]
            # A failed call forgets the lease: its tokens are neither spent nor given back
            # (the bucket refills them within LEASE_WINDOW_S).
            index, outcome, granted = self.store.take(buckets, now, size, give_back)
            fresh = _Lease(index, outcome, max(granted - 1, 0), now)
            self._leases[key] = fresh
            while len(self._leases) > MAX_LEASES:
                self._leases.popitem(last=False)
            if granted:
                outcome = new(
                    BucketOutcome,
                    (True, outcome.limit, outcome.remaining + fresh.tokens, outcome.reset_s, 0.0),
                )
            return index, outcome


def _levels(config: RateLimitConfig, prefix: str = "") -> _Levels:
    rate, burst = config.requests_per_second, config.burst_size
    names = []
    global_buckets: tuple[Bucket, ...] = ()
    per_ip = per_endpoint = None
    if config.global_limit:
        names.append("global")
        global_buckets = (Bucket(prefix + "global", 1.0 / rate, burst),)
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
    levels = [
        level
        for level in (*((b.interval_s, b.burst) for b in global_buckets), per_ip, per_endpoint)
        if level
    ]
    lease_size = min(
        (max(1, min(int(LEASE_WINDOW_S / interval), burst // 4)) for interval, burst in levels),
        default=1,
    )
    return _Levels(tuple(names), global_buckets, per_ip, per_endpoint, keyed, lease_size)


def client_ip(environ: WSGIEnvironment, trusted_proxies: tuple[str, ...] = ()) -> str:
    """The client address of a WSGI request (see :func:`client_of`)."""
    remote = str(environ.get("REMOTE_ADDR") or "unknown")
    if not trusted_proxies:
        return remote
    return client_of(remote, str(environ.get("HTTP_X_FORWARDED_FOR", "")), trusted_proxies)


def client_of(remote: str, forwarded_for: str | None, trusted_proxies: tuple[str, ...]) -> str:
    """The client address: the peer's (``remote``), or the ``X-Forwarded-For`` chain's
    only behind a trusted proxy.

    With trusted proxies, the chain is read from the right and the first address that
    is not itself a trusted proxy is the client (so a client cannot forge its way in
    by prepending addresses).
    """
    remote = remote or "unknown"
    if not trusted_proxies:
        return remote
    networks = _networks(trusted_proxies)
    if not _trusted(remote, networks):
        return remote
    forwarded = forwarded_for or ""
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
    data = {
        "error": "rate limit exceeded",
        "level": verdict.level,
        "limit": verdict.outcome.limit,
        "retry_after_s": verdict.retry_after,
        "injected_by": "mockforge",
    }
    return answer_json(start_response, 429, data, extra_headers)
