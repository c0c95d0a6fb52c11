"""Answers of our own (not the app's): a body with a truthful Content-Length."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from werkzeug.http import HTTP_STATUS_CODES

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse

JSON = "application/json"


def answer(
    start_response: StartResponse,
    status: int,
    body: bytes,
    content_type: str = JSON,
    headers: Iterable[tuple[str, str]] = (),
) -> Iterable[bytes]:
    """Start a response of ours and return its body: status line, Content-Type,
    Content-Length, then ``headers``."""
    start_response(
        status_line(status),
        [("Content-Type", content_type), ("Content-Length", str(len(body))), *headers],
    )
    return [body]


def answer_json(
    start_response: StartResponse,
    status: int,
    data: Any,
    headers: Iterable[tuple[str, str]] = (),
) -> Iterable[bytes]:
    """``data`` as a JSON answer."""
    return answer(start_response, status, json.dumps(data).encode(), JSON, headers)


def status_line(status: int) -> str:
    """``503 Service Unavailable``; a code werkzeug does not name is an injected fault."""
    return f"{status} {HTTP_STATUS_CODES.get(status, 'Injected Fault')}"
