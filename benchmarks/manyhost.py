"""Three hosts on one Redis (or a Redis Cluster): one limit, one state, hosts that die
and hosts cut off.

    python benchmarks/manyhost.py [--cluster] [--rounds 3] [--limit 100] [--seconds 4]

Three "hosts", each a ``mockforge serve -w 2`` with its own master and its own runtime
directory (``MOCKFORGE_RUNTIME_DIR``, where a server's embedded store lives), bound to
127.0.0.2, 127.0.0.3 and 127.0.0.4 on free ports, share one redis-server on 127.0.0.1,
or with ``--cluster`` a Redis Cluster of three masters there (``redis+cluster://``). All
three are given the same store URL; the third host's connections to each Redis node go
through a relay of ours (its network: ``ROUTED`` sends its connects to a node's address
to the relay instead) that can be cut (its connections closed, new ones closed at once:
every node's port blocked, for that host only) and mended. A round measures:

1. a global limit (``--limit`` requests a second, burst ``BURST``) under load spread
   over the three hosts (each offered the whole limit, 3 times it in all) for
   ``--seconds``: admitted against the most a limit can admit, ``BURST + limit * t``;
2. a management call on the first host reaching each host: a latency change (the time
   until each host's ``/status`` shows it, polled), then the release of requests held by
   that latency on every host by ``POST /disable`` on the first host (from the disable
   sent to each host's last answer);
3. the third host cut from Redis, the same load: the first two keep the shared limit,
   the third limits alone at its share (its 2 workers of the 6 it last knew: a third);
4. the third host killed (SIGKILL, its master and workers) and started again: how long
   until it serves, and what its ``/status`` ``state`` block says (joined, version).

tests/test_manyhost.py runs one round of the same with its bounds, on one Redis and on
a cluster; docs/state.md shows the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
WORKERS = 2  # per host
BURST = 20
CLIENTS = 4  # per host
HOLD_MS = 3000  # the latency of the propagation phase: held until released
HELD = 4  # held requests per host (a connection each: both workers, most likely)
CHAOS = """\
chaos:
  enabled: true
  rate_limit: {{enabled: true, requests_per_second: {limit}, burst_size: {burst}}}
"""


def free_port(address: str) -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (a master's workers), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rpartition(")")[2].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


class Redis:
    """A redis-server on 127.0.0.1 and a free port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port("127.0.0.1")
        self.url = f"redis://127.0.0.1:{self.port}/0"
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(workdir)]
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
        self.stop()
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Link:
    """A TCP relay from 127.0.0.1 to Redis for one host: ``cut`` closes every connection
    through it and closes new ones at once (a blocked port, as the host sees it: its
    calls fail), ``mend`` lets them through again."""

    def __init__(self, redis_port: int) -> None:
        self.target = ("127.0.0.1", redis_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.open = True
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self.listener.accept()
            except OSError:
                return  # closed
            if not self.open:
                near.close()
                continue
            try:
                far = socket.create_connection(self.target, timeout=5)
            except OSError:
                near.close()
                continue
            with self._lock:
                self._sockets |= {near, far}
            for source, sink in ((near, far), (far, near)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.open = False
        with self._lock:
            cut, self._sockets = self._sockets, set()
        for end in cut:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def mend(self) -> None:
        self.open = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


# A host's network, run in its process before ``mockforge serve``: a connect to a routed
# address (a Redis node's) reaches the address it is routed to (a Link) instead. Below
# redis-py (which resolves every node it connects to, those a cluster names included,
# with socket.getaddrinfo): the store under test is not touched, only its way out.
ROUTED = """\
import runpy, socket, sys
routes = dict(pair.split("=") for pair in sys.argv[1].split(","))
resolve = socket.getaddrinfo
def getaddrinfo(host, port, *args, **kwargs):
    host, _, port = routes.get(f"{host}:{port}", f"{host}:{port}").rpartition(":")
    return resolve(host, int(port), *args, **kwargs)
socket.getaddrinfo = getaddrinfo
sys.argv = sys.argv[1:]
runpy.run_module("mockforge_wsgi", run_name="__main__", alter_sys=True)
"""


class Host:
    """``mockforge serve -w 2`` bound to ``address``: its own master, its own runtime
    directory, the store URL it is given; ``routes`` (``host:port`` to ``host:port``)
    redirect its connections to Redis nodes through relays."""

    def __init__(
        self,
        address: str,
        workdir: Path,
        store: str,
        config: Path,
        routes: dict[str, str] | None = None,
    ) -> None:
        self.address = address
        self.workdir = workdir
        self.store = store
        self.config = config
        self.routes = routes or {}
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    def log(self) -> str:
        return "\n".join(
            path.read_text(errors="replace") for path in sorted(self.workdir.glob("serve-*.log"))
        )

    def launch(self) -> None:
        """Start it (not waiting for it: ``ready``)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "runtime").mkdir(exist_ok=True)
        self.port = free_port(self.address)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MOCKFORGE_")}
        env.update(
            MOCKFORGE_STORE=self.store,
            MOCKFORGE_RUNTIME_DIR=str(self.workdir / "runtime"),
            MOCKFORGE_DEBUG_HEADERS="1",  # X-Mockforge-Worker: which worker answered
        )
        args = [sys.executable, "-m", "mockforge_wsgi"]
        if self.routes:
            routes = ",".join(f"{near}={far}" for near, far in self.routes.items())
            args = [sys.executable, "-c", ROUTED, routes]
        args += ["serve", "--host", self.address]
        args += ["--port", str(self.port), "--workers", str(WORKERS), "--access-log", "off"]
        args += ["--config", str(self.config)]
        self.runs += 1
        with open(self.workdir / f"serve-{self.runs}.log", "wb") as log:
            self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=log, cwd=self.workdir)

    def ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.address} exited:\n{self.log()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if get(self.url + "/api/chaos/status", timeout=2)[0] == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{self.address} did not start in {timeout_s} s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL to its master and workers at once: nothing of it says goodbye."""
        assert self.proc is not None
        for pid in [*children(self.proc.pid), self.proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        self.terminate()
        self.wait()

    def terminate(self) -> None:
        """Ask it to stop (gunicorn's graceful shutdown, about half a second): ``wait``."""
        if self.proc is not None:
            self.proc.terminate()

    def wait(self) -> None:
        if self.proc is not None:
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
            self.proc = None


def get(url: str, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """One request on a connection of its own (so the kernel picks the worker)."""
    return call("GET", url, timeout=timeout)


def call(
    method: str, url: str, body: Any = None, timeout: float = 10.0
) -> tuple[int, dict[str, str], bytes]:
    host, _, rest = url.removeprefix("http://").partition("/")
    address, _, port = host.partition(":")
    connection = http.client.HTTPConnection(address, int(port), timeout=timeout)
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Connection": "close", "Content-Type": "application/json"}
        connection.request(method, "/" + rest, body=payload, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def api(method: str, host: Host, path: str, body: Any = None) -> Any:
    status, _, data = call(method, host.url + "/api/chaos" + path, body)
    if status != 200:
        raise RuntimeError(f"{method} {path} on {host.address}: {status} {data[:300]!r}")
    return json.loads(data)


class Cluster:
    """A Redis Cluster of three masters on 127.0.0.1 (tests/servers.py starts it: the
    tests share one with their other cluster tests)."""

    def __init__(self, workdir: Path) -> None:
        sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
        from servers import RedisClusterServers

        self.servers = RedisClusterServers(workdir / "cluster")
        self.servers.start()
        self.url = self.servers.url
        self.ports = self.servers.ports

    def stop(self) -> None:
        self.servers.stop()


class Store(NamedTuple):
    """What the fleet shares: one URL, and the ports of the Redis nodes behind it."""

    url: str
    ports: list[int]


class Fleet(NamedTuple):
    store: Store
    links: list[Link]  # the third host's way to each Redis node
    hosts: list[Host]
    limit: int

    def cut(self) -> None:
        """The third host cut from Redis: from every node of it."""
        for link in self.links:
            link.cut()

    def mend(self) -> None:
        for link in self.links:
            link.mend()


@contextlib.contextmanager
def fleet(workdir: Path, limit: int, store: Store | None = None) -> Iterator[Fleet]:
    """The three hosts on ``store`` (else on a Redis of their own), started together,
    stopped at the end."""
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is not installed (bash benchmarks/setup.sh)")
    config = workdir / "chaos.yaml"
    config.write_text(CHAOS.format(limit=limit, burst=BURST))
    redis = None
    if store is None:
        redis = Redis(workdir)
        store = Store(redis.url, [redis.port])
    links = [Link(port) for port in store.ports]
    routes = {
        f"127.0.0.1:{port}": f"127.0.0.1:{link.port}"
        for port, link in zip(store.ports, links, strict=True)
    }
    hosts = [
        Host(address, workdir / address, store.url, config, routes if n == 2 else None)
        for n, address in enumerate(ADDRESSES)
    ]
    try:
        for host in hosts:
            host.launch()
        for host in hosts:
            host.ready()
        yield Fleet(store, links, hosts, limit)
    finally:
        for host in hosts:  # all at once: each takes its time
            host.terminate()
        for host in hosts:
            host.wait()
        for link in links:
            link.close()
        if redis is not None:
            redis.stop()


# -- load --------------------------------------------------------------------------------


class Answer(NamedTuple):
    host: int  # index in the fleet
    sent: float  # time.monotonic()
    status: int  # 0: no answer
    worker: str  # X-Mockforge-Worker


def load(hosts: list[Host], per_host_rps: float, seconds: float) -> list[Answer]:
    """CLIENTS threads per host, each sending its share of ``per_host_rps`` on a
    connection per request for ``seconds``: bounded in count and in time."""
    answers: list[Answer] = []
    lock = threading.Lock()
    each = per_host_rps / CLIENTS
    start = time.monotonic() + 0.05

    def client(index: int, url: str) -> None:
        mine = []
        for n in range(int(seconds * each)):
            pause = start + n / each - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            sent = time.monotonic()
            try:
                status, headers, _ = get(url + "/api/test")
            except (OSError, http.client.HTTPException):
                status, headers = 0, {}
            mine.append(Answer(index, sent, status, headers.get("X-Mockforge-Worker", "")))
        with lock:
            answers.extend(mine)

    threads = [
        threading.Thread(target=client, args=(index, host.url))
        for index, host in enumerate(hosts)
        for _ in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 60)
    return answers


class Admitted(NamedTuple):
    admitted: int  # answers that were not 429
    most: float  # BURST(s) + rate * the span of the sends: the most a limit admits
    offered: int
    workers: int  # distinct workers that answered
    failed: int  # no answer, or a 5xx
    unharmed: int  # answered with chaos off (no X-Mockforge-Worker): no limit at all

    @property
    def ratio(self) -> float:
        return self.admitted / self.most


def admitted(answers: list[Answer], hosts: set[int], rate: float, burst: float) -> Admitted:
    mine = [answer for answer in answers if answer.host in hosts]
    span = max(a.sent for a in mine) - min(a.sent for a in mine)
    return Admitted(
        admitted=sum(1 for a in mine if a.status not in (429, 0)),
        most=burst + rate * span,
        offered=len(mine),
        workers=len({(a.host, a.worker) for a in mine}),
        failed=sum(1 for a in mine if a.status == 0 or a.status >= 500),
        unharmed=sum(1 for a in mine if a.status and not a.worker),
    )


# -- the phases ----------------------------------------------------------------------------


def one_limit(fleet: Fleet, seconds: float) -> Admitted:
    """The global limit under load spread over the three hosts, 3 times the limit."""
    answers = load(fleet.hosts, fleet.limit, seconds)
    return admitted(answers, {0, 1, 2}, fleet.limit, BURST)


def _until(check: Any, timeout_s: float = 5.0) -> float:
    """Poll ``check`` until true; the time it took."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout_s:
            raise RuntimeError(f"not true within {timeout_s} s")
        time.sleep(0.002)
    return time.monotonic() - start


def _latency_counter(host: Host) -> int:
    return int(api("GET", host, "/stats")["counters"].get("latency", 0))


def propagation(fleet: Fleet) -> tuple[list[float], list[float], list[int]]:
    """A latency change on the first host: per host, the time until its ``/status``
    shows it; then requests held by it on every host and chaos turned off on the first:
    per host, the time from the disable sent to its last held request's answer, and how
    many of its workers held one. Leaves chaos on, the latency off (a config that
    differs from the startup one in ``latency``)."""
    hosts = fleet.hosts
    try:
        return _propagation(hosts)
    finally:  # whatever happened: no hold left for the next phase
        api("PUT", hosts[1], "/config/latency", {"enabled": False})
        api("POST", hosts[2], "/enable")
        _until(lambda: all(api("GET", host, "/status")["enabled"] for host in hosts))


def _propagation(hosts: list[Host]) -> tuple[list[float], list[float], list[int]]:
    sent = time.monotonic()
    api("PUT", hosts[0], "/config/latency", {"enabled": True, "fixed_delay_ms": HOLD_MS})

    def shows(host: Host) -> bool:
        latency = api("GET", host, "/status")["effective_config"]["latency"]
        return bool(latency["enabled"] and latency["fixed_delay_ms"] == HOLD_MS)

    seen = []
    for host in hosts:  # one after the other: each host's time counts from the call
        _until(lambda host=host: shows(host))
        seen.append(time.monotonic() - sent)
    time.sleep(0.1)  # each host's other worker too (Redis' version: polled every 50 ms)
    before = _latency_counter(hosts[0])
    answered: list[list[tuple[float, int, str]]] = [[] for _ in hosts]

    def held(index: int) -> None:
        status, headers, _ = get(hosts[index].url + "/api/test", timeout=HOLD_MS / 1000 + 10)
        answered[index].append((time.monotonic(), status, headers.get("X-Mockforge-Worker", "")))

    threads = [
        threading.Thread(target=held, args=(index,), daemon=True)
        for index in range(len(hosts))
        for _ in range(HELD)
    ]
    for thread in threads:
        thread.start()
    _until(lambda: any(answered) or _latency_counter(hosts[0]) >= before + len(threads))
    time.sleep(0.2)  # asleep in their holds
    if any(answered):  # served with the config from before the change: not held
        raise RuntimeError(f"answered before the disable (host, at, status, worker): {answered}")
    off = time.monotonic()
    api("POST", hosts[0], "/disable")
    for thread in threads:
        thread.join(HOLD_MS / 1000 + 15)
    if any(status != 200 for mine in answered for _, status, _ in mine):
        raise RuntimeError(f"a held request was not the app's answer: {answered}")
    released = [max(at for at, _, _ in mine) - off for mine in answered]
    workers = [len({worker for _, _, worker in mine}) for mine in answered]
    return seen, released, workers


def cut_off(fleet: Fleet, seconds: float) -> tuple[Admitted, Admitted, float]:
    """The third host cut from Redis under the load of ``one_limit``: (the two others,
    the third, the third's expected share of the limit). Mended afterwards, and back on
    the shared limit."""
    # Every worker of the third host reads the state (chaos on) before the cut: an idle
    # worker looks at the version only when a request comes, and cut off it keeps
    # applying the last state it read (docs/state.md).
    load(fleet.hosts[2:], fleet.limit, 0.5)
    time.sleep(BURST / fleet.limit)  # the shared bucket full again
    fleet.cut()
    try:
        answers = load(fleet.hosts, fleet.limit, seconds)
    finally:
        fleet.mend()
    live = WORKERS * len(fleet.hosts)  # every worker served limited requests just before
    share = fleet.limit * WORKERS / live
    joined = admitted(answers, {0, 1}, fleet.limit, BURST)
    alone = admitted(answers, {2}, share, WORKERS * max(1, BURST // live))
    return joined, alone, share


class Rejoined(NamedTuple):
    serving_s: float  # from the new start to its first answer
    did: str | None
    why: str | None
    version: int
    versions: list[int]  # of the others, asked right after
    differs: list[str]
    latency: dict[str, Any]  # its effective latency config
    expected_latency: dict[str, Any]  # the first host's
    followed_s: float  # a disable on the first host, until the rejoined host shows it


def rejoin(fleet: Fleet) -> Rejoined:
    """The third host killed (master and workers) and started again: what it says and
    does. Marks the state first (a latency setting the startup config has not), and
    afterwards turns chaos off on the first host and on again."""
    hosts = fleet.hosts
    api("PUT", hosts[0], "/config/latency", {"enabled": False, "fixed_delay_ms": 1234})

    def latency_there() -> Any:  # its other worker may answer: within 50 ms, it knows
        return api("GET", hosts[0], "/status")["effective_config"]["latency"]

    _until(lambda: latency_there()["fixed_delay_ms"] == 1234)
    time.sleep(0.06)  # past every worker's next look
    expected = latency_there()
    hosts[2].kill()
    started = time.monotonic()
    hosts[2].launch()
    hosts[2].ready()
    serving_s = time.monotonic() - started
    status = api("GET", hosts[2], "/status")
    versions = [api("GET", host, "/status")["state"]["version"] for host in hosts[:2]]
    block = status["state"]
    sent = time.monotonic()
    api("POST", hosts[0], "/disable")
    _until(lambda: not api("GET", hosts[2], "/status")["enabled"])
    followed_s = time.monotonic() - sent
    api("POST", hosts[0], "/enable")
    return Rejoined(
        serving_s=serving_s,
        did=block["at_start"]["did"],
        why=block["at_start"]["why"],
        version=block["version"],
        versions=versions,
        differs=block["differs_from_startup"],
        latency=status["effective_config"]["latency"],
        expected_latency=expected,
        followed_s=followed_s,
    )


# -- the benchmark ---------------------------------------------------------------------------


def _spread(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    values = [v * scale for v in values]
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{mid:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="each on a fresh fleet")
    parser.add_argument("--limit", type=int, default=100, help="requests a second, global")
    parser.add_argument("--seconds", type=float, default=4.0, help="of each load phase")
    parser.add_argument(
        "--cluster", action="store_true", help="a Redis Cluster of three masters, not one Redis"
    )
    options = parser.parse_args()
    rows: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        rows.setdefault(name, []).append(value)

    for _ in range(options.rounds):
        with contextlib.ExitStack() as stack:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            store = None
            if options.cluster:
                cluster = Cluster(tmp)
                stack.callback(cluster.stop)
                store = Store(cluster.url, cluster.ports)
            hosts = stack.enter_context(fleet(tmp, options.limit, store))
            limit = one_limit(hosts, options.seconds)
            add("1. admitted / (burst + limit * t), all three hosts", limit.ratio)
            seen, released, _ = propagation(hosts)
            for n, address in enumerate(ADDRESSES):
                add(f"2. latency change on {ADDRESSES[0]} seen on {address} (ms)", seen[n])
            for n, address in enumerate(ADDRESSES):
                add(f"2. disable on {ADDRESSES[0]}: {address}'s held released (ms)", released[n])
            joined, alone, share = cut_off(hosts, options.seconds)
            add(
                "3. cut: the two others, admitted / (burst + limit * t)",
                joined.admitted / joined.most,
            )
            add(
                f"3. cut: {ADDRESSES[2]}, admitted / its share ({share:.0f}/s)",
                alone.admitted / alone.most,
            )
            back = rejoin(hosts)
            add("4. killed and restarted: serving after (s)", back.serving_s)
            add(
                "4. ... joined the shared state (1 = yes, same version)",
                float(back.did == "joined" and back.version == back.versions[0]),
            )
            add("4. ... a disable on the first host seen there (ms)", back.followed_s)
    ms = {name for name in rows if "(ms)" in name}
    width = max(len(name) for name in rows)
    print(
        f"\n3 hosts x mockforge serve -w {WORKERS}, "
        f"{'a Redis Cluster of 3 masters' if options.cluster else 'one redis-server'}; "
        f"limit {options.limit}/s "
        f"burst {BURST}, {options.seconds:g} s load phases, {options.rounds} round(s); "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; median (min-max)\n"
    )
    print(f"| {'figure'.ljust(width)} | value |\n| {'-' * width} | ---: |")
    for name, values in rows.items():
        shown = _spread(values, 1000, 0) if name in ms else _spread(values, digits=3)
        print(f"| {name.ljust(width)} | {shown} |")


if __name__ == "__main__":
    main()
