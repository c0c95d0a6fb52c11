"""The embedded store every worker of one server shares, found without any hook of ours.

A multi-process WSGI server (gunicorn with several workers, uWSGI processes, mod_wsgi
daemon processes) forks its workers from one master process. Each worker names the
store after its parent: ``<base>/<master pid>-<master start time>``, so every worker of
one server opens the same store, and a later server that happens to get a recycled pid
never attaches to a dead server's state. The first worker to open it seeds it with its
startup config (:meth:`Store.init_state` is atomic); the rest adopt it. Directories of
masters that are gone are removed when a new server's first worker arrives.

``MOCKFORGE_RUNTIME_DIR`` moves the base directory (default: ``/dev/shm`` where it
exists, memory-backed like the mmap it holds, else the temp directory).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

from .. import _env
from ._process import is_alive, start_time
from .base import StoreError
from .embedded import EmbeddedStore

__all__ = ["remove_stale", "server_store", "server_store_directory"]

_NAME = re.compile(r"(\d+)-(\d+)")


def base_directory() -> Path:
    """Where servers' stores live: one directory per user, private to them."""
    configured = _env.text(_env.RUNTIME_DIR)
    if configured:
        root = Path(configured)
    else:
        shm = Path("/dev/shm")
        root = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    base = root / f"mockforge-{os.getuid()}"
    try:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = base.lstat()
    except OSError as error:
        raise StoreError(f"cannot create {base}: {error}") from error
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise StoreError(f"{base} is not a directory of this user: refusing to share state there")
    return base


def server_store_directory(master_pid: int | None = None) -> Path:
    """The store directory of the server whose master is ``master_pid`` (default: this
    process's parent)."""
    pid = os.getppid() if master_pid is None else master_pid
    return base_directory() / f"{pid}-{start_time(pid)}"


def server_store(*, max_keys: int = 100_000, master_pid: int | None = None) -> EmbeddedStore:
    """The embedded store of this process's server, created by the first worker."""
    directory = server_store_directory(master_pid)
    if not directory.exists():  # the first worker of a new server tidies up
        remove_stale(directory.parent)
    return EmbeddedStore(directory, max_keys=max_keys)


def remove_stale(base: Path) -> list[Path]:
    """Remove the store directories of masters that are gone; returns what was removed."""
    removed: list[Path] = []
    try:
        entries = list(base.iterdir())
    except OSError:
        return removed
    for entry in entries:
        found = _NAME.fullmatch(entry.name)
        if found and not is_alive(int(found[1]), int(found[2])):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed
