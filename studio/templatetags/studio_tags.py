from django import template

from generation.pricing import money as format_money

register = template.Library()


@register.filter
def money(amount) -> str:
    """Return an amount in dollars: $0.96, $0.042, or "price unknown"."""
    return format_money(amount)


@register.filter
def plain(message) -> str:
    """Return a message an editor reads in plain words (generation.plain): no exception
    text; History keeps the original."""
    from generation.plain import plain_message

    return plain_message(message)


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


@register.filter
def duration(seconds) -> str:
    """Return a number of seconds in words: 42 s, 3 min, 2 h 5 min."""
    if seconds is None:
        return "—"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


@register.filter
def with_pictures(sent) -> list[dict]:
    """Return the references a picture was sent with, each marked "kept" while its version
    of the reference picture still exists (a deleted version has no thumbnail to show)."""
    from studio.models import ReferenceImage

    sent = list(sent or [])
    ids = {entry.get("reference") for entry in sent}
    kept = set(ReferenceImage.objects.filter(pk__in=ids).values_list("pk", flat=True))
    return [{**entry, "kept": entry.get("reference") in kept} for entry in sent]
