"""Three hosts on one Redis, and on a Redis Cluster (issue 28 item 2): each a
``mockforge serve -w 2`` with its own master and runtime directory, bound to 127.0.0.2,
.3 and .4, sharing one redis-server, then the test process's 3-master cluster
(``redis+cluster://``, conftest.py's ``redis_cluster``); the third host's connections to
each Redis node go through a relay that can be cut. One fleet per store (the tests run
grouped by it; benchmarks/manyhost.py starts it and runs each phase; its tables are in
docs/state.md), one load phase per check:

- a global limit is one limit across the hosts, within 3%;
- a management call on one host reaches every host within 100 ms;
- a host cut from Redis (from every node of a cluster, the others still reaching it)
  limits alone at its share, the others keep the shared limit;
- a host killed (master and workers) and started again joins the current state.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import needs_redis_server

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
import manyhost

# One process runs both modules that use the cluster (--dist loadgroup): it starts once.
pytestmark = [pytest.mark.server, pytest.mark.xdist_group("redis_cluster")]

LIMIT = 100  # requests a second, global
SECONDS = 4.0  # each load phase: 3 hosts x LIMIT offered, 1,200 requests
# What a limit admits at most over t seconds is burst + limit * t (GCRA: a full bucket,
# then one token each 1/limit); here 20 + 100 * 4 = 420, so 3% is 12 requests, twice
# what the leases can leave unspent at the end (6 workers x 10 ms of tokens = 6).
ACCURACY = 0.03
# The cut's phase is shorter: its bounds are wider. The two others: 20 + 100 * 3 = 320,
# 5% is 16 requests (their 4 workers' and the cut host's lost leases: 6 at most); the
# cut host: 6 + 33.3 * 3 = 106, and its two workers' leases from before the cut (a
# token each) fit in the 5% above.
CUT_SECONDS = 3.0
BOUND_S = 0.1  # a management call reaches every host within it
MARGIN_S = 0.15  # this VM's 2 cores are shared: a client thread may wait its turn
ALONE = pytest.mark.alone  # admitted per second and release times: wall-clock


@pytest.fixture(scope="module", params=["one_redis", "cluster"])
def fleet(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[manyhost.Fleet]:
    needs_redis_server()
    store = None
    if request.param == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        store = manyhost.Store(cluster.url, cluster.ports)
    workdir = tmp_path_factory.mktemp(f"manyhost-{request.param}")
    with manyhost.fleet(workdir, LIMIT, store) as started:
        yield started
    for host in started.hosts:
        log = host.log()
        assert "Traceback" not in log and "mockforge internal error" not in log, log


# First of its store's tests, and not alone: the fleet starts (and the one before it
# stops) in its setup, beside other tests rather than with every other test waiting.
def test_a_killed_host_rejoins_with_the_current_state(fleet: manyhost.Fleet) -> None:
    back = manyhost.rejoin(fleet)
    print(f"\n{back}")
    assert (back.did, back.why) == ("joined", "live servers")  # state_at_start: auto
    assert back.version == back.versions[0] == back.versions[1]
    assert "latency" in back.differs
    assert back.latency == back.expected_latency
    assert back.latency["fixed_delay_ms"] == 1234
    assert back.followed_s <= 0.5  # and it follows the state from then on


@ALONE
def test_a_global_limit_is_one_limit_across_three_hosts(fleet: manyhost.Fleet) -> None:
    found = manyhost.one_limit(fleet, SECONDS)
    print(f"\n{found}: {found.ratio:.3f} of burst + limit * t")
    assert found.workers == 3 * manyhost.WORKERS  # the load reached every worker
    assert found.failed == found.unharmed == 0
    assert found.offered > 2.5 * found.most  # well above the limit, throughout
    assert abs(found.ratio - 1) <= ACCURACY, found


@ALONE
def test_a_management_call_on_one_host_reaches_every_host_within_100_ms(
    fleet: manyhost.Fleet,
) -> None:
    seen, released, workers = manyhost.propagation(fleet)
    print(f"\nlatency change seen after {seen} s; held requests released after {released} s")
    assert max(seen) <= BOUND_S + MARGIN_S, seen
    assert max(released) <= BOUND_S + MARGIN_S, released
    assert sum(workers) >= len(fleet.hosts) + 1, workers  # a held request on 4+ workers


@ALONE
def test_a_host_cut_from_redis_limits_alone_at_its_share(fleet: manyhost.Fleet) -> None:
    joined, alone, share = manyhost.cut_off(fleet, CUT_SECONDS)
    print(f"\nthe two others: {joined} ({joined.ratio:.3f}); cut: {alone} ({alone.ratio:.3f})")
    assert joined.failed == alone.failed == 0  # no 5xx that was not ours, no lost answer
    assert joined.unharmed == alone.unharmed == 0  # chaos on throughout, on every worker
    assert share == LIMIT / 3
    # The two others keep the shared limit (the cut host's leases, lost with it, are
    # 2 x 10 ms of tokens); the cut one has its two workers' shares, a sixth of it each.
    assert abs(joined.ratio - 1) <= 0.05, joined
    assert 0.85 <= alone.ratio <= 1.05, alone
    assert "mockforge: the store is unreachable" in fleet.hosts[2].log()  # said, once
