"""What a call costs: a price per image for each provider, model and size."""

from decimal import Decimal

from django.conf import settings

# Published list prices per image (USD) at standard/medium quality; STUDIO_PRICES overrides.
DEFAULT_PRICES = {
    "embedded": "0",
    "openai:gpt-image-1:1024x1024": "0.042",
    "openai:gpt-image-1:1024x1536": "0.063",
    "openai:gpt-image-1:1536x1024": "0.063",
    "openai:gpt-image-1": "0.042",
    "openai:gpt-image-1-mini": "0.011",
    "openai:dall-e-3:1024x1024": "0.04",
    "openai:dall-e-3:1024x1792": "0.08",
    "openai:dall-e-3:1792x1024": "0.08",
    "openai:dall-e-2:256x256": "0.016",
    "openai:dall-e-2:512x512": "0.018",
    "openai:dall-e-2:1024x1024": "0.02",
}


def price_per_image(provider: str, model: str, size: str) -> Decimal | None:
    """Return the price of one image, the most specific configured one; None if unknown."""
    prices = {**DEFAULT_PRICES, **{k: str(v) for k, v in settings.STUDIO_PRICES.items()}}
    for key in (f"{provider}:{model}:{size}", f"{provider}:{model}", provider):
        if key in prices:
            return Decimal(prices[key])
    return None


def amount(value) -> Decimal:
    """Return a sum of costs as a Decimal at the stored precision (SQLite sums decimals
    as floats)."""
    return Decimal(value or 0).quantize(Decimal("0.0001"))


def money(amount: Decimal | None) -> str:
    if amount is None:
        return "price unknown"
    return f"${amount:,.2f}" if amount >= Decimal("0.1") or amount == 0 else f"${amount:,.3f}"
