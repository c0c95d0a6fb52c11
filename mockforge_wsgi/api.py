"""The management API: a Flask blueprint over a ScenarioEngine, and an app to mount it.

Every route is declared once in ``ROUTES``; the blueprint and the OpenAPI document
(built by ``openapi.py``) are both read from that table. Bad input never changes
anything: it gets a 400 (or 404, 413) with a JSON body listing each problem by field path.

Usage (any WSGI stack: ChaosMiddleware mounts it for you at ``/api/chaos``)::

    flask_app.register_blueprint(create_blueprint(engine), url_prefix="/api/chaos")
"""

from __future__ import annotations

import base64
import difflib
import functools
import hashlib
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
from flask import Blueprint, Flask, Response, abort, current_app, request
from werkzeug.exceptions import HTTPException

from . import _env
from ._guard import NOSNIFF, BrowserGuard
from ._headers import bearer_matches
from ._kinds import shown, strict_json, unknown_name
from ._sections import DEFAULT_PREFIX, URL_SEGMENTS
from .active_faults import pool_name as active_pool
from .answer_window import PREFIX as WINDOW_PREFIX
from .breaker import GLOBAL, breaker_status, force
from .bulkhead import pool_name
from .config import (
    SECTION_CLASSES,
    ChaosConfig,
    ConfigError,
    apply_rule,
    config_from_dict,
    config_warnings,
    longest_delay_s,
    section_to_dict,
    switched_on,
)
from .engine import MAX_DURATION_S, ScenarioEngine, UnknownScenario
from .openapi import BODY_TYPE, BREAKER_ACTIONS, build_document
from .patterns import script_counter
from .report import CHART_JS, inline_scripts, render_report, static_text
from .scenarios import scenario_from_dict, unknown_scenario
from .state import StateTooLarge, StoreError
from .state.base import CONNECTION_SLOTS
from .verdicts import DEFAULT_WINDOW_S, verdicts

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = [
    "DEFAULT_PREFIX",
    "MAX_BODY_BYTES",
    "ROUTES",
    "create_blueprint",
    "create_management_app",
    "openapi_document",
]

MAX_BODY_BYTES = 64 * 1024
# The longest this server's workers can hold a request (sync workers: gunicorn's timeout).

# Where the settings of a PUT or PATCH came from, in its warnings.
REQUEST = "this request"

# URL segment -> (config attribute, section class)
SECTIONS: dict[str, tuple[str, type[Any]]] = {
    segment: (name, SECTION_CLASSES[name]) for segment, name in URL_SEGMENTS.items()
}


class ApiError(Exception):
    """A request we refuse; rendered as JSON with every problem listed."""

    def __init__(self, status: int, error: str, problems: list[str] | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.problems = problems or []


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data), status=status, mimetype="application/json")


def _engine() -> ScenarioEngine:
    engine: ScenarioEngine = current_app.extensions["mockforge_engine"]
    return engine


def _body(*, required: bool = True) -> Any:
    """The request's JSON body (its Content-Type was checked before the view ran)."""
    raw = request.get_data(cache=True)
    if not raw.strip(b" \t\r\n"):  # JSON whitespace only: no body
        if required:
            raise ApiError(400, "invalid request", ["body: a JSON body is required"])
        return {}
    try:
        return strict_json(raw)
    except ValueError as error:
        raise ApiError(400, "invalid request", [f"body: not valid JSON ({error})"]) from None


def _seconds(value: Any, path: str, *, low: float, low_open: bool) -> list[str]:
    """Problems of a number of seconds: finite, above ``low``, at most MAX_DURATION_S.
    Compared as it came (JSON integers have no bound: ``math.isfinite(10**400)`` raises),
    so only a bounded value is ever made a float."""
    bad = (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (isinstance(value, float) and not math.isfinite(value))
        or value < low
        or (low_open and value == low)
        or value > MAX_DURATION_S
    )
    if not bad:
        return []
    above = f"> {low:g}" if low_open else f">= {low:g}"
    return [f"{path}: {shown(value)} is not a number {above} and <= {MAX_DURATION_S:g}"]


def _mapping(data: Any, path: str = "body") -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise ApiError(400, "invalid request", [f"{path}: {shown(data)} is not a JSON object"])
    return dict(data)


def _validated(build: Callable[[], Any]) -> Any:
    try:
        return build()
    except ConfigError as error:
        raise ApiError(400, "invalid configuration", error.problems) from None


def _hold_from_env(raw: str) -> float:
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= MAX_DURATION_S:
        raise ConfigError([f"{_env.MAX_HOLD_S}: {shown(raw)} is not a number of seconds > 0"])
    return seconds


def _servable(config: ChaosConfig, path: str) -> None:
    """Refuse a config that can hold a request longer than this server's workers live."""
    limit: float | None = current_app.extensions.get("mockforge_max_hold_s")
    held = longest_delay_s([config])
    if limit is not None and held > limit:
        raise ApiError(
            400,
            "invalid configuration",
            [
                f"{path}: can hold a request for {held:g} s; this server's sync workers are "
                f"killed after {limit:g} s (gunicorn --timeout): use gthread workers or "
                "shorter delays"
            ],
        )


# -- views ---------------------------------------------------------------------------


def status() -> Response:
    recording = "mockforge_recorder" in current_app.extensions  # verdicts, report, requests
    return _json({**_engine().status(), "recorder": recording, "breakers": _breakers()})


def _breakers_in_force() -> dict[str, tuple[dict[str, Any] | None, Any]]:
    """Each simulated circuit breaker in force by owner: the global one (``global``), then
    each rule's own, with the rule's match and the breaker's config."""
    config = _engine().effective()
    found: dict[str, tuple[dict[str, Any] | None, Any]] = {}
    if config.circuit_breaker.enabled:
        found[GLOBAL] = (None, config.circuit_breaker)
    for index, rule in enumerate(config.rules):
        if rule.has_section("circuit_breaker"):
            own = apply_rule(config, rule).circuit_breaker
            if own.enabled:
                found[str(index)] = (rule.match.to_dict(), own)
    return found


def _breakers() -> list[dict[str, Any]]:
    counters = _engine().store.counters()
    now = time.time()
    return [
        {**breaker_status(counters, owner, breaker, now), "match": match}
        for owner, (match, breaker) in _breakers_in_force().items()
    ]


def breakers() -> Response:
    return _json({"breakers": _breakers()})


def breaker(owner: str) -> Response:
    """Force a breaker open or closed, or reset its counts (for tests)."""
    in_force = _breakers_in_force()
    if owner not in in_force:
        known = ", ".join(in_force) or "none"
        raise ApiError(404, "unknown breaker", [f"owner: {owner!r}; in force: {known}"])
    body = _mapping(_body())
    action = body.get("action")
    problems = [f"{key}: unknown field; allowed: action" for key in body if key != "action"]
    if action not in BREAKER_ACTIONS:
        problems.append(f"action: {shown(action)} is not one of {', '.join(BREAKER_ACTIONS)}")
    if problems:
        raise ApiError(400, "invalid request", problems)
    force(_engine().store, owner, str(action), time.time())
    [shown_breaker] = [b for b in _breakers() if b["owner"] == owner]
    return _json(shown_breaker)


def enable() -> Response:
    _engine().set_enabled(True)
    return _json({"enabled": True})


def disable() -> Response:
    _engine().set_enabled(False)
    return _json({"enabled": False})


def reset() -> Response:
    _engine().reset()
    return _json(_engine().status())


def guard_renew() -> Response:
    """max_duration_s counts again from now (chaos stays on); the guard's status."""
    return _json(_engine().renew())


def config() -> Response:
    """The config in force: the runtime config, or the active scenario's with the
    changes made on top of it (a write while a scenario runs lasts until it ends)."""
    if request.method == "PUT":
        body = _mapping(_body())
        new = _validated(lambda: config_from_dict(body))
        _servable(new, "chaos")
        known = _engine().scenarios()
        if new.scenario is not None and new.scenario not in known:
            problem = unknown_scenario(new.scenario, known, "chaos.scenario")
            raise ApiError(400, "invalid configuration", [problem])
        _engine().set_config(new)
        warnings = config_warnings(new, [(REQUEST, switched_on(body))]) + _not_intercepted(new)
        return _json({**_engine().editable().to_dict(), "warnings": warnings})
    return _json(_engine().editable().to_dict())


def config_section(section: str) -> Response:
    attribute, cls = SECTIONS[section]
    if request.method == "DELETE":  # the scenario's own section, or the startup config's
        _engine().clear_overrides(attribute)
    current = getattr(_engine().editable(), attribute)
    if request.method in ("PUT", "PATCH"):
        sent = switched_on(_mapping(_body()), cls)  # naming a setting turns the section on
        body = _patched(section_to_dict(current), sent, cls) if request.method == "PATCH" else sent
        path = f"chaos.{attribute}"
        current = _validated(lambda: config_from_dict(body, cls, path=path))
        changed = attrs.evolve(_engine().editable(), **{attribute: current})
        _servable(changed, path)
        _engine().update_config(**{attribute: current})
        warnings = config_warnings(changed, [(REQUEST, {attribute: sent})])
        warnings += _not_intercepted(changed)
        return _json({**section_to_dict(current), "warnings": warnings})
    return _json(section_to_dict(current))


def _not_intercepted(config: ChaosConfig) -> list[str]:
    """Outbound chaos turned on by the API where the server started without it: the
    app's calls are intercepted only when the startup config enables chaos.outbound
    (the middleware installs the interception as it is built, in each worker)."""
    if not config.outbound.enabled or _engine().startup.outbound.enabled:
        return []
    return [
        "chaos.outbound: set, but the app's calls are not intercepted: this server "
        "started with chaos.outbound.enabled false, and the interception is installed "
        "at start only; restart it with chaos.outbound.enabled: true in its config (or "
        "MOCKFORGE_CHAOS_OUTBOUND_ENABLED=true), with no faults, to drive them from here"
    ]


def _patched(current: dict[str, Any], sent: Mapping[str, Any], cls: type[Any]) -> dict[str, Any]:
    """PATCH: ``sent`` over ``current``, setting by setting; a nested section (outbound's
    ``latency``, ``fault_injection``) merged the same way, a mapping setting replaced."""
    merged = dict(current)
    fields = attrs.fields_dict(cls)
    for name, value in sent.items():
        nested = fields[name].metadata.get("section") if name in fields else None
        if (
            nested is not None
            and isinstance(value, Mapping)
            and isinstance(merged.get(name), dict)
        ):
            merged[name] = _patched(merged[name], value, nested)
        else:
            merged[name] = value
    return merged


def scenarios() -> Response:
    engine = _engine()
    everything = _stop_all()  # the OpenAPI document declares ?all on every method
    if request.method == "POST":
        body = _mapping(_body())
        name = body.pop("name", None)
        if not isinstance(name, str):
            raise ApiError(400, "invalid scenario", [f"name: {name!r} is not a string"])
        scenario, _ = _validated(lambda: scenario_from_dict(name, body, f"scenarios.{name}"))
        _servable(scenario.config, f"scenarios.{name}")
        engine.define(scenario)
        return _json(scenario.to_dict(), 201)
    if request.method == "DELETE":
        active = engine.state().active
        if active is not None:
            engine.stop(everything=everything)
        resumed = engine.state().active
        return _json({"stopped": active.name if active else None, "resumed": _name(resumed)})
    return _json({"scenarios": [s.to_dict() for s in engine.scenarios().values()]})


def active_scenario() -> Response:
    return _json({"active": _engine().status()["active_scenario"]})


def scenario(name: str) -> Response:
    engine = _engine()
    if request.method == "DELETE":
        try:
            engine.stop(name)
        except UnknownScenario:
            raise ApiError(
                404, "not active", [f"scenario: '{name}' is not the active one"]
            ) from None
        return _json({"stopped": name, "resumed": _name(engine.state().active)})
    options = _mapping(_body(required=False))
    problems = [
        f"{key}: unknown field; allowed: duration_s, ramp_s"
        for key in options
        if key not in ("duration_s", "ramp_s")
    ]
    timing = {key: options.get(key) for key in ("duration_s", "ramp_s")}
    for key, value in timing.items():
        if value is not None:
            problems += _seconds(value, key, low=0, low_open=True)
    if problems:
        raise ApiError(400, "invalid request", problems)
    try:
        active = engine.activate(name, **timing)
    except UnknownScenario as error:
        raise ApiError(404, "unknown scenario", [str(error)]) from None
    return _json({"active": attrs.asdict(active)})


def _stop_all() -> bool:
    """``?all=true``: stop the scenario and drop those paused under it (none resumes)."""
    raw = request.args.get("all", "false").strip().lower()
    if raw not in ("true", "false", "1", "0"):
        raise ApiError(
            400,
            "invalid request",
            [f"all: {shown(raw)} is not a boolean; allowed: true, false, 1, 0"],
        )
    return raw in ("true", "1")


def _name(active: Any) -> str | None:
    return None if active is None else str(active.name)


def schedule() -> Response:
    engine = _engine()
    if request.method == "PUT":
        body = _body()
        if not isinstance(body, list):
            raise ApiError(400, "invalid schedule", [f"body: {body!r} is not a list"])
        entries, problems = [], []
        for index, item in enumerate(body):
            path = f"[{index}]"
            if not isinstance(item, Mapping) or not isinstance(item.get("scenario"), str):
                problems.append(f"{path}: needs {{start_s, scenario, duration_s}}")
                continue
            start, duration = item.get("start_s", 0), item.get("duration_s")
            unknown = set(item) - {"start_s", "scenario", "duration_s"}
            problems += [f"{path}.{key}: unknown field" for key in sorted(unknown)]
            problems += _seconds(start, f"{path}.start_s", low=0, low_open=False)
            if duration is not None:
                problems += _seconds(duration, f"{path}.duration_s", low=0, low_open=True)
            entries.append((start, item["scenario"], duration))
        if problems:
            raise ApiError(400, "invalid schedule", problems)
        try:
            engine.schedule(entries)
        except UnknownScenario as error:
            raise ApiError(404, "unknown scenario", [str(error)]) from None
    return _json({"schedule": engine.status()["schedule"]})


def stats() -> Response:
    engine = _engine()
    store = engine.store
    return _json(
        {
            "counters": {  # the guard's window counters are its own (answer_window.py)
                name: value
                for name, value in store.counters().items()
                if not name.startswith(WINDOW_PREFIX)
            },
            "rate_limit_keys": store.tracked_keys(),
            "connections_in_use": store.slots_in_use(CONNECTION_SLOTS),
            "bulkheads_in_use": {
                owner: store.slots_in_use(pool_name(owner)) for owner in _bulkheads_in_force()
            },
            "active_faults_in_use": {
                owner: store.slots_in_use(active_pool(owner)) for owner in _fault_caps_in_force()
            },
            "worker": os.getpid(),  # which worker answered: handy with several
        }
    )


def _bulkheads_in_force() -> list[str]:
    """The owners of the bulkheads in force: ``global``, then each rule's own."""
    config = _engine().effective()
    owners = [GLOBAL] if config.bulkhead.enabled else []
    for index, rule in enumerate(config.rules):
        if rule.has_section("bulkhead") and apply_rule(config, rule).bulkhead.enabled:
            owners.append(str(index))
    return owners


def _fault_caps_in_force() -> list[str]:
    """The owners of the max_active_faults pools in force: ``global``, then each rule's."""
    config = _engine().effective()
    owners = [GLOBAL] if config.max_active_faults is not None else []
    for index, rule in enumerate(config.rules):
        if rule.gives("max_active_faults") and apply_rule(config, rule).max_active_faults:
            owners.append(str(index))
    return owners


def scripts() -> Response:
    """Each fault script in force (the global config's, then each rule's) and how far
    it got since the last change: the steps hit, and those still to come."""
    engine = _engine()
    config = engine.effective()
    counters = engine.store.counters()
    found = []
    scripted = [(None, None, config)] + [  # a rule with a script of its own
        (index, rule.match.to_dict(), apply_rule(config, rule))
        for index, rule in enumerate(config.rules)
        if rule.sets("fault_injection", "script")
    ]
    for index, match, scoped in scripted:
        steps = scoped.fault_injection.script
        if not steps:
            continue
        consumed = counters.get(script_counter(index), 0)
        found.append(
            {
                "rule": index,
                "match": match,
                "steps": list(steps),
                "requests": consumed,
                "hit": list(steps[:consumed]),
                "not_hit": list(steps[consumed:]),
                "done": consumed >= len(steps),
            }
        )
    return _json({"scripts": found})


def openapi() -> Response:
    prefix = request.path[: -len("/openapi.json")]
    return _json(openapi_document(prefix))


# -- what the recorder saw: verdicts, the report; the dashboard -----------------------

# Query parameters of /verdicts and /report, by JSON schema. Times are Unix seconds. The
# lengths keep any such URL, percent-encoded, under gunicorn's 4094-byte request line.
RECORDING_QUERY: dict[str, dict[str, Any]] = {
    "since": {"type": "number", "minimum": 0, "maximum": 1e11},
    "until": {"type": "number", "minimum": 0, "maximum": 1e11},
    "path": {"type": "string", "maxLength": 200},
    "test_id": {"type": "string", "maxLength": 100},
    "window_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600},
    # the requests served (inbound, the default), or the app's own calls (outbound)
    "direction": {"type": "string", "maxLength": 8, "enum": ["inbound", "outbound"]},
}


def _recording() -> tuple[Any, dict[str, Any], float]:
    """The attached recorder, the row filters and the call window the query asks for."""
    problems = [
        f"{name}: unknown parameter; allowed: {', '.join(RECORDING_QUERY)}"
        for name in request.args
        if name not in RECORDING_QUERY
    ]
    values: dict[str, Any] = {}
    for name, schema in RECORDING_QUERY.items():
        raw = request.args.get(name)
        if raw is None:
            continue
        if schema["type"] == "string":
            if len(raw) > schema["maxLength"]:
                problems.append(f"{name}: longer than {schema['maxLength']} characters")
            elif "enum" in schema and raw not in schema["enum"]:
                problems.append(f"{name}: {shown(raw)} is not one of {', '.join(schema['enum'])}")
            values[name] = raw
            continue
        try:
            number = float(raw)
        except ValueError:
            number = math.nan
        low = float(schema["minimum"] if "minimum" in schema else schema["exclusiveMinimum"])
        if (
            not math.isfinite(number)
            or number < low
            or ("exclusiveMinimum" in schema and number == low)
            or number > schema["maximum"]
        ):
            above = f"> {low:g}" if "exclusiveMinimum" in schema else f">= {low:g}"
            problems.append(
                f"{name}: {shown(raw)} is not a number {above} and <= {schema['maximum']:g}"
            )
        values[name] = number
    if problems:
        raise ApiError(400, "invalid request", problems)
    recorder = current_app.extensions.get("mockforge_recorder")
    if recorder is None:
        raise ApiError(
            404,
            "recorder off",
            ["no requests are recorded: start with --recorder (or MOCKFORGE_RECORDER_DB)"],
        )
    filters = {
        key: values[name]
        for name, key in (("since", "since"), ("until", "until"), ("path", "path_prefix"))
        if name in values
    }
    for name in ("test_id", "direction"):
        if values.get(name):
            filters[name] = values[name]
    return recorder, filters, values.get("window_s", DEFAULT_WINDOW_S)


def verdicts_view() -> Response:
    recorder, filters, window_s = _recording()
    return _json(verdicts(recorder.attempts(filters), window_s))


def report_view() -> Response:
    recorder, filters, window_s = _recording()
    rows = recorder.attempts({**filters, "direction": "inbound"})  # settled: all written
    calls = recorder.attempts({**filters, "direction": "outbound"}, settle=False)
    page = render_report(rows, window_s=window_s, outbound=calls)
    return _page(page, inline_scripts())


def dashboard() -> Response:
    page = static_text("dashboard.html")
    return _page(page, re.findall(r"<script>(.*?)</script>", page, flags=re.DOTALL))


def _page(html: str, scripts: Iterable[str]) -> Response:
    """An HTML page of ours: it may run only its own inline ``scripts`` (by their hashes)
    and scripts this server serves, load nothing from elsewhere, and not be framed."""
    response = Response(html, mimetype="text/html")
    response.headers["Content-Security-Policy"] = content_security_policy(scripts)
    return response


def content_security_policy(scripts: Iterable[str]) -> str:
    hashes = "".join(
        " 'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in scripts
    )
    return (
        f"default-src 'none'; script-src 'self'{hashes}; style-src 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )


def chart_js() -> Response:
    response = Response(static_text(CHART_JS), mimetype="text/javascript")
    response.cache_control.max_age = 3600
    return response


@attrs.frozen
class Route:
    rule: str
    methods: tuple[str, ...]
    view: Callable[..., Response]
    summary: str
    defaults: Mapping[str, str] | None = None
    body: str | None = None  # JSON schema reference of the request body, for the docs
    media_type: str = "application/json"  # of the 200 answer
    private: bool = False  # request data: with an admin token set, only for its holder
    query: Mapping[str, Mapping[str, Any]] | None = None  # query parameters' schemas


ROUTES: tuple[Route, ...] = (
    Route(
        "/status", ("GET",), status, "Enabled flag, active scenario, effective config, counters"
    ),
    Route("/enable", ("POST",), enable, "Turn chaos on"),
    Route("/disable", ("POST",), disable, "Turn chaos off (the master switch)"),
    Route("/reset", ("POST",), reset, "Startup config back, scenario stopped, counters zeroed"),
    Route(
        "/guard/renew",
        ("POST",),
        guard_renew,
        "Renew chaos for another chaos.guard.max_duration_s from now (any enable does too)",
    ),
    Route(
        "/config",
        ("GET", "PUT"),
        config,
        "The config in force (PUT replaces it; on top of a running scenario until it ends)",
        body="ChaosConfig",
    ),
    *(
        Route(
            f"/config/{segment}",
            # DELETE before PUT in the guide's list of examples: each section is left on
            # (the breaker examples that follow need the circuit-breaker section on).
            ("GET", "DELETE", "PUT", "PATCH"),
            config_section,
            f"The {attribute} section in force (PUT replaces it atomically, PATCH merges; "
            "DELETE drops a change made on top of the running scenario, or without one "
            "puts the startup config's section back)",
            defaults={"section": segment},
            body=cls.__name__,
        )
        for segment, (attribute, cls) in SECTIONS.items()
    ),
    Route(
        "/scenarios",
        ("GET", "POST", "DELETE"),
        scenarios,
        "List scenarios; POST defines a custom one; DELETE stops the active one (the one "
        "it replaced resumes; ?all=true: none does)",
        body="Scenario",
        query={"all": {"type": "boolean", "description": "DELETE: stop every scenario"}},
    ),
    Route("/scenarios/active", ("GET",), active_scenario, "The active scenario, or null"),
    Route(
        "/scenarios/<name>",
        ("POST", "DELETE"),
        scenario,
        "POST starts it (body: duration_s, ramp_s), pausing the active one; DELETE stops "
        "it (the one it replaced resumes)",
        body="Activation",
    ),
    Route(
        "/schedule", ("GET", "PUT"), schedule, "The schedule (PUT replaces it)", body="Schedule"
    ),
    Route("/stats", ("GET",), stats, "Counters of injected events and store figures"),
    Route(
        "/breakers",
        ("GET",),
        breakers,
        "Each simulated circuit breaker: state, counts, time to the next transition",
    ),
    Route(
        "/breakers/<owner>",
        ("POST",),
        breaker,
        "Force a breaker open or closed, or reset it (body: action)",
        body="BreakerAction",
    ),
    Route(
        "/scripts",
        ("GET",),
        scripts,
        "Each fault script in force and how far it got: the steps hit and not hit",
    ),
    Route(
        "/verdicts",
        ("GET",),
        verdicts_view,
        "How the client behaved (from the recorder): calls, attempts, waits, Retry-After "
        "honoured, backoff, unsafe retries",
        private=True,
        query=RECORDING_QUERY,
    ),
    Route(
        "/report",
        ("GET",),
        report_view,
        "The experiment report: one self-contained HTML page (from the recorder)",
        media_type="text/html",
        private=True,
        query=RECORDING_QUERY,
    ),
    Route("/ui", ("GET",), dashboard, "The live dashboard (HTML)", media_type="text/html"),
    Route(
        "/ui/chart.js",
        ("GET",),
        chart_js,
        "Chart.js, shipped in the package (the dashboard works offline)",
        media_type="text/javascript",
    ),
    Route("/openapi.json", ("GET",), openapi, "This document (OpenAPI 3.1)"),
)
PRIVATE_ENDPOINTS = frozenset(
    f"mockforge_chaos.{route.view.__name__}" for route in ROUTES if route.private
)


def create_blueprint(
    engine: ScenarioEngine,
    *,
    admin_token: str | None = None,
    protect_reads: bool = False,
    max_hold_s: float | None = None,
    guard: BrowserGuard | None = None,
) -> Blueprint:
    """The management blueprint. With ``admin_token``, mutating routes (and reads, with
    ``protect_reads``) need ``Authorization: Bearer <token>``; the comparison is
    constant-time. ``guard`` (default: from ``MOCKFORGE_ALLOWED_HOSTS`` and
    ``MOCKFORGE_ALLOWED_ORIGINS``) refuses cross-site requests and unknown Hosts; a body
    must be JSON. With ``max_hold_s`` (default: ``MOCKFORGE_MAX_HOLD_S``, which
    ``mockforge serve`` sets for sync workers), a config that can hold a request longer
    is refused: the worker would be killed first."""
    max_hold_s, guard = _from_env(max_hold_s, guard)
    return _blueprint(engine, admin_token, protect_reads, max_hold_s, guard)


def _from_env(
    max_hold_s: float | None, guard: BrowserGuard | None
) -> tuple[float | None, BrowserGuard]:
    """``max_hold_s`` and ``guard``, each from its environment variable where not given
    (a bad value raises here)."""
    held = _env.text(_env.MAX_HOLD_S)
    if max_hold_s is None and held is not None:
        max_hold_s = _hold_from_env(held)
    return max_hold_s, guard if guard is not None else BrowserGuard.from_env()


def _blueprint(
    engine: ScenarioEngine,
    admin_token: str | None,
    protect_reads: bool,
    max_hold_s: float | None,
    guard: BrowserGuard,
) -> Blueprint:
    """The blueprint, from settings read already."""
    blueprint = Blueprint("mockforge_chaos", __name__)
    for route in ROUTES:
        options: dict[str, Any] = {"defaults": dict(route.defaults)} if route.defaults else {}
        blueprint.add_url_rule(
            route.rule,
            endpoint=route.view.__name__
            + (f"_{route.defaults['section']}" if route.defaults else ""),
            view_func=route.view,
            methods=list(route.methods),
            **options,
        )

    @blueprint.record_once
    def attach(state: Any) -> None:
        state.app.extensions["mockforge_engine"] = engine
        state.app.extensions["mockforge_max_hold_s"] = max_hold_s
        state.app.config.setdefault("MAX_CONTENT_LENGTH", MAX_BODY_BYTES)

    @blueprint.before_request
    def authorize() -> Response | None:
        refusal = guard.refusal(request.environ)
        if refusal is not None:
            return _json({"error": refusal[0], "problems": refusal[1]}, 403)
        if (request.content_length or 0) > MAX_BODY_BYTES:
            abort(413)  # also where the route reads no body
        needs_token = (
            request.method not in ("GET", "HEAD", "OPTIONS")
            or protect_reads
            or request.endpoint in PRIVATE_ENDPOINTS
        )
        if (
            admin_token
            and needs_token
            and not bearer_matches(request.headers.get("Authorization", ""), admin_token)
        ):
            response = _json(
                {
                    "error": "unauthorized",
                    "problems": ["Authorization: a valid Bearer token is required"],
                },
                401,
            )
            response.headers["WWW-Authenticate"] = 'Bearer realm="mockforge"'
            return response
        mutating = request.method in ("POST", "PUT", "PATCH", "DELETE")
        if mutating and _has_body() and request.mimetype != BODY_TYPE:
            shown_type = request.headers.get("Content-Type", "none")
            problem = (
                f"Content-Type: {shown_type!r} is not {BODY_TYPE}; send the body as JSON "
                f"(curl: -H 'Content-Type: {BODY_TYPE}')"
            )
            return _json({"error": "unsupported media type", "problems": [problem]}, 415)
        return None

    @blueprint.after_request
    def nosniff(response: Response) -> Response:
        response.headers.setdefault(*NOSNIFF)
        return response

    @blueprint.errorhandler(ApiError)
    def api_error(error: ApiError) -> Response:
        return _json({"error": error.error, "problems": error.problems}, error.status)

    @blueprint.errorhandler(StoreError)
    def store_error(error: StoreError) -> Response:
        if isinstance(error, StateTooLarge):  # not an outage: this change is too big
            return _json({"error": "state too large", "problems": [str(error)]}, 413)
        return _json({"error": "store unreachable", "problems": [str(error)]}, 503)

    return blueprint


def _has_body() -> bool:
    """The request sends a body: a length above 0, or chunks."""
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    return chunked or (request.content_length or 0) > 0


def create_management_app(
    engine: ScenarioEngine,
    *,
    prefix: str = DEFAULT_PREFIX,
    admin_token: str | None = None,
    protect_reads: bool = False,
    max_hold_s: float | None = None,
    guard: BrowserGuard | None = None,
) -> Flask:
    """A Flask app serving only the management API under ``prefix``, for any WSGI stack.

    ``admin_token`` defaults to the ``MOCKFORGE_ADMIN_TOKEN`` environment variable;
    ``max_hold_s`` and ``guard`` are :func:`create_blueprint`'s.
    """
    if admin_token is None:
        admin_token = _env.text(_env.ADMIN_TOKEN)
    max_hold_s, guard = _from_env(max_hold_s, guard)
    return _management_app(engine, prefix, admin_token, protect_reads, max_hold_s, guard)


def _management_app(
    engine: ScenarioEngine,
    prefix: str,
    admin_token: str | None,
    protect_reads: bool,
    max_hold_s: float | None,
    guard: BrowserGuard,
) -> Flask:
    """The app, from settings read already."""
    app = Flask("mockforge_wsgi.api")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.register_blueprint(
        _blueprint(engine, admin_token, protect_reads, max_hold_s, guard), url_prefix=prefix
    )

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        """404, 405, 413 and friends as JSON, like every other answer of the API."""
        name = error.name.lower()
        problems = {413: [f"body: larger than {MAX_BODY_BYTES} bytes"]}.get(error.code or 0, [])
        section = request.path.removeprefix(f"{prefix}/config/")
        if error.code == 404 and section != request.path and "/" not in section:
            name, problems = "unknown config section", [unknown_section(section, prefix)]
        response = _json({"error": name, "problems": problems}, error.code or 500)
        for name, value in error.get_headers():  # Allow on a 405, say
            if name.lower() != "content-type":
                response.headers[name] = value
        response.headers.setdefault(*NOSNIFF)
        return response

    return app


def unknown_section(name: str, prefix: str = DEFAULT_PREFIX) -> str:
    """A section named as /status names it (``fault_injection``) or misspelled: the URL
    to use, and every section the API serves."""
    by_attribute = {attribute: segment for segment, attribute in URL_SEGMENTS.items()}
    near = by_attribute.get(name.replace("-", "_")) or next(
        iter(difflib.get_close_matches(name, URL_SEGMENTS, n=1)), None
    )
    hint = f"{prefix}/config/{near}" if near else None
    return unknown_name("config section", name, URL_SEGMENTS, "section", near=hint)


class LazyManagementApp:
    """:func:`create_management_app`'s app for one ChaosMiddleware, built at its first use.

    The Flask app with every route takes ~15 ms to build (werkzeug compiles each rule),
    and most middleware objects (in tests, in a process that is no server) never answer a
    management call. The settings, environment included, are read now, as
    create_management_app reads them: a bad value fails here, and a later change of the
    environment changes nothing.
    """

    def __init__(
        self,
        engine: ScenarioEngine,
        *,
        prefix: str = DEFAULT_PREFIX,
        admin_token: str | None = None,
        protect_reads: bool = False,
        max_hold_s: float | None = None,
        guard: BrowserGuard | None = None,
    ) -> None:
        if admin_token is None:
            admin_token = _env.text(_env.ADMIN_TOKEN)
        max_hold_s, guard = _from_env(max_hold_s, guard)
        self._build = functools.partial(
            _management_app, engine, prefix, admin_token, protect_reads, max_hold_s, guard
        )
        self._app: Flask | None = None
        self._lock = threading.Lock()

    @property
    def app(self) -> Flask:
        if self._app is None:
            with self._lock:  # the first calls may come at once, on several threads
                if self._app is None:
                    self._app = self._build()
        return self._app

    @property
    def extensions(self) -> dict[str, Any]:
        return self.app.extensions

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        return self.app(environ, start_response)


def openapi_document(prefix: str) -> dict[str, Any]:
    """OpenAPI 3.1 for every route in ``ROUTES`` under ``prefix``."""
    return build_document(prefix, ROUTES)
