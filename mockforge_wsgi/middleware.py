"""ChaosMiddleware: per request, decide one Plan, then apply it around the wrapped app."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .config import ChaosConfig
from .fault import PartialBody, render_fault
from .latency import sleep_ms
from .plan import ANNOTATION_HEADER, NO_CHAOS, PLAN_ENVIRON_KEY, Plan, decide_plan

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["DEFAULT_EXEMPT_PATHS", "ChaosMiddleware"]

log = logging.getLogger("mockforge_wsgi")

# The management API and metrics must stay reachable: a user can always turn chaos off.
DEFAULT_EXEMPT_PATHS = ("/api/chaos", "/metrics")


class ChaosMiddleware:
    """Wrap a WSGI app and inject the chaos its config describes.

    Usage::

        app.wsgi_app = ChaosMiddleware(app.wsgi_app, config=load_config("chaos.yaml"))

    ``config`` may be replaced at any time (it is frozen; each request reads it once).
    ``rng`` defaults to ``random.Random(config.seed)``: with a seed, one process
    replays the same decisions for the same request sequence.
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        config: ChaosConfig | None = None,
        exempt_paths: Sequence[str] = DEFAULT_EXEMPT_PATHS,
        rng: random.Random | None = None,
    ) -> None:
        self.app = app
        self.config = config if config is not None else ChaosConfig()
        # Prefixes matched on whole path segments: "/api/chaos" exempts "/api/chaos/x",
        # not "/api/chaosmonkey".
        self.exempt_paths = tuple(path.rstrip("/") for path in exempt_paths)
        self.rng = rng if rng is not None else random.Random(self.config.seed)
        self.internal_errors = 0

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        config = self.config
        if not config.enabled or self._is_exempt(environ.get("PATH_INFO") or "/"):
            return self.app(environ, start_response)
        try:
            plan = decide_plan(config, self.rng)
        except Exception:
            self._internal_error()
            plan = NO_CHAOS
        environ[PLAN_ENVIRON_KEY] = plan
        if plan is NO_CHAOS:
            return self.app(environ, start_response)
        return self._apply(plan, config, environ, start_response)

    def _is_exempt(self, path: str) -> bool:
        return any(path == prefix or path.startswith(prefix + "/") for prefix in self.exempt_paths)

    def _apply(
        self,
        plan: Plan,
        config: ChaosConfig,
        environ: WSGIEnvironment,
        start_response: StartResponse,
    ) -> Iterable[bytes]:
        annotation = plan.annotation()
        if plan.delay_ms is not None:
            sleep_ms(plan.delay_ms)
        fault = plan.fault
        if fault is None:
            return self.app(environ, _annotated(start_response, annotation))
        if fault.kind == "partial_response":
            body = PartialBody(fault.fraction, environ)
            return body.wrap(self.app(environ, body.start_response(start_response, annotation)))
        return render_fault(fault, config.fault_injection, environ, start_response, annotation)

    def _internal_error(self) -> None:
        """Our own bug must not look like chaos: serve unharmed, log, count."""
        self.internal_errors += 1
        if self.internal_errors == 1 or self.internal_errors % 1000 == 0:
            log.exception(
                "mockforge internal error (%d so far); serving without chaos",
                self.internal_errors,
            )


def _annotated(start_response: StartResponse, annotation: str) -> StartResponse:
    def annotated_start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Any:
        return start_response(status, [*headers, (ANNOTATION_HEADER, annotation)], exc_info)

    return annotated_start_response
