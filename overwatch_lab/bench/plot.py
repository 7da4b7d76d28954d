"""Offline HTML figures for benchmark results (BokehJS inlined: nothing is fetched to view them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_html(fig: Any, path: Path, title: str) -> Path:
    """Write a Bokeh figure as a standalone HTML file with inline resources; return the path."""
    from bokeh.embed import file_html
    from bokeh.resources import INLINE

    path.write_text(file_html(fig, INLINE, title))
    return path


def stage_latency_figure(stages: dict[str, dict[str, float]], title: str) -> Any:
    """Horizontal bars of p50 and p99 (ms) per stage, stages top to bottom in lifecycle order."""
    from bokeh.models import ColumnDataSource, DataRange1d, FactorRange
    from bokeh.models.annotations import Legend
    from bokeh.plotting import figure
    from bokeh.transform import dodge

    names = list(stages)[::-1]
    src = ColumnDataSource(
        {
            "stage": names,
            "p50": [stages[n]["p50_ms"] for n in names],
            "p99": [stages[n]["p99_ms"] for n in names],
        }
    )
    fig = figure(
        x_range=DataRange1d(start=0),
        y_range=FactorRange(factors=names),
        title=title,
        x_axis_label="milliseconds",
        width=900,
        height=60 + 45 * len(names),
    )
    r50 = fig.hbar(
        y=dodge("stage", 0.18, range=fig.y_range), right="p50", height=0.34, source=src, color="#3b82f6"
    )
    r99 = fig.hbar(
        y=dodge("stage", -0.18, range=fig.y_range), right="p99", height=0.34, source=src, color="#f59e0b"
    )
    # bokeh 3.9 stubs GlyphRenderer as invariant in its glyph, so GlyphRenderer[HBar] is refused here.
    items = [("p50", [r50]), ("p99", [r99])]
    fig.add_layout(Legend(items=items, location="bottom_right"))  # type: ignore[arg-type]
    return fig
