"""Every figure the docs state has a test (issue 29): a table of each figure and bound in
README.md and docs/*.md (ms, s, %, bytes, days) beside the test that checks it.

A figure found in the docs with no entry fails, naming the doc and the figure; an entry
whose figure is no longer in its doc, or whose test does not exist, fails too. Figures
that are not promises (measurements of one run, example values in a snippet) are listed
apart with the reason. docs/PERFORMANCE.md is all measurements (its benchmarks under
benchmarks/ print them; tests never assert wall-clock speed), and the generated settings
tables are checked against the declarations by test_generated_docs_are_current, so
neither is scanned here.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parent.parent
DOCS = ["README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]
SKIPPED = {"docs/PERFORMANCE.md"}
# A number and a unit; a bare "s" needs a space before it ("503s" is a plural).
FIGURE = re.compile(
    r"(?<![\w.])\d[\d,]*(?:\.\d+)?"
    r"(?:\s?(?:ms|us|%|bytes|KB|kB|MB|MiB|GiB|KiB|days?|minutes?)|\s(?:s|seconds?))(?!\w)"
)
GENERATED_ROW = re.compile(r"^\| `(chaos\.|MOCKFORGE_)")

T = "tests/"
SCENARIOS = T + "test_scenarios.py::test_predefined_values_are_the_design_notes"
SOURCES = T + "test_scenarios.py::test_network_profiles_are_their_sources_figures"
PROFILES = T + "test_config.py::test_generated_docs_are_current"
GLOBAL_LIMIT = T + "test_shared_state.py::test_a_global_limit_is_one_limit_for_all_workers"
ADMIN_HELD = (
    T + "test_admin.py::test_chaos_can_be_seen_and_stopped_at_once_while_every_thread_is_held"
)
ADMIN_SLOW = T + "test_admin.py::test_slow_clients_do_not_take_the_admin_listener_down"
THIRTY_DAYS = T + "test_api.py::test_seconds_are_at_most_30_days_at_the_bound_and_one_past_it"
BOUNDS = T + "test_config.py::test_each_bad_value_gives_one_error_naming_its_path"
CONSTANT = T + "test_promises.py::test_documented_constant"
LEASE = T + "test_lease.py::test_a_worker_spends_its_lease_locally_and_gives_back_the_rest"
WORKER_TIMEOUT = T + "test_cli.py::test_worker_timeout_covers_the_longest_injected_delay"
RELEASED = T + "test_release_server.py::test_8_requests_held_3_s_are_released_by_the_disable"
STREAM_CUT_MS = (
    T
    + "test_streams_server.py::test_a_stream_cut_after_t_ms_is_cut_while_the_app_sits_between_events"
)
OUTAGE = T + "test_store_outage.py::test_a_redis_outage_limits_each_worker_at_its_share"
HOLD_CHECK = T + "test_api.py::test_a_config_that_outlasts_the_workers_is_refused_with_the_reason"

# (doc, figure as written, the test that checks it)
PROMISES: list[tuple[str, str, str]] = [
    ("README.md", "500 ms", SCENARIOS),
    ("README.md", "100 KB", SCENARIOS),
    ("README.md", "10 ms", LEASE),
    ("README.md", "3%", GLOBAL_LIMIT),
    *[("docs/CHAOS_ENGINEERING.md", f, SCENARIOS) for f in (
        "500 ms", "20%", "100%", "5%", "10%", "5000 ms", "30%", "2000 ms")],
    *[("docs/CHAOS_ENGINEERING.md", f, PROFILES) for f in (
        "562.5 ms", "300 ms", "3%", "28 ms", "120 ms")],
    *[("docs/CHAOS_ENGINEERING.md", f, SOURCES) for f in ("165 ms", "630 ms", "70 ms", "840 ms")],
    ("docs/CHAOS_ENGINEERING.md", "30 s", WORKER_TIMEOUT),
    ("docs/CHAOS_ENGINEERING.md", "300ms", STREAM_CUT_MS),
    ("docs/CHAOS_ENGINEERING.md", "60 s", HOLD_CHECK),
    ("docs/CHAOS_ENGINEERING.md", "41 s", HOLD_CHECK),
    ("docs/RELIABILITY.md", "600,000 ms", BOUNDS),
    ("docs/RELIABILITY.md", "30 days", THIRTY_DAYS),
    ("docs/RELIABILITY.md", "12 s", T + "test_reliability.py::test_schemathesis_finds_no_server_error_and_no_mismatch"),
    ("docs/RELIABILITY.md", "100 ms", ADMIN_HELD),
    ("docs/RELIABILITY.md", "10 s", CONSTANT),
    ("docs/RELIABILITY.md", "1 ms", T + "test_breaker.py::test_a_window_ends_exactly_window_s_after_it_began"),
    ("docs/api.md", "20%", SCENARIOS),
    ("docs/api.md", "64 KB", T + "test_api.py::test_body_over_64kb_is_413"),
    ("docs/api.md", "1 MiB", T + "test_api.py::test_a_state_too_big_for_the_store_is_413_not_an_outage"),
    ("docs/api.md", "600,000 ms", BOUNDS),
    ("docs/api.md", "30 days", THIRTY_DAYS),
    ("docs/configuration.md", "16 MiB", CONSTANT),
    ("docs/configuration.md", "10 ms", LEASE),
    ("docs/configuration.md", "50 ms", T + "test_lease.py::test_a_refusal_is_remembered_until_a_token_can_be_back"),
    ("docs/configuration.md", "1.5 s", T + "test_lease.py::test_four_processes_on_the_embedded_store_get_one_limit"),
    ("docs/configuration.md", "3%", T + "test_lease.py::test_four_processes_on_the_embedded_store_get_one_limit"),
    ("docs/configuration.md", "20 ms", CONSTANT),
    ("docs/configuration.md", "200 ms", T + "test_traffic_shaping.py::test_retransmission_stall_doubles_the_rto"),
    ("docs/configuration.md", "60 s", CONSTANT),
    ("docs/configuration.md", "120 s", CONSTANT),
    ("docs/observability.md", "64 KB", CONSTANT),
    ("docs/observability.md", "0.2 s", T + "test_recorder.py::test_the_writer_thread_waits_the_documented_0_2_s_between_writes"),
    ("docs/observability.md", "30 s", CONSTANT),
    ("docs/observability.md", "50 ms", T + "test_verdicts.py::test_retry_after_is_honoured_when_the_wait_is_long_enough"),
    ("docs/observability.md", "5 s", CONSTANT),
    ("docs/observability.md", "10 s", CONSTANT),
    *[("docs/scenarios.md", f, SCENARIOS) for f in (
        "500 ms", "20%", "100%", "5%", "10%", "5000 ms", "30%", "2000 ms", "100KB",
        "100,000 bytes")],
    *[("docs/scenarios.md", f, PROFILES) for f in (
        "562.5 ms", "300 ms", "3%", "28 ms", "120 ms")],
    ("docs/scenarios.md", "10%", T + "test_cohorts.py::test_a_tenth_of_1000_users_fail_on_every_request_and_the_rest_on_none"),
    ("docs/CHAOS_ENGINEERING.md", "10%", T + "test_cohorts_server.py::test_a_user_in_the_cohort_always_fails_and_one_outside_never"),
    *[("docs/scenarios.md", f, SOURCES) for f in ("165 ms", "60 ms", "630 ms", "70 ms", "840 ms")],
    ("docs/scenarios.md", "10 s", T + "test_patterns_and_rules.py::test_time_based_patterns"),
    ("docs/scenarios.md", "2 s", T + "test_patterns_and_rules.py::test_time_based_patterns"),
    ("docs/scenarios.md", "64 KiB", CONSTANT),
    ("docs/scenarios.md", "30 s", T + "test_shared_state.py::test_the_startup_scenario_resumes_on_every_worker"),
    ("docs/serving.md", "30 s", WORKER_TIMEOUT),
    ("docs/serving.md", "64 KB", T + "test_proxy.py::test_a_10_mb_body_streams_through_in_bounded_memory"),
    ("docs/serving.md", "10 MB", T + "test_proxy.py::test_a_10_mb_body_streams_through_in_bounded_memory"),
    ("docs/serving.md", "0.25 MB", T + "test_proxy.py::test_a_10_mb_body_streams_through_in_bounded_memory"),
    ("docs/serving.md", "5 s", CONSTANT),
    ("docs/serving.md", "1 GiB", T + "test_mock_api.py::test_bytes_serves_up_to_1_gib_and_never_more"),
    ("docs/serving.md", "10 s", CONSTANT),
    ("docs/serving.md", "100 ms", ADMIN_HELD),
    ("docs/serving.md", "100 ms", RELEASED),
    ("docs/serving.md", "20 ms", CONSTANT),
    ("docs/serving.md", "3 s", RELEASED),
    ("docs/serving.md", "2 s", T + "test_active_faults_server.py::test_two_of_eight_are_held_across_two_workers"),
    ("docs/serving.md", "0.25 s", CONSTANT),
    ("docs/state.md", "20 ms", CONSTANT),
    ("docs/state.md", "100 ms", RELEASED),
    ("docs/state.md", "50 ms", T + "test_state_redis.py::test_the_version_is_polled_every_50_ms_on_the_stores_clock"),
    ("docs/state.md", "1 MiB", T + "test_api.py::test_a_state_too_big_for_the_store_is_413_not_an_outage"),
    ("docs/state.md", "10 ms", LEASE),
    ("docs/state.md", "5 ms", CONSTANT),
    ("docs/state.md", "120 s", CONSTANT),
    ("docs/state.md", "250 ms", CONSTANT),
    ("docs/state.md", "0.5 s", T + "test_state_redis.py::test_outage_fails_fast_and_recovers"),
    ("docs/state.md", "2 s", CONSTANT),
    ("docs/state.md", "10 s", CONSTANT),
    ("docs/state.md", "300 ms", T + "test_state_start.py::test_the_issues_two_servers_in_turn"),
    *[("docs/state.md", f, OUTAGE) for f in ("4 s", "1.5 s")],
    ("docs/RELIABILITY.md", "4 s", OUTAGE),
    ("docs/RELIABILITY.md", "3 s", T + "test_recorder_settle.py::test_a_verdict_waits_for_a_late_writer_in_another_process_and_counts_its_rows"),
    ("docs/state.md", "5%", T + "test_state_redis_topologies.py::test_two_servers_of_two_workers_share_one_limit_and_one_state_on_a_cluster"),
    ("docs/state.md", "3%", T + "test_manyhost.py::test_a_global_limit_is_one_limit_across_three_hosts"),
    ("docs/state.md", "100 ms", T + "test_manyhost.py::test_a_management_call_on_one_host_reaches_every_host_within_100_ms"),
]  # fmt: skip

MEASURED = "a measurement of one run, not a promise"
EXAMPLE = "an example value in a snippet or an error message shown"
# (doc, figure) -> why it needs no test
NOT_PROMISES: dict[tuple[str, str], str] = {
    ("README.md", "100 KiB"): EXAMPLE,
    ("docs/scenarios.md", "558 ms"): "RFC 2488's figure, cited beside geo_satellite's 630 ms",
    ("docs/observability.md", "535 us"): MEASURED,
    ("docs/observability.md", "663 us"): MEASURED,
    ("docs/observability.md", "9ms"): EXAMPLE,
    ("docs/observability.md", "5ms"): EXAMPLE,
    ("docs/observability.md", "0ms"): EXAMPLE,
    ("README.md", "512ms"): EXAMPLE,
    ("README.md", "34 s"): MEASURED,
    ("README.md", "49 s"): MEASURED,
    ("README.md", "5 minutes"): MEASURED,
    ("README.md", "52 s"): MEASURED,
    ("README.md", "86 s"): MEASURED,
    ("docs/RELIABILITY.md", "52 s"): MEASURED,
    **{("docs/serving.md", f): EXAMPLE + " (a sizing example: W*T/d and Little's law)" for f in (
        "200 ms", "10 ms")},
    ("docs/serving.md", "60 ms"): MEASURED + " (benchmarks/ceiling.py, the admin port's p99)",
    **{("docs/RELIABILITY.md", f): MEASURED + " (the soak run's mix and results)" for f in (
        "30%", "10 ms", "5%", "1%", "200 ms", "65.72%", "29.51%", "1.52%", "1.54%", "0.59%",
        "0.57%", "0.55%", "44.7 MB", "45.5 MB", "1.6 MB", "2 minutes", "1 s")},
    **{("docs/configuration.md", f): MEASURED for f in ("16 us", "150 us", "440 us")},
    ("docs/serving.md", "0.4 s"): EXAMPLE + " (a guard's reason, as one run wrote it)",
    **{("docs/observability.md", f): MEASURED + " (recorder latency under load)" for f in (
        "0.25 s", "0.13 s", "0.22 s", "0.30 s", "0.27 s", "0.39 s", "0.63 s", "4.6 s")},
    **{("docs/observability.md", f): MEASURED + " (benchmarks/verdict_latency.py)" for f in (
        "0.18 s", "0.61 s", "0.23 s", "0.34 s", "2.07 s")},
    ("docs/CHAOS_ENGINEERING.md", "500 ms"): "also the network_degradation value (tested)",
    **{("docs/state.md", f): MEASURED + " (a Sentinel failover on loopback)" for f in (
        "2.0 s", "0.3 s")},
    **{("docs/state.md", f): MEASURED + " (benchmarks/store_contention.py)" for f in (
        "0.11 us", "4.5 us", "16.1 us", "0.035 us", "4.3 us", "8.4 us", "24.6 us", "296 us",
        "34.5 us", "3.7 us", "3.3 us", "5.8 us", "0.15 us", "264 us", "896 us", "249 us")},
}  # fmt: skip


def figures(doc: str) -> set[str]:
    """The figures a doc states, outside the generated settings tables."""
    found: set[str] = set()
    for line in (ROOT / doc).read_text().splitlines():
        if not GENERATED_ROW.match(line):
            found.update(match.group(0) for match in FIGURE.finditer(line))
    return found


def test_every_figure_in_the_docs_has_an_entry() -> None:
    listed = {(doc, figure) for doc, figure, _ in PROMISES} | set(NOT_PROMISES)
    missing = [
        f"{doc}: {figure!r}"
        for doc in DOCS
        if doc not in SKIPPED
        for figure in sorted(figures(doc))
        if (doc, figure) not in listed
    ]
    assert missing == [], "figures with no test in tests/test_promises.py:\n" + "\n".join(missing)


def test_every_entry_is_in_its_doc_and_names_a_test_that_exists() -> None:
    wrong = []
    for doc, figure, node in PROMISES:
        if figure not in figures(doc):
            wrong.append(f"{doc}: {figure!r} is no longer stated")
        path, _, name = node.partition("::")
        if name.split("[")[0] not in _test_names(path):
            wrong.append(f"{doc}: {figure!r}: no test {node}")
    wrong += [
        f"{doc}: {figure!r} is no longer stated"
        for doc, figure in NOT_PROMISES
        if figure not in figures(doc)
    ]
    assert wrong == []


@functools.cache
def _test_names(path: str) -> frozenset[str]:
    file = ROOT / path
    if not file.exists():
        return frozenset()
    tree = ast.parse(file.read_text())
    return frozenset(node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef))


def _constant(module: str, name: str) -> Any:
    import importlib

    return getattr(importlib.import_module(f"mockforge_wsgi.{module}"), name)


@pytest.mark.parametrize(
    ("module", "name", "documented"),
    [
        pytest.param("fault", "DRAIN_LIMIT", 16 * 1024 * 1024, id="drain-16MiB"),
        pytest.param("traffic_shaping", "PACE_INTERVAL_S", 0.02, id="pace-slice-20ms"),
        pytest.param("traffic_shaping", "MAX_RTO_S", 60.0, id="rto-cap-60s"),
        pytest.param("state.redis_store", "SLOT_LEASE_S", 120, id="redis-lease-120s"),
        pytest.param("state.redis_store", "FLUSH_S", 0.005, id="redis-counts-5ms"),
        pytest.param("recorder", "MAX_HASHED_BODY", 64 * 1024, id="hashed-body-64KB"),
        pytest.param("recorder", "MAX_SETTLE_S", 5.0, id="settle-at-most-5s"),
        pytest.param("recorder", "GONE_S", 10.0, id="writer-elsewhere-gone-10s"),
        pytest.param("verdicts", "DEFAULT_WINDOW_S", 30.0, id="verdict-window-30s"),
        pytest.param("rules", "MAX_JSON_BODY", 64 * 1024, id="json-field-64KiB"),
        pytest.param("admin", "ADMIN_READ_TIMEOUT_S", 10.0, id="admin-read-10s"),
        pytest.param("state.base", "LEASE_RENEW_S", 2.0, id="server-lease-renewed-2s"),
        pytest.param("state.base", "LEASE_TTL_S", 10.0, id="server-lease-10s"),
        pytest.param("release", "POLL_S", 0.02, id="release-poll-20ms"),
        pytest.param("state.redis_store", "WORKER_TTL_S", 10, id="live-worker-10s"),
        pytest.param("state.degrading", "RETRY_S", 1.0, id="store-retried-each-second"),
        pytest.param("state.degrading", "BEAT_S", 1.0, id="workers-counted-each-second"),
        pytest.param("answer_window", "CHECK_S", 0.25, id="guard-check-0.25s"),
    ],
)
def test_documented_constant(module: str, name: str, documented: float) -> None:
    """The figure the docs give, where the mechanism reads it from one constant (the
    behaviour around it has its own tests)."""
    assert _constant(module, name) == documented


def test_the_documented_timeouts_are_the_defaults() -> None:
    """Redis socket timeouts of 250 ms; the proxy's upstream connect 5 s, read 30 s."""
    import inspect

    from mockforge_wsgi.proxy import ChaosProxy
    from mockforge_wsgi.state.redis_store import RedisStore

    redis = inspect.signature(RedisStore).parameters
    assert redis["socket_timeout_s"].default == 0.25
    proxy = inspect.signature(ChaosProxy).parameters
    assert (proxy["connect_timeout_s"].default, proxy["read_timeout_s"].default) == (5.0, 30.0)
