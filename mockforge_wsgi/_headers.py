"""Headers of ours: the annotation that says what chaos a request got; the admin token."""

from __future__ import annotations

import hmac

ANNOTATION_HEADER = "X-Mockforge-Chaos"
REQUEST_ID_HEADER = "X-Mockforge-Request-Id"
# The request id shared by the response header, the log lines and the recorder.
REQUEST_ID_KEY = "mockforge.request_id"


def bearer_matches(authorization: str, token: str) -> bool:
    """Whether an ``Authorization`` value carries ``token`` as a Bearer token (the scheme
    in any case, RFC 9110 section 11.1; the token compared in constant time)."""
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


def add_annotation(headers: list[tuple[str, str]], part: str) -> list[tuple[str, str]]:
    """``headers`` with ``part`` appended to the annotation (added if there was none)."""
    added = [
        (name, f"{value}, {part}" if name == ANNOTATION_HEADER else value)
        for name, value in headers
    ]
    if not any(name == ANNOTATION_HEADER for name, _ in headers):
        added.append((ANNOTATION_HEADER, part))
    return added
