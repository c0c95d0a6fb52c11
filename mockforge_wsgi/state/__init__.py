"""Runtime state behind one interface: buckets, slots, counters, the runtime state.

``MemoryStore`` serves one process, ``EmbeddedStore`` every process of one host; both
implement :class:`Store`, chosen by URL (``MOCKFORGE_STORE``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from urllib.parse import unquote, urlsplit

from .. import _env
from .._extras import MissingExtra, require
from . import redis_url
from .base import StateTooLarge, Store, StoreError, StoreUrlError
from .embedded import EmbeddedStore
from .gcra import Bucket, BucketOutcome
from .memory import MemoryStore

__all__ = [
    "Bucket",
    "BucketOutcome",
    "EmbeddedStore",
    "MemoryStore",
    "StateTooLarge",
    "Store",
    "StoreError",
    "StoreUrlError",
    "store_from_env",
    "store_from_url",
]


EXPECTED = (
    "memory://, file:///path/to/directory, redis://host:port/db, "
    f"{redis_url.CLUSTER_FORM} or {redis_url.SENTINEL_FORM}"
)


def store_from_url(url: str, *, max_keys: int = 100_000) -> Store:
    """``memory://`` (this process), ``file:///a/directory`` (every process of a host) or
    ``redis://host:port/db`` (every process of every host using that Redis; also
    ``rediss://`` and ``unix:///path/to/socket``; a Redis Cluster by
    ``redis+cluster://host:port,host:port/``, the primary Sentinel watches by
    ``redis+sentinel://host:port/service/db``, each with ``rediss+`` for TLS). Raises
    :class:`StoreUrlError`, one sentence naming the URL and the fix, for a URL no store
    can be opened from."""
    if url.partition("://")[0] in redis_url.SCHEMES:
        return _redis_store(url, redis_url.parse)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (parsing it raises ValueError when it is not a port)
    except ValueError as error:
        raise StoreUrlError(f"{url!r}: {error}; expected {EXPECTED}") from None
    if "://" not in url:
        guess = f"redis://{url}" if parts.scheme and url[len(parts.scheme) + 1 :].isdigit() else ""
        hint = f" (did you mean {guess}?)" if guess else ""
        raise StoreUrlError(f"{url!r} is not a store URL{hint}; expected {EXPECTED}")
    if parts.scheme == "memory":
        return MemoryStore(max_keys=max_keys)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            absolute = os.path.abspath(parts.netloc + parts.path)
            raise StoreUrlError(
                f"{url!r}: a file URL names an absolute directory, three slashes "
                f"(did you mean file://{absolute}?)"
            )
        try:
            return EmbeddedStore(unquote(parts.path), max_keys=max_keys)
        except StoreError as error:
            raise StoreUrlError(f"{url!r}: cannot open the embedded store ({error})") from None
    if parts.scheme in ("redis", "rediss", "unix"):
        return _redis_store(url, None)
    raise StoreUrlError(f"{url!r}: unknown store scheme {parts.scheme!r}; expected {EXPECTED}")


def _redis_store(url: str, check: Callable[[str], object] | None) -> Store:
    """A Redis store; ``check`` reads the URL first (its error names what is allowed)."""
    if check is not None:
        try:
            check(url)
        except ValueError as error:
            raise StoreUrlError(str(error)) from None
    try:
        require("redis", f"the store {redis_url.redact(url)}")
    except MissingExtra as error:
        raise StoreUrlError(str(error)) from None
    from .redis_store import RedisStore

    try:
        return RedisStore(url)
    except ValueError as error:  # redis-py's reading of the URL and its options
        reason = str(error).rstrip(".")
        raise StoreUrlError(f"{redis_url.redact(url)!r}: {reason}; expected {EXPECTED}") from None


def store_from_env(environ: Mapping[str, str] | None = None, *, max_keys: int = 100_000) -> Store:
    """The store ``MOCKFORGE_STORE`` names, else this process's memory. Raises
    :class:`StoreUrlError` naming the variable for a URL no store opens from."""
    url = _env.text(_env.STORE, environ)
    if not url:
        return MemoryStore(max_keys=max_keys)
    try:
        return store_from_url(url, max_keys=max_keys)
    except StoreUrlError as error:
        raise StoreUrlError(f"{_env.STORE}: {error}") from None
