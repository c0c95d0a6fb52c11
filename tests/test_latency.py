"""Latency decisions: distributions, jitter, cap and probability, with fixed seeds."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from stats import SIGMAS, assert_binomial

from mockforge_wsgi.config import LatencyConfig
from mockforge_wsgi.latency import decide_delay

N = 4000


def delays(config: LatencyConfig, seed: int = 1234, n: int = N) -> list[float | None]:
    rng = random.Random(seed)
    return [decide_delay(config, rng) for _ in range(n)]


def test_disabled_never_delays() -> None:
    assert set(delays(LatencyConfig(enabled=False, fixed_delay_ms=100))) == {None}


def test_fixed_delay_is_exact() -> None:
    assert set(delays(LatencyConfig(enabled=True, fixed_delay_ms=200), n=100)) == {200.0}


def test_zero_delay_is_no_delay() -> None:
    assert set(delays(LatencyConfig(enabled=True), n=10)) == {None}


@pytest.mark.parametrize("probability", [0.05, 0.3, 0.8])
def test_probability_holds(probability: float) -> None:
    config = LatencyConfig(enabled=True, fixed_delay_ms=10, probability=probability)
    hits = sum(delay is not None for delay in delays(config))
    assert_binomial(hits, N, probability)


def test_uniform_range_stays_inside_and_centres() -> None:
    config = LatencyConfig(enabled=True, random_delay_range_ms=(100.0, 500.0))
    values = [d for d in delays(config) if d is not None]
    assert len(values) == N
    assert min(values) >= 100.0
    assert max(values) <= 500.0
    # Mean of U(100, 500) is 300 with standard deviation 400/sqrt(12) per draw.
    stderr = 400 / math.sqrt(12) / math.sqrt(N)
    assert abs(statistics.fmean(values) - 300.0) <= SIGMAS * stderr


def test_jitter_stays_within_percent() -> None:
    config = LatencyConfig(enabled=True, fixed_delay_ms=1000, jitter_percent=20)
    values = [d for d in delays(config) if d is not None]
    assert 800.0 <= min(values) < 850.0
    assert 1150.0 < max(values) <= 1200.0
    stderr = 400 / math.sqrt(12) / math.sqrt(N)
    assert abs(statistics.fmean(values) - 1000.0) <= SIGMAS * stderr


def test_lognormal_median_and_cap() -> None:
    config = LatencyConfig(
        enabled=True, distribution="lognormal", median_ms=100, sigma=1.0, cap_ms=400
    )
    values = [d for d in delays(config) if d is not None]
    assert max(values) == 400.0  # the long tail is capped
    # The sample median of a continuous distribution: the share below the true median
    # is Binomial(N, 0.5).
    below = sum(value < 100.0 for value in values)
    assert_binomial(below, N, 0.5)
    # P(X > 400) = P(Z > ln 4 / sigma) for the uncapped variable.
    tail = 0.5 * math.erfc(math.log(4) / math.sqrt(2))
    assert_binomial(sum(value == 400.0 for value in values), N, tail)


@pytest.mark.parametrize("shape", [1.16, 3.0])
def test_pareto_quantiles_and_cap(shape: float) -> None:
    config = LatencyConfig(
        enabled=True, distribution="pareto", scale_ms=50, shape=shape, cap_ms=400
    )
    values = [d for d in delays(config) if d is not None]
    assert len(values) == N
    assert min(values) >= 50.0  # the scale is the smallest delay
    # Quantile q of Pareto(scale, shape): scale * (1 - q) ** (-1 / shape); the share
    # below each is Binomial(N, q) (those beyond the cap: checked as the capped share).
    quantiles = [(q, 50.0 * (1 - q) ** (-1 / shape)) for q in (0.25, 0.5, 0.9, 0.99)]
    assert len([q for q, quantile in quantiles if quantile < 400]) >= 3
    for q, quantile in quantiles:
        if quantile < 400:
            assert_binomial(sum(value < quantile for value in values), N, q)
    # P(X > 400) = (50 / 400) ** shape for the uncapped variable: those are capped.
    assert_binomial(sum(value == 400.0 for value in values), N, (50 / 400) ** shape)


def test_exponential_quantiles_mean_and_cap() -> None:
    config = LatencyConfig(enabled=True, distribution="exponential", scale_ms=100, cap_ms=500)
    values = [d for d in delays(config) if d is not None]
    # Quantile q of Exp(mean 100): -100 * ln(1 - q).
    for q in (0.1, 0.5, 0.9, 0.99):
        assert_binomial(sum(value < -100 * math.log(1 - q) for value in values), N, q)
    # P(X > 500) = e^-5: capped.
    assert_binomial(sum(value == 500.0 for value in values), N, math.exp(-5))
    uncapped = LatencyConfig(enabled=True, distribution="exponential", scale_ms=100)
    # The mean is the scale; one draw's deviation is the scale too.
    drawn = [d for d in delays(uncapped) if d is not None]
    assert abs(statistics.fmean(drawn) - 100.0) <= SIGMAS * 100.0 / math.sqrt(N)


def test_exponential_of_zero_scale_is_no_delay() -> None:
    config = LatencyConfig(enabled=True, distribution="exponential", scale_ms=0)
    assert set(delays(config, n=10)) == {None}


def test_normal_is_clipped_at_zero() -> None:
    config = LatencyConfig(enabled=True, distribution="normal", fixed_delay_ms=50, stddev_ms=50)
    values = delays(config)
    assert all(value is None or value > 0 for value in values)
    # P(X <= 0) = P(Z <= -1): those requests get no delay.
    assert_binomial(sum(value is None for value in values), N, 0.5 * math.erfc(1 / math.sqrt(2)))


def test_same_seed_same_decisions() -> None:
    config = LatencyConfig(
        enabled=True, random_delay_range_ms=(0.0, 100.0), jitter_percent=10, probability=0.5
    )
    assert delays(config, seed=99, n=500) == delays(config, seed=99, n=500)
    assert delays(config, seed=99, n=500) != delays(config, seed=100, n=500)


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(
            LatencyConfig(enabled=True, distribution="lognormal", median_ms=600_000, sigma=5),
            id="lognormal-tail",
        ),
        pytest.param(
            LatencyConfig(
                enabled=True, distribution="normal", fixed_delay_ms=600_000, stddev_ms=600_000
            ),
            id="normal-tail",
        ),
        pytest.param(
            LatencyConfig(enabled=True, distribution="pareto", scale_ms=600_000, shape=0.1),
            id="pareto-tail",
        ),
        pytest.param(
            LatencyConfig(enabled=True, distribution="exponential", scale_ms=600_000),
            id="exponential-tail",
        ),
        pytest.param(
            LatencyConfig(enabled=True, fixed_delay_ms=600_000, jitter_percent=100),
            id="jitter-above",
        ),
    ],
)
def test_no_tail_outlasts_what_a_server_can_hold(config: LatencyConfig) -> None:
    from mockforge_wsgi.config import MAX_DELAY_MS

    drawn = [d for d in delays(config, n=1000) if d is not None]
    assert max(drawn) == MAX_DELAY_MS  # these tails reach far beyond it, often
    assert all(0 < d <= MAX_DELAY_MS for d in drawn)
