"""max_active_faults on a real server (issue 25): ``mockforge serve -w 2``, a 2 s delay on
every request, ``max_active_faults: 2``, 8 concurrent requests: exactly 2 are held, the 6
others answer at once (annotated, counted ``fault_overflow``), the cap shared by both
workers (each answer names its worker), and no place left taken afterwards; on the
embedded store and on Redis."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from servers import RedisServer, mockforge_serve, session

pytestmark = pytest.mark.server

DELAY_S = 2.0
CHAOS = "chaos:\n  enabled: true\n  max_active_faults: 2\n  latency: {fixed_delay_ms: 2000}\n"
AT_ONCE_S = 1.0  # far below the delay: a margin for this VM's shared cores


def _eight_at_once(tmp_path: Path, env: dict[str, str] | None = None) -> None:
    (tmp_path / "chaos.yaml").write_text(CHAOS)
    env = {"MOCKFORGE_DEBUG_HEADERS": "1", **(env or {})}
    args = ("--workers", "2", "--threads", "8", "--config", "chaos.yaml", "--access-log", "off")
    with mockforge_serve(tmp_path, *args, env=env) as server:
        api = server.url + "/api/chaos"
        workers: set[str] = set()
        for burst in range(1, 6):  # until both workers took part in one (gthread: likely)
            answers: list[tuple[float, int, str, str]] = []
            barrier = threading.Barrier(8)

            def fetch(
                barrier: threading.Barrier = barrier,
                answers: list[tuple[float, int, str, str]] = answers,
            ) -> None:
                with session() as http:
                    barrier.wait(10)
                    started = time.monotonic()
                    response = http.get(server.url + "/api/test", timeout=30)
                    answers.append(
                        (
                            time.monotonic() - started,
                            response.status_code,
                            response.headers.get("X-Mockforge-Chaos", ""),
                            response.headers.get("X-Mockforge-Worker", ""),
                        )
                    )

            threads = [threading.Thread(target=fetch) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert len(answers) == 8
            assert all(status == 200 for _, status, _, _ in answers), answers
            held = [took for took, _, note, _ in answers if note == "latency=2000ms"]
            at_once = [took for took, _, note, _ in answers if note == "max_active_faults=reached"]
            took = sorted(round(t, 2) for t, _, _, _ in answers)
            print(f"\n{tmp_path.name} burst {burst}: {took} s")
            assert len(held) == 2 and len(at_once) == 6, answers
            assert min(held) >= DELAY_S - 0.05
            assert max(at_once) < AT_ONCE_S, answers
            with session() as http:
                stats = http.get(api + "/stats", timeout=10).json()
            assert stats["counters"]["fault_overflow"] == 6 * burst
            assert stats["active_faults_in_use"] == {"global": 0}  # every place given back
            workers = {worker for _, _, _, worker in answers}
            if len(workers) == 2:
                break
        assert len(workers) == 2, "one worker took every request of each burst"


def test_two_of_eight_are_held_across_two_workers(tmp_path: Path) -> None:
    _eight_at_once(tmp_path)


def test_on_redis_too(tmp_path: Path, redis_server: RedisServer) -> None:
    _eight_at_once(tmp_path, {"MOCKFORGE_STORE": redis_server.url})
