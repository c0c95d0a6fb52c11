"""The process variables: ``MOCKFORGE_*`` that are not chaos settings, declared once.

Chaos settings come from ``MOCKFORGE_CHAOS_*`` (config.py). These say how a process
runs: where the shared state lives, the admin token, the config file, what to mount.
Each name is defined here and read with one parser per type, the settings' own, so
``on`` means the same in ``MOCKFORGE_METRICS`` and ``MOCKFORGE_DEBUG_HEADERS``, and a
value that is not a boolean is an error naming the variable, not a silent ``false``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# Standard library only: the management client reads the admin token through here.
TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})
NOT_A_BOOLEAN = "is not a boolean (allowed: true/false, yes/no, on/off, 1/0)"

ADMIN_TOKEN = "MOCKFORGE_ADMIN_TOKEN"  # bearer token the management API requires
STORE = "MOCKFORGE_STORE"  # memory://, file:///dir, redis://, redis+cluster://, redis+sentinel://
CONFIG = "MOCKFORGE_CONFIG"  # YAML config of mockforge_wsgi.app
METRICS = "MOCKFORGE_METRICS"  # boolean: mount /metrics in mockforge_wsgi.app
RECORDER_DB = "MOCKFORGE_RECORDER_DB"  # SQLite file of the request recorder
OTLP_ENDPOINT = "MOCKFORGE_OTLP_ENDPOINT"  # where spans go (OTLP/HTTP)
DEBUG_HEADERS = "MOCKFORGE_DEBUG_HEADERS"  # boolean: X-Mockforge-Worker on answers
MAX_HOLD_S = "MOCKFORGE_MAX_HOLD_S"  # seconds a worker may hold a request (serve sets it)
RUNTIME_DIR = "MOCKFORGE_RUNTIME_DIR"  # where servers' embedded stores live
# host:pid of the serve master that started the shared state: its workers adopt it.
STATE_STARTED_BY = "MOCKFORGE_STATE_STARTED_BY"
URL = "MOCKFORGE_URL"  # a running server for the unittest helpers
UPSTREAM = "MOCKFORGE_UPSTREAM"  # proxy mode: forward every request to this URL
UPSTREAM_CA_CERTS = "MOCKFORGE_UPSTREAM_CA_CERTS"  # PEM CAs an https upstream is checked with
UPSTREAM_INSECURE = "MOCKFORGE_UPSTREAM_INSECURE"  # boolean: an https upstream unverified
CERTFILE = "MOCKFORGE_CERTFILE"  # serve over TLS: the server's PEM certificate (chain)
KEYFILE = "MOCKFORGE_KEYFILE"  # ... and its private key
CA_CERTS = "MOCKFORGE_CA_CERTS"  # ... requiring client certificates issued by these CAs
ALLOWED_HOSTS = "MOCKFORGE_ALLOWED_HOSTS"  # Host names the management API answers to
ALLOWED_ORIGINS = "MOCKFORGE_ALLOWED_ORIGINS"  # browser origins besides the server's own
# Not ours, set by us: prometheus_client's multiprocess directory (serve --metrics).
PROMETHEUS_MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


def text(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The variable's value; None when unset or empty."""
    return (os.environ if environ is None else environ).get(name) or None


def flag(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """The variable as a boolean (1/0, true/false, yes/no, on/off, any case); unset or
    empty is false. Raises ValueError naming the variable for anything else."""
    raw = text(name, environ)
    if raw is None:
        return False
    try:
        return boolean(raw)
    except ValueError as error:
        raise ValueError(f"{name}: {raw!r} {error}") from None


def boolean(raw: str) -> bool:
    """The one reading of a boolean word, for these variables and every chaos setting."""
    word = raw.strip().lower()
    if word in TRUE | FALSE:
        return word in TRUE
    raise ValueError(NOT_A_BOOLEAN)
