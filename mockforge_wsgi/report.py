"""The experiment report: recorder rows in, one self-contained HTML page out.

``report_data`` is pure (rows oldest first -> plain data: series for the charts, scenario
windows before/during/after, verdicts, the resilience score); ``render_report`` puts that
data, Chart.js (shipped in the package, MIT) and a small drawing script into one page that
opens offline. ``mockforge report`` and ``GET /api/chaos/report`` both use it.
"""

from __future__ import annotations

import html
import json
import math
import string
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

from .injections import LATENCY
from .verdicts import APP_RAN, DEFAULT_WINDOW_S, quantile, verdicts

__all__ = ["CHART_JS", "inline_scripts", "render_report", "report_data", "static_text"]

CHART_JS = "chart.umd.min.js"
TIME_BUCKETS = 60  # points of each chart over time, at most
MIN_BUCKET_S = 0.1
HISTOGRAM_BINS = 20  # spaced evenly on a log scale: injected delays dwarf real ones
CALLS_SHOWN = 100
SCORE_FORMULA = (
    "score = 100 x call success ratio x sqrt(min(1, p99 baseline / p99 under chaos)) "
    "x 1 / (1 + recovery s / 10)"
)


def static_text(name: str) -> str:
    """A file shipped under ``mockforge_wsgi/static``."""
    return resources.files("mockforge_wsgi").joinpath(f"static/{name}").read_text("utf-8")


def _ok(row: Mapping[str, Any]) -> bool:
    """The client got a whole answer below 400."""
    return 200 <= int(row["status"]) < 400 and row.get("fault_type") not in APP_RAN


def _figures(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    durations = [float(row["duration_ms"]) for row in rows]
    return {
        "requests": len(rows),
        "success_ratio": sum(map(_ok, rows)) / len(rows) if rows else None,
        "p50_ms": quantile(durations, 0.5),
        "p99_ms": quantile(durations, 0.99),
    }


def _windows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each run of rows under one scenario, with the same length of time before and
    after it (rows under another scenario left out)."""
    runs: list[tuple[str, float, float]] = []
    for row in rows:
        name = row.get("scenario")
        if not name:
            continue
        at = float(row["time"])
        if runs and runs[-1][0] == name:
            runs[-1] = (name, runs[-1][1], at)
        else:
            runs.append((name, at, at))
    calm = [row for row in rows if not row.get("scenario")]
    found = []
    for name, start, end in runs:
        span = max(end - start, 1.0)
        before = [row for row in calm if start - span <= float(row["time"]) < start]
        during = [
            row
            for row in rows
            if row.get("scenario") == name and start <= float(row["time"]) <= end
        ]
        after = [row for row in calm if end < float(row["time"]) <= end + span]
        found.append(
            {
                "scenario": name,
                "start": start,
                "end": end,
                "before": _figures(before),
                "during": _figures(during),
                "after": _figures(after),
            }
        )
    return found


def _score(
    rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any], windows: Sequence[Any]
) -> dict[str, Any]:
    """The resilience score and its parts (the formula is printed beside it)."""
    chaos = [row for row in rows if row.get("scenario") or row.get("injected")]
    calm = [row for row in rows if not (row.get("scenario") or row.get("injected"))]
    p99_chaos = _figures(chaos)["p99_ms"]
    p99_calm = _figures(calm)["p99_ms"]
    inflation = p99_chaos / p99_calm if p99_chaos and p99_calm else 1.0
    recovery_s: float | None = 0.0
    if windows:
        end = windows[-1]["end"]
        later = [float(row["time"]) for row in rows if float(row["time"]) > end and _ok(row)]
        recovery_s = later[0] - end if later else None
    success = summary["success_ratio"]
    if success is None:
        score = None
    else:
        recovery_part = 0.0 if recovery_s is None else 1 / (1 + recovery_s / 10)
        score = 100 * success * math.sqrt(min(1.0, 1 / max(inflation, 1e-9))) * recovery_part
    rounded = None if score is None else round(score, 1)
    return {
        "score": rounded,
        "zero_because": _zero_because(success, inflation, recovery_s) if rounded == 0 else [],
        "success_ratio": success,
        "p99_baseline_ms": p99_calm,
        "p99_chaos_ms": p99_chaos,
        "p99_inflation": round(inflation, 3),
        "recovery_s": recovery_s,
        "formula": SCORE_FORMULA,
    }


def _zero_because(success: float, inflation: float, recovery_s: float | None) -> list[str]:
    """Which factor of the product made the score 0, and why (a product hides it)."""
    found = []
    if success == 0:
        found.append(
            "call success ratio is 0: no call got an answer below 400 (see the calls table)"
        )
    if recovery_s is None:
        found.append(
            "recovery factor is 0: no request succeeded after the last scenario ended "
            "(the service never recovered while recording, or nothing was recorded after it)"
        )
    if not found:  # a vanishing latency factor, rounded to 0
        found.append(
            f"latency factor is near 0: p99 under chaos is {inflation:.3g} x the baseline p99"
        )
    return found


def report_data(
    rows: Sequence[Mapping[str, Any]], *, window_s: float = DEFAULT_WINDOW_S
) -> dict[str, Any]:
    """Everything the report shows, from recorder rows (oldest first)."""
    if not rows:
        found = verdicts([], window_s)
        return {"requests": 0, "verdicts": found, "windows": [], "score": None}
    start = float(rows[0]["time"])
    span = max(float(rows[-1]["time"]) - start, 1e-3)
    width = max(span / TIME_BUCKETS, MIN_BUCKET_S)
    buckets: dict[int, list[Mapping[str, Any]]] = {}
    for row in rows:
        buckets.setdefault(int((float(row["time"]) - start) // width), []).append(row)
    over_time = []
    for index in sorted(buckets):
        inside = buckets[index]
        durations = [float(row["duration_ms"]) for row in inside]
        classes = Counter(
            "no answer" if int(row["status"]) == 0 else f"{int(row['status']) // 100}xx"
            for row in inside
        )
        over_time.append(
            {
                "t": round(index * width, 3),
                "p50_ms": quantile(durations, 0.5),
                "p99_ms": quantile(durations, 0.99),
                "statuses": dict(classes),
            }
        )
    durations = sorted(float(row["duration_ms"]) for row in rows)
    low = max(durations[0], 0.01)
    high = max(quantile(durations, 0.999) or low, low * 1.01)
    step = math.log(high / low) / HISTOGRAM_BINS
    histogram = [0] * HISTOGRAM_BINS
    for duration in durations:
        index = int(math.log(max(duration, low) / low) / step)
        histogram[min(index, HISTOGRAM_BINS - 1)] += 1
    edges = [round(low * math.exp(step * (index + 1)), 3) for index in range(HISTOGRAM_BINS)]
    injections: Counter[str] = Counter()  # a row names one fault; its delay is apart
    for row in rows:
        if row.get("latency_ms"):
            injections[LATENCY] += 1
        if row.get("fault_type") and row["fault_type"] != LATENCY:
            injections[row["fault_type"]] += 1
    found = verdicts(rows, window_s)
    windows = _windows(rows)
    return {
        "requests": len(rows),
        "start": start,
        "span_s": span,
        "bucket_s": width,
        "over_time": over_time,
        "histogram": {"up_to_ms": edges, "counts": histogram},
        "injections": dict(injections.most_common()),
        "statuses": dict(Counter(int(row["status"]) for row in rows).most_common()),
        "windows": windows,
        "verdicts": found,
        "score": _score(rows, found["summary"], windows),
    }


def outbound_data(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The app's own calls (recorder rows of direction ``outbound``), by host: how many,
    what they got (a status, or the exception raised), what was injected, p50 / p99."""
    by_host: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_host.setdefault(str(row.get("host") or "-"), []).append(row)
    found = []
    for host in sorted(by_host):
        inside = by_host[host]
        durations = [float(row["duration_ms"]) for row in inside]
        outcomes = Counter(
            str(row["error"]) if row.get("error") else str(int(row["status"])) for row in inside
        )
        injected = Counter(str(row["fault_type"]) for row in inside if row.get("fault_type"))
        found.append(
            {
                "host": host,
                "calls": len(inside),
                "outcomes": dict(outcomes.most_common()),
                "injections": dict(injected.most_common()),
                "p50_ms": quantile(durations, 0.5),
                "p99_ms": quantile(durations, 0.99),
            }
        )
    return found


def _counts(counts: Mapping[str, int]) -> str:
    return " ".join(f"{name}: {count}" for name, count in counts.items()) or "-"


def _honoured(judged: Sequence[bool]) -> str:
    if not judged:
        return "-"  # no retry followed a Retry-After
    return "yes" if all(judged) else f"no ({judged.count(False)} of {len(judged)})"


def _plain(call: Mapping[str, Any]) -> bool:
    """Sort key: calls worth a look (retried, failed, unsafe) first."""
    return call["attempts"] == 1 and call["succeeded"] and not call["unsafe_retry"]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return html.escape(str(value))


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], table_id: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def inline_scripts() -> tuple[str, str]:
    """The report's own scripts, as the page holds them: Chart.js and the drawing (the
    page's Content-Security-Policy allows these, by their hashes, and nothing else)."""
    return static_text(CHART_JS).replace("</script", "<\\/script"), static_text("report.js")


def render_report(
    rows: Sequence[Mapping[str, Any]],
    *,
    window_s: float = DEFAULT_WINDOW_S,
    title: str = "mockforge chaos report",
    outbound: Sequence[Mapping[str, Any]] = (),
) -> str:
    """The report page: data, tables and charts in one HTML file (no network needed).
    ``outbound``: the app's own calls (recorder rows of that direction), shown apart:
    the verdicts and the score judge the client's requests only."""
    data = report_data(rows, window_s=window_s)
    data["outbound"] = outbound_data(outbound)
    # The app towards its dependencies: the same verdicts over its own calls.
    towards = verdicts(outbound, window_s)["summary"] if outbound else None
    data["outbound_verdicts"] = towards
    outbound_rows = [
        (
            host["host"],
            host["calls"],
            _counts(host["outcomes"]),
            _counts(host["injections"]),
            host["p50_ms"],
            host["p99_ms"],
        )
        for host in data["outbound"]
    ]
    chart_js, draw = inline_scripts()
    summary = data["verdicts"]["summary"]
    score = data["score"]
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(data.get("start", time.time())))
    verdict_rows = [
        (key.replace("_", " "), summary[key])
        for key in (
            "calls",
            "success_ratio",
            "retries_per_call",
            "max_attempts",
            "retry_after_honoured_ratio",
            "backoff_p50_s",
            "backoff_p99_s",
            "unsafe_retries",
        )
    ]
    calls = [
        (
            call["method"],
            call["path"],
            call["attempts"],
            " ".join(str(status) for status in call["statuses"]),
            " ".join(f"{wait:.2f}" for wait in call["waits_s"]),
            _honoured(call["retry_after_honoured"]),
            "UNSAFE" if call["unsafe_retry"] else "",
            "yes" if call["succeeded"] else "no",
        )
        for call in sorted(data["verdicts"]["calls"], key=_plain)[:CALLS_SHOWN]
    ]
    windows = [
        (
            window["scenario"] if part == "during" else "",
            part,
            window[part]["requests"],
            window[part]["success_ratio"],
            window[part]["p50_ms"],
            window[part]["p99_ms"],
        )
        for window in data["windows"]
        for part in ("before", "during", "after")
    ]
    score_html = (
        "<p>No requests recorded.</p>"
        if score is None
        else (
            f'<p class="score"><span id="score">{_cell(score["score"])}</span> / 100</p>'
            + "".join(
                f'<p class="score-why">0 because the {html.escape(reason)}.</p>'
                for reason in score["zero_because"]
            )
            + f"<p><code>{html.escape(score['formula'])}</code></p>"
            + _table(
                ["part", "value"],
                [
                    ("call success ratio", score["success_ratio"]),
                    ("p99 baseline (ms)", score["p99_baseline_ms"]),
                    ("p99 under chaos (ms)", score["p99_chaos_ms"]),
                    ("p99 inflation", score["p99_inflation"]),
                    ("recovery after the last scenario (s)", score["recovery_s"]),
                ],
                "score-parts",
            )
        )
    )
    payload = json.dumps(data).replace("</", "<\\/")
    return string.Template(static_text("report.html")).substitute(
        title=html.escape(title),
        when=html.escape(when),
        requests=data["requests"],
        score=score_html,
        verdicts=_table(["figure", "value"], verdict_rows, "verdict-summary"),
        calls=_table(
            [
                "method",
                "path",
                "attempts",
                "statuses",
                "waits (s)",
                "Retry-After honoured",
                "unsafe",
                "succeeded",
            ],
            calls,
            "calls",
        ),
        windows=(
            _table(
                ["scenario", "window", "requests", "success ratio", "p50 ms", "p99 ms"],
                windows,
                "windows",
            )
            if windows
            else "<p>No scenario ran while recording.</p>"
        ),
        outbound=(
            _table(
                ["host", "calls", "outcomes", "injected", "p50 ms", "p99 ms"],
                outbound_rows,
                "outbound",
            )
            + _table(
                ["the app's own retries", "value"],
                [
                    (key.replace("_", " "), towards[key])
                    for key in (
                        "calls",
                        "retried_calls",
                        "retry_after_seen",
                        "retry_after_honoured_ratio",
                        "unsafe_retries",
                    )
                ],
                "outbound-verdicts",
            )
            if outbound_rows and towards is not None
            else "<p>No outbound call recorded.</p>"
        ),
        chart_js=chart_js,
        data=payload,
        draw=draw,
    )
