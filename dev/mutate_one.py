"""Mutation-test one module against the tests that cover it, in about a minute.

    python3 dev/mutate_one.py breaker tests/test_breaker.py
    python3 dev/mutate_one.py bulkhead tests/test_bulkhead.py --children 2

``mutmut run`` with the project's configuration mutates every listed module and first
runs the whole fast suite to map tests to functions (several minutes on 2 cores). This
copies the project into a scratch directory whose ``[tool.mutmut]`` names one module and
the given test files (their fast tests only), runs mutmut there (one child unless
``--children N``: the machine may be shared), and prints
the survivors (``mutmut show <name>`` in that directory shows each).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPIED = ["mockforge_wsgi", "tests", "examples", "docs", "README.md", "setup.cfg"]


def main(module: str, tests: list[str], children: int = 1) -> int:
    scratch = Path(tempfile.mkdtemp(prefix=f"mutate-{module}-"))
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, scratch / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, scratch / name)
    config = (ROOT / "pyproject.toml").read_text()
    one = (
        f'paths_to_mutate = ["mockforge_wsgi/{module.replace(".", "/")}.py"]\n'
        f"tests_dir = {tests!r}\n".replace("'", '"')
    )
    config = re.sub(r"paths_to_mutate = \[.*?\]\n", "", config, flags=re.DOTALL)
    config = re.sub(r"tests_dir = \[.*?\]\n", one, config)
    (scratch / "pyproject.toml").write_text(config)
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "mutmut", "run", "--max-children", str(children)],
        cwd=scratch,
        capture_output=True,
        text=True,
        check=False,
    )
    took = time.monotonic() - started
    results = subprocess.run(
        [sys.executable, "-m", "mutmut", "results"],
        cwd=scratch,
        capture_output=True,
        text=True,
        check=False,
    )
    print(run.stdout.rsplit("\r", 1)[-1].strip() or run.stderr[-2000:])
    print(results.stdout.strip() or "(no survivors)")
    print(f"{module}: {took:.0f} s; scratch copy: {scratch}")
    return run.returncode


if __name__ == "__main__":
    args = sys.argv[1:]
    children = 1
    if "--children" in args:
        at = args.index("--children")
        children = int(args[at + 1])
        del args[at : at + 2]
    if len(args) < 2:
        sys.exit(__doc__)
    sys.exit(main(args[0], args[1:], children))
