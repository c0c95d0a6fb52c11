"""ChaosMiddleware in-process: WSGI correctness under werkzeug's LintMiddleware."""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from werkzeug.middleware.lint import LintMiddleware
from werkzeug.test import Client
from wsgi_apps import base_app

from mockforge_wsgi import load_config
from mockforge_wsgi.config import ChaosConfig
from mockforge_wsgi.middleware import ChaosMiddleware
from mockforge_wsgi.outcome import OUTCOME_KEY
from mockforge_wsgi.plan import Plan


def chaos(**sections: Any) -> ChaosConfig:
    overrides: dict[str, Any] = {"enabled": True}
    for name, values in sections.items():
        overrides[name] = {"enabled": True, **values}
    return load_config(environ={}, overrides=overrides)


class Body:
    """A response iterable that records whether the server (or middleware) closed it."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.chunks)

    def close(self) -> None:
        self.closed = True


class RecordingApp:
    def __init__(self, chunks: list[bytes] | None = None) -> None:
        self.chunks = chunks if chunks is not None else [b"hello ", b"world"]
        self.calls = 0
        self.bodies: list[Body] = []
        self.plans: list[Plan | None] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        self.calls += 1
        outcome = environ.get(OUTCOME_KEY)
        self.plans.append(outcome.plan if outcome is not None else None)
        length = sum(map(len, self.chunks))
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(length))])
        body = Body(self.chunks)
        self.bodies.append(body)
        return body


def linted(app: Any, config: ChaosConfig, **kwargs: Any) -> tuple[Client, ChaosMiddleware]:
    """Lint on both sides: what the server sees and what the wrapped app sees."""
    middleware = ChaosMiddleware(LintMiddleware(app), config=config, **kwargs)
    return Client(LintMiddleware(middleware)), middleware


def test_disabled_passes_through_untouched() -> None:
    app = RecordingApp()
    client, _ = linted(app, ChaosConfig(enabled=False))
    response = client.get("/", buffered=True)
    assert response.data == b"hello world"
    assert "X-Mockforge-Chaos" not in response.headers
    assert app.plans == [None]
    assert app.bodies[0].closed


def test_enabled_without_chaos_passes_through_with_plan() -> None:
    app = RecordingApp()
    client, _ = linted(app, chaos(latency={"probability": 0.0, "fixed_delay_ms": 100}))
    response = client.get("/", buffered=True)
    assert response.data == b"hello world"
    assert "X-Mockforge-Chaos" not in response.headers
    assert app.plans == [Plan()]
    assert app.bodies[0].closed


def test_latency_delays_and_annotates() -> None:
    app = RecordingApp()
    client, _ = linted(app, chaos(latency={"fixed_delay_ms": 30}))
    start = time.perf_counter()
    response = client.get("/", buffered=True)
    assert time.perf_counter() - start >= 0.03
    assert response.headers["X-Mockforge-Chaos"] == "latency=30ms"
    assert response.data == b"hello world"
    assert app.plans == [Plan(delay_ms=30.0)]
    assert app.bodies[0].closed


def test_http_error_answers_without_calling_the_app() -> None:
    app = RecordingApp()
    config = chaos(fault_injection={"http_errors": [502], "http_error_probability": 1.0})
    client, _ = linted(app, config)
    response = client.post("/", data=b"x" * 1000)
    assert response.status_code == 502
    assert response.headers["X-Mockforge-Chaos"] == "fault=http_502"
    assert response.headers["Content-Length"] == str(len(response.data))
    assert json.loads(response.data)["fault"] == "http_502"
    assert app.calls == 0


def test_timeout_holds_then_504() -> None:
    config = chaos(fault_injection={"timeout_probability": 1.0, "timeout_ms": 100})
    client, _ = linted(RecordingApp(), config)
    start = time.perf_counter()
    response = client.get("/", buffered=True)
    held = time.perf_counter() - start
    assert 0.1 <= held < 0.25, held  # held as long as asked: not less, nor twice as long
    assert response.status_code == 504


def test_connection_error_without_a_socket_falls_back_to_a_cut_response() -> None:
    config = chaos(fault_injection={"connection_error_probability": 1.0})
    middleware = ChaosMiddleware(RecordingApp(), config=config)
    response = Client(middleware).get("/", buffered=True)
    assert response.status_code == 502
    assert response.headers["X-Mockforge-Chaos"] == "fault=connection_reset, fallback=cut"
    assert int(response.headers["Content-Length"]) > 0
    assert response.data == b""


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        pytest.param([b"abcd", b"efgh"], b"abcd", id="at-chunk-boundary"),
        pytest.param([b"abcdefgh"], b"abcd", id="inside-a-chunk"),
        pytest.param([b"ab", b"cdefgh"], b"abcd", id="across-chunks"),
    ],
)
def test_partial_without_socket_stops_short_and_closes(
    chunks: list[bytes], expected: bytes
) -> None:
    app = RecordingApp(chunks)
    config = chaos(fault_injection={"partial_response_probability": 1.0})
    # No lint here: stopping short of Content-Length is the point.
    middleware = ChaosMiddleware(app, config=config)
    response = Client(middleware).get("/", buffered=True)
    assert response.headers["Content-Length"] == "8"
    assert response.headers["X-Mockforge-Chaos"] == "fault=partial_response"
    assert response.data == expected
    assert app.bodies[0].closed


def test_partial_through_write_callable() -> None:
    def writer_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        write = start_response("200 OK", [("Content-Length", "10")])
        write(b"0123456789")
        return []

    config = chaos(fault_injection={"partial_response_probability": 1.0})
    response = Client(ChaosMiddleware(writer_app, config=config)).get("/")
    assert response.data == b"01234"


def test_write_callable_passes_through_annotation() -> None:
    def writer_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        write = start_response("200 OK", [("Content-Length", "5")])
        write(b"he")
        return [b"llo"]

    config = chaos(latency={"fixed_delay_ms": 1})
    response = Client(ChaosMiddleware(writer_app, config=config)).get("/")
    assert response.data == b"hello"
    assert response.headers["X-Mockforge-Chaos"] == "latency=1ms"


def test_exc_info_reaches_the_server() -> None:
    seen: list[Any] = []

    def failing_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            start_response(
                "500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info()
            )
        return [b"failed"]

    def server_start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        seen.append((status, exc_info))
        return lambda data: None

    middleware = ChaosMiddleware(failing_app, config=chaos(latency={"fixed_delay_ms": 1}))
    environ = {"PATH_INFO": "/", "REQUEST_METHOD": "GET"}
    assert list(middleware(environ, server_start_response)) == [b"failed"]
    assert seen[0] == ("200 OK", None)
    assert seen[1][0] == "500 Internal Server Error"
    assert isinstance(seen[1][1][1], RuntimeError)


@pytest.mark.parametrize(
    ("path", "exempt"),
    [
        pytest.param("/api/chaos", True, id="prefix"),
        pytest.param("/api/chaos/status", True, id="below"),
        pytest.param("/metrics", True, id="metrics"),
        pytest.param("/api/chaosmonkey", False, id="not-a-segment"),
        pytest.param("/api/test", False, id="other"),
    ],
)
def test_exempt_paths_are_never_faulted(path: str, exempt: bool) -> None:
    config = chaos(fault_injection={"http_errors": [500], "http_error_probability": 1.0})
    client, _ = linted(RecordingApp(), config, api_prefix=None)
    assert (client.get(path).status_code == 200) is exempt


def test_same_seed_replays_the_same_decisions() -> None:
    config = chaos(
        latency={"random_delay_range_ms": [0, 2], "probability": 0.5},
        fault_injection={"http_error_probability": 0.3},
    )

    def annotations(seed: int) -> list[str]:
        middleware = ChaosMiddleware(base_app, config=config, rng=random.Random(seed))
        client = Client(middleware)
        return [
            client.get("/", buffered=True).headers.get("X-Mockforge-Chaos", "") for _ in range(40)
        ]

    assert annotations(3) == annotations(3)
    assert annotations(3) != annotations(4)


def test_seed_in_config_seeds_the_default_rng() -> None:
    config = load_config(environ={}, overrides={"seed": 11, "enabled": True})
    first = ChaosMiddleware(base_app, config=config).rng.random()
    assert first == random.Random(11).random()


def test_internal_error_fails_open_and_is_counted() -> None:
    class BrokenRandom(random.Random):
        def random(self) -> float:
            raise RuntimeError("bug in our own code")

    app = RecordingApp()
    config = chaos(latency={"fixed_delay_ms": 5, "probability": 0.5})
    middleware = ChaosMiddleware(app, config=config, rng=BrokenRandom())
    response = Client(middleware).get("/", buffered=True)
    assert response.status_code == 200
    assert response.data == b"hello world"
    assert middleware.internal_errors == 1


def test_config_can_be_replaced_live() -> None:
    app = RecordingApp()
    client, middleware = linted(app, ChaosConfig())
    assert client.get("/", buffered=True).status_code == 200
    middleware.config = chaos(fault_injection={"http_errors": [503], "http_error_probability": 1})
    assert client.get("/", buffered=True).status_code == 503


def test_head_is_never_planned_a_partial_response() -> None:
    app = RecordingApp()
    config = chaos(fault_injection={"partial_response_probability": 1.0})
    middleware = ChaosMiddleware(app, config=config)
    client = Client(middleware)
    response = client.head("/")
    assert response.status_code == 200
    assert "X-Mockforge-Chaos" not in response.headers  # nothing was cut: nothing said
    assert middleware.store.counters().get("partial_response") is None
    assert client.get("/", buffered=True).headers["X-Mockforge-Chaos"] == "fault=partial_response"


def test_several_processes_share_the_store_of_their_server(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mockforge_wsgi._env import RUNTIME_DIR
    from mockforge_wsgi.state import EmbeddedStore, MemoryStore
    from mockforge_wsgi.state.server_store import server_store_directory

    monkeypatch.setenv(RUNTIME_DIR, str(tmp_path))
    monkeypatch.delenv("MOCKFORGE_STORE", raising=False)
    single = ChaosMiddleware(base_app, config=chaos())
    Client(single).get("/")
    assert isinstance(single.store, MemoryStore)  # one process: the fast in-memory path
    multi = ChaosMiddleware(base_app, config=chaos())
    Client(multi).get("/", environ_overrides={"wsgi.multiprocess": True})
    assert isinstance(multi.store, EmbeddedStore)
    assert multi.store.path.parent == server_store_directory()
    assert multi.engine.store is multi.store
    # The limiter reaches it through the layer that limits locally while it is down.
    assert getattr(multi.limiter.store, "inner", None) is multi.store
    other = ChaosMiddleware(base_app, config=ChaosConfig())  # a worker of the same server
    Client(other).get("/", environ_overrides={"wsgi.multiprocess": True})
    assert other.config.enabled  # adopted the first worker's state


def test_forced_memory_under_several_processes_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from mockforge_wsgi.state import MemoryStore

    middleware = ChaosMiddleware(base_app, config=chaos(), store=MemoryStore())
    client = Client(middleware)
    with caplog.at_level("WARNING", logger="mockforge_wsgi"):
        for _ in range(3):
            client.get("/", environ_overrides={"wsgi.multiprocess": True})
    assert [r.getMessage() for r in caplog.records if "per-process memory" in r.getMessage()]
    assert len(caplog.records) == 1
    assert isinstance(middleware.store, MemoryStore)  # named: used as given


def test_requests_that_arrive_while_the_server_store_opens_wait_for_it(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from mockforge_wsgi import decide as decide_module
    from mockforge_wsgi.state import EmbeddedStore

    opening, release = threading.Event(), threading.Event()

    def slow_server_store(max_keys: int) -> EmbeddedStore:
        opening.set()
        assert release.wait(5)  # opening the shared file takes a while
        return EmbeddedStore(tmp_path, max_keys=max_keys)

    monkeypatch.setattr(decide_module, "server_store", slow_server_store)
    monkeypatch.delenv("MOCKFORGE_STORE", raising=False)
    middleware = ChaosMiddleware(base_app, config=chaos())
    several = {"wsgi.multiprocess": True}
    first = threading.Thread(target=lambda: Client(middleware).get("/", environ_overrides=several))
    first.start()
    assert opening.wait(5)  # the first request is opening the store now
    second = threading.Thread(
        target=lambda: Client(middleware).post("/api/chaos/disable", environ_overrides=several)
    )
    second.start()
    second.join(0.2)
    assert second.is_alive()  # the race happened: the management call waits for the store
    release.set()
    first.join(5)
    second.join(5)
    assert not first.is_alive() and not second.is_alive()
    _, state = EmbeddedStore(tmp_path).load_state()
    assert state is not None and state["enabled"] is False  # the change reached the shared store


def _ids_in_child(out: Any) -> None:
    from mockforge_wsgi._headers import new_request_id

    out.put([new_request_id() for _ in range(3)])


def test_request_ids_are_unique_in_a_process_and_across_forked_workers() -> None:
    import multiprocessing

    from mockforge_wsgi._headers import new_request_id

    here = [new_request_id() for _ in range(1000)]
    assert len(set(here)) == 1000
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in here)
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    children = [context.Process(target=_ids_in_child, args=(results,)) for _ in range(2)]
    for child in children:
        child.start()
    theirs = [results.get(timeout=10) for _ in children]
    for child in children:
        child.join(10)
    # Each forked worker counts from its own prefix: no id of one is another's.
    every = here + theirs[0] + theirs[1]
    assert len(set(every)) == len(every)
    assert len({i[:8] for i in (here[0], theirs[0][0], theirs[1][0])}) == 3


def test_an_admitted_request_carries_rate_limit_headers_and_an_id_but_no_annotation() -> None:
    config = load_config(
        environ={},
        overrides={
            "enabled": True,
            "rate_limit": {"enabled": True, "requests_per_second": 100, "burst_size": 5},
        },
    )
    client = Client(ChaosMiddleware(base_app, config=config))
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["RateLimit-Remaining"] == "4"
    assert response.headers["X-RateLimit-Limit"] == "5"
    assert len(response.headers["X-Mockforge-Request-Id"]) == 16
    assert "X-Mockforge-Chaos" not in response.headers


def test_the_chaos_core_runs_without_importing_flask() -> None:
    """Decide and apply need no web framework: Flask comes in with the management API."""
    import subprocess

    script = """
import sys
from werkzeug.test import Client
from mockforge_wsgi import load_config
from mockforge_wsgi.middleware import ChaosMiddleware
def app(environ, start_response):
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
latency = {"enabled": True, "fixed_delay_ms": 1}
config = load_config(environ={}, overrides={"enabled": True, "latency": latency})
response = Client(ChaosMiddleware(app, config=config, api_prefix=None)).get("/")
assert response.headers["X-Mockforge-Chaos"] == "latency=1ms", response.headers
assert "flask" not in sys.modules, "flask was imported"
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
