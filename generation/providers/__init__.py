"""Image services, chosen by STUDIO_IMAGE_PROVIDER. The only code that talks HTTP."""

from django.conf import settings
from django.utils.module_loading import import_string

PROVIDERS = {
    "embedded": "generation.providers.embedded.EmbeddedProvider",
    "openai": "generation.providers.openai.OpenAIProvider",
}


def get_provider(name: str | None = None):
    """Return an instance of the configured (or named) image provider."""
    return import_string(PROVIDERS[name or settings.STUDIO_IMAGE_PROVIDER])()


TEXT_PROVIDERS = {
    "openai": "generation.providers.openai.OpenAITextProvider",
}


def text_provider_configured() -> bool:
    return bool(settings.STUDIO_TEXT_PROVIDER)


def get_text_provider():
    """Return the configured text provider (the story phase); raise if there is none."""
    if not settings.STUDIO_TEXT_PROVIDER:
        raise LookupError("No text provider is configured (STUDIO_TEXT_PROVIDER).")
    return import_string(TEXT_PROVIDERS[settings.STUDIO_TEXT_PROVIDER])()


CLIP_PROVIDERS = {
    "embedded": "generation.providers.embedded_clip.EmbeddedClipProvider",
    "replicate": "generation.providers.replicate.ReplicateClipProvider",
}


def get_clip_provider():
    """Return the configured clip provider (STUDIO_CLIP_PROVIDER)."""
    return import_string(CLIP_PROVIDERS[settings.STUDIO_CLIP_PROVIDER])()


def account_of(provider) -> str:
    """Return the provider account a provider calls (its name, for offline renderers)."""
    return getattr(provider, "account", "") or provider.name
