"""A server that starts with its Redis unreachable: each gunicorn worker limits alone at
its share of the workers gunicorn was started with (plain ``gunicorn -w 2``: a burst of
10 is 5 per worker), not the whole limit each (up to W times the limit) because it has
never heard how many workers are alive."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from servers import READY_APP, free_port, gunicorn_server, session

pytestmark = pytest.mark.server

CONFIG = """\
chaos:
  enabled: true
  on_store_error: local
  rate_limit: {enabled: true, requests_per_second: 0.1, burst_size: 10}
"""


def test_workers_started_with_redis_down_share_the_limit(tmp_path: Path) -> None:
    (tmp_path / "chaos.yaml").write_text(CONFIG)
    (tmp_path / "ready_app.py").write_text(READY_APP)
    env = {
        "MOCKFORGE_CONFIG": str(tmp_path / "chaos.yaml"),
        "MOCKFORGE_STORE": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        "MOCKFORGE_DEBUG_HEADERS": "1",
    }
    admitted: Counter[str] = Counter()
    answered: Counter[str] = Counter()
    with gunicorn_server(
        tmp_path, env=env, workers=2, app="ready_app:app", chdir=tmp_path, ready_path="/ready"
    ) as server:
        for _ in range(40):
            with session() as http:  # a connection each: both workers answer
                response = http.get(server.url + "/", headers={"Connection": "close"})
            worker = response.headers["X-Mockforge-Worker"]
            answered[worker] += 1
            admitted[worker] += response.status_code != 429
    print(f"\nanswered {dict(answered)}, admitted {dict(admitted)}")
    assert sum(answered.values()) == 40
    assert max(answered.values()) > 5  # a worker that would admit more, if it could
    assert all(count <= 5 for count in admitted.values()), admitted  # 10 // 2 each
