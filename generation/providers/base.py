"""What every image service looks like to the engine: one call, a few error classes.

Providers translate their service's answers into these classes and know nothing of
Django models; the engine decides what each class means for the page and the run.
"""

import hashlib
import io
from dataclasses import dataclass
from decimal import Decimal

from PIL import Image, UnidentifiedImageError

# Refuse decompression bombs and absurd sizes before decoding a single pixel.
MAX_IMAGE_PIXELS = 64_000_000
MAX_IMAGE_SIDE = 8192


@dataclass(frozen=True)
class Reference:
    """A picture sent with a call so the service keeps a character, setting, prop or the
    book's style the same from page to page (issue 18)."""

    name: str  # "Peter"; "Style" for the style reference
    description: str  # what must not change: species, colours, clothes
    content: bytes  # PNG, JPEG or WebP bytes as stored (providers downscale to their limit)
    kind: str = "character"  # character | setting | prop | style


@dataclass(frozen=True)
class ImageRequest:
    prompt: str
    size: str  # "1024x1024"
    seed: int
    # The same for every call that may repeat one paid request (see the engine).
    idempotency_key: str
    caption: str = ""
    # Labelled reference pictures, style reference first, then the page's characters;
    # at most STUDIO_MAX_REFERENCES. Each provider sends them the way its service takes
    # them (its `max_references` says how many; 0 means it takes none).
    references: tuple[Reference, ...] = ()
    # "page" for a book page; "sheet" for a character sheet (front, three-quarter and
    # back view on a plain background), drawn from `prompt` and the style guide.
    subject: str = "page"


@dataclass(frozen=True)
class GeneratedImage:
    content: bytes
    width: int
    height: int
    model: str = ""
    request_id: str = ""
    http_status: int | None = None
    # What the service said it charged, or the usage it reported (tokens), if it did.
    reported_cost: Decimal | None = None
    usage: dict | None = None


@dataclass(frozen=True)
class StoryRequest:
    premise: str
    audience: str
    pages: int
    idempotency_key: str
    style_guide: str = ""


@dataclass(frozen=True)
class StoryPage:
    text: str
    prompt: str = ""


@dataclass(frozen=True)
class WrittenStory:
    pages: list[StoryPage]
    model: str = ""
    request_id: str = ""
    http_status: int | None = None


@dataclass(frozen=True)
class ClipRequest:
    image: bytes  # the page's complete illustration
    prompt: str
    seconds: float
    idempotency_key: str


@dataclass(frozen=True)
class UpscaleRequest:
    image: bytes  # the page's picture as stored (PNG, JPEG or WebP)
    scale: int  # how many times larger on each side
    idempotency_key: str


@dataclass(frozen=True)
class GeneratedClip:
    content: bytes
    content_type: str  # "image/webp", "image/gif" or "video/mp4"
    model: str = ""
    request_id: str = ""
    http_status: int | None = None


class ProviderError(Exception):
    """A call that did not produce an image. Subclasses say what the engine should do."""

    outcome = "transient"
    retryable = False
    halts_run = False

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        code: str = "",
        request_id: str = "",
        retry_after: float | None = None,
        maybe_paid: bool = False,
        sent: bool = True,
    ):
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.code = code
        self.request_id = request_id
        self.retry_after = retry_after
        # The service most likely charged for this call although no whole answer came
        # (it broke off, or the picture could not be downloaded): recorded as unconfirmed.
        self.maybe_paid = maybe_paid
        # False when the request never went out (it could not be made: a reference picture
        # that cannot be decoded): the service said nothing, so the error is the page's
        # alone and never counts toward the account's outage breaker nor answers a probe.
        self.sent = sent


class Transient(ProviderError):
    """5xx, timeouts, broken bodies: trying again may well work."""

    retryable = True


class RateLimited(Transient):
    """Too many requests: wait at least retry_after seconds (when given), then retry."""

    outcome = "rate_limited"


class OutOfCredits(ProviderError):
    """No credits or quota left: retrying cannot help, the whole run halts."""

    outcome = "out_of_credits"
    halts_run = True


class AuthFailed(ProviderError):
    """Bad or missing API key: the whole run halts."""

    outcome = "auth"
    halts_run = True


class StartOver(Transient):
    """The service's own job for this call ended without a result (it failed, or the
    service forgot it): the next attempt starts a new job instead of following this one."""


class Unsendable(ProviderError):
    """The request could not be built from the page's own input (a reference picture that
    cannot be decoded): nothing was sent, so nothing was paid and nothing counts against the
    shared account; this page fails with the reason until the editor fixes it."""

    outcome = "rejected"

    def __init__(self, message: str, **details):
        super().__init__(message, sent=False, **details)


class StillRunning(Transient):
    """The service's own job is still being made at the call's deadline: it is kept, and
    the job waits (holding no worker) to poll the same one again later. Not a failure: it
    counts neither against the page nor toward an outage."""

    outcome = "interrupted"


class AwaitingService(Exception):
    """The service's own job was created with a webhook and is still being made: the
    worker lets it go at once (no worker, no slot of ours waits for it), and the webhook,
    or a poll once it is overdue, wakes it. Not a failure: no attempt counts."""

    def __init__(self, job_id: str, message: str = ""):
        super().__init__(message or "Being made at the service; its webhook wakes the job.")
        self.job_id = job_id
        self.message = str(self)


class Rejected(ProviderError):
    """The service refused this prompt: this page fails at once, no retries."""

    outcome = "rejected"


class ConfigError(ProviderError):
    """The request names something the service does not have or take (a wrong endpoint,
    an unknown model, an invalid size or quality): every page would fail the same way, so
    the account halts once, and the message names the setting to fix."""

    outcome = "config"
    halts_run = True

    def __init__(self, message: str, *, setting: str = "", **details):
        super().__init__(message, **details)
        self.setting = setting  # e.g. "STUDIO_IMAGE_MODEL"


def parse_size(size: str) -> tuple[int, int]:
    """Return (width, height) from "WxH"; raise ValueError on anything else."""
    width, _, height = size.lower().partition("x")
    w, h = int(width), int(height)
    if not (16 <= w <= MAX_IMAGE_SIDE and 16 <= h <= MAX_IMAGE_SIDE):
        raise ValueError(f"image size out of range: {size}")
    return w, h


def verify_image(content: bytes) -> tuple[int, int]:
    """Return the (width, height) of image bytes; raise Transient if they are not a sane image."""
    try:
        with Image.open(io.BytesIO(content)) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS or max(width, height) > MAX_IMAGE_SIDE:
                raise Transient(f"image too large ({width}x{height})")
            image.verify()
    except Image.DecompressionBombError as exc:
        raise Transient(f"refused a decompression bomb: {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise Transient(f"not a valid image: {exc}") from exc
    return width, height


def verify_clip(content: bytes) -> str:
    """Return the content type of clip bytes; raise Transient if they are not a clip."""
    if content[4:8] == b"ftyp":
        return "video/mp4"
    try:
        with Image.open(io.BytesIO(content)) as clip:
            kind = clip.format
            width, height = clip.size
            if width * height > MAX_IMAGE_PIXELS or max(width, height) > MAX_IMAGE_SIDE:
                raise Transient(f"clip too large ({width}x{height})")
    except Image.DecompressionBombError as exc:
        raise Transient(f"refused a decompression bomb: {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise Transient(f"not a valid clip: {exc}") from exc
    if kind not in {"WEBP", "GIF"}:
        raise Transient(f"not a clip format the studio plays: {kind}")
    return f"image/{kind.lower()}"


def account_key(provider: str, endpoint: str = "", api_key: str = "") -> str:
    """Return what names a provider account: the provider, its endpoint and a fingerprint
    of its key (never the key itself). Every project on one key shares its credits."""
    if not endpoint and not api_key:
        return provider
    fingerprint = hashlib.sha256(api_key.encode()).hexdigest()[:12] if api_key else "no-key"
    return f"{provider}|{endpoint.rstrip('/')}|{fingerprint}"
