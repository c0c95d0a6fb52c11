"""GCRA, the token bucket as one number per key.

A bucket of ``burst`` tokens refilled every ``interval`` seconds is stored as its
*theoretical arrival time* (TAT): the time at which the bucket will be full again.
A request is admitted when, after it, the TAT is at most ``burst`` intervals ahead of
now. A TAT in the past is a full bucket, so such a key can be forgotten. Every backend
charges with exactly this arithmetic (Redis runs the same steps in Lua).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

__all__ = ["Bucket", "BucketOutcome", "charge", "new", "take"]

# Float slack so that exactly `burst` requests at one instant all pass.
_EPSILON = 1e-9


class Bucket(NamedTuple):
    """One level to charge: its key, refill interval (1 / rate) and capacity."""

    key: str
    interval_s: float
    burst: int


class BucketOutcome(NamedTuple):
    """What the tightest level says about one request."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: float  # until the bucket is full again
    retry_after_s: float  # until a token is back (0 when allowed)


def charge(
    tat_of: Callable[[str], float | None], buckets: Sequence[Bucket], now: float
) -> tuple[int, BucketOutcome, list[float] | None]:
    """Charge one request to every bucket, all or nothing.

    Returns the index of the tightest bucket (the refusing one that frees up last, or
    the admitting one with the fewest tokens left), its outcome, and the TATs to store
    in bucket order, or None when refused (nothing is to be stored then).
    """
    if len(buckets) == 1:  # one level (the global limit): the same steps, unrolled
        key, interval, burst = buckets[0]
        tat = tat_of(key)
        new_tat = (tat if tat is not None and tat > now else now) + interval
        over = new_tat - now - burst * interval
        if over > _EPSILON:
            outcome = new(BucketOutcome, (False, burst, 0, new_tat - interval - now, over))
            return 0, outcome, None
        remaining = int(-over / interval + _EPSILON)
        return 0, new(BucketOutcome, (True, burst, remaining, new_tat - now, 0.0)), [new_tat]
    index, outcome, _, new_tats = take(tat_of, buckets, now, 1)  # several: a lease of one
    return index, outcome, new_tats


def take(
    tat_of: Callable[[str], float | None],
    buckets: Sequence[Bucket],
    now: float,
    want: int,
    give_back: int = 0,
) -> tuple[int, BucketOutcome, int, list[float] | None]:
    """Take up to ``want`` tokens from every bucket at once (a lease), after giving back
    ``give_back`` unspent tokens of an earlier lease of the same buckets.

    The same arithmetic as :func:`charge`, n requests at a time: ``take(.., want=1)``
    decides exactly as ``charge``. Returns the tightest bucket's index and outcome
    (``remaining`` after the whole grant), the tokens granted (0: refused, as
    ``charge`` refuses one request), and the TATs to store (None: nothing to store).
    """
    tats = []
    granted = want
    for key, interval, burst in buckets:
        tat = tat_of(key)
        tat = (tat if tat is not None else now) - give_back * interval
        tat = tat if tat > now else now
        tats.append(tat)
        # Tokens free now: the TAT may move up to `burst` intervals ahead of now.
        free = int((now + burst * interval - tat) / interval + _EPSILON)
        granted = min(granted, free)
    if granted <= 0:
        # Refused: the level whose next token comes last says when (as charge does).
        refused, wait = max(
            enumerate(
                tat + interval - now - burst * interval
                for tat, (_, interval, burst) in zip(tats, buckets, strict=True)
            ),
            key=lambda item: item[1],
        )
        _, interval, burst = buckets[refused]
        outcome = new(BucketOutcome, (False, burst, 0, tats[refused] - now, wait))
        return refused, outcome, 0, (tats if give_back else None)
    new_tats = [
        tat + granted * interval for tat, (_, interval, _) in zip(tats, buckets, strict=True)
    ]
    tightest, room = 0, math.inf
    for index, (new_tat, (_, interval, burst)) in enumerate(zip(new_tats, buckets, strict=True)):
        over = new_tat - now - burst * interval  # compared as charge compares them
        if -over < room * interval:
            tightest, room = index, -over / interval
    reset = new_tats[tightest] - now
    limit = buckets[tightest][2]
    outcome = new(BucketOutcome, (True, limit, int(room + _EPSILON), reset, 0.0))
    return tightest, outcome, granted, new_tats


# A NamedTuple's own constructor is a Python-level call (~0.3 us); on the per-request
# path the tuple is built directly, with the same fields in the same order.
new: Callable[..., Any] = tuple.__new__
