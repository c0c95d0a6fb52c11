"""The import graph: every import points down the layers of DESIGN.md (so no cycles),
module-level imports only (an import inside a function, or under TYPE_CHECKING, is how
a module reaches up on purpose: Flask where the API is mounted, the CLI for the docs)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mockforge_wsgi"

# Top to bottom. A module may import only modules of a later line.
LAYERS = [
    ["mockforge_wsgi", "__main__"],
    ["cli", "pytest_plugin", "config_docs"],
    ["app", "admin", "testing", "chaostoolkit"],
    ["api", "metrics", "recorder", "mock_api", "proxy", "client"],
    ["report"],  # recorder rows -> the HTML report
    ["verdicts"],  # recorder rows -> how the client behaved
    ["middleware"],  # the pipeline: decide -> report -> apply
    ["apply", "header_control", "tracing"],
    ["engine"],  # the runtime state, scenarios switched, timed and ramped
    ["plan"],
    ["scenarios", "fault", "rate_limit", "traffic_shaping", "breaker", "bulkhead"],
    ["latency"],
    ["outcome", "state", "state.server_store"],
    ["state.embedded", "state.memory", "state.redis_store"],
    ["state.base"],
    ["state.gcra", "state._process", "config"],
    ["rules", "patterns", "plugins"],
    ["_settings"],
    ["_kinds"],
    ["_guard"],  # cross-site requests and rebound Hosts refused (management API)
    ["release"],  # holds that chaos off wakes (a condition, a version watcher)
    ["_env", "_answers", "_extras", "_headers", "_observe", "_sockets", "_sections", "_version"],
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) or "mockforge_wsgi"


def _imports(path: Path) -> set[str]:
    """Our modules this one imports at module level, outside TYPE_CHECKING."""
    name = _name(path)
    package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    if name == "mockforge_wsgi":
        package = []
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
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
