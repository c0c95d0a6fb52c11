"""The response annotation header that says what chaos a request got."""

from __future__ import annotations

ANNOTATION_HEADER = "X-Mockforge-Chaos"


def add_annotation(headers: list[tuple[str, str]], part: str) -> list[tuple[str, str]]:
    """``headers`` with ``part`` appended to the annotation (added if there was none)."""
    added = [
        (name, f"{value}, {part}" if name == ANNOTATION_HEADER else value)
        for name, value in headers
    ]
    if not any(name == ANNOTATION_HEADER for name, _ in headers):
        added.append((ANNOTATION_HEADER, part))
    return added
