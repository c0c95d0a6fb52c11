"""The import graph: every import points down the layers of DESIGN.md, and no import
circle anywhere.

The layer check reads module-level imports only (an import inside a function, or under
TYPE_CHECKING, is how a module reaches up on purpose: Flask where the API is mounted,
the CLI for the docs). The circle check reads every import, those included: a circle
through a type-only or a late import is still two modules that cannot be understood
apart. The late imports that are meant are listed in LATE_IMPORTS, each with its reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mockforge_wsgi"

# Top to bottom. A module may import only modules of a later line.
LAYERS = [
    ["mockforge_wsgi", "__main__"],
    ["cli", "pytest_plugin", "config_docs"],
    ["gunicorn_server"],  # what gunicorn calls: the application, logger, hooks
    ["app", "admin", "testing", "chaostoolkit"],
    ["api", "metrics", "recorder", "mock_api", "proxy", "client"],
    ["openapi"],  # the management API's document, from its routes and the settings
    ["report"],  # recorder rows -> the HTML report
    ["verdicts"],  # recorder rows -> how the client behaved
    ["middleware"],  # the inbound pipeline: management or exempt -> decide -> report -> apply
    ["outbound"],  # the app's own calls: interception -> decide -> the library's exceptions
    ["apply", "tracing"],  # the inbound apply step (WSGI), span events
    ["decide"],  # the decision core: a Request in, a Plan out, one fail-open boundary
    ["engine", "header_control"],  # the runtime state; chaos a request asks for by header
    ["_state_start"],  # a server starting on a store that holds a state
    ["outcome"],  # a Plan and what applying it found (plan imported for its type only)
    ["plan"],
    [
        "scenarios",
        "fault",
        "rate_limit",
        "traffic_shaping",
        "breaker",
        "bulkhead",
        "active_faults",
        "tripwire",  # the guard's decision and its per-process watcher
    ],
    ["latency", "answer_window"],  # answer_window: the guard's window of the app's answers
    ["injections", "state", "state.server_store", "state.degrading"],
    ["state.embedded", "state.memory", "state.redis_store"],
    ["state.base"],
    ["state.gcra", "state._process", "state.redis_url", "config"],
    ["config_declarations"],  # every section and setting; config.py loads and re-exports
    ["rules", "patterns", "plugins"],
    ["_settings"],
    ["_kinds"],
    ["_guard"],  # cross-site requests and rebound Hosts refused (management API)
    ["request"],  # what the decision core reads of a request: lazy over WSGI, or plain
    ["release"],  # holds that chaos off wakes (a condition, a version watcher)
    [
        "_env",
        "_answers",
        "_extras",
        "_gunicorn",
        "_headers",
        "_observe",
        "_sockets",
        "_sections",
        "_tls",
        "_version",
    ],
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) or "mockforge_wsgi"


def _imports(path: Path, everywhere: bool = False) -> set[str]:
    """Our modules this one imports at module level, outside TYPE_CHECKING (with
    ``everywhere``: also under TYPE_CHECKING and inside functions and classes)."""
    name = _name(path)
    package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    if name == "mockforge_wsgi":
        package = []
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            late = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            typing_only = isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test)
            if (late or typing_only) and not everywhere:
                continue
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package[: len(package) - (child.level - 1)]
                    if child.module:
                        found.add(".".join([*base, child.module]))
                    else:
                        found.update(".".join([*base, alias.name]) for alias in child.names)
                elif child.module and child.module.startswith("mockforge_wsgi."):
                    found.add(child.module.removeprefix("mockforge_wsgi."))
            elif isinstance(child, ast.Import):
                found.update(
                    alias.name.removeprefix("mockforge_wsgi.")
                    for alias in child.names
                    if alias.name.startswith("mockforge_wsgi.")
                )
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {target for target in found if target in RANK or target.split(".")[0] in RANK}


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    assert sorted(_name(path) for path in MODULES) == sorted(RANK)


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_imports_point_down(path: Path) -> None:
    name = _name(path)
    upward = [target for target in _imports(path) if RANK[target] <= RANK[name]]
    assert not upward, f"{name} imports {upward} from its own or a higher layer"


# Imports that point up on purpose, made late (inside a function) so that importing the
# lower module does not import the higher one. The circle check leaves these edges out;
# each must stay late (test_late_imports_are_late).
LATE_IMPORTS = {
    # The management API (Flask) is imported where ChaosMiddleware mounts it:
    # api_prefix=None keeps Flask out of the process, and api imports middleware's names.
    ("middleware", "api"),
    # The generated docs tables read the CLI's options (the click command) to list them.
    ("config_docs", "cli"),
}


def _graph() -> dict[str, set[str]]:
    """Every import between our modules, anywhere in the module, less LATE_IMPORTS."""
    graph = {}
    for path in MODULES:
        name = _name(path)
        graph[name] = {t for t in _imports(path, everywhere=True) if (name, t) not in LATE_IMPORTS}
    return graph


def import_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of the graph (its modules in import order, the first repeated at the
    end), or None."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        trail: list[str] = []
        on_trail: set[str] = set()
        stack = [(start, iter(sorted(graph[start])))]
        trail.append(start)
        on_trail.add(start)
        while stack:
            node, targets = stack[-1]
            target = next(targets, None)
            if target is None:
                stack.pop()
                trail.pop()
                on_trail.discard(node)
                done.add(node)
            elif target in on_trail:
                return [*trail[trail.index(target) :], target]
            elif target not in done and target in graph:
                stack.append((target, iter(sorted(graph[target]))))
                trail.append(target)
                on_trail.add(target)
    return None


def test_no_import_circle() -> None:
    circle = import_circle(_graph())
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_the_circle_check_finds_a_circle() -> None:
    """What the check would say of the circle this package had (plan <-> outcome)."""
    graph = {"plan": {"outcome", "config"}, "outcome": {"plan"}, "config": set()}
    assert import_circle(graph) == ["outcome", "plan", "outcome"]
    assert import_circle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize(("module", "target"), sorted(LATE_IMPORTS))
def test_late_imports_are_late(module: str, target: str) -> None:
    """Each allowed late import is still there, and still made late only."""
    path = next(p for p in MODULES if _name(p) == module)
    assert target in _imports(path, everywhere=True), f"{module} no longer imports {target}"
    assert target not in _imports(path), f"{module} imports {target} at module level"
