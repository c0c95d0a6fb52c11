"""Config: declarations, validation that names every problem, sources and precedence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest

from mockforge_wsgi.config import (
    ChaosConfig,
    ConfigError,
    LatencyConfig,
    config_from_dict,
    iter_settings,
    load_config,
)
from mockforge_wsgi.config_declarations import INBOUND_ONLY_FAULTS
from mockforge_wsgi.config_docs import own_settings, render_into
from mockforge_wsgi.scenarios import scenario_from_dict

DOCS = Path(__file__).parent.parent / "docs" / "configuration.md"


def problems_of(data: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(data)
    return caught.value.problems


def test_defaults_are_valid_and_off() -> None:
    config = load_config(environ={})
    assert config == ChaosConfig()
    assert config.enabled is False
    assert config.latency.probability == 1.0


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(
            {"latency": {"probability": 1.5}},
            "chaos.latency.probability: 1.5 is not in [0, 1]",
            id="probability",
        ),
        pytest.param(
            {"fault_injection": {"http_error_probability": -0.1}},
            "chaos.fault_injection.http_error_probability: -0.1 is not in [0, 1]",
            id="negative-probability",
        ),
        pytest.param(
            {"fault_injection": {"http_errors": [500, 700]}},
            "chaos.fault_injection.http_errors: 700 not in [400, 599]",
            id="status-too-high",
        ),
        pytest.param(
            {"fault_injection": {"http_errors": [200]}},
            "chaos.fault_injection.http_errors: 200 not in [400, 599]",
            id="status-not-an-error",
        ),
        pytest.param(
            {"latency": {"fixed_delay_ms": -5}},
            "chaos.latency.fixed_delay_ms: -5 is not in [0, 600000]",
            id="negative-delay",
        ),
        pytest.param(
            {"fault_injection": {"timeout_ms": -1}},
            "chaos.fault_injection.timeout_ms: -1 is not in [0, 600000]",
            id="negative-timeout",
        ),
        pytest.param(
            {"latency": {"random_delay_range_ms": [500, 100]}},
            "chaos.latency.random_delay_range_ms: 500-100 is not ordered (min <= max)",
            id="unordered-range",
        ),
        pytest.param(
            {"latency": {"jitter_percent": 150}},
            "chaos.latency.jitter_percent: 150 is not in [0, 100]",
            id="jitter",
        ),
        pytest.param(
            {"latency": {"distribution": "weibull"}},
            "chaos.latency.distribution: 'weibull' is not one of auto, fixed, uniform, normal, "
            "lognormal, pareto, exponential",
            id="distribution",
        ),
        pytest.param(
            {"latency": {"shape": 0}},
            "chaos.latency.shape: 0 is not in [0.1, 100]",
            id="pareto-shape",
        ),
        pytest.param(
            {"latency": {"distribution": "uniform"}},
            "chaos.latency.random_delay_range_ms: None is not allowed with distribution 'uniform'",
            id="uniform-needs-range",
        ),
        pytest.param(
            {"enabled": "maybe"},
            "chaos.enabled: 'maybe' is not a boolean (allowed: true/false, yes/no, on/off, 1/0)",
            id="bool",
        ),
        pytest.param(
            {"enabled": 2},
            "chaos.enabled: 2 is not a boolean (allowed: true/false, yes/no, on/off, "
            "'1'/'0' quoted)",
            id="bool-number",
        ),
        pytest.param(
            {"latency": {"fixed_delay_ms": "slow"}},
            "chaos.latency.fixed_delay_ms: 'slow' is not a number in [0, 600000]",
            id="not-a-number",
        ),
        pytest.param(
            {"rate_limit": {"requests_per_second": "lots"}},
            "chaos.rate_limit.requests_per_second: 'lots' is not a number in [0.001, 1e+06]",
            id="not-a-number-bounded",
        ),
        pytest.param(
            {"rate_limit": {"burst_size": "ten"}},
            "chaos.rate_limit.burst_size: 'ten' is not an integer in [1, 1000000]",
            id="not-an-integer-bounded",
        ),
        pytest.param(
            {"fault_injection": {"http_errors": "five hundred"}},
            "chaos.fault_injection.http_errors: 'five hundred' is not a list of integers "
            "each in [400, 599]",
            id="not-a-list-bounded",
        ),
        pytest.param(
            {"scenario": 5},
            "chaos.scenario: 5 is not a string",
            id="not-a-string-unbounded",
        ),
        pytest.param(
            {"latency": {"fixed_delay_ms": float("inf")}},
            "chaos.latency.fixed_delay_ms: inf is not a finite number in [0, 600000]",
            id="infinite",
        ),
        pytest.param(
            {"traffic_shaping": {"packet_loss_percent": 101}},
            "chaos.traffic_shaping.packet_loss_percent: 101 is not in [0, 100]",
            id="loss-percent",
        ),
        pytest.param(
            {"rate_limit": {"burst_size": 0}},
            "chaos.rate_limit.burst_size: 0 is not in [1, 1000000]",
            id="burst",
        ),
        pytest.param(
            {"latency": {"fixed_delay_ms": 1e20}},
            "chaos.latency.fixed_delay_ms: 1e+20 is not in [0, 600000]",
            id="delay-beyond-any-server",
        ),
        pytest.param(
            {"fault_injection": {"timeout_ms": 10**400}},
            "chaos.fault_injection.timeout_ms: 1"
            + "0" * 59
            + "... (401 characters) is not a finite number in [0, 600000]",
            id="400-digit-timeout",
        ),
        pytest.param(
            {"rate_limit": {"burst_size": 10**400}},
            "chaos.rate_limit.burst_size: 1"
            + "0" * 59
            + "... (401 characters) is not in [1, 1000000]",
            id="400-digit-burst",
        ),
        pytest.param(
            {"latency": {"random_delay_range_ms": [0, 1e9]}},
            "chaos.latency.random_delay_range_ms: 0-1e+09 ends above 600000",
            id="range-beyond-any-server",
        ),
        pytest.param(
            {"traffic_shaping": {"max_connections": 10**9}},
            "chaos.traffic_shaping.max_connections: 1000000000 is not in [0, 100000]",
            id="connections",
        ),
        pytest.param(
            {"seed": 2**70},
            "chaos.seed: 1.18059e+21 is not in [-9223372036854775808, 9223372036854775807]",
            id="seed",
        ),
        pytest.param(
            {"latency": {"jiter_percent": 10}},
            "chaos.latency.jiter_percent: unknown key; did you mean 'jitter_percent'?",
            id="unknown-key",
        ),
        pytest.param(
            {"latency": 5},
            "chaos.latency: 5 is not a mapping",
            id="section-not-mapping",
        ),
    ],
)
def test_each_bad_value_gives_one_error_naming_its_path(
    data: dict[str, object], expected: str
) -> None:
    assert problems_of(data) == [expected]


def test_every_problem_is_collected_in_one_error() -> None:
    problems = problems_of(
        {
            "enabled": 3,
            "latency": {"probability": 2, "fixed_delay_ms": -1},
            "fault_injection": {"http_errors": [99]},
            "typo": True,
        }
    )
    assert len(problems) == 5
    assert "chaos.typo: unknown key" in problems[0]
    message = str(ConfigError(problems))
    assert message.startswith("invalid chaos configuration:")


def test_direct_construction_is_validated_and_frozen() -> None:
    with pytest.raises(ConfigError, match=r"probability: 1.5 is not in \[0, 1\]"):
        LatencyConfig(probability=1.5)
    config = LatencyConfig()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.probability = 0.5  # type: ignore[misc]
    assert attrs.evolve(config, probability=0.5).probability == 0.5


def test_round_trip_through_dict() -> None:
    config = config_from_dict(
        {
            "enabled": True,
            "latency": {"enabled": True, "random_delay_range_ms": [100, 500]},
            "fault_injection": {"http_errors": [503], "error_body": {"oops": True}},
        }
    )
    assert config.latency.random_delay_range_ms == (100.0, 500.0)
    assert config.fault_injection.error_body == '{"oops":true}'
    assert config_from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "document",
    [
        pytest.param("chaos:\n  enabled: true\n  latency: {fixed_delay_ms: 500}\n", id="top"),
        pytest.param(
            "observability:\n  chaos:\n    enabled: true\n    latency: {fixed_delay_ms: 500}\n",
            id="design-note",
        ),
    ],
)
def test_yaml_layouts(tmp_path: Path, document: str) -> None:
    path = tmp_path / "chaos.yaml"
    path.write_text(document)
    config = load_config(path, environ={})
    assert config.enabled is True
    assert config.latency.fixed_delay_ms == 500.0


def test_yaml_with_both_layouts_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "chaos.yaml"
    path.write_text("chaos: {enabled: true}\nobservability: {chaos: {enabled: false}}\n")
    with pytest.raises(ConfigError, match="keep one"):
        load_config(path, environ={})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("chaos: [1, 2]\n", "chaos: [1, 2] is not a mapping", id="not-mapping"),
        pytest.param("chaos: {enabled: [\n", "not valid YAML", id="broken-yaml"),
    ],
)
def test_bad_yaml_files(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "chaos.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        load_config(path, environ={})


def test_a_yaml_value_of_the_wrong_kind_is_told_what_is_allowed(tmp_path: Path) -> None:
    """The words docs/configuration.md takes for a boolean; a number's declared bound."""
    path = tmp_path / "chaos.yaml"
    path.write_text("chaos:\n  enabled: maybe\n  rate_limit: {requests_per_second: lots}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={})
    assert raised.value.problems == [
        "chaos.enabled: 'maybe' is not a boolean (allowed: true/false, yes/no, on/off, 1/0)",
        "chaos.rate_limit.requests_per_second: 'lots' is not a number in [0.001, 1e+06]",
    ]


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml", environ={})


def test_environment_values_are_parsed_per_kind() -> None:
    config = load_config(
        environ={
            "MOCKFORGE_CHAOS_ENABLED": "yes",
            "MOCKFORGE_CHAOS_SEED": "7",
            "MOCKFORGE_CHAOS_LATENCY_RANDOM_DELAY_RANGE_MS": "100-500",
            "MOCKFORGE_CHAOS_LATENCY_CAP_MS": "none",
            "MOCKFORGE_CHAOS_FAULT_INJECTION_HTTP_ERRORS": "500, 502,503",
            "MOCKFORGE_CHAOS_RATE_LIMIT_TRUSTED_PROXIES": "10.0.0.1,10.0.0.2",
            "UNRELATED": "ignored",
        }
    )
    assert config.enabled is True
    assert config.seed == 7
    assert config.latency.random_delay_range_ms == (100.0, 500.0)
    assert config.latency.cap_ms is None
    assert config.fault_injection.http_errors == (500, 502, 503)
    assert config.rate_limit.trusted_proxies == ("10.0.0.1", "10.0.0.2")


def test_environment_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(
            environ={
                "MOCKFORGE_CHAOS_LATENCY_PROBABILITY": "1.5",
                "MOCKFORGE_CHAOS_LATENCY_PROBABILTY": "0.5",
            }
        )
    assert caught.value.problems == [
        "MOCKFORGE_CHAOS_LATENCY_PROBABILTY: unknown environment variable; "
        "did you mean MOCKFORGE_CHAOS_LATENCY_PROBABILITY?",
        "chaos.latency.probability: 1.5 is not in [0, 1] "
        "(from MOCKFORGE_CHAOS_LATENCY_PROBABILITY)",
    ]


def test_precedence_defaults_yaml_env_explicit(tmp_path: Path) -> None:
    path = tmp_path / "chaos.yaml"
    path.write_text(
        "chaos:\n  latency:\n"
        "    fixed_delay_ms: 100\n    jitter_percent: 5\n    probability: 0.5\n"
    )
    environ = {
        "MOCKFORGE_CHAOS_LATENCY_JITTER_PERCENT": "10",
        "MOCKFORGE_CHAOS_LATENCY_PROBABILITY": "0.7",
    }
    config = load_config(path, environ=environ, overrides={"latency": {"probability": 0.9}})
    assert config.latency.fixed_delay_ms == 100.0  # YAML over default
    assert config.latency.jitter_percent == 10.0  # env over YAML
    assert config.latency.probability == 0.9  # explicit over env
    assert config.latency.cap_ms is None  # default


def test_every_setting_has_a_unique_environment_variable() -> None:
    names = [info.env_name for info in iter_settings()]
    assert len(names) == len(set(names))
    assert all(name.startswith("MOCKFORGE_CHAOS_") for name in names)


# Every page that holds generated markers, found rather than listed: a page left off a
# list went stale unseen (docs/plugins.md held a settings table from two releases back).
MARKED = sorted(
    path.relative_to(DOCS.parent.parent).as_posix()
    for path in [DOCS.parent.parent / "README.md", *DOCS.parent.glob("*.md")]
    if "<!-- BEGIN GENERATED: " in path.read_text(encoding="utf-8")
)


def test_the_marked_pages_are_found() -> None:
    assert {"docs/configuration.md", "docs/plugins.md", "docs/serving.md"} <= set(MARKED)


@pytest.mark.parametrize("name", MARKED)
def test_generated_docs_are_current(name: str) -> None:
    document = (DOCS.parent.parent / name).read_text(encoding="utf-8")
    try:
        rendered = render_into(document)
    except ValueError:  # markers only inside a code block: an example, left as written
        rendered = document
    assert rendered == document, (
        f"{name} is stale: run python -m mockforge_wsgi.config_docs --write {name}"
    )


def test_markers_inside_a_code_block_are_an_example_not_a_section() -> None:
    """docs/plugins.md shows the two marker lines to copy: the generator leaves them as
    they are (it once filled them with our own settings, then nothing kept them current)."""
    begin = "<!-- BEGIN GENERATED: settings (python -m mockforge_wsgi.config_docs --write) -->"
    end = "<!-- END GENERATED: settings -->"
    example = f"Copy these:\n\n```text\n{begin}\n{end}\n```\n"
    live = f"\n{begin}\n| STALE ROW |\n{end}\n"
    rendered = render_into(example + live)
    assert rendered.startswith(example)
    assert "| `chaos.enabled` |" in rendered[len(example) :]
    assert "STALE ROW" not in rendered
    with pytest.raises(ValueError, match="no generated-section markers"):
        render_into(example)
    assert f"```text\n{begin}\n{end}\n```" in (DOCS.parent / "plugins.md").read_text()


def test_every_setting_is_in_the_reference() -> None:
    """Ours, that is: an installed plugin's settings are in its own docs (own_settings)."""
    document = DOCS.read_text(encoding="utf-8")
    for info in own_settings():
        assert f"`{info.env_name}`" in document


# Every share a user sends: probabilities and fractions in [0, 1], percents in [0, 100].
SHARES = [
    (info, 100.0 if info.path[-1].endswith("percent") else 1.0)
    for info in iter_settings()
    if info.path[-1].endswith(("probability", "fraction", "percent"))
]


def test_every_share_setting_is_found() -> None:
    # If one is renamed so that its name no longer says it, the range test must not skip it.
    names = [info.dotted for info, _ in SHARES if info.path[0] not in ("plugins", "outbound")]
    assert sum(name.endswith("probability") for name in names) == 10, names
    assert sum(name.endswith("percent") for name in names) == 2, names
    # chaos.outbound: refused_probability, and its own latency and faults' shares
    outbound = [info.dotted for info, _ in SHARES if info.path[0] == "outbound"]
    assert sum(name.endswith("probability") for name in outbound) == 10, outbound
    assert sum(name.endswith("percent") for name in outbound) == 1, outbound


@pytest.mark.parametrize(("info", "high"), SHARES, ids=lambda item: getattr(item, "dotted", ""))
@pytest.mark.parametrize("value", ["below", "above", float("nan"), float("inf")])
def test_every_share_is_checked_against_its_range(info: Any, high: float, value: Any) -> None:
    data: dict[str, Any] = {}
    target = data
    for part in info.path[:-1]:
        target = target.setdefault(part, {})
    bad = {"below": -0.1, "above": high * 1.5}.get(value, value)
    target[info.path[-1]] = bad
    with pytest.raises(ConfigError) as error:
        config_from_dict(data)
    assert f"{info.dotted}: " in str(error.value)
    # An outbound call takes no fault of the server's side of a connection: only 0.
    inbound_only = info.path[0] == "outbound" and info.path[-1] in INBOUND_ONLY_FAULTS
    for good in (0,) if inbound_only else (0, high / 4, high):
        target[info.path[-1]] = good
        assert _value(config_from_dict(data), info.path) == good  # in range: as sent


def _value(config: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        config = getattr(config, part)
    return config


# A valid value for each flag of `mockforge serve`, as typed; a new flag needs one here.
FLAG_SAMPLES = {
    "--chaos": (True, True),
    "--chaos-scenario": ("slow_backend", "slow_backend"),
    "--seed": ("42", 42),
    "--chaos-max-active-faults": ("6", 6),
    "--state-at-start": ("startup", "startup"),
    "--chaos-latency-ms": ("250", 250.0),
    "--chaos-latency-range": ("100-500", (100.0, 500.0)),
    "--chaos-latency-probability": ("0.5", 0.5),
    "--chaos-http-errors": ("500,503", (500, 503)),
    "--chaos-http-error-probability": ("0.2", 0.2),
    "--chaos-rate-limit": ("50", 50.0),
    "--chaos-bandwidth-limit": ("1000", 1000),
    "--chaos-packet-loss": ("2", 2.0),
}


def test_every_flag_is_declared_by_its_setting_and_sets_it() -> None:
    from mockforge_wsgi.cli import FLAGGED, _flag_overrides

    assert sorted(info.flag.name for info in FLAGGED) == sorted(FLAG_SAMPLES)  # type: ignore[union-attr]
    for info in FLAGGED:
        assert info.flag is not None
        typed, expected = FLAG_SAMPLES[info.flag.name]
        overrides, sources = _flag_overrides({info.flag.parameter: typed})
        config = load_config(environ={}, overrides=overrides)
        value: Any = config
        for part in info.path:
            value = getattr(value, part)
        assert value == expected, info.flag.name
        assert sources[info.dotted] == info.flag.name
        if info.switches_on:  # a flag inside a section turns the section on
            assert getattr(config, info.path[0]).enabled, info.flag.name
        else:
            assert not config.latency.enabled and not config.fault_injection.enabled


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "chaoss:\n  enabled: true\n",
            "chaos.yaml:1: 'chaoss' is not a mockforge key; did you mean 'chaos'?",
            id="insertion",
        ),
        pytest.param("app: 1\nchoas: {}\n", "chaos.yaml:2: 'choas' is not", id="swap"),
        pytest.param("Chaos: {}\n", "chaos.yaml:1: 'Chaos' is not", id="case"),
        pytest.param("chas: {}\n", "chaos.yaml:1: 'chas' is not", id="deletion"),
        pytest.param(
            # docs/scenarios.md's fault-script snippet as it was: it did nothing.
            "app: {debug: true}\nrules:\n  - match: {path: /api/pay}\n"
            "    fault_injection: {enabled: true, script: [503, ok]}\n",
            "chaos.yaml:2: 'rules' is a chaos setting outside the chaos block, where it does "
            "nothing; did you mean 'chaos.rules' (indented under chaos:)?",
            id="rules-at-the-top",
        ),
        pytest.param(
            "chaos:\n  enabled: true\nlatency: {fixed_delay_ms: 5}\n",
            "chaos.yaml:3: 'latency' is a chaos setting outside",
            id="beside-the-block",
        ),
        pytest.param("scenario: slow_backend\n", "chaos.yaml:1: 'scenario' is a", id="scenario"),
        pytest.param(
            "observability:\n  chaos: {enabled: true}\n  fault_injection: {}\n",
            "chaos.yaml:3: 'observability.fault_injection' is a chaos setting outside the "
            "chaos block, where it does nothing; did you mean "
            "'observability.chaos.fault_injection'",
            id="beside-observability-chaos",
        ),
        pytest.param(
            "observability:\n  chaso: {enabled: true}\n",
            "chaos.yaml:2: 'observability.chaso' is not a mockforge key; did you mean "
            "'observability.chaos'?",
            id="observability-typo",
        ),
        pytest.param(
            "chaos:\n  enabled: true\n  latency:\n    fixed_delay_ms: 5\n   probability: 1\n",
            "chaos.yaml:5:4: not valid YAML (while parsing a block mapping at line 2, "
            "expected <block end>, but found '<block mapping start>')",
            id="yaml-error-line-and-column",
        ),
        pytest.param(b"chaos: \xff\n", "chaos.yaml: not a YAML file (not UTF-8", id="binary"),
    ],
)
def test_chaos_settings_outside_the_chaos_block_are_refused_by_line(
    tmp_path: Path, text: str | bytes, expected: str
) -> None:
    path = tmp_path / "chaos.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    [problem] = caught.value.problems
    assert problem.startswith(f"{tmp_path}/{expected}"), problem
    assert "<unicode string>" not in problem


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("database: {url: 'postgres://x'}\nlogging: {level: info}\n", id="others"),
        pytest.param("enabled: true\nseed: 3\nplugins: [auth]\n", id="common-words"),
        pytest.param("observability:\n  latency: {buckets: [1, 5]}\n", id="others-observability"),
        pytest.param("routes: []\nchaos: {enabled: true}\n", id="mock-api-routes"),
    ],
)
def test_a_file_of_other_applications_keys_stays_fine(tmp_path: Path, text: str) -> None:
    path = tmp_path / "chaos.yaml"
    path.write_text(text)
    load_config(path, environ={})


def sources(
    tmp_path: Path, yaml_text: str, env: dict[str, str], overrides: dict[str, Any]
) -> tuple[ChaosConfig, list[str]]:
    path = tmp_path / "chaos.yaml"
    path.write_text(yaml_text)
    warnings: list[str] = []
    config = load_config(path, environ=env, overrides=overrides, on_warning=warnings.append)
    return config, warnings


LATENCY_ENV = "MOCKFORGE_CHAOS_LATENCY_FIXED_DELAY_MS"


@pytest.mark.parametrize(
    ("yaml_text", "env", "overrides", "on"),
    [
        pytest.param("chaos:\n  latency: {fixed_delay_ms: 5}\n", {}, {}, True, id="yaml"),
        pytest.param("", {LATENCY_ENV: "5"}, {}, True, id="env"),
        pytest.param("", {}, {"latency": {"fixed_delay_ms": 5}}, True, id="explicit"),
        pytest.param(
            "chaos:\n  latency: {enabled: false, fixed_delay_ms: 5}\n",
            {},
            {},
            False,
            id="yaml-off",
        ),
        pytest.param(
            "",
            {LATENCY_ENV: "5", "MOCKFORGE_CHAOS_LATENCY_ENABLED": "no"},
            {},
            False,
            id="env-off",
        ),
        pytest.param(  # a later source names a setting: it turns the section on
            "chaos:\n  latency: {enabled: false}\n",
            {LATENCY_ENV: "5"},
            {},
            True,
            id="env-over-yaml",
        ),
        pytest.param(  # a later source turns it off: the earlier one's settings do nothing
            "chaos:\n  latency: {fixed_delay_ms: 5}\n",
            {"MOCKFORGE_CHAOS_LATENCY_ENABLED": "false"},
            {},
            False,
            id="env-off-over-yaml",
        ),
        pytest.param("chaos:\n  latency: {enabled: false}\n", {}, {}, False, id="only-enabled"),
    ],
)
def test_naming_a_setting_turns_its_section_on_in_every_source(
    tmp_path: Path, yaml_text: str, env: dict[str, str], overrides: dict[str, Any], on: bool
) -> None:
    config, warnings = sources(
        tmp_path, yaml_text, {"MOCKFORGE_CHAOS_ENABLED": "1", **env}, overrides
    )
    assert config.latency.enabled is on
    named = "fixed_delay_ms" in yaml_text or env.get(LATENCY_ENV) or overrides
    if on or not named:
        assert warnings == []
    else:  # settings that do nothing are said, naming where they came from
        [warning] = warnings
        assert warning.startswith("mockforge: chaos.latency: fixed_delay_ms set (")
        assert warning.endswith(") but chaos.latency.enabled is false: nothing of it is injected")
        assert (LATENCY_ENV if env.get(LATENCY_ENV) else "chaos.yaml") in warning


def test_the_issue_s_pattern_variable_turns_faults_on() -> None:
    env = {"MOCKFORGE_CHAOS_FAULT_INJECTION_PATTERN": "fail_first:3:503"}
    config = load_config(environ={"MOCKFORGE_CHAOS_ENABLED": "true", **env})
    assert config.fault_injection.enabled
    assert config.fault_injection.pattern is not None


def test_rules_and_custom_scenarios_follow_the_rule(tmp_path: Path) -> None:
    config, _ = sources(
        tmp_path,
        "chaos:\n  enabled: true\n  rules:\n    - match: {path: /x}\n"
        "      fault_injection: {script: [503]}\n",
        {},
        {},
    )
    assert dict(config.rules[0].overrides)["fault_injection"] == (
        ("script", ("503",)),
        ("enabled", True),
    )
    assert not config.fault_injection.enabled  # the global section is not the rule's
    scenario, _ = scenario_from_dict("mine", {"latency": {"fixed_delay_ms": 5}}, "s.mine")
    assert scenario.config.latency.enabled


def test_chaos_off_with_sections_on_is_said(tmp_path: Path) -> None:
    _config, warnings = sources(tmp_path, "chaos:\n  latency: {fixed_delay_ms: 5}\n", {}, {})
    assert warnings == [
        "mockforge: chaos.enabled is false: latency set, but nothing is injected until "
        "chaos is turned on (chaos.enabled: true, --chaos, MOCKFORGE_CHAOS_ENABLED=true, or "
        "POST /api/chaos/enable)"
    ]
