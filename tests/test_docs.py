"""The docs are tests (tests/doc_blocks.py runs each block): every block has a run or a
marker saying why not, and the runner fails what it should."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from doc_blocks import ROOT, Block, _lines, blocks_of, documents, run_lines

pytest_plugins = ("pytester",)


def test_every_block_runs_or_says_why_not() -> None:
    unrun = [
        f"{path.relative_to(ROOT)}:{block.line} ```{block.language}"
        for path in documents()
        for block in blocks_of(path)
        if block.runner is None
    ]
    assert unrun == [], (
        "blocks with no run and no <!-- not run: WHY --> or <!-- output of: COMMAND --> "
        f"marker on the line before them: {unrun}"
    )


def test_every_marker_stands_before_a_block() -> None:
    """A marker a blank paragraph away from its block would mark nothing."""
    for path in documents():
        text = path.read_text(encoding="utf-8")
        written = len(re.findall(r"^[ \t]*<!--\s*(?:not run|output of):", text, flags=re.M))
        attached = sum(block.marker is not None for block in blocks_of(path))
        assert written == attached, f"{path.relative_to(ROOT)}: a marker with no block after it"


def test_the_docs_are_found() -> None:
    names = {str(path.relative_to(ROOT)) for path in documents()}
    assert {"README.md", "docs/configuration.md", "docs/CHAOS_ENGINEERING.md"} <= names
    assert sum(len(blocks_of(path)) for path in documents()) >= 40


DOC = """# A doc

```nginx
proxy_pass http://127.0.0.1:3000;
```

<!-- not run: needs a Jaeger collector -->
```bash
mockforge serve --tracing
```

<!-- not run: far away -->

```yaml
chaos: {enabled: true}
```

<!-- output of: mockforge validate x.yaml  # exits 1 -->
```text
invalid
```

```python
from mockforge_wsgi.client import ChaosClient

chaos = ChaosClient("http://127.0.0.1:3000")
```

```bash
mockforge validate chaos.yaml
curl -s localhost:3000/api/chaos/status
```
"""


def test_each_block_gets_its_runner_and_marker(tmp_path: Path) -> None:
    doc = tmp_path / "README.md"
    doc.write_text(DOC)
    blocks = blocks_of(doc)
    assert [(b.language, b.runner, b.needs_server) for b in blocks] == [
        ("nginx", None, False),  # nothing runs it, no marker: the census lists it
        ("bash", "skip", False),
        ("yaml", "yaml", False),  # a marker a paragraph away does not count
        ("text", "output", False),
        ("python", "python", True),
        ("bash", "shell", True),
    ]
    assert blocks[1].argument == "needs a Jaeger collector"
    assert blocks[3].argument == "mockforge validate x.yaml  # exits 1"


@pytest.mark.parametrize(
    ("source", "lines"),
    [
        pytest.param("a \\\n  b\n", ["a b"], id="continuation"),
        pytest.param("# a comment\nls\n", ["ls"], id="comment"),
        pytest.param("curl -d '[1,\n  2]'\nls\n", ["curl -d '[1,\n  2]'", "ls"], id="open-quote"),
    ],
)
def test_shell_lines(source: str, lines: list[str]) -> None:
    assert _lines(source) == lines


def test_a_block_that_nothing_runs_fails_naming_file_and_line(pytester: pytest.Pytester) -> None:
    """Through pytest itself: the unmarked block fails, the marked one is a skip with its
    reason, a yaml key outside chaos: fails (nothing would read it), a good one passes."""
    pytester.makeconftest(
        "import copy\nfrom pathlib import Path\nfrom doc_blocks import SYBIL\n"
        "here = copy.copy(SYBIL)\nhere.path = Path.cwd()\npytest_collect_file = here.pytest()\n"
    )
    pytester.makefile(
        ".md",
        README="```nginx\nlisten 80;\n```\n\n<!-- not run: needs nginx -->\n```nginx\nx\n```\n\n"
        "```yaml\nrules: []\n```\n\n```yaml\nchaos: {enabled: true}\n```\n",
    )
    # Not the installed plugins that are not ours (pyproject.toml's addopts).
    result = pytester.runpytest(
        "README.md", "-rs", "-p", "no:schemathesis", "-p", "no:benchmark", "-p", "no:anyio"
    )
    result.assert_outcomes(failed=2, passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*README.md:1: a ```nginx block that nothing runs*"])
    result.stdout.fnmatch_lines(["*not run: needs nginx*"])
    result.stdout.fnmatch_lines(["*README.md:10: *"])  # validate or the loader refuses it


def test_a_marked_block_is_not_a_block_the_census_counts() -> None:
    block = Block("nginx", "x", 1, "not run", "needs nginx")
    assert (block.runner, block.needs_server) == ("skip", False)


# Each example whose docstring says how to run it, and the test that runs those lines.
RUN_BY = {
    "examples/circuit_breaker.py": "test_harness_examples.py",
    "examples/retry_client.py": "test_harness_examples.py",
    "examples/unittest_harness.py": "test_harness_examples.py",
    "examples/flask_app/app.py": "test_examples.py",
    "examples/django_project/mysite/wsgi.py": "test_examples.py",
}


def test_every_example_run_line_is_run() -> None:
    with_lines = {
        str(path.relative_to(ROOT))
        for path in ROOT.glob("examples/**/*.py")
        if "build" not in path.parts and run_lines(path)
    }
    assert with_lines == set(RUN_BY), "an example's run lines that no test runs (RUN_BY)"
    for example, test in RUN_BY.items():
        name = Path(example).name
        assert name in (ROOT / "tests" / test).read_text(), (example, test)
