"""A mockforge_wsgi fault plugin: the answer expires the client's session cookie.

Installed (``pip install examples/plugins/expire_session``), it is the section
``chaos.plugins.expire_session``::

    chaos:
      enabled: true
      plugins:
        expire_session: {enabled: true, probability: 0.1, cookie: sessionid}

and a tenth of the answers carry ``Set-Cookie: sessionid=; Max-Age=0; Path=/``: does the
client log in again, or loop on 401s?
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from mockforge_wsgi.plugins import kinds, setting


@attrs.frozen
class ExpireSessionConfig:
    enabled: bool = setting(False, kinds.BOOL, "Expire the session cookie on some answers.")
    probability: float = setting(
        1.0, kinds.FLOAT, "Share of answers that expire it.", kinds.Between(0.0, 1.0)
    )
    cookie: str = setting("session", kinds.STR, "The cookie's name.")


class ExpireSession:
    name = "expire_session"
    Config = ExpireSessionConfig
    injection = "session_expired"

    def decide(self, config: ExpireSessionConfig, rng: random.Random) -> str | None:
        """Pure: the cookie to expire, or None (one draw from the given generator)."""
        return config.cookie if rng.random() < config.probability else None

    def wrap(self, cookie: str, app: Callable[..., Iterable[bytes]]) -> Any:
        expired = ("Set-Cookie", f"{cookie}=; Max-Age=0; Path=/")

        def expiring(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                return start_response(status, [*headers, expired], exc_info)

            return app(environ, start)  # the app's iterable, close() and all, unchanged

        return expiring


PLUGIN = ExpireSession()
