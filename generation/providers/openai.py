"""OpenAI-compatible Images API: POST {base}/images/generations.

The only job here is translation: a request goes out with explicit timeouts and an
idempotency key, and whatever comes back becomes image bytes that Pillow verified, or
one of the error classes in base.py, chosen by HTTP status *and* the body's error code.
"""

import base64
import binascii
import json
from email.utils import parsedate_to_datetime

import requests
from django.conf import settings
from django.utils import timezone

from ..story import story_prompt
from .base import (
    AuthFailed,
    GeneratedImage,
    ImageRequest,
    OutOfCredits,
    ProviderError,
    RateLimited,
    Rejected,
    StoryPage,
    StoryRequest,
    Transient,
    WrittenStory,
    verify_image,
)

# A b64 PNG of the largest sizes is a few MB; anything far beyond is not an answer.
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
MAX_DOWNLOAD_BYTES = 24 * 1024 * 1024
CONNECT_TIMEOUT = 10.0

CREDIT_CODES = {"insufficient_quota", "credit_balance_exhausted", "billing_hard_limit_reached"}
CREDIT_SUFFIXES = ("_spend_limit_exceeded", "_usage_limit_exceeded")


def is_credit_error(code: str, error_type: str) -> bool:
    return any(
        value in CREDIT_CODES or value.endswith(CREDIT_SUFFIXES) for value in (code, error_type)
    )


def parse_retry_after(headers) -> float | None:
    """Return seconds to wait from retry-after-ms or Retry-After (seconds or HTTP date)."""
    if value := headers.get("retry-after-ms"):
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - timezone.now()).total_seconds())
    except (TypeError, ValueError):
        return None


def classify(status: int, body: object, headers) -> ProviderError:
    """Return the error class for a non-2xx answer, by status and error.code / error.type."""
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    code = str(error.get("code") or "")
    error_type = str(error.get("type") or "")
    message = str(error.get("message") or f"HTTP {status} from the image service")
    details = {
        "http_status": status,
        "code": code or error_type,
        "request_id": headers.get("x-request-id", ""),
    }
    if status == 402 or is_credit_error(code, error_type):
        return OutOfCredits(message, **details)
    if status in (401, 403):
        return AuthFailed(message, **details)
    if status == 429:
        return RateLimited(message, retry_after=parse_retry_after(headers), **details)
    if status == 408 or status >= 500:
        return Transient(message, **details)
    # 400 content_policy_violation, moderation_blocked and any other invalid request.
    return Rejected(message, **details)


class OpenAICompatible:
    """What the image and text providers share: auth, timeouts, capped reads, errors."""

    service = "the service"  # how messages name it: "the image service"

    def __init__(self):
        self.base_url = settings.OPENAI_BASE_URL
        self.api_key = settings.OPENAI_API_KEY
        read = float(settings.STUDIO_PROVIDER_TIMEOUT)
        self.timeout = (min(CONNECT_TIMEOUT, read), read)
        self.session = requests.Session()

    def post_json(self, path: str, body: dict, *, idempotency_key: str) -> tuple[dict, int, str]:
        """POST body and return (payload, HTTP status, request id) of a 2xx JSON answer;
        raise the classified ProviderError for anything else."""
        if not self.api_key:
            raise AuthFailed("OPENAI_API_KEY is not set.")
        try:
            response = self.session.post(
                f"{self.base_url}{path}",
                json=body,
                headers={
                    "Authorization": f"Bearer {self.api_key}",
                    "Idempotency-Key": idempotency_key,
                },
                timeout=self.timeout,
                stream=True,
            )
        except requests.Timeout as exc:
            raise Transient(
                f"{self.service.capitalize()} did not answer in time ({self._safe(exc)})"
            ) from exc
        except requests.RequestException as exc:
            raise Transient(f"Could not reach {self.service} ({self._safe(exc)})") from exc
        with response:
            request_id = response.headers.get("x-request-id", "")
            content = self._read_capped(response, MAX_RESPONSE_BYTES, request_id)
            try:
                payload = json.loads(content)
            except (ValueError, UnicodeDecodeError):
                payload = None
            if response.status_code >= 400:
                error = classify(response.status_code, payload, response.headers)
                error.message = self._safe(error.message)
                raise error
            if not isinstance(payload, dict):
                raise Transient(
                    f"{self.service.capitalize()} sent a broken answer (invalid JSON).",
                    http_status=response.status_code,
                    request_id=request_id,
                )
            return payload, response.status_code, request_id

    def _read_capped(self, response, limit: int, request_id: str) -> bytes:
        chunks, size = [], 0
        try:
            for chunk in response.iter_content(chunk_size=256 * 1024):
                size += len(chunk)
                if size > limit:
                    raise Transient(
                        f"The image service sent more than {limit // (1024 * 1024)} MB; refused.",
                        http_status=response.status_code,
                        request_id=request_id,
                    )
                chunks.append(chunk)
        except requests.RequestException as exc:
            raise Transient(
                f"The answer broke off ({self._safe(exc)})",
                http_status=response.status_code,
                request_id=request_id,
            ) from exc
        return b"".join(chunks)

    def _safe(self, text: object) -> str:
        """Return text with the API key removed, so it can be stored and shown."""
        text = str(text)
        return text.replace(self.api_key, "[redacted]") if self.api_key else text


class OpenAIProvider(OpenAICompatible):
    """Images: POST {base}/images/generations."""

    name = "openai"
    service = "the image service"

    def __init__(self):
        super().__init__()
        self.model = settings.STUDIO_IMAGE_MODEL

    def generate(self, request: ImageRequest) -> GeneratedImage:
        body = {"model": self.model, "prompt": request.prompt, "size": request.size, "n": 1}
        if self.model.startswith("dall-e"):
            body["response_format"] = "b64_json"
        payload, status, request_id = self.post_json(
            "/images/generations", body, idempotency_key=request.idempotency_key
        )
        image_bytes = self._image_bytes(payload, status, request_id)
        width, height = verify_image(image_bytes)
        return GeneratedImage(
            content=image_bytes,
            width=width,
            height=height,
            model=self.model,
            request_id=request_id,
            http_status=status,
        )

    def _image_bytes(self, payload: dict, status: int, request_id: str) -> bytes:
        data = payload.get("data")
        item = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else {}
        if b64 := item.get("b64_json"):
            try:
                return base64.b64decode(b64, validate=True)
            except (binascii.Error, ValueError, TypeError) as exc:
                raise Transient(
                    "The image service sent image data that is not valid base64.",
                    http_status=status,
                    request_id=request_id,
                ) from exc
        if url := item.get("url"):
            return self._download(url, request_id)
        raise Transient(
            "The image service answered without an image.",
            http_status=status,
            request_id=request_id,
        )

    def _download(self, url: str, request_id: str) -> bytes:
        try:
            with self.session.get(url, timeout=self.timeout, stream=True) as response:
                if response.status_code >= 400:
                    raise Transient(
                        f"Downloading the image failed (HTTP {response.status_code}).",
                        http_status=response.status_code,
                        request_id=request_id,
                    )
                return self._read_capped(response, MAX_DOWNLOAD_BYTES, request_id)
        except requests.RequestException as exc:
            raise Transient(f"Downloading the image failed ({self._safe(exc)})") from exc


STORY_INSTRUCTIONS = (
    "You write picture books and storyboards. Answer with JSON only, in the form "
    '{"pages": [{"text": "...", "prompt": "..."}]}: one object per page, in order, where '
    '"text" is what the page says and "prompt" describes its illustration.'
)


class OpenAITextProvider(OpenAICompatible):
    """Stories: POST {base}/chat/completions, asking for JSON pages."""

    name = "openai"
    service = "the text service"

    def __init__(self):
        super().__init__()
        self.model = settings.STUDIO_TEXT_MODEL

    def write(self, request: StoryRequest) -> WrittenStory:
        body = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": STORY_INSTRUCTIONS},
                {"role": "user", "content": story_prompt(request)},
            ],
            "response_format": {"type": "json_object"},
        }
        payload, status, request_id = self.post_json(
            "/chat/completions", body, idempotency_key=request.idempotency_key
        )
        details = {"http_status": status, "request_id": request_id}
        choices = payload.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else {}
        if isinstance(choice, dict) and choice.get("finish_reason") == "content_filter":
            raise Rejected("The text service refused this premise (content filter).", **details)
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        try:
            story = json.loads(content)
        except (TypeError, ValueError):
            raise Transient(
                "The text service wrote something that is not the JSON asked for.", **details
            ) from None
        pages = (
            [_story_page(item) for item in (story.get("pages") or [])]
            if isinstance(story, dict)
            else []
        )
        pages = [page for page in pages if page is not None]
        if len(pages) < request.pages:
            raise Transient(
                f"The story came back with {len(pages)} pages; {request.pages} were asked for.",
                **details,
            )
        return WrittenStory(
            pages=pages[: request.pages],
            model=self.model,
            request_id=request_id,
            http_status=status,
        )


def _story_page(item: object) -> StoryPage | None:
    if isinstance(item, str) and item.strip():
        return StoryPage(text=item.strip())
    if isinstance(item, dict) and str(item.get("text") or "").strip():
        return StoryPage(
            text=str(item["text"]).strip(), prompt=str(item.get("prompt") or "").strip()
        )
    return None
