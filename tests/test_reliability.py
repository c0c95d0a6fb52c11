"""The management API under schemathesis: every operation, generated and hostile input,
the stateful phase, with and without an admin token. No server error, no response that
breaks the OpenAPI document.

Three checks are left out, each for a reason JSON Schema cannot state (see the issue 12
note): ``positive_data_acceptance`` (cross-field rules: a range's min <= max, `uniform`
needs a range, an address must parse), ``ensure_resource_availability`` (``DELETE
/scenarios/{name}`` stops the running scenario; definitions are not resources it
deletes), ``allow_header_conformance`` (``/scenarios/active`` also matches
``/scenarios/{name}``, so OPTIONS lists POST and DELETE there).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from servers import mockforge_serve

pytestmark = pytest.mark.server

# Per run; schemathesis repeats fuzzing and stateful until it is spent. Its coverage phase
# takes ~3 s of it on a quiet 2-core machine; on one three times slower (a CI run beside
# another load) 8 s reached 38 operations of 51, so the budget leaves room for that.
RUN_SECONDS = "12"
LEFT_OUT = "positive_data_acceptance,ensure_resource_availability,allow_header_conformance"


@pytest.mark.parametrize("token", [None, "s3cret"], ids=["open", "with-token"])
def test_schemathesis_finds_no_server_error_and_no_mismatch(
    tmp_path: Path, token: str | None
) -> None:
    args = ("--admin-token", token) if token else ()
    # A query longer than the schema allows may be refused by gunicorn itself (414, its
    # 4094-byte request line) before the app sees it: a rejection too.
    (tmp_path / "schemathesis.toml").write_text(
        "[checks.negative_data_rejection]\n"
        'expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "414",'
        ' "415", "422", "428", "429"]\n'
    )
    with mockforge_serve(tmp_path, *args) as server:
        command = [
            sys.executable,
            "-c",
            "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())",
            "run",
            server.url + "/api/chaos/openapi.json",
            "--checks",
            "all",
            "--exclude-checks",
            LEFT_OUT,
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-time",
            RUN_SECONDS,
            "--workers",
            "2",
            "--seed",
            "20261127",
            "--no-color",
        ]
        if token:
            command += ["--header", f"Authorization: Bearer {token}"]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False
        )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    tested = re.search(r"Tested: (\d+)", result.stdout)
    assert tested is not None and int(tested[1]) >= 46, result.stdout[-3000:]  # every operation
