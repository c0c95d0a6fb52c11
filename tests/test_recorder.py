"""The request recorder: rows for what was injected, search, export, several workers."""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from servers import mockforge_serve, one_request_per_sync_worker, session
from test_shared_state import _concurrently, _wait_for_workers
from werkzeug.test import Client

from mockforge_wsgi import ChaosMiddleware, load_config
from mockforge_wsgi.recorder import COLUMNS, Recorder, RecorderMiddleware


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


def recorded(tmp_path: Path, **overrides: Any) -> tuple[Client, Recorder]:
    config = load_config(environ={}, overrides={"enabled": True, **overrides})
    recorder = Recorder(tmp_path / "chaos.db")
    return Client(RecorderMiddleware(ChaosMiddleware(hello, config=config), recorder)), recorder


def search(client: Client, **filters: Any) -> Any:
    return client.post("/api/recorder/search", data=json.dumps(filters)).get_json()


def test_rows_say_what_was_injected(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    client, _ = recorded(
        tmp_path,
        latency={"enabled": True, "fixed_delay_ms": 1},
        fault_injection={"enabled": True, "pattern": "fail_first:2:500"},
    )
    with caplog.at_level(logging.INFO, logger="mockforge_wsgi"):
        responses = [client.get("/api/test", buffered=True) for _ in range(5)]
        client.post("/other", buffered=True)
    assert [r.status_code for r in responses] == [500, 500, 200, 200, 200]
    failed = search(client, status_code=500)
    assert failed["count"] == 2
    row = failed["requests"][0]
    assert (row["method"], row["path"], row["fault_type"]) == ("GET", "/api/test", "http_error")
    assert row["injected"] == "latency=1ms, fault=http_500"
    assert row["request_id"] == responses[1].headers["X-Mockforge-Request-Id"]
    assert f"request_id={row['request_id']} type=http_error detail=500" in caplog.text
    assert search(client, fault_type="latency", method="get")["count"] == 3
    assert search(client, path_prefix="/oth")["count"] == 1
    assert search(client, limit=2, offset=1)["count"] == 2
    assert search(client, since=0, until=1)["count"] == 0


def test_export_and_bad_filters(tmp_path: Path) -> None:
    client, _ = recorded(tmp_path)
    for _ in range(3):
        client.get("/x", buffered=True)
    lines = client.get("/api/recorder/export").get_data(as_text=True).splitlines()
    assert [json.loads(line)["path"] for line in lines] == ["/x"] * 3
    csv_text = client.get("/api/recorder/export?format=csv").get_data(as_text=True)
    assert csv_text.splitlines()[0].startswith("time,request_id,method,path,status")
    bad = client.post("/api/recorder/search", data=json.dumps({"status": 5, "limit": -1}))
    assert bad.status_code == 400
    assert bad.get_json()["problems"] == [
        "status: unknown filter; allowed: status_code, path_prefix, method, fault_type, since, "
        "until, test_id, direction, limit, offset",
        "limit: -1 is not a whole number in [0, 1000]",
    ]
    assert client.post("/api/recorder/search", data=b"{oops").status_code == 400


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param("format=xml", ["format: 'xml' is not one of jsonl, csv"], id="xml"),
        pytest.param("format=CSV", ["format: 'CSV' is not one of jsonl, csv"], id="CSV"),
        pytest.param("format=", ["format: '' is not one of jsonl, csv"], id="empty"),
        pytest.param(
            "fromat=csv", ["fromat: unknown parameter; allowed: format"], id="misspelt-name"
        ),
        pytest.param(
            "format=csv&format=jsonl", ["format: given more than once"], id="format-twice"
        ),
    ],
)
def test_an_export_query_it_cannot_honour_is_refused_naming_the_choices(
    tmp_path: Path, query: str, expected: list[str]
) -> None:
    client, _ = recorded(tmp_path)
    client.get("/x", buffered=True)
    refused = client.get(f"/api/recorder/export?{query}")
    assert refused.status_code == 400
    assert refused.get_json() == {"error": "invalid request", "problems": expected}
    # The two formats it does speak, percent-encoded or not.
    assert client.get("/api/recorder/export?format=jsonl").status_code == 200
    csv_text = client.get("/api/recorder/export?%66ormat=csv").get_data(as_text=True)
    assert csv_text.startswith("time,request_id")


def plain_row(at: float, request_id: str) -> tuple[object, ...]:
    """A row of a GET / that got no chaos, in COLUMNS order."""
    row = {"time": at, "request_id": request_id, "method": "GET", "path": "/", "status": 200,
           "duration_ms": 1.0, "worker": 1, "injected": "", "direction": "inbound"}  # fmt: skip
    return tuple(row.get(column) for column in COLUMNS)


def test_rows_stay_under_the_cap(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "small.db", max_rows=10)
    for index in range(25):
        recorder.record(plain_row(float(index), "id"))
    recorder.flush()
    rows = recorder.search({"limit": 100})
    assert len(rows) == 10
    assert rows[0]["time"] == 24.0


@pytest.mark.server
def test_four_workers_record_into_one_database(tmp_path: Path) -> None:
    database = tmp_path / "chaos-test.db"
    args = (
        "--workers", "4", "--worker-class", "sync", "--recorder", "--recorder-db", str(database),
        "--chaos", "--chaos-http-errors", "500", "--chaos-http-error-probability", "1.0",
        "--chaos-latency-ms", "10",
    )  # fmt: skip
    with mockforge_serve(tmp_path, *args) as server, session() as http:
        _wait_for_workers(server.url, 4)  # sync workers boot one after another
        # 40 requests, 10 to each worker for sure (servers.py).
        results = [
            status
            for _ in range(10)
            for status, _, _ in one_request_per_sync_worker(server.url, 4, "/api/test")
        ]
        assert results == [500] * 40
        # The design note's "Query failed requests"; each worker flushes every 0.2 s.
        count, deadline = 0, time.monotonic() + 5
        while count != 40 and time.monotonic() < deadline:
            time.sleep(0.1)
            count = http.post(
                server.url + "/api/recorder/search", json={"status_code": 500}, timeout=10
            ).json()["count"]
        assert count == 40
        workers = {
            row["worker"]
            for row in http.post(
                server.url + "/api/recorder/search", json={"limit": 1000}, timeout=10
            ).json()["requests"]
        }
        assert len(workers) == 4


@pytest.mark.parametrize(
    "body",
    [
        pytest.param('{"status_code": 1e30}', id="status-1e30"),
        pytest.param('{"offset": 1e30}', id="offset-1e30"),
        pytest.param('{"limit": NaN}', id="limit-NaN"),
        pytest.param('{"since": Infinity}', id="since-Infinity"),
        pytest.param('{"offset": ' + "9" * 400 + "}", id="offset-400-digits"),
        pytest.param("[" * 5000 + "]" * 5000, id="nested-5000"),
        pytest.param("[" * 500 + "]" * 500, id="nested-500"),  # parsed by every Python
        pytest.param("[" + "1," * 20000 + "1]", id="long-list"),
        pytest.param('{"method": [' + "1," * 20000 + "1]}", id="method-long-list"),
    ],
)
def test_hostile_filters_get_400(tmp_path: Path, body: str) -> None:
    client, _ = recorded(tmp_path)
    response = client.post("/api/recorder/search", data=body)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert all(len(problem) < 200 for problem in response.get_json()["problems"])


def test_export_streams_every_row(tmp_path: Path) -> None:
    client, recorder = recorded(tmp_path)
    for index in range(2500):  # more than a page, more than a search may return
        recorder.record(plain_row(float(index), f"r{index}"))
    response = client.get("/api/recorder/export")
    assert "Content-Length" not in response.headers  # streamed, a page at a time
    lines = response.get_data(as_text=True).splitlines()
    assert [json.loads(line)["request_id"] for line in lines] == [f"r{i}" for i in range(2500)]
    csv_lines = client.get("/api/recorder/export?format=csv").get_data(as_text=True).splitlines()
    assert len(csv_lines) == 2501


def test_with_an_admin_token_request_data_needs_it(tmp_path: Path) -> None:
    config = load_config(environ={}, overrides={"enabled": True})
    recorder = Recorder(tmp_path / "chaos.db")
    app = RecorderMiddleware(ChaosMiddleware(hello, config=config), recorder, admin_token="s3")
    client = Client(app)
    assert client.post("/api/recorder/search", data="{}").status_code == 401
    assert client.get("/api/recorder/export").status_code == 401
    auth = {"Authorization": "bearer s3"}
    assert client.post("/api/recorder/search", data="{}", headers=auth).status_code == 200
    assert client.get("/api/recorder/export", headers=auth).status_code == 200


def test_rows_queued_when_a_process_exits_are_written(tmp_path: Path) -> None:
    # A gunicorn worker stopped with SIGTERM exits normally (sys.exit): what its writer
    # thread had not written yet must still reach the database.
    database = tmp_path / "exit.db"
    script = (
        "import sys\n"
        "from mockforge_wsgi.recorder import Recorder\n"
        f"recorder = Recorder({str(database)!r})\n"
        "for n in range(300):\n"
        "    recorder.record((float(n), 'r', 'GET', '/', 200, 1.0, None, 1, None, None, '')"
        " + (None,) * 5)\n"
        "sys.exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert len(Recorder(database).search({"limit": 1000})) == 300


@pytest.mark.server
def test_a_stop_right_after_load_loses_no_row(tmp_path: Path) -> None:
    database = tmp_path / "stopped.db"
    args = (
        "--workers",
        "2",
        "--worker-class",
        "sync",
        "--recorder",
        "--recorder-db",
        str(database),
    )
    with mockforge_serve(tmp_path, *args) as server:
        results = _concurrently(
            600, 8, lambda fresh: fresh.get(server.url + "/api/test", timeout=10)
        )
        assert len(results) == 600
    # SIGTERM at once (mockforge_serve's exit): the workers wrote what they had queued.
    rows = Recorder(database).search({"path_prefix": "/api/test", "limit": 1000})
    assert len(rows) == 600


@pytest.mark.alone  # a wall-clock bound: a fast loop's other worker once delayed it 1.2 s
def test_a_queued_row_is_written_within_the_flush_interval(tmp_path: Path) -> None:
    """docs/observability.md: the background thread writes every 0.2 s; no flush()."""
    import sqlite3

    client, recorder = recorded(tmp_path)
    client.get("/x", buffered=True)
    queued = time.monotonic()
    with closing(sqlite3.connect(recorder.path)) as reader:  # `with connection` never closes
        while not reader.execute("SELECT COUNT(*) FROM requests").fetchone()[0]:
            assert time.monotonic() - queued < 2.0, "never written"
            time.sleep(0.01)
    assert time.monotonic() - queued < 0.6  # 0.2 s promised; slack for a slow machine


def test_the_writer_thread_waits_the_documented_0_2_s_between_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/observability.md's 0.2 s, checked where it is used: the writer thread's every
    wait is FLUSH_EVERY_S, and that is 0.2 s (an injected sleep; no wall clock)."""
    import threading
    from types import SimpleNamespace

    from mockforge_wsgi import recorder as recorder_module

    waits: list[float] = []

    class Event(threading.Event):  # the writer thread waits on its stop event
        def wait(self, timeout: float | None = None) -> bool:
            if threading.current_thread().name == "mockforge-recorder":
                waits.append(timeout or 0)
            return super().wait(0.001)

    monkeypatch.setattr(
        recorder_module,
        "threading",
        SimpleNamespace(Event=Event, Lock=threading.Lock, Thread=threading.Thread),
    )
    client, recorder = recorded(tmp_path)
    client.get("/x", buffered=True)
    deadline = time.monotonic() + 5
    with closing(sqlite3.connect(recorder.path)) as reader:  # by the thread, no flush()
        while not reader.execute("SELECT path FROM requests").fetchall():
            assert time.monotonic() < deadline, "never written"
            time.sleep(0.01)
    assert recorder_module.FLUSH_EVERY_S == 0.2
    assert set(waits) == {0.2}, waits


def first_schema(path: Path) -> sqlite3.Connection:
    """A recorder file as the first version made it (the verdict columns came later)."""
    connection = sqlite3.connect(path)
    connection.execute(
        "CREATE TABLE requests (id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL,"
        " request_id TEXT NOT NULL, method TEXT NOT NULL, path TEXT NOT NULL, status"
        " INTEGER NOT NULL, duration_ms REAL NOT NULL, client TEXT, worker INTEGER,"
        " fault_type TEXT, latency_ms REAL, injected TEXT)"
    )
    return connection


def test_a_database_of_the_first_schema_gets_the_new_columns(tmp_path: Path) -> None:
    """The verdict columns came later: a file made before opens, keeps its rows, and
    takes new rows with every column."""
    path = tmp_path / "old.db"
    with first_schema(path) as old:
        old.execute(
            "INSERT INTO requests (time, request_id, method, path, status, duration_ms)"
            " VALUES (1.0, 'old', 'GET', '/', 200, 1.0)"
        )
    old.close()
    recorder = Recorder(path)
    verdict_columns = ("t1", "k1", "h", 1.0, "slow_backend")
    recorder.record((*plain_row(2.0, "new")[:-8], *verdict_columns, "inbound", None, None))
    recorder.flush()
    newest, oldest = recorder.search({})
    assert (oldest["request_id"], oldest["test_id"]) == ("old", None)
    assert oldest["direction"] == "inbound"  # a file's rows before the column: requests
    assert (newest["test_id"], newest["idempotency_key"], newest["scenario"]) == (
        "t1",
        "k1",
        "slow_backend",
    )


class _LookThenMeet:
    """A recorder's connection whose look at the table's columns waits (up to 1 s) at a
    barrier for every other worker's look: without a lock around look-and-add, all of
    them look before any adds, every time (the race is certain, not lucky)."""

    def __init__(self, connection: sqlite3.Connection, barrier: Any) -> None:
        self._connection = connection
        self._barrier = barrier

    def execute(self, sql: str, *args: Any) -> Any:
        cursor = self._connection.execute(sql, *args)
        if sql.startswith("PRAGMA table_info"):
            rows = cursor.fetchall()
            with contextlib.suppress(threading.BrokenBarrierError):
                self._barrier.wait(1.0)  # with the lock, the others wait on it: broken
            return rows
        return cursor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)

    def __enter__(self) -> _LookThenMeet:
        self._connection.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._connection.__exit__(*exc)


def _open_recorder(path: str, results: Any, barrier: Any) -> None:
    connect = Recorder._connect
    Recorder._connect = lambda self: _LookThenMeet(connect(self), barrier)  # type: ignore[method-assign,assignment,return-value]
    try:
        Recorder(path)
        results.put("ok")
    except Exception as error:  # what a worker would die of at boot
        results.put(repr(error))


def test_workers_opening_an_old_file_at_once_all_start(tmp_path: Path) -> None:
    """gunicorn's workers build their recorder together: adding the new columns once, not
    once per worker (the second ALTER failed: 'duplicate column name', worker dead)."""
    import multiprocessing

    path = tmp_path / "old.db"
    first_schema(path).close()  # committed: CREATE TABLE is not in a transaction
    fork = multiprocessing.get_context("fork")
    results, barrier = fork.Queue(), fork.Barrier(8)
    workers = [
        fork.Process(target=_open_recorder, args=(str(path), results, barrier)) for _ in range(8)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert sorted(results.get(timeout=5) for _ in workers) == ["ok"] * 8


def test_a_worker_opening_a_file_while_another_writes_waits_for_it(tmp_path: Path) -> None:
    """Changing a file to WAL returns SQLITE_BUSY at once, without the busy handler, while
    another connection holds a write lock (as a sibling worker's ``BEGIN IMMEDIATE`` in
    ``_open`` does): the recorder retries it. Deterministic: the lock is held for 0.3 s
    before the recorder opens, so a first try always meets it."""
    path = tmp_path / "new.db"
    first_schema(path).close()  # a rollback-journal file: the recorder must change it
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    with (
        closing(sqlite3.connect(path, timeout=10)) as plain,
        pytest.raises(sqlite3.OperationalError, match="locked"),  # what the retry is for
    ):
        plain.execute("PRAGMA journal_mode=WAL")
    release = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        started = time.monotonic()
        Recorder(path)
        assert time.monotonic() - started >= 0.25  # it waited for the lock
    finally:
        release.join()
        holder.close()
    with closing(sqlite3.connect(path)) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
