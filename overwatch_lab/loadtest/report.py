"""A load test's result as JSON, a PNG (matplotlib, Agg), an offline HTML report (inline BokehJS) and text.

The PNG is drawn with matplotlib's Agg backend: it needs no browser and no display (Bokeh's own
PNG export drives a browser, which is not here offline). Both figures plot, against the device
count of each step, the rates (nominal, offered, achieved) and the latency percentiles (publish
→ KV p50/p99, publish → history p50/p99).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from overwatch_lab.bench.plot import write_html


def _series(result: dict[str, Any]) -> dict[str, list[Any]]:
    steps = result["steps"]

    def lat(s: dict[str, Any], key: str, q: str) -> float | None:
        p = s.get(key)
        return p[q] if p else None

    return {
        "load": [s["devices"] * s["rate_factor"] for s in steps],
        "nominal": [s["nominal_rate"] for s in steps],
        "offered": [s["offered_rate"] for s in steps],
        "achieved": [s["achieved_rate"] for s in steps],
        "kv_p50": [lat(s, "kv_latency_ms", "p50") for s in steps],
        "kv_p99": [lat(s, "kv_latency_ms", "p99") for s in steps],
        "hist_p50": [lat(s, "history_latency_ms", "p50") for s in steps],
        "hist_p99": [lat(s, "history_latency_ms", "p99") for s in steps],
    }


def write_png(result: dict[str, Any], path: Path) -> Path:
    """Rate and latency against load, two panels, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = _series(result)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for key, style in (("nominal", "k--"), ("offered", "o-"), ("achieved", "s-")):
        ax1.plot(d["load"], d[key], style, label=key)
    ax1.set_xlabel("devices (x rate factor)")
    ax1.set_ylabel("telemetry msg/s")
    ax1.set_title("rate against load")
    ax1.legend()
    ax1.grid(alpha=0.3)
    for key, label in (
        ("kv_p50", "KV p50"),
        ("kv_p99", "KV p99"),
        ("hist_p50", "history p50"),
        ("hist_p99", "history p99"),
    ):
        pts = [(x, y) for x, y in zip(d["load"], d[key], strict=True) if y is not None]
        if pts:
            ax2.plot([p[0] for p in pts], [max(p[1], 0.1) for p in pts], "o-", label=label)
    ax2.set_yscale("log")
    ax2.set_xlabel("devices (x rate factor)")
    ax2.set_ylabel("ms from device timestamp")
    ax2.set_title(f"latency against load (knee: {result.get('knee_devices')} devices)")
    ax2.legend()
    ax2.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _html(result: dict[str, Any], path: Path) -> Path:
    from bokeh.layouts import column
    from bokeh.models.widgets.markups import Div
    from bokeh.plotting import figure

    d = _series(result)
    rates = figure(
        title="rate against load", x_axis_label="devices (x rate factor)", y_axis_label="msg/s",
        width=900, height=350,
    )  # fmt: skip
    for key, color in (("nominal", "gray"), ("offered", "#3b82f6"), ("achieved", "#16a34a")):
        rates.line(d["load"], d[key], legend_label=key, color=color, line_width=2)
        rates.scatter(d["load"], d[key], color=color, size=7)
    lat = figure(
        title="latency against load (ms from device timestamp)", x_axis_label="devices (x rate factor)",
        y_axis_label="ms", y_axis_type="log", width=900, height=350,
    )  # fmt: skip
    for key, color in (
        ("kv_p50", "#3b82f6"),
        ("kv_p99", "#1e3a8a"),
        ("hist_p50", "#f59e0b"),
        ("hist_p99", "#b45309"),
    ):
        pts = [(x, max(y, 0.1)) for x, y in zip(d["load"], d[key], strict=True) if y is not None]
        if pts:
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            lat.line(xs, ys, legend_label=key, color=color, line_width=2)
            lat.scatter(xs, ys, legend_label=key, color=color, size=7)
    rows = "".join(
        f"<tr><td>{s['devices']}</td><td>{s['rate_factor']:g}</td><td>{s['offered_rate']:.0f}</td>"
        f"<td>{s['achieved_rate']:.0f}</td><td>{_p(s['kv_latency_ms'])}</td><td>{_p(s['history_latency_ms'])}</td>"
        f"<td>{s['lag_end']}</td><td>{s['lag_slope_per_s']:+.0f}</td><td>{s['lost']}</td>"
        f"<td>{'held' if s['held'] else 'NOT held'}</td><td>{s['verdict']['bottleneck']}: {s['verdict']['reason']}</td></tr>"
        for s in result["steps"]
    )
    b = result.get("bottleneck") or {}
    text = Div(
        text=f"<h2>overwatch-lab load test</h2><p>knee: <b>{result.get('knee_devices')}</b> devices held in real "
        f"time; bottleneck: <b>{b.get('bottleneck')}</b> ({b.get('reason')})</p>"
        f"<p>check: {result['check']['checked']} stored messages looked up, lost {result['check']['lost']}, "
        f"duplicated {result['check']['duplicated']}, quarantined {result['check']['quarantined']}</p>"
        "<table border=1 cellpadding=3><tr><th>devices</th><th>rate x</th><th>offered/s</th><th>achieved/s</th>"
        "<th>KV p50/p99 ms</th><th>history p50/p99 ms</th><th>lag end</th><th>lag /s</th><th>lost</th>"
        f"<th>held</th><th>verdict</th></tr>{rows}</table>",
        width=1200,
    )
    write_html(column(text, rates, lat), path, "overwatch-lab load test")
    path.write_text(_offline(path.read_text()))
    return path


_LINKED_SCRIPT = re.compile(r'<script src="(?![a-z]+:)[^"]*"></script>\n?')


def _offline(html: str) -> str:
    """Drop ``<script src>`` tags with a relative URL (the page must open from a file).

    With Panel imported in the same process, Bokeh's inline resources still link Panel's ES-module
    shim by a relative ``static/extensions/...`` URL, which only a Panel server answers; the
    figures here are plain Bokeh and do not need it.
    """
    return _LINKED_SCRIPT.sub("", html)


def _p(p: dict[str, float] | None) -> str:
    return f"{p['p50']:.0f} / {p['p99']:.0f}" if p else "-"


def write_report(result: dict[str, Any], out_dir: str | Path) -> dict[str, str]:
    """Write ``loadtest-<time>.json``, ``.png`` and ``.html`` into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"loadtest-{time.strftime('%Y%m%d-%H%M%S')}"
    paths = {
        "json": str(stem.with_suffix(".json")),
        "png": str(write_png(result, stem.with_suffix(".png"))),
        "html": str(_html(result, stem.with_suffix(".html"))),
    }
    Path(paths["json"]).write_text(json.dumps(result, indent=2, default=str))
    return paths


def summary(result: dict[str, Any]) -> str:
    """Human-readable summary: one line per step, the knee, the bottleneck and the check."""
    lines = [f"load test ({result['mode']}), {result['cpu_count']} cores"]
    for s in result["steps"]:
        cpu = ", ".join(
            f"{p['role'] if p['role'] != 'simulator' else p['name']} {p['cpu_pct_mean']}%"
            for p in s["processes"]
            if p["cpu_pct_mean"] is not None
        )
        lines.append(
            f"  {s['devices']:>5} devices x{s['rate_factor']:g}: offered {s['offered_rate']:>8.0f}/s "
            f"achieved {s['achieved_rate']:>8.0f}/s  KV p50/p99 {_p(s['kv_latency_ms'])} ms  history "
            f"{_p(s['history_latency_ms'])} ms  lag {s['lag_end']} ({s['lag_slope_per_s']:+.0f}/s)  "
            f"lost {s['lost']}  {'held' if s['held'] else 'NOT held: ' + '; '.join(s['problems'])}"
        )
        lines.append(f"        cpu: {cpu}; verdict {s['verdict']['bottleneck']}: {s['verdict']['reason']}")
    b = result.get("bottleneck") or {}
    c = result["check"]
    lines.append(
        f"  knee: {result['knee_devices']} devices held in real time"
        + (f" ({result['knee_rate']:.0f} msg/s offered)" if result.get("knee_rate") else "")
    )
    lines.append(f"  bottleneck: {b.get('bottleneck')} ({b.get('reason')})")
    lines.append(
        f"  check: {c['checked']} stored messages, lost {c['lost']}, duplicated {c['duplicated']}, "
        f"quarantined {c['quarantined']}, not in stream {c['not_in_stream']}"
        + (f"; lost e.g. {c['lost_uids'][:3]}" if c["lost"] else "")
    )
    return "\n".join(lines)
