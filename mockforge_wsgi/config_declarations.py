"""The chaos config's declarations: every section, every setting, the rules, and how raw
data becomes the frozen classes.

Each setting is declared once, with :func:`setting`: its default, how a raw value
(YAML, an environment string, a Python value) becomes a typed one, what range is
allowed, and a help text. Validation, the environment variable names, the ``serve``
flags, the OpenAPI schemas and the reference table in ``docs/configuration.md`` all read
that one declaration. A room of its own, apart from loading (``config.py``: files,
layers, merge, environment), because everything that reads a setting needs these, and
none of it needs YAML or the environment. Import them from ``mockforge_wsgi.config``,
which re-exports every name here.

Usage::

    config = config_from_dict({"latency": {"fixed_delay_ms": 200}})  # one source
    slower = attrs.evolve(config, latency=attrs.evolve(config.latency, fixed_delay_ms=500))
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

import attrs

from . import _kinds as kinds
from ._kinds import shown
from ._settings import ConfigError, Flag, section, setting
from .patterns import MAX_SCRIPTED_RULES, FaultPattern, parse_pattern
from .plugins import load_plugins, plugins_section
from .rules import Rule, parse_match

__all__ = [
    "ACTIVE_FAULTS",
    "AFTER_APP_FAULTS",
    "BODY_BYTES",
    "BURST",
    "BYTES_PER_S",
    "CONNECTIONS",
    "CORRUPTIONS",
    "CUT_MODES",
    "DELAY_MS",
    "ENV_PREFIX",
    "FAULT_NAMES",
    "MAX_DELAY_MS",
    "MAX_SCRIPT_STEPS",
    "NAMES",
    "PARAMETERIZED",
    "PARAMETERIZED_NAMES",
    "PATTERN",
    "PERCENT",
    "PLUGINS",
    "PROBABILITY",
    "RATE",
    "ROOT",
    "RULES",
    "RULE_SECTIONS",
    "RULE_SETTINGS",
    "SCRIPT",
    "SECTION_CLASSES",
    "SEED",
    "SHAPE",
    "SIGMA",
    "TRACKED_KEYS",
    "BulkheadConfig",
    "ChaosConfig",
    "CircuitBreakerConfig",
    "ConfigError",
    "FaultInjectionConfig",
    "Flag",
    "GuardConfig",
    "HeaderControlConfig",
    "LatencyConfig",
    "OutboundConfig",
    "PluginsConfig",
    "RateLimitConfig",
    "ScriptSteps",
    "SettingInfo",
    "TrafficShapingConfig",
    "apply_rule",
    "config_from_dict",
    "is_fault_step",
    "iter_settings",
    "longest_delay_s",
    "section_to_dict",
    "switched_on",
]


ENV_PREFIX = "MOCKFORGE_CHAOS_"
ROOT = "chaos"


PROBABILITY = kinds.Between(0.0, 1.0)
PERCENT = kinds.Between(0.0, 100.0)
# Every number a user can send is finite and bounded by what a server can serve.
# Delays and timeouts: at most 10 minutes (no HTTP client waits longer; `mockforge
# serve` raises gunicorn's worker timeout above the longest its config can inject).
MAX_DELAY_MS = 600_000.0
DELAY_MS = kinds.Between(0.0, MAX_DELAY_MS)
RATE = kinds.Between(0.001, 1_000_000.0)  # requests per second
BURST = kinds.Between(1, 1_000_000)
BYTES_PER_S = kinds.Between(0, 10_000_000_000)
CONNECTIONS = kinds.Between(0, 100_000)
ACTIVE_FAULTS = kinds.Between(1, 100_000)
TRACKED_KEYS = kinds.Between(1, 1_000_000)  # sizes the embedded store's table (32 B a key)
SIGMA = kinds.Between(0.0, 5.0)  # lognormal shape: e^(6 sigma) is the 6-sigma tail
# Pareto shape (alpha): at 0.1 the one-in-a-billion tail is 10^90 times the scale (the
# cap holds it); above 100 the draw is the scale within 0.03% at that tail.
SHAPE = kinds.Between(0.1, 100.0)
# The tail a distribution's longest delay is read at: lognormal's 6 sigma, about 1e-9.
_TAIL = 1e-9
SEED = kinds.Between(-(2**63), 2**63 - 1)
BODY_BYTES = kinds.Between(0, 1_000_000_000_000)
AFTER_APP_FAULTS = ("reset", "http_error", "stall")
CORRUPTIONS = (
    "flip",
    "random",
    "invalid_json",
    "truncate",
    "wrong_content_type",
    "empty_reply",
    "malformed_chunk",
    "random_then_close",
)
CUT_MODES = ("reset", "close")
CHUNKS = kinds.Between(0, 1_000_000)
# Faults by name (a fault script's steps, X-Mockforge-Fault), beside a status 400-599 and
# after-app-<status>; fault.named_fault makes each its Fault.
FAULT_NAMES = (
    "reset",
    "timeout",
    "partial",
    "after-app-reset",
    "after-app-stall",
    "empty-reply",
    *(f"corrupt-{mode}" for mode in CORRUPTIONS),
)
# Named faults with a number in them: a stream cut after N ms or N chunks, an upload
# reset after N bytes (fault.named_fault reads the number).
PARAMETERIZED = re.compile(r"(cut-after-)(\d+)(ms|-chunks)|(upload-reset-after-)(\d+)")
PARAMETERIZED_NAMES = ("cut-after-<N>ms", "cut-after-<N>-chunks", "upload-reset-after-<N>")
MAX_SCRIPT_STEPS = 100
# No step is longer (a numbered name's number included): a longer one is named as such.
_LONGEST_STEP = 40
NAMES = (
    "reset, timeout, partial, after-app-<reset|stall|status>, empty-reply, corrupt-<how>, "
    "cut-after-<N>ms|-chunks, upload-reset-after-<N>"
)


@attrs.frozen
class ScriptSteps:
    """Each step of a fault script: a status, a fault name, or ``ok`` (let it through)."""

    def problem(self, value: Any) -> str | None:
        if len(value) > MAX_SCRIPT_STEPS:
            return f"has {len(value)} steps; at most {MAX_SCRIPT_STEPS}"
        bad = [step for step in value if not is_fault_step(step)]
        if not bad:
            return None
        if len(str(bad[0])) > _LONGEST_STEP:  # the list of names would not fit beside it
            return f"{shown(bad[0])} is not a step: longer than any status or fault name"
        return f"{shown(bad[0])} is not a step: a status 400-599, ok, or a fault name ({NAMES})"

    def describe(self) -> str:
        return "each a status, `ok` or a fault name"

    def json_schema(self) -> dict[str, Any]:
        return {"maxItems": MAX_SCRIPT_STEPS}


def _steps(raw: Any) -> tuple[str, ...]:
    """Script steps from a list of statuses and names, or text ``503,503,reset,ok``."""
    if isinstance(raw, str):
        raw = [part.strip() for part in raw.split(",") if part.strip()]
    if not isinstance(raw, (list, tuple)) or not all(
        isinstance(step, (str, int)) and not isinstance(step, bool) for step in raw
    ):
        raise ValueError("is not a list of steps (statuses and fault names)")
    return tuple(str(step).strip().lower() for step in raw)


SCRIPT = kinds.Kind(
    "a list of steps",
    (tuple,),
    _steps,
    {"type": "array", "items": {"type": ["string", "integer"]}},
)


def is_fault_step(step: str) -> bool:
    """A fault script step or an X-Mockforge-Fault value: ``ok``, a name, a status."""
    value = step.strip().lower()
    code = value.removeprefix("after-app-")
    return (
        value == "ok"
        or value in FAULT_NAMES
        or (code.isascii() and code.isdigit() and 400 <= int(code) <= 599)
        or PARAMETERIZED.fullmatch(value) is not None
    )


def _pattern(raw: Any) -> FaultPattern | None:
    if raw is None or isinstance(raw, FaultPattern):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("", "none", "null"):
        return None
    return parse_pattern(raw)


PATTERN = kinds.Kind(
    "a pattern (fail_first, every, sequence, fail_for_s, burst_s) or none",
    (FaultPattern, type(None)),
    _pattern,
    {"type": ["object", "string", "null"]},
)


@attrs.frozen
class LatencyConfig:
    """Delay added before the app runs."""

    enabled: bool = setting(False, kinds.BOOL, "Inject latency at all.")
    fixed_delay_ms: float = setting(
        0.0,
        kinds.FLOAT,
        "Base delay; the mean of `normal`.",
        DELAY_MS,
        ramps=True,
        flag=Flag("--chaos-latency-ms", "MS"),
    )
    random_delay_range_ms: tuple[float, float] | None = setting(
        None,
        kinds.RANGE,
        "Delay drawn uniformly from `min-max`; used when distribution is `uniform` "
        "(or `auto` and this is set).",
        kinds.OrderedRange(0, MAX_DELAY_MS),
        ramps=True,
        flag=Flag("--chaos-latency-range", "MIN-MAX"),
    )
    jitter_percent: float = setting(
        0.0, kinds.FLOAT, "Scale the delay by a uniform factor of +/- this percent.", PERCENT
    )
    probability: float = setting(
        1.0,
        kinds.FLOAT,
        "Share of requests that get a delay.",
        PROBABILITY,
        ramps=True,
        flag=Flag("--chaos-latency-probability", "P"),
    )
    distribution: str = setting(
        "auto",
        kinds.STR,
        "`auto` is `uniform` when random_delay_range_ms is set, else `fixed`.",
        kinds.OneOf(("auto", "fixed", "uniform", "normal", "lognormal", "pareto", "exponential")),
    )
    stddev_ms: float = setting(
        0.0, kinds.FLOAT, "Standard deviation of `normal` (clipped at 0).", DELAY_MS
    )
    median_ms: float = setting(100.0, kinds.FLOAT, "Median of `lognormal`.", DELAY_MS, ramps=True)
    sigma: float = setting(0.5, kinds.FLOAT, "Shape of `lognormal` (sigma of the log).", SIGMA)
    scale_ms: float = setting(
        100.0,
        kinds.FLOAT,
        "Scale of `pareto` (its smallest delay) and of `exponential` (its mean).",
        DELAY_MS,
        ramps=True,
    )
    shape: float = setting(
        2.0,
        kinds.FLOAT,
        "Shape (alpha) of `pareto`: smaller is a heavier tail (1.16: the 80/20 rule).",
        SHAPE,
    )
    cap_ms: float | None = setting(
        None, kinds.OPTIONAL_FLOAT, "Upper bound on any delay, after jitter.", DELAY_MS
    )

    def __attrs_post_init__(self) -> None:
        needs_range = self.distribution == "uniform" and self.random_delay_range_ms is None
        if needs_range:
            raise ConfigError(
                ["random_delay_range_ms: None is not allowed with distribution 'uniform'"]
            )


@attrs.frozen
class FaultInjectionConfig:
    """Faults answered instead of (or cutting) the app's response."""

    enabled: bool = setting(False, kinds.BOOL, "Inject faults at all.")
    http_errors: tuple[int, ...] = setting(
        (500, 502, 503, 504),
        kinds.INT_LIST,
        "Statuses an HTTP-error fault picks from, uniformly.",
        kinds.EachBetween(400, 599),
        flag=Flag("--chaos-http-errors", "CODES"),
    )
    http_error_probability: float = setting(
        0.0,
        kinds.FLOAT,
        "Chance of an HTTP-error fault (rolled 1st).",
        PROBABILITY,
        ramps=True,
        flag=Flag("--chaos-http-error-probability", "P"),
    )
    timeout_probability: float = setting(
        0.0,
        kinds.FLOAT,
        "Chance of a timeout: hold timeout_ms, then 504 (rolled 2nd).",
        PROBABILITY,
        ramps=True,
    )
    timeout_ms: float = setting(5000.0, kinds.FLOAT, "How long a timeout holds.", DELAY_MS)
    connection_error_probability: float = setting(
        0.0,
        kinds.FLOAT,
        "Chance of a TCP reset instead of a response (rolled 3rd).",
        PROBABILITY,
        ramps=True,
    )
    partial_response_probability: float = setting(
        0.0,
        kinds.FLOAT,
        "Chance of a body cut short under its full Content-Length (rolled 4th).",
        PROBABILITY,
        ramps=True,
    )
    partial_response_fraction: float = setting(
        0.5, kinds.FLOAT, "Share of the body sent before a partial response is cut.", PROBABILITY
    )
    partial_response_limit_bytes: int = setting(
        0,
        kinds.INT,
        "When above 0, a partial response is cut after this many bytes, not a share.",
        BODY_BYTES,
    )
    after_app_probability: float = setting(
        0.0,
        kinds.FLOAT,
        "Chance the app runs (its side effects done), then the client gets "
        "`after_app_fault` instead of its answer (rolled 5th).",
        PROBABILITY,
        ramps=True,
    )
    after_app_fault: str = setting(
        "reset",
        kinds.STR,
        "What a commit-then-fail fault does: `reset` (TCP reset), `http_error` (a status "
        "of http_errors), `stall` (hold timeout_ms, then close unanswered).",
        kinds.OneOf(AFTER_APP_FAULTS),
    )
    corruption_probability: float = setting(
        0.0,
        kinds.FLOAT,
        "Chance the app's answer reaches the client broken as `corruption` says (rolled 6th).",
        PROBABILITY,
        ramps=True,
    )
    corruption: str = setting(
        "flip",
        kinds.STR,
        "`flip` (bits flipped, same length), `random` (random bytes, same length), "
        "`invalid_json` (same length, no longer JSON), `truncate` (shorter, length "
        "adjusted), `wrong_content_type`, `empty_reply` (closed with no status line), "
        "`malformed_chunk` (a chunked body whose second chunk-size line is not hex, then "
        "closed), `random_then_close` (random bytes instead of a status line, then closed).",
        kinds.OneOf(CORRUPTIONS),
    )
    cut_probability: float = setting(
        0.0,
        kinds.FLOAT,
        "Chance a response body (a stream) is cut partway, after cut_after_ms or "
        "cut_after_chunks, whichever comes first; with neither, right after the headers "
        "(rolled 7th).",
        PROBABILITY,
        ramps=True,
    )
    cut_after_ms: float = setting(
        0.0,
        kinds.FLOAT,
        "A cut body is cut this long after its first byte, even while the app is between "
        "chunks; a body that ends sooner has its end held back until then; 0: no time.",
        DELAY_MS,
    )
    cut_after_chunks: int = setting(
        0,
        kinds.INT,
        "A cut body is cut after this many of the app's chunks (its end held back if it "
        "has fewer); 0: no count.",
        CHUNKS,
    )
    cut_mode: str = setting(
        "reset",
        kinds.STR,
        "How a body is cut: `reset` (TCP reset) or `close` (a clean close, without the "
        "terminating chunk of a chunked body).",
        kinds.OneOf(CUT_MODES),
    )
    upload_reset_probability: float = setting(
        0.0,
        kinds.FLOAT,
        "Chance of a TCP reset while the client still sends its body: after "
        "upload_reset_after_bytes of it were read, before the app runs (rolled 8th).",
        PROBABILITY,
        ramps=True,
    )
    upload_reset_after_bytes: int = setting(
        65536,
        kinds.INT,
        "Request-body bytes read before an upload reset (all of a shorter body).",
        BODY_BYTES,
    )
    retry_after_s: int = setting(
        1,
        kinds.INT,
        "Retry-After (seconds) on an injected 503 or 429 answer; 0: none.",
        kinds.Between(0, 86_400),
    )
    error_headers: tuple[tuple[str, str], ...] = setting(
        (),
        kinds.HEADER_MAP,
        "Headers added to every injected error answer, e.g. `{X-Fault: injected}` (env: JSON).",
    )
    error_bodies: tuple[tuple[int, str], ...] = setting(
        (),
        kinds.STATUS_BODIES,
        'The body of an injected answer by its status, e.g. `{503: \'{"error": '
        '"busy"}\'}` (text; JSON text is sent as JSON); others get error_body (env: JSON).',
    )
    script: tuple[str, ...] = setting(
        (),
        SCRIPT,
        "A fault script: one step per request, in order, consumed across workers (`[503, "
        "503, reset, ok]`; a status, `ok`, or a fault name); per route with a rule, per "
        "test with a header rule; then the probabilities resume. `GET /scripts` tells "
        "which steps were hit. Restarts at every change.",
        ScriptSteps(),
    )
    error_body: str | None = setting(
        None,
        kinds.OPTIONAL_BODY,
        "Body of an HTTP-error or timeout fault (a mapping is sent as JSON); "
        "default: JSON naming the fault.",
    )
    pattern: FaultPattern | None = setting(
        None,
        PATTERN,
        "HTTP errors by count or time, checked before the probabilities: "
        "`{fail_first: 3, status: 503}`, `{every: 5, status: 500}`, "
        "`{sequence: [503, 503, 200], repeat: false}`, `{fail_for_s: 10, status: 503}` "
        "(then recover), `{burst_s: 2, every_s: 10, status: 503}`; times count from the "
        "last change (env: `fail_first:3:503`, `burst_s:2/10:503`).",
    )


# rate_limit.headers: which families of rate-limit headers answers carry.
HEADER_STYLES = ("both", "ietf", "legacy", "none")


@attrs.frozen
class RateLimitConfig:
    """Token buckets: global, per client IP, per endpoint."""

    enabled: bool = setting(False, kinds.BOOL, "Limit request rates at all.")
    requests_per_second: float = setting(
        100.0,
        kinds.FLOAT,
        "Refill rate of the global bucket (and the default of the others).",
        RATE,
        flag=Flag(
            "--chaos-rate-limit",
            "RPS",
            "Below 10 the burst is lowered to ceil(RPS), so a low limit shows at once.",
        ),
    )
    burst_size: int = setting(10, kinds.INT, "Bucket capacity: requests admitted at once.", BURST)
    global_limit: bool = setting(True, kinds.BOOL, "One bucket for the whole server.")
    per_ip: bool = setting(False, kinds.BOOL, "One bucket per client IP.")
    per_ip_requests_per_second: float | None = setting(
        None, kinds.OPTIONAL_FLOAT, "Rate of each per-IP bucket; none: the global rate.", RATE
    )
    per_ip_burst_size: int | None = setting(
        None, kinds.OPTIONAL_INT, "Capacity of each per-IP bucket; none: burst_size.", BURST
    )
    per_endpoint: bool = setting(False, kinds.BOOL, "One bucket per route (or path).")
    per_endpoint_requests_per_second: float | None = setting(
        None,
        kinds.OPTIONAL_FLOAT,
        "Rate of each per-endpoint bucket; none: the global rate.",
        RATE,
    )
    per_endpoint_burst_size: int | None = setting(
        None,
        kinds.OPTIONAL_INT,
        "Capacity of each per-endpoint bucket; none: burst_size.",
        BURST,
    )
    trusted_proxies: tuple[str, ...] = setting(
        (),
        kinds.STR_LIST,
        "Proxy addresses whose X-Forwarded-For is believed; none by default.",
        kinds.Networks(),
    )
    max_tracked_keys: int = setting(
        100_000,
        kinds.INT,
        "Cap on per-IP and per-endpoint buckets kept in memory (read at start).",
        TRACKED_KEYS,
    )
    expose_headers: bool = setting(
        True,
        kinds.BOOL,
        "Add RateLimit-* headers to admitted responses too (429s always have them).",
    )
    headers: str = setting(
        "both",
        kinds.STR,
        "Which rate-limit headers answers carry (429s and admitted ones): both the "
        "`RateLimit-*` (IETF draft) and the `X-RateLimit-*` ones, ietf, legacy (`X-`), or "
        "none (a 429 keeps `Retry-After`).",
        kinds.OneOf(HEADER_STYLES),
    )
    store_mode: str = setting(
        "lease",
        kinds.STR,
        "With a shared store (file://, redis://): lease takes tokens in small batches "
        "per worker (one store call per batch, within 3% of the limit); exact takes each "
        "from the store.",
        kinds.OneOf(("lease", "exact")),
    )


@attrs.frozen
class TrafficShapingConfig:
    """Bandwidth, packet loss and connection limits."""

    enabled: bool = setting(False, kinds.BOOL, "Shape traffic at all.")
    bandwidth_limit_bps: int = setting(
        0,
        kinds.INT,
        "Response body rate in bytes per second; 0 is unlimited.",
        BYTES_PER_S,
        flag=Flag("--chaos-bandwidth-limit", "BPS"),
    )
    upload_bandwidth_limit_bps: int = setting(
        0, kinds.INT, "Request body read rate in bytes per second; 0 is unlimited.", BYTES_PER_S
    )
    body_duration_ms: float = setting(
        0.0,
        kinds.FLOAT,
        "The response body spread evenly over this long (the headers at once), in "
        "body_chunks writes, the last when the time is up; 0 is off.",
        DELAY_MS,
        ramps=True,
    )
    body_chunks: int = setting(
        10,
        kinds.INT,
        "Writes a body_duration_ms body is sent in (a body without Content-Length: one "
        "of the app's chunks each, the ones after the last at once).",
        kinds.Between(1, 100_000),
    )
    packet_loss_percent: float = setting(
        0.0,
        kinds.FLOAT,
        "Chance per 1460-byte segment of a retransmission delay.",
        PERCENT,
        ramps=True,
        flag=Flag("--chaos-packet-loss", "PERCENT"),
    )
    request_drop_probability: float = setting(
        0.0,
        kinds.FLOAT,
        "Chance that a whole request is dropped (connection cut).",
        PROBABILITY,
        ramps=True,
    )
    max_connections: int = setting(
        0, kinds.INT, "Requests in flight at most; 0 is unlimited.", CONNECTIONS
    )
    queue_timeout_ms: float = setting(
        0.0, kinds.FLOAT, "Wait this long for a slot before answering 503.", DELAY_MS
    )
    connection_timeout_ms: float = setting(
        0.0, kinds.FLOAT, "Bound on the whole response; 0 is none.", DELAY_MS
    )


@attrs.frozen
class CircuitBreakerConfig:
    """A circuit breaker the service seems to have: it opens after failures (5xx or no
    answer, real or injected) and answers at once until a cooldown has passed."""

    enabled: bool = setting(False, kinds.BOOL, "Simulate a circuit breaker.")
    failure_threshold: int = setting(
        5,
        kinds.INT,
        "Open after this many failures in a row (5xx or no answer).",
        kinds.Between(1, 10_000),
    )
    failure_ratio: float = setting(
        0.0,
        kinds.FLOAT,
        "Also open when this share of a window's answers failed (0: off).",
        PROBABILITY,
    )
    window_s: float = setting(
        10.0, kinds.FLOAT, "The window of failure_ratio, in seconds.", kinds.Between(0.1, 3600)
    )
    min_requests: int = setting(
        10,
        kinds.INT,
        "failure_ratio counts only once a window has this many answers.",
        kinds.Between(1, 1_000_000),
    )
    cooldown_s: float = setting(
        30.0,
        kinds.FLOAT,
        "Open this long, then half-open (Retry-After says the time left).",
        kinds.Between(0.1, 86_400),
    )
    half_open_probes: int = setting(
        1,
        kinds.INT,
        "Requests let through while half-open; one success closes, one failure reopens.",
        kinds.Between(1, 1000),
    )
    status: int = setting(
        503, kinds.INT, "The status answered while open.", kinds.Between(400, 599)
    )


@attrs.frozen
class BulkheadConfig:
    """A concurrency cap of its own for a route (a rule) or for the requests no such rule
    matches, shared by every worker: the rest wait, then get 503."""

    enabled: bool = setting(False, kinds.BOOL, "Cap the requests in flight here.")
    max_concurrent: int = setting(
        10, kinds.INT, "Requests in flight at most.", kinds.Between(1, 100_000)
    )
    queue_timeout_ms: float = setting(
        0.0, kinds.FLOAT, "Wait this long for a place before answering `status`.", DELAY_MS
    )
    status: int = setting(
        503, kinds.INT, "The status answered when full.", kinds.Between(400, 599)
    )
    retry_after_s: int = setting(
        1, kinds.INT, "Retry-After on that answer (0: none).", kinds.Between(0, 86_400)
    )


@attrs.frozen
class HeaderControlConfig:
    """Per-request chaos that a request asks for with headers (Envoy-style)."""

    enabled: bool = setting(
        False,
        kinds.BOOL,
        "Honour X-Mockforge-Delay-Ms, X-Mockforge-Fault, X-Mockforge-Fault-Percent, "
        "X-Mockforge-Throughput-Bps, X-Mockforge-Body-Duration-Ms and X-Mockforge-Seed "
        "(with an admin token set: only with X-Mockforge-Token).",
    )
    max_delay_ms: float = setting(
        10_000.0,
        kinds.FLOAT,
        "Cap on X-Mockforge-Delay-Ms and X-Mockforge-Body-Duration-Ms.",
        DELAY_MS,
    )


# The guard's bounds: a window of a second to ten minutes (a process keeps a snapshot of
# the window's counters per check, 4 a second), chaos on for at most MAX_DURATION_S.
WINDOW_S = kinds.Between(1, 600)
GUARD_DURATION_S = kinds.Between(1, 2_592_000)  # 30 days


@attrs.frozen
class GuardConfig:
    """A guard that turns chaos off by itself: when the app's own answers breach a bound
    over a sliding window (across every worker and host), or when chaos (on from the
    start, or switched on by the API) has run for ``max_duration_s`` without a renewal.
    An unset bound is off."""

    max_error_ratio: float | None = setting(
        None,
        kinds.OPTIONAL_FLOAT,
        "Turn chaos off when more than this share of the app's own answers (5xx, or none: "
        "the app raised) in the window are errors; injected answers are not counted.",
        PROBABILITY,
    )
    max_p99_ms: float | None = setting(
        None,
        kinds.OPTIONAL_FLOAT,
        "Turn chaos off when the p99 of the app's own time (to its status line, injected "
        "delays left out) in the window is above this.",
        DELAY_MS,
    )
    window_s: float = setting(
        10.0, kinds.FLOAT, "The sliding window the bounds are judged over.", WINDOW_S
    )
    min_requests: int = setting(
        20,
        kinds.INT,
        "Answers the window must hold before a bound can trip.",
        kinds.Between(1, 1_000_000),
    )
    max_duration_s: float | None = setting(
        None,
        kinds.OPTIONAL_FLOAT,
        "Chaos on (from the start, or switched on by the API: enable, a scenario started or "
        "scheduled) turns off after this long unless renewed (`POST /api/chaos/guard/renew`, "
        "or any enable).",
        GUARD_DURATION_S,
    )

    @property
    def watches_answers(self) -> bool:
        """Whether the app's answers are counted (a bound over the window is set)."""
        return self.max_error_ratio is not None or self.max_p99_ms is not None

    @property
    def on(self) -> bool:
        """Whether any bound is set: else the guard costs nothing."""
        return self.watches_answers or self.max_duration_s is not None


def _rules(raw: Any) -> tuple[Rule, ...]:
    """Rules from a list of ``{match: {...}, <section>: {...}}``; section values are
    validated like config, each problem with its path."""
    if isinstance(raw, tuple) and all(isinstance(rule, Rule) for rule in raw):
        return raw
    if isinstance(raw, str):  # from the environment: JSON
        try:
            raw = json.loads(raw) if raw.strip() else []
        except ValueError:
            raise ValueError("is not a JSON list of rules") from None
    if not isinstance(raw, list):
        raise ValueError("is not a list of rules")
    problems: list[str] = []
    rules = []
    for index, item in enumerate(raw):
        path = f"[{index}]"
        if not isinstance(item, Mapping) or "match" not in item:
            problems.append(f"{path}: {shown(item)} needs a match and config sections")
            continue
        match, match_problems = parse_match(item["match"], f"{path}.match")
        problems.extend(match_problems)
        overrides = []
        settings = []
        for key, value in item.items():
            if key == "match":
                continue
            if key in RULE_SETTINGS:  # a top-level setting a rule gives its own value
                parsed = _rule_setting(key, value, f"{path}.{key}", problems)
                if parsed is not _INVALID:
                    settings.append((key, parsed))
                continue
            cls = SECTION_CLASSES.get(key) if key in RULE_SECTIONS else None
            if cls is None:
                allowed = ", ".join(["match", *RULE_SETTINGS, *RULE_SECTIONS])
                problems.append(f"{path}.{key}: unknown key; allowed: {allowed}")
                continue
            value = switched_on(value, cls)
            section = _build(cls, value, f"{path}.{key}", problems, {})
            if section is not None:
                overrides.append((key, tuple((name, getattr(section, name)) for name in value)))
        if match is not None:
            rules.append(Rule(match, tuple(overrides), tuple(settings)))
    scripted = sum(rule.sets("fault_injection", "script") for rule in rules)
    if scripted > MAX_SCRIPTED_RULES:
        problems.append(
            f": {scripted} rules have a fault script; at most {MAX_SCRIPTED_RULES} may "
            "(a rule without one plays the global script)"
        )
    capping = sum(rule.gives("max_active_faults") for rule in rules)
    if capping > MAX_SCRIPTED_RULES:  # each has a slot pool
        problems.append(
            f": {capping} rules have a max_active_faults; at most {MAX_SCRIPTED_RULES} may "
            "(a rule without one shares the global pool)"
        )
    for section_name, what in (("circuit_breaker", "circuit breaker"), ("bulkhead", "bulkhead")):
        owning = sum(rule.has_section(section_name) for rule in rules)
        if owning > MAX_SCRIPTED_RULES:  # each has store counters or a slot pool
            problems.append(
                f": {owning} rules have a {what}; at most {MAX_SCRIPTED_RULES} may "
                f"(a rule without one shares the global {what})"
            )
    if problems:
        raise ConfigError(problems)
    return tuple(rules)


_INVALID = object()


def _rule_setting(name: str, raw: Any, path: str, problems: list[str]) -> Any:
    """A top-level setting's value in a rule, parsed and checked as at the top."""
    field = attrs.fields_dict(ChaosConfig)[name]
    kind: kinds.Kind = field.metadata["kind"]
    check: kinds.Check | None = field.metadata["check"]
    try:
        value = kind.parse(raw)
    except ValueError as error:
        problems.append(f"{path}: {kinds.not_of_kind(raw, error, check)}")
        return _INVALID
    problem = check.problem(value) if check else None
    if problem:
        problems.append(f"{path}: {problem}")
        return _INVALID
    return value


RULES = kinds.Kind(
    "a list of rules",
    (tuple,),
    _rules,
    {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["match"],
            "properties": {"match": {"type": "object"}},
        },
    },
)


def apply_rule(config: ChaosConfig, rule: Rule) -> ChaosConfig:
    """The config a request matching ``rule`` gets: its sections over the global ones."""
    sections = {
        name: attrs.evolve(getattr(config, name), **dict(fields))
        for name, fields in rule.overrides
    }
    return attrs.evolve(config, rules=(), **sections, **dict(rule.settings))


MAX_HOSTS = 100
OUTBOUND_RULE_SECTIONS = ("latency", "fault_injection")  # what a call's rule may set
# Faults of the server's side of a connection, which a client call has no place for: a
# streamed body cut on a timer, the upload cut, framing written on the client's socket.
INBOUND_ONLY_FAULTS = ("cut_probability", "upload_reset_probability")
INBOUND_ONLY_CORRUPTIONS = ("malformed_chunk", "random_then_close")


@attrs.frozen
class HostGlobs:
    """``host:port`` globs (``payments.internal:443``, ``*.internal:*``): each non-empty,
    without spaces, with a port or a glob for it."""

    def problem(self, value: Any) -> str | None:
        if len(value) > MAX_HOSTS:
            return f"has {len(value)} hosts; at most {MAX_HOSTS}"
        bad = [h for h in value if not h or len(h) > 300 or h != h.strip() or ":" not in h]
        if bad:
            return f"{shown(bad[0])} is not a host:port glob (e.g. payments.internal:443, *:*)"
        return None

    def describe(self) -> str:
        return "each host:port (globs)"

    def json_schema(self) -> dict[str, Any]:
        return {"maxItems": MAX_HOSTS}


@attrs.frozen
class OutboundRateLimitConfig:
    """A token bucket per host an outbound call goes to: the host's own rate limit."""

    enabled: bool = setting(
        False, kinds.BOOL, "Limit each host's calls; over it, a 429 without calling the host."
    )
    requests_per_second: float = setting(
        10.0, kinds.FLOAT, "Refill rate of each host's bucket.", RATE
    )
    burst_size: int = setting(10, kinds.INT, "Each host's bucket capacity.", BURST)


@attrs.frozen
class OutboundConfig:
    """Chaos for the HTTP calls the app itself makes (urllib3, requests, httpx):
    docs/outbound.md. Its sections and rules read as a ``chaos:`` block's."""

    enabled: bool = setting(
        False,
        kinds.BOOL,
        "Intercept the app's own HTTP calls (urllib3, requests, httpx) and inject this "
        "section's chaos into them (with chaos.enabled).",
    )
    hosts: tuple[str, ...] = setting(
        (),
        kinds.STR_LIST,
        "The calls chaos applies to, by `host:port` glob (`payments.internal:443`, "
        "`*.internal:*`); empty: every call. Any other call costs a dictionary lookup.",
        HostGlobs(),
    )
    refused_probability: float = setting(
        0.0,
        kinds.FLOAT,
        "Chance a call's connection is refused (rolled before the faults; the host is "
        "not called).",
        PROBABILITY,
        ramps=True,
    )
    latency: LatencyConfig = section(LatencyConfig, "Latency added before a call.")
    fault_injection: FaultInjectionConfig = section(
        FaultInjectionConfig,
        "Faults of a call: `http_errors` answered without calling the host, "
        "`connection_error_probability` a reset, `timeout_probability` a read timeout "
        "(at the caller's own timeout), `partial_response_probability` a cut body.",
    )
    rate_limit: OutboundRateLimitConfig = section(
        OutboundRateLimitConfig,
        "A rate limit per host (`host:port`): a call over it is answered 429 with "
        "`Retry-After` and `RateLimit-*`, the host not called.",
    )
    rules: tuple[Rule, ...] = setting(
        (),
        RULES,
        "Chaos per call: `[{match: {host, methods, path, path_regex, header, ...}, "
        "latency: {...}, fault_injection: {...}}]`; `host` is `host:port` (env: JSON).",
    )

    def __attrs_post_init__(self) -> None:
        # A call holds no place (slot, bulkhead, active fault) nor counts in a limit or
        # a breaker: a rule that asked for one would take what is never given back.
        problems = [
            f"rules[{index}].{name}: not for outbound calls; allowed: match, "
            f"{', '.join(OUTBOUND_RULE_SECTIONS)}"
            for index, rule in enumerate(self.rules)
            for name in (
                *(s for s, _ in rule.overrides if s not in OUTBOUND_RULE_SECTIONS),
                *(n for n, _ in rule.settings),
            )
        ]
        faults = [("fault_injection", dict(attrs.asdict(self.fault_injection)))]
        for index, rule in enumerate(self.rules):
            own = dict(dict(rule.overrides).get("fault_injection", ()))
            faults.append((f"rules[{index}].fault_injection", own))
        for where, settings in faults:
            problems.extend(
                f"{where}.{name}: {settings[name]!r} is for inbound requests only; an "
                "outbound call has no stream to cut on a timer nor upload to reset (0 here)"
                for name in INBOUND_ONLY_FAULTS
                if settings.get(name)
            )
            if settings.get("corruption") in INBOUND_ONLY_CORRUPTIONS:
                allowed = [c for c in CORRUPTIONS if c not in INBOUND_ONLY_CORRUPTIONS]
                problems.append(
                    f"{where}.corruption: {settings['corruption']!r} is for inbound requests "
                    f"only (written on the client's socket); allowed: {', '.join(allowed)}"
                )
        if problems:
            raise ConfigError(problems)


# Custom faults from installed plugins (plugins.py), each a section under chaos.plugins.
PLUGINS: tuple[Any, ...] = load_plugins()
PluginsConfig = plugins_section(PLUGINS)


@attrs.frozen
class ChaosConfig:
    """Everything the middleware injects. Frozen: change it with ``attrs.evolve``."""

    enabled: bool = setting(
        False,
        kinds.BOOL,
        "Master switch; nothing is injected when off.",
        flag=Flag("--chaos"),
    )
    scenario: str | None = setting(
        None,
        kinds.OPTIONAL_STR,
        "Scenario active at start.",
        flag=Flag("--chaos-scenario", "NAME"),
    )
    seed: int | None = setting(
        None,
        kinds.OPTIONAL_INT,
        "Seed for reproducible decisions: request n (numbered in the store, so across "
        "workers too) draws from a generator seeded with (seed, n).",
        SEED,
        flag=Flag("--seed", "N"),
    )
    on_store_error: str = setting(
        "local",
        kinds.STR,
        "When the shared store is unreachable: `local` limits each worker alone at its "
        "share (each limit divided by the live workers, each slot pool `max(1, cap // "
        "workers)`) until the store is back; `open` serves without limits; `closed` "
        "answers 503. Counted in `store_errors`, logged once a minute (docs/state.md).",
        kinds.OneOf(("open", "local", "closed")),
    )
    max_active_faults: int | None = setting(
        None,
        kinds.OPTIONAL_INT,
        "The most requests injected chaos may hold at once, across every worker (latency, "
        "a timeout's hold, an after-app stall, pacing): a request beyond it is served "
        "unharmed, annotated `max_active_faults=reached`, counted `fault_overflow`. A rule "
        "that sets its own has a pool of its own. Unset: unlimited (docs/serving.md).",
        ACTIVE_FAULTS,
        flag=Flag("--chaos-max-active-faults", "N"),
    )
    state_at_start: str = setting(
        "auto",
        kinds.STR,
        "What a starting server does with a shared store that already holds a chaos "
        "state: `adopt` joins it; `startup` replaces it with this server's startup config "
        "(as a reset would); `auto` adopts it only while another live server uses the "
        "store, else starts from the startup config (docs/state.md).",
        kinds.OneOf(("auto", "adopt", "startup")),
        flag=Flag("--state-at-start", "auto|adopt|startup"),
    )
    latency: LatencyConfig = section(LatencyConfig, "Latency injection.")
    fault_injection: FaultInjectionConfig = section(FaultInjectionConfig, "Fault injection.")
    rate_limit: RateLimitConfig = section(RateLimitConfig, "Rate limiting.")
    traffic_shaping: TrafficShapingConfig = section(TrafficShapingConfig, "Traffic shaping.")
    circuit_breaker: CircuitBreakerConfig = section(
        CircuitBreakerConfig, "A circuit breaker to test clients against."
    )
    bulkhead: BulkheadConfig = section(BulkheadConfig, "A concurrency cap per route (rule).")
    plugins: Any = section(
        PluginsConfig,
        "Custom faults of installed plugins (mockforge_wsgi.faults).",
        in_rules=False,
    )
    header_control: HeaderControlConfig = section(
        HeaderControlConfig, "Chaos asked for by request headers.", in_rules=False
    )
    outbound: OutboundConfig = section(
        OutboundConfig, "Chaos for the app's own HTTP calls (docs/outbound.md).", in_rules=False
    )
    guard: GuardConfig = section(
        GuardConfig,
        "Turn chaos off by itself: on the app's errors or p99 over a window, or after a "
        "time unless renewed (docs/RELIABILITY.md).",
        in_rules=False,
    )
    rules: tuple[Rule, ...] = setting(
        (),
        RULES,
        "Conditional chaos: `[{match: {host, path, path_regex, route, methods, header, "
        "query, user_agent, json_field, client_cidr, body_size, cohort, not}, "
        "<section>: {...}}]`; the first matching rule's sections apply (env: JSON).",
    )

    def __attrs_post_init__(self) -> None:
        problems: list[str] = []
        for index, rule in enumerate(self.rules):
            for name, fields in rule.overrides:
                try:
                    attrs.evolve(getattr(self, name), **dict(fields))
                except ConfigError as error:
                    problems.extend(f"rules[{index}].{name}.{p}" for p in error.problems)
        if problems:
            raise ConfigError(problems)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-ready data that :func:`config_from_dict` reads back."""
        data = {
            field.name: section_to_dict(getattr(self, field.name))
            if "section" in field.metadata
            else _plain(self, field, getattr(self, field.name))
            for field in attrs.fields(ChaosConfig)
        }
        data["rules"] = [rule.to_dict() for rule in self.rules]
        return data


def section_to_dict(section: Any) -> dict[str, Any]:
    """One section as plain data, as it is written and read back (a pattern in its own
    words, headers and bodies as mappings)."""
    data = attrs.asdict(section, recurse=False, value_serializer=_plain)
    pattern = getattr(section, "pattern", None)
    if "pattern" in data:
        data["pattern"] = pattern.describe() if pattern is not None else None
    for field in attrs.fields(type(section)):
        if "section" in field.metadata:  # outbound's latency and faults
            data[field.name] = section_to_dict(getattr(section, field.name))
        elif field.metadata.get("kind") is RULES:
            data[field.name] = [rule.to_dict() for rule in getattr(section, field.name)]
    return data


# Each section by its attribute name, and those a conditional-chaos rule may override:
# read from ChaosConfig's own declarations.
SECTION_CLASSES: dict[str, type[Any]] = {
    field.name: field.metadata["section"]
    for field in attrs.fields(ChaosConfig)
    if "section" in field.metadata
}
RULE_SECTIONS = tuple(
    field.name for field in attrs.fields(ChaosConfig) if field.metadata.get("in_rules")
)
# The top-level settings a rule may give a value of its own.
RULE_SETTINGS = ("max_active_faults",)


def _plain(instance: Any, field: Any, value: Any) -> Any:
    if field is not None and field.metadata.get("kind") is kinds.HEADER_MAP:
        return dict(value)  # as it is written and read back: {name: value}
    if field is not None and field.metadata.get("kind") is kinds.STATUS_BODIES:
        return {str(status): body for status, body in value}
    return list(value) if isinstance(value, tuple) else value


@attrs.frozen
class SettingInfo:
    """One leaf setting, as walked from the declarations (for env names and docs)."""

    path: tuple[str, ...]
    field: attrs.Attribute[Any]

    @property
    def dotted(self) -> str:
        return ".".join((ROOT, *self.path))

    @property
    def env_name(self) -> str:
        return ENV_PREFIX + "_".join(self.path).upper()

    @property
    def kind(self) -> kinds.Kind:
        kind: kinds.Kind = self.field.metadata["kind"]
        return kind

    @property
    def check(self) -> kinds.Check | None:
        check: kinds.Check | None = self.field.metadata["check"]
        return check

    @property
    def help(self) -> str:
        return str(self.field.metadata["help"])

    @property
    def flag(self) -> Flag | None:
        """The ``mockforge serve`` flag; none for a copy of a section nested in another
        (``chaos.outbound.latency``: the flags set the inbound one)."""
        flag: Flag | None = self.field.metadata["flag"]
        return flag if self.path[0] != "outbound" else None

    @property
    def switches_on(self) -> tuple[str, ...]:
        """The section's ``enabled`` path a flag for this setting turns on, if any."""
        return (*self.path[:-1], "enabled") if len(self.path) > 1 else ()


def iter_settings(
    cls: type[Any] = ChaosConfig, prefix: tuple[str, ...] = ()
) -> Iterator[SettingInfo]:
    """Every leaf setting of ``cls``, depth first, in declaration order."""
    for field in attrs.fields(cls):
        nested = field.metadata.get("section")
        if nested is not None:
            yield from iter_settings(nested, (*prefix, field.name))
        else:
            yield SettingInfo((*prefix, field.name), field)


T = TypeVar("T")


def longest_delay_s(configs: Iterable[ChaosConfig]) -> float:
    """The longest any of ``configs`` can hold a request before its answer: latency (at
    its largest, jitter included), a wait for a connection slot, then a timeout fault's
    hold; a header-controlled delay where those are honoured; then a dribbled body's
    time or a stream cut's timer. (A paced body can take longer still: that depends on
    the body.)"""
    longest = 0.0
    for config in configs:
        faults = config.fault_injection
        delay = _longest_latency_ms(config.latency)
        if config.header_control.enabled:
            delay = max(delay, config.header_control.max_delay_ms)
        shaping = config.traffic_shaping
        queued = shaping.queue_timeout_ms if shaping.enabled and shaping.max_connections else 0.0
        stalls = faults.after_app_probability and faults.after_app_fault == "stall"
        holds = faults.enabled and (faults.timeout_probability or stalls)
        hold = faults.timeout_ms if holds else 0.0
        # The body's own holds: a dribble, a cut's timer (a body that ends sooner waits).
        body = shaping.body_duration_ms if shaping.enabled else 0.0
        if faults.enabled and faults.cut_probability:
            body = max(body, faults.cut_after_ms)
        longest = max(longest, (delay + queued + hold + body) / 1000)
        outbound = config.outbound
        if outbound.enabled:  # the app's own call, held while the request waits on it
            for rule in (None, *outbound.rules):
                latency, faults = outbound.latency, outbound.fault_injection
                if rule is not None:
                    overrides = dict(rule.overrides)
                    latency = attrs.evolve(latency, **dict(overrides.get("latency", ())))
                    faults = attrs.evolve(faults, **dict(overrides.get("fault_injection", ())))
                longest = max(longest, _held_s(latency, faults))
    return longest


def _held_s(latency: LatencyConfig, faults: FaultInjectionConfig) -> float:
    """The longest an outbound call is held: its latency at the largest, then a read
    timeout's hold (at most timeout_ms: the caller's own timeout, if shorter)."""
    hold = faults.timeout_ms if faults.enabled and faults.timeout_probability else 0.0
    return (_longest_latency_ms(latency) + hold) / 1000


def _longest_latency_ms(latency: LatencyConfig) -> float:
    """Latency at its largest, jitter included (0 when off)."""
    if not latency.enabled:
        return 0.0
    delay = latency.fixed_delay_ms
    if latency.random_delay_range_ms:
        delay = max(delay, latency.random_delay_range_ms[1])
    if latency.distribution == "normal":
        delay = latency.fixed_delay_ms + 6 * latency.stddev_ms
    if latency.distribution == "lognormal":
        delay = latency.median_ms * math.exp(6 * latency.sigma)
    if latency.distribution == "pareto":  # its quantile at 1 - _TAIL
        delay = latency.scale_ms * _TAIL ** (-1 / latency.shape)
    if latency.distribution == "exponential":
        delay = latency.scale_ms * -math.log(_TAIL)
    delay *= 1 + latency.jitter_percent / 100
    return min(delay, latency.cap_ms if latency.cap_ms is not None else MAX_DELAY_MS)


def config_from_dict(
    data: Mapping[str, Any],
    cls: type[T] = ChaosConfig,  # type: ignore[assignment]
    *,
    path: str = ROOT,
    origins: Mapping[str, str] | None = None,
) -> T:
    """Build ``cls`` from raw data, or raise one ConfigError listing every problem.

    The data is one source: naming a setting of a section turns it on (see
    :func:`switched_on`)."""
    problems: list[str] = []
    result = _build(cls, switched_on(data, cls), path, problems, origins or {})
    if problems or result is None:
        raise ConfigError(problems)
    return result


def _build(
    cls: type[T],
    data: Any,
    path: str,
    problems: list[str],
    origins: Mapping[str, str],
) -> T | None:
    if not isinstance(data, Mapping):
        problems.append(f"{path}: {shown(data)} is not a mapping")
        return None
    fields = {field.name: field for field in attrs.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; allowed: {', '.join(fields)}"
            problems.append(f"{path}.{key}: unknown key{hint}")
    kwargs: dict[str, Any] = {}
    before = len(problems)
    for name, field in fields.items():
        if name not in data:
            continue
        field_path = f"{path}.{name}"
        nested = field.metadata.get("section")
        if nested is not None:
            kwargs[name] = _build(nested, data[name], field_path, problems, origins)
            continue
        kind: kinds.Kind = field.metadata["kind"]
        check: kinds.Check | None = field.metadata["check"]
        raw = data[name]
        try:
            value = kind.parse(raw)
        except ConfigError as error:  # a structured value (rules) names its own paths
            problems.extend(_located(f"{field_path}{p}", "", origins) for p in error.problems)
            continue
        except ValueError as error:
            problems.append(_located(field_path, kinds.not_of_kind(raw, error, check), origins))
            continue
        problem = check.problem(value) if check else None
        if problem:
            problems.append(_located(field_path, problem, origins))
            continue
        kwargs[name] = value
    if len(problems) > before:
        return None
    try:
        return cls(**kwargs)
    except ConfigError as error:
        problems.extend(f"{path}.{problem}" for problem in error.problems)
        return None


def _located(path: str, problem: str, origins: Mapping[str, str]) -> str:
    origin = origins.get(path)
    text = f"{path}: {problem}" if problem else path
    return f"{text} (from {origin})" if origin else text


def switched_on(data: Any, cls: type[Any] = ChaosConfig) -> Any:
    """The one rule for when a section turns on: naming any setting of a section turns
    that section on, unless the same source sets its ``enabled`` (``data`` is one
    source: a YAML file, the environment, the flags, one API call). The master switch
    (``chaos.enabled``) is not a section's: it is only ever set by name."""
    if not isinstance(data, Mapping) or not attrs.has(cls):
        return data
    fields = {field.name: field for field in attrs.fields(cls)}
    result = dict(data)
    for name, value in data.items():
        nested = fields[name].metadata.get("section") if name in fields else None
        if nested is not None:
            result[name] = switched_on(value, nested)
    names_one = any(name in fields and name != "enabled" for name in data)
    if cls is not ChaosConfig and "enabled" in fields and "enabled" not in data and names_one:
        result["enabled"] = True
    return result
