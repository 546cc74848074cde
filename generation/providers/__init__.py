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
