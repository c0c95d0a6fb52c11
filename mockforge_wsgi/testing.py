"""Test-harness helpers: a real ``mockforge serve`` for a test run, and a unittest mixin.

Usage (unittest, for legacy harnesses)::

    class CheckoutTest(ChaosTestCase, unittest.TestCase):
        chaos_app = "myproject.wsgi:application"   # optional: wrap your app

        def test_survives_errors(self):
            with self.chaos.faults(http_errors=[503], probability=0.5):
                ...
"""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, ClassVar

from . import _env
from .client import ChaosClient

__all__ = ["ChaosServer", "ChaosTestCase"]

_LISTENING = re.compile(r"Listening at: (https?)://127\.0\.0\.1:(\d+)")


class ChaosServer:
    """``mockforge serve`` on 127.0.0.1 and a free port, started and stopped by us
    (``url`` is ``https://`` when ``args`` serve TLS: ``--certfile``).

    ``env`` is added to this process's environment (``inherit_env=False``: it is the
    whole environment); ``cwd`` is where the server runs; ``log_path`` keeps the
    server's log there (else a temporary file, removed at stop).
    """

    def __init__(
        self,
        *args: str,
        app: str | None = None,
        env: dict[str, str] | None = None,
        inherit_env: bool = True,
        cwd: str | os.PathLike[str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.args = [*args, *(["--app", app] if app else [])]
        self.env = {**(os.environ if inherit_env else {}), **(env or {})}
        self.cwd = cwd
        self.url = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._keep_log = log_path is not None
        self.log_path = Path(
            log_path
            if log_path is not None
            else tempfile.mkstemp(prefix="mockforge-serve-", suffix=".log")[1]
        )

    def start(self, timeout_s: float = 30.0) -> str:
        command = [sys.executable, "-m", "mockforge_wsgi", "serve", "--port", "0", *self.args]
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                command, env=self.env, stdout=log, stderr=log, cwd=self.cwd
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"mockforge serve exited:\n{self.log()}")
            found = _LISTENING.search(self.log())
            if found:
                self.url = f"{found.group(1)}://127.0.0.1:{found.group(2)}"
                if self._ready():
                    return self.url
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mockforge serve did not start in {timeout_s} s:\n{self.log()}")

    def _ready(self) -> bool:
        # Over TLS, our own child is asked whether a worker answers, not whether its
        # certificate is trusted here; a TLS error (no client certificate for a server
        # that demands one) comes from a worker too: ready.
        context = ssl._create_unverified_context() if self.url.startswith("https") else None
        try:
            with urllib.request.urlopen(
                self.url + "/api/chaos/status", timeout=5, context=context
            ):
                return True
        except OSError as error:
            reason = error.reason if isinstance(error, urllib.error.URLError) else error
            return isinstance(reason, ssl.SSLError)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)
            self._process = None
        if not self._keep_log:
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> ChaosServer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class ChaosTestCase:
    """unittest mixin: one server per test class (or ``chaos_url``), reset after each test."""

    chaos_url: ClassVar[str | None] = None  # a running server; else one is started
    chaos_app: ClassVar[str | None] = None  # module:app to wrap instead of the mock API
    chaos_server: ClassVar[ChaosServer | None] = None
    chaos: ClassVar[ChaosClient]

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()  # type: ignore[misc]
        url = cls.chaos_url or _env.text(_env.URL)
        if url is None:
            cls.chaos_server = ChaosServer(app=cls.chaos_app)
            url = cls.chaos_server.start()
        cls.chaos = ChaosClient(url)

    @classmethod
    def tearDownClass(cls) -> None:
        if cls.chaos_server is not None:
            cls.chaos_server.stop()
            cls.chaos_server = None
        super().tearDownClass()  # type: ignore[misc]

    def tearDown(self) -> None:
        self.chaos.reset()
        super().tearDown()  # type: ignore[misc]
