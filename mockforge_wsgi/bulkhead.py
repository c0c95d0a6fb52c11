"""Bulkheads: a concurrency cap of its own per route (a rule with a ``bulkhead`` section)
or for the requests no such rule matches (owner ``global``), held in a named slot pool
of the store, so it holds across workers (and hosts, on Redis) like the server-wide
connection limit, and is given back on every path the same way."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Bulkhead", "pool_name"]

PREFIX = "bulkhead:"


class Bulkhead(NamedTuple):
    """A request's place in a bulkhead: ``held`` (given back when the response ends), or
    none came in time (answered ``status`` with ``retry_after_s``)."""

    owner: str
    held: bool
    status: int = 503
    retry_after_s: int = 1

    @property
    def pool(self) -> str:
        return pool_name(self.owner)


def pool_name(owner: str) -> str:
    """The store's slot pool of a bulkhead."""
    return PREFIX + owner
