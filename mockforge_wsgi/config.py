"""Loading the chaos config: a YAML file, the environment, overrides, merged in that order.

The declarations (every section and setting, the rules, building from raw data) are in
``config_declarations.py``; this module re-exports them, so ``from mockforge_wsgi.config
import ChaosConfig`` works as it always did. Loading is a room of its own because only
the entry points (``serve``, ``validate``, the app, the pytest plugin) read files and
the environment; everything else reads the declarations.

Usage::

    config = load_config("chaos.yaml")                      # defaults < YAML < env
    config = load_config(overrides={"latency": {"fixed_delay_ms": 200}})
    slower = attrs.evolve(config, latency=attrs.evolve(config.latency, fixed_delay_ms=500))
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import yaml

from ._kinds import shown
from .config_declarations import (
    ACTIVE_FAULTS,
    AFTER_APP_FAULTS,
    BODY_BYTES,
    BURST,
    BYTES_PER_S,
    CONNECTIONS,
    CORRUPTIONS,
    DELAY_MS,
    ENV_PREFIX,
    FAULT_NAMES,
    MAX_DELAY_MS,
    MAX_SCRIPT_STEPS,
    NAMES,
    PARAMETERIZED,
    PARAMETERIZED_NAMES,
    PATTERN,
    PERCENT,
    PLUGINS,
    PROBABILITY,
    RATE,
    ROOT,
    RULE_SECTIONS,
    RULE_SETTINGS,
    RULES,
    SCRIPT,
    SECTION_CLASSES,
    SEED,
    SIGMA,
    TRACKED_KEYS,
    BulkheadConfig,
    ChaosConfig,
    CircuitBreakerConfig,
    ConfigError,
    FaultInjectionConfig,
    Flag,
    GuardConfig,
    HeaderControlConfig,
    LatencyConfig,
    OutboundConfig,
    PluginsConfig,
    RateLimitConfig,
    ScriptSteps,
    SettingInfo,
    TrafficShapingConfig,
    _build,
    apply_rule,
    config_from_dict,
    is_fault_step,
    iter_settings,
    longest_delay_s,
    section_to_dict,
    switched_on,
)

__all__ = [
    "ACTIVE_FAULTS",
    "AFTER_APP_FAULTS",
    "BODY_BYTES",
    "BURST",
    "BYTES_PER_S",
    "CHAOS_LOOKING",
    "CONNECTIONS",
    "CORRUPTIONS",
    "DELAY_MS",
    "ENV_PREFIX",
    "FAULT_NAMES",
    "MAX_DELAY_MS",
    "MAX_SCRIPT_STEPS",
    "NAMES",
    "PARAMETERIZED",
    "PARAMETERIZED_NAMES",
    "PATTERN",
    "PERCENT",
    "PLUGINS",
    "PROBABILITY",
    "RATE",
    "ROOT",
    "RULES",
    "RULE_SECTIONS",
    "RULE_SETTINGS",
    "SCRIPT",
    "SECTION_CLASSES",
    "SEED",
    "SIGMA",
    "TRACKED_KEYS",
    "BulkheadConfig",
    "ChaosConfig",
    "CircuitBreakerConfig",
    "ConfigError",
    "FaultInjectionConfig",
    "Flag",
    "GuardConfig",
    "HeaderControlConfig",
    "LatencyConfig",
    "OutboundConfig",
    "PluginsConfig",
    "RateLimitConfig",
    "ScriptSteps",
    "SettingInfo",
    "TrafficShapingConfig",
    "apply_rule",
    "chaos_block",
    "config_from_dict",
    "config_warnings",
    "env_layer",
    "is_fault_step",
    "iter_settings",
    "load_config",
    "longest_delay_s",
    "merge",
    "misplaced_keys",
    "read_yaml",
    "section_to_dict",
    "switched_on",
    "yaml_layer",
]

log = logging.getLogger("mockforge_wsgi")


def env_layer(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """The ``MOCKFORGE_CHAOS_*`` variables as a nested raw layer, their origins, and problems."""
    by_name = {info.env_name: info for info in iter_settings()}
    layer: dict[str, Any] = {}
    origins: dict[str, str] = {}
    problems: list[str] = []
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        info = by_name.get(name)
        if info is None:
            close = difflib.get_close_matches(name, by_name, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            problems.append(f"{name}: unknown environment variable{hint}")
            continue
        target = layer
        for part in info.path[:-1]:
            target = target.setdefault(part, {})
        target[info.path[-1]] = raw
        origins[info.dotted] = name
    return layer, origins, problems


def yaml_layer(source: str | os.PathLike[str]) -> dict[str, Any]:
    """The chaos block of a YAML file: top-level ``chaos:`` or ``observability: chaos:``.

    Chaos settings elsewhere (``rules:`` at the top level, a ``chaoss:`` block) would do
    nothing, so they are refused, each naming its line; other applications' keys are
    left alone.
    """
    document, root = read_yaml(source)
    problems = misplaced_keys(root, str(source))
    if problems:
        raise ConfigError(problems)
    return chaos_block(document, str(source))


def read_yaml(source: str | os.PathLike[str]) -> tuple[Any, yaml.Node | None]:
    """A YAML file's data and its node tree (lines for messages); a problem names the
    file, line and column."""
    try:
        text = Path(source).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError([f"{source}: cannot read ({error.strerror})"]) from error
    except UnicodeDecodeError as error:
        problem = f"{source}: not a YAML file (not UTF-8 text: byte {error.start})"
        raise ConfigError([problem]) from None
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        return (loader.construct_document(root) if root is not None else None), root
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else str(source)
        context = error.context
        if context and error.context_mark and error.context_mark is not mark:
            context += f" at line {error.context_mark.line + 1},"
        what = " ".join(filter(None, (context, error.problem)))
        raise ConfigError([f"{where}: not valid YAML ({what})"]) from None
    except yaml.YAMLError as error:
        raise ConfigError([f"{source}: not valid YAML ({error})"]) from None
    finally:
        loader.dispose()


# Keys that only mean something inside the chaos block; a file holding them at the top
# level (or beside observability.chaos) meant them there. Words other tools use too
# (enabled, seed, plugins) are not taken as chaos settings.
CHAOS_LOOKING = frozenset(("scenarios", *(f.name for f in attrs.fields(ChaosConfig)))) - {
    "enabled",
    "seed",
    "plugins",
}


def misplaced_keys(root: yaml.Node | None, where: str) -> list[str]:
    """Chaos settings outside the chaos block, and blocks one edit away from ``chaos``,
    each a problem naming its line."""
    problems: list[str] = []
    blocks = [("", _pairs(root))]
    for key, value in blocks[0][1]:
        if key.value == "observability":  # its other keys are chaos's only beside chaos:
            blocks.append(("observability.", _pairs(value)))
    for prefix, pairs in blocks:
        beside_chaos = not prefix or any(key.value == ROOT for key, _ in pairs)
        for key, _value in pairs:
            name, line = str(key.value), f"{where}:{key.start_mark.line + 1}"
            if name != ROOT and _one_edit(name.lower(), ROOT):
                problems.append(
                    f"{line}: '{prefix}{name}' is not a mockforge key; did you mean "
                    f"'{prefix}{ROOT}'?"
                )
            elif name in CHAOS_LOOKING and beside_chaos:
                problems.append(
                    f"{line}: '{prefix}{name}' is a chaos setting outside the chaos block, "
                    f"where it does nothing; did you mean '{prefix}chaos.{name}' (indented "
                    "under chaos:)?"
                )
    return problems


def _pairs(node: Any) -> list[tuple[Any, Any]]:
    """A mapping node's (key, value) nodes whose keys are plain scalars."""
    if not isinstance(node, yaml.MappingNode):
        return []
    return [(key, value) for key, value in node.value if isinstance(key, yaml.ScalarNode)]


def _one_edit(word: str, target: str) -> bool:
    """At most one insertion, deletion, substitution or swap of neighbours apart."""
    if word == target:
        return True
    if len(word) == len(target):
        diffs = [i for i, (a, b) in enumerate(zip(word, target, strict=True)) if a != b]
        swapped = (
            len(diffs) == 2
            and diffs[1] == diffs[0] + 1
            and word[diffs[0]] == target[diffs[1]]
            and word[diffs[1]] == target[diffs[0]]
        )
        return len(diffs) == 1 or swapped
    short, long = sorted((word, target), key=len)
    if len(long) - len(short) != 1:
        return False
    return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))


def chaos_block(document: Any, where: str = "<config>") -> dict[str, Any]:
    """Find the chaos mapping inside a parsed YAML document (empty when absent)."""
    if document is None:
        return {}
    if not isinstance(document, Mapping):
        raise ConfigError([f"{where}: the document is not a mapping"])
    top = document.get("chaos")
    observability = document.get("observability")
    nested = observability.get("chaos") if isinstance(observability, Mapping) else None
    if top is not None and nested is not None:
        raise ConfigError([f"{where}: both 'chaos' and 'observability.chaos' are set; keep one"])
    block = top if top is not None else nested
    if block is None:
        return {}
    if not isinstance(block, Mapping):
        raise ConfigError([f"chaos: {shown(block)} is not a mapping"])
    return dict(block)


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge two raw layers; ``over`` wins, mappings merge key by key."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    override_sources: Mapping[str, str] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> ChaosConfig:
    """Load the config with precedence defaults < YAML file < environment < overrides.

    ``environ`` defaults to ``os.environ``; pass ``{}`` to ignore the environment.
    ``override_sources`` names where override values came from (``chaos.seed`` ->
    ``--seed``), so errors point at the flag the user typed.
    In each source, naming a setting of a section turns it on (:func:`switched_on`).
    Raises one :class:`ConfigError` listing every problem; nothing half-applies.
    Settings that end up doing nothing (their section, or chaos, is off) are told to
    ``on_warning`` (default: logged), one line each.
    """
    problems: list[str] = []
    yaml_data: dict[str, Any] = {}
    if path is not None:
        try:
            yaml_data = yaml_layer(path)
        except ConfigError as error:
            problems.extend(error.problems)
        yaml_data.pop("scenarios", None)  # custom scenarios: read by scenarios.load_scenarios
    env, origins, env_problems = env_layer(os.environ if environ is None else environ)
    problems.extend(env_problems)
    sources = [
        (str(path), switched_on(yaml_data)),
        ("environment", switched_on(env)),
        ("arguments", switched_on(overrides or {})),
    ]
    layer: dict[str, Any] = {}
    for _, data in sources:
        layer = merge(layer, data)
    for overridden in _leaf_paths(overrides or {}, ROOT):
        origins.pop(overridden, None)
    origins.update(override_sources or {})
    result = _build(ChaosConfig, layer, ROOT, problems, origins)
    if problems or result is None:
        raise ConfigError(problems)
    for warning in config_warnings(result, sources, origins):
        (on_warning or log.warning)(f"mockforge: {warning}")
    return result


def config_warnings(
    config: ChaosConfig,
    sources: Iterable[tuple[str, Mapping[str, Any]]],
    origins: Mapping[str, str] | None = None,
) -> list[str]:
    """Settings that do nothing in ``config``: those a source set in a section that is
    off, and every section while chaos itself is off. ``sources`` are (name, raw data)."""
    warnings = []
    for source, data in sources:
        for path, names in _named_settings(data, ChaosConfig, (ROOT,)):
            section: Any = config
            for part in path[1:]:
                section = getattr(section, part)
            if getattr(section, "enabled", True):
                continue
            dotted = ".".join(path)
            where = ", ".join(
                sorted({(origins or {}).get(f"{dotted}.{name}", source) for name in names})
            )
            warnings.append(
                f"{dotted}: {', '.join(names)} set ({where}) but {dotted}.enabled is false: "
                "nothing of it is injected"
            )
    on = [name for name in SECTION_CLASSES if getattr(getattr(config, name), "enabled", False)]
    if not config.enabled and (on or config.rules):
        what = ", ".join(on + (["rules"] if config.rules else []))
        warnings.append(
            f"chaos.enabled is false: {what} set, but nothing is injected until chaos is "
            "turned on (chaos.enabled: true, --chaos, MOCKFORGE_CHAOS_ENABLED=true, or "
            "POST /api/chaos/enable)"
        )
    return warnings


def _named_settings(
    data: Any, cls: type[Any], path: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], list[str]]]:
    """Each section of ``data`` (depth first) with the settings it names but ``enabled``."""
    if not isinstance(data, Mapping) or not attrs.has(cls):
        return
    fields = {field.name: field for field in attrs.fields(cls)}
    names = [name for name in data if name in fields and name != "enabled"]
    leaves = [name for name in names if "section" not in fields[name].metadata]
    if len(path) > 1 and leaves:
        yield path, leaves
    for name in names:
        nested = fields[name].metadata.get("section")
        if nested is not None:
            yield from _named_settings(data[name], nested, (*path, name))


def _leaf_paths(data: Mapping[str, Any], prefix: str) -> Iterator[str]:
    for key, value in data.items():
        if isinstance(value, Mapping):
            yield from _leaf_paths(value, f"{prefix}.{key}")
        else:
            yield f"{prefix}.{key}"
