"""The self-contained HTML report: per-job table and a run timeline (inline CSS and SVG)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from html import escape

from schedctl.history import Run
from schedctl.report import JobReport

COLOURS = {
    "succeeded": "#2f9e44",
    "failed": "#e03131",
    "timed_out": "#f76707",
    "killed": "#f59f00",
    "lock_lost": "#c2255c",
    "lost": "#862e9c",
    "skipped_overlap": "#fcc419",
    "running": "#1c7ed6",
    "missed": "#868e96",
}
_WIDTH = 900  # timeline pixels
_ROW = 22

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#212529;background:#fff}
h1{font-size:20px;margin:0 0 4px}p.meta{color:#495057;margin:0 0 16px}
table{border-collapse:collapse;margin-bottom:24px}th,td{padding:4px 10px;text-align:right;
border-bottom:1px solid #dee2e6;white-space:nowrap}th{background:#f1f3f5}
td:first-child,th:first-child{text-align:left}
th,td.t{white-space:normal}td:first-child{white-space:normal;overflow-wrap:anywhere;min-width:8em}
.st{font-weight:600}.ok{color:#2f9e44}.failing,.missed{color:#e03131}.running{color:#1c7ed6}
.disabled{color:#868e96}.legend span{display:inline-block;margin-right:14px}
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px}
svg text{font:12px system-ui,sans-serif;fill:#212529}
"""


def _fmt(dt: datetime | None) -> str:
    return "-" if dt is None else dt.strftime("%Y-%m-%d %H:%M:%S %Z")


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}s" if value < 10 else f"{value:.1f}s"


_WRAPPING = {11, 12, 13, 14}  # last success, last failure, running, next


def _table(rows: Sequence[JobReport]) -> str:
    head = ("Job", "State", "Runs", "OK", "Failed", "Skipped", "Missed", "Success", "p50", "p95",
            "Max", "Last success", "Last failure", "Running", "Next")  # fmt: skip
    out = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for r in rows:
        rate = "-" if r.success_rate is None else f"{r.success_rate:.0%}"
        running = "-" if r.running_host is None else f"{r.running_host} ({_secs(r.running_for)})"
        cells = (escape(r.name), f'<span class="st {r.state}">{r.state}</span>', r.runs,
                 r.succeeded, r.failed, r.skipped, r.missed, rate, _secs(r.p50), _secs(r.p95),
                 _secs(r.max), _fmt(r.last_success), _fmt(r.last_failure), escape(running),
                 _fmt(r.next_fire))  # fmt: skip
        # Times and the running host may wrap at their spaces: the 15 columns fit 1280 pixels.
        out.append("<tr>" + "".join(
            f'<td class="t">{c}</td>' if i in _WRAPPING else f"<td>{c}</td>"
            for i, c in enumerate(cells)
        ) + "</tr>")  # fmt: skip
    return "\n".join(out) + "</table>"


def _timeline(
    rows: Sequence[JobReport],
    runs: Sequence[Run],
    missed: dict[str, list[datetime]],
    since: datetime,
    until: datetime,
) -> str:
    label = 160
    span = max((until - since).total_seconds(), 1.0)

    def x(at: datetime) -> float:
        return label + max(0.0, min(1.0, (at - since).total_seconds() / span)) * _WIDTH

    by_job: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_job[run.job_name].append(run)
    height = _ROW * len(rows) + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label + _WIDTH + 10}" '
           f'height="{height}" role="img" aria-label="run timeline">']  # fmt: skip
    for i, r in enumerate(rows):
        y = i * _ROW
        out.append(f'<text x="0" y="{y + 15}">{escape(r.name)}</text>')
        out.append(f'<rect x="{label}" y="{y + 4}" width="{_WIDTH}" height="14" fill="#f1f3f5"/>')
        for slot in missed.get(r.name, []):
            out.append(f'<rect x="{x(slot):.1f}" y="{y + 2}" width="2" height="18" '
                       f'fill="{COLOURS["missed"]}"><title>missed {_fmt(slot)}</title></rect>')  # fmt: skip
        for run in by_job.get(r.name, []):
            start = run.started_at or run.claimed_at
            end = run.finished_at or until
            width = max(3.0, x(end) - x(start))
            colour = COLOURS.get(run.status, "#495057")
            tip = f"run {run.id} {run.status} {_fmt(start)} on {run.host}"
            out.append(f'<rect x="{x(start):.1f}" y="{y + 4}" width="{width:.1f}" height="14" '
                       f'fill="{colour}"><title>{escape(tip)}</title></rect>')  # fmt: skip
    axis = _ROW * len(rows) + 20
    out.append(f'<text x="{label}" y="{axis}">{_fmt(since)}</text>')
    out.append(f'<text x="{label + _WIDTH}" y="{axis}" text-anchor="end">{_fmt(until)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def render_html(
    rows: Sequence[JobReport],
    runs: Sequence[Run],
    missed: dict[str, list[datetime]],
    since: datetime,
    until: datetime,
    title: str,
    note: str = "",
) -> str:
    """Return one HTML page that needs nothing from the network to display."""
    legend = "".join(
        f'<span><i style="background:{c}"></i>{s.replace("_", " ")}</span>'
        for s, c in COLOURS.items()
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>\n"
        f'<h1>{escape(title)}</h1>\n<p class="meta">{_fmt(since)} to {_fmt(until)}'
        f"{(' &middot; ' + escape(note)) if note else ''}</p>\n"
        f'{_table(rows)}\n<h2>Timeline</h2>\n<p class="legend">{legend}</p>\n'
        f"{_timeline(rows, runs, missed, since, until)}\n</body></html>\n"
    )
