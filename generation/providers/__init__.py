"""Image services, chosen by STUDIO_IMAGE_PROVIDER. The only code that talks HTTP."""

from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.utils.module_loading import import_string

from ..pricing import price_per_image

PROVIDERS = {
    "embedded": "generation.providers.embedded.EmbeddedProvider",
    "openai": "generation.providers.openai.OpenAIProvider",
    "openai-chat": "generation.providers.openai_chat.ChatImageProvider",
    "gemini": "generation.providers.gemini.GeminiProvider",
    "replicate": "generation.providers.replicate_image.ReplicateImageProvider",
    "fal": "generation.providers.fal.FalProvider",
}


def get_provider(name: str | None = None, *, model: str = ""):
    """Return an instance of the configured (or named) image provider; with model, one that
    draws with that model instead of its setting's (a project's own choice)."""
    provider = import_string(PROVIDERS[name or settings.STUDIO_IMAGE_PROVIDER])()
    if model and name != "embedded":
        provider.model = model
        provider.project_model = True  # the project's choice, not the studio's setting
    return provider


def image_service_of(project) -> str:
    """Return the name of the image service that draws a project's pictures: its own
    choice, else the studio's default (STUDIO_IMAGE_PROVIDER)."""
    chosen = getattr(project, "image_service", "")
    return chosen if chosen in PROVIDERS else settings.STUDIO_IMAGE_PROVIDER


def image_model_of(project) -> str:
    """Return the model the project chose for its service ("": the service's setting)."""
    return getattr(project, "image_model", "") or ""


def project_provider(project):
    """Return the image provider that draws a project's pictures, with the project's own
    model when it chose one."""
    return get_provider(image_service_of(project), model=image_model_of(project))


def services_on_account(key: str) -> list[str]:
    """Return the names of the image services whose calls go to the provider account."""
    return [name for name in PROVIDERS if account_of(get_provider(name)) == key]


@dataclass(frozen=True)
class ImageService:
    name: str  # a key of PROVIDERS
    label: str  # how the studio names it to editors
    model: str
    price: Decimal | None  # one image at STUDIO_IMAGE_SIZE; None when unknown
    # How many reference pictures its model takes in one call; 0: it draws every page from
    # the prompt alone, without the characters' pictures (e.g. flux-schnell).
    max_references: int = 0


# name -> (label, the setting holding its key, the setting holding its model)
IMAGE_SERVICES = {
    "embedded": ("Offline renderer", "", ""),
    "openai": ("OpenAI images", "OPENAI_API_KEY", "STUDIO_IMAGE_MODEL"),
    "gemini": ("Gemini", "GEMINI_API_KEY", "GEMINI_IMAGE_MODEL"),
    "openai-chat": (
        "Chat gateway (OpenRouter, Lovable)",
        "STUDIO_CHAT_IMAGE_API_KEY",
        "STUDIO_CHAT_IMAGE_MODEL",
    ),
    "replicate": ("Replicate", "REPLICATE_API_TOKEN", "STUDIO_REPLICATE_IMAGE_MODEL"),
    "fal": ("fal", "FAL_KEY", "STUDIO_FAL_IMAGE_MODEL"),
}


def configured_image_services() -> list[ImageService]:
    """Return the image services whose keys are configured, the offline renderer first,
    each with its model and the price of one image."""
    services = []
    for name, (label, key_setting, model_setting) in IMAGE_SERVICES.items():
        if key_setting and not getattr(settings, key_setting, ""):
            continue
        model = getattr(settings, model_setting, "") if model_setting else ""
        price = price_per_image(name, model, settings.STUDIO_IMAGE_SIZE)
        references = getattr(get_provider(name), "max_references", 0)
        services.append(
            ImageService(
                name=name, label=label, model=model, price=price, max_references=references
            )
        )
    return services


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


UPSCALE_PROVIDERS = {
    "replicate": "generation.providers.replicate_upscale.ReplicateUpscaleProvider",
}
# name -> the setting holding its key
UPSCALE_KEYS = {"replicate": "REPLICATE_API_TOKEN"}


def upscale_configured() -> bool:
    """Whether the print export may offer an upscale through a service: one is chosen
    (STUDIO_UPSCALE_PROVIDER) and its key is set."""
    name = settings.STUDIO_UPSCALE_PROVIDER
    return bool(name) and bool(getattr(settings, UPSCALE_KEYS[name], ""))


def get_upscale_provider():
    """Return the configured upscale provider; raise LookupError when there is none."""
    if not upscale_configured():
        raise LookupError("No upscale service is configured (STUDIO_UPSCALE_PROVIDER and its key).")
    return import_string(UPSCALE_PROVIDERS[settings.STUDIO_UPSCALE_PROVIDER])()


def account_of(provider) -> str:
    """Return the provider account a provider calls (its name, for offline renderers)."""
    return getattr(provider, "account", "") or provider.name
