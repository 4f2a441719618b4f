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
        value, digits = float(value), int(digits)
    except (TypeError, ValueError):
        return ""
    # Never round a probability to a certainty: 0.99996 is "> 99.9 %", not "100.0 %".
    step = 10**-digits / 100
    if value >= 1 - step / 2 and value < 1:
        return f"> {(1 - step) * 100:.{digits}f} %"
    if 0 < value < step / 2:
        return f"< {step * 100:.{digits}f} %"
    return f"{value * 100:.{digits}f} %"


@register.filter
def num(value, digits: int = 3) -> str:
    """A metric for tables: floats rounded, None as an en dash, everything else as text."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        # Small values (learning rates) keep their significant digits instead of rounding to 0.000.
        return f"{value:.3g}" if 0 < abs(value) < 0.01 else f"{value:.{int(digits)}f}"
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
