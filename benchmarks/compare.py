"""``paths.py`` on an older commit and on this tree, alternately, in one table.

    python benchmarks/compare.py 3035467 [--rounds 4] [--samples 10] [--flask] [--batch N]

This VM's speed swings by up to 2x between minutes, so two runs made at different times
cannot be compared; runs alternating old, new, old, new... can. The older commit is
checked out in a temporary git worktree; each run is a fresh process that imports the
package from its tree (the editable install's finder is set aside). The table shows,
per case, the median over the rounds of what the case adds over the disabled path.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# Runs paths.py against the package in the tree named first.
RUNNER = """
import runpy, sys
tree, script = sys.argv[1], sys.argv[2]
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path.insert(0, tree)
sys.argv = [script, *sys.argv[3:]]
runpy.run_path(script, run_name="__main__")
"""


def added(tree: Path, samples: int, flask: bool = False, batch: int = 0) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            RUNNER,
            str(tree),
            str(HERE / "paths.py"),
            "--samples",
            str(samples),
            *(["--flask"] if flask else []),
            *(["--batch", str(batch)] if batch else []),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = re.findall(r"^\| (.+?)\s+\|\s+[\d.]+ \|\s+[\d.]+ \|\s+([+-][\d.]+) \|$", out, re.M)
    return {name: float(value) for name, value in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("commit", help="the older commit")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--samples", type=int, default=10, help="paths.py --samples")
    parser.add_argument("--flask", action="store_true", help="paths.py --flask")
    parser.add_argument("--batch", type=int, default=0, help="paths.py --batch (0: its own)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        old = Path(scratch) / "old"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), args.commit],
            check=True,
            capture_output=True,
        )
        try:
            before: dict[str, list[float]] = {}
            after: dict[str, list[float]] = {}
            for _ in range(args.rounds):
                for tree, into in ((old, before), (ROOT, after)):
                    for name, value in added(tree, args.samples, args.flask, args.batch).items():
                        into.setdefault(name, []).append(value)
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=True
            )
    print(
        f"# us added over the disabled path (disabled: over the bare app), median of "
        f"{args.rounds} alternating runs; before = {args.commit}, after = this tree"
    )
    print("| case | before | after | after / before |")
    print("| --- | ---: | ---: | ---: |")
    for name, values in after.items():
        old_value = statistics.median(before.get(name, [float("nan")]))
        new_value = statistics.median(values)
        print(f"| {name} | {old_value:+.2f} | {new_value:+.2f} | {new_value / old_value:.2f} |")


if __name__ == "__main__":
    main()
