"""Distribution figures of a dataset: plotly for the pages, standalone HTML and PNG for reports.

PNG export draws the same figures with matplotlib (Agg), so it needs no browser, unlike
plotly's kaleido.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

GOOD, BAD, ACCENT = "#2e7d32", "#c62828", "#1f77b4"


def distribution_figures(stats: "pd.DataFrame", threshold: float) -> dict[str, "go.Figure"]:
    """Figures keyed by name: turns, chars, label, intervention, intervention_rel, label_vs_length."""
    import plotly.graph_objects as go

    human = stats[stats["needs_human"]]
    figs = {
        "turns": _hist(stats["turns"], "Conversation length", "messages per conversation"),
        "chars": _hist(stats["chars"], "Conversation size", "characters per conversation"),
        "label": _hist(stats["label"], "Quality label", "label (0 = bad, 1 = good)", nbins=20),
        "intervention": _hist(human["intervention"], "Human intervention: message index",
                              "index of first message needing a human"),
        "intervention_rel": _hist(human["intervention_rel"], "Human intervention: position",
                                  "fraction of the conversation before the handoff", nbins=10),
    }
    figs["label"].add_vline(x=threshold, line_dash="dash", line_color=BAD,
                            annotation_text=f"good > {threshold:g}")
    share = len(human) / len(stats) if len(stats) else 0.0
    figs["intervention"].update_layout(title=f"Human intervention: message index ({share:.0%} need a human)")
    scatter = go.Figure()
    for needs, name, color in ((False, "no human needed", ACCENT), (True, "needs a human", BAD)):
        part = stats[stats["needs_human"] == needs]
        scatter.add_trace(go.Scattergl(x=part["chars"], y=part["label"], mode="markers", name=name,
                                       marker=dict(color=color, size=5, opacity=0.6)))
    scatter.add_hline(y=threshold, line_dash="dash", line_color=BAD)
    scatter.update_layout(title="Label vs length", xaxis_title="characters", yaxis_title="label")
    figs["label_vs_length"] = scatter
    for fig in figs.values():
        fig.update_layout(height=320, margin=dict(l=40, r=20, t=50, b=40), template="plotly_white")
    return figs


def _hist(values, title: str, xlabel: str, nbins: int = 30) -> "go.Figure":
    import plotly.graph_objects as go

    fig = go.Figure(go.Histogram(x=list(values), nbinsx=nbins, marker_color=ACCENT))
    fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title="conversations", bargap=0.05)
    return fig


def export_html(figures: dict[str, "go.Figure"], path: str | Path | None = None, title: str = "CSForge") -> str:
    """One self-contained HTML page (plotly.js inlined once, works offline)."""
    parts = []
    for n, fig in enumerate(figures.values()):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(n == 0)))
    html = (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
            f"<body><h2>{title}</h2>{''.join(parts)}</body></html>")
    if path:
        Path(path).write_text(html, encoding="utf-8")
    return html


def export_png(figures: dict[str, "go.Figure"], path: str | Path | None = None, dpi: int = 100) -> bytes:
    """All figures on one PNG grid, drawn from the figures' own data with matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 3
    rows = (len(figures) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, plotly_fig in zip(axes.flat, figures.values()):
        _draw(ax, plotly_fig)
    for ax in list(axes.flat)[len(figures):]:
        ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    data = buf.getvalue()
    if path:
        Path(path).write_bytes(data)
    return data


def _draw(ax, plotly_fig: "go.Figure") -> None:
    """Draw histogram, bar and scatter traces plus line shapes of a plotly figure on an axes."""
    layout = plotly_fig.layout
    for trace in plotly_fig.data:
        x = [v for v in (trace.x if trace.x is not None else []) if v == v]  # drop NaN
        if trace.type == "histogram":
            ax.hist(x, bins=trace.nbinsx or 30, color=trace.marker.color or ACCENT, alpha=0.85)
        elif trace.type == "bar":
            ax.bar([str(v) for v in trace.x], trace.y, color=trace.marker.color or ACCENT)
        elif trace.type in ("scatter", "scattergl"):
            ax.scatter(trace.x, trace.y, s=6, alpha=0.6, color=trace.marker.color, label=trace.name)
    for shape in layout.shapes or ():
        if shape.type == "line" and shape.x0 == shape.x1:
            ax.axvline(shape.x0, color=BAD, linestyle="--")
        elif shape.type == "line" and shape.y0 == shape.y1:
            ax.axhline(shape.y0, color=BAD, linestyle="--")
    if any(t.name for t in plotly_fig.data if t.type in ("scatter", "scattergl")):
        ax.legend(fontsize=7)
    ax.set_title(layout.title.text or "", fontsize=10)
    ax.set_xlabel(layout.xaxis.title.text or "", fontsize=8)
    ax.set_ylabel(layout.yaxis.title.text or "", fontsize=8)
