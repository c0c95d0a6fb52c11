"""The Redis store: one chaos state and one set of limits for servers on many hosts.

A rate-limit check is one round trip in exact mode: a Lua script charges all levels at
once, all or nothing, with the time taken from the Redis server (``TIME``), so clock skew
between hosts changes nothing. In lease mode (the default) one such call takes a small
batch of tokens that the worker spends locally (see ``rate_limit.py``). Event counts are
sent in batches, every ``FLUSH_S`` per process. Bucket keys expire when their bucket is
full again, which bounds memory. The runtime state sits under a version key; processes
poll that version at most every ``version_poll_s`` (a management change reaches every
host within that time).

An unreachable Redis raises :class:`StoreError` (logged once per outage); callers fail
open or closed as configured. redis-py reconnects by itself when Redis is back.

The same store runs on a Redis Cluster (``redis+cluster://``) and on a primary that
Sentinel watches (``redis+sentinel://``; see ``redis_url.py``). On a cluster each key
carries a hash tag (``TAGS``), so the keys one script or transaction touches together
sit in one slot: the runtime state with its version and the servers' leases; a slot
pool's two hashes (every pool under one tag, so the dead-worker sweep finds them all);
every rate-limit bucket under one tag, because a request's levels (global, per IP, per
endpoint) are charged in one script, all or nothing. The event counters are one hash.
docs/state.md says why, and what that costs.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import logging
import os
import socket
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from . import redis_url
from .base import LEASE_TTL_S, WRITES, StartedState, Store, StoreError
from .gcra import Bucket, BucketOutcome

__all__ = ["RedisStore"]

log = logging.getLogger("mockforge_wsgi")
T = TypeVar("T")

# gcra.take, line by line, with `now` from the server: a lease of up to `want` tokens
# after giving back `give_back` (a charge in exact mode is a lease of one). Floats go back
# as strings (Redis turns Lua numbers into integers). ARGV: interval and burst per key,
# then want, give_back.
TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n = #KEYS
local want, give_back = tonumber(ARGV[2 * n + 1]), tonumber(ARGV[2 * n + 2])
local tats = {}
local granted = want
for i = 1, n do
  local interval, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  tat = tat - give_back * interval
  if tat < now then tat = now end
  tats[i] = tat
  local free = math.floor((now + burst * interval - tat) / interval + 1e-9)
  if free < granted then granted = free end
end
local function put(values)
  for i = 1, n do
    local ttl = math.ceil((values[i] - now) * 1000)
    if ttl > 0 then
      redis.call('SET', KEYS[i], string.format('%.17g', values[i]), 'PX', ttl)
    else
      redis.call('DEL', KEYS[i])
    end
  end
end
if granted <= 0 then
  local refused, wait = 1, -math.huge
  for i = 1, n do
    local interval, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
    local over = tats[i] + interval - now - burst * interval
    if over > wait then refused, wait = i, over end
  end
  if give_back > 0 then put(tats) end
  return {refused - 1, 0, tonumber(ARGV[2 * refused]), 0,
          string.format('%.17g', tats[refused] - now), string.format('%.17g', wait), 0}
end
local tightest, room = 1, math.huge
for i = 1, n do
  local interval, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  tats[i] = tats[i] + granted * interval
  local over = tats[i] - now - burst * interval
  if -over < room * interval then tightest, room = i, -over / interval end
end
put(tats)
return {tightest - 1, 1, tonumber(ARGV[2 * tightest]), math.floor(room + 1e-9),
        string.format('%.17g', tats[tightest] - now), '0', granted}
"""

# Connection slots: a field per process holding how many slots that process has now
# (its own count is the truth, written whole, never incremented), and when it was last
# written. A field not written for SLOT_LEASE_S is a process that is gone: dropped.
# KEYS: counts, written-at. ARGV: limit, this process, its count now, lease seconds.
TAKE_SLOT = """
local now = tonumber(redis.call('TIME')[1])
local taken = tonumber(ARGV[3])
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local field = all[i]
  if field ~= ARGV[2] then
    local at = tonumber(redis.call('HGET', KEYS[2], field) or '0')
    if at + tonumber(ARGV[4]) < now then
      redis.call('HDEL', KEYS[1], field)
      redis.call('HDEL', KEYS[2], field)
    else
      taken = taken + tonumber(all[i + 1])
    end
  end
end
local mine = tonumber(ARGV[3])
local granted = 0
if taken < tonumber(ARGV[1]) then mine, granted = mine + 1, 1 end
redis.call('HSET', KEYS[1], ARGV[2], mine)
redis.call('HSET', KEYS[2], ARGV[2], now)
return granted
"""

# KEYS: counts, written-at. ARGV: this process, its count now.
PUT_SLOTS = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], redis.call('TIME')[1])
"""

# KEYS: state, version. ARGV: the state. (A cluster's save: redis-py before 6 has no
# transactions in a cluster pipeline; a script is one step on any.)
SAVE_STATE = """
redis.call('SET', KEYS[1], ARGV[1])
return redis.call('INCR', KEYS[2])
"""

# KEYS: state, version. ARGV: the state, the version it must still have.
REPLACE_STATE = """
if tonumber(redis.call('GET', KEYS[2]) or '0') ~= tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return redis.call('INCR', KEYS[2])
"""

# KEYS: state, version. ARGV: the state.
INIT_STATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('INCR', KEYS[2])
return 1
"""

# A server starts (Store.start_state): drop the leases that ran out, note whether this
# server (its master or another worker) or others are alive, take this process's lease,
# and write the startup state when the rule says so (base.start_decision), all at once.
# A lease member is a server ("host:pid" of its master, or of its one process), scored by
# when it runs out (Redis' clock). KEYS: alive, state, version. ARGV: server, ttl, mode,
# state.
START_STATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local own, others = false, {}
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if member == ARGV[1] then own = true else others[#others + 1] = member end
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local why
if redis.call('EXISTS', KEYS[2]) == 0 then why = 'empty'
elseif own then why = 'own server'
elseif ARGV[3] == 'adopt' then why = 'adopt'
elseif ARGV[3] == 'startup' then why = 'startup'
elseif #others > 0 then why = 'live servers'
else why = 'no live server' end
if why == 'empty' or why == 'startup' or why == 'no live server' then
  redis.call('SET', KEYS[2], ARGV[4])
  redis.call('INCR', KEYS[3])
end
return {why, others}
"""

# KEYS: alive. ARGV: member, ttl.
RENEW_LEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
"""

# A worker says it is alive (Store.live_workers): drop the entries that ran out, renew
# this one, count them. KEYS: workers. ARGV: this process, ttl.
LIVE_WORKERS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return redis.call('ZCARD', KEYS[1])
"""

# On a cluster, the hash tag of each key group (the name's first segment): what one
# script or transaction touches together must share a slot. Groups not named here are
# tagged by their own name (tat: every bucket, slots: every slot pool, counters).
TAGS = {"state": "state", "version": "state", "alive": "state", "slots-at": "slots"}

SLOT_POLL_S = 0.005
# A worker that has not said it is alive for this long (it serves nothing, or is gone)
# is not counted among the live workers.
WORKER_TTL_S = 10
FLUSH_S = 0.005  # event counts are sent at most this often per process
SLOT_LEASE_S = 120
RETRY_S = 0.5


class RedisStore(Store):
    """Shared state in Redis (``redis://host:port/db``), a Redis Cluster
    (``redis+cluster://host:port,host:port/``) or the primary Sentinel reports
    (``redis+sentinel://host:port/service/db``)."""

    leases = True
    remote = True

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "mockforge:",
        socket_timeout_s: float = 0.25,
        version_poll_s: float = 0.05,
    ) -> None:
        import redis
        from redis.exceptions import RedisClusterException

        # A cluster that cannot be reached raises RedisClusterException, not a RedisError.
        self._errors: tuple[type[BaseException], ...] = (
            redis.RedisError,
            RedisClusterException,
            OSError,
        )
        self._tagged = False  # keys carry hash tags (a cluster)
        if url.partition("://")[0] in redis_url.SCHEMES:
            topology = redis_url.parse(url)
            self._redis: Any = _open(topology, socket_timeout_s)
            self._tagged = topology.kind == "cluster"
            self.url = topology.redacted()  # logged: no password in it
        else:
            self._redis = redis.Redis.from_url(
                url,
                socket_timeout=socket_timeout_s,
                socket_connect_timeout=socket_timeout_s,
            )
            self.url = url
        self._prefix = prefix
        self._take = self._redis.register_script(TAKE)
        self._take_slot = self._redis.register_script(TAKE_SLOT)
        self._put_slots = self._redis.register_script(PUT_SLOTS)
        self._init_state = self._redis.register_script(INIT_STATE)
        self._save_state = self._redis.register_script(SAVE_STATE)
        self._replace_state = self._redis.register_script(REPLACE_STATE)
        self._start_state = self._redis.register_script(START_STATE)
        self._renew_lease = self._redis.register_script(RENEW_LEASE)
        self._live_workers = self._redis.register_script(LIVE_WORKERS)
        # Slots this process holds, by name: the truth its field in Redis is set to.
        self._held: dict[str, int] = {}
        self._held_lock = threading.RLock()  # a recovery inside a take rewrites counts
        self._version_poll_s = version_poll_s
        self._version = 0
        self._version_checked = float("-inf")
        self._host = socket.gethostname()
        self.down = False
        self.outages = 0
        self._retry_at = 0.0
        # Event counts not yet sent (Store.count), and the process whose thread sends them.
        self._pending: Counter[str] = Counter()
        self._pending_lock = threading.Lock()
        self._flusher_pid = 0
        self._wake = threading.Event()
        atexit.register(_flush_at_exit, weakref.ref(self))  # not kept alive for it

    @property
    def _worker(self) -> str:
        """This process, as its slot field is named (the pid now: stores made before a
        fork serve every forked worker)."""
        return f"{self._host}:{os.getpid()}"

    def _key(self, name: str) -> str:
        if not self._tagged:
            return self._prefix + name
        group = name.partition(":")[0]
        return f"{self._prefix}{{{TAGS.get(group, group)}}}:{name}"

    def _call(self, operation: Callable[[], T]) -> T:
        """Run one Redis operation; an outage is logged once and raised as StoreError.

        While Redis is down, calls fail at once for ``RETRY_S`` instead of each waiting
        out a socket timeout, then one call tries again.
        """
        if self.down:
            self._recover()
        try:
            return operation()
        except self._errors as error:
            raise self._went_down(error) from error

    def _went_down(self, error: BaseException) -> StoreError:
        self._retry_at = time.monotonic() + RETRY_S
        if not self.down:
            self.down = True
            self.outages += 1
            log.warning("mockforge: Redis store %s unreachable (%s)", self.url, error)
        return StoreError(f"Redis store {self.url} unreachable: {error}")

    def _recover(self) -> None:
        """Is Redis back? If so, first write the slot counts this process really holds
        (a take that timed out may have run there; a release that failed did not)."""
        if time.monotonic() < self._retry_at:
            raise StoreError(f"Redis store {self.url} unreachable")
        try:
            self._probe()
            with self._held_lock:
                for name, count in self._held.items():
                    self._put_slots(keys=self._slot_keys(name), args=[self._worker, count])
        except self._errors as error:
            raise self._went_down(error) from error
        self.down = False
        log.warning("mockforge: Redis store %s reachable again", self.url)

    def _probe(self) -> None:
        """Raise unless Redis answers. On a cluster, a key of each tag is read: a PING
        answers from any node, even while the one holding our keys is gone or the
        cluster refuses keys (CLUSTERDOWN), and recovering then would flap."""
        if not self._tagged:
            self._redis.ping()
            return
        for group in ("version", "counters", "tat:", "slots:"):
            self._redis.exists(self._key(group))

    # -- runtime state ------------------------------------------------------------------

    def state_version(self) -> int:
        now = time.monotonic()
        if now - self._version_checked >= self._version_poll_s:
            # Marked as looked at once the answer is in: a thread arriving while another's
            # look is in flight looks too, rather than take the version from before it.
            try:
                raw = self._call(lambda: self._redis.get(self._key("version")))
            except StoreError:
                self._version_checked = now
                return self._version  # keep serving with what we have
            self._version, self._version_checked = int(raw or 0), now
        return self._version

    def watch_version(self) -> int:
        version = int(self._call(lambda: self._redis.get(self._key("version"))) or 0)
        self._version, self._version_checked = version, time.monotonic()
        return version

    def load_state(self) -> tuple[int, dict[str, Any] | None]:
        version, raw = self._call(
            lambda: self._redis.mget(self._key("version"), self._key("state"))
        )
        self._version = int(version or 0)
        return self._version, (json.loads(raw) if raw else None)

    def save_state(self, state: dict[str, Any]) -> int:
        if self._tagged:
            raw = json.dumps(state, separators=(",", ":"))
            keys = [self._key("state"), self._key("version")]
            self._version = int(self._call(lambda: self._save_state(keys=keys, args=[raw])))
            return self._version

        def save() -> int:
            pipe = self._redis.pipeline(transaction=True)
            pipe.set(self._key("state"), json.dumps(state, separators=(",", ":")))
            pipe.incr(self._key("version"))
            return int(pipe.execute()[1])

        self._version = self._call(save)
        return self._version

    def replace_state(self, state: dict[str, Any], version: int) -> int:
        raw = json.dumps(state, separators=(",", ":"))
        keys = [self._key("state"), self._key("version")]
        saved = int(self._call(lambda: self._replace_state(keys=keys, args=[raw, version])))
        if saved:
            self._version = saved
        return saved

    def init_state(self, state: dict[str, Any]) -> bool:
        raw = json.dumps(state, separators=(",", ":"))
        keys = [self._key("state"), self._key("version")]
        return bool(self._call(lambda: self._init_state(keys=keys, args=[raw])))

    def start_state(self, state: dict[str, Any], *, server: str, mode: str) -> StartedState:
        raw = json.dumps(state, separators=(",", ":"))
        keys = [self._key("alive"), self._key("state"), self._key("version")]
        args: list[Any] = [server, LEASE_TTL_S, mode, raw]
        why, others = self._call(lambda: self._start_state(keys=keys, args=args))
        why = why.decode() if isinstance(why, bytes) else str(why)
        names = (o.decode() if isinstance(o, bytes) else str(o) for o in others)
        return StartedState(why in WRITES, why, tuple(sorted(set(names))))

    def renew_lease(self, server: str) -> None:
        keys, args = [self._key("alive")], [server, str(LEASE_TTL_S)]
        self._call(lambda: self._renew_lease(keys=keys, args=args))

    def drop_lease(self, server: str) -> None:
        self._call(lambda: self._redis.zrem(self._key("alive"), server))

    def live_workers(self) -> int:
        keys, args = [self._key("workers")], [self._worker, str(WORKER_TTL_S)]
        return int(self._call(lambda: self._live_workers(keys=keys, args=args)))

    # -- rate limits --------------------------------------------------------------------

    def acquire(self, buckets: Sequence[Bucket], now: float) -> tuple[int, BucketOutcome]:
        index, outcome, _ = self.take(buckets, now, 1)  # a lease of one is a charge
        return index, outcome

    def take(
        self, buckets: Sequence[Bucket], now: float, want: int, give_back: int = 0
    ) -> tuple[int, BucketOutcome, int]:
        keys = [self._key("tat:" + bucket.key) for bucket in buckets]
        args: list[Any] = []
        for bucket in buckets:
            args += [repr(bucket.interval_s), bucket.burst]
        args += [want, give_back]
        index, allowed, limit, remaining, reset, retry, granted = self._call(
            lambda: self._take(keys=keys, args=args)
        )
        outcome = BucketOutcome(
            bool(allowed), int(limit), int(remaining), float(reset), float(retry)
        )
        return int(index), outcome, int(granted)

    def tracked_keys(self) -> int:
        pattern = self._key("tat:*")
        return self._call(lambda: sum(1 for _ in self._redis.scan_iter(match=pattern)))

    # -- counters -----------------------------------------------------------------------

    def count(self, events: Iterable[str]) -> None:
        """Counted here, sent every FLUSH_S by a thread of this process (one round trip
        for all of them), at exit, and before this process reads the counters."""
        if not events:
            return
        with self._pending_lock:
            if self._flusher_pid != os.getpid():  # forked: the parent's are its own
                self._pending.clear()
                self._flusher_pid = os.getpid()
                self._wake = threading.Event()
                threading.Thread(
                    target=self._flush_loop, name="mockforge-counters", daemon=True
                ).start()
            self._pending.update(events)
            self._wake.set()

    def _flush_loop(self) -> None:
        wake = self._wake
        while True:
            wake.wait()
            time.sleep(FLUSH_S)  # what else arrives meanwhile goes in the same trip
            wake.clear()
            with contextlib.suppress(StoreError):  # kept, and sent with the next ones
                self.flush()

    def flush(self) -> None:
        """Send the event counts this process holds; on failure they stay held."""
        with self._pending_lock:
            if self._flusher_pid != os.getpid():
                return
            pending, self._pending = self._pending, Counter()
        if not pending:
            return
        key = self._key("counters")

        def send() -> None:
            pipe = self._redis.pipeline(transaction=False)
            for name, amount in pending.items():
                pipe.hincrby(key, name, amount)
            pipe.execute()

        try:
            self._call(send)
        except StoreError:
            with self._pending_lock:
                self._pending.update(pending)
            raise

    def incr(self, counter: str, amount: int = 1) -> int:
        return int(self._call(lambda: self._redis.hincrby(self._key("counters"), counter, amount)))

    def add_counts(self, amounts: Mapping[str, int]) -> None:
        """Sent now, in one round trip (not batched as :meth:`count` is: another host
        reads them at its next check)."""
        if not amounts:
            return
        key = self._key("counters")

        def send() -> None:
            pipe = self._redis.pipeline(transaction=False)
            for name, amount in amounts.items():
                pipe.hincrby(key, name, amount)
            pipe.execute()

        self._call(send)

    def set_counter(self, counter: str, value: int) -> None:
        self._call(lambda: self._redis.hset(self._key("counters"), counter, value))

    def counters(self) -> dict[str, int]:
        with contextlib.suppress(StoreError):  # the read below says if Redis is gone
            self.flush()
        raw = self._call(lambda: self._redis.hgetall(self._key("counters")))
        return {
            name.decode() if isinstance(name, bytes) else str(name): int(value)
            for name, value in raw.items()
            if int(value)
        }

    # -- connection slots: a field per process, set to what it holds, with a lease -----

    def _slot_keys(self, name: str) -> list[str]:
        return [self._key("slots:" + name), self._key("slots-at:" + name)]

    def acquire_slot(self, name: str, limit: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + max(timeout_s, 0.0)
        keys = self._slot_keys(name)
        while True:
            # One take at a time per process, so writes of its count arrive in order.
            with self._held_lock:
                held = self._held.get(name, 0)
                args: list[str | int] = [limit, self._worker, held, SLOT_LEASE_S]
                if self._call(functools.partial(self._take_slot, keys=keys, args=args)):
                    self._held[name] = held + 1
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(SLOT_POLL_S)

    def release_slot(self, name: str) -> None:
        with self._held_lock:
            # Given back here first: if Redis cannot hear of it now, it will on the next
            # write of this count (any take or release, or the recovery after an outage).
            held = self._held[name] = max(self._held.get(name, 0) - 1, 0)
            self._write_held(name, held)

    def _write_held(self, name: str, count: int) -> None:
        keys = self._slot_keys(name)
        self._call(lambda: self._put_slots(keys=keys, args=[self._worker, count]))

    def slots_in_use(self, name: str) -> int:
        values = self._call(lambda: self._redis.hvals(self._key("slots:" + name)))
        return sum(int(value) for value in values)

    def release_worker(self, pid: int) -> None:
        """Forget what the dead worker held in every slot pool (the connection limit and
        each bulkhead): the pools are the ``slots:*`` hashes."""
        worker = f"{socket.gethostname()}:{pid}"
        prefix = self._key("slots:")  # _key("slots:") + name is _key("slots:" + name)

        def forget() -> None:
            for key in self._redis.scan_iter(match=prefix + "*"):
                name = (key.decode() if isinstance(key, bytes) else key)[len(prefix) :]
                counts, written_at = self._slot_keys(name)
                self._redis.hdel(counts, worker)
                self._redis.hdel(written_at, worker)

        self._call(forget)

    def reset(self) -> None:
        with self._pending_lock:
            self._pending.clear()

        def clear() -> None:
            keys = list(self._redis.scan_iter(match=self._key("tat:*")))
            self._redis.delete(self._key("counters"), *keys)

        self._call(clear)


def _open(topology: redis_url.RedisTopology, timeout_s: float) -> Any:
    """A client of the cluster or of Sentinel's primary. Neither reaches the network
    here: an unreachable Redis at start is an outage like any later one."""
    from urllib.parse import urlencode

    from redis.connection import parse_url

    # redis-py reads its own query options (ssl_cert_reqs, ...) with their types.
    query = urlencode(topology.options)
    options = parse_url(f"redis://x/?{query}")  # type: ignore[no-untyped-call]
    options.pop("host", None)
    options.setdefault("socket_timeout", timeout_s)
    options.setdefault("socket_connect_timeout", timeout_s)
    auth = {"username": topology.username, "password": topology.password}
    if topology.kind == "cluster":
        if options.pop("db", 0):
            raise ValueError("a Redis Cluster has one database, 0")
        return _LazyCluster(topology, {**options, **auth})
    from redis.sentinel import Sentinel

    db = options.pop("db", topology.db)
    ssl = {"ssl": True} if topology.tls else {}
    sentinel_auth = auth
    if topology.sentinel_auth is not None:
        sentinel_auth = dict(zip(("username", "password"), topology.sentinel_auth, strict=True))
    sentinel_options = {k: v for k, v in options.items() if k.startswith(("socket_", "ssl"))}
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(topology.nodes),
        sentinel_kwargs={**sentinel_options, **ssl, **sentinel_auth},
        **options,
        **ssl,
        **auth,
        db=db,
    )
    return sentinel.master_for(topology.service)  # type: ignore[no-untyped-call]


class _LazyCluster:
    """A ``RedisCluster`` made on its first use: its constructor asks the nodes for the
    slot map, and a cluster unreachable when a server starts must be an outage (fail
    open, recover), not an error. Until then it gives scripts their encoder."""

    def __init__(self, topology: redis_url.RedisTopology, options: dict[str, Any]) -> None:
        self._topology = topology
        self._options = options
        self._client: Any = None
        self._lock = threading.Lock()

    def _made(self) -> Any:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    from redis.backoff import NoBackoff
                    from redis.cluster import ClusterNode, RedisCluster
                    from redis.retry import Retry

                    nodes = [
                        ClusterNode(host, port)  # type: ignore[no-untyped-call]
                        for host, port in self._topology.nodes
                    ]
                    self._client = RedisCluster(
                        startup_nodes=nodes,
                        ssl=self._topology.tls,
                        # One more try follows a moved slot or a node gone; no sleeps:
                        # the store's own retry pause (RETRY_S) paces an outage.
                        retry=Retry(NoBackoff(), 1),
                        **self._options,
                    )
                client = self._client
        return client

    def get_encoder(self) -> Any:
        from redis._parsers.encoders import Encoder

        return Encoder("utf-8", "strict", False)  # type: ignore[no-untyped-call]

    def register_script(self, script: str) -> Any:
        from redis.commands.core import Script

        return Script(self, script)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._made(), name)


def _flush_at_exit(store: weakref.ref[RedisStore]) -> None:
    """Send what a worker counted but has not sent yet, as it exits."""
    alive = store()
    if alive is not None:
        with contextlib.suppress(StoreError):
            alive.flush()
