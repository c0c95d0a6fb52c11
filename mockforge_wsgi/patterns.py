"""Count-based fault patterns: fail the first N requests, every Nth, or a fixed sequence.

Probabilities model flakiness; patterns make a test deterministic ("the first two calls
fail, the third succeeds": what a retry test needs). Requests are counted from the last
management change (in the store, so all workers share one count).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import attrs

from ._kinds import shown

__all__ = ["PATTERN_COUNTER", "FaultPattern", "parse_pattern"]

# The store counter that numbers requests for the pattern; zeroed on every state change.
PATTERN_COUNTER = "pattern_requests"

PatternKind = Literal["fail_first", "every", "sequence"]


@attrs.frozen
class FaultPattern:
    """Which numbered requests (1, 2, 3, ...) get which HTTP status."""

    kind: PatternKind
    count: int = 0
    status: int = 503
    statuses: tuple[int, ...] = ()
    repeat: bool = False

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


def parse_pattern(raw: Any) -> FaultPattern:
    """From ``{fail_first: 3, status: 503}``, ``{every: 5, status: 500}``,
    ``{sequence: [503, 503, 200], repeat: false}``, or the same as text:
    ``fail_first:3:503``, ``every:5:500``, ``sequence:503,503,200``."""
    if isinstance(raw, str):
        name, _, rest = raw.strip().partition(":")
        if name == "sequence":
            raw = {"sequence": [part for part in rest.split(",") if part.strip()]}
        else:
            times, _, code = rest.partition(":")
            raw = {name: times, **({"status": code} if code else {})}
    if not isinstance(raw, Mapping):
        raise ValueError("is not a pattern (fail_first, every or sequence)")
    kinds = [key for key in ("fail_first", "every", "sequence") if key in raw]
    allowed = {*kinds, "status", "repeat"}
    unknown = sorted(set(raw) - allowed)
    if len(kinds) != 1 or unknown:
        raise ValueError(
            "needs exactly one of fail_first, every, sequence (with status or repeat)"
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
    count = _int(raw[kind], kind, 1)
    status = _int(raw.get("status", 503), "status", 400, 599)
    return FaultPattern(kind, count=count, status=status)
