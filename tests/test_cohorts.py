"""Cohorts (issue 26 item 1): a rule matcher that puts a stable share of users in or out,
by a hash of their key and the config's seed, the same on every worker, host and restart."""

from __future__ import annotations

import math
from typing import Any

import pytest
from stats import assert_binomial
from werkzeug.test import Client

from mockforge_wsgi import load_config
from mockforge_wsgi.config import ConfigError, config_from_dict
from mockforge_wsgi.middleware import ChaosMiddleware
from mockforge_wsgi.request import Call
from mockforge_wsgi.rules import in_cohort

SEED = 7
FAIL = {"fault_injection": {"enabled": True, "http_errors": [503], "http_error_probability": 1.0}}


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


def client_of(middleware: ChaosMiddleware) -> Client:
    """A client that sends the Cookie header as given (werkzeug's own jar would drop it)."""
    return Client(middleware, use_cookies=False)


def cohort_middleware(cohort: dict[str, Any], seed: int | None = SEED) -> ChaosMiddleware:
    config = load_config(
        environ={},
        overrides={
            "enabled": True,
            "seed": seed,
            "rules": [{"match": {"cohort": cohort}, **FAIL}],
        },
    )
    return ChaosMiddleware(hello, config=config)


def test_a_tenth_of_1000_users_fail_on_every_request_and_the_rest_on_none() -> None:
    """The issue's measure: 1,000 users at 10% with the rule's fault probability at 1.0;
    Binomial(1000, 0.1) is 100 +- 4 sd (sd = sqrt(1000 * 0.1 * 0.9), about 9.5). Each
    user sends three requests (other paths, methods and headers besides the key): they
    all fail or none does."""
    client = client_of(cohort_middleware({"key": "header:X-User-Id", "percent": 10}))
    failed = 0
    for user in range(1000):
        statuses = {
            client.get("/a", headers={"X-User-Id": f"user-{user}"}).status_code,
            client.post("/b/c", headers={"X-User-Id": f"user-{user}", "X-Other": "1"}).status_code,
            client.get("/a?q=1", headers={"X-User-Id": f"user-{user}"}).status_code,
        }
        assert statuses in ({503}, {200}), (user, statuses)  # each user's requests alike
        failed += statuses == {503}
    assert_binomial(failed, 1000, 0.1)
    assert failed == 88  # this seed's count: it never changes (see the pinned members)


def test_a_request_without_the_key_is_in_no_cohort() -> None:
    client = client_of(cohort_middleware({"key": "header:X-User-Id", "percent": 100}))
    assert client.get("/a", headers={"X-User-Id": "anyone"}).status_code == 503  # 100%: all
    assert client.get("/a").status_code == 200  # no key
    assert client.get("/a", headers={"X-User-Id": ""}).status_code == 200  # an empty key


@pytest.mark.parametrize(
    ("key", "request_kwargs", "value"),
    [
        pytest.param("header:X-User-Id", {"headers": {"x-user-id": "u1"}}, "u1", id="header"),
        pytest.param(
            "cookie:session",
            {"headers": {"Cookie": 'theme=dark; session="s-42"'}},
            "s-42",
            id="cookie",
        ),
        pytest.param("query:user", {"query_string": "a=1&user=u7&user=u8"}, "u7", id="query"),
        pytest.param("ip", {"environ_base": {"REMOTE_ADDR": "10.1.2.3"}}, "10.1.2.3", id="ip"),
    ],
)
def test_each_key_reads_its_value(key: str, request_kwargs: dict[str, Any], value: str) -> None:
    """The same value, read from where the key says, puts the user in or out alike: the
    first seed that puts ``value`` in the 50% cohort, and the first that leaves it out."""
    inside = next(seed for seed in range(100) if in_cohort(value, seed, 50))
    outside = next(seed for seed in range(100) if not in_cohort(value, seed, 50))
    for seed, status in ((inside, 503), (outside, 200)):
        middleware = cohort_middleware({"key": key, "percent": 50}, seed=seed)
        assert client_of(middleware).get("/a", **request_kwargs).status_code == status, seed


@pytest.mark.parametrize(
    ("key", "request_kwargs"),
    [
        pytest.param("header:X-User-Id", {"headers": {"X-Other": "u1"}}, id="header"),
        pytest.param("cookie:session", {"headers": {"Cookie": "theme=dark"}}, id="cookie"),
        pytest.param("cookie:session", {"headers": {"Cookie": "session="}}, id="cookie-empty"),
        pytest.param("query:user", {"query_string": "user="}, id="query-empty"),
        pytest.param("query:user", {"query_string": "users=u1"}, id="query-other"),
        pytest.param("ip", {"environ_base": {"REMOTE_ADDR": ""}}, id="ip-unknown"),
    ],
)
def test_each_key_missing_is_in_no_cohort(key: str, request_kwargs: dict[str, Any]) -> None:
    client = client_of(cohort_middleware({"key": key, "percent": 100}))
    assert client.get("/a", **request_kwargs).status_code == 200


def test_members_are_pinned_across_processes_and_releases() -> None:
    """The same users, whatever the process: blake2b of the seed and the value, never
    Python's hash() (salted per process: pinned members would differ on every run).
    Pinned, so a change of the hash, which would move users between cohorts on an
    upgrade, fails here."""
    members = [f"user-{i}" for i in range(100) if in_cohort(f"user-{i}", SEED, 10)]
    assert members == [
        "user-6", "user-45", "user-61", "user-67", "user-69", "user-72", "user-85", "user-95",
        "user-96",
    ]  # fmt: skip


def test_a_larger_cohort_keeps_every_user_of_a_smaller_one() -> None:
    """Ramping 10% to 20% adds users; nobody who failed stops failing."""
    users = [f"user-{i}" for i in range(2000)]
    small = {u for u in users if in_cohort(u, SEED, 10)}
    large = {u for u in users if in_cohort(u, SEED, 20)}
    assert small < large
    assert_binomial(len(large), 2000, 0.2)
    assert {u for u in users if in_cohort(u, SEED, 0)} == set()
    assert {u for u in users if in_cohort(u, SEED, 100)} == set(users)


def test_another_seed_draws_another_cohort_of_the_same_size() -> None:
    users = [f"user-{i}" for i in range(2000)]
    by_seed = {seed: {u for u in users if in_cohort(u, seed, 30)} for seed in (1, 2, None)}
    for members in by_seed.values():
        assert_binomial(len(members), 2000, 0.3)
    # Independent draws: the overlap of two 30% cohorts is Binomial(2000, 0.09).
    assert_binomial(len(by_seed[1] & by_seed[2]), 2000, 0.09)
    assert_binomial(len(by_seed[1] & by_seed[None]), 2000, 0.09)


def test_not_cohort_is_the_rest_of_the_users_with_a_key_and_those_without() -> None:
    config = config_from_dict(
        {"seed": SEED, "rules": [{"match": {"not": {"cohort": {"key": "ip", "percent": 10}}}}]}
    )
    match = config.rules[0].match
    for user in range(200):
        call = Call(client_address=f"10.0.{user}.1")
        assert match.matches(call, SEED) is not in_cohort(f"10.0.{user}.1", SEED, 10)
    assert match.matches(Call(), SEED)  # no address: in no cohort, so in "not"


@pytest.mark.parametrize(
    ("cohort", "problems"),
    [
        pytest.param(
            {"key": "head:X-User-Id", "percent": 10},
            ["key: 'head:X-User-Id' is not header:<name>, cookie:<name>, query:<name> or ip"],
            id="key-source",
        ),
        pytest.param(
            {"key": "header:", "percent": 10},
            ["key: 'header:' is not header:<name>, cookie:<name>, query:<name> or ip"],
            id="key-no-name",
        ),
        pytest.param(
            {"key": "cookie:a b", "percent": 10},
            ["key: 'cookie:a b' is not header:<name>, cookie:<name>, query:<name> or ip"],
            id="key-not-a-token",
        ),
        pytest.param(
            {"key": "ip:4", "percent": 10},
            ["key: 'ip:4' is not header:<name>, cookie:<name>, query:<name> or ip"],
            id="key-ip-name",
        ),
        pytest.param(
            {"key": 7, "percent": 10},
            ["key: 7 is not header:<name>, cookie:<name>, query:<name> or ip"],
            id="key-not-a-string",
        ),
        pytest.param(
            {"key": "ip", "percent": 101},
            ["percent: 101 is not a number in [0, 100]"],
            id="percent-above",
        ),
        pytest.param(
            {"key": "ip", "percent": -1},
            ["percent: -1 is not a number in [0, 100]"],
            id="percent-below",
        ),
        pytest.param(
            {"key": "ip", "percent": math.nan},
            ["percent: nan is not a number in [0, 100]"],
            id="percent-nan",
        ),
        pytest.param(
            {"key": "ip", "percent": math.inf},
            ["percent: inf is not a number in [0, 100]"],
            id="percent-inf",
        ),
        pytest.param(
            {"key": "ip", "percent": "10%"},
            ["percent: '10%' is not a number in [0, 100]"],
            id="percent-string",
        ),
        pytest.param(
            {"key": "ip", "percent": True},
            ["percent: True is not a number in [0, 100]"],
            id="percent-bool",
        ),
        pytest.param(
            {"percent": 10, "salt": "x"},
            [
                "salt: unknown key; allowed: key, percent",
                "key: missing; allowed: header:<name>, cookie:<name>, query:<name> or ip",
            ],
            id="unknown-and-missing",
        ),
        pytest.param(
            {"key": "ip"},
            ["percent: missing; allowed: a number in [0, 100]"],
            id="percent-missing",
        ),
    ],
)
def test_a_bad_cohort_gives_one_error_naming_field_value_and_what_is_allowed(
    cohort: dict[str, Any], problems: list[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"rules": [{"match": {"cohort": cohort}, **FAIL}]})
    assert caught.value.problems == [f"chaos.rules[0].match.cohort.{p}" for p in problems]


def test_a_cohort_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"rules": [{"match": {"cohort": "header:X-User-Id"}, **FAIL}]})
    assert caught.value.problems == [
        "chaos.rules[0].match.cohort: 'header:X-User-Id' is not a mapping {key, percent}"
    ]


def test_a_cohort_reads_back_as_written() -> None:
    match = {"cohort": {"key": "cookie:session", "percent": 12.5}, "path": "/api/*"}
    config = config_from_dict({"seed": 3, "rules": [{"match": match, **FAIL}]})
    assert config.to_dict()["rules"][0]["match"] == match
    assert config_from_dict(config.to_dict()) == config


def test_the_api_takes_a_cohort_and_refuses_a_bad_one_changing_nothing() -> None:
    """PUT /config: a cohort rule applies at once; a bad one is a 400 naming the field,
    the value and what is allowed, and the config in force stays."""
    middleware = ChaosMiddleware(hello, config=load_config(environ={}))
    http = client_of(middleware)
    rule = {"match": {"cohort": {"key": "query:user", "percent": 10}}, **FAIL}
    put = http.put("/api/chaos/config", json={"enabled": True, "seed": SEED, "rules": [rule]})
    assert put.status_code == 200, put.get_data(as_text=True)
    assert http.get("/a?user=user-6").status_code == 503  # in the cohort under seed 7
    assert http.get("/a?user=user-0").status_code == 200
    before = http.get("/api/chaos/config").get_json()
    assert before["rules"][0]["match"] == {"cohort": {"key": "query:user", "percent": 10.0}}
    bad = {"match": {"cohort": {"key": "query:user", "percent": 150}}, **FAIL}
    refused = http.put("/api/chaos/config", json={"enabled": True, "rules": [bad]})
    assert refused.status_code == 400
    assert refused.get_json()["problems"] == [
        "chaos.rules[0].match.cohort.percent: 150 is not a number in [0, 100]"
    ]
    assert http.get("/api/chaos/config").get_json() == before
