"""Custom faults as plugins: the contract checked at load, and the example plugin from
examples/plugins installed (into a directory of the test's) and used end to end."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from doc_blocks import blocks_of
from servers import mockforge_serve, session

from mockforge_wsgi.config import ConfigError
from mockforge_wsgi.config_docs import BEGIN, END
from mockforge_wsgi.plugins import load_plugins

EXAMPLE = Path(__file__).parent.parent / "examples" / "plugins" / "expire_session"
DOCS = Path(__file__).parent.parent / "docs"
# The docs with generated sections (tests/test_config.py and test_guide.py check them).
GENERATED = ("configuration.md", "scenarios.md", "serving.md", "CHAOS_ENGINEERING.md")


class Point:
    """An entry point as importlib.metadata gives one."""

    def __init__(self, name: str, loaded: Any) -> None:
        self.name, self._loaded = name, loaded

    def load(self) -> Any:
        if isinstance(self._loaded, Exception):
            raise self._loaded
        return self._loaded


def example_plugin() -> Any:
    sys.path.insert(0, str(EXAMPLE))
    try:
        import mockforge_expire_session
    finally:
        sys.path.remove(str(EXAMPLE))
    return mockforge_expire_session.PLUGIN


def test_a_plugin_that_breaks_the_contract_is_named_not_skipped() -> None:
    class Nameless:
        name = "Bad Name"
        Config = dict
        injection = 3

    with pytest.raises(ConfigError) as raised:
        load_plugins([Point("broken", ImportError("no module x")), Point("odd", Nameless())])
    assert raised.value.problems == [
        "plugin 'broken' (mockforge_wsgi.faults): cannot be loaded (no module x)",
        "plugin 'odd' (mockforge_wsgi.faults): name 'Bad Name' is not [a-z][a-z0-9_]* "
        "(at most 40)",
        "plugin 'odd' (mockforge_wsgi.faults): Config is not an attrs class",
        "plugin 'odd' (mockforge_wsgi.faults): no decide()",
        "plugin 'odd' (mockforge_wsgi.faults): no wrap()",
        "plugin 'odd' (mockforge_wsgi.faults): injection is not a name",
    ]
    plugin = example_plugin()
    with pytest.raises(ConfigError, match="a second plugin named 'expire_session'"):
        load_plugins([Point("a", plugin), Point("b", plugin)])
    assert load_plugins([Point("a", plugin)]) == (plugin,)


def test_the_example_decides_from_the_generator_alone() -> None:
    plugin = example_plugin()
    config = plugin.Config(enabled=True, probability=0.5, cookie="sid")
    before = random.getstate()
    rng, twin = random.Random(7), random.Random(7)
    decisions = [plugin.decide(config, rng) for _ in range(200)]
    # One draw per decision, from the request's generator and nothing else: the same
    # 200 answers as the generator's own draws say, and the global generator untouched.
    assert decisions == ["sid" if twin.random() < 0.5 else None for _ in range(200)]
    assert random.getstate() == before
    replayed = random.Random(7)
    assert [plugin.decide(config, replayed) for _ in range(200)] == decisions
    draws = [plugin.decide(config, rng) for rng in [random.Random(1)] * 400]
    assert 150 < draws.count("sid") < 250  # binomial(400, 0.5): 200 +- 5 sd


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin pip-installed into a directory of its own (not this process's
    environment: the committed docs tables are made without plugins). Built from a copy:
    a build writes into its source folder, and another xdist worker may build it too."""
    target = tmp_path_factory.mktemp("site")
    source = shutil.copytree(EXAMPLE, tmp_path_factory.mktemp("source") / EXAMPLE.name)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(source)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return target


def _run(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # this checkout's package, not whichever one is installed, beside the plugin
    path = os.pathsep.join([str(site), str(EXAMPLE.parent.parent.parent)])
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": path, "HOME": str(cwd)}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, cwd=cwd, env=env
    )


@pytest.mark.server
def test_the_installed_example_is_configured_validated_and_documented_like_ours(
    site: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("chaos:\n  plugins:\n    expire_session: {enabled: true, probability: 2}\n")
    refused = _run(site, "-m", "mockforge_wsgi", "validate", str(bad), cwd=tmp_path)
    assert refused.returncode == 1
    assert "chaos.plugins.expire_session.probability: 2 is not in [0, 1]" in refused.stderr
    good = tmp_path / "good.yaml"
    good.write_text("chaos:\n  plugins:\n    expire_session: {enabled: true, cookie: sid}\n")
    accepted = _run(site, "-m", "mockforge_wsgi", "validate", str(good), cwd=tmp_path)
    assert accepted.returncode == 0, accepted.stderr
    # docs/plugins.md's example block, as written, with the plugin installed
    block = next(b for b in blocks_of(DOCS / "plugins.md") if "expire_session:" in b.source)
    (tmp_path / "plugins.yaml").write_text(block.source)
    documented = _run(site, "-m", "mockforge_wsgi", "validate", "plugins.yaml", cwd=tmp_path)
    assert documented.returncode == 0, documented.stderr
    # the author's table (docs/plugins.md says how), written into their README's markers
    readme = tmp_path / "README.md"
    readme.write_text(
        f"# expire_session\n\n{BEGIN.format(name='settings')}\n{END.format(name='settings')}\n"
    )
    written = _run(
        site, "-m", "mockforge_wsgi.config_docs", "--plugin", "expire_session", "--write",
        str(readme), cwd=tmp_path,
    )  # fmt: skip
    assert written.returncode == 0, written.stderr
    rows = [line for line in readme.read_text().splitlines() if line.startswith("| `chaos.")]
    assert [row.split(" | ")[0] for row in rows] == [
        "| `chaos.plugins.expire_session.enabled`",
        "| `chaos.plugins.expire_session.probability`",
        "| `chaos.plugins.expire_session.cookie`",
    ]
    assert "`MOCKFORGE_CHAOS_PLUGINS_EXPIRE_SESSION_PROBABILITY`" in rows[1]
    assert "Share of answers that expire it." in rows[1]
    # ours are unchanged by it: every committed generated doc renders as committed
    ours = _run(
        site, "-c",
        "import pathlib, sys; from mockforge_wsgi.config_docs import render_into\n"
        "for name in sys.argv[1:]:\n"
        "    text = pathlib.Path(name).read_text()\n"
        "    assert 'expire_session' not in render_into(text), name\n"
        "    assert render_into(text) == text, name\n",
        *(str(DOCS / name) for name in GENERATED), cwd=tmp_path,
    )  # fmt: skip
    assert ours.returncode == 0, ours.stderr


@pytest.mark.server
def test_the_installed_example_expires_the_session_through_a_real_server(
    site: Path, tmp_path: Path
) -> None:
    env = {
        "PYTHONPATH": os.pathsep.join([str(site), str(EXAMPLE.parent.parent.parent)]),
        "MOCKFORGE_CHAOS_ENABLED": "true",
        "MOCKFORGE_CHAOS_PLUGINS_EXPIRE_SESSION_ENABLED": "true",
        "MOCKFORGE_CHAOS_PLUGINS_EXPIRE_SESSION_COOKIE": "sid",
    }
    with mockforge_serve(tmp_path, "--workers", "2", env=env) as server, session() as http:
        answer = http.get(server.url + "/api/test", timeout=10)
        assert answer.status_code == 200 and answer.json()["message"]
        assert answer.headers["Set-Cookie"] == "sid=; Max-Age=0; Path=/"
        assert answer.headers["X-Mockforge-Chaos"] == "expire_session=sid"
        api = server.url + "/api/chaos"
        status = http.get(api + "/status", timeout=10).json()
        assert status["counters"]["session_expired"] == 1
        assert status["effective_config"]["plugins"] == {
            "expire_session": {"enabled": True, "probability": 1.0, "cookie": "sid"}
        }
        change = {"enabled": True, "plugins": {"expire_session": {"enabled": False}}}
        assert http.put(api + "/config", json=change, timeout=10).status_code == 200
        assert "Set-Cookie" not in http.get(server.url + "/api/test", timeout=10).headers
        document = http.get(api + "/openapi.json", timeout=10).json()
    schemas = document["components"]["schemas"]
    plugin_schema = schemas["PluginExpireSessionConfig"]["properties"]
    assert plugin_schema["probability"] == {
        "type": "number",
        "minimum": 0.0,
        "maximum": 1.0,
        "description": "Share of answers that expire it.",
    }
    assert schemas["PluginsConfig"]["properties"]["expire_session"] == {
        "$ref": "#/components/schemas/PluginExpireSessionConfig"
    }
    assert schemas["ChaosConfig"]["properties"]["plugins"] == {
        "$ref": "#/components/schemas/PluginsConfig"
    }
