"""Conditional chaos: rules that give matching requests their own config sections.

The design note's "conditional chaos (based on request properties)". Each rule has a
``match`` and section overrides; the first rule whose match fits a request supplies
those sections (merged over the global ones), and a request no rule matches gets the
global config::

    rules:
      - match: {path: "/api/payments/*", methods: [POST]}
        fault_injection: {enabled: true, http_error_probability: 0.5}
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from ._kinds import shown

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

__all__ = ["Match", "Rule", "parse_match"]

MATCH_KEYS = ("path", "route", "methods", "header", "client_cidr", "body_size")


@attrs.frozen
class Match:
    """What a request must have for a rule to apply; every given condition must hold."""

    path: str | None = None  # glob on the path: /api/*/orders
    route: str | None = None  # the route template, e.g. /users/<int:id>
    methods: tuple[str, ...] = ()
    header: str | None = None  # present (with header_equals: equal to it)
    header_equals: str | None = None
    client_cidr: tuple[str, ...] = ()
    body_size: tuple[int, int] | None = None  # Content-Length in [min, max]

    def matches(self, environ: WSGIEnvironment, route_of: Callable[[Any], str]) -> bool:
        if self.path is not None and not fnmatch.fnmatchcase(
            environ.get("PATH_INFO") or "/", self.path
        ):
            return False
        if self.methods and environ.get("REQUEST_METHOD", "GET").upper() not in self.methods:
            return False
        if self.header is not None:
            value = environ.get("HTTP_" + self.header.upper().replace("-", "_"))
            if value is None or (self.header_equals is not None and value != self.header_equals):
                return False
        if self.body_size is not None:
            try:
                size = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                size = 0
            if not self.body_size[0] <= size <= self.body_size[1]:
                return False
        if self.client_cidr and not _in_networks(environ.get("REMOTE_ADDR", ""), self.client_cidr):
            return False
        return self.route is None or route_of(environ) == self.route

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for key in ("path", "route"):
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
        return data


def _in_networks(address: str, networks: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(network, strict=False) for network in networks)


@attrs.frozen
class Rule:
    """A match and the sections (parsed values) it overrides."""

    match: Match
    overrides: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"match": self.match.to_dict()}
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
    for key in ("path", "route"):
        if key in raw:
            if isinstance(raw[key], str) and raw[key]:
                values[key] = raw[key]
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
    if problems:
        return None, problems
    return Match(**values), []
