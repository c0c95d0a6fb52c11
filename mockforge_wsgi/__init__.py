"""mockforge_wsgi: chaos engineering for synchronous Python web stacks."""

from __future__ import annotations

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

__version__ = "0.1.0"

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
