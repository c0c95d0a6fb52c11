"""GCRA, the token bucket as one number per key.

A bucket of ``burst`` tokens refilled every ``interval`` seconds is stored as its
*theoretical arrival time* (TAT): the time at which the bucket will be full again.
A request is admitted when, after it, the TAT is at most ``burst`` intervals ahead of
now. A TAT in the past is a full bucket, so such a key can be forgotten. Backends
(memory, embedded, Redis' Lua) all implement exactly this arithmetic.
"""

from __future__ import annotations

import math
from typing import NamedTuple

__all__ = ["Bucket", "BucketOutcome", "gcra"]


class Bucket(NamedTuple):
    """One level to charge: its key, refill interval (1 / rate) and capacity."""

    key: str
    interval_s: float
    burst: int


class BucketOutcome(NamedTuple):
    """What one level says about one request."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: float  # until the bucket is full again
    retry_after_s: float  # until one token is back (0 when allowed)


def gcra(tat: float | None, now: float, bucket: Bucket) -> tuple[BucketOutcome, float]:
    """Outcome of one request against ``bucket`` and the TAT to store if it is admitted."""
    interval = bucket.interval_s
    capacity = bucket.burst * interval
    new_tat = max(tat if tat is not None else now, now) + interval
    ahead = new_tat - now
    if ahead <= capacity + 1e-9:
        remaining = math.floor((capacity - ahead) / interval + 1e-9)
        return BucketOutcome(True, bucket.burst, remaining, ahead, 0.0), new_tat
    current = new_tat - interval  # refused: the TAT stays as it is
    return BucketOutcome(False, bucket.burst, 0, current - now, ahead - capacity), current
