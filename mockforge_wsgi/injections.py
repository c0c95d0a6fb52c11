"""The names of what we inject: one name per injection, everywhere a user reads one.

The store's counters (``/status``, ``/stats``), the ``mockforge_chaos_injections_total``
metric, the recorder, trace events and log lines all name an injection by a key of
:data:`INJECTION_TYPES`. ``plan.py`` builds :class:`Injection` values from a Plan and
``outcome.py`` adds what applying found; both import the names from here, so neither
imports the other at run time.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["INJECTION_TYPES", "Injection"]

LATENCY = "latency"
HTTP_ERROR = "http_error"
TIMEOUT = "timeout"
CONNECTION_RESET = "connection_reset"
PARTIAL_RESPONSE = "partial_response"
AFTER_APP = "after_app"
CORRUPTED = "corrupted"
STREAM_CUT = "stream_cut"
UPLOAD_RESET = "upload_reset"
RATE_LIMITED = "rate_limited"
REQUEST_DROPPED = "request_dropped"
BANDWIDTH_THROTTLED = "bandwidth_throttled"
BODY_DRIBBLED = "body_dribbled"
PACKET_LOSS = "packet_loss"
CONNECTION_LIMITED = "connection_limited"
CONNECTION_TIMEOUT = "connection_timeout"
CIRCUIT_OPEN = "circuit_open"
BULKHEAD_FULL = "bulkhead_full"

# Each type, with what its detail holds (docs/observability.md lists the same).
INJECTION_TYPES: dict[str, str] = {
    LATENCY: "",
    HTTP_ERROR: "the status code",
    TIMEOUT: "",
    CONNECTION_RESET: "",
    PARTIAL_RESPONSE: "",
    AFTER_APP: "what followed the app: reset, http_error, stall",
    CORRUPTED: "how: flip, random, invalid_json, truncate, wrong_content_type, empty_reply, "
    "malformed_chunk, random_then_close",
    STREAM_CUT: "how: reset or close",
    UPLOAD_RESET: "the request-body bytes read first",
    RATE_LIMITED: "the level: global, per_ip or per_endpoint",
    REQUEST_DROPPED: "",
    BANDWIDTH_THROTTLED: "bytes per second",
    BODY_DRIBBLED: "the time and the writes: <ms>ms/<writes>",
    PACKET_LOSS: "the percent",
    CONNECTION_LIMITED: "",
    CONNECTION_TIMEOUT: "",
    CIRCUIT_OPEN: "the breaker: global, or the rule's index",
    BULKHEAD_FULL: "the bulkhead: global, or the rule's index",
}


class Injection(NamedTuple):
    """One thing injected into a request: its type (a key of INJECTION_TYPES) and detail."""

    type: str
    detail: str = ""
