from django import template

from generation.pricing import money as format_money

register = template.Library()


@register.filter
def money(amount) -> str:
    """Return an amount in dollars: $0.96, $0.042, or "price unknown"."""
    return format_money(amount)


@register.filter
def halt_reason(reason: str) -> str:
    """Return a halt reason in words: "out of credits", "authentication failed"…"""
    from generation.models import Run

    return str(dict(Run.HaltReason.choices).get(reason, reason)).lower()


@register.filter
def seconds(milliseconds) -> str:
    """Return a duration in milliseconds as seconds: 0.84 s, 12.3 s, 95 s."""
    if milliseconds is None:
        return "—"
    value = milliseconds / 1000
    if value < 10:
        return f"{value:.2f} s"
    if value < 60:
        return f"{value:.1f} s"
    return f"{value:.0f} s"
