"""Redis Cluster and Sentinel URLs, in the spellings of ``limits`` (Flask-Limiter).

``redis+cluster://[user:password@]host:port[,host:port...]/`` names a cluster by any of
its nodes; ``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]``
names the primary that the sentinels report for ``service``. ``rediss+`` speaks TLS to
every node (``limits`` takes TLS as an option; we follow the spelling most clients
share). The password (and user) authenticate every node; a sentinel with an
authentication of its own takes ``?sentinel_username=...&sentinel_password=...``.
Other query options are redis-py's own (``ssl_cert_reqs``, ``ssl_ca_certs``, ...).

Pure parsing, no redis import: a wrong URL is one ``ValueError`` naming it and what is
allowed, before anything connects.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["CLUSTER_FORM", "SCHEMES", "SENTINEL_FORM", "RedisTopology", "parse", "redact"]

CLUSTER_FORM = "redis+cluster://host:port[,host:port...]/"
SENTINEL_FORM = "redis+sentinel://host:port[,host:port...]/service_name[/db]"
SCHEMES = ("redis+cluster", "rediss+cluster", "redis+sentinel", "rediss+sentinel")
DEFAULT_PORTS = {"cluster": 6379, "sentinel": 26379}  # Redis' and Sentinel's own


class RedisTopology(NamedTuple):
    """What a cluster or sentinel URL names: plain values for redis-py's clients."""

    kind: str  # "cluster" or "sentinel"
    tls: bool
    nodes: tuple[tuple[str, int], ...]  # startup nodes, or the sentinels
    username: str | None = None
    password: str | None = None
    service: str = ""  # sentinel: the name the sentinels monitor
    db: int = 0
    sentinel_auth: tuple[str | None, str | None] | None = None  # None: the nodes' own
    options: tuple[tuple[str, str], ...] = ()  # the rest of the query, for redis-py

    def redacted(self) -> str:
        """The URL without its password, for logs and errors."""
        scheme = ("rediss+" if self.tls else "redis+") + self.kind
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.nodes)
        auth = (self.username or "") + (":***" if self.password else "")
        path = f"/{self.service}/{self.db}" if self.kind == "sentinel" else "/"
        return f"{scheme}://{auth + '@' if auth else ''}{hosts}{path}"


def redact(url: str) -> str:
    """A cluster or sentinel URL with its password masked (any other URL as given)."""
    scheme, sep, rest = url.partition("://")
    auth, at, _ = rest.partition("/")[0].rpartition("@")
    if scheme not in SCHEMES or ":" not in auth:
        return url
    return f"{scheme}{sep}{auth.partition(':')[0]}:***{at}{rest[len(auth) + 1 :]}"


def parse(url: str) -> RedisTopology:
    """Read a ``redis+cluster://`` or ``redis+sentinel://`` URL (and their ``rediss+``
    forms); a ``ValueError`` naming the URL and the form it should have otherwise."""
    shown = redact(url)
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SCHEMES:
        raise ValueError(f"{shown!r}: not a Redis Cluster or Sentinel URL ({_forms()})")
    kind = scheme.partition("+")[2]
    form = CLUSTER_FORM if kind == "cluster" else SENTINEL_FORM
    netloc, _, path_query = rest.partition("/")
    path, _, query = path_query.partition("?")
    if "?" in netloc:  # "host:port?x=1" with no slash
        netloc, _, query = netloc.partition("?")
    auth, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = auth.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon and secret else None
    nodes = tuple(_node(shown, location, kind, form) for location in hosts.split(","))
    options = dict(parse_qsl(query, keep_blank_values=True))
    sentinel_auth = None
    if "sentinel_username" in options or "sentinel_password" in options:
        sentinel_auth = (
            options.pop("sentinel_username", None) or None,
            options.pop("sentinel_password", None) or None,
        )
    segments = [unquote(s) for s in path.split("/") if s]
    service, db = "", 0
    if kind == "cluster":
        if segments not in ([], ["0"]):
            raise ValueError(
                f"{shown!r}: a Redis Cluster has one database, 0; nothing goes after the "
                f"hosts ({CLUSTER_FORM})"
            )
        if sentinel_auth is not None:
            raise ValueError(
                f"{shown!r}: sentinel_username and sentinel_password are for {SENTINEL_FORM}"
            )
    else:
        if not segments or len(segments) > 2:
            raise ValueError(
                f"{shown!r}: a Sentinel URL names the service the sentinels monitor "
                f"({SENTINEL_FORM}, e.g. redis+sentinel://localhost:26379/mymaster/0)"
            )
        service = segments[0]
        if len(segments) == 2:
            if not segments[1].isdigit():
                raise ValueError(
                    f"{shown!r}: the database is a number, not {segments[1]!r} ({form})"
                )
            db = int(segments[1])
    return RedisTopology(
        kind,
        scheme.startswith("rediss"),
        nodes,
        username,
        password,
        service,
        db,
        sentinel_auth,
        tuple(options.items()),
    )


def _node(shown: str, location: str, kind: str, form: str) -> tuple[str, int]:
    if not location.strip():
        raise ValueError(f"{shown!r}: a host is missing ({form})")
    try:
        parts = urlsplit("//" + location.strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or parts.path or (port is None and location.rstrip().endswith(":")):
        raise ValueError(f"{shown!r}: {location!r} is not host:port ({form})")
    return host, port if port is not None else DEFAULT_PORTS[kind]


def _forms() -> str:
    return f"expected {CLUSTER_FORM} or {SENTINEL_FORM}, or rediss+ for TLS"
