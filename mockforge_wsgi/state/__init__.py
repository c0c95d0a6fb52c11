"""Runtime state behind one interface: buckets, slots, counters, the runtime state.

``MemoryStore`` serves one process; backends for several processes and hosts implement
the same :class:`Store`.
"""

from __future__ import annotations

from .base import Store, StoreError
from .gcra import Bucket, BucketOutcome
from .memory import MemoryStore

__all__ = ["Bucket", "BucketOutcome", "MemoryStore", "Store", "StoreError"]
