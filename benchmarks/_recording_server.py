"""The server the recorder benchmarks load: `mockforge serve --workers 4 --recorder` on a
free 127.0.0.1 port in a temporary folder, ready when it answers; stopped (TERM) at the
end. Shared by recorder_lag.py and verdict_latency.py."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import requests


@contextlib.contextmanager
def recording_server(prefix: str, database: str) -> Iterator[str]:
    """The server's URL while it runs; its log is ``serve.log`` beside the database."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "mockforge_wsgi", "serve", "--port", str(port)]
    command += ["--workers", "4", "--recorder", "--recorder-db", str(workdir / database)]
    url = f"http://127.0.0.1:{port}"
    with open(workdir / "serve.log", "wb") as log:
        serve = subprocess.Popen(command, stdout=log, stderr=log, cwd=workdir)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if requests.get(url + "/health", timeout=2).ok:
                        break
                except requests.RequestException:
                    time.sleep(0.1)
            yield url
        finally:
            serve.send_signal(signal.SIGTERM)
            serve.wait(30)
