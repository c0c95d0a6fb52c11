"""What gunicorn says about the process that loads this app: its configured worker
count, and whether the process is one of its workers (after fork) or its master
(``--preload``).

gunicorn hands the app nothing at load, but it loads the app from its own objects: a
worker's ``load_wsgi`` (or the master's, with ``--preload``) calls the application's
``wsgi()``, so their frames are on the stack while the app is built. The stack is read
once, when a :class:`~mockforge_wsgi.middleware.ChaosMiddleware` is built; plain
``gunicorn -w N`` and ``mockforge serve`` alike, no hook and no variable.

Usage::

    loaded = loaded_by_gunicorn()   # None: not being loaded by gunicorn
    if loaded is not None and loaded.in_worker:
        ...                          # a worker after fork; loaded.workers configured
"""

from __future__ import annotations

import sys
from types import FrameType
from typing import NamedTuple

__all__ = ["Loaded", "loaded_by_gunicorn"]

# Frames looked at, at most: gunicorn's are within ~30 of the app's constructor.
_DEPTH = 200


class Loaded(NamedTuple):
    """gunicorn's ``cfg.workers`` (as configured: ``-w``, ``WEB_CONCURRENCY``), and
    whether the app is being loaded in a worker (False: in the master, ``--preload``)."""

    workers: int
    in_worker: bool


def loaded_by_gunicorn() -> Loaded | None:
    """gunicorn's loading of this app, read from the stack; None when gunicorn is not
    loading it (imported otherwise, or built later, on a request)."""
    base = sys.modules.get("gunicorn.workers.base")
    app_base = sys.modules.get("gunicorn.app.base")
    if base is None and app_base is None:
        return None
    worker_class = getattr(base, "Worker", None)
    app_class = getattr(app_base, "BaseApplication", None)
    frame: FrameType | None = sys._getframe(1)
    workers: int | None = None
    for _ in range(_DEPTH):
        if frame is None:
            break
        owner = frame.f_locals.get("self")
        if worker_class is not None and isinstance(owner, worker_class):
            return Loaded(_workers(owner), True)
        if workers is None and app_class is not None and isinstance(owner, app_class):
            workers = _workers(owner)
        frame = frame.f_back
    return None if workers is None else Loaded(workers, False)


def _workers(owner: object) -> int:
    try:
        return max(1, int(owner.cfg.workers))  # type: ignore[attr-defined]
    except Exception:
        return 1
