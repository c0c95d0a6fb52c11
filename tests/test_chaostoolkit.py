"""The Chaos Toolkit driver: ``chaos run examples/chaostoolkit/experiment.json`` against a
live ``mockforge serve``, and the journal says each step did what it is named for."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

EXPERIMENT = Path(__file__).parent.parent / "examples" / "chaostoolkit" / "experiment.json"


@pytest.mark.server
def test_the_example_experiment_runs_against_a_live_server(
    tmp_path: Path, chaos_server: str
) -> None:
    """Against the session's server (the README's line runs there too): the experiment
    resets it when it recovers."""
    chaos = shutil.which("chaos")
    if chaos is None:
        if os.environ.get("CI"):
            pytest.fail("chaos (the chaostoolkit package, in the dev extra) is missing")
        pytest.skip("chaostoolkit is not installed")
    urllib.request.urlopen(
        urllib.request.Request(chaos_server + "/api/chaos/reset", method="POST"), timeout=10
    ).close()  # as the chaos fixture leaves it
    env = {**os.environ, "MOCKFORGE_URL": chaos_server, "NO_PROXY": "127.0.0.1"}
    done = subprocess.run(
        [chaos, "--no-log-file", "run", "--journal-path", str(tmp_path / "journal.json"),
         str(EXPERIMENT)],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    journal = json.loads((tmp_path / "journal.json").read_text())
    assert (journal["status"], journal["deviated"]) == ("completed", False)
    outputs = {step["activity"]["name"]: step.get("output") for step in journal["run"]}
    statuses = [outputs[name]["status"] for name in ("first-failure", "second-failure")]
    assert statuses == [503, 503]  # injected
    assert outputs["third-failure"]["status"] == 503
    assert outputs["breaker-is-open"] == "open"  # three failures opened it
    assert outputs["injections-so-far"]["http_error"] == 3
    assert outputs["recover"]["enabled"] is False  # reset: the startup config again


def test_breaker_state_waits_for_the_state_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """The third failure is counted when the server closes its answer: a probe that
    asks right after may see the breaker still closed, and asks again."""
    from mockforge_wsgi import chaostoolkit

    seen = iter(["closed", "closed", "open"])

    class Client:
        def breakers(self) -> list[dict[str, str]]:
            return [{"owner": "0", "state": "closed"}, {"owner": "global", "state": next(seen)}]

    monkeypatch.setattr(chaostoolkit, "_client", lambda configuration: Client())
    assert chaostoolkit.breaker_state(wait_for="open") == "open"
    seen = iter(["closed"] * 1000)
    started = time.monotonic()
    assert chaostoolkit.breaker_state(wait_for="open", within_s=0.1) == "closed"
    assert time.monotonic() - started < 1.0  # gave up, and said what it saw
    assert chaostoolkit.breaker_state("nobody") is None


@pytest.mark.parametrize("within_s", [-1.0, float("nan"), float("inf"), 61.0])
def test_breaker_state_refuses_a_wait_that_could_not_end(within_s: float) -> None:
    """Every number a user sends is bounded: NaN or inf would ask for good."""
    from mockforge_wsgi import chaostoolkit

    with pytest.raises(ValueError, match=r"within_s: .* is not a number of seconds from 0 to 60"):
        chaostoolkit.breaker_state(wait_for="open", within_s=within_s)
