"""chaos.state_at_start: what a starting server does with a shared store that already
holds a chaos state (issue 32), per store and per choice, with real servers.

The issue's sequence: a server with ``--chaos --chaos-latency-ms 300`` is stopped, then
a server with no chaos starts on the same store. ``auto`` and ``startup`` start from the
second server's startup config (no other server is alive); ``adopt`` joins the first
one's chaos; each says which in one line of its output.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from servers import RedisServer, Server, gunicorn_server, mockforge_serve, once_counted, session

from mockforge_wsgi import _state_start
from mockforge_wsgi.config import ChaosConfig, ConfigError, LatencyConfig, load_config
from mockforge_wsgi.engine import ScenarioEngine
from mockforge_wsgi.state import EmbeddedStore, MemoryStore
from mockforge_wsgi.state._process import parent_pid
from mockforge_wsgi.state.base import StartedState, start_decision

CHAOS = ("--chaos", "--chaos-latency-ms", "300")
STARTED = "started the shared state from this server's startup config"
JOINED = "joined the shared chaos state"


# -- the rule, the setting, the words (no server) ---------------------------------------


@pytest.mark.parametrize(
    ("mode", "exists", "own", "others", "why"),
    [
        ("auto", False, False, True, "empty"),
        ("startup", True, True, False, "own server"),  # a worker of a started server
        ("adopt", True, False, False, "adopt"),
        ("startup", True, False, True, "startup"),
        ("auto", True, False, True, "live servers"),
        ("auto", True, False, False, "no live server"),
    ],
)
def test_the_rule(mode: str, exists: bool, own: bool, others: bool, why: str) -> None:
    assert start_decision(mode, exists=exists, own=own, others=others) == why


@pytest.mark.parametrize(
    ("source", "environ", "overrides"),
    [
        ("MOCKFORGE_CHAOS_STATE_AT_START", {"MOCKFORGE_CHAOS_STATE_AT_START": "never"}, None),
        ("--state-at-start", {}, {"state_at_start": "never"}),
    ],
)
def test_a_wrong_choice_names_the_field_the_value_and_the_choices(
    source: str, environ: dict[str, str], overrides: dict[str, Any] | None
) -> None:
    sources = {"chaos.state_at_start": source} if overrides else None
    with pytest.raises(ConfigError) as caught:
        load_config(environ=environ, overrides=overrides, override_sources=sources)
    assert caught.value.problems == [
        f"chaos.state_at_start: 'never' is not one of auto, adopt, startup (from {source})"
    ]


def test_yaml_sets_it(tmp_path: Path) -> None:
    path = tmp_path / "chaos.yaml"
    path.write_text("chaos:\n  state_at_start: startup\n")
    assert load_config(path, environ={}).state_at_start == "startup"
    assert ChaosConfig().state_at_start == "auto"


def test_differences_name_what_the_state_has_that_the_startup_one_has_not() -> None:
    startup = ScenarioEngine(ChaosConfig())
    changed = ScenarioEngine(
        ChaosConfig(enabled=True, latency=LatencyConfig(enabled=True, fixed_delay_ms=300))
    )
    assert _state_start.differences(changed.state().to_dict(), startup.state().to_dict()) == [
        "enabled",
        "latency",
    ]
    other = ScenarioEngine(ChaosConfig(state_at_start="startup"))
    assert _state_start.differences(other.state().to_dict(), startup.state().to_dict()) == []


def test_the_lines() -> None:
    line = _state_start.joined_line(
        StartedState(False, "live servers", ("web-1:40",)),
        "auto",
        version=7,
        written_ago_s=75,
        written_by="web-1:40",
        diffs=["enabled", "latency"],
    )
    assert line == (
        "joined the shared chaos state (version 7, written 1 min ago by web-1:40; differs "
        "from this server's startup config in: enabled, latency; state_at_start: auto, "
        "live: web-1:40)"
    )
    assert _state_start.started_line(StartedState(True, "no live server"), "auto") == (
        f"{STARTED} (state_at_start: auto, and no other server is alive on the store)"
    )


def test_memory_each_process_starts_from_its_startup_config() -> None:
    store = MemoryStore()
    first = ScenarioEngine(ChaosConfig(enabled=True), store=store)
    first.set_enabled(True)
    assert _state_start.start_mode(store, "adopt") is None  # nothing to decide
    status = ScenarioEngine(ChaosConfig(), store=MemoryStore()).status()
    assert status["enabled"] is False
    assert status["state"]["started_from"]["this_server"] is True
    assert status["state"]["differs_from_startup"] == []


def _holder(directory: Path) -> subprocess.Popen[bytes]:
    """Another live process using the embedded store (it holds a row), until killed."""
    code = (
        "import sys, time; from mockforge_wsgi.state import EmbeddedStore; "
        "s = EmbeddedStore(sys.argv[1]); s.incr('x'); print('ready', flush=True); "
        "time.sleep(60)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(directory)], stdout=subprocess.PIPE, env=env
    )
    assert holder.stdout is not None and holder.stdout.readline() == b"ready\n"
    return holder


@pytest.mark.parametrize(
    ("mode", "alive", "enabled", "why"),
    [
        ("auto", False, False, "no live server"),
        ("auto", True, True, "live servers"),
        ("adopt", False, True, "adopt"),
        ("startup", True, False, "startup"),
    ],
)
def test_embedded_rows_are_the_leases(
    tmp_path: Path, mode: str, alive: bool, enabled: bool, why: str
) -> None:
    ScenarioEngine(ChaosConfig(enabled=True), store=EmbeddedStore(tmp_path))  # seeds it
    holder = _holder(tmp_path) if alive else None
    try:
        engine = ScenarioEngine(ChaosConfig(), store=EmbeddedStore(tmp_path), start=mode)
        # Another server than this test process (whose children count as its workers).
        engine.server = "elsewhere:999999999"
        assert engine.state().enabled is enabled
        assert engine.started is not None and engine.started.why == why
        block = engine.status()["state"]
        assert block["at_start"]["did"] == ("joined" if enabled else "started")
        assert block["differs_from_startup"] == (["enabled"] if enabled else [])
        if alive:
            assert block["at_start"]["live_servers"] == [f"{os.uname().nodename}:{holder.pid}"]  # type: ignore[union-attr]
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
            assert holder.stdout is not None
            holder.stdout.close()


# -- real servers, one store each: redis and the embedded store (file://) ---------------


@pytest.fixture(params=["redis", "file"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return f"file://{tmp_path / 'store'}"
    redis: RedisServer = request.getfixturevalue("redis_server")
    return redis.url


def _first_request_s(server: Server) -> float:
    with session() as http:
        started = time.monotonic()
        http.get(server.url + "/api/test", timeout=10).raise_for_status()
        return time.monotonic() - started


def _status(server: Server) -> dict[str, Any]:
    with session() as http:
        return dict(http.get(server.url + "/api/chaos/status", timeout=10).json())


def _line(server: Server) -> str:
    lines = [line for line in server.log().splitlines() if STARTED in line or JOINED in line]
    assert len(lines) == 1, server.log()  # one line, from the master, whatever the workers
    return lines[0]


@pytest.mark.server
@pytest.mark.parametrize("mode", ["auto", "adopt", "startup"])
def test_the_issues_two_servers_in_turn(tmp_path: Path, store_url: str, mode: str) -> None:
    env = {"MOCKFORGE_STORE": store_url}
    with mockforge_serve(tmp_path, *CHAOS, env=env) as first:
        assert _first_request_s(first) >= 0.29
        assert STARTED in _line(first)
    with mockforge_serve(tmp_path, "--state-at-start", mode, "--workers", "2", env=env) as second:
        took, status, line = _first_request_s(second), _status(second), _line(second)
    if mode == "adopt":  # yesterday's chaos, on purpose, and said so
        assert took >= 0.29
        assert status["enabled"] is True
        assert JOINED in line and "differs from this server's startup config in: " in line
        assert "enabled, latency" in line and "state_at_start: adopt" in line
        assert status["state"]["differs_from_startup"] == ["enabled", "latency"]
        assert status["state"]["started_from"]["this_server"] is False
        assert status["state"]["at_start"]["did"] == "joined"
    else:
        assert took < 0.2
        assert status["enabled"] is False
        assert STARTED in line
        reason = "startup" if mode == "startup" else "auto, and no other server is alive"
        assert f"state_at_start: {reason}" in line
        assert status["state"]["differs_from_startup"] == []
        assert status["state"]["started_from"]["this_server"] is True
        assert status["state"]["at_start"]["did"] == "started"
    assert status["state"]["at_start"]["setting"] == mode


@pytest.mark.server
@pytest.mark.parametrize("mode", ["auto", "adopt", "startup"])
def test_a_server_joining_a_running_one(tmp_path: Path, store_url: str, mode: str) -> None:
    env = {"MOCKFORGE_STORE": store_url}
    with (
        mockforge_serve(tmp_path, *CHAOS, env=env) as first,
        mockforge_serve(tmp_path, "--state-at-start", mode, env=env) as second,
    ):
        line, status = _line(second), _status(second)
        if mode == "startup":  # the new config wins, for every server on the store
            assert STARTED in line and "state_at_start: startup" in line
            assert status["enabled"] is False
            deadline = time.monotonic() + 2
            while _status(first)["enabled"] and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _first_request_s(first) < 0.2
        else:
            assert JOINED in line and "enabled, latency" in line
            why = "auto, live: " if mode == "auto" else "adopt"
            assert f"state_at_start: {why}" in line
            assert _first_request_s(second) >= 0.29
            assert status["state"]["started_from"]["server"] != status["state"]["this_server"]
            assert status["state"]["written_by"] == status["state"]["started_from"]["server"]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and parent_pid(int(entry.name)) == pid:
            found.append(int(entry.name))
    return found


@pytest.mark.server
def test_plain_gunicorn_workers_decide_once_per_server(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Without serve's master, each worker applies the rule on its first request; the
    workers of one server are named after their master: the first decides, the rest
    join, and so does a worker gunicorn respawns (it does not reset the state)."""
    common: dict[str, Any] = {
        "app": "mockforge_wsgi.app:app",
        "workers": 2,
        "worker_class": "gthread",
        "extra_args": ("--logger-class", "mockforge_wsgi.cli.GunicornLogger"),
    }
    chaos = {
        "MOCKFORGE_STORE": redis_server.url,
        "MOCKFORGE_CHAOS_ENABLED": "true",
        "MOCKFORGE_CHAOS_LATENCY_ENABLED": "true",
        "MOCKFORGE_CHAOS_LATENCY_FIXED_DELAY_MS": "300",
    }
    with gunicorn_server(tmp_path / "a", env=chaos, **common) as first:
        assert _first_request_s(first) >= 0.29
    # A stopped plain gunicorn's lease runs out 10 s later (a worker cannot tell its
    # server's stop from its own respawn): startup does not wait for it.
    env = {"MOCKFORGE_STORE": redis_server.url, "MOCKFORGE_CHAOS_STATE_AT_START": "startup"}
    with gunicorn_server(tmp_path / "b", env=env, **common) as second, session() as http:
        times = [_first_request_s(second) for _ in range(8)]
        statuses = [_status(second) for _ in range(4)]
        assert max(times) < 0.2, times
        assert all(status["enabled"] is False for status in statuses)
        servers = {status["state"]["this_server"] for status in statuses}
        assert len(servers) == 1  # host:master pid, for every worker
        # A change, then a worker killed: the one gunicorn starts instead joins it.
        http.post(second.url + "/api/chaos/enable", timeout=10).raise_for_status()
        master = int(servers.pop().rpartition(":")[2])
        workers = _children(master)
        assert len(workers) == 2, workers
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 20
        while len(set(_children(master)) - set(workers)) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        respawned = set(_children(master)) - set(workers)

        def from_the_new_worker() -> dict[str, Any] | None:
            """/status from the worker gunicorn started instead (None: another answered)."""
            with session() as fresh:  # one kept-alive connection: one worker answers both
                if fresh.get(second.url + "/api/chaos/stats", timeout=10).json()["worker"] in (
                    respawned
                ):
                    return dict(fresh.get(second.url + "/api/chaos/status", timeout=10).json())
            return None

        # Asked until the new worker (booting meanwhile) is the one that answers.
        joined = once_counted(from_the_new_worker, lambda found: found is not None, 10)
        assert joined is not None, f"worker {respawned} never answered"
        assert joined["enabled"] is True, joined
        assert all(_status(second)["enabled"] is True for _ in range(6))
        said = [line for line in second.log().splitlines() if "[INFO] mockforge:" in line]
    # The first worker said it; the others (the respawned one too) joined quietly.
    assert [line for line in said if STARTED in line or JOINED in line] == [
        next(line for line in said if STARTED in line)
    ], said
