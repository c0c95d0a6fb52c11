"""Where the management API lives and the config sections it serves, by URL segment:
one table for the API (``/config/<segment>``), the middleware, the client and the CLI.
Standard library only."""

from __future__ import annotations

DEFAULT_PREFIX = "/api/chaos"  # the management API's mount point

# URL segment -> the section's attribute in the config (and its name in /status
# "overrides"). The client names each by its segment with "_" for "-".
URL_SEGMENTS = {
    "latency": "latency",
    "faults": "fault_injection",
    "rate-limit": "rate_limit",
    "traffic": "traffic_shaping",
    "circuit-breaker": "circuit_breaker",
    "bulkhead": "bulkhead",
    "outbound": "outbound",  # the app's own calls (outbound.py)
}
