"""Conditional chaos: rules that give matching requests their own config sections.

The design note's "conditional chaos (based on request properties)". Each rule has a
``match`` and section overrides; the first rule whose match fits a request supplies
those sections (merged over the global ones), and a request no rule matches gets the
global config::

    rules:
      - match: {path: "/api/payments/*", methods: [POST]}
        fault_injection: {enabled: true, http_error_probability: 0.5}
      - match: {path_regex: "/orders/[0-9]+", query: {debug: "*"}, user_agent: "okhttp/*",
                json_field: {path: order.kind, equals: express}, not: {methods: [GET]}}
        latency: {enabled: true, fixed_delay_ms: 300}
      - match: {cohort: {key: "header:X-User-Id", percent: 10}}
        fault_injection: {enabled: true, http_error_probability: 1.0}

A ``json_field`` match reads a JSON request body of at most 64 KiB (with its
Content-Length) and hands the app the same bytes. A ``cohort`` is a share of users
rather than of requests: a user's key, hashed with the config's seed, is in or out,
the same on every worker and host and after a restart.
"""

from __future__ import annotations

import fnmatch
import hashlib
import ipaddress
import math
import re
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
from werkzeug.http import parse_cookie

from ._kinds import shown
from .request import MAX_JSON_BODY

if TYPE_CHECKING:
    from .request import Request

__all__ = ["MAX_JSON_BODY", "Cohort", "Match", "Rule", "host_glob", "in_cohort", "parse_match"]

MATCH_KEYS = (
    "host",
    "path",
    "path_regex",
    "route",
    "methods",
    "header",
    "query",
    "user_agent",
    "json_field",
    "client_cidr",
    "body_size",
    "cohort",
    "not",
)
COHORT_KEYS = "header:<name>, cookie:<name>, query:<name> or ip"
# A header or cookie name: an HTTP token (RFC 9110 5.6.2).
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HASH_RANGE = 2**64  # a user's place: the hash's first 8 bytes, as a number below this


def in_cohort(value: str, seed: int | None, percent: float) -> bool:
    """Whether a user whose key has ``value`` is in the ``percent`` cohort of ``seed``.

    blake2b, not ``hash()``: Python salts that per process, and the answer must be the
    same on every worker, host and restart. Each user has one place in [0, 1) per seed,
    so a cohort holds the users placed below ``percent``: a larger percent keeps every
    user of a smaller one (a ramp from 10 to 20 adds users, it never swaps them)."""
    key = b"" if seed is None else str(seed).encode()
    digest = hashlib.blake2b(value.encode("utf-8", "surrogateescape"), digest_size=8, key=key)
    return int.from_bytes(digest.digest(), "big") < percent / 100.0 * _HASH_RANGE


@attrs.frozen
class Cohort:
    """A stable share of users, each known by a key the request carries: a header, a
    cookie, a query parameter or the client address. A request without it (or with it
    empty) is in no cohort."""

    source: str  # header, cookie, query or ip
    name: str  # the header's, cookie's or parameter's name ("" for ip)
    percent: float

    @property
    def key(self) -> str:
        return self.source if self.source == "ip" else f"{self.source}:{self.name}"

    def value_of(self, request: Request) -> str | None:
        """The user's key in ``request``, or None when it has none."""
        if self.source == "header":
            value = request.header(self.name)
        elif self.source == "cookie":
            value = parse_cookie(request.header("Cookie") or "").get(self.name)
        elif self.source == "query":
            value = next(iter(urllib.parse.parse_qs(request.query).get(self.name, ())), None)
        else:
            value = request.client_address
        return value or None

    def holds(self, request: Request, seed: int | None) -> bool:
        value = self.value_of(request)
        return value is not None and in_cohort(value, seed, self.percent)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "percent": self.percent}


@attrs.frozen
class Match:
    """What a request must have for a rule to apply; every given condition must hold."""

    path: str | None = None  # glob on the path: /api/*/orders
    # Glob on the Host header; an outbound call's is always host:port (payments.internal:443)
    host: str | None = None
    route: str | None = None  # the route template, e.g. /users/<int:id>
    methods: tuple[str, ...] = ()
    header: str | None = None  # present (with header_equals: equal to it)
    header_equals: str | None = None
    client_cidr: tuple[str, ...] = ()
    body_size: tuple[int, int] | None = None  # Content-Length in [min, max]
    path_regex: re.Pattern[str] | None = None  # the whole path must match
    query: tuple[tuple[str, str], ...] = ()  # each parameter with this value ("*": any)
    user_agent: str | None = None  # glob on User-Agent
    json_field: tuple[str, ...] = ()  # a dotted path into a JSON body...
    json_equals: Any = None  # ...whose value must equal this (None: be present)
    cohort: Cohort | None = None  # the user's key puts them in (with the config's seed)
    negated: Match | None = None  # "not": a request this matches is not matched

    def matches(self, request: Request, seed: int | None = None) -> bool:
        """Whether ``request`` fits; ``seed`` (the config's) places users in cohorts."""
        if not self._matches(request):
            return False
        if self.cohort is not None and not self.cohort.holds(request, seed):
            return False
        return self.negated is None or not self.negated.matches(request, seed)

    def _matches(self, request: Request) -> bool:
        if self.host is not None and not fnmatch.fnmatchcase(
            (request.header("Host") or "").lower(), host_glob(self.host)
        ):
            return False
        path = request.path
        if self.path is not None and not fnmatch.fnmatchcase(path, self.path):
            return False
        if self.path_regex is not None and not self.path_regex.fullmatch(path):
            return False
        if self.query and not _query_has(request.query, self.query):
            return False
        if self.user_agent is not None and not fnmatch.fnmatchcase(
            request.header("User-Agent") or "", self.user_agent
        ):
            return False
        if self.json_field and not _json_field_is(request, self.json_field, self.json_equals):
            return False
        if self.methods and request.method not in self.methods:
            return False
        if self.header is not None:
            value = request.header(self.header)
            if value is None or (self.header_equals is not None and value != self.header_equals):
                return False
        if self.body_size is not None:
            try:
                size = int(request.header("Content-Length") or 0)
            except ValueError:
                size = 0
            if not self.body_size[0] <= size <= self.body_size[1]:
                return False
        if self.client_cidr and not _in_networks(request.client_address, self.client_cidr):
            return False
        return self.route is None or request.route == self.route

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for key in ("host", "path", "route"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        if self.methods:
            data["methods"] = list(self.methods)
        if self.header is not None:
            data["header"] = (
                {"name": self.header, "equals": self.header_equals}
                if self.header_equals is not None
                else self.header
            )
        if self.client_cidr:
            data["client_cidr"] = list(self.client_cidr)
        if self.body_size is not None:
            data["body_size"] = list(self.body_size)
        if self.path_regex is not None:
            data["path_regex"] = self.path_regex.pattern
        if self.query:
            data["query"] = dict(self.query)
        if self.user_agent is not None:
            data["user_agent"] = self.user_agent
        if self.json_field:
            field = {"path": ".".join(self.json_field)}
            data["json_field"] = (
                field if self.json_equals is None else {**field, "equals": self.json_equals}
            )
        if self.cohort is not None:
            data["cohort"] = self.cohort.to_dict()
        if self.negated is not None:
            data["not"] = self.negated.to_dict()
        return data


def host_glob(pattern: str) -> str:
    """A host glob as fnmatch reads it: lower case, an IPv6 literal's ``[`` a bracket."""
    pattern = pattern.lower()
    return "[[]" + pattern[1:] if pattern.startswith("[") and "]:" in pattern else pattern


def _query_has(query_string: str, wanted: tuple[tuple[str, str], ...]) -> bool:
    params = urllib.parse.parse_qs(query_string, keep_blank_values=True)
    return all(
        name in params and (value == "*" or value in params[name]) for name, value in wanted
    )


def _json_field_is(request: Request, path: tuple[str, ...], equals: Any) -> bool:
    """Whether the JSON body has ``path`` (equal to ``equals`` unless None). The body is
    read once (up to MAX_JSON_BODY, with a Content-Length) and put back for the app."""
    body = request.json_body()
    for key in path:
        if not isinstance(body, Mapping) or key not in body:
            return False
        body = body[key]
    return equals is None or body == equals


def _in_networks(address: str, networks: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(network, strict=False) for network in networks)


@attrs.frozen
class Rule:
    """A match, the sections (parsed values) it overrides, and the top-level settings
    it gives values of its own (``max_active_faults``)."""

    match: Match
    overrides: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]
    settings: tuple[tuple[str, Any], ...] = ()

    def gives(self, name: str) -> bool:
        """Whether the rule gives the top-level setting ``name`` a value of its own (a
        rule with a ``max_active_faults`` has a pool of active faults of its own)."""
        return any(n == name for n, _ in self.settings)

    def has_section(self, section: str) -> bool:
        """Whether the rule gives ``section`` values of its own (a rule with a
        ``circuit_breaker`` section has a breaker of its own)."""
        return any(s == section for s, _ in self.overrides)

    def sets(self, section: str, name: str) -> bool:
        """Whether the rule gives ``section.name`` a value of its own (a rule without a
        fault script of its own plays the global one)."""
        return any(
            s == section and any(n == name for n, _ in fields) for s, fields in self.overrides
        )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"match": self.match.to_dict(), **dict(self.settings)}
        for section, fields in self.overrides:
            data[section] = {
                name: list(value) if isinstance(value, tuple) else value for name, value in fields
            }
        return data


def parse_match(raw: Any, path: str) -> tuple[Match | None, list[str]]:
    """A Match from its mapping, or the problems with it (each with its path)."""
    if not isinstance(raw, Mapping) or not raw:
        return None, [
            f"{path}: {shown(raw)} is not a non-empty mapping of {', '.join(MATCH_KEYS)}"
        ]
    problems = [
        f"{path}.{key}: unknown key; allowed: {', '.join(MATCH_KEYS)}"
        for key in raw
        if key not in MATCH_KEYS
    ]
    values: dict[str, Any] = {}
    for key in ("host", "path", "route"):
        if key in raw:
            if isinstance(raw[key], str) and raw[key]:
                values[key] = raw[key].lower() if key == "host" else raw[key]
            else:
                problems.append(f"{path}.{key}: {shown(raw[key])} is not a non-empty string")
    if "methods" in raw:
        methods = [raw["methods"]] if isinstance(raw["methods"], str) else raw["methods"]
        if isinstance(methods, list) and all(isinstance(m, str) for m in methods):
            values["methods"] = tuple(m.upper() for m in methods)
        else:
            problems.append(f"{path}.methods: {shown(raw['methods'])} is not a list of methods")
    if "header" in raw:
        header = raw["header"]
        if isinstance(header, str) and header:
            values["header"] = header
        elif (
            isinstance(header, Mapping)
            and isinstance(header.get("name"), str)
            and set(header) <= {"name", "equals"}
            and isinstance(header.get("equals", ""), str)
        ):
            values["header"] = header["name"]
            values["header_equals"] = header.get("equals")
        else:
            problems.append(f"{path}.header: {shown(header)} is not a name or {{name, equals}}")
    if "client_cidr" in raw:
        cidrs = [raw["client_cidr"]] if isinstance(raw["client_cidr"], str) else raw["client_cidr"]
        try:
            values["client_cidr"] = tuple(
                str(ipaddress.ip_network(c, strict=False)) for c in cidrs
            )
        except (TypeError, ValueError):
            problems.append(
                f"{path}.client_cidr: {shown(raw['client_cidr'])} is not a CIDR network (or list)"
            )
    if "body_size" in raw:
        size = raw["body_size"]
        if (
            isinstance(size, (list, tuple))
            and len(size) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in size)
            and size[0] <= size[1]
        ):
            values["body_size"] = (size[0], size[1])
        else:
            problems.append(
                f"{path}.body_size: {shown(size)} is not [min, max] bytes with min <= max"
            )
    if "path_regex" in raw:
        pattern = raw["path_regex"]
        try:
            if not isinstance(pattern, str) or not pattern or len(pattern) > 500:
                raise re.error("not a string of 1-500 characters")
            values["path_regex"] = re.compile(pattern)
        except re.error as error:
            problems.append(f"{path}.path_regex: {shown(pattern)} is not a regex ({error})")
    if "query" in raw:
        query = raw["query"]
        if (
            isinstance(query, Mapping)
            and query
            and all(
                isinstance(k, str) and k and isinstance(v, (str, int)) and not isinstance(v, bool)
                for k, v in query.items()
            )
        ):
            values["query"] = tuple((k, str(v)) for k, v in query.items())
        else:
            problems.append(
                f"{path}.query: {shown(query)} is not a mapping of parameter to value ('*': any)"
            )
    if "user_agent" in raw:
        agent = raw["user_agent"]
        if isinstance(agent, str) and agent:
            values["user_agent"] = agent
        else:
            problems.append(f"{path}.user_agent: {shown(agent)} is not a non-empty glob")
    if "json_field" in raw:
        field = raw["json_field"]
        if isinstance(field, str):
            field = {"path": field}
        equals = field.get("equals") if isinstance(field, Mapping) else None
        if (
            isinstance(field, Mapping)
            and set(field) <= {"path", "equals"}
            and isinstance(field.get("path"), str)
            and all(field["path"].split("."))
            and (equals is None or isinstance(equals, (str, int, float, bool)))
        ):
            values["json_field"] = tuple(field["path"].split("."))
            values["json_equals"] = equals
        else:
            problems.append(
                f"{path}.json_field: {shown(raw['json_field'])} is not a dotted path or "
                "{path, equals} (equals: a string, number or boolean)"
            )
    if "cohort" in raw:
        cohort, cohort_problems = _parse_cohort(raw["cohort"], f"{path}.cohort")
        problems.extend(cohort_problems)
        values["cohort"] = cohort
    if "not" in raw:
        negated, negated_problems = parse_match(raw["not"], f"{path}.not")
        problems.extend(negated_problems)
        values["negated"] = negated
    if problems:
        return None, problems
    return Match(**values), []


def _parse_cohort(raw: Any, path: str) -> tuple[Cohort | None, list[str]]:
    """A Cohort from ``{key, percent}``, or the problems with it (each with its path)."""
    if not isinstance(raw, Mapping):
        return None, [f"{path}: {shown(raw)} is not a mapping {{key, percent}}"]
    problems = [
        f"{path}.{name}: unknown key; allowed: key, percent"
        for name in raw
        if name not in ("key", "percent")
    ]
    if "key" not in raw:
        problems.append(f"{path}.key: missing; allowed: {COHORT_KEYS}")
    if "percent" not in raw:
        problems.append(f"{path}.percent: missing; allowed: a number in [0, 100]")
    key = raw.get("key")
    parsed = _cohort_key(key)
    if "key" in raw and parsed is None:
        problems.append(f"{path}.key: {shown(key)} is not {COHORT_KEYS}")
    percent = raw.get("percent")
    if "percent" in raw and (
        not isinstance(percent, (int, float))
        or isinstance(percent, bool)
        or not math.isfinite(percent)
        or not 0 <= percent <= 100
    ):
        problems.append(f"{path}.percent: {shown(percent)} is not a number in [0, 100]")
    if problems:
        return None, problems
    assert parsed is not None and isinstance(percent, (int, float))  # checked above
    return Cohort(*parsed, float(percent)), []


def _cohort_key(key: Any) -> tuple[str, str] | None:
    """``header:X-User-Id`` -> ("header", "X-User-Id"); ``ip`` -> ("ip", ""); None
    when it is none of those (a header or cookie name is an HTTP token)."""
    if key == "ip":
        return "ip", ""
    source, _, name = key.partition(":") if isinstance(key, str) else ("", "", "")
    if source in ("header", "cookie") and _TOKEN.fullmatch(name):
        return source, name
    if source == "query" and name:
        return source, name
    return None
