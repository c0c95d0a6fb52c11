"""The guide: its generated tables are current, and every example line runs."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from servers import mockforge_serve

from mockforge_wsgi.cli import main
from mockforge_wsgi.config_docs import render_into

GUIDE = Path(__file__).parent.parent / "docs" / "CHAOS_ENGINEERING.md"


def example_lines() -> list[str]:
    """Every `curl` and `mockforge chaos|scenarios` line of the guide's bash blocks."""
    blocks = re.findall(r"```bash\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.DOTALL)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    return [
        line
        for line in lines
        if line.startswith("curl ") or re.match(r"mockforge (chaos|scenarios)\b", line)
    ]


def test_the_guide_is_generated_and_current() -> None:
    document = GUIDE.read_text(encoding="utf-8")
    assert render_into(document) == document, (
        "docs/CHAOS_ENGINEERING.md is stale: python -m mockforge_wsgi.config_docs "
        "--write docs/CHAOS_ENGINEERING.md"
    )


@pytest.mark.server
def test_every_example_runs_against_a_live_server(tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        if os.environ.get("CI"):
            pytest.fail("curl is missing")
        pytest.skip("curl is not installed")
    lines = example_lines()
    assert len(lines) >= 35  # every route has one, plus the quick start and shell verbs
    with mockforge_serve(tmp_path, "--recorder-db", str(tmp_path / "recorder.db")) as server:
        address = server.url.removeprefix("http://")
        for line in lines:
            line, _, comment = line.partition("  #")
            exits = re.search(r"curl exits (\d+)", comment)
            expected = int(exits.group(1)) if exits else 0
            line = line.replace("http://127.0.0.1:3000", server.url)
            line = line.replace("localhost:3000", address)
            if line.startswith("curl "):
                command = ["curl", "--fail", "--max-time", "20", *shlex.split(line)[1:]]
                result = subprocess.run(
                    command, capture_output=True, timeout=60, check=False, cwd=tmp_path
                )
                code, out, err = result.returncode, result.stdout.decode(), result.stderr
            else:  # the CLI in this process: an interpreter start per line costs ~0.5 s
                args = [*shlex.split(line)[1:], "--url", server.url]
                invoked = CliRunner().invoke(main, args)
                code, out, err = invoked.exit_code, invoked.output, repr(invoked.exception)
            assert code == expected, (line, out[-500:], err[-500:])
            if expected == 0:
                _assert_printed_what_it_should(line, out)


def _assert_printed_what_it_should(line: str, out: str) -> None:
    """Exit status alone would pass a line that printed nothing useful."""
    if line.startswith("curl -i"):
        assert out.startswith("HTTP/1.1 "), (line, out[:200])
        assert "X-Mockforge-Request-Id" in out or "Content-Type" in out, (line, out[:300])
    elif line.startswith("curl ") and " -o " in line:
        assert out == "", line  # written to a file: curl --fail proved it a 2xx
    elif line.startswith("curl "):
        json.loads(out)  # every management answer is JSON
    else:
        assert out.strip(), line  # the shell verbs say what they did
