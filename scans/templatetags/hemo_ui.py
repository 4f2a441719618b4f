"""Small presentation filters shared by the page templates."""

from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def pct(value, digits: int = 1) -> str:
    """0.8731 -> "87.3 %"; empty for None."""
    if value is None or value == "":
        return ""
    try:
        return f"{float(value) * 100:.{int(digits)}f} %"
    except (TypeError, ValueError):
        return ""


@register.filter
def num(value, digits: int = 3) -> str:
    """A metric for tables: floats rounded, None as an en dash, everything else as text."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{int(digits)}f}"
    return str(value)


@register.filter
def seconds(value) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "–"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


@register.filter
def label_text(label) -> str:
    if label is None:
        return "–"
    return "Hemorrhage suspected" if label else "No hemorrhage detected"


@register.filter
def keylabel(value) -> str:
    """ "queue_wait" -> "Queue wait"."""
    return str(value).replace("_", " ").capitalize()
