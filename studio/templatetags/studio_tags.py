from django import template

from generation.pricing import money as format_money

register = template.Library()


@register.filter
def money(amount) -> str:
    """Return an amount in dollars: $0.96, $0.042, or "price unknown"."""
    return format_money(amount)
