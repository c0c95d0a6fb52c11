"""Value kinds and range checks that settings are declared with.

A *kind* turns a raw value (from YAML, an environment string or Python) into a typed
one, or says what it is not. A *check* says whether a typed value is in range. Both
describe themselves for the generated configuration reference.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import attrs

from ._env import boolean

_NONE = {"", "none", "null"}


class Check(Protocol):
    def problem(self, value: Any) -> str | None: ...

    def describe(self) -> str: ...

    def json_schema(self) -> dict[str, Any]: ...


@attrs.frozen
class Kind:
    """How raw values of one type are parsed and how the type is named in docs."""

    label: str
    types: tuple[type, ...]
    parser: Callable[[Any], Any]
    json_type: Mapping[str, Any]  # its JSON schema type (OpenAPI), beside the label

    def parse(self, raw: Any) -> Any:
        """Typed value for ``raw``; raises ValueError('is not ...') otherwise."""
        return self.parser(raw)

    def type_problem(self, value: Any) -> str | None:
        if isinstance(value, bool) and bool not in self.types:
            return f"{shown(value)} is not {self.label}"
        if not isinstance(value, self.types):
            return f"{shown(value)} is not {self.label}"
        return None


def _bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        return boolean(raw)
    # YAML and JSON read an unquoted 1 as a number, never taken for a boolean: the text is.
    raise ValueError("is not a boolean (allowed: true/false, yes/no, on/off, '1'/'0' quoted)")


def _float(raw: Any) -> float:
    if isinstance(raw, bool):
        raise ValueError("is not a number")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError("is not a number") from None
    except OverflowError:  # an integer too large for a float
        raise ValueError("is not a finite number") from None
    if not math.isfinite(value):
        raise ValueError("is not a finite number")
    return value


def _int(raw: Any) -> int:
    if isinstance(raw, bool):
        raise ValueError("is not an integer")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str):
        try:
            return int(raw.strip())
        except ValueError:
            pass
    raise ValueError("is not an integer")


def _str(raw: Any) -> str:
    if isinstance(raw, str):
        return raw
    raise ValueError("is not a string")


def _optional(parser: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def parse(raw: Any) -> Any:
        if raw is None or (isinstance(raw, str) and raw.strip().lower() in _NONE):
            return None
        return parser(raw)

    return parse


def _split(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def _int_list(raw: Any) -> tuple[int, ...]:
    items: Sequence[Any]
    if isinstance(raw, str):
        items = _split(raw)
    elif isinstance(raw, int) and not isinstance(raw, bool):
        items = [raw]
    elif isinstance(raw, (list, tuple)):
        items = raw
    else:
        raise ValueError("is not a list of integers")
    try:
        return tuple(_int(item) for item in items)
    except ValueError:
        raise ValueError("is not a list of integers") from None


def _str_list(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str):
        return tuple(_split(raw))
    if isinstance(raw, (list, tuple)) and all(isinstance(item, str) for item in raw):
        return tuple(raw)
    raise ValueError("is not a list of strings")


def _range(raw: Any) -> tuple[float, float]:
    """``[100, 500]``, ``"100-500"``, ``"100,500"`` or ``{min: 100, max: 500}``."""
    parts: Sequence[Any]
    if isinstance(raw, Mapping) and set(raw) == {"min", "max"}:
        parts = [raw["min"], raw["max"]]
    elif isinstance(raw, str):
        parts = raw.replace(",", "-").split("-") if raw.count("-") <= 1 else []
    elif isinstance(raw, (list, tuple)):
        parts = raw
    else:
        parts = []
    if len(parts) != 2:
        raise ValueError("is not a range (min-max, [min, max] or {min, max})")
    try:
        return (_float(parts[0]), _float(parts[1]))
    except ValueError:
        raise ValueError("is not a range of numbers (min-max)") from None


def _body(raw: Any) -> str:
    """A fault body: text as given, a mapping or list as JSON."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, (Mapping, list)):
        return json.dumps(raw, separators=(",", ":"))
    raise ValueError("is not a string or a mapping")


# What an HTTP header name may be (RFC 9110 token) and how many a setting may add.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}")
MAX_HEADERS = 20


def _header_map(raw: Any) -> tuple[tuple[str, str], ...]:
    """Headers as ``{name: value}`` (or JSON text of one, or ``[[name, value], ...]``),
    kept as a tuple of pairs; names are tokens, values one line of at most 1,000."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else {}
        except ValueError:
            raise ValueError("is not a JSON mapping of header name to value") from None
    if isinstance(raw, Mapping):
        pairs = list(raw.items())
    elif isinstance(raw, (list, tuple)) and all(
        isinstance(p, (list, tuple)) and len(p) == 2 for p in raw
    ):
        pairs = [tuple(p) for p in raw]
    else:
        raise ValueError("is not a mapping of header name to value")
    if len(pairs) > MAX_HEADERS:
        raise ValueError(f"has {len(pairs)} headers; at most {MAX_HEADERS}")
    headers = []
    for name, value in pairs:
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ValueError(f"header name {shown(name)} is not a token")
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise ValueError(f"header {name}: {shown(value)} is not text")
        text = str(value)
        if len(text) > 1000 or any(c in text for c in "\r\n\0"):
            raise ValueError(f"header {name}: value is not one line of at most 1000")
        headers.append((name, text))
    return tuple(headers)


MAX_BODY_CHARS = 16 * 1024


def _status_bodies(raw: Any) -> tuple[tuple[int, str], ...]:
    """Bodies by status, ``{503: '{"error": "busy"}', 500: "<h1>oops</h1>"}`` (or JSON
    text of that mapping), kept as a tuple of (status, body) pairs. Bodies are text (one
    that parses as JSON is sent as JSON): a nested schema would be as deep as any JSON."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else {}
        except ValueError:
            raise ValueError("is not a JSON mapping of status to body") from None
    if not isinstance(raw, Mapping):
        raise ValueError("is not a mapping of status to body")
    if len(raw) > MAX_HEADERS:
        raise ValueError(f"has {len(raw)} statuses; at most {MAX_HEADERS}")
    bodies = []
    for key, body in raw.items():
        text = str(key).strip()
        if (
            isinstance(key, bool)
            or not (text.isascii() and text.isdigit())
            or not 400 <= int(text) <= 599
        ):
            raise ValueError(f"status {shown(key)} is not in [400, 599]")
        if not isinstance(body, str):
            raise ValueError(f"the body of {text} is not text (JSON text is sent as JSON)")
        rendered = body
        if len(rendered) > MAX_BODY_CHARS:
            raise ValueError(f"the body of {text} is over {MAX_BODY_CHARS} characters")
        bodies.append((int(text), rendered))
    return tuple(sorted(bodies))


_NUMBER = (int, float)
BOOL = Kind("a boolean", (bool,), _bool, {"type": "boolean"})
INT = Kind("an integer", (int,), _int, {"type": "integer"})
FLOAT = Kind("a number", _NUMBER, _float, {"type": "number"})
STR = Kind("a string", (str,), _str, {"type": "string"})
OPTIONAL_FLOAT = Kind(
    "a number or none", (*_NUMBER, type(None)), _optional(_float), {"type": ["number", "null"]}
)
OPTIONAL_INT = Kind(
    "an integer or none", (int, type(None)), _optional(_int), {"type": ["integer", "null"]}
)
OPTIONAL_STR = Kind(
    "a string or none", (str, type(None)), _optional(_str), {"type": ["string", "null"]}
)
OPTIONAL_BODY = Kind(
    "text, a mapping or a list (JSON) or none",
    (str, type(None)),
    _optional(_body),
    {"type": ["string", "object", "array", "null"]},
)
HEADER_MAP = Kind(
    "a mapping of header name to value",
    (tuple,),
    _header_map,
    # A whole number is sent as its digits (YAML reads `Retry-After: 5` as one).
    {
        "type": "object",
        "maxProperties": MAX_HEADERS,
        "additionalProperties": {"type": ["string", "integer"], "maxLength": 1000},
    },
)
STATUS_BODIES = Kind(
    "a mapping of status to body",
    (tuple,),
    _status_bodies,
    {"type": "object", "additionalProperties": {"type": "string"}},
)
INT_LIST = Kind(
    "a list of integers", (tuple,), _int_list, {"type": "array", "items": {"type": "integer"}}
)
STR_LIST = Kind(
    "a list of strings", (tuple,), _str_list, {"type": "array", "items": {"type": "string"}}
)
RANGE = Kind(
    "a range min-max or none",
    (tuple, type(None)),
    _optional(_range),
    {"type": ["array", "null"], "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
)


# Limits of our own for request bodies, below where any Python stops (its parser at about
# 1,000 levels on 3.11 and further on 3.13; int() at sys.get_int_max_str_digits(), 4,300
# unless set, and never set below 640), so that what is refused, and the words that say
# so, are the same on every interpreter. A 400-digit number still reaches the field's
# own check, which names the field.
MAX_JSON_DEPTH = 100
MAX_JSON_DIGITS = 600
_TOO_DEEP = f"nested deeper than {MAX_JSON_DEPTH} levels"


def strict_json(raw: bytes | str) -> Any:
    """JSON as RFC 8259 has it, for request bodies: ``NaN`` and ``Infinity`` (which
    Python's json reads), nesting deeper than MAX_JSON_DEPTH and integers longer than
    MAX_JSON_DIGITS raise ValueError, whose text is ours (never the interpreter's)."""
    try:
        value = json.loads(raw, parse_constant=_not_a_json_number, parse_int=_json_int)
    except json.JSONDecodeError as error:
        raise ValueError(f"at line {error.lineno}, column {error.colno}") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"not UTF-8 at byte {error.start}") from None
    except RecursionError:
        raise ValueError(_TOO_DEEP) from None
    if _deeper_than(value, MAX_JSON_DEPTH):
        raise ValueError(_TOO_DEEP)
    return value


def _deeper_than(value: Any, most: int) -> bool:
    """Whether arrays and objects nest more than ``most`` levels; a walk by level, not by
    recursion, so a deep value cannot exhaust the stack here either."""
    level = [value] if isinstance(value, (list, dict)) else []
    for _ in range(most):
        level = [
            child
            for item in level
            for child in (item.values() if isinstance(item, dict) else item)
            if isinstance(child, (list, dict))
        ]
        if not level:
            return False
    return True


def _not_a_json_number(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number")


def _json_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_JSON_DIGITS:
        raise ValueError(f"an integer of {digits} digits; at most {MAX_JSON_DIGITS}")
    return int(text)


def shown(raw: Any, limit: int = 60) -> str:
    """``repr(raw)`` for a message, cut short: a hostile value must not flood it."""
    text = repr(raw)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def unknown_name(
    kind: str, name: str, choices: Iterable[str], path: str, *, near: str | None = None
) -> str:
    """``path: unknown <kind> 'nope'; did you mean 'nearest'? (choices: ...)``: ``near``
    (already written as the user should write it) or else the choice spelled closest."""
    known = list(choices)
    if near is None:
        close = difflib.get_close_matches(name, known, n=1)
        near = f"'{close[0]}'" if close else None
    hint = f"; did you mean {near}?" if near else ""
    return f"{path}: unknown {kind} {name!r}{hint} (choices: {', '.join(known)})"


def _some(items: Iterable[str], most: int = 3) -> str:
    """The first ``most`` items, and how many more: a long list must not flood a message."""
    listed = list(items)
    more = f" and {len(listed) - most} more" if len(listed) > most else ""
    return ", ".join(listed[:most]) + more


def _num(value: float) -> str:
    if isinstance(value, int) and abs(value) < 10**20:
        return str(value)  # exact: an integer bound reads as one
    try:
        return f"{value:g}"
    except OverflowError:  # an integer too large for a float
        return shown(value)


@attrs.frozen
class Between:
    low: float
    high: float

    def problem(self, value: Any) -> str | None:
        if value is None or self.low <= value <= self.high:
            return None
        return f"{_num(value)} is not in [{_num(self.low)}, {_num(self.high)}]"

    def describe(self) -> str:
        return f"[{_num(self.low)}, {_num(self.high)}]"

    def json_schema(self) -> dict[str, Any]:
        return {"minimum": self.low, "maximum": self.high}


@attrs.frozen
class AtLeast:
    low: float

    def problem(self, value: Any) -> str | None:
        if value is None or value >= self.low:
            return None
        return f"{_num(value)} is not >= {_num(self.low)}"

    def describe(self) -> str:
        return f">= {_num(self.low)}"

    def json_schema(self) -> dict[str, Any]:
        return {"minimum": self.low}


def not_of_kind(raw: Any, error: ValueError, check: Check | None) -> str:
    """``'lots' is not a number in [0.001, 1000000]``: a value of the wrong kind is told
    the setting's bound too, worded as for a value out of it."""
    problem = f"{shown(raw)} {error}"
    if isinstance(check, (Between, AtLeast, EachBetween)) and str(error).startswith("is not"):
        problem += f" {'in ' if isinstance(check, Between) else ''}{check.describe()}"
    return problem


@attrs.frozen
class OneOf:
    values: tuple[str, ...]

    def problem(self, value: Any) -> str | None:
        if value in self.values:
            return None
        return f"{shown(value)} is not one of {', '.join(self.values)}"

    def describe(self) -> str:
        return " \\| ".join(f"`{value}`" for value in self.values)

    def json_schema(self) -> dict[str, Any]:
        return {"enum": list(self.values)}


@attrs.frozen
class EachBetween:
    low: int
    high: int

    def problem(self, value: Any) -> str | None:
        bad = [item for item in value if not self.low <= item <= self.high]
        if not bad:
            return None
        return f"{_some(map(_num, bad))} not in [{self.low}, {self.high}]"

    def describe(self) -> str:
        return f"each in [{self.low}, {self.high}]"

    def json_schema(self) -> dict[str, Any]:
        return {"items": {"type": "integer", "minimum": self.low, "maximum": self.high}}


@attrs.frozen
class OrderedRange:
    low: float
    high: float

    def problem(self, value: Any) -> str | None:
        if value is None:
            return None
        lo, hi = value
        if lo < self.low:
            return f"{_num(lo)}-{_num(hi)} starts below {_num(self.low)}"
        if lo > hi:
            return f"{_num(lo)}-{_num(hi)} is not ordered (min <= max)"
        if hi > self.high:
            return f"{_num(lo)}-{_num(hi)} ends above {_num(self.high)}"
        return None

    def describe(self) -> str:
        return f"{_num(self.low)} <= min <= max <= {_num(self.high)}"

    def json_schema(self) -> dict[str, Any]:
        return {"items": {"type": "number", "minimum": self.low, "maximum": self.high}}


@attrs.frozen
class Networks:
    """Each entry an IP address or CIDR network."""

    def problem(self, value: Any) -> str | None:
        bad = []
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                bad.append(entry)
        if not bad:
            return None
        return f"{_some(map(shown, bad))} is not an IP address or CIDR network"

    def describe(self) -> str:
        return "IP addresses or CIDR networks"

    def json_schema(self) -> dict[str, Any]:
        # The characters of an address or network; whether it is one, the API checks.
        return {"items": {"type": "string", "pattern": "^[0-9A-Fa-f:.]+(/[0-9]{1,3})?$"}}
