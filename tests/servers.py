"""Real servers for the tests: gunicorn and ``mockforge serve`` in a subprocess,
werkzeug's server in a thread, redis-server.

Every server binds 127.0.0.1 on a port the kernel picks; gunicorn inherits the
already listening socket (``fd://``), so there is no race for the port.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import requests
import requests.adapters
from gunicorn.config import KNOWN_SETTINGS
from werkzeug.serving import make_server

from mockforge_wsgi.testing import ChaosServer

T = TypeVar("T")

TESTS_DIR = Path(__file__).parent
READY_PATH = "/api/chaos/status"  # the management API: never subject to chaos


def _port_range() -> range:
    """This process's own ports: below the kernel's ephemeral range (where bind to port 0
    and every client connection take theirs), a slice of its own for each pytest-xdist
    worker, so a port found free stays free until the server binds it."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    first = 10_000
    size = (low - first) // max(count, 1)
    start = first + size * (int(worker) if worker.isdigit() else 0)
    return range(start, start + size)


_ports: Iterator[int] = iter(())


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on, for a server that must be told its
    port: from this process's own range (not reused), checked free by binding it."""
    global _ports
    for _ in range(2):
        for port in _ports:
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
        ports = _port_range()
        offset = random.randrange(len(ports))  # runs after this one start elsewhere
        _ports = iter([*ports[offset:], *ports[:offset]])
    raise RuntimeError("no free port in this process's range")


def needs_redis_server() -> None:
    """Skip where redis-server is missing; fail in CI, which installs it."""
    import pytest

    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is missing: .ci/run installs it with apt-get")
        pytest.skip("redis-server is not installed (apt-get install redis-server; CI has it)")


class Server:
    def __init__(self, url: str, log_path: Path | None = None) -> None:
        self.url = url
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path else ""


class _ClosingAdapter(requests.adapters.HTTPAdapter):
    """Closes its connections when closed. urllib3 2 only forgets its pools then (they
    close theirs when garbage collected): a response the test still holds keeps its
    pool, and a gthread worker stopping with a kept-alive connection open waits 2 s
    for it (gunicorn's STOP_KEEPALIVE_LINGER), in every such test."""

    def close(self) -> None:
        known = self.poolmanager.pools.keys()  # the container itself cannot be iterated
        pools = [self.poolmanager.pools.get(key) for key in known]
        super().close()
        for pool in pools:
            if pool is not None:
                pool.close()


# An app module (write it beside a config) whose /ready is answered before the
# middleware: a readiness poll reaches no chaos state (nor starts anything in it).
READY_APP = """\
from mockforge_wsgi.app import create_app

chaos = create_app()


def app(environ, start_response):
    if environ["PATH_INFO"] == "/ready":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ready"]
    return chaos(environ, start_response)
"""


def session() -> requests.Session:
    """A client that never consults proxy settings (tests talk to 127.0.0.1 only) and
    closes its connections when closed."""
    client = requests.Session()
    client.trust_env = False
    client.mount("http://", _ClosingAdapter())
    client.mount("https://", _ClosingAdapter())
    return client


def _wait_ready(
    url: str, proc: subprocess.Popen[bytes] | None = None, path: str = READY_PATH
) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        # Its connection closed at once: a gthread worker stopping with a keep-alive
        # connection open takes 2 s more (each gthread server the suite starts did).
        with contextlib.suppress(requests.RequestException), session() as http:
            if http.get(url + path, timeout=5).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError("server did not become ready in 30 s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Ask the server to stop (gunicorn shuts down gracefully on TERM), then insist.

    A gunicorn worker forked just before the TERM loses the master's TERM: it still runs
    the master's inherited handler until its own are installed (gunicorn's spawn_worker,
    then init_process), and the master then waits its whole graceful timeout (30 s). So
    after 3 s the master's children are asked themselves; by then their handlers are in.
    """
    proc.terminate()
    try:
        proc.wait(3)
        return
    except subprocess.TimeoutExpired:
        pass
    for child in _children(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGTERM)
    try:
        proc.wait(12)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _children(pid: int) -> list[int]:
    """The pids of a process's children (Linux's /proc; none elsewhere)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


_CAN_DISABLE_CONTROL_SOCKET = any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS)


@contextlib.contextmanager
def gunicorn_server(
    tmp_path: Path,
    *,
    env: dict[str, str] | None = None,
    worker_class: str = "sync",
    workers: int = 1,
    threads: int | None = None,
    app: str = "wsgi_apps:app",
    extra_args: tuple[str, ...] = (),
    chdir: Path = TESTS_DIR,
    ready_path: str = READY_PATH,
) -> Iterator[Server]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    listener.set_inheritable(True)
    port = listener.getsockname()[1]
    if threads is None:  # gunicorn runs gthread whenever threads > 1: sync means one
        threads = 1 if worker_class == "sync" else 4
    assert worker_class != "sync" or threads == 1, "gunicorn would run gthread workers"
    args = [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"fd://{listener.fileno()}",
        "--worker-class",
        worker_class,
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--chdir",
        str(chdir),
        "--timeout",
        "60",
        "--keep-alive",
        "5",
        "--log-level",
        "debug",
        *(["--no-control-socket"] if _CAN_DISABLE_CONTROL_SOCKET else []),
        *extra_args,
        app,
    ]
    log_path = tmp_path / f"gunicorn-{port}.log"
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("MOCKFORGE_")}
    child_env.update(env or {})
    with open(log_path, "wb") as log, listener:
        proc = subprocess.Popen(
            args, env=child_env, pass_fds=[listener.fileno()], stdout=log, stderr=log
        )
    # The server has the socket now. Kept open here too, a server that failed to start
    # would leave it listening: the readiness request connected and waited its whole
    # timeout (5 s) for an answer nobody would give, instead of being refused.
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, proc, ready_path)
        yield Server(url, log_path)
    finally:
        _stop(proc)


@contextlib.contextmanager
def werkzeug_server(app: Any, ready_path: str = READY_PATH) -> Iterator[Server]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        _wait_ready(url, path=ready_path)
        yield Server(url)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def assert_clean_log(server: Server) -> None:
    """Injected faults must not look like server errors in the log."""
    log = server.log()
    assert "Traceback" not in log, log
    assert "[ERROR]" not in log, log


@contextlib.contextmanager
def mockforge_serve(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """The real ``mockforge serve`` on a port the kernel picks, in ``tmp_path``, with none
    of this process's MOCKFORGE_* variables: the package's own ChaosServer."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("MOCKFORGE_")}
    child_env.update(env or {})
    log_path = tmp_path / f"serve-{time.monotonic_ns()}.log"
    server = ChaosServer(*args, env=child_env, inherit_env=False, cwd=tmp_path, log_path=log_path)
    try:
        server.start()
        yield Server(server.url, log_path)
    finally:
        server.stop()


class RedisServer:
    """A real redis-server on 127.0.0.1 for one test; can be stopped and started again."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.tmp_path = tmp_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.tmp_path)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1) as client,
            ):
                client.sendall(b"PING\r\n")
                if client.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None


def _redis_process(
    port: int, directory: Path, *settings: str, config: Path | None = None
) -> subprocess.Popen[bytes]:
    """A redis-server on 127.0.0.1:port, nothing persisted, answering PING (or raise)."""
    directory.mkdir(parents=True, exist_ok=True)
    args = ["redis-server", *([str(config)] if config else [])]
    args += ["--port", str(port), "--bind", "127.0.0.1"]
    args += ["--save", "", "--appendonly", "no", "--dir", str(directory), *settings]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=1) as client,
        ):
            client.sendall(b"PING\r\n")
            if client.recv(16).startswith(b"+PONG"):
                return proc
        time.sleep(0.02)
    _stop(proc)
    raise RuntimeError(f"redis-server on port {port} did not start")


def once_counted(read: Callable[[], T], done: Callable[[T], bool], seconds: float = 2.0) -> T:
    """``read()`` again until ``done`` holds of its value or ``seconds`` pass; the last value.

    A worker counts an answer (metrics, the breaker, the recorder) when it closes it,
    after the client has read it, and gunicorn writes its access line then too: a read
    right after the answer can miss it by a moment. Also for what comes at its own pace
    (a worker booting, another worker's next look at the state).
    The caller asserts on the value returned, so a count that never comes still fails.
    """
    deadline = time.monotonic() + seconds
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.02)
        value = read()
    return value


def _until(what: str, done: Any, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {seconds} s")
        time.sleep(0.02)


class RedisClusterServers:
    """A real Redis Cluster of ``masters`` redis-server processes on 127.0.0.1 (no
    replicas): slots split evenly by CLUSTER ADDSLOTSRANGE, nodes joined by CLUSTER
    MEET (quicker than ``redis-cli --cluster create``, which sleeps). A node can be
    stopped and started again with its slots (its nodes.conf is kept)."""

    def __init__(self, tmp_path: Path, masters: int = 3) -> None:
        self.ports = [free_port() for _ in range(masters)]
        self.tmp_path = tmp_path
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.ports[:2])
        self.url = f"redis+cluster://{hosts}/"  # two of three: any node finds the rest
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.bus_ports: dict[int, int] = {}

    def start(self) -> None:
        import redis

        for port in self.ports:
            self.start_node(port, wait=False)
        step = 16384 // len(self.ports)
        for i, port in enumerate(self.ports):
            last = 16383 if i == len(self.ports) - 1 else (i + 1) * step - 1
            with redis.Redis(port=port) as node:
                node.execute_command("CLUSTER", "ADDSLOTSRANGE", i * step, last)
        with redis.Redis(port=self.ports[0]) as first:
            for port in self.ports[1:]:
                bus = self.bus_ports[port]
                first.execute_command("CLUSTER", "MEET", "127.0.0.1", port, bus)
        self.wait_ok()

    def start_node(self, port: int, *, wait: bool = True) -> None:
        # The bus port is given: port + 10000 by default, which may be a client's.
        bus = self.bus_ports.setdefault(port, free_port())
        args: tuple[str, ...] = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
        args += ("--cluster-node-timeout", "1000", "--cluster-port", str(bus))
        self.procs[port] = _redis_process(port, self.tmp_path / str(port), *args)
        if wait:
            self.wait_ok()

    def stop_node(self, port: int) -> None:
        _stop(self.procs.pop(port))

    def node_of(self, key: str) -> int:
        """The port of the master that holds ``key``."""
        import redis

        with redis.Redis(port=self.ports[0]) as node:
            slot = int(node.execute_command("CLUSTER", "KEYSLOT", key))
        step = 16384 // len(self.ports)
        return self.ports[min(slot // step, len(self.ports) - 1)]

    def wait_ok(self) -> None:
        """Every node knows every other and says cluster_state:ok."""
        import redis

        def ok() -> bool:
            for port in self.ports:
                with redis.Redis(port=port) as node:
                    info = node.execute_command("CLUSTER", "INFO")
                    info = info.decode() if isinstance(info, bytes) else str(info)
                    if "cluster_state:ok" not in info:
                        return False
                    if f"cluster_known_nodes:{len(self.ports)}" not in info:
                        return False
            return True

        _until("the cluster is ok", ok)

    def flush(self) -> None:
        """Every key gone, on every master: a fresh cluster for the next module."""
        import redis

        for port in self.ports:
            with redis.Redis(port=port) as node:
                node.flushall()

    def stop(self) -> None:
        for port in list(self.procs):
            self.stop_node(port)


class RedisSentinelServers:
    """A primary, its replica and one sentinel (``redis-server --sentinel``: Debian's
    package has no redis-sentinel binary) on 127.0.0.1, watching service ``mymaster``.
    Down after 500 ms, so a failover takes about a second."""

    SERVICE = "mymaster"

    def __init__(self, tmp_path: Path) -> None:
        self.primary, self.replica, self.sentinel = (free_port() for _ in range(3))
        self.tmp_path = tmp_path
        self.url = f"redis+sentinel://127.0.0.1:{self.sentinel}/{self.SERVICE}/0"
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        import redis

        now = ("--repl-diskless-sync-delay", "0")  # a replica syncs at once, not in 5 s
        self.procs[self.primary] = _redis_process(self.primary, self.tmp_path / "primary", *now)
        self.procs[self.replica] = _redis_process(
            self.replica,
            self.tmp_path / "replica",
            *now,
            "--replicaof",
            "127.0.0.1",
            str(self.primary),
        )
        conf = self.tmp_path / "sentinel.conf"  # the sentinel rewrites it: its own file
        conf.write_text(
            f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.primary} 1\n"
            f"sentinel down-after-milliseconds {self.SERVICE} 500\n"
            f"sentinel failover-timeout {self.SERVICE} 3000\n"
        )
        self.procs[self.sentinel] = _redis_process(
            self.sentinel, self.tmp_path / "sentinel", "--sentinel", config=conf
        )

        def replica_known() -> bool:
            with redis.Redis(port=self.sentinel) as sentinel:
                replicas = sentinel.sentinel_slaves(self.SERVICE)
            return any(
                r["port"] == self.replica
                and r.get("master-link-status") == "ok"
                and "s_down" not in r["flags"]
                for r in replicas
            )

        _until("the sentinel sees the replica in sync", replica_known)

    def primary_port(self) -> int:
        """The port the sentinel names as the primary now."""
        import redis

        with redis.Redis(port=self.sentinel) as sentinel:
            return int(sentinel.sentinel_get_master_addr_by_name(self.SERVICE)[1])

    def kill_primary(self) -> int:
        """Stop the primary; wait until the sentinel has promoted the replica."""
        old = self.primary_port()
        _stop(self.procs.pop(old))
        _until("the sentinel promotes the replica", lambda: self.primary_port() != old)
        return old

    def stop(self) -> None:
        for port in list(self.procs):
            _stop(self.procs.pop(port))


# -- sync workers, deterministically ----------------------------------------------------------
#
# Which worker accepts a connection is the kernel's choice, so "N requests reach N
# workers" is luck. A gunicorn sync worker, though, serves one connection at a time: a
# worker that has read the start of a request and waits for the rest is held, and the
# next connection must go to another one. Whether a worker has read what was sent is
# seen in /proc/net/tcp: the server side of the connection has nothing left to read.


def _read_by_the_server(server_port: int, client_port: int) -> bool:
    """Whether all the client at 127.0.0.1:client_port sent to :server_port has arrived
    (the client's side has nothing unacknowledged) and been read (the server's side has
    nothing queued), as /proc/net/tcp shows the two ends."""
    server = f"0100007F:{server_port:04X}"
    client = f"0100007F:{client_port:04X}"
    queues = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if (fields[1], fields[2]) in ((server, client), (client, server)):
            unsent, unread = (int(half, 16) for half in fields[4].split(":"))
            queues[fields[1]] = unsent if fields[1] == client else unread
    return queues.get(client) == 0 and queues.get(server) == 0


@contextlib.contextmanager
def held_sync_workers(url: str, count: int, path: str = READY_PATH) -> Iterator[list[Any]]:
    """Holds ``count`` sync workers of the server at ``url``: each has read the head of a
    GET of ``path`` but for its last line end, and waits for it. Yields the held
    connections (``finish`` completes them); it waits (up to 30 s: workers boot one after
    another) until every one was read, so each is held by a worker of its own."""
    port = int(url.rsplit(":", 1)[1])
    held = []
    try:
        for _ in range(count):
            connection = socket.create_connection(("127.0.0.1", port), timeout=30)
            held.append(connection)
            head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            connection.sendall(head.encode())
        deadline = time.monotonic() + 30
        for connection in held:
            mine = connection.getsockname()[1]
            while not _read_by_the_server(port, mine):
                assert time.monotonic() < deadline, f"{count} sync workers never all took one"
                time.sleep(0.005)
        yield held
    finally:
        for connection in held:
            connection.close()


def finish(held: list[Any]) -> list[tuple[int, dict[str, str], bytes]]:
    """Completes the held requests at once and reads each answer: (status, headers, body)."""
    for connection in held:
        connection.sendall(b"\r\n")
    answers = []
    for connection in held:
        response = http.client.HTTPResponse(connection)
        response.begin()
        answers.append((response.status, dict(response.getheaders()), response.read()))
    return answers


def one_request_per_sync_worker(
    url: str, count: int, path: str = READY_PATH
) -> list[tuple[int, dict[str, str], bytes]]:
    """A GET of ``path`` to each of the ``count`` sync workers, every one of them for
    sure (not by the kernel's luck): ``held_sync_workers``, then ``finish``."""
    with held_sync_workers(url, count, path) as held:
        return finish(held)
