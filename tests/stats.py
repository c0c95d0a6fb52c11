"""Bounds for statistical tests, derived from the distribution rather than guessed."""

from __future__ import annotations

import math

# Four standard deviations: a correct implementation falls outside with chance ~6e-5;
# with the fixed seeds the tests use, the outcome is deterministic anyway.
SIGMAS = 4.0


def binomial_bounds(trials: int, probability: float) -> tuple[float, float]:
    """Range that a Binomial(trials, probability) count falls in (mean +/- 4 sigma)."""
    mean = trials * probability
    spread = SIGMAS * math.sqrt(trials * probability * (1.0 - probability))
    return mean - spread, mean + spread


def assert_binomial(count: int, trials: int, probability: float) -> None:
    low, high = binomial_bounds(trials, probability)
    assert low <= count <= high, (
        f"{count}/{trials} is outside [{low:.1f}, {high:.1f}] for p={probability}"
    )
