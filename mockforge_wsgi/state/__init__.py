"""Runtime state behind one interface, chosen by URL."""

from __future__ import annotations

from urllib.parse import urlsplit

from .base import Store, StoreError
from .gcra import Bucket, BucketOutcome
from .memory import MemoryStore

__all__ = ["Bucket", "BucketOutcome", "MemoryStore", "Store", "StoreError", "store_from_url"]


def store_from_url(url: str, *, max_keys: int = 100_000) -> Store:
    """The store a URL names: ``memory://`` (one process)."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryStore(max_keys=max_keys)
    raise ValueError(f"store URL {url!r}: scheme {scheme!r} is not one of memory")
