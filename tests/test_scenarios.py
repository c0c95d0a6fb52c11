"""Scenarios and the engine, with a fake clock: no test sleeps."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from mockforge_wsgi import load_config
from mockforge_wsgi.config import (
    ChaosConfig,
    ConfigError,
    FaultInjectionConfig,
    LatencyConfig,
    config_from_dict,
)
from mockforge_wsgi.engine import MAX_PAUSED, ScenarioEngine, UnknownScenario
from mockforge_wsgi.scenarios import (
    NETWORK_PROFILES,
    PREDEFINED_SCENARIOS,
    ramped,
    scenario_from_dict,
)
from mockforge_wsgi.state import MemoryStore


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def engine(startup: ChaosConfig | None = None) -> tuple[ScenarioEngine, FakeClock]:
    clock = FakeClock()
    return ScenarioEngine(startup or ChaosConfig(), clock=clock), clock


def test_predefined_values_are_the_design_notes() -> None:
    nd = PREDEFINED_SCENARIOS["network_degradation"].config
    assert (nd.latency.fixed_delay_ms, nd.latency.jitter_percent) == (500, 20)
    assert nd.traffic_shaping.packet_loss_percent == 5
    assert nd.traffic_shaping.bandwidth_limit_bps == 100_000
    assert not nd.fault_injection.enabled
    assert not nd.rate_limit.enabled

    si = PREDEFINED_SCENARIOS["service_instability"].config
    assert si.fault_injection.http_errors == (500, 502, 503, 504)
    assert (si.fault_injection.http_error_probability, si.fault_injection.timeout_probability) == (
        0.2,
        0.1,
    )
    assert not si.latency.enabled

    cf = PREDEFINED_SCENARIOS["cascading_failure"].config
    assert cf.latency.random_delay_range_ms == (1000, 5000)
    assert cf.latency.jitter_percent == 30
    faults = cf.fault_injection
    assert (
        faults.http_error_probability,
        faults.timeout_probability,
        faults.connection_error_probability,
    ) == (0.3, 0.2, 0.1)
    assert cf.rate_limit.requests_per_second == 10

    pt = PREDEFINED_SCENARIOS["peak_traffic"].config
    assert (pt.rate_limit.requests_per_second, pt.rate_limit.burst_size) == (50, 10)
    assert pt.rate_limit.per_endpoint and pt.rate_limit.global_limit

    sb = PREDEFINED_SCENARIOS["slow_backend"].config
    assert (sb.latency.fixed_delay_ms, sb.latency.jitter_percent, sb.latency.probability) == (
        2000,
        10,
        1.0,
    )
    assert set(NETWORK_PROFILES) == {
        "slow_3g", "fast_3g", "flaky_wifi", "cable", "dialup", "fast_4g", "lte", "edge",
        "geo_satellite",
    }  # fmt: skip


KBIT = 1000 / 8  # bytes per second in a kbit/s (the sources' bit rates are decimal)


@pytest.mark.parametrize(
    ("name", "latency_ms", "down_kbit", "up_kbit"),
    [
        # Chrome DevTools' NetworkManager.ts: latency and throughput scaled by its factors.
        pytest.param("slow_3g", 400 * 5, 500 * 0.8, 500 * 0.8, id="chrome-3g"),
        pytest.param("fast_3g", 150 * 3.75, 1600 * 0.9, 750 * 0.9, id="chrome-slow-4g"),
        pytest.param("fast_4g", 60 * 2.75, 9000 * 0.9, 1500 * 0.9, id="chrome-fast-4g"),
        # WebPageTest's connectivity.ini.sample: RTT, bwIn, bwOut.
        pytest.param("cable", 28, 5000, 1000, id="wpt-cable"),
        pytest.param("dialup", 120, 49, 30, id="wpt-dial"),
        pytest.param("lte", 70, 12000, 12000, id="wpt-lte"),
        pytest.param("edge", 840, 240, 200, id="wpt-edge"),
        # Ookla, Q2 2021, Viasat's US medians.
        pytest.param("geo_satellite", 630, 18130, 3380, id="ookla-viasat"),
    ],
)
def test_network_profiles_are_their_sources_figures(
    name: str, latency_ms: float, down_kbit: float, up_kbit: float
) -> None:
    """Each profile is the figures its description and docs/scenarios.md cite."""
    profile = NETWORK_PROFILES[name]
    config = profile.config
    assert config.latency.fixed_delay_ms == pytest.approx(latency_ms)
    assert config.latency.probability == 1.0 and config.latency.distribution == "auto"
    shaping = config.traffic_shaping
    assert shaping.bandwidth_limit_bps == pytest.approx(down_kbit * KBIT)
    assert shaping.upload_bandwidth_limit_bps == pytest.approx(up_kbit * KBIT)
    assert shaping.packet_loss_percent == 0  # none of these sources gives a loss
    assert not config.fault_injection.enabled and not config.rate_limit.enabled
    assert f"{latency_ms:g} ms" in profile.description


def test_activate_switch_and_stop() -> None:
    base = load_config(environ={}, overrides={"latency": {"enabled": True, "fixed_delay_ms": 7}})
    eng, _ = engine(base)
    assert eng.effective().enabled is False
    active = eng.activate("slow_backend")
    assert (active.name, active.started_at) == ("slow_backend", 1000.0)
    assert eng.effective().enabled is True  # activating turns chaos on
    assert eng.effective().latency.fixed_delay_ms == 2000
    eng.activate("service_instability")  # replaces, live
    assert eng.effective().fault_injection.http_error_probability == 0.2
    assert not eng.effective().latency.enabled
    eng.stop()
    assert eng.effective().latency.fixed_delay_ms == 2000  # the one it replaced resumes
    eng.stop()
    assert eng.effective().latency.fixed_delay_ms == 7  # the runtime config is back
    with pytest.raises(UnknownScenario):
        eng.stop()
    with pytest.raises(UnknownScenario):
        eng.activate("no_such_scenario")


def test_duration_returns_the_base_config_by_itself() -> None:
    eng, clock = engine()
    eng.activate("slow_backend", duration_s=30)
    clock.now += 29.9
    assert eng.status()["active_scenario"]["remaining_s"] == pytest.approx(0.1)
    assert eng.effective().latency.fixed_delay_ms == 2000
    clock.now += 0.1
    assert not eng.effective().latency.enabled
    assert eng.status()["active_scenario"] is None


@pytest.mark.parametrize(
    "end",
    [
        pytest.param(lambda eng, clock: eng.stop(), id="stopped"),
        pytest.param(lambda eng, clock: setattr(clock, "now", clock.now + 30), id="timed-out"),
    ],
)
def test_chaos_a_scenario_turned_on_goes_off_with_the_last_scenario(end: Any) -> None:
    """A change made while chaos was off (a 503 on every request, here) must not start
    being injected because a scenario came and went: chaos was off before it."""
    eng, clock = engine()
    eng.update_config(
        fault_injection=FaultInjectionConfig(http_errors=(503,), http_error_probability=1.0)
    )
    eng.activate("slow_backend", duration_s=30)
    eng.activate("peak_traffic")  # on top of it: still the scenarios' doing
    eng.stop()
    assert eng.effective().enabled  # slow_backend resumed
    end(eng, clock)
    assert eng.status()["active_scenario"] is None
    assert eng.effective().enabled is False
    eng.schedule([(1, "slow_backend", 2)])  # a scheduled one too
    clock.now += 1
    assert eng.effective().enabled
    clock.now += 2
    assert eng.effective().enabled is False


@pytest.mark.parametrize(
    "by_hand",
    [
        pytest.param(lambda eng: eng.set_enabled(True), id="enable"),
        pytest.param(
            lambda eng: eng.set_config(attrs.evolve(eng.editable(), enabled=True)), id="config"
        ),
    ],
)
def test_chaos_switched_on_by_hand_stays_on_after_the_scenario(by_hand: Any) -> None:
    eng, _ = engine()
    eng.activate("slow_backend")
    by_hand(eng)  # during the scenario: the user's switch from now on
    eng.stop()
    assert eng.effective().enabled
    eng.set_enabled(False)
    eng.activate("slow_backend")
    eng.set_enabled(False)
    eng.set_enabled(True)
    eng.stop()
    assert eng.effective().enabled
    on_before, _ = engine(load_config(environ={}, overrides={"enabled": True}))
    on_before.activate("slow_backend")
    on_before.stop()
    assert on_before.effective().enabled  # it was on before the scenario


def test_ramp_grows_probabilities_and_delays_linearly() -> None:
    eng, clock = engine()
    eng.activate("cascading_failure", ramp_s=10)
    assert eng.effective().fault_injection.http_error_probability == 0.0
    clock.now += 2.5
    config = eng.effective()
    assert config.fault_injection.http_error_probability == pytest.approx(0.075)
    assert config.latency.random_delay_range_ms == pytest.approx((250, 1250))
    assert config.rate_limit.requests_per_second == 10  # not a probability or delay
    clock.now += 7.5
    assert eng.effective().fault_injection.http_error_probability == pytest.approx(0.3)
    assert eng.status()["active_scenario"]["ramp_progress"] == 1.0


def test_ramped_scales_only_marked_settings() -> None:
    config = PREDEFINED_SCENARIOS["network_degradation"].config
    half = ramped(config, 0.5)
    assert half.latency.fixed_delay_ms == 250
    assert half.latency.jitter_percent == 20
    assert half.traffic_shaping.packet_loss_percent == 2.5
    assert half.traffic_shaping.bandwidth_limit_bps == 100_000
    assert ramped(config, 1.0) is config


def test_a_ramp_scales_the_outbound_section_as_the_inbound_ones() -> None:
    """chaos.outbound's probabilities and delays grow with a ramp too (nested sections)."""
    config = config_from_dict(
        {
            "outbound": {
                "enabled": True,
                "refused_probability": 0.4,
                "latency": {"enabled": True, "fixed_delay_ms": 300},
                "fault_injection": {"enabled": True, "http_error_probability": 0.8},
            }
        }
    )
    half = ramped(config, 0.5).outbound
    assert half.refused_probability == pytest.approx(0.2)
    assert half.latency.fixed_delay_ms == 150
    assert half.fault_injection.http_error_probability == pytest.approx(0.4)
    assert half.enabled and half.hosts == config.outbound.hosts  # not a probability or delay


def test_schedule_runs_entries_in_order() -> None:
    eng, clock = engine()
    eng.schedule([(10, "slow_backend", 5), (20, "peak_traffic", None)])
    assert not eng.effective().enabled
    clock.now += 10
    assert eng.status()["active_scenario"]["name"] == "slow_backend"
    clock.now += 5
    assert eng.status()["active_scenario"] is None
    clock.now += 5
    assert eng.status()["active_scenario"]["name"] == "peak_traffic"
    assert eng.status()["schedule"] == []
    with pytest.raises(UnknownScenario):
        eng.schedule([(1, "nope", None)])


def test_startup_scenario_is_active() -> None:
    eng, _ = engine(load_config(environ={}, overrides={"scenario": "slow_backend"}))
    assert eng.status()["active_scenario"]["name"] == "slow_backend"
    assert eng.status()["active_scenario"]["reason"] == "startup"


def startup(name: str = "network_degradation") -> tuple[ScenarioEngine, FakeClock]:
    return engine(load_config(environ={}, overrides={"enabled": True, "scenario": name}))


def active(eng: ScenarioEngine) -> tuple[str, str, float | None] | None:
    """The active scenario's name, why it runs and its remaining time."""
    shown = eng.status()["active_scenario"]
    return None if shown is None else (shown["name"], shown["reason"], shown["remaining_s"])


@pytest.mark.parametrize(
    "end",
    [
        pytest.param(lambda eng, clock: setattr(clock, "now", clock.now + 30), id="ran-out"),
        pytest.param(lambda eng, clock: eng.stop(), id="stopped"),
        pytest.param(lambda eng, clock: eng.stop("slow_backend"), id="stopped-by-name"),
    ],
)
def test_the_startup_scenario_resumes_when_the_one_replacing_it_ends(end: Any) -> None:
    eng, clock = startup()
    assert active(eng) == ("network_degradation", "startup", None)
    clock.now += 5
    eng.activate("slow_backend", duration_s=30)
    assert active(eng) == ("slow_backend", "api", 30)
    assert eng.status()["paused_scenarios"] == [
        {"name": "network_degradation", "reason": "startup", "remaining_s": None}
    ]
    end(eng, clock)
    assert active(eng) == ("network_degradation", "resumed", None)
    assert eng.effective().latency.fixed_delay_ms == 500
    assert eng.status()["paused_scenarios"] == []
    eng.stop()  # then the runtime config
    assert active(eng) is None


def test_a_timed_scenario_resumes_for_the_time_it_had_left() -> None:
    eng, clock = engine()
    eng.activate("slow_backend", duration_s=60)
    clock.now += 20
    eng.activate("peak_traffic", duration_s=10)  # slow_backend pauses with 40 s left
    clock.now += 10
    assert active(eng) == ("slow_backend", "resumed", 40)
    clock.now += 39.9
    assert active(eng) == ("slow_backend", "resumed", pytest.approx(0.1))
    clock.now += 0.1
    assert active(eng) is None


def test_a_paused_scenario_resumes_with_its_changes_and_ramp() -> None:
    eng, clock = engine()
    eng.activate("service_instability", ramp_s=10)
    clock.now += 5  # half ramped
    eng.update_config(fault_injection=FAULT_ALL)
    eng.activate("slow_backend")
    assert eng.status()["overrides"] == {}  # the new one starts clean
    clock.now += 100  # paused: its ramp does not move on
    eng.stop()
    assert eng.status()["active_scenario"]["ramp_progress"] == 0.5
    assert eng.effective().fault_injection == FAULT_ALL  # its change is back
    assert set(eng.status()["overrides"]) == {"fault_injection"}


def test_stop_everything_resumes_none() -> None:
    eng, _clock = startup()
    eng.activate("slow_backend")
    eng.activate("peak_traffic")
    assert [p["name"] for p in eng.status()["paused_scenarios"]] == [
        "slow_backend",
        "network_degradation",
    ]
    eng.stop(everything=True)
    assert active(eng) is None
    assert eng.status()["paused_scenarios"] == []


def test_schedule_entries_pause_and_resume_in_the_order_they_fell_due() -> None:
    watched, clock = startup()
    unwatched, later = startup()
    for eng in (watched, unwatched):
        eng.schedule([(10, "slow_backend", 5), (12, "peak_traffic", 1)])
    seen = []
    for step in (10, 2.5, 1, 3):  # at 10, 12.5, 13.5, 16.5
        clock.now += step
        seen.append(active(watched))
    assert seen == [
        ("slow_backend", "schedule", 5),
        ("peak_traffic", "schedule", 0.5),
        ("slow_backend", "resumed", 2.5),  # paused at 12 with 3 s left, back at 13
        ("network_degradation", "resumed", None),
    ]
    later.now = clock.now  # nobody looked meanwhile: the same result
    assert active(unwatched) == ("network_degradation", "resumed", None)
    assert unwatched.status()["paused_scenarios"] == []


def test_the_paused_scenarios_are_bounded() -> None:
    eng, _clock = engine()
    for _ in range(MAX_PAUSED + 5):
        eng.activate("slow_backend")
    assert len(eng.state().paused) == MAX_PAUSED


def test_resuming_reaches_other_engines_on_the_store() -> None:
    store, clock = MemoryStore(), FakeClock()
    config = load_config(environ={}, overrides={"enabled": True, "scenario": "slow_3g"})
    first = ScenarioEngine(config, store=store, clock=clock)
    second = ScenarioEngine(config, store=store, clock=clock)
    first.activate("peak_traffic", duration_s=5)
    assert second.status()["active_scenario"]["name"] == "peak_traffic"
    clock.now += 5
    assert active(second) == ("slow_3g", "resumed", None)
    assert active(first) == ("slow_3g", "resumed", None)


def test_an_unknown_scenario_says_so_with_the_choices_and_the_nearest() -> None:
    eng, _clock = engine()
    with pytest.raises(UnknownScenario) as raised:
        eng.activate("slow_bakend")
    assert str(raised.value) == (
        "scenario: unknown scenario 'slow_bakend'; did you mean 'slow_backend'? (choices: "
        "network_degradation, service_instability, cascading_failure, peak_traffic, "
        "slow_backend, slow_3g, fast_3g, flaky_wifi, cable, dialup, fast_4g, lte, edge, "
        "geo_satellite)"
    )
    with pytest.raises(
        UnknownScenario, match=r"chaos.scenario: unknown scenario 'nope' \(choices"
    ):
        engine(load_config(environ={}, overrides={"scenario": "nope"}))


def test_custom_scenarios_validated_and_not_shadowing() -> None:
    scenario, override = scenario_from_dict(
        "my_flaky",
        {"description": "d", "fault_injection": {"enabled": True, "http_error_probability": 0.5}},
        "chaos.scenarios.my_flaky",
    )
    assert (scenario.kind, override) == ("custom", False)
    eng, _ = engine()
    eng.define(scenario)
    eng.activate("my_flaky")
    assert eng.effective().fault_injection.http_error_probability == 0.5
    with pytest.raises(ConfigError, match="set override: true"):
        scenario_from_dict("slow_backend", {}, "chaos.scenarios.slow_backend")
    replaced, override = scenario_from_dict(
        "slow_backend", {"override": True, "latency": {"enabled": True}}, "p"
    )
    assert override
    assert replaced.config.latency.enabled
    with pytest.raises(ConfigError) as caught:
        scenario_from_dict(
            "bad", {"latency": {"probability": 3}, "seed": 1}, "chaos.scenarios.bad"
        )
    assert caught.value.problems == [
        "chaos.scenarios.bad.seed: not allowed in a scenario",
        "chaos.scenarios.bad.latency.probability: 3 is not in [0, 1]",
    ]


def test_reset_restores_startup_and_zeroes_counters() -> None:
    store = MemoryStore()
    clock = FakeClock()
    eng = ScenarioEngine(ChaosConfig(), store=store, clock=clock)
    eng.activate("slow_backend")
    store.incr("latency", 3)
    eng.reset()
    assert eng.status()["active_scenario"] is None
    assert eng.effective().enabled is False
    assert store.counters() == {}


def test_two_engines_on_one_store_see_each_others_changes() -> None:
    store = MemoryStore()
    clock = FakeClock()
    first = ScenarioEngine(ChaosConfig(), store=store, clock=clock)
    second = ScenarioEngine(ChaosConfig(), store=store, clock=clock)
    first.activate("slow_backend")
    assert second.effective().latency.fixed_delay_ms == 2000
    second.set_enabled(False)
    assert first.effective().enabled is False


FAULT_ALL = FaultInjectionConfig(enabled=True, http_errors=(503,), http_error_probability=1.0)


def test_a_change_while_a_scenario_runs_wins_until_it_stops() -> None:
    chaos, _clock = engine(load_config(environ={}, overrides={"enabled": True}))
    chaos.activate("slow_backend")
    chaos.update_config(fault_injection=FAULT_ALL)
    effective = chaos.effective()
    assert effective.fault_injection == FAULT_ALL  # the last write wins at once
    assert effective.latency == PREDEFINED_SCENARIOS["slow_backend"].config.latency
    status = chaos.status()
    assert status["active_scenario"]["name"] == "slow_backend"
    assert status["overrides"]["fault_injection"]["http_error_probability"] == 1.0
    assert set(status["overrides"]) == {"fault_injection"}
    assert chaos.state().config.fault_injection == FaultInjectionConfig()  # runtime kept
    chaos.stop()
    assert chaos.effective().fault_injection == FaultInjectionConfig()  # runtime is back
    assert chaos.status()["overrides"] == {}


@pytest.mark.parametrize(
    "end",
    [
        pytest.param(lambda chaos, clock: chaos.activate("peak_traffic"), id="replaced"),
        pytest.param(lambda chaos, clock: setattr(clock, "now", clock.now + 61), id="ran-out"),
        pytest.param(lambda chaos, clock: chaos.reset(), id="reset"),
    ],
)
def test_changes_on_top_end_with_their_scenario(end: Any) -> None:
    chaos, clock = engine(load_config(environ={}, overrides={"enabled": True}))
    chaos.activate("slow_backend", duration_s=60)
    chaos.update_config(fault_injection=FAULT_ALL)
    end(chaos, clock)
    assert chaos.effective().fault_injection != FAULT_ALL
    assert chaos.status()["overrides"] == {}


def test_overrides_are_not_ramped_and_can_be_dropped() -> None:
    chaos, clock = engine()
    chaos.activate("service_instability", ramp_s=10)
    chaos.update_config(fault_injection=FAULT_ALL)
    assert chaos.effective().fault_injection.http_error_probability == 1.0  # as written
    chaos.update_config(latency=LatencyConfig(enabled=True, fixed_delay_ms=7))
    chaos.clear_overrides("fault_injection")
    clock.now += 5  # half-way up the ramp: the scenario's own value, halved
    assert chaos.effective().fault_injection.http_error_probability == pytest.approx(0.1)
    assert chaos.effective().latency.fixed_delay_ms == 7  # the other change stays
    assert chaos.editable().fault_injection.http_error_probability == 0.2  # unramped


def test_a_whole_config_written_during_a_scenario_applies_on_top() -> None:
    chaos, _clock = engine()
    chaos.activate("slow_backend")
    written = load_config(environ={}, overrides={"enabled": True, "fault_injection": {}})
    chaos.set_config(written)
    effective = chaos.effective()
    assert effective.latency == written.latency  # the scenario's latency is overridden
    assert effective.enabled
    chaos.stop()
    # The runtime config is back as it was; the master switch stays as last set.
    assert chaos.state().config == ChaosConfig()
    assert chaos.effective() == attrs.evolve(ChaosConfig(), enabled=True)


def test_without_a_scenario_changes_go_to_the_runtime_config() -> None:
    chaos, _clock = engine()
    chaos.update_config(fault_injection=FAULT_ALL)
    assert chaos.state().config.fault_injection == FAULT_ALL
    assert chaos.status()["overrides"] == {}
    chaos.activate("slow_backend")
    assert (
        chaos.effective().fault_injection
        == PREDEFINED_SCENARIOS["slow_backend"].config.fault_injection
    )
    chaos.stop()
    assert chaos.effective().fault_injection == FAULT_ALL


def test_overrides_reach_other_engines_on_the_store() -> None:
    store = MemoryStore()
    first = ScenarioEngine(ChaosConfig(), store=store)
    second = ScenarioEngine(ChaosConfig(), store=store)
    first.activate("slow_backend")
    first.update_config(fault_injection=FAULT_ALL)
    assert second.effective().fault_injection == FAULT_ALL
    assert second.status()["overrides"].keys() == {"fault_injection"}


def test_attach_seeds_a_fresh_store_and_adopts_a_seeded_one() -> None:
    shared = MemoryStore()
    first, _ = engine(load_config(environ={}, overrides={"enabled": True}))
    first.attach(shared)
    first.update_config(fault_injection=FAULT_ALL)
    late, _ = engine()  # another worker, started with another config
    late.attach(shared)
    assert late.effective().fault_injection == FAULT_ALL  # adopted, not reseeded
    assert late.effective().enabled
