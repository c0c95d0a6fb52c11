"""Cohorts on a real server (issue 26 item 1): ``mockforge serve -w 2`` with a 10% cohort
by ``X-User-Id`` and the rule's fault probability at 1.0. A user in the cohort fails on
every request and a user outside never does, whichever worker answers; the members are
the ones this test process computes (the same hash in every process)."""

from __future__ import annotations

from pathlib import Path

import pytest
from servers import mockforge_serve, session

from mockforge_wsgi.rules import in_cohort

pytestmark = pytest.mark.server

SEED = 7
CHAOS = f"""chaos:
  enabled: true
  seed: {SEED}
  latency: {{fixed_delay_ms: 1}}  # every answer has chaos, so it names its worker
  rules:
    - match: {{cohort: {{key: "header:X-User-Id", percent: 10}}}}
      fault_injection: {{http_errors: [503], http_error_probability: 1.0}}
"""


def test_a_user_in_the_cohort_always_fails_and_one_outside_never(tmp_path: Path) -> None:
    users = [f"user-{i}" for i in range(20)]
    inside = [u for u in users if in_cohort(u, SEED, 10)]
    outside = [u for u in users if not in_cohort(u, SEED, 10)]
    assert inside == ["user-6"] and len(outside) == 19
    (tmp_path / "chaos.yaml").write_text(CHAOS)
    args = ("--workers", "2", "--config", "chaos.yaml", "--access-log", "off")
    with mockforge_serve(tmp_path, *args, env={"MOCKFORGE_DEBUG_HEADERS": "1"}) as server:
        seen: dict[str, set[int]] = {}
        workers: dict[str, set[str]] = {}
        with session() as http:
            for attempt in range(60):  # a new connection each: both workers take some
                for user in ("user-6", "user-0", outside[attempt % 19], None):
                    headers = {"Connection": "close"}
                    if user is not None:
                        headers["X-User-Id"] = user
                    answer = http.get(server.url + "/api/test", headers=headers, timeout=10)
                    group = {"user-6": "in", None: "no key"}.get(user, "out")
                    seen.setdefault(group, set()).add(answer.status_code)
                    workers.setdefault(group, set()).add(answer.headers["X-Mockforge-Worker"])
                if attempt >= 9 and all(len(pids) == 2 for pids in workers.values()):
                    break
    assert seen == {"in": {503}, "out": {200}, "no key": {200}}
    assert {group: len(pids) for group, pids in workers.items()} == {
        "in": 2,
        "out": 2,
        "no key": 2,
    }, "one worker answered every request of a kind"
