"""The configuration reference table, generated from the setting declarations.

python -m mockforge_wsgi.config_docs --write docs/configuration.md

The tables hold the package's own settings only: a plugin's section belongs to the
plugin's package, so a plugin installed beside us does not change our docs. A plugin's
author renders theirs with ``--plugin NAME`` (docs/plugins.md).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .config import PLUGINS, SettingInfo, iter_settings

BEGIN = "<!-- BEGIN GENERATED: {name} (python -m mockforge_wsgi.config_docs --write) -->"
END = "<!-- END GENERATED: {name} -->"


def _default(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ", ".join(str(item) for item in value) or "(empty)"
    return str(value)


def own_settings() -> Iterator[SettingInfo]:
    """Every setting but those of plugins (``chaos.plugins.<name>``: theirs, not ours)."""
    return (info for info in iter_settings() if info.path[0] != "plugins")


def plugin_settings(name: str) -> list[SettingInfo]:
    """The settings of the installed plugin ``name``; a ValueError naming those installed."""
    found = [info for info in iter_settings() if info.path[:2] == ("plugins", name)]
    if not found:
        installed = ", ".join(plugin.name for plugin in PLUGINS) or "none"
        raise ValueError(f"no plugin {name!r} is installed (installed: {installed})")
    return found


def reference_table(settings: Iterable[SettingInfo] | None = None) -> str:
    """One markdown row per setting (``settings``, else the package's own): YAML path, env
    var, type, default, allowed, meaning."""
    lines = [
        "| Setting | Environment variable | Type | Default | Allowed | Meaning |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for info in own_settings() if settings is None else settings:
        check = info.check.describe() if info.check else ""
        lines.append(
            f"| `{info.dotted}` | `{info.env_name}` | {info.kind.label} "
            f"| `{_default(info.field.default)}` | {check} | {info.field.metadata['help']} |"
        )
    return "\n".join(lines)


def _percent(probability: float) -> str:
    return f"{probability * 100:g}%"


def _scenario_row(scenario: Any) -> str:
    config = scenario.config
    latency, faults, limits, traffic = (
        config.latency,
        config.fault_injection,
        config.rate_limit,
        config.traffic_shaping,
    )
    delay = "-"
    if latency.enabled:
        if latency.random_delay_range_ms:
            low, high = latency.random_delay_range_ms
            delay = f"{low:g}-{high:g} ms"
        else:
            delay = f"{latency.fixed_delay_ms:g} ms"
        if latency.jitter_percent:
            delay += f" + {latency.jitter_percent:g}% jitter"
        delay += f", on {_percent(latency.probability)} of requests"
    errors = []
    if faults.enabled:
        statuses = ", ".join(map(str, faults.http_errors))
        if faults.http_error_probability:
            errors.append(f"{_percent(faults.http_error_probability)} HTTP ({statuses})")
        if faults.timeout_probability:
            errors.append(
                f"{_percent(faults.timeout_probability)} timeout ({faults.timeout_ms:g} ms, 504)"
            )
        if faults.connection_error_probability:
            errors.append(f"{_percent(faults.connection_error_probability)} connection reset")
    rate = "-"
    if limits.enabled:
        levels = [name for name in ("per_ip", "per_endpoint") if getattr(limits, name)]
        rate = f"{limits.requests_per_second:g} req/s, burst {limits.burst_size}"
        rate += "".join(f", {level.replace('_', '-')}" for level in levels)
    shaping = []
    if traffic.enabled:
        if traffic.bandwidth_limit_bps:
            shaping.append(f"{traffic.bandwidth_limit_bps:,} B/s down")
        if traffic.upload_bandwidth_limit_bps:
            shaping.append(f"{traffic.upload_bandwidth_limit_bps:,} B/s up")
        if traffic.packet_loss_percent:
            shaping.append(f"{traffic.packet_loss_percent:g}% loss")
    return (
        f"| `{scenario.name}` | {delay} | {'; '.join(errors) or '-'} | {rate} "
        f"| {', '.join(shaping) or '-'} |"
    )


def scenario_table() -> str:
    """One markdown row per built-in scenario, from the scenario definitions."""
    from .scenarios import BUILTIN_SCENARIOS

    lines = [
        "| Scenario | Latency | Errors | Rate limit | Traffic |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [_scenario_row(scenario) for scenario in BUILTIN_SCENARIOS.values()]
    return "\n".join(lines)


def flags_table() -> str:
    """Every ``mockforge serve`` option, from the click command itself."""
    import click

    from .cli import serve

    lines = ["| Flag | Default | Meaning |", "| --- | --- | --- |"]
    for param in serve.params:
        if not isinstance(param, click.Option):
            continue
        names = ", ".join(f"`{opt}`" for opt in param.opts)
        unset = param.default in (None, False) or type(param.default).__name__ == "Sentinel"
        default = "" if unset else f"`{param.default}`"
        lines.append(f"| {names} | {default} | {(param.help or '').replace('|', '/')} |")
    return "\n".join(lines)


def chaos_flags_table() -> str:
    """The chaos flags of ``mockforge serve``, from the settings that declare them."""
    from .cli import FLAGGED

    lines = ["| flag | sets |", "| --- | --- |"]
    for info in FLAGGED:
        flag = info.flag
        assert flag is not None
        usage = f"{flag.name} {flag.metavar}".strip()
        turns_on = f" (and turns {info.switches_on[0]} on)" if info.switches_on else ""
        note = f"; {flag.note[0].lower()}{flag.note[1:].rstrip('.')}" if flag.note else ""
        lines.append(f"| `{usage}` | `{info.dotted}`{turns_on}{note} |")
    return "\n".join(lines)


# One example per route, as a harness would type it (the guide's test runs each).
ROUTE_EXAMPLES = {
    ("/status", "GET"): "curl -s localhost:3000/api/chaos/status",
    ("/enable", "POST"): "curl -s -X POST localhost:3000/api/chaos/enable",
    ("/disable", "POST"): "curl -s -X POST localhost:3000/api/chaos/disable",
    ("/reset", "POST"): "curl -s -X POST localhost:3000/api/chaos/reset",
    ("/guard/renew", "POST"): "curl -s -X POST localhost:3000/api/chaos/guard/renew",
    ("/config", "GET"): "curl -s localhost:3000/api/chaos/config",
    (
        "/config",
        "PUT",
    ): "curl -s -X PUT localhost:3000/api/chaos/config -H 'Content-Type: application/json' -d '{\"enabled\": true}'",
    ("/config/latency", "GET"): "curl -s localhost:3000/api/chaos/config/latency",
    ("/config/latency", "DELETE"): "curl -s -X DELETE localhost:3000/api/chaos/config/latency",
    (
        "/config/latency",
        "PUT",
    ): "curl -s -X PUT localhost:3000/api/chaos/config/latency -H 'Content-Type: application/json' -d '{\"enabled\": true, \"fixed_delay_ms\": 100}'",
    (
        "/config/latency",
        "PATCH",
    ): "curl -s -X PATCH localhost:3000/api/chaos/config/latency -H 'Content-Type: application/json' -d '{\"probability\": 0.5}'",
    ("/config/faults", "GET"): "curl -s localhost:3000/api/chaos/config/faults",
    ("/config/faults", "DELETE"): "curl -s -X DELETE localhost:3000/api/chaos/config/faults",
    (
        "/config/faults",
        "PUT",
    ): 'curl -s -X PUT localhost:3000/api/chaos/config/faults -H \'Content-Type: application/json\' -d \'{"enabled": true, "http_errors": [503], "http_error_probability": 0.2}\'',
    (
        "/config/faults",
        "PATCH",
    ): "curl -s -X PATCH localhost:3000/api/chaos/config/faults -H 'Content-Type: application/json' -d '{\"pattern\": \"fail_first:2:503\"}'",
    ("/config/rate-limit", "GET"): "curl -s localhost:3000/api/chaos/config/rate-limit",
    (
        "/config/rate-limit",
        "DELETE",
    ): "curl -s -X DELETE localhost:3000/api/chaos/config/rate-limit",
    (
        "/config/rate-limit",
        "PUT",
    ): "curl -s -X PUT localhost:3000/api/chaos/config/rate-limit -H 'Content-Type: application/json' -d '{\"enabled\": true, \"requests_per_second\": 50}'",
    (
        "/config/rate-limit",
        "PATCH",
    ): "curl -s -X PATCH localhost:3000/api/chaos/config/rate-limit -H 'Content-Type: application/json' -d '{\"per_ip\": true}'",
    ("/config/circuit-breaker", "GET"): "curl -s localhost:3000/api/chaos/config/circuit-breaker",
    (
        "/config/circuit-breaker",
        "PUT",
    ): 'curl -s -X PUT localhost:3000/api/chaos/config/circuit-breaker -H \'Content-Type: application/json\' -d \'{"enabled": true, "failure_threshold": 3, "cooldown_s": 10}\'',
    (
        "/config/circuit-breaker",
        "PATCH",
    ): "curl -s -X PATCH localhost:3000/api/chaos/config/circuit-breaker -H 'Content-Type: application/json' -d '{\"half_open_probes\": 2}'",
    (
        "/config/circuit-breaker",
        "DELETE",
    ): "curl -s -X DELETE localhost:3000/api/chaos/config/circuit-breaker",
    ("/config/bulkhead", "GET"): "curl -s localhost:3000/api/chaos/config/bulkhead",
    (
        "/config/bulkhead",
        "PUT",
    ): 'curl -s -X PUT localhost:3000/api/chaos/config/bulkhead -H \'Content-Type: application/json\' -d \'{"enabled": true, "max_concurrent": 2, "queue_timeout_ms": 500}\'',
    (
        "/config/bulkhead",
        "PATCH",
    ): "curl -s -X PATCH localhost:3000/api/chaos/config/bulkhead -H 'Content-Type: application/json' -d '{\"retry_after_s\": 2}'",
    ("/config/bulkhead", "DELETE"): "curl -s -X DELETE localhost:3000/api/chaos/config/bulkhead",
    ("/config/outbound", "GET"): "curl -s localhost:3000/api/chaos/config/outbound",
    (
        "/config/outbound",
        "PUT",
    ): 'curl -s -X PUT localhost:3000/api/chaos/config/outbound -H \'Content-Type: application/json\' -d \'{"enabled": true, "hosts": ["payments.internal:443"], "fault_injection": {"http_errors": [503], "http_error_probability": 0.5}}\'',
    (
        "/config/outbound",
        "PATCH",
    ): "curl -s -X PATCH localhost:3000/api/chaos/config/outbound -H 'Content-Type: application/json' -d '{\"refused_probability\": 0.1}'",
    ("/config/outbound", "DELETE"): "curl -s -X DELETE localhost:3000/api/chaos/config/outbound",
    ("/config/traffic", "GET"): "curl -s localhost:3000/api/chaos/config/traffic",
    ("/config/traffic", "DELETE"): "curl -s -X DELETE localhost:3000/api/chaos/config/traffic",
    (
        "/config/traffic",
        "PUT",
    ): "curl -s -X PUT localhost:3000/api/chaos/config/traffic -H 'Content-Type: application/json' -d '{\"enabled\": true, \"bandwidth_limit_bps\": 100000}'",
    (
        "/config/traffic",
        "PATCH",
    ): "curl -s -X PATCH localhost:3000/api/chaos/config/traffic -H 'Content-Type: application/json' -d '{\"packet_loss_percent\": 2}'",
    ("/scenarios", "GET"): "curl -s localhost:3000/api/chaos/scenarios",
    (
        "/scenarios",
        "POST",
    ): 'curl -s -X POST localhost:3000/api/chaos/scenarios -H \'Content-Type: application/json\' -d \'{"name": "flaky", "fault_injection": {"enabled": true, "http_error_probability": 0.5}}\'',
    ("/scenarios", "DELETE"): "curl -s -X DELETE localhost:3000/api/chaos/scenarios",
    ("/scenarios/active", "GET"): "curl -s localhost:3000/api/chaos/scenarios/active",
    (
        "/scenarios/<name>",
        "POST",
    ): "curl -s -X POST localhost:3000/api/chaos/scenarios/slow_backend -H 'Content-Type: application/json' -d '{\"duration_s\": 60}'",
    (
        "/scenarios/<name>",
        "DELETE",
    ): "curl -s -X DELETE localhost:3000/api/chaos/scenarios/slow_backend",
    ("/schedule", "GET"): "curl -s localhost:3000/api/chaos/schedule",
    (
        "/schedule",
        "PUT",
    ): 'curl -s -X PUT localhost:3000/api/chaos/schedule -H \'Content-Type: application/json\' -d \'[{"start_s": 600, "scenario": "peak_traffic"}]\'',
    ("/stats", "GET"): "curl -s localhost:3000/api/chaos/stats",
    ("/breakers", "GET"): "curl -s localhost:3000/api/chaos/breakers",
    (
        "/breakers/<owner>",
        "POST",
    ): "curl -s -X POST localhost:3000/api/chaos/breakers/global -H 'Content-Type: application/json' -d '{\"action\": \"open\"}'",
    ("/scripts", "GET"): "curl -s localhost:3000/api/chaos/scripts",
    ("/verdicts", "GET"): "curl -s 'localhost:3000/api/chaos/verdicts?path=/api&window_s=30'",
    ("/report", "GET"): "curl -s localhost:3000/api/chaos/report -o report.html",
    ("/ui", "GET"): "curl -s localhost:3000/api/chaos/ui -o /dev/null  # open it in a browser",
    ("/ui/chart.js", "GET"): "curl -s localhost:3000/api/chaos/ui/chart.js -o /dev/null",
    ("/openapi.json", "GET"): "curl -s localhost:3000/api/chaos/openapi.json",
}


def routes_examples() -> str:
    """A curl line for every route of the management API, in route-table order."""
    from .api import ROUTES

    blocks = []
    for route in ROUTES:
        for method in route.methods:
            blocks.append(
                f"# {method} {route.rule}: {route.summary}\n{ROUTE_EXAMPLES[(route.rule, method)]}"
            )
    return "```bash\n" + "\n".join(blocks) + "\n```"


GENERATORS = {
    "settings": reference_table,
    "scenarios": scenario_table,
    "flags": flags_table,
    "chaos-flags": chaos_flags_table,
    "routes": routes_examples,
}


def _in_fence(document: str, at: int) -> bool:
    """Whether ``at`` is inside a fenced code block: markers shown there are an example
    to copy (docs/plugins.md), not a section to fill."""
    return sum(1 for line in document[:at].splitlines() if line.startswith("```")) % 2 == 1


def render_into(document: str, plugin: str | None = None) -> str:
    """``document`` with every generated section (between its markers, outside fenced
    code blocks) made anew; with ``plugin``, only its ``settings`` section, from that
    plugin's settings."""
    found = False
    generators = GENERATORS
    if plugin is not None:
        rows = plugin_settings(plugin)
        generators = {"settings": lambda: reference_table(rows)}
    for name, generate in generators.items():
        begin, end = BEGIN.format(name=name), END.format(name=name)
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
        replacement: str | None = None
        parts, done = [], 0
        for match in pattern.finditer(document):
            if _in_fence(document, match.start()):
                continue
            if replacement is None:
                replacement = f"{begin}\n{generate()}\n{end}"
            parts += [document[done : match.start()], replacement]
            done = match.end()
        if replacement is not None:
            found = True
            document = "".join([*parts, document[done:]])
    if not found:
        raise ValueError("no generated-section markers found")
    return document


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", metavar="FILE", help="update the tables inside FILE")
    parser.add_argument(
        "--plugin", metavar="NAME", help="the settings table of the installed plugin NAME"
    )
    args = parser.parse_args(argv)
    try:
        if args.write is None:
            print(reference_table(plugin_settings(args.plugin) if args.plugin else None))
            return 0
        path = Path(args.write)
        document = render_into(path.read_text(encoding="utf-8"), args.plugin)
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    path.write_text(document, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
