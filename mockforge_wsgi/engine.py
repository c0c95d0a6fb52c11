"""The scenario engine: the runtime state (enabled flag, runtime config, active scenario,
custom scenarios, schedule), kept in the store so every process sharing it sees the same,
and the effective config each request reads.

While a scenario is active its config is the effective one. Starting one pauses the
one it replaces (the startup scenario included); when it stops (or its ``duration_s``
runs out) the paused one resumes for the time it had left, with its changes, else the
runtime config returns. The last write wins: a config change made while a scenario runs
applies at once on top of it (an *override*) and ends with it.

Usage::

    engine = ScenarioEngine(load_config("chaos.yaml"))
    engine.activate("network_degradation", duration_s=60, ramp_s=10)
    config = engine.config_now()   # per request: cheap unless something changed
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from . import _state_start
from .answer_window import PREFIX as WINDOW_PREFIX
from .config import ChaosConfig, config_from_dict
from .patterns import OUTBOUND_COUNTERS, PATTERN_COUNTER, SCRIPT_COUNTER_PREFIX
from .release import release_all
from .scenarios import BUILTIN_SCENARIOS, Scenario, ramped, unknown_scenario
from .state import MemoryStore, Store, StoreError
from .state.base import StartedState
from .tripwire import GUARD_TRIPPED, GuardView, Tripwire

__all__ = [
    "HOLDING_SECTIONS",
    "MAX_DURATION_S",
    "MAX_PAUSED",
    "ActiveScenario",
    "HoldBasis",
    "PausedScenario",
    "RuntimeState",
    "ScenarioEngine",
    "ScheduleEntry",
    "UnknownScenario",
]

log = logging.getLogger("mockforge_wsgi")

# While a ramp runs, the effective config is recomputed at most this often.
RAMP_STEP_S = 0.05
NEVER = float("inf")
# The longest a scenario may run, ramp or wait in the schedule (30 days): every time a
# user sends is finite and bounded.
MAX_DURATION_S = 30 * 86_400.0
# Finite but far: keeps the version check on for stores that cannot notify us.
_POLL = 1e300
# After a failed read of the store, the last known config is kept this long.
STORE_RETRY_S = 1.0
# Scenarios waiting to resume, at most (the oldest is forgotten): bounds the state.
MAX_PAUSED = 16
# On a network store, a process reads the state version at least this often, requests
# or not: one cut off from the store later applies what it read last, at most this old.
IDLE_POLL_S = 1.0


class UnknownScenario(KeyError):
    """No scenario (or no active scenario) by that name; ``str()`` is one line saying
    so, with the path, the choices and the nearest name when there are choices."""

    def __init__(self, name: str, choices: Iterable[str] = (), path: str = "scenario") -> None:
        super().__init__(name)
        self.name, self.choices, self.path = name, tuple(choices), path

    def __str__(self) -> str:
        if not self.choices:
            return f"{self.path}: {self.name!r}"
        return unknown_scenario(self.name, self.choices, self.path)


@attrs.frozen
class ActiveScenario:
    """The running scenario: since when, for how long, ramped over how long, and why it
    runs (``startup``, ``api``, ``schedule`` or ``resumed``)."""

    name: str
    started_at: float
    duration_s: float | None = None
    ramp_s: float | None = None
    reason: str = "api"

    def ends_at(self) -> float | None:
        return None if self.duration_s is None else self.started_at + self.duration_s

    def ramp_fraction(self, now: float) -> float:
        if not self.ramp_s:
            return 1.0
        return min(1.0, max(0.0, (now - self.started_at) / self.ramp_s))


@attrs.frozen
class PausedScenario:
    """A scenario another one replaced: it resumes, with its changes, when that one ends.

    ``active.started_at`` moves on by the time it was paused, so it resumes for the time
    it had left, at the ramp step it had reached.
    """

    active: ActiveScenario
    paused_at: float
    overridden: tuple[str, ...] = ()
    overrides: ChaosConfig | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "active": attrs.asdict(self.active),
            "paused_at": self.paused_at,
            "overridden": list(self.overridden),
            "overrides": self.overrides.to_dict() if self.overrides is not None else None,
        }

    def to_status(self) -> dict[str, Any]:
        """What ``/status`` shows of it: name, why it ran, the time it has left."""
        ends = self.active.ends_at()
        left = None if ends is None else round(max(0.0, ends - self.paused_at), 3)
        return {"name": self.active.name, "reason": self.active.reason, "remaining_s": left}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PausedScenario:
        overrides = data.get("overrides")
        return cls(
            ActiveScenario(**data["active"]),
            float(data["paused_at"]),
            tuple(data.get("overridden", ())),
            config_from_dict(overrides) if overrides else None,
        )


@attrs.frozen
class ScheduleEntry:
    """Start ``name`` at ``start_at`` (clock time), for ``duration_s`` (None: until stopped)."""

    start_at: float
    name: str
    duration_s: float | None = None


# The sections whose settings hold requests (latency, timeout holds, stalls, pacing,
# connection timeouts; a rule's or a header's own): a change of any of them releases
# the requests held under the old settings (release.py).
HOLDING_SECTIONS = ("latency", "fault_injection", "traffic_shaping", "rules", "header_control")


@attrs.frozen(eq=False)
class HoldBasis:
    """What a held request was decided under: the effective config, the active
    scenario, and how many resets the state has seen. A hold lasts while it stays alike
    (see :meth:`ScenarioEngine.still_holds`)."""

    config: ChaosConfig
    active: ActiveScenario | None
    resets: int

    def alike(self, other: HoldBasis) -> bool:
        """Whether a request held under ``other`` is still wanted under this one: chaos
        on, the same scenario run, no reset between, the holding sections unchanged."""
        if other is self:
            return True
        config, then = self.config, other.config
        return (
            config.enabled
            and self.resets == other.resets
            and self.active == other.active
            and all(getattr(config, name) == getattr(then, name) for name in HOLDING_SECTIONS)
        )


# What a change made while a scenario runs may override: all but the master switch
# (which is the state's own) and the startup scenario's name.
OVERRIDABLE = tuple(
    field.name for field in attrs.fields(ChaosConfig) if field.name not in ("enabled", "scenario")
)


@attrs.frozen
class RuntimeState:
    """What management calls change; kept in the store as JSON-ready data.

    ``overridden`` names the fields of ``overrides`` that apply on top of the active
    scenario (changes made while it runs); both end with it. ``paused`` holds the
    scenarios it replaced, the last one last: when it ends, that one resumes.
    """

    enabled: bool
    config: ChaosConfig
    active: ActiveScenario | None = None
    custom: tuple[Scenario, ...] = ()
    schedule: tuple[ScheduleEntry, ...] = ()
    overridden: tuple[str, ...] = ()
    overrides: ChaosConfig | None = None
    changed_at: float = 0.0  # clock time of the last change: time-based patterns start here
    paused: tuple[PausedScenario, ...] = ()
    # Where it came from: the server (host:pid) whose startup config it last started
    # from (at start, or a reset), when, and the server that wrote it last.
    started_by: str = ""
    started_at: float = 0.0
    written_by: str = ""
    resets: int = 0  # how many resets: each releases the requests held before it
    # The guard (chaos.guard): when chaos was last switched on (its window counts from
    # then), when it was last switched on (at start, a reset or by the API) or renewed
    # (max_duration_s counts from then; None: never on), and the last trip, shown until
    # the next switch-on.
    guard_armed_at: float = 0.0
    guard_renewed_at: float | None = None
    guard_trip: dict[str, Any] | None = None
    # A scenario turned chaos on (it was off): off again when no scenario is left. The
    # switch thrown by hand (enable, disable, a config with `enabled`) clears it.
    off_after_scenarios: bool = False

    def armed(self, at: float) -> RuntimeState:
        """Chaos switched on by the API at ``at``: on, the guard's window and its
        max_duration_s counting from then, the last trip forgotten."""
        return attrs.evolve(
            self, enabled=True, guard_armed_at=at, guard_renewed_at=at, guard_trip=None
        )

    def scenario_on(self, active: ActiveScenario, **changes: Any) -> RuntimeState:
        """``active`` started (:meth:`started`) and chaos switched on with it; if chaos
        was off, it goes off again when the last scenario ends (:meth:`ended`)."""
        started = self.started(active, **changes).armed(active.started_at)
        return attrs.evolve(
            started, off_after_scenarios=self.off_after_scenarios or not self.enabled
        )

    def started(self, active: ActiveScenario, **changes: Any) -> RuntimeState:
        """``active`` runs from its ``started_at``: the running one (if any, and if it
        has time left) pauses, with its changes, to resume when ``active`` ends."""
        paused = self.paused
        running, at = self.active, active.started_at
        if running is not None:
            ends = running.ends_at()
            if ends is None or ends > at:
                held = PausedScenario(running, at, self.overridden, self.overrides)
                paused = (*paused, held)[-MAX_PAUSED:]
        return attrs.evolve(
            self, active=active, overridden=(), overrides=None, paused=paused, **changes
        )

    def ended(self, at: float) -> RuntimeState:
        """The active scenario ends at ``at``: the last one it replaced resumes for the
        time it had left, with its changes; with none paused, the runtime config returns,
        and chaos goes off if a scenario turned it on."""
        if not self.paused:
            return attrs.evolve(
                self,
                active=None,
                overridden=(),
                overrides=None,
                enabled=self.enabled and not self.off_after_scenarios,
                off_after_scenarios=False,
            )
        held = self.paused[-1]
        resumed = attrs.evolve(
            held.active,
            started_at=held.active.started_at + (at - held.paused_at),
            reason="resumed",
        )
        return attrs.evolve(
            self,
            active=resumed,
            overridden=held.overridden,
            overrides=held.overrides,
            paused=self.paused[:-1],
        )

    def editable(self, scenarios: Mapping[str, Scenario]) -> ChaosConfig:
        """The config that changes apply to: the active scenario's with its overrides
        (unramped), else the runtime config."""
        if self.active is None:
            return self.config
        return self.overlay(scenarios[self.active.name].config)

    def overlay(self, config: ChaosConfig) -> ChaosConfig:
        """``config`` with the overridden fields replaced."""
        if not self.overridden or self.overrides is None:
            return config
        overrides = self.overrides
        return attrs.evolve(config, **{name: getattr(overrides, name) for name in self.overridden})

    def to_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "config": self.config.to_dict(),
            "overridden": list(self.overridden),
            "overrides": self.overrides.to_dict() if self.overrides is not None else None,
            "active": attrs.asdict(self.active) if self.active else None,
            "custom": [
                {"name": s.name, "description": s.description, "config": s.config.to_dict()}
                for s in self.custom
            ],
            "schedule": [attrs.asdict(entry) for entry in self.schedule],
            "changed_at": self.changed_at,
            "paused": [held.to_dict() for held in self.paused],
            "started_by": self.started_by,
            "started_at": self.started_at,
            "written_by": self.written_by,
            "resets": self.resets,
            "guard_armed_at": self.guard_armed_at,
            "guard_renewed_at": self.guard_renewed_at,
            "guard_trip": self.guard_trip,
            "off_after_scenarios": self.off_after_scenarios,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RuntimeState:
        return cls(
            enabled=data["enabled"],
            config=config_from_dict(data["config"]),
            active=ActiveScenario(**data["active"]) if data["active"] else None,
            custom=tuple(
                Scenario(
                    item["name"], item["description"], "custom", config_from_dict(item["config"])
                )
                for item in data["custom"]
            ),
            schedule=tuple(ScheduleEntry(**entry) for entry in data["schedule"]),
            overridden=tuple(data.get("overridden", ())),
            overrides=config_from_dict(data["overrides"]) if data.get("overrides") else None,
            changed_at=float(data.get("changed_at", 0.0)),
            paused=tuple(PausedScenario.from_dict(held) for held in data.get("paused", ())),
            started_by=str(data.get("started_by", "")),
            started_at=float(data.get("started_at", 0.0)),
            written_by=str(data.get("written_by", "")),
            resets=int(data.get("resets", 0)),
            guard_armed_at=float(data.get("guard_armed_at", 0.0)),
            guard_renewed_at=data.get("guard_renewed_at"),
            guard_trip=data.get("guard_trip"),
            off_after_scenarios=bool(data.get("off_after_scenarios", False)),
        )


class ScenarioEngine:
    """Owns the runtime state: enable/disable, runtime config, scenarios and schedule.

    Every change is saved to the store with a new version; :meth:`effective` re-reads
    the store only when the version moved or a time-based change is due (a scenario's
    end, a schedule entry, the next ramp step).
    """

    def __init__(
        self,
        startup: ChaosConfig,
        *,
        store: Store | None = None,
        clock: Callable[[], float] = time.time,
        custom: Iterable[Scenario] = (),
        start: str | None = None,
    ) -> None:
        self.startup = startup
        self.clock = clock
        self._startup_custom = tuple(custom)
        self._lock = threading.RLock()
        # The effective config as last computed.
        self.current = startup
        # What a request held now is held under (read by apply.Delivery; set with current).
        self.basis = HoldBasis(startup, None, 0)
        self._refresh_at = 0.0
        self.config_now: Callable[[], ChaosConfig] = self.effective
        self.store_errors = 0
        self._store_down = False
        # This server (host:pid), named in what it writes; how it starts on a shared
        # store (chaos.state_at_start) until it has, then what it did.
        self.server = _state_start.server_name()
        self._start_mode: str | None = None
        told = _state_start.told_by_master()  # a worker of mockforge serve
        self.started: StartedState | None = None if told is None else told[1]
        self.start_line = ""
        # The guard (tripwire.py): its watcher thread, and who hears of a trip (the
        # recorder): each is told once per trip this process sees, with the trip.
        self.tripwire = Tripwire(self)
        self.trip_listeners: list[Callable[[dict[str, Any]], None]] = []
        self._told_trip: float | None = None
        self._poller: tuple[int, threading.Event] | None = None  # (its process, its stop)
        self._state = self._initial_state()
        self.attach(store if store is not None else MemoryStore(), start=start)

    def attach(self, store: Store, *, start: str | None = None) -> None:
        """Keep the runtime state in ``store`` from now on. Without ``start``, the first
        process to attach to a shared store seeds it with its startup state and the
        others adopt what is there (whatever was changed before, in this process, stays
        behind). With ``start`` (``auto``, ``adopt``, ``startup``), the first read of
        the store applies that rule instead (:meth:`start_now`)."""
        with self._lock:
            self.store = store
            self._store_version = store.state_version
            self._notified = store.subscribe(self._invalidate)
            self._version = -1
            self.refresh_at = 0.0
            self._start_mode = start
            if start is None:
                with contextlib.suppress(StoreError):  # unreachable now: effective() retries
                    store.init_state(self._initial_state().to_dict())

    def start_now(self) -> str:
        """Apply ``chaos.state_at_start`` to the store now (if ``attach`` asked for it and
        it was not done yet): write this server's startup state or adopt the store's,
        in one atomic step of the store, and log which. Returns that line ('' when
        there was nothing to do, or when a worker joined the state its own server
        started). Raises StoreError while the store is unreachable."""
        with self._lock:
            mode = self._start_mode
            if mode is None:
                return ""
            initial = self._initial_state()
            started = self.store.start_state(initial.to_dict(), server=self.server, mode=mode)
            self._start_mode = None
            self.started = started
            if started.wrote and started.why != "empty":
                # As a reset would: buckets and counters of an earlier run go too.
                with contextlib.suppress(StoreError):
                    self.store.reset()
            _state_start.keep_alive(self.store, self.server)
            version, data = self.store.load_state()
            if data is not None:
                self._state, self._version = RuntimeState.from_dict(data), version
            if started.wrote:
                line = _state_start.started_line(started, mode)
            else:
                state = self._state
                line = _state_start.joined_line(
                    started,
                    mode,
                    version=version,
                    written_ago_s=self.clock() - state.changed_at,
                    written_by=state.written_by,
                    diffs=_state_start.differences(state.to_dict(), initial.to_dict()),
                )
            self.start_line = line if started.why != "own server" else ""
            log.log(logging.INFO if self.start_line else logging.DEBUG, "mockforge: %s", line)
            return self.start_line

    def _initial_state(self) -> RuntimeState:
        now = self.clock()
        state = RuntimeState(
            enabled=self.startup.enabled,
            config=self.startup,
            custom=self._startup_custom,
            changed_at=now,
            started_by=self.server,
            started_at=now,
            written_by=self.server,
            guard_armed_at=now,
            # Chaos on at start: max_duration_s counts from the start, as from an enable.
            guard_renewed_at=now if self.startup.enabled else None,
        )
        if self.startup.scenario:
            self._lookup(state, self.startup.scenario, "chaos.scenario")
            active = ActiveScenario(self.startup.scenario, self.clock(), reason="startup")
            state = attrs.evolve(state, active=active)
        return state

    # -- reading ------------------------------------------------------------------

    def effective(self) -> ChaosConfig:
        """The config to apply now. Per request, when nothing is pending: one comparison.

        ``refresh_at`` is never-ending only while the store tells us of every change
        (in-process stores); otherwise each call compares the store's version, and a
        clock read catches time-based changes (a scenario's end, the schedule, a ramp).
        """
        if self._refresh_at == NEVER:
            return self.current
        try:
            if self._store_version() == self._version and self.clock() < self._refresh_at:
                return self.current
        except StoreError:
            return self._store_failed()
        return self._refresh()

    @property
    def refresh_at(self) -> float:
        """When the effective config must be computed again (NEVER: not until the store
        says it changed)."""
        return self._refresh_at

    @refresh_at.setter
    def refresh_at(self, at: float) -> None:
        # config_now() is the per-request call: while nothing is pending, a C-level getter
        # of the current config (~40 ns, as cheap as an inline check; a method call is
        # ~130 ns); else effective(), which checks the store's version and the clock.
        self._refresh_at = at
        if at == NEVER:
            self.config_now = itertools.repeat(self.current).__next__
        else:
            self.config_now = self.effective

    @property
    def known_version(self) -> int:
        """The state version the effective config was computed from (no store call)."""
        return self._version

    def watched_version(self) -> int:
        """The store's state version now, for the watcher of held requests (release.py);
        a time-based change that fell due meanwhile (a scenario's end) is saved first."""
        try:
            self.store.watch_version()  # read afresh (a Redis store caches it per request)
        except StoreError:
            self._count_store_error()
            raise
        self.effective()  # reloads if it moved (waking the holds), saves what fell due
        return self._version

    def still_holds(self, basis: HoldBasis) -> bool:
        """Whether a request held under ``basis`` is still wanted now (release.py asks
        when woken by a change)."""
        self.config_now()
        return self.basis.alike(basis)

    def active_scenario_now(self) -> str | None:
        """The active scenario's name; per request, as cheap as ``config_now()``."""
        self.config_now()
        active = self._state.active
        return None if active is None else active.name

    def _invalidate(self) -> None:
        self.refresh_at = 0.0

    def state(self) -> RuntimeState:
        self.effective()
        return self._state

    def _refresh(self) -> ChaosConfig:
        try:
            config = self._reload()
        except StoreError:
            return self._store_failed()
        if self._store_down:
            self._store_down = False
            log.warning("mockforge: the chaos state can be read again")
        return config

    def _count_store_error(self) -> None:
        self.store_errors += 1
        with contextlib.suppress(Exception):
            self.store.count(("store_errors",))  # Redis keeps it and sends it when back

    def _store_failed(self) -> ChaosConfig:
        """Unreachable store: keep applying what we last knew, try again in a moment;
        count each failure, log one line per outage."""
        self._count_store_error()
        if not self._store_down:
            self._store_down = True
            log.warning(
                "mockforge: cannot read the chaos state (%s); applying the last known",
                sys.exc_info()[1],
            )
        self.refresh_at = self.clock() + STORE_RETRY_S
        return self.current

    def _reload(self) -> ChaosConfig:
        with self._lock:
            if self._start_mode is not None:
                self.start_now()
            now = self.clock()
            version, data = self.store.load_state()
            moved = version != self._version and data is not None
            if moved:
                assert data is not None
                self._state, self._version = RuntimeState.from_dict(data), version
            state = self._advance(self._state, now)
            if state is not self._state:
                self._save(state)
                moved = True
            config = self._settle(state, now)
        if moved:  # changed here or elsewhere: the holds of this process ask at once
            release_all()
            self._guard_moved()
        return config

    def _settle(self, state: RuntimeState, now: float) -> ChaosConfig:
        config, refresh_at = self._compute(state, now)
        basis = self.basis
        if (
            config is not basis.config
            or state.active != basis.active
            or (state.resets != basis.resets)
        ):
            self.basis = HoldBasis(config, state.active, state.resets)
        self.current = config
        # A save by someone else while we computed must not be masked by our result.
        self.refresh_at = refresh_at if self._store_version() == self._version else 0.0
        return config

    def _advance(self, state: RuntimeState, now: float) -> RuntimeState:
        """Apply the time-based changes that are due, in the order they fell due (so
        whichever process sees them first, the result is the same): schedule entries
        start, a scenario ends and the one it replaced resumes."""
        while True:
            ends = state.active.ends_at() if state.active else None
            ends = ends if ends is not None and ends <= now else None
            entry = state.schedule[0] if state.schedule else None  # sorted by start
            entry = entry if entry is not None and entry.start_at <= now else None
            if ends is not None and (entry is None or ends <= entry.start_at):
                state = state.ended(ends)
            elif entry is not None:
                active = ActiveScenario(
                    entry.name, entry.start_at, entry.duration_s, reason="schedule"
                )
                state = state.scenario_on(active, schedule=state.schedule[1:])
            else:
                return state

    def _compute(self, state: RuntimeState, now: float) -> tuple[ChaosConfig, float]:
        refresh_at = min((e.start_at for e in state.schedule), default=NEVER)
        if not self._notified:
            refresh_at = min(refresh_at, _POLL)  # other processes may change the state
        active = state.active
        if active is None:
            config = state.config
        else:
            scenario = self._lookup(state, active.name).config
            fraction = active.ramp_fraction(now)
            # The ramp grows the scenario; changes made on top of it apply as written.
            # The server's cap on active faults stays, unless the scenario has its own.
            # So does its guard.
            cap = scenario.max_active_faults
            if cap is None:
                cap = state.config.max_active_faults
            guard = scenario.guard if scenario.guard.on else state.config.guard
            config = state.overlay(
                attrs.evolve(
                    ramped(scenario, fraction),
                    seed=state.config.seed,
                    max_active_faults=cap,
                    guard=guard,
                )
            )
            if fraction < 1.0:
                refresh_at = min(refresh_at, now + RAMP_STEP_S)
            ends = active.ends_at()
            if ends is not None:
                refresh_at = min(refresh_at, ends)
        if config.enabled != state.enabled:
            config = attrs.evolve(config, enabled=state.enabled)
        return config, refresh_at

    def scenarios(self) -> dict[str, Scenario]:
        """Every scenario by name: built-ins, then custom ones (which may override)."""
        return self._all(self.state())

    def _all(self, state: RuntimeState) -> dict[str, Scenario]:
        return {**BUILTIN_SCENARIOS, **{s.name: s for s in state.custom}}

    def _lookup(self, state: RuntimeState, name: str, path: str = "scenario") -> Scenario:
        known = self._all(state)
        try:
            return known[name]
        except KeyError:
            raise UnknownScenario(name, known, path) from None

    # -- changing -----------------------------------------------------------------

    def _change(self, change: Callable[[RuntimeState, float], RuntimeState]) -> RuntimeState:
        with self._lock:
            self._refresh()
            state = change(self._state, self.clock())
            changed = state is not self._state
            if changed:
                self._save(state)
            self._settle(state, self.clock())
        if changed:
            release_all()  # the holds of this process ask at once whether they still hold
            self._guard_moved()
        return state

    def _save(self, state: RuntimeState, *, expect: int | None = None) -> bool:
        """Save ``state`` with a new version; with ``expect``, only if the store's is
        still that one (returns whether it saved: False, someone saved meanwhile)."""
        rearmed = state.guard_armed_at != self._state.guard_armed_at
        for name, value in self.store.counters().items():
            base = name.removeprefix(OUTBOUND_COUNTERS)
            if value and (base == PATTERN_COUNTER or base.startswith(SCRIPT_COUNTER_PREFIX)):
                self.store.set_counter(name, 0)  # patterns and scripts count from each change
            elif value and rearmed and name.startswith(WINDOW_PREFIX):
                self.store.set_counter(name, 0)  # the guard's window counts from a switch-on
        # ... and time them from it; the writer is named (/status says who wrote it).
        state = attrs.evolve(state, changed_at=self.clock(), written_by=self.server)
        if expect is None:
            self._version = self.store.save_state(state.to_dict())
        else:
            saved = self.store.replace_state(state.to_dict(), expect)
            if not saved:
                return False
            self._version = saved
        self._state = state
        return True

    def since_change(self) -> float:
        """Seconds since the last change of the runtime state (time-based patterns)."""
        return self.clock() - self._state.changed_at

    def set_enabled(self, enabled: bool) -> None:
        """The master switch. On (even if it was) is a switch-on: the guard's window and
        max_duration_s count from now, and a trip shown in /status is forgotten."""
        if enabled:
            self._change(
                lambda state, now: attrs.evolve(state.armed(now), off_after_scenarios=False)
            )
        else:
            self._change(
                lambda state, now: attrs.evolve(state, enabled=False, off_after_scenarios=False)
            )

    def editable(self) -> ChaosConfig:
        """The config changes apply to (see :meth:`RuntimeState.editable`), with the
        master switch as ``enabled``."""
        state = self.state()
        return attrs.evolve(state.editable(self._all(state)), enabled=state.enabled)

    def set_config(self, config: ChaosConfig) -> None:
        """Replace the config in force (``enabled`` in it sets the switch too): the
        runtime config, or while a scenario runs, all of it on top of the scenario."""

        def write(state: RuntimeState, now: float) -> RuntimeState:
            written = attrs.evolve(
                self._write(state, config, OVERRIDABLE),
                enabled=config.enabled,
                off_after_scenarios=False,
            )
            return written.armed(now) if config.enabled and not state.enabled else written

        self._change(write)

    def update_config(self, **sections: Any) -> None:
        """Replace sections of the config in force (``latency=LatencyConfig(...)``): the
        runtime config's, or while a scenario runs, on top of the scenario until it ends."""

        def update(state: RuntimeState, now: float) -> RuntimeState:
            return self._write(
                state, attrs.evolve(state.editable(self._all(state)), **sections), sections
            )

        self._change(update)

    def clear_overrides(self, *names: str) -> None:
        """Drop changes made on top of the active scenario (all when no ``names``): its
        own values apply again. Without a scenario, the runtime config's sections go
        back to the startup config's (what a user undoing a PATCH expects)."""

        def clear(state: RuntimeState, now: float) -> RuntimeState:
            if state.active is None:
                startup = {name: getattr(self.startup, name) for name in names or OVERRIDABLE}
                back = attrs.evolve(state.config, **startup)
                return state if back == state.config else attrs.evolve(state, config=back)
            if not state.overridden:
                return state  # nothing to drop: no save, no pattern restart
            kept = tuple(n for n in state.overridden if names and n not in names)
            return attrs.evolve(
                state, overridden=kept, overrides=state.overrides if kept else None
            )

        self._change(clear)

    @staticmethod
    def _write(state: RuntimeState, config: ChaosConfig, names: Iterable[str]) -> RuntimeState:
        if state.active is None:
            return attrs.evolve(state, config=config)
        overridden = (*state.overridden, *(n for n in names if n not in state.overridden))
        return attrs.evolve(state, overridden=overridden, overrides=config)

    def reset(self) -> None:
        """Startup config back, scenario stopped, schedule cleared, counters zeroed."""
        self._change(
            lambda state, now: attrs.evolve(self._initial_state(), resets=state.resets + 1)
        )
        self.store.reset()

    def define(self, scenario: Scenario) -> None:
        """Add or replace a custom scenario (built-in names were checked on parsing)."""

        def add(state: RuntimeState, now: float) -> RuntimeState:
            others = tuple(s for s in state.custom if s.name != scenario.name)
            return attrs.evolve(state, custom=(*others, scenario))

        self._change(add)

    def activate(
        self, name: str, *, duration_s: float | None = None, ramp_s: float | None = None
    ) -> ActiveScenario:
        """Start ``name`` now and turn chaos on; the active scenario (if any) pauses and
        resumes when this one ends."""

        def start(state: RuntimeState, now: float) -> RuntimeState:
            self._lookup(state, name)
            active = ActiveScenario(name, now, duration_s, ramp_s, reason="api")
            return state.scenario_on(active)

        state = self._change(start)
        assert state.active is not None
        return state.active

    def stop(self, name: str | None = None, *, everything: bool = False) -> None:
        """Stop the active scenario (only if it is ``name``, when given): the one it
        replaced resumes. With ``everything``, none resumes (the paused are dropped)."""

        def halt(state: RuntimeState, now: float) -> RuntimeState:
            if state.active is None or (name is not None and state.active.name != name):
                raise UnknownScenario(name or "(none active)")
            if everything:
                state = attrs.evolve(state, paused=())
            return state.ended(now)

        self._change(halt)

    def schedule(self, entries: Iterable[tuple[float, str, float | None]]) -> None:
        """Replace the schedule: (seconds from now, scenario, duration or None)."""

        def plan(state: RuntimeState, now: float) -> RuntimeState:
            parsed: list[ScheduleEntry] = []
            for offset, name, duration in entries:
                self._lookup(state, name, f"schedule[{len(parsed)}].scenario")
                parsed.append(ScheduleEntry(now + offset, name, duration))
            return attrs.evolve(state, schedule=tuple(sorted(parsed, key=lambda e: e.start_at)))

        self._change(plan)

    def status(self) -> dict[str, Any]:
        """Enabled flag, active scenario with remaining time, effective config, counters."""
        config = self.effective()
        state, now = self._state, self.clock()
        active = None
        if state.active is not None:
            ends = state.active.ends_at()
            active = {
                **attrs.asdict(state.active),
                "elapsed_s": round(now - state.active.started_at, 3),
                "remaining_s": None if ends is None else round(max(0.0, ends - now), 3),
                "ramp_progress": round(state.active.ramp_fraction(now), 3),
            }
        written = state.overrides.to_dict() if state.overrides is not None else {}
        return {
            "enabled": state.enabled,
            "active_scenario": active,
            "paused_scenarios": [held.to_status() for held in reversed(state.paused)],
            "overrides": {name: written[name] for name in state.overridden},
            "schedule": [attrs.asdict(entry) for entry in state.schedule],
            "effective_config": config.to_dict(),
            "counters": {
                name: value
                for name, value in self.store.counters().items()
                if not name.startswith(WINDOW_PREFIX)
            },
            "guard": self.guard_status(),
            "state": self.origin(),
        }

    # -- the guard (chaos.guard; tripwire.py decides and watches) -----------------------

    def guard_view(self) -> GuardView | None:
        """What the guard's watcher needs, or None while chaos or the guard is off."""
        config = self.effective()
        state = self._state
        if not config.enabled or not config.guard.on:
            return None
        return GuardView(config.guard, state.guard_armed_at, state.guard_renewed_at)

    def poll_while_idle(self, every_s: float = IDLE_POLL_S) -> bool:
        """On a network store (Redis), read the state version every ``every_s`` in a
        daemon thread of this process (started once; after fork, call again), so a
        worker with no requests does not keep a state hours old for when it is cut off
        from the store. Costs a request nothing: it only moves what the request path
        compares. Returns whether the thread runs."""
        if not self.store.remote:
            return False
        with self._lock:
            if self._poller is not None and self._poller[0] == os.getpid():
                return True
            stop = threading.Event()
            thread = threading.Thread(
                target=self._poll, args=(every_s, stop), name="mockforge-state-poll", daemon=True
            )
            self._poller = (os.getpid(), stop)
        thread.start()
        return True

    def stop_polling(self) -> None:
        """End the thread of :meth:`poll_while_idle` (tests; a process that exits needs not)."""
        with self._lock:
            if self._poller is not None:
                self._poller[1].set()
                self._poller = None

    def _poll(self, every_s: float, stop: threading.Event) -> None:
        while not stop.wait(every_s):
            with contextlib.suppress(StoreError):  # counted; the next poll tries again
                self.watched_version()

    def watch_from_start(self) -> None:
        """A worker's start, before any request: read the state, and with chaos and the
        guard on, start the guard's watcher (else the first request or change does)."""
        config = self.effective()  # a first read starts it when the state is found on
        if config.enabled and config.guard.on:
            self.tripwire.changed()

    def guard_status(self) -> dict[str, Any]:
        """What /status shows under ``guard``: the last trip (until the next switch-on
        or reset), and when max_duration_s would turn chaos off (``expires_at``)."""
        state = self._state
        trip = state.guard_trip or {}
        view = self.guard_view() if state.enabled else None
        deadline = view.deadline if view is not None else None
        return {
            "tripped": bool(trip),
            "reason": trip.get("reason"),
            "at": trip.get("at"),
            "figures": trip.get("figures"),
            "expires_at": deadline,
        }

    def trip(
        self,
        reason: str,
        figures: dict[str, Any],
        *,
        armed_at: float | None = None,
        renewed_at: float | None = None,
    ) -> bool:
        """The guard tripped: chaos off as ``/disable`` turns it off (held requests
        released, on every worker), the trip kept in the state for /status; counted
        (``guard_tripped``) and logged. Nothing happens if chaos is off already, or was
        switched on or renewed since the figures were taken (``armed_at``,
        ``renewed_at``, when given); returns whether it tripped.

        Processes that trip at the same instant (every worker watches the same deadline)
        each save only if the state's version is still the one they judged
        (:meth:`Store.replace_state`): one wins, and only it counts the trip."""
        with self._lock:
            self._refresh()
            state, now = self._state, self.clock()
            if (
                not state.enabled
                or (armed_at is not None and state.guard_armed_at != armed_at)
                or (renewed_at is not None and state.guard_renewed_at != renewed_at)
            ):
                return False
            trip = {"reason": reason, "at": now, "figures": figures}
            off = attrs.evolve(state, enabled=False, guard_trip=trip)
            won = self._save(off, expect=self._version)
            if won:
                self._settle(self._state, now)
        if not won:
            self.refresh_at = 0.0  # read what the winner saved (and tell of its trip)
            self._refresh()
            return False
        # Counted once saved (by the winner only): a /status read in between may show
        # chaos off with the trip not yet counted, never a trip counted twice.
        with contextlib.suppress(StoreError):
            self.store.incr(GUARD_TRIPPED)
        release_all()
        self._guard_moved()
        log.warning("mockforge: guard tripped, chaos off: %s", reason)
        return True

    def renew(self) -> dict[str, Any]:
        """Chaos stays on for another max_duration_s from now (``POST
        /api/chaos/guard/renew``); nothing while it is off. Returns the guard's status."""

        def renewed(state: RuntimeState, now: float) -> RuntimeState:
            return attrs.evolve(state, guard_renewed_at=now) if state.enabled else state

        self._change(renewed)
        return self.guard_status()

    def _guard_moved(self) -> None:
        """The state moved: the watcher looks again (started if chaos and the guard are
        on), and a trip not yet told here is told to the listeners."""
        state = self._state
        if state.enabled and self.current.guard.on:
            self.tripwire.changed()
        trip = state.guard_trip
        if trip is None or trip.get("at") == self._told_trip:
            return
        self._told_trip = trip.get("at")
        for listener in list(self.trip_listeners):
            try:
                listener(trip)
            except Exception:
                log.warning("mockforge: telling of a guard trip failed", exc_info=True)

    def origin(self) -> dict[str, Any]:
        """Where the runtime state came from: the server whose startup config it last
        started from and when, who wrote it last and when, whether it differs from
        this server's startup config, and what this server did at start."""
        state, started = self._state, self.started
        return {
            "version": self._version,
            "this_server": self.server,
            "at_start": {
                "setting": self.startup.state_at_start,
                # None: the store is this server's own (nothing to decide), or not
                # reached yet.
                "did": None if started is None else ("started" if started.wrote else "joined"),
                "why": None if started is None else started.why,
                "live_servers": [] if started is None else list(started.others),
            },
            "started_from": {
                "server": state.started_by,
                "at": state.started_at,
                "this_server": state.started_by == self.server,
            },
            "written_by": state.written_by,
            "written_at": state.changed_at,
            "differs_from_startup": _state_start.differences(
                state.to_dict(), self._initial_state().to_dict()
            ),
        }
