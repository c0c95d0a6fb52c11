"""Headers of ours: the annotation that says what chaos a request got; the admin token."""

from __future__ import annotations

import hmac
import itertools
import os
from collections.abc import Iterator
from typing import Literal

ANNOTATION_HEADER = "X-Mockforge-Chaos"
REQUEST_ID_HEADER = "X-Mockforge-Request-Id"
# The request id shared by the response header, the log lines and the recorder.
REQUEST_ID_KEY = "mockforge.request_id"
# A test's own tag on its requests (the pytest plugin's helpers send it): verdicts per test.
TEST_ID_HEADER = "X-Mockforge-Test-Id"
TEST_ID_KEY = "HTTP_X_MOCKFORGE_TEST_ID"


def new_request_id() -> str:
    """16 hex digits, unique per server: this process's random prefix and its count.

    A uuid4 costs a system call and an object per request (~1.5 us); a count does not.
    Forked workers draw a new prefix (``os.register_at_fork``), so their ids differ.
    """
    return next(_ids)


def _new_prefix() -> None:
    global _ids
    # The ids themselves, made in C: the prefix and a count of 8 hex digits, from 0 to
    # 2**32 - 1 and round again (a range repeated, never stored), as one 64-bit number's
    # 8 bytes in hex: fewer than half the instructions of formatting a template (~1,100,
    # not ~2,800, under cachegrind).
    # A 31-bit prefix: ids stay below 2**63, where range() counts in C longs (above,
    # in Python ints: ~1,100 more instructions an id).
    prefix = int.from_bytes(os.urandom(4), "big") >> 1 << 32
    counts = itertools.chain.from_iterable(itertools.repeat(range(prefix, prefix + (1 << 32))))
    big: Iterator[Literal["big"]] = itertools.repeat("big")
    _ids = map(bytes.hex, map(int.to_bytes, counts, itertools.repeat(8), big))


_ids: Iterator[str] = iter(())
_new_prefix()
os.register_at_fork(after_in_child=_new_prefix)


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
