"""Redis Cluster and Sentinel URLs (``limits``' spellings): what each names, and one
clear error for each wrong one. Pure parsing: nothing connects."""

from __future__ import annotations

import pytest

from mockforge_wsgi.state import StoreUrlError, redis_url, store_from_env, store_from_url
from mockforge_wsgi.state.redis_url import RedisTopology, parse, redact

pytest.importorskip("redis")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param(
            "redis+cluster://127.0.0.1:7000,127.0.0.1:7001/",
            RedisTopology("cluster", False, (("127.0.0.1", 7000), ("127.0.0.1", 7001))),
            id="cluster",
        ),
        pytest.param(
            "redis+cluster://node-a:7000",
            RedisTopology("cluster", False, (("node-a", 7000),)),
            id="cluster-without-a-slash",
        ),
        pytest.param(
            "rediss+cluster://:s%40cret@node-a:7000,[::1]/",
            RedisTopology("cluster", True, (("node-a", 7000), ("::1", 6379)), None, "s@cret"),
            id="cluster-tls-password-ipv6-default-port",
        ),
        pytest.param(
            "redis+sentinel://s1:26379,s2:26380/mymaster",
            RedisTopology("sentinel", False, (("s1", 26379), ("s2", 26380)), service="mymaster"),
            id="sentinel",
        ),
        pytest.param(
            "rediss+sentinel://app:pw@s1/mymaster/3?ssl_cert_reqs=none",
            RedisTopology(
                "sentinel",
                True,
                (("s1", 26379),),
                "app",
                "pw",
                "mymaster",
                3,
                options=(("ssl_cert_reqs", "none"),),
            ),
            id="sentinel-tls-user-db-default-port-option",
        ),
        pytest.param(
            "redis+sentinel://:pw@s1:26379/mymaster?sentinel_password=other",
            RedisTopology(
                "sentinel", False, (("s1", 26379),), None, "pw", "mymaster", 0, (None, "other")
            ),
            id="sentinel-with-its-own-password",
        ),
    ],
)
def test_what_a_url_names(url: str, expected: RedisTopology) -> None:
    assert parse(url) == expected


@pytest.mark.parametrize(
    ("url", "says"),
    [
        pytest.param(
            "redis+cluster://h:7000/2", "a Redis Cluster has one database, 0", id="cluster-db"
        ),
        pytest.param(
            "redis+cluster://h:7000/?db=2", "a Redis Cluster has one database, 0", id="query-db"
        ),
        pytest.param("redis+cluster://h:x/", "'h:x' is not host:port", id="port-not-a-number"),
        pytest.param("redis+cluster://h:99999/", "'h:99999' is not host:port", id="port-range"),
        pytest.param("redis+cluster://h:7000,,h:7001/", "a host is missing", id="empty-host"),
        pytest.param("redis+cluster:///", "a host is missing", id="no-host"),
        pytest.param(
            "redis+sentinel://s1:26379",
            "a Sentinel URL names the service the sentinels monitor",
            id="sentinel-no-service",
        ),
        pytest.param(
            "redis+sentinel://s1:26379/mymaster/zero",
            "the database is a number, not 'zero'",
            id="sentinel-db-not-a-number",
        ),
        pytest.param(
            "redis+sentinel://s1:26379/a/0/extra",
            "a Sentinel URL names the service",
            id="sentinel-too-many-segments",
        ),
        pytest.param(
            "redis+cluster://h:7000/?sentinel_password=x",
            "sentinel_username and sentinel_password are for redis+sentinel://",
            id="sentinel-auth-on-a-cluster",
        ),
        pytest.param(
            "redis+cluster://h:7000/?socket_timeout=soon",
            "Invalid value for 'socket_timeout'",
            id="redis-py-option",
        ),
    ],
)
def test_a_wrong_url_is_one_error_naming_it_and_the_form(url: str, says: str) -> None:
    with pytest.raises(StoreUrlError) as caught:
        store_from_url(url)
    message = str(caught.value)
    assert message.startswith(repr(url)), message
    assert says in message
    assert redis_url.CLUSTER_FORM in message or redis_url.SENTINEL_FORM in message


def test_the_variable_is_named_and_the_password_is_not() -> None:
    url = "redis+sentinel://:hunter2@s1:26379"
    with pytest.raises(StoreUrlError) as caught:
        store_from_env({"MOCKFORGE_STORE": url})
    message = str(caught.value)
    assert message.startswith("MOCKFORGE_STORE: 'redis+sentinel://:***@s1:26379'"), message
    assert "hunter2" not in message
    assert redact("redis+cluster://u:p@a:1,b:2/?x=1") == "redis+cluster://u:***@a:1,b:2/?x=1"
    assert redact("redis://:p@a:1/0") == "redis://:p@a:1/0"  # standalone: as before


def test_a_store_on_an_unreachable_cluster_or_sentinel_opens_without_connecting() -> None:
    """Nothing connects at start (the server then fails open until the store answers);
    the URL the store logs hides the password."""
    cluster = store_from_url("redis+cluster://:hunter2@127.0.0.1:1/")
    sentinel = store_from_url("redis+sentinel://:hunter2@127.0.0.1:1/mymaster/0")
    assert "hunter2" not in getattr(cluster, "url", "") + getattr(sentinel, "url", "")


def test_rediss_sentinel_speaks_tls_to_the_primary_and_to_the_sentinels() -> None:
    """What the client is built with (nothing connects): TLS, the password and the
    database for the primary; TLS and their own password for the sentinels."""
    from redis.connection import SSLConnection
    from redis.sentinel import SentinelManagedSSLConnection

    from mockforge_wsgi.state.redis_store import RedisStore

    url = "rediss+sentinel://:pw@127.0.0.1:1/mymaster/2?ssl_cert_reqs=none&sentinel_password=sp"
    store = RedisStore(url)
    pool = store._redis.connection_pool
    assert pool.connection_class is SentinelManagedSSLConnection
    assert (pool.connection_kwargs["password"], pool.connection_kwargs["db"]) == ("pw", 2)
    assert pool.connection_kwargs["ssl_cert_reqs"] == "none"
    sentinel = pool.sentinel_manager.sentinels[0].connection_pool
    assert sentinel.connection_class is SSLConnection
    assert sentinel.connection_kwargs["password"] == "sp"
    plain = RedisStore("redis+sentinel://:pw@127.0.0.1:1/mymaster")
    assert plain._redis.connection_pool.connection_class is not SentinelManagedSSLConnection
