"""Instructions per request (cachegrind): what the admitted path adds, without the noise.

    python benchmarks/instructions.py [--requests 20000] [--flask] [--case CASE ...]

Wall-clock figures on this shared VM move by 2x within minutes; instruction counts do
not. Each case runs in its own process under ``valgrind --tool=cachegrind`` twice, with
N and 2N requests (after the same warm-up); the difference, divided by N, is the cost of
one request with start-up and warm-up subtracted. Shown per request: instructions (Ir),
first-level instruction and data cache misses (I1, D1), last-level misses (LL), branch
mispredictions (conditional and indirect), and what each case adds over the app alone.
``minimal`` is footprint.py's minimal limiter: the least an admitted path can execute.
``--tree DIR`` imports the package from another checkout (``git worktree add DIR
COMMIT``), the driver staying this one: before and after a change, like for like (the
count moves by a few hundred instructions a request with what a process imported and
its hash seed; each run here has PYTHONHASHSEED=0).

``--driver CASE N`` (used by the above) runs N requests of one case after a warm-up of
2,000: the same apps, environ and no-op start_response as ``paths.py``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

CASES = ("bare", "memory", "embedded", "minimal")


def driver(case: str, requests: int, flask: bool, directory: str) -> None:
    """N requests of one case, after a warm-up (run under valgrind)."""
    import footprint
    import paths

    from mockforge_wsgi.state import EmbeddedStore

    if flask:
        paths.INNER = paths.flask_app
    if case == "bare":
        app = paths.INNER()
    elif case == "minimal":
        app = footprint.minimal_limiter(paths.INNER())
    elif case == "memory":
        app = paths.wrapped(paths.NEVER_REFUSED)
    else:
        app = paths.wrapped(paths.NEVER_REFUSED, EmbeddedStore(directory))
    paths.run(app, 2_000)
    paths.run(app, requests)


def counts(case: str, requests: int, flask: bool, tree: str | None = None) -> dict[str, int]:
    """cachegrind's totals for one run of the driver."""
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory) / "cachegrind.out"
        command = [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=yes",
            "--branch-sim=yes",
            # The last level simulated is one core's L2 (1 MiB, 8-way on this VM): the
            # L3 cachegrind reads from this guest is a 256 MiB direct-mapped one.
            "--LL=1048576,8,64",
            f"--cachegrind-out-file={out}",
            sys.executable,
            __file__,
            "--driver",
            case,
            str(requests),
            *(["--flask"] if flask else []),
        ]
        environ = {**os.environ, "PYTHONHASHSEED": "0"}
        if tree is not None:
            environ["PYTHONPATH"] = tree
            command.insert(command.index("--driver"), "--no-editable")
        subprocess.run(command, check=True, capture_output=True, env=environ)
        text = out.read_text()
    events = re.search(r"^events: (.+)$", text, re.M)
    summary = re.search(r"^summary: (.+)$", text, re.M)
    assert events is not None and summary is not None
    return dict(zip(events.group(1).split(), map(int, summary.group(1).split()), strict=True))


def per_request(
    case: str, requests: int, flask: bool, tree: str | None = None
) -> dict[str, float]:
    """One request's events: the run of 2N less the run of N, over N."""
    once = counts(case, requests, flask, tree)
    twice = counts(case, 2 * requests, flask, tree)
    return {event: (twice[event] - once[event]) / requests for event in once}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--flask", action="store_true", help="a Flask route, not a bare app")
    parser.add_argument("--case", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--tree", help="import mockforge_wsgi from this checkout")
    parser.add_argument("--driver", nargs=2, metavar=("CASE", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--no-editable", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.no_editable:  # the editable install's finder must not supply the package
        sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    if args.driver:
        with tempfile.TemporaryDirectory() as directory:
            driver(args.driver[0], int(args.driver[1]), args.flask, directory)
        return
    rows: dict[str, dict[str, Any]] = {}
    for case in args.case:
        rows[case] = per_request(case, args.requests, args.flask, args.tree)
    app = "Flask route" if args.flask else "bare app"
    print(f"# {app}, {args.requests} and {2 * args.requests} requests; events per request")
    if args.tree:
        print(f"# mockforge_wsgi from {args.tree}")
    print(
        "| case | Ir | added Ir | I1 miss | D1 miss | LL miss | cond. mispred. | ind. mispred. |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    base = rows.get("bare")
    for case, row in rows.items():
        added = "" if base is None or case == "bare" else f"{row['Ir'] - base['Ir']:+,.0f}"
        d1 = row["D1mr"] + row["D1mw"]
        ll = row["ILmr"] + row["DLmr"] + row["DLmw"]
        print(
            f"| {case} | {row['Ir']:,.0f} | {added} | {row['I1mr']:.1f} | {d1:.1f} | {ll:.2f} "
            f"| {row['Bcm']:.1f} | {row['Bim']:.1f} |"
        )


if __name__ == "__main__":
    main()
