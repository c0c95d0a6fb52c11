"""Who a process is, beyond its pid: pids are recycled, a pid plus its start time is not."""

from __future__ import annotations

import os

__all__ = ["is_alive", "parent_pid", "start_time"]


def start_time(pid: int) -> int:
    """When ``pid`` started, in clock ticks since boot (Linux ``/proc``); 0 when unknown
    (no such process, or no ``/proc``)."""
    return _stat(pid)[1]


def parent_pid(pid: int) -> int:
    """The parent of ``pid`` (Linux ``/proc``); 0 when unknown."""
    return _stat(pid)[2]


def _stat(pid: int) -> tuple[str, int, int]:
    """State letter, start time and parent of ``pid`` from ``/proc``; ("", 0, 0) when
    unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            raw = stat.read()
    except OSError:
        return "", 0, 0
    # Fields 3, 22 and 4; the command name (field 2) is in parentheses and may hold spaces.
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return fields[0].decode(), int(fields[19]), int(fields[1])
    except (IndexError, ValueError):
        return "", 0, 0


def is_alive(pid: int, started: int) -> bool:
    """Whether the process ``pid`` that started at ``started`` still runs: a recycled
    pid with another start time does not, nor a zombie not yet reaped by its parent
    (``started`` 0: the pid alone decides)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    state, now, _ = _stat(pid)
    if state in ("Z", "X"):
        return False
    return not started or now == 0 or now == started
