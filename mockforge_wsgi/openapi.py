"""The OpenAPI 3.1 document of the management API, built from its route table.

A room of its own because it is a second reading of the same declarations: the routes
(``api.ROUTES``) for the paths, the settings (``config.iter_settings``) for the schemas.
It knows no Flask; ``api`` serves what it builds at ``/openapi.json``.

Usage::

    document = build_document("/api/chaos", ROUTES)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from ._kinds import Check, Kind
from ._sections import URL_SEGMENTS
from ._version import __version__
from .config import SECTION_CLASSES, iter_settings
from .config_declarations import INBOUND_ONLY_CORRUPTIONS, INBOUND_ONLY_FAULTS
from .engine import MAX_DURATION_S

__all__ = ["BODY_TYPE", "BREAKER_ACTIONS", "DocumentedRoute", "build_document"]

# A body of any other type is refused: a page on another site can send text/plain or a
# form without asking the browser first, but application/json only after a preflight.
BODY_TYPE = "application/json"
BREAKER_ACTIONS = ("open", "close", "reset")


class DocumentedRoute(Protocol):
    """What the document reads of a route (``api.Route``)."""

    @property
    def rule(self) -> str: ...
    @property
    def methods(self) -> tuple[str, ...]: ...
    @property
    def summary(self) -> str: ...
    @property
    def body(self) -> str | None: ...
    @property
    def media_type(self) -> str: ...
    @property
    def query(self) -> Mapping[str, Mapping[str, Any]] | None: ...


def _schema_of(kind: Kind, check: Check | None, help: str) -> dict[str, Any]:
    """A setting's JSON schema: its type, the range or choices its check allows."""
    return {
        **kind.json_type,
        **(check.json_schema() if check is not None else {}),
        "description": help,
    }


def _schema_name(path: tuple[str, ...]) -> str:
    """A section's schema name: its class's (``LatencyConfig``), or for a plugin's
    ``PluginExpireSessionConfig``."""
    if len(path) == 1:
        return str(SECTION_CLASSES[path[0]].__name__)
    if path[0] == "outbound":  # chaos.outbound.latency: OutboundLatencyConfig
        return "Outbound" + "".join(part.title().replace("_", "") for part in path[1:]) + "Config"
    return "Plugin" + "".join(part.title().replace("_", "") for part in path[1:]) + "Config"


def _schemas() -> dict[str, Any]:
    """JSON schemas of the config and its sections, from the setting declarations."""
    sections: dict[tuple[str, ...], dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for info in iter_settings():
        schema = _schema_of(info.kind, info.check, info.field.metadata["help"])
        if info.path[0] == "outbound":  # a call takes no fault of a server's connection
            if info.path[-1] in INBOUND_ONLY_FAULTS:
                schema["maximum"] = 0
            elif info.path[-1] == "corruption":
                schema["enum"] = [c for c in schema["enum"] if c not in INBOUND_ONLY_CORRUPTIONS]
        if len(info.path) == 1:
            top[info.path[0]] = schema
        else:  # a section's, or a plugin's (chaos.plugins.<name>.<field>)
            sections.setdefault(info.path[:-1], {})[info.path[-1]] = schema
    schemas: dict[str, Any] = {}
    for path, fields in sections.items():
        schemas[_schema_name(path)] = {
            "type": "object",
            "additionalProperties": False,
            "properties": fields,
        }
        while path:  # each section's place in the one above it
            parent, ref = path[:-1], {"$ref": f"#/components/schemas/{_schema_name(path)}"}
            if not parent:
                top[path[0]] = ref
                break
            above = schemas.setdefault(
                _schema_name(parent),
                {"type": "object", "additionalProperties": False, "properties": {}},
            )
            above["properties"][path[-1]] = ref
            path = parent
    schemas["ChaosConfig"] = {"type": "object", "additionalProperties": False, "properties": top}
    scenario_properties: dict[str, Any] = {
        "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,100}$"},
        "description": {"type": "string"},
        "override": {"type": "boolean"},
    }
    for attribute in URL_SEGMENTS.values():
        name = SECTION_CLASSES[attribute].__name__
        scenario_properties[attribute] = {"$ref": f"#/components/schemas/{name}"}
    schemas["Scenario"] = {
        "type": "object",
        "required": ["name"],
        "properties": scenario_properties,
    }
    schemas["Activation"] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            # null: not given (runs until stopped; no ramp).
            "duration_s": {
                "type": ["number", "null"],
                "exclusiveMinimum": 0,
                "maximum": MAX_DURATION_S,
            },
            "ramp_s": {
                "type": ["number", "null"],
                "exclusiveMinimum": 0,
                "maximum": MAX_DURATION_S,
            },
        },
    }
    schemas["Schedule"] = {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["scenario"],
            "additionalProperties": False,
            "properties": {
                "start_s": {"type": "number", "minimum": 0, "maximum": MAX_DURATION_S},
                "scenario": {"type": "string"},
                "duration_s": {
                    "type": ["number", "null"],
                    "exclusiveMinimum": 0,
                    "maximum": MAX_DURATION_S,
                },
            },
        },
    }
    schemas["BreakerAction"] = {
        "type": "object",
        "required": ["action"],
        "additionalProperties": False,
        "properties": {"action": {"enum": list(BREAKER_ACTIONS)}},
    }
    schemas["Problems"] = {
        "type": "object",
        "properties": {
            "error": {"type": "string"},
            "problems": {"type": "array", "items": {"type": "string"}},
        },
    }
    return schemas


def build_document(prefix: str, routes: Iterable[DocumentedRoute]) -> dict[str, Any]:
    """OpenAPI 3.1 for ``routes`` under ``prefix``: paths from the routes, schemas from
    the setting declarations."""
    problems = {"application/json": {"schema": {"$ref": "#/components/schemas/Problems"}}}
    paths: dict[str, Any] = {}
    for route in routes:
        path = prefix + route.rule.replace("<", "{").replace(">", "}")
        operations = paths.setdefault(path, {})
        for method in route.methods:
            operation: dict[str, Any] = {
                "summary": route.summary,
                "responses": {
                    "200": {"description": "OK", "content": {route.media_type: {}}},
                    "400": {"description": "Invalid input, nothing changed", "content": problems},
                    "401": {"description": "Admin token missing or wrong", "content": problems},
                    "403": {
                        "description": "Refused: a cross-site request (Origin, Sec-Fetch-Site) "
                        "or a Host this server does not answer to (--allowed-origin, "
                        "--allowed-host)",
                        "content": problems,
                    },
                    "404": {
                        "description": "Unknown scenario; no recorder (verdicts, report)",
                        "content": problems,
                    },
                    "413": {"description": "Body over 64 KB", "content": problems},
                },
            }
            if route.query:  # a longer query than the schema allows may not reach us
                operation["responses"]["414"] = {
                    "description": "Request line over the server's limit (gunicorn: 4094 bytes)"
                }
                operation["parameters"] = [
                    {"name": name, "in": "query", "required": False, "schema": dict(schema)}
                    for name, schema in route.query.items()
                ]
            for name in re.findall(r"\{(\w+)\}", path):
                operation["parameters"] = [
                    {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                ]
            if method == "POST" and route.rule == "/scenarios":  # defining one creates it
                operation["responses"]["201"] = operation["responses"].pop("200")
                operation["responses"]["201"]["description"] = "Created"
            if method != "GET":  # a body of any other type than JSON is refused
                operation["responses"]["415"] = {
                    "description": f"A body that is not {BODY_TYPE}",
                    "content": problems,
                }
            if method in ("PUT", "PATCH", "POST") and route.body:
                operation["requestBody"] = {
                    "required": method != "POST" or route.rule == "/scenarios",
                    "content": {
                        "application/json": {
                            "schema": {"$ref": f"#/components/schemas/{route.body}"}
                        }
                    },
                }
            operations[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "mockforge chaos management API", "version": __version__},
        "paths": paths,
        "components": {"schemas": _schemas()},
    }
