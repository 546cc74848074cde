"""What a call costs: a price per image for each provider, model and size.

The list prices and token prices are the catalogue's (generation/catalogue.toml);
STUDIO_PRICES ("provider:model:size", "provider:model", "provider"; "provider:model:tokens"
for token prices) overrides them.
"""

from decimal import Decimal

from django.conf import settings

from . import catalogue

MILLION = Decimal(1_000_000)


def _keys(provider: str, model: str, size: str) -> tuple[str, ...]:
    return (f"{provider}:{model}:{size}", f"{provider}:{model}", provider)


def price_per_image(provider: str, model: str, size: str) -> Decimal | None:
    """Return the price of one image, the most specific configured one; None if unknown."""
    prices = settings.STUDIO_PRICES
    for key in _keys(provider, model, size):
        if key in prices and not isinstance(prices[key], dict):
            return Decimal(str(prices[key]))
    if provider == "embedded":
        return Decimal(0)  # the offline renderer costs nothing
    return catalogue.model(provider, model).price(size)


def price_per_upscale(provider: str, model: str) -> Decimal | None:
    """Return the price of one upscale ("provider:model:upscale", "provider:model" in
    STUDIO_PRICES, else the catalogue's upscaler); None if unknown."""
    name = catalogue.canonical(provider, model)
    prices = settings.STUDIO_PRICES
    for key in (f"{provider}:{name}:upscale", f"{provider}:{name}"):
        if key in prices and not isinstance(prices[key], dict):
            return Decimal(str(prices[key]))
    return catalogue.upscaler(provider, model).price


def _configured_per_image(provider: str, model: str, size: str) -> bool:
    return any(
        not isinstance(settings.STUDIO_PRICES.get(key), dict | type(None))
        for key in _keys(provider, model, size)
    )


def usage_cost(provider: str, model: str, usage: dict | None) -> Decimal | None:
    """Return the cost of a call from the tokens its answer reports (OpenAI images'
    `usage`), or None without usage or token prices for the model."""
    if not isinstance(usage, dict):
        return None
    key = f"{provider}:{model}:tokens"
    prices = settings.STUDIO_PRICES.get(key) or catalogue.model(provider, model).tokens
    if not isinstance(prices, dict):
        return None
    try:
        details = usage.get("input_tokens_details") or {}
        image_in = int(details.get("image_tokens") or 0)
        text_in = int(
            details.get("text_tokens") or (int(usage.get("input_tokens") or 0) - image_in)
        )
        output = int(usage.get("output_tokens") or 0)
    except (TypeError, ValueError, AttributeError):
        return None
    total = (
        text_in * Decimal(str(prices.get("text_input", 0)))
        + image_in * Decimal(str(prices.get("image_input", 0)))
        + output * Decimal(str(prices.get("output", 0)))
    )
    return (total / MILLION).quantize(Decimal("0.0001"))


def charged(provider: str, model: str, size: str, result) -> tuple[Decimal | None, str]:
    """Return what a successful call cost and on what basis ("reported", "usage" or
    "price"): the service's own figure first, then its reported usage at token prices;
    a per-image price set in STUDIO_PRICES wins over usage at built-in token prices."""
    reported = getattr(result, "reported_cost", None)
    if reported is not None:
        return Decimal(str(reported)), "reported"
    if not _configured_per_image(provider, model, size):
        by_usage = usage_cost(provider, model, getattr(result, "usage", None))
        if by_usage is not None:
            return by_usage, "usage"
    return price_per_image(provider, model, size), "price"


def amount(value) -> Decimal:
    """Return a sum of costs as a Decimal at the stored precision (SQLite sums decimals
    as floats)."""
    return Decimal(value or 0).quantize(Decimal("0.0001"))


def money(amount: Decimal | None) -> str:
    if amount is None:
        return "price unknown"
    return f"${amount:,.2f}" if amount >= Decimal("0.1") or amount == 0 else f"${amount:,.3f}"
