"""Custom faults as plugins: the contract, and loading them from the ``mockforge_wsgi.faults``
entry-point group.

A plugin is an object (the entry point names it) with:

- ``name``: its section, ``chaos.plugins.<name>`` (lower case letters, digits, ``_``);
- ``Config``: a frozen attrs class whose fields are declared with :func:`setting`, one of
  them ``enabled`` (a boolean, default off). They are validated, read from YAML, the
  environment (``MOCKFORGE_CHAOS_PLUGINS_<NAME>_<FIELD>``) and the API, and listed in
  the OpenAPI document and the docs tables, like the built-in ones;
- ``injection``: the name its injections are counted by (counters, metrics, recorder);
- ``decide(config, rng)``: pure. Draw only from ``rng`` (seeded runs replay), touch
  nothing; return a decision (any value; ``str()`` of it is the detail shown) or None;
- ``wrap(decision, app)``: a WSGI app around ``app`` that applies it for this request.

What a plugin must not do: touch the store, hold a connection slot, sleep in
``decide``, or raise from ``close()``. Its wrapper must keep WSGI's rules (call
``start_response`` once, or again with ``exc_info``; pass ``close()`` on; keep
``Content-Length`` true). ``decide`` runs inside the middleware's fail-open boundary: if
it raises, the request is served without chaos and counted in ``internal_errors``.
Plugins apply after the built-in faults decided to let the app answer, innermost.

Plugin modules should import only this module (and the standard library, attrs), not
``mockforge_wsgi.config``: they are loaded while it is being imported.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from . import _kinds as kinds
from ._settings import ConfigError, section, setting

if TYPE_CHECKING:
    import random

    from _typeshed.wsgi import WSGIApplication

__all__ = ["GROUP", "FaultPlugin", "kinds", "load_plugins", "setting"]

GROUP = "mockforge_wsgi.faults"
_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
log = logging.getLogger("mockforge_wsgi")


class FaultPlugin(Protocol):
    name: str
    Config: type[Any]
    injection: str

    def decide(self, config: Any, rng: random.Random) -> Any | None: ...

    def wrap(self, decision: Any, app: WSGIApplication) -> WSGIApplication: ...


def _checked(plugin: Any, where: str) -> list[str]:
    """What is wrong with a plugin object, if anything."""
    problems = []
    name = getattr(plugin, "name", None)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        problems.append(f"{where}: name {name!r} is not [a-z][a-z0-9_]* (at most 40)")
    config = getattr(plugin, "Config", None)
    if not (isinstance(config, type) and attrs.has(config)):
        problems.append(f"{where}: Config is not an attrs class")
    elif "enabled" not in attrs.fields_dict(config):
        problems.append(f"{where}: Config has no `enabled` setting")
    for method in ("decide", "wrap"):
        if not callable(getattr(plugin, method, None)):
            problems.append(f"{where}: no {method}()")
    if not isinstance(getattr(plugin, "injection", None), str):
        problems.append(f"{where}: injection is not a name")
    return problems


def load_plugins(found: Iterable[Any] | None = None) -> tuple[Any, ...]:
    """The installed plugins (``found``: entry points, for tests), each checked against
    the contract; a broken one is a ConfigError naming it (not a plugin silently off)."""
    loaded, problems, names = [], [], set()
    for point in entry_points(group=GROUP) if found is None else found:
        where = f"plugin {getattr(point, 'name', point)!r} ({GROUP})"
        try:
            plugin = point.load()
        except Exception as error:  # an import error of theirs: said, not swallowed
            problems.append(f"{where}: cannot be loaded ({error})")
            continue
        problems += _checked(plugin, where)
        if plugin.name in names:
            problems.append(f"{where}: a second plugin named {plugin.name!r}")
        names.add(getattr(plugin, "name", None))
        loaded.append(plugin)
    if problems:
        raise ConfigError(problems)
    return tuple(sorted(loaded, key=lambda plugin: plugin.name))


def plugins_section(plugins: tuple[Any, ...]) -> type[Any]:
    """The ``chaos.plugins`` section: one nested section per plugin."""
    fields = {
        plugin.name: section(plugin.Config, f"The {plugin.name} plugin.", in_rules=False)
        for plugin in plugins
    }
    return attrs.make_class("PluginsConfig", fields, frozen=True)
