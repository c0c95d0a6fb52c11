"""Scenarios: named chaos configs. The built-in catalogue, custom ones from YAML or the
API (validated like config), and ramping a scenario in.

A scenario is a whole :class:`ChaosConfig`: while it is active (engine.py switches,
times and ramps them) it is the effective config.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs

from ._kinds import shown, unknown_name
from .config import ChaosConfig, ConfigError, config_from_dict, iter_settings, yaml_layer

__all__ = [
    "BUILTIN_SCENARIOS",
    "NETWORK_PROFILES",
    "PREDEFINED_SCENARIOS",
    "Scenario",
    "load_scenarios",
    "ramped",
    "scenario_from_dict",
    "unknown_scenario",
]

ScenarioKind = Literal["predefined", "network_profile", "custom"]
SCENARIO_NAME = re.compile(r"[A-Za-z0-9_-]{1,100}")


@attrs.frozen
class Scenario:
    """A named chaos config."""

    name: str
    description: str
    kind: ScenarioKind
    config: ChaosConfig

    def to_dict(self) -> dict[str, Any]:
        data = self.config.to_dict()
        for key in ("enabled", "scenario", "seed"):
            data.pop(key)
        return {"name": self.name, "description": self.description, "kind": self.kind, **data}


def _builtin(name: str, description: str, kind: ScenarioKind, **sections: Any) -> Scenario:
    config: ChaosConfig = config_from_dict({"enabled": True, "scenario": name, **sections})
    return Scenario(name, description, kind, config)


_ALL_ERRORS = [500, 502, 503, 504]

# The design note's five scenarios, with its values; where it leaves one open the choice
# is marked "chosen" and listed in docs/scenarios.md.
PREDEFINED_SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        _builtin(
            "network_degradation",
            "Poor network: 500 ms + 20% jitter, 5% packet loss, 100 KB/s.",
            "predefined",
            latency={"enabled": True, "fixed_delay_ms": 500, "jitter_percent": 20},
            traffic_shaping={
                "enabled": True,
                "bandwidth_limit_bps": 100_000,
                "packet_loss_percent": 5,
            },
        ),
        _builtin(
            "service_instability",
            "Unstable backend: 20% HTTP errors, 10% timeouts.",
            "predefined",
            fault_injection={
                "enabled": True,
                "http_errors": _ALL_ERRORS,  # chosen: the note's list
                "http_error_probability": 0.2,
                "timeout_probability": 0.1,
                "timeout_ms": 5000,  # chosen
            },
        ),
        _builtin(
            "cascading_failure",
            "Multiple failures: 1-5 s delays + 30% jitter, 30% errors, 20% timeouts, "
            "10% connection errors, 10 req/s.",
            "predefined",
            latency={"enabled": True, "random_delay_range_ms": [1000, 5000], "jitter_percent": 30},
            fault_injection={
                "enabled": True,
                "http_errors": _ALL_ERRORS,  # chosen
                "http_error_probability": 0.3,
                "timeout_probability": 0.2,
                "timeout_ms": 5000,  # chosen
                "connection_error_probability": 0.1,
            },
            rate_limit={"enabled": True, "requests_per_second": 10, "burst_size": 10},
        ),
        _builtin(
            "peak_traffic",
            "High load: 50 req/s global limit with burst 10, and per-endpoint limits.",
            "predefined",
            rate_limit={
                "enabled": True,
                "requests_per_second": 50,
                "burst_size": 10,
                "per_endpoint": True,  # chosen: each endpoint also 50 req/s, burst 10
            },
        ),
        _builtin(
            "slow_backend",
            "Slow service: 2 s + 10% jitter on every request.",
            "predefined",
            latency={
                "enabled": True,
                "fixed_delay_ms": 2000,
                "jitter_percent": 10,
                "probability": 1.0,
            },
        ),
    )
}

# Link conditions; the sources are in docs/scenarios.md. Latency is the round trip
# added to each request; bandwidth is bytes per second down (response) and up (request).
NETWORK_PROFILES: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        _builtin(
            "slow_3g",
            "Chrome DevTools 'Slow 3G': 2000 ms, 50 KB/s down and up.",
            "network_profile",
            latency={"enabled": True, "fixed_delay_ms": 2000},
            traffic_shaping={
                "enabled": True,
                "bandwidth_limit_bps": 50_000,
                "upload_bandwidth_limit_bps": 50_000,
            },
        ),
        _builtin(
            "fast_3g",
            "Chrome DevTools 'Fast 3G': 562.5 ms, 180 KB/s down, 84.4 KB/s up.",
            "network_profile",
            latency={"enabled": True, "fixed_delay_ms": 562.5},
            traffic_shaping={
                "enabled": True,
                "bandwidth_limit_bps": 180_000,
                "upload_bandwidth_limit_bps": 84_375,
            },
        ),
        _builtin(
            "flaky_wifi",
            "Congested Wi-Fi (our choice): 20-300 ms, 1.25 MB/s, 3% packet loss.",
            "network_profile",
            latency={"enabled": True, "random_delay_range_ms": [20, 300]},
            traffic_shaping={
                "enabled": True,
                "bandwidth_limit_bps": 1_250_000,
                "upload_bandwidth_limit_bps": 625_000,
                "packet_loss_percent": 3,
            },
        ),
        _builtin(
            "cable",
            "WebPageTest 'Cable': 28 ms, 5 Mbit/s down, 1 Mbit/s up.",
            "network_profile",
            latency={"enabled": True, "fixed_delay_ms": 28},
            traffic_shaping={
                "enabled": True,
                "bandwidth_limit_bps": 625_000,
                "upload_bandwidth_limit_bps": 125_000,
            },
        ),
        _builtin(
            "dialup",
            "WebPageTest '56K Dial-Up': 120 ms, 49 kbit/s down, 30 kbit/s up.",
            "network_profile",
            latency={"enabled": True, "fixed_delay_ms": 120},
            traffic_shaping={
                "enabled": True,
                "bandwidth_limit_bps": 6_125,
                "upload_bandwidth_limit_bps": 3_750,
            },
        ),
        _builtin(
            "fast_4g",
            "Chrome DevTools 'Fast 4G': 165 ms, 1,012.5 KB/s down, 168.75 KB/s up.",
            "network_profile",
            latency={"enabled": True, "fixed_delay_ms": 165},  # 60 ms RTT x 2.75
            traffic_shaping={
                "enabled": True,
                "bandwidth_limit_bps": 1_012_500,  # 9 Mbit/s x 0.9
                "upload_bandwidth_limit_bps": 168_750,  # 1.5 Mbit/s x 0.9
            },
        ),
        _builtin(
            "lte",
            "WebPageTest 'LTE': 70 ms, 12 Mbit/s down and up.",
            "network_profile",
            latency={"enabled": True, "fixed_delay_ms": 70},
            traffic_shaping={
                "enabled": True,
                "bandwidth_limit_bps": 1_500_000,
                "upload_bandwidth_limit_bps": 1_500_000,
            },
        ),
        _builtin(
            "edge",
            "WebPageTest 'Mobile Edge' (2G/EDGE): 840 ms, 240 kbit/s down, 200 kbit/s up.",
            "network_profile",
            latency={"enabled": True, "fixed_delay_ms": 840},
            traffic_shaping={
                "enabled": True,
                "bandwidth_limit_bps": 30_000,
                "upload_bandwidth_limit_bps": 25_000,
            },
        ),
        _builtin(
            "geo_satellite",
            "Geostationary satellite, Ookla's US medians for Viasat in Q2 2021: 630 ms, "
            "18.13 Mbit/s down, 3.38 Mbit/s up.",
            "network_profile",
            latency={"enabled": True, "fixed_delay_ms": 630},
            traffic_shaping={
                "enabled": True,
                "bandwidth_limit_bps": 2_266_250,
                "upload_bandwidth_limit_bps": 422_500,
            },
        ),
    )
}

BUILTIN_SCENARIOS: dict[str, Scenario] = {**PREDEFINED_SCENARIOS, **NETWORK_PROFILES}


def unknown_scenario(name: str, choices: Iterable[str], path: str) -> str:
    """``chaos.scenario: unknown scenario 'nope'; did you mean 'slow_3g'? (choices: ...)``"""
    return unknown_name("scenario", name, choices, path)


def scenario_from_dict(name: str, data: Any, path: str) -> tuple[Scenario, bool]:
    """A custom scenario from YAML or the API, and whether it may override a built-in.

    Takes ``description``, ``override`` and any config sections; validated like config.
    """
    if not isinstance(data, Mapping):
        raise ConfigError([f"{path}: {shown(data)} is not a mapping"])
    body = dict(data)
    problems = []
    description = body.pop("description", "")
    override = body.pop("override", False)
    if not isinstance(description, str):
        problems.append(f"{path}.description: {shown(description)} is not a string")
    if not isinstance(override, bool):
        problems.append(f"{path}.override: {shown(override)} is not a boolean")
    for key in ("enabled", "scenario", "seed"):
        if key in body:
            problems.append(f"{path}.{key}: not allowed in a scenario")
            body.pop(key)
    if not isinstance(name, str) or not SCENARIO_NAME.fullmatch(name):
        problems.append(f"{path}: name {shown(name)} is not letters, digits, '_' or '-'")
    config: ChaosConfig | None
    try:
        config = config_from_dict(
            {"enabled": True, "scenario": name, **body}, ChaosConfig, path=path
        )
    except ConfigError as error:
        problems.extend(error.problems)
        config = None
    if problems or config is None:
        raise ConfigError(problems)
    if name in BUILTIN_SCENARIOS and not override:
        raise ConfigError(
            [f"{path}: '{name}' is a built-in scenario; set override: true to replace it"]
        )
    return Scenario(name, description, "custom", config), override


def load_scenarios(path: str | os.PathLike[str]) -> tuple[Scenario, ...]:
    """Custom scenarios from a YAML file's ``chaos.scenarios`` mapping, all validated
    (one ConfigError listing every problem)."""
    block = yaml_layer(path).get("scenarios") or {}
    if not isinstance(block, Mapping):
        raise ConfigError(
            [f"chaos.scenarios: {shown(block)} is not a mapping of name to scenario"]
        )
    scenarios, problems = [], []
    for name, data in block.items():
        try:
            scenarios.append(scenario_from_dict(str(name), data, f"chaos.scenarios.{name}")[0])
        except ConfigError as error:
            problems.extend(error.problems)
    if problems:
        raise ConfigError(problems)
    return tuple(scenarios)


def ramped(config: ChaosConfig, fraction: float) -> ChaosConfig:
    """``config`` with every probability and delay scaled by ``fraction`` (0..1)."""
    if fraction >= 1.0:
        return config
    changes: dict[tuple[str, ...], dict[str, Any]] = {}
    for info in iter_settings():
        if not info.field.metadata["ramps"]:
            continue
        *where, name = info.path
        holder: Any = config
        for part in where:
            holder = getattr(holder, part)
        value = getattr(holder, name)
        if isinstance(value, tuple):
            value = tuple(item * fraction for item in value)
        elif value is not None:
            value = value * fraction
        changes.setdefault(tuple(where), {})[name] = value
    ramped_config: ChaosConfig = _evolved(config, (), changes)
    return ramped_config


def _evolved(
    section: Any, path: tuple[str, ...], changes: dict[tuple[str, ...], dict[str, Any]]
) -> Any:
    """``section`` with ``changes`` (by section path) made, nested sections too
    (``outbound.latency``)."""
    own = dict(changes.get(path, {}))
    for where in {
        p[: len(path) + 1] for p in changes if len(p) > len(path) and p[: len(path)] == path
    }:
        own[where[-1]] = _evolved(getattr(section, where[-1]), where, changes)
    return attrs.evolve(section, **own) if own else section
