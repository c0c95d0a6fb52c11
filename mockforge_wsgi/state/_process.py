"""Who a process is, beyond its pid: pids are recycled, a pid plus its start time is not."""

from __future__ import annotations

import os

__all__ = ["is_alive", "start_time"]


def start_time(pid: int) -> int:
    """When ``pid`` started, in clock ticks since boot (Linux ``/proc``); 0 when unknown
    (no such process, or no ``/proc``)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            raw = stat.read()
    except OSError:
        return 0
    # Field 22; the command name (field 2) is in parentheses and may hold spaces.
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return 0


def is_alive(pid: int, started: int) -> bool:
    """Whether the process ``pid`` that started at ``started`` still runs (a recycled
    pid with another start time does not count; ``started`` 0: the pid alone decides)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    if not started:
        return True
    now = start_time(pid)
    return now == 0 or now == started
