"""The response annotation header that says what chaos a request got."""

from __future__ import annotations

ANNOTATION_HEADER = "X-Mockforge-Chaos"
REQUEST_ID_HEADER = "X-Mockforge-Request-Id"
# The request id shared by the response header, the log lines and the recorder.
REQUEST_ID_KEY = "mockforge.request_id"


def add_annotation(headers: list[tuple[str, str]], part: str) -> list[tuple[str, str]]:
    """``headers`` with ``part`` appended to the annotation (added if there was none)."""
    added = [
        (name, f"{value}, {part}" if name == ANNOTATION_HEADER else value)
        for name, value in headers
    ]
    if not any(name == ANNOTATION_HEADER for name, _ in headers):
        added.append((ANNOTATION_HEADER, part))
    return added
