"""Count-based fault patterns: fail the first N requests, every Nth, or a fixed sequence.

Probabilities model flakiness; patterns make a test deterministic ("the first two calls
fail, the third succeeds": what a retry test needs). Requests are counted from the last
management change (in the store, so all workers share one count).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import attrs

from ._kinds import shown

__all__ = ["OUTBOUND_COUNTERS", "PATTERN_COUNTER", "FaultPattern", "parse_pattern"]

# The store counter that numbers requests for the pattern; zeroed on every state change.
PATTERN_COUNTER = "pattern_requests"
# Fault scripts count their steps in store counters named so (zeroed on every change too).
SCRIPT_COUNTER_PREFIX = "script:"
# The outbound direction's counters (the app's own calls) carry this prefix: numbered apart.
OUTBOUND_COUNTERS = "outbound:"
# Rules with a script of their own, at most: each has a counter, and a store's counter
# names are bounded (the embedded store holds 64 in all).
MAX_SCRIPTED_RULES = 16


def script_counter(rule: int | None) -> str:
    """The counter of one script: the global config's (rule None) or a rule's, by index.
    One name per owner, not per script: every change zeroes it, and names a store once
    made stay (a name per script would fill the embedded store's table in a long run)."""
    return f"{SCRIPT_COUNTER_PREFIX}{'global' if rule is None else rule}"


PatternKind = Literal["fail_first", "every", "sequence", "fail_for_s", "burst_s"]
# The longest a time-based pattern may span: every time a user sends is bounded.
MAX_PATTERN_S = 30 * 86_400.0


@attrs.frozen
class FaultPattern:
    """Which numbered requests (1, 2, 3, ...) get which HTTP status."""

    kind: PatternKind
    count: int = 0
    status: int = 503
    statuses: tuple[int, ...] = ()
    repeat: bool = False
    seconds: float = 0.0  # fail_for_s: how long; burst_s: each burst's length
    every_s: float = 0.0  # burst_s: a burst starts every this many seconds

    @property
    def timed(self) -> bool:
        """Decided by the time since the last change, not by request numbers."""
        return self.kind in ("fail_for_s", "burst_s")

    def status_at(self, elapsed_s: float) -> int | None:
        """The error status a request gets ``elapsed_s`` after the last management
        change, or None: fail for the first ``seconds`` (then recover), or for the first
        ``seconds`` of every ``every_s``."""
        if self.kind == "fail_for_s":
            return self.status if elapsed_s < self.seconds else None
        return self.status if elapsed_s % self.every_s < self.seconds else None

    def status_for(self, number: int) -> int | None:
        """The error status request ``number`` gets, or None to let it through."""
        if self.kind == "fail_first":
            return self.status if number <= self.count else None
        if self.kind == "every":
            return self.status if number % self.count == 0 else None
        if not self.repeat and number > len(self.statuses):
            return None
        status = self.statuses[(number - 1) % len(self.statuses)]
        return status if status >= 400 else None

    def describe(self) -> dict[str, Any]:
        if self.kind == "sequence":
            return {"sequence": list(self.statuses), "repeat": self.repeat}
        if self.kind == "fail_for_s":
            return {"fail_for_s": self.seconds, "status": self.status}
        if self.kind == "burst_s":
            return {"burst_s": self.seconds, "every_s": self.every_s, "status": self.status}
        return {self.kind: self.count, "status": self.status}


def _int(value: Any, what: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = int(str(value).strip())
        except ValueError:
            raise ValueError(f"{what} {shown(value)} is not an integer") from None
    if value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{what} {value} is not {bound}")
    return int(value)


def _seconds(value: Any, what: str) -> float:
    try:
        seconds = float(str(value).strip()) if not isinstance(value, bool) else math.nan
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= MAX_PATTERN_S:  # NaN fails this too
        raise ValueError(f"{what} {shown(value)} is not a number of seconds in (0, 2592000]")
    return seconds


def parse_pattern(raw: Any) -> FaultPattern:
    """From ``{fail_first: 3, status: 503}``, ``{every: 5, status: 500}``,
    ``{sequence: [503, 503, 200], repeat: false}``, ``{fail_for_s: 10, status: 503}``,
    ``{burst_s: 2, every_s: 10, status: 503}``, or the same as text: ``fail_first:3:503``,
    ``every:5:500``, ``sequence:503,503,200``, ``fail_for_s:10:503``,
    ``burst_s:2/10:503``."""
    if isinstance(raw, str):
        name, _, rest = raw.strip().partition(":")
        if name == "sequence":
            raw = {"sequence": [part for part in rest.split(",") if part.strip()]}
        elif name == "burst_s":
            times, _, code = rest.partition(":")
            burst, _, each = times.partition("/")
            raw = {"burst_s": burst, "every_s": each, **({"status": code} if code else {})}
        else:
            times, _, code = rest.partition(":")
            raw = {name: times, **({"status": code} if code else {})}
    if not isinstance(raw, Mapping):
        raise ValueError("is not a pattern (fail_first, every or sequence)")
    kinds = [
        key for key in ("fail_first", "every", "sequence", "fail_for_s", "burst_s") if key in raw
    ]
    allowed = {*kinds, "status", "repeat", *(["every_s"] if kinds == ["burst_s"] else [])}
    unknown = sorted(set(raw) - allowed)
    if len(kinds) != 1 or unknown:
        raise ValueError(
            "needs exactly one of fail_first, every, sequence (with status or repeat), "
            "fail_for_s, burst_s (with every_s)"
        )
    kind: PatternKind = kinds[0]  # type: ignore[assignment]
    if kind == "sequence":
        items = raw["sequence"]
        if not isinstance(items, (list, tuple)) or not items:
            raise ValueError("sequence is not a non-empty list of statuses")
        statuses = tuple(_int(item, "status", 100, 599) for item in items)
        repeat = raw.get("repeat", False)
        if not isinstance(repeat, bool):
            raise ValueError(f"repeat {shown(repeat)} is not a boolean")
        return FaultPattern("sequence", statuses=statuses, repeat=repeat)
    if kind in ("fail_for_s", "burst_s"):
        seconds = _seconds(raw[kind], kind)
        status = _int(raw.get("status", 503), "status", 400, 599)
        if kind == "fail_for_s":
            return FaultPattern(kind, status=status, seconds=seconds)
        period = _seconds(raw.get("every_s"), "every_s")
        if seconds > period:
            raise ValueError(f"burst_s {seconds:g} is longer than every_s {period:g}")
        return FaultPattern(kind, status=status, seconds=seconds, every_s=period)
    count = _int(raw[kind], kind, 1)
    status = _int(raw.get("status", 503), "status", 400, 599)
    return FaultPattern(kind, count=count, status=status)
