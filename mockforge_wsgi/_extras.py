"""The optional extras (setup.cfg ``extras_require``): what each one brings and the one
sentence a user gets when a feature needs an extra that is not installed."""

from __future__ import annotations

import importlib.util

# extra -> the modules it installs that we import (every one must be importable).
EXTRAS: dict[str, tuple[str, ...]] = {
    "redis": ("redis",),
    "metrics": ("prometheus_client",),
    "otel": ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"),
}


class MissingExtra(ImportError):
    """A feature was asked for whose extra is not installed; the message says how to
    install it."""


def installed(extra: str) -> bool:
    """Whether every module of ``extra`` can be imported (nothing is imported: a module
    that picks its mode at import time, like prometheus_client, is left alone)."""
    for module in EXTRAS[extra]:
        try:
            if importlib.util.find_spec(module) is None:
                return False
        except ImportError:  # find_spec imports the parents of a dotted name
            return False
    return True


def require(extra: str, feature: str) -> None:
    """Raise :class:`MissingExtra` (``<feature> needs the `otel` extra: pip install
    'mockforge-wsgi[otel]'``) unless ``extra`` is installed."""
    if not installed(extra):
        raise MissingExtra(
            f"{feature} needs the `{extra}` extra ({', '.join(EXTRAS[extra])}): "
            f"pip install 'mockforge-wsgi[{extra}]'"
        )
