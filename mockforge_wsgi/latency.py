"""Latency injection: decide a delay from the config and a random source (apply.Delivery
holds it, through release.py, so chaos off can wake it)."""

from __future__ import annotations

import math
import random

from .config import MAX_DELAY_MS, LatencyConfig

__all__ = ["decide_delay"]


def decide_delay(config: LatencyConfig, rng: random.Random) -> float | None:
    """The delay in milliseconds for one request, or None when it gets none.

    Pure: draws only from ``rng`` and never sleeps, so a seeded ``rng`` replays the
    same decisions.
    """
    if not config.enabled:
        return None
    if config.probability < 1.0 and rng.random() >= config.probability:
        return None
    delay = _base_delay(config, rng)
    if config.jitter_percent:
        delay *= 1.0 + rng.uniform(-config.jitter_percent, config.jitter_percent) / 100.0
    # A distribution's tail (all but fixed and uniform) is unbounded; what a server can
    # hold is not.
    delay = min(delay, config.cap_ms if config.cap_ms is not None else MAX_DELAY_MS)
    return delay if delay > 0.0 else None


def _base_delay(config: LatencyConfig, rng: random.Random) -> float:
    distribution = config.distribution
    if distribution == "auto":
        distribution = "uniform" if config.random_delay_range_ms is not None else "fixed"
    if distribution == "uniform":
        assert config.random_delay_range_ms is not None  # guaranteed by LatencyConfig
        low, high = config.random_delay_range_ms
        return rng.uniform(low, high)
    if distribution == "normal":
        return max(0.0, rng.gauss(config.fixed_delay_ms, config.stddev_ms))
    if distribution == "lognormal":
        if config.median_ms <= 0.0:
            return 0.0
        return rng.lognormvariate(math.log(config.median_ms), config.sigma)
    if distribution == "pareto":  # P(X > x) = (scale / x) ** shape, for x >= scale
        return config.scale_ms * rng.paretovariate(config.shape)
    if distribution == "exponential":  # mean scale_ms: P(X > x) = exp(-x / scale)
        return rng.expovariate(1.0 / config.scale_ms) if config.scale_ms > 0.0 else 0.0
    return config.fixed_delay_ms
