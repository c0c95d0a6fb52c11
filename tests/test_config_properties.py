"""Properties of loading a config from any data: one clear error, or a config whose
every number is finite, within its declared bound, and decides plans a server can run."""

from __future__ import annotations

import math
import random
from typing import Any

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mockforge_wsgi import load_config
from mockforge_wsgi.config import MAX_DELAY_MS, ConfigError, config_from_dict, iter_settings
from mockforge_wsgi.plan import decide_plan

SETTINGS = list(iter_settings())

# What a hostile or careless user sends: JSON-ish values, and numbers at the edges.
EDGES = (
    st.sampled_from(
        [
            *(10**400, -(10**400), 1e308, -1e308, 1e20, 2**63, -1, 0, 0.5, 1, 600_000, 600_001),
            *(
                10**4000,
                2**1024,
                -(2**1024),
                1.7976931348623157e308,
                math.inf,
                -math.inf,
                math.nan,
            ),
        ]
    )
    | st.integers(min_value=2**63)
    | st.integers(max_value=-(2**63))
)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | EDGES,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def raw_configs(draw: st.DrawFn) -> dict[str, Any]:
    data: dict[str, Any] = {"enabled": True}
    for info in draw(st.lists(st.sampled_from(SETTINGS), max_size=8)):
        target = data
        for part in info.path[:-1]:
            target = target.setdefault(part, {})
        target[info.path[-1]] = draw(JSON)
    return data


def _value(config: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        config = getattr(config, part)
    return config


def _assert_runnable(config: Any) -> None:
    for info in SETTINGS:
        value = _value(config, info.path)
        if isinstance(value, float):
            assert math.isfinite(value), info.path
        if info.check is not None:
            assert info.check.problem(value) is None, (info.path, value)
    rng = random.Random(0)
    enabled = attrs.evolve(config, enabled=True)
    for _ in range(20):
        plan = decide_plan(enabled, rng)
        assert plan.delay_ms is None or 0 < plan.delay_ms <= MAX_DELAY_MS
        assert plan.fault is None or plan.fault.hold_ms <= MAX_DELAY_MS


@given(raw_configs())
@settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
def test_any_data_gives_a_runnable_config_or_one_clear_error(data: dict[str, Any]) -> None:
    try:
        config = config_from_dict(data)
    except ConfigError as error:
        assert error.problems
        assert all(p.startswith("chaos.") and len(p) < 300 for p in error.problems), error
        return
    _assert_runnable(config)


@given(
    st.sampled_from([info for info in SETTINGS if info.path[-1] != "rules"]),
    st.text(max_size=30) | EDGES.map(str),
)
@settings(max_examples=300, deadline=None, derandomize=True)
def test_any_environment_string_gives_a_runnable_config_or_one_clear_error(
    info: Any, raw: str
) -> None:
    try:
        config = load_config(environ={info.env_name: raw})
    except ConfigError as error:
        assert error.problems
        # chaos.outbound.fault_injection.* names a path (and a variable) 40 longer
        limit = 340 if info.path[0] == "outbound" else 300
        assert all(len(p) < limit for p in error.problems), error
        return
    _assert_runnable(config)
