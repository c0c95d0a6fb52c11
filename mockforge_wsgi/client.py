"""A client for the management API: standard library only, for any test harness.

Usage::

    chaos = ChaosClient("http://127.0.0.1:3000")
    with chaos.scenario("service_instability", duration_s=60):
        run_the_checkout_flow()          # the previous state is back afterwards
    with chaos.faults(http_errors=[503], probability=1.0):
        ...
    with chaos.latency(fixed_delay_ms=300):
        ...

Errors carry the server's messages: ``InvalidRequest(400)``, ``Unauthorized(401)``,
``NotFound(404)``, ``StoreUnavailable(503)``, all ``ChaosApiError``.
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

from . import _env
from ._headers import TEST_ID_HEADER
from ._sections import URL_SEGMENTS

__all__ = [
    "ChaosApiError",
    "ChaosClient",
    "InvalidRequest",
    "NotFound",
    "StoreUnavailable",
    "Unauthorized",
]

# The client's section name ("rate_limit") -> its URL segment, and its config attribute.
SECTIONS = {segment.replace("-", "_"): segment for segment in URL_SEGMENTS}
ATTRIBUTES = {segment.replace("-", "_"): name for segment, name in URL_SEGMENTS.items()}


class ChaosApiError(Exception):
    """The server refused: its status, error and every problem it listed."""

    def __init__(self, status: int, error: str, problems: list[str]) -> None:
        self.status = status
        self.error = error
        self.problems = problems
        detail = "; ".join(problems) or error
        super().__init__(f"{status} {error}: {detail}")


class InvalidRequest(ChaosApiError):
    """400: bad input; nothing was changed."""


class Unauthorized(ChaosApiError):
    """401: the admin token is missing or wrong."""


class NotFound(ChaosApiError):
    """404: no such scenario (or route)."""


class StoreUnavailable(ChaosApiError):
    """503: the shared store is unreachable."""


_ERRORS = {400: InvalidRequest, 401: Unauthorized, 404: NotFound, 503: StoreUnavailable}


class ChaosClient:
    """One method per management route, and context managers that restore state."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:3000",
        token: str | None = None,
        *,
        prefix: str = "/api/chaos",
        timeout_s: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token if token is not None else _env.text(_env.ADMIN_TOKEN)
        self.prefix = prefix
        self.timeout_s = timeout_s
        # What verdicts look at when not told: the pytest plugin sets ``since`` to the
        # test's start; ``tag()`` narrows them to requests carrying a test id.
        self.scope: dict[str, Any] = {}

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """One request to the management API (``path`` below its prefix); the decoded
        JSON answer. Raises the ``ChaosApiError`` of the status; ``urllib.error.URLError``
        when the server cannot be reached."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + self.prefix + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            try:
                payload = json.loads(error.read() or b"{}")
            except ValueError:
                payload = {}
            kind = _ERRORS.get(error.code, ChaosApiError)
            raise kind(
                error.code, payload.get("error", error.reason), payload.get("problems", [])
            ) from None

    # -- one method per route ---------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return self.call("GET", "/status")  # type: ignore[no-any-return]

    def enable(self) -> None:
        self.call("POST", "/enable")

    def disable(self) -> None:
        self.call("POST", "/disable")

    def reset(self) -> dict[str, Any]:
        return self.call("POST", "/reset")  # type: ignore[no-any-return]

    def guard(self) -> dict[str, Any]:
        """The guard as /status shows it: ``tripped``, ``reason``, ``at``, ``figures``
        (of the last trip, until the next enable or reset), ``expires_at``."""
        return self.status()["guard"]  # type: ignore[no-any-return]

    def renew_guard(self) -> dict[str, Any]:
        """Keep chaos on for another ``chaos.guard.max_duration_s`` from now."""
        return self.call("POST", "/guard/renew")  # type: ignore[no-any-return]

    def config(self) -> dict[str, Any]:
        return self.call("GET", "/config")  # type: ignore[no-any-return]

    def set_config(self, config: dict[str, Any]) -> dict[str, Any]:
        return self.call("PUT", "/config", config)  # type: ignore[no-any-return]

    def section(self, name: str) -> dict[str, Any]:
        """``latency``, ``faults``, ``rate_limit`` or ``traffic``."""
        return self.call("GET", f"/config/{SECTIONS[name]}")  # type: ignore[no-any-return]

    def set_section(self, name: str, values: dict[str, Any]) -> dict[str, Any]:
        """Replace a section (unset fields take their defaults)."""
        return self.call("PUT", f"/config/{SECTIONS[name]}", values)  # type: ignore[no-any-return]

    def update_section(self, name: str, **values: Any) -> dict[str, Any]:
        """Merge into a section."""
        return self.call("PATCH", f"/config/{SECTIONS[name]}", values)  # type: ignore[no-any-return]

    def clear_override(self, name: str) -> dict[str, Any]:
        """Drop a change made to a section while a scenario runs: the scenario's own
        section applies again (without a scenario, the startup config's section)."""
        return self.call("DELETE", f"/config/{SECTIONS[name]}")  # type: ignore[no-any-return]

    def scenarios(self) -> list[dict[str, Any]]:
        return self.call("GET", "/scenarios")["scenarios"]  # type: ignore[no-any-return]

    def define_scenario(self, name: str, **scenario: Any) -> dict[str, Any]:
        return self.call("POST", "/scenarios", {"name": name, **scenario})  # type: ignore[no-any-return]

    def start_scenario(
        self, name: str, *, duration_s: float | None = None, ramp_s: float | None = None
    ) -> dict[str, Any]:
        timing = {k: v for k, v in (("duration_s", duration_s), ("ramp_s", ramp_s)) if v}
        return self.call("POST", f"/scenarios/{name}", timing)["active"]  # type: ignore[no-any-return]

    def active_scenario(self) -> dict[str, Any] | None:
        return self.call("GET", "/scenarios/active")["active"]  # type: ignore[no-any-return]

    def stop_scenario(
        self, name: str | None = None, *, everything: bool = False
    ) -> dict[str, Any]:
        """Stop the active scenario (only if it is ``name``): the one it replaced resumes;
        with ``everything``, none does. Answers ``{"stopped": ..., "resumed": ...}``."""
        if name:
            return self.call("DELETE", f"/scenarios/{name}")  # type: ignore[no-any-return]
        suffix = "?all=true" if everything else ""
        return self.call("DELETE", "/scenarios" + suffix)  # type: ignore[no-any-return]

    def schedule(self) -> list[dict[str, Any]]:
        return self.call("GET", "/schedule")["schedule"]  # type: ignore[no-any-return]

    def set_schedule(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.call("PUT", "/schedule", entries)["schedule"]  # type: ignore[no-any-return]

    def stats(self) -> dict[str, Any]:
        return self.call("GET", "/stats")  # type: ignore[no-any-return]

    def breakers(self) -> list[dict[str, Any]]:
        """Each simulated circuit breaker in force: ``owner``, ``state``, counts."""
        return self.call("GET", "/breakers")["breakers"]  # type: ignore[no-any-return]

    def force_breaker(self, owner: str, action: str) -> dict[str, Any]:
        """``open``, ``close`` or ``reset`` a breaker (owner ``global`` or a rule's index)."""
        return self.call("POST", f"/breakers/{owner}", {"action": action})  # type: ignore[no-any-return]

    def scripts(self) -> list[dict[str, Any]]:
        """Each fault script in force: its steps, those hit and those not (``hit``,
        ``not_hit``, ``done``), so a test can assert its client retried through them."""
        return self.call("GET", "/scripts")["scripts"]  # type: ignore[no-any-return]

    def openapi(self) -> dict[str, Any]:
        return self.call("GET", "/openapi.json")  # type: ignore[no-any-return]

    # -- verdicts on the client under test (needs the recorder) ----------------------

    def tag(self, test_id: str) -> dict[str, str]:
        """Verdicts from now on count only requests that carry ``test_id``: send the
        returned header with them (``session.headers.update(chaos.tag("checkout"))``)."""
        self.scope = {"test_id": test_id}
        return {TEST_ID_HEADER: test_id}

    def verdicts(self, **filters: Any) -> dict[str, Any]:
        """``GET /verdicts``: the summary and the calls (filters: ``since``, ``until``,
        ``path``, ``test_id``, ``window_s``; by default this client's ``scope``)."""
        query = {k: v for k, v in {**self.scope, **filters}.items() if v is not None}
        suffix = "?" + urllib.parse.urlencode(query) if query else ""
        return self.call("GET", "/verdicts" + suffix)  # type: ignore[no-any-return]

    def assert_retries(
        self,
        *,
        max_attempts: int | None = None,
        honours_retry_after: bool = False,
        backoff_grows: bool = False,
        succeeds: bool = True,
        **filters: Any,
    ) -> dict[str, Any]:
        """Fail, naming each call that broke a rule, unless every call recorded made at
        most ``max_attempts``, waited the Retry-After it was told (``honours_retry_after``),
        waited longer each time (``backoff_grows``) and got its answer (``succeeds``).
        Returns the verdicts' summary."""
        __tracebackhide__ = True  # pytest shows the test's line and the message, not ours
        found = self.verdicts(**filters)
        if not found["calls"]:
            raise AssertionError(f"no calls recorded for {self._scope_text(filters)}")
        problems = []
        for call in found["calls"]:
            label, waits = _call_label(call), _waits_text(call)
            if max_attempts is not None and call["attempts"] > max_attempts:
                problems.append(
                    f"{label}: {call['attempts']} attempts, more than max_attempts="
                    f"{max_attempts} (statuses {_statuses(call)})"
                )
            if honours_retry_after and not all(call["retry_after_honoured"]):
                told = [s for s in call["retry_after_s"][:-1] if s is not None]
                problems.append(
                    f"{label}: told Retry-After {told} s, waited {waits} s before retrying"
                )
            if backoff_grows and call["backoff_grew"] is False:
                problems.append(f"{label}: backoff did not grow (waited {waits} s)")
            if succeeds and not call["succeeded"]:
                problems.append(
                    f"{label}: never succeeded in {call['attempts']} attempts "
                    f"(statuses {_statuses(call)})"
                )
        if problems:
            raise AssertionError(
                "the client's retries broke the rules:\n  " + "\n  ".join(problems)
            )
        return found["summary"]  # type: ignore[no-any-return]

    def assert_no_unsafe_retries(self, **filters: Any) -> dict[str, Any]:
        """Fail, naming each one, if the client sent a POST or PATCH without an
        Idempotency-Key again after a fault that came after the app ran (the side effect
        done twice). Returns the verdicts' summary."""
        __tracebackhide__ = True
        found = self.verdicts(**filters)
        unsafe = [call for call in found["calls"] if call["unsafe_retry"]]
        if unsafe:
            lines = [
                f"{_call_label(call)}: {call['attempts']} attempts after "
                f"{[fault for fault in call['faults'] if fault]} (statuses {_statuses(call)})"
                for call in unsafe
            ]
            raise AssertionError(
                f"{len(unsafe)} unsafe retries: a request that is not idempotent, without "
                "an Idempotency-Key, sent again after the server had acted on it:\n  "
                + "\n  ".join(lines)
            )
        return found["summary"]  # type: ignore[no-any-return]

    def _scope_text(self, filters: dict[str, Any]) -> str:
        scope = {**self.scope, **filters}
        return ", ".join(f"{k}={v}" for k, v in scope.items()) or "the whole recording"

    # -- context managers: the previous state comes back, even when the body raises ---

    @contextlib.contextmanager
    def scenario(
        self, name: str, *, duration_s: float | None = None, ramp_s: float | None = None
    ) -> Iterator[dict[str, Any]]:
        """Scenario ``name`` for the block; then the server resumes the one it replaced
        (for the time it had left, with its changes), as after any stop."""
        before = self.status()
        started = self.start_scenario(name, duration_s=duration_s, ramp_s=ramp_s)
        try:
            yield started
        finally:
            if _running(self.status()) == (started["name"], started["started_at"]):
                self.stop_scenario()  # else it ran out (or was replaced) in the block
            self._restore_enabled(before["enabled"])

    @contextlib.contextmanager
    def latency(self, **fields: Any) -> Iterator[dict[str, Any]]:
        """Latency on (``fixed_delay_ms=300``, ``probability=0.5``, ...) for the block."""
        with self._section("latency", fields) as applied:
            yield applied

    @contextlib.contextmanager
    def faults(
        self, *, probability: float | None = None, **fields: Any
    ) -> Iterator[dict[str, Any]]:
        """Faults on for the block; ``probability`` is the HTTP-error probability."""
        if probability is not None:
            fields["http_error_probability"] = probability
        with self._section("faults", fields) as applied:
            yield applied

    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        before = self.status()["enabled"]
        self.disable()
        try:
            yield
        finally:
            self._restore_enabled(before)

    @contextlib.contextmanager
    def _section(self, name: str, fields: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Change a section of the config in force (on top of a running scenario, if
        one runs), then restore exactly that: the section as it was, or no change on
        top of the scenario if there was none."""
        before_status = self.status()
        before = self.section(name)
        applied = self.update_section(name, enabled=True, **fields)
        self.enable()
        try:
            yield applied
        finally:
            running = _running(before_status)
            if running == _running(self.status()):
                if running is not None and ATTRIBUTES[name] not in before_status["overrides"]:
                    self.clear_override(name)
                else:
                    self.set_section(name, before)
            # Else the scenario changed inside the block: a change made on top of one
            # ended with it; one made to the runtime config (no scenario at the start)
            # stays, as the runtime config cannot be written while a scenario runs.
            self._restore_enabled(before_status["enabled"])

    def _restore_enabled(self, enabled: bool) -> None:
        if enabled:
            self.enable()
        else:
            self.disable()


def _call_label(call: dict[str, Any]) -> str:
    key = call.get("idempotency_key")
    return f"{call['method']} {call['path']}" + (f" (Idempotency-Key {key})" if key else "")


def _statuses(call: dict[str, Any]) -> str:
    """``503, 503, 200`` (0: no answer, shown as the fault)."""
    return ", ".join(
        str(status) if status else str(fault or "no answer")
        for status, fault in zip(call["statuses"], call["faults"], strict=True)
    )


def _waits_text(call: dict[str, Any]) -> str:
    return "[" + ", ".join(f"{wait:.2f}" for wait in call["waits_s"]) + "]"


def _running(status: dict[str, Any]) -> tuple[str, float] | None:
    """Which scenario run a status shows (a restart is another run), or None."""
    active = status["active_scenario"]
    return None if active is None else (active["name"], active["started_at"])
