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
    # Gemini: an image is 1290 output tokens at $30 per million for 2.5 Flash Image ($0.039),
    # 1120 tokens at $120 per million for 3 Pro Image at 1K/2K ($0.134); ai.google.dev pricing.
    "gemini:gemini-2.5-flash-image": "0.039",
    "gemini:gemini-3-pro-image-preview": "0.134",
    # OpenRouter passes Google's price on (openrouter.ai/google/gemini-2.5-flash-image) and
    # reports each call's cost in usage.cost, which the ledger takes over this estimate.
    "openai-chat:google/gemini-2.5-flash-image": "0.039",
    "openai-chat:google/gemini-2.5-flash-image-preview": "0.039",
    # Replicate lists flux-schnell at $3 per thousand images and flux-dev at $0.025 per
    # image (replicate.com/pricing, the models' pages).
    "replicate:black-forest-labs/flux-schnell": "0.003",
    "replicate:black-forest-labs/flux-dev": "0.025",
    # fal bills flux/schnell by the megapixel, $0.003 each (rounded up), flux/dev at $0.025
    # per megapixel (fal.ai/models/fal-ai/flux/schnell, /dev): one 1024x1024 picture is 1 MP.
    "fal:fal-ai/flux/schnell": "0.003",
    "fal:fal-ai/flux/schnell:1024x1536": "0.006",
    "fal:fal-ai/flux/schnell:1536x1024": "0.006",
    "fal:fal-ai/flux/dev": "0.025",
}


# Published token prices (USD per million tokens) for models whose answers report usage:
# text input, image input, image output. STUDIO_PRICES may set "provider:model:tokens".
DEFAULT_TOKEN_PRICES = {
    "openai:gpt-image-1:tokens": {"text_input": 5, "image_input": 10, "output": 40},
    "openai:gpt-image-1-mini:tokens": {"text_input": 2, "image_input": 2.5, "output": 8},
}
MILLION = Decimal(1_000_000)


def _keys(provider: str, model: str, size: str) -> tuple[str, ...]:
    return (f"{provider}:{model}:{size}", f"{provider}:{model}", provider)


def price_per_image(provider: str, model: str, size: str) -> Decimal | None:
    """Return the price of one image, the most specific configured one; None if unknown."""
    prices = {**DEFAULT_PRICES, **{k: str(v) for k, v in settings.STUDIO_PRICES.items()}}
    for key in _keys(provider, model, size):
        if key in prices and not isinstance(prices[key], dict):
            return Decimal(prices[key])
    return None


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
    prices = settings.STUDIO_PRICES.get(key) or DEFAULT_TOKEN_PRICES.get(key)
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
