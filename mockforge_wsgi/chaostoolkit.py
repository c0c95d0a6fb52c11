"""A Chaos Toolkit driver: actions and probes for experiments against a mockforge server.

Use them as ``python`` providers of an experiment (JSON or YAML)::

    {"type": "action", "name": "upstream-flaky",
     "provider": {"type": "python", "module": "mockforge_wsgi.chaostoolkit",
                  "func": "start_scenario",
                  "arguments": {"name": "service_instability", "duration_s": 60}}}

The server is the experiment's ``mockforge_url`` configuration (else
``MOCKFORGE_URL``, else http://127.0.0.1:3000); the admin token its
``mockforge_token`` configuration (else ``MOCKFORGE_ADMIN_TOKEN``). Each function returns
what the management API answered, so a probe's output can be checked by a tolerance.
Standard library only (Chaos Toolkit itself is not imported).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from . import _env
from .client import ChaosClient

__all__ = [
    "breaker_state",
    "counters",
    "disable",
    "enable",
    "force_breaker",
    "guard",
    "guard_tripped",
    "renew_guard",
    "reset",
    "set_section",
    "start_scenario",
    "status",
    "stop_scenario",
    "verdicts",
]

DEFAULT_URL = "http://127.0.0.1:3000"


def _client(configuration: Mapping[str, Any] | None) -> ChaosClient:
    configuration = configuration or {}
    url = configuration.get("mockforge_url") or _env.text(_env.URL) or DEFAULT_URL
    return ChaosClient(str(url), token=configuration.get("mockforge_token"))


# -- actions ----------------------------------------------------------------------------


def enable(configuration: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Turn chaos on."""
    client = _client(configuration)
    client.enable()
    return client.status()


def disable(configuration: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Turn chaos off (the master switch)."""
    client = _client(configuration)
    client.disable()
    return client.status()


def reset(configuration: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Startup config back, scenario stopped, counters zeroed: a rollback."""
    return _client(configuration).reset()


def set_section(
    section: str, values: Mapping[str, Any], configuration: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Merge ``values`` into a section (``latency``, ``faults``, ``rate_limit``,
    ``traffic``, ``circuit_breaker``), the section on unless ``values`` says otherwise,
    and turn chaos on."""
    client = _client(configuration)
    applied = client.update_section(section, **{"enabled": True, **values})
    client.enable()
    return applied


def start_scenario(
    name: str,
    duration_s: float | None = None,
    ramp_s: float | None = None,
    configuration: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Start a scenario (built-in or custom) and turn chaos on."""
    client = _client(configuration)
    client.enable()
    return client.start_scenario(name, duration_s=duration_s, ramp_s=ramp_s)


def stop_scenario(configuration: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Stop the active scenario (nothing to stop is fine); the one it replaced resumes."""
    client = _client(configuration)
    client.stop_scenario()
    return client.status()


def force_breaker(
    action: str, owner: str = "global", configuration: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``open``, ``close`` or ``reset`` a simulated circuit breaker."""
    return _client(configuration).force_breaker(owner, action)


def renew_guard(configuration: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Keep chaos on for another ``chaos.guard.max_duration_s`` from now (an experiment
    longer than the dead man's switch renews it as it goes)."""
    return _client(configuration).renew_guard()


# -- probes -----------------------------------------------------------------------------


def status(configuration: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Enabled flag, active scenario, effective config, counters, breakers."""
    return _client(configuration).status()


def counters(configuration: Mapping[str, Any] | None = None) -> dict[str, int]:
    """Injections so far, by name (``http_error``, ``latency``, ``circuit_open``, ...)."""
    found: dict[str, int] = _client(configuration).status()["counters"]
    return found


def guard(configuration: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The guard: ``tripped``, ``reason``, ``at``, ``figures``, ``expires_at``."""
    return _client(configuration).guard()


def guard_tripped(configuration: Mapping[str, Any] | None = None) -> bool:
    """Whether the guard turned chaos off (a steady-state probe: tolerance false)."""
    return bool(_client(configuration).guard()["tripped"])


MAX_WAIT_S = 60.0  # breaker_state's within_s at most


def breaker_state(
    owner: str = "global",
    configuration: Mapping[str, Any] | None = None,
    wait_for: str | None = None,
    within_s: float = 2.0,
) -> str | None:
    """``closed``, ``open`` or ``half_open`` (None: no such breaker in force).

    With ``wait_for``, asks again (up to ``within_s``) until the breaker is in that
    state, and returns the last: the server counts an answer when it closes it, a
    moment after the client read it, so a probe right after a failure can be early.
    """
    if not 0 <= within_s <= MAX_WAIT_S:  # NaN too: a wait that could never end
        raise ValueError(f"within_s: {within_s!r} is not a number of seconds from 0 to 60")
    client = _client(configuration)
    deadline = time.monotonic() + within_s
    while True:
        state = next((str(b["state"]) for b in client.breakers() if b["owner"] == owner), None)
        if wait_for is None or state == wait_for or time.monotonic() >= deadline:
            return state
        time.sleep(0.02)


def verdicts(configuration: Mapping[str, Any] | None = None, **filters: Any) -> dict[str, Any]:
    """The verdicts' summary (the recorder must be on): calls, success ratio, retries,
    Retry-After honoured, unsafe retries."""
    summary: dict[str, Any] = _client(configuration).verdicts(**filters)["summary"]
    return summary
