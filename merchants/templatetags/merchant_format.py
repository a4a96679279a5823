"""Filters that write the portal's figures as a person reads them."""

import math

from django import template

from governance.charts import format_number

register = template.Library()


@register.filter
def percent(share: float | None, digits: int = 1) -> str:
    """A share (0.123) as a percentage ("12.3%"); a dash when unknown."""
    if share is None or not math.isfinite(share):
        return "—"
    return f"{share * 100:.{digits}f}%"


@register.filter
def number(value: float | None) -> str:
    """A figure to three significant digits, whole numbers plain."""
    if value is None or not math.isfinite(value):
        return "—"
    return format_number(value)


@register.filter
def signed(value: float | None) -> str:
    """A contribution with its sign: +0.412, -0.05 (a minus sign)."""
    if value is None or not math.isfinite(value):
        return "—"
    text = format_number(abs(value))
    return f"+{text}" if value >= 0 else f"\u2212{text}"
