"""Runtime state behind one interface: buckets, slots, counters, the runtime state.

``MemoryStore`` serves one process, ``EmbeddedStore`` every process of one host; both
implement :class:`Store`, chosen by URL (``MOCKFORGE_STORE``).
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

from .. import _env
from .base import StateTooLarge, Store, StoreError
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
    "store_from_env",
    "store_from_url",
]


def store_from_url(url: str, *, max_keys: int = 100_000) -> Store:
    """``memory://`` (this process), ``file:///a/directory`` (every process of a host) or
    ``redis://host:port/db`` (every process of every host using that Redis)."""
    parts = urlsplit(url)
    if parts.scheme == "memory":
        return MemoryStore(max_keys=max_keys)
    if parts.scheme == "file" and parts.path:
        return EmbeddedStore(unquote(parts.path), max_keys=max_keys)
    if parts.scheme in ("redis", "rediss", "unix"):
        from .redis_store import RedisStore  # needs the `redis` extra

        return RedisStore(url)
    raise ValueError(
        f"store URL {url!r}: expected memory://, file:///path/to/directory or redis://host:port/db"
    )


def store_from_env(environ: Mapping[str, str] | None = None, *, max_keys: int = 100_000) -> Store:
    """The store ``MOCKFORGE_STORE`` names, else this process's memory."""
    url = _env.text(_env.STORE, environ)
    return store_from_url(url, max_keys=max_keys) if url else MemoryStore(max_keys=max_keys)
