"""Traffic shaping: bandwidth pacing, a packet-loss model, connection limits and timeouts.

Packet loss is modelled at the HTTP layer, since a WSGI app cannot drop real IP
packets: the response body is seen as 1460-byte TCP segments (an Ethernet MSS), and
each segment is lost with ``packet_loss_percent`` chance. A lost segment costs what TCP
pays for it: a retransmission timeout, 200 ms at first (Linux's minimum RTO) and
doubled each time the same segment is lost again (RFC 6298, section 5.5), each RTO
capped at 60 s (RFC 6298, section 2.5). After 15 retransmissions of one segment the
connection is given up, as Linux does (``tcp_retries2``).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs

from . import _sockets
from .config import TrafficShapingConfig
from .release import RELEASER

__all__ = [
    "DEADLINE",
    "DUE",
    "RELEASED",
    "DribbleBody",
    "PacedBody",
    "PacedInput",
    "Shaping",
    "decide_shaping",
    "hold",
    "retransmission_stall",
    "sleep_until",
]

SEGMENT_BYTES = 1460
INITIAL_RTO_S = 0.2
MAX_RTO_S = 60.0
MAX_RETRANSMISSIONS = 15
# Pacing writes this much time's worth of bytes at once: small enough for a smooth
# rate, large enough that a fast limit does not become thousands of tiny writes.
PACE_INTERVAL_S = 0.02

Clock = Callable[[], float]
# Sleeps the seconds given; returns False when the hold was released instead (chaos
# went off meanwhile: see release.py), anything else (time.sleep's None) when slept.
Sleep = Callable[[float], object]

# What sleep_until found: the time came, the connection deadline came first, or the
# hold was released (the request goes on as if chaos were off).
DUE, DEADLINE, RELEASED = "due", "deadline", "released"


def hold(seconds: float) -> bool:
    """The default Sleep: a wait that chaos off ends early (False)."""
    return RELEASER.hold(seconds)


@attrs.frozen
class Shaping:
    """The traffic shaping one request gets (decided up front, applied while serving)."""

    bandwidth_bps: int = 0
    upload_bps: int = 0
    loss_percent: float = 0.0
    loss_seed: int = 0
    drop: bool = False
    max_connections: int = 0
    queue_timeout_ms: float = 0.0
    connection_timeout_ms: float = 0.0
    body_duration_ms: float = 0.0  # a dribble: the body spread over this long...
    body_chunks: int = 0  # ...in this many writes

    @property
    def dribble(self) -> str:
        """How the body is dribbled (``1000ms/10``), or "" when it is not."""
        if not self.body_duration_ms:
            return ""
        return f"{self.body_duration_ms:g}ms/{self.body_chunks}"

    @property
    def paces_body(self) -> bool:
        return bool(self.bandwidth_bps or self.loss_percent or self.connection_timeout_ms)

    def annotation_parts(self) -> list[str]:
        if self.drop:
            return ["drop=request"]
        parts = []
        if self.bandwidth_bps:
            parts.append(f"bandwidth={self.bandwidth_bps}Bps")
        if self.upload_bps:
            parts.append(f"upload={self.upload_bps}Bps")
        if self.body_duration_ms:
            parts.append(f"dribble={self.dribble}")
        if self.loss_percent:
            parts.append(f"packet_loss={self.loss_percent:g}%")
        if self.connection_timeout_ms:
            parts.append(f"connection_timeout={self.connection_timeout_ms:g}ms")
        return parts


def decide_shaping(config: TrafficShapingConfig, rng: random.Random) -> Shaping | None:
    """The shaping for one request, or None. Loss is drawn later from ``loss_seed``."""
    if not config.enabled:
        return None
    if not config.request_drop_probability and not config.packet_loss_percent:
        # Nothing drawn: the same Shaping for every request of this config, built once.
        global _static
        config_of, shaping_of = _static
        if config_of is not config:
            shaping_of = _build(config, drop=False, loss_seed=0)
            shaping_of = None if shaping_of == _NOTHING else shaping_of
            _static = (config, shaping_of)
        return shaping_of
    drop = config.request_drop_probability > 0.0 and rng.random() < (
        config.request_drop_probability
    )
    loss_seed = rng.getrandbits(32) if config.packet_loss_percent else 0
    shaping = _build(config, drop=drop, loss_seed=loss_seed)
    return None if shaping == _NOTHING else shaping


def _build(config: TrafficShapingConfig, *, drop: bool, loss_seed: int) -> Shaping:
    return Shaping(
        bandwidth_bps=config.bandwidth_limit_bps,
        upload_bps=config.upload_bandwidth_limit_bps,
        loss_percent=config.packet_loss_percent,
        loss_seed=loss_seed,
        drop=drop,
        max_connections=config.max_connections,
        queue_timeout_ms=config.queue_timeout_ms,
        connection_timeout_ms=config.connection_timeout_ms,
        body_duration_ms=config.body_duration_ms,
        body_chunks=config.body_chunks if config.body_duration_ms else 0,
    )


_NOTHING = Shaping()
# The last config without draws, and its Shaping (both frozen; the pair is replaced
# whole, so a thread always reads a matching one).
_static: tuple[TrafficShapingConfig | None, Shaping | None] = (None, None)


def retransmission_stall(rng: random.Random, loss: float) -> tuple[float, bool]:
    """Seconds one lost segment costs, and whether TCP would give the connection up."""
    stall, rto = 0.0, INITIAL_RTO_S
    for _ in range(MAX_RETRANSMISSIONS):
        stall += rto
        rto = min(rto * 2.0, MAX_RTO_S)
        if rng.random() >= loss:
            return stall, False
    return stall, True


def _segments_until_loss(rng: random.Random, loss: float) -> int:
    """Whole segments sent before the next lost one: geometric, one draw per loss."""
    if loss >= 1.0:
        return 0
    return int(math.log(1.0 - rng.random()) / math.log(1.0 - loss))


def sleep_until(
    due: float,
    deadline: float | None,
    clock: Clock = time.monotonic,
    sleep: Sleep = hold,
) -> str:
    """Sleep until ``due``: DUE; DEADLINE (after sleeping to it) if ``deadline`` comes
    first; RELEASED if ``sleep`` was released before either."""
    now = clock()
    if deadline is not None and due > deadline:
        if deadline > now and sleep(deadline - now) is False:
            return RELEASED
        return DEADLINE
    if due > now and sleep(due - now) is False:
        return RELEASED
    return DUE


class PacedBody:
    """Paces a response body to a byte rate, stalls it for lost segments, and cuts it
    at the connection deadline; ``close()`` always closes the app's iterable.

    Large app chunks are re-chunked into ``PACE_INTERVAL_S`` worth of bytes; nothing is
    buffered beyond the chunk in hand. Slice ``k`` leaves at ``start + bytes_before_k /
    rate`` (plus any loss stalls), so sleep errors do not add up. A released wait
    (chaos off meanwhile) ends the shaping: the rest goes out at full speed, uncut.
    """

    def __init__(
        self,
        inner: Iterable[bytes],
        shaping: Shaping,
        connection: _sockets.Connection,
        *,
        started: float,
        on_cut: Callable[[], None] | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = hold,
    ) -> None:
        self._inner = inner
        self._bps = shaping.bandwidth_bps
        self._loss = shaping.loss_percent / 100.0
        self._rng = random.Random(shaping.loss_seed)
        timeout = shaping.connection_timeout_ms
        self._deadline = started + timeout / 1000.0 if timeout else None
        self._connection = connection
        self._on_cut = on_cut
        self._clock = clock
        self._sleep = sleep

    def __iter__(self) -> Iterator[bytes]:
        return self._paced()

    def _paced(self) -> Iterator[bytes]:
        bps = self._bps
        step = max(1, int(bps * PACE_INTERVAL_S)) if bps else None
        next_loss = self._loss_offset(0) if self._loss else None
        origin: float | None = None
        sent = 0
        chunks = iter(self._inner)
        for chunk in chunks:
            if not chunk:
                yield chunk
                continue
            offset = 0
            while offset < len(chunk):
                if origin is None:
                    origin = self._clock()
                if next_loss is not None and sent == next_loss:
                    stall, gave_up = retransmission_stall(self._rng, self._loss)
                    waited = self._wait_until(self._clock() + stall)
                    if waited == RELEASED:
                        yield chunk[offset:]
                        yield from chunks
                        return
                    if waited == DEADLINE or gave_up:
                        self._cut()
                        return
                    origin += stall
                    next_loss = self._loss_offset(sent // SEGMENT_BYTES + 1)
                size = len(chunk) - offset
                if step is not None:
                    size = min(size, step)
                if next_loss is not None:
                    size = min(size, next_loss - sent)
                due = origin + sent / bps if bps else self._clock()
                waited = self._wait_until(due)
                if waited == RELEASED:
                    yield chunk[offset:]
                    yield from chunks
                    return
                if waited == DEADLINE:
                    self._cut()
                    return
                yield chunk[offset : offset + size]
                offset += size
                sent += size

    def _loss_offset(self, from_segment: int) -> int:
        return (from_segment + _segments_until_loss(self._rng, self._loss)) * SEGMENT_BYTES

    def _wait_until(self, due: float) -> str:
        return sleep_until(due, self._deadline, self._clock, self._sleep)

    def _cut(self) -> None:
        """The deadline passed (or TCP gave up): say so, shut the connection mid-body."""
        if self._on_cut is not None:
            self._on_cut()
        if self._connection.reachable:
            raise self._connection.close("connection timeout")

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


class DribbleBody:
    """The body spread evenly over ``body_duration_ms`` in ``body_chunks`` writes, the
    headers at once (WireMock's chunked dribble delay); ``close()`` always closes the
    app's iterable.

    With a Content-Length of L bytes, write k (from 0) carries bytes ``k*L//n`` up to
    ``(k+1)*L//n`` and leaves at ``start + (k+1) * duration / n``, so the last byte
    lands when the time is up; an app chunk is split where the writes split it, nothing
    is buffered. Without a length, each of the app's chunks is a write on the same
    schedule, and the chunks after the n-th go at once. A released wait (chaos off
    meanwhile) sends the rest at full speed.
    """

    _inner: Iterable[bytes] = ()

    def __init__(
        self, shaping: Shaping, *, clock: Clock = time.monotonic, sleep: Sleep = hold
    ) -> None:
        self._duration_s = shaping.body_duration_ms / 1000.0
        self._writes = max(1, shaping.body_chunks)
        self._clock = clock
        self._sleep = sleep
        self.length: int | None = None  # the Content-Length sent (see ``seeing``)

    def wrap(self, inner: Iterable[bytes]) -> DribbleBody:
        """Dribble ``inner`` (the app's body); returns self."""
        self._inner = inner
        return self

    def seeing(self, start_response: Any) -> Any:
        """``start_response`` that notes the Content-Length the server is given."""

        def start_response_seen(status: str, headers: list[Any], exc_info: Any = None) -> Any:
            for name, value in headers:
                if name.lower() == "content-length" and value.strip().isdigit():
                    self.length = int(value)
            return start_response(status, headers, exc_info)

        return start_response_seen

    def __iter__(self) -> Iterator[bytes]:
        return self._dribbled()

    def _due(self, write: int) -> float:
        return (write + 1) * self._duration_s / self._writes

    def _dribbled(self) -> Iterator[bytes]:
        chunks = iter(self._inner)
        origin: float | None = None
        write = sent = 0
        n = self._writes
        for chunk in chunks:
            if origin is None:
                yield b""  # the headers at once
                origin = self._clock()
            if not chunk:
                continue
            length = self.length
            if length is None:  # one app chunk per write; past the n-th, at once
                if write < n and not self._wait(origin + self._due(write)):
                    yield chunk
                    yield from chunks
                    return
                write += 1
                yield chunk
                continue
            offset = 0
            while offset < len(chunk):
                # The write this byte belongs to, and where that write ends.
                write = min(n - 1, sent * n // length) if length else n - 1
                end = -(-(write + 1) * length // n) if length else sent + len(chunk)
                size = min(len(chunk) - offset, max(1, end - sent))
                if not self._wait(origin + self._due(write)):
                    yield chunk[offset:]
                    yield from chunks
                    return
                yield chunk[offset : offset + size]
                offset += size
                sent += size

    def _wait(self, due: float) -> bool:
        """Wait until ``due``: False when released (the rest goes at full speed)."""
        left = due - self._clock()
        return not (left > 0 and self._sleep(left) is False)

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


class PacedInput:
    """``wsgi.input`` read no faster than ``bps`` bytes per second (at full speed once
    a wait is released: chaos went off)."""

    def __init__(
        self,
        stream: Any,
        bps: int,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = hold,
    ) -> None:
        self._stream = stream
        self._bps = bps
        self._step = max(1, int(bps * PACE_INTERVAL_S))
        self._clock = clock
        self._sleep = sleep
        self._origin: float | None = None
        self._read = 0

    def _pace(self, data: bytes) -> bytes:
        if self._bps == 0:  # released
            return data
        if self._origin is None:
            self._origin = self._clock()
        self._read += len(data)
        delay = self._origin + self._read / self._bps - self._clock()
        if delay > 0 and self._sleep(delay) is False:
            self._bps = 0  # released: the rest at full speed
        return data

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (all when negative), arriving at the paced rate."""
        parts = []
        left = -1 if size is None or size < 0 else size
        while left != 0:
            step = self._step if self._bps else 65536
            want = step if left < 0 else min(left, step)
            data = self._stream.read(want)
            if not data:
                break
            parts.append(self._pace(data))
            if left > 0:
                left -= len(data)
        return b"".join(parts)

    def readline(self, size: int | None = -1) -> bytes:
        data: bytes = self._stream.readline(-1 if size is None else size)
        return self._pace(data)

    def readlines(self, hint: int = -1) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")
