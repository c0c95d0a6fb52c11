"""The config sections the management API serves, by URL segment: one table for the
API (``/config/<segment>``), the client and the CLI. Standard library only."""

from __future__ import annotations

# URL segment -> the section's attribute in the config (and its name in /status
# "overrides"). The client names each by its segment with "_" for "-".
URL_SEGMENTS = {
    "latency": "latency",
    "faults": "fault_injection",
    "rate-limit": "rate_limit",
    "traffic": "traffic_shaping",
}
