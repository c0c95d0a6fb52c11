"""mockforge_wsgi: chaos engineering for synchronous Python web stacks."""

from __future__ import annotations

from ._version import __version__
from .config import (
    ChaosConfig,
    ConfigError,
    FaultInjectionConfig,
    LatencyConfig,
    RateLimitConfig,
    TrafficShapingConfig,
    load_config,
)
from .middleware import ChaosMiddleware

__all__ = [
    "ChaosConfig",
    "ChaosMiddleware",
    "ConfigError",
    "FaultInjectionConfig",
    "LatencyConfig",
    "RateLimitConfig",
    "TrafficShapingConfig",
    "__version__",
    "load_config",
]
