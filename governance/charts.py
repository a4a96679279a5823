"""Charts for the governance pages, drawn as inline SVG on the server.

Hand-made SVG keeps the pages free of scripts and of any plotting library in
the request path. Each chart carries a title and a description for screen
readers; the pages put the same figures in a table beside it.
"""

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH = 640
LABEL_WIDTH = 190
VALUE_WIDTH = 70
BAR_HEIGHT = 18
BAR_GAP = 6
LINE_HEIGHT = 220
MARGIN = 12
AXIS_FONT = 11
MAX_LABEL_CHARS = 28


@dataclass(frozen=True)
class Series:
    """Figures to chart: labelled values, in the order they are drawn."""

    title: str
    points: list[tuple[str, float]]
    over_time: bool = False
    """Labels are dates in order: draw a line rather than bars."""


def format_number(value: float) -> str:
    """A figure as a person reads it: whole numbers plain, others to 3
    significant digits."""
    if isinstance(value, bool):
        return str(value).lower()
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) < 1e-3 or abs(value) >= 1e9:
        return f"{value:.3g}"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.1f}"


def chart(series: Series) -> SafeString:
    """Draw a series as a line over time or as horizontal bars."""
    if series.over_time:
        return line_chart(series.title, series.points)
    return bar_chart(series.title, series.points)


def bar_chart(title: str, bars: Sequence[tuple[str, float]]) -> SafeString:
    """Horizontal bars, one per label, from a zero line."""
    chart_id = f"chart-{uuid.uuid4().hex[:8]}"
    values = [value for _, value in bars]
    low, high = min([0.0, *values]), max([0.0, *values])
    span = (high - low) or 1.0
    plot_left = LABEL_WIDTH
    plot_width = WIDTH - LABEL_WIDTH - VALUE_WIDTH
    top = MARGIN + 8
    height = top + len(bars) * (BAR_HEIGHT + BAR_GAP) + MARGIN

    def x_of(value: float) -> float:
        return plot_left + (value - low) / span * plot_width

    zero = x_of(0.0)
    parts = []
    for row, (label, value) in enumerate(bars):
        y = top + row * (BAR_HEIGHT + BAR_GAP)
        left, right = sorted((zero, x_of(value)))
        parts.append(
            f'<text x="{plot_left - 6}" y="{y + BAR_HEIGHT - 5}" '
            f'text-anchor="end">{escape(_short(label))}</text>'
            f'<rect class="bar{" negative" if value < 0 else ""}" x="{left:.1f}" '
            f'y="{y}" width="{max(right - left, 1):.1f}" height="{BAR_HEIGHT}">'
            f"<title>{escape(label)}: {escape(format_number(value))}</title></rect>"
            f'<text x="{right + 4:.1f}" y="{y + BAR_HEIGHT - 5}">'
            f"{escape(format_number(value))}</text>"
        )
    parts.append(
        f'<line class="axis" x1="{zero:.1f}" y1="{top - 4}" x2="{zero:.1f}" '
        f'y2="{height - MARGIN + 2}"/>'
    )
    description = f"Bar chart of {len(bars)} values, from {_range_text(values)}."
    return _svg(chart_id, title, description, height, "".join(parts))


def line_chart(title: str, points: Sequence[tuple[str, float]]) -> SafeString:
    """A line through values at evenly spaced labels (days, in order)."""
    chart_id = f"chart-{uuid.uuid4().hex[:8]}"
    values = [value for _, value in points]
    ticks = _ticks(min([0.0, *values]), max([0.0, *values]))
    low, high = ticks[0], ticks[-1]
    span = (high - low) or 1.0
    plot_left, plot_right = 60, WIDTH - 36
    plot_top, plot_bottom = MARGIN + 6, LINE_HEIGHT - 36
    step = (plot_right - plot_left) / max(len(points) - 1, 1)

    def y_of(value: float) -> float:
        return plot_bottom - (value - low) / span * (plot_bottom - plot_top)

    parts = []
    for tick in ticks:
        y = y_of(tick)
        parts.append(
            f'<line class="grid" x1="{plot_left}" y1="{y:.1f}" x2="{plot_right}" '
            f'y2="{y:.1f}"/><text x="{plot_left - 6}" y="{y + 4:.1f}" '
            f'text-anchor="end">{escape(format_number(tick))}</text>'
        )
    label_every = max(1, math.ceil(len(points) / 7))
    coordinates = []
    for index, (label, value) in enumerate(points):
        x, y = plot_left + index * step, y_of(value)
        coordinates.append(f"{x:.1f},{y:.1f}")
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3"><title>{escape(label)}: '
            f"{escape(format_number(value))}</title></circle>"
        )
        # Label every few points, counting back from the latest.
        if (len(points) - 1 - index) % label_every == 0:
            parts.append(
                f'<text x="{x:.1f}" y="{plot_bottom + 16}" text-anchor="middle">'
                f"{escape(_short(label, 10))}</text>"
            )
    parts.insert(0, f'<polyline class="line" points="{" ".join(coordinates)}"/>')
    parts.append(
        f'<line class="axis" x1="{plot_left}" y1="{plot_bottom}" x2="{plot_right}" '
        f'y2="{plot_bottom}"/>'
    )
    first, last = (points[0][0], points[-1][0]) if points else ("", "")
    description = (
        f"Line chart of {len(points)} values from {first} to {last}, "
        f"ranging {_range_text(values)}."
    )
    return _svg(chart_id, title, description, LINE_HEIGHT, "".join(parts))


def _svg(
    chart_id: str, title: str, description: str, height: int, body: str
) -> SafeString:
    # Every text that went into ``body`` and here passed through escape().
    return mark_safe(
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" font-size="{AXIS_FONT}" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" '
        f'xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{chart_id}-title">{escape(title)}</title>'
        f'<desc id="{chart_id}-desc">{escape(description)}</desc>{body}</svg>'
    )


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values that cover ``low`` to ``high``."""
    if high == low:
        high = low + 1
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = math.floor(low / step) * step
    ticks = [start]
    while ticks[-1] < high - 1e-12:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def _range_text(values: Sequence[float]) -> str:
    if not values:
        return "no values"
    return f"{format_number(min(values))} to {format_number(max(values))}"


def _short(label: str, limit: int = MAX_LABEL_CHARS) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"
