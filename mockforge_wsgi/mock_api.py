"""The mock API that ``mockforge serve`` answers with: YAML routes plus built-ins.

Routes come from a YAML ``routes:`` list; paths use werkzeug converters::

    routes:
      - method: GET
        path: /users/<int:id>
        status: 200
        headers: {X-Source: mock}
        json: {id: 1, name: Ada}
        chaos:                       # optional: sections for this route only
          latency: {enabled: true, fixed_delay_ms: 300}

Built-ins (the design note's examples call them): ``GET /api/test``, ``/api/echo``
(any method: what was sent), ``GET /health``, ``GET /api/bytes/<n>`` (n bytes, streamed).
Unknown paths get a 404 with a JSON body.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import attrs
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from ._kinds import shown
from .config import RULES, ConfigError

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["MockApp", "MockRoute", "parse_routes"]

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
ROUTE_KEYS = ("method", "path", "status", "headers", "json", "text", "chaos")
BYTES_CHUNK = 16 * 1024
MAX_BYTES = 1024**3  # /api/bytes/<n> serves at most 1 GiB


@attrs.frozen
class MockRoute:
    """One canned answer."""

    method: str
    path: str
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    content_type: str = "application/json"
    chaos: Mapping[str, Any] | None = attrs.field(default=None, eq=False, hash=False)


def parse_routes(raw: Any, where: str = "routes") -> tuple[MockRoute, ...]:
    """Routes from the YAML list, or one ConfigError listing every problem by path."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError([f"{where}: {shown(raw)} is not a list of routes"])
    problems: list[str] = []
    routes = []
    for index, item in enumerate(raw):
        path = f"{where}[{index}]"
        if not isinstance(item, Mapping):
            problems.append(f"{path}: {shown(item)} is not a mapping")
            continue
        problems += [
            f"{path}.{key}: unknown key; allowed: {', '.join(ROUTE_KEYS)}"
            for key in item
            if key not in ROUTE_KEYS
        ]
        method = str(item.get("method", "GET")).upper()
        if method not in METHODS:
            problems.append(
                f"{path}.method: {shown(item.get('method'))} is not one of {', '.join(METHODS)}"
            )
        url = item.get("path")
        if not isinstance(url, str) or not url.startswith("/"):
            problems.append(f"{path}.path: {shown(url)} is not a path starting with /")
            url = "/"
        else:
            try:
                Map([Rule(url)]).bind("localhost")
            except (ValueError, LookupError) as error:
                problems.append(f"{path}.path: {shown(url)} is not a valid route ({error})")
        status = item.get("status", 200)
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            problems.append(f"{path}.status: {shown(status)} is not in [100, 599]")
        headers = item.get("headers") or {}
        if not isinstance(headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, (str, int, float)) for k, v in headers.items()
        ):
            problems.append(f"{path}.headers: {shown(headers)} is not a mapping of name to value")
            headers = {}
        if "json" in item and "text" in item:
            problems.append(f"{path}: give json or text, not both")
        if "text" in item:
            if not isinstance(item["text"], str):
                problems.append(f"{path}.text: {shown(item['text'])} is not a string")
            body, content_type = str(item["text"]).encode(), "text/plain; charset=utf-8"
        else:
            body, content_type = json.dumps(item.get("json", {})).encode(), "application/json"
        chaos = item.get("chaos")
        if chaos is not None:
            problems += _chaos_problems(chaos, f"{path}.chaos")
        routes.append(
            MockRoute(
                method,
                url,
                status if isinstance(status, int) else 200,
                tuple((str(k), str(v)) for k, v in headers.items()),
                body,
                content_type,
                chaos,
            )
        )
    if problems:
        raise ConfigError(problems)
    return tuple(routes)


def _chaos_problems(chaos: Any, path: str) -> list[str]:
    """A route's chaos sections, checked like a rule's (problems named by path)."""
    if not isinstance(chaos, Mapping) or "match" in chaos:
        return [f"{path}: {shown(chaos)} is not a mapping of config sections"]
    try:
        RULES.parse([{"match": {"path": "/"}, **chaos}])
    except ConfigError as error:
        return [path + problem.removeprefix("[0]") for problem in error.problems]
    return []


def route_rules(routes: Iterable[MockRoute]) -> list[dict[str, Any]]:
    """Per-route chaos overrides as conditional-chaos rules (matched on route and method)."""
    return [
        {"match": {"route": route.path, "methods": [route.method]}, **route.chaos}
        for route in routes
        if route.chaos
    ]


class MockApp:
    """A plain WSGI app serving the routes (first match wins), then the built-ins.

    It exposes ``url_map``, so per-endpoint rate limits key on its route templates.
    """

    def __init__(self, routes: Iterable[MockRoute] = ()) -> None:
        self.routes = tuple(routes)
        rules = [
            Rule(route.path, endpoint=index, methods=[route.method])
            for index, route in enumerate(self.routes)
        ]
        rules += [
            Rule("/api/test", endpoint="test", methods=["GET"]),
            Rule("/api/echo", endpoint="echo", methods=list(METHODS)),
            Rule("/health", endpoint="health", methods=["GET"]),
            Rule("/api/bytes/<int:n>", endpoint="bytes", methods=["GET"]),
        ]
        self.url_map = Map(rules, strict_slashes=False)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        try:
            endpoint, args = self.url_map.bind_to_environ(environ).match()
        except HTTPException as error:
            response = _json_response(
                {"error": (error.name or "error").lower(), "path": request.path},
                error.code or 500,
            )
            return response(environ, start_response)
        if isinstance(endpoint, int):
            route = self.routes[endpoint]
            response = Response(route.body, status=route.status, content_type=route.content_type)
            for name, value in route.headers:
                response.headers[name] = value
        elif endpoint == "test":
            response = _json_response({"message": "Hello from mockforge", "path": request.path})
        elif endpoint == "echo":
            body = request.get_data(as_text=True)
            response = _json_response(
                {
                    "method": request.method,
                    "path": request.path,
                    "args": request.args.to_dict(flat=False),
                    "headers": dict(request.headers),
                    "body": body,
                    "json": request.get_json(silent=True),
                }
            )
        elif endpoint == "health":
            response = _json_response({"status": "ok"})
        elif args["n"] > MAX_BYTES:  # refused, not cut short: the client asked for n
            problem = f"n: {args['n']} is more than {MAX_BYTES} (1 GiB), the most it serves"
            response = _json_response(
                {"error": "bad request", "path": request.path, "problems": [problem]}, 400
            )
        else:
            size = args["n"]
            response = Response(_zeros(size), content_type="application/octet-stream")
            response.headers["Content-Length"] = str(size)
        return response(environ, start_response)


def _json_response(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data), status=status, content_type="application/json")


def _zeros(size: int) -> Iterator[bytes]:
    chunk = b"x" * BYTES_CHUNK
    while size > 0:
        step = min(size, BYTES_CHUNK)
        size -= step
        yield chunk[:step]
