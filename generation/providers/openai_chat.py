"""OpenAI-compatible chat completions that answer with images (OpenRouter, the Lovable AI
gateway, others): POST {STUDIO_CHAT_IMAGE_BASE_URL}/chat/completions.

The picture is `choices[0].message.images[].image_url.url`: a `data:` URL, or an https URL
downloaded within the same call's deadline and caps. OpenRouter reports what a call cost
(`usage.cost`, USD); the ledger takes that figure over the price list.

Gateways fail in their own ways: 402 for credits, 403 when moderation flagged the prompt,
and, once the model has started, HTTP 200 with an `error` object (or no image at all) in
the body. Each is classified by what it says.
"""

import re
from decimal import Decimal, InvalidOperation

from .base import (
    AuthFailed,
    ConfigError,
    GeneratedImage,
    ImageRequest,
    OutOfCredits,
    ProviderError,
    RateLimited,
    Rejected,
    Transient,
)
from .checks import Check, check_get, model_after_key
from .gemini import REFERENCE_BYTES, REFERENCE_SIDE, aspect_ratio, reference_limit
from .http import (
    KeyedImageProvider,
    as_json,
    decode_data_url,
    foreign_answer,
    parse_retry_after,
    received_image,
    says_out_of_credits,
    sentence,
)
from .references import KEEP_THEM, introduction, prepared

SERVICE = "the image service (chat gateway)"
# Wording of a refusal of the prompt (moderation, a content filter, a safety system).
_REFUSAL = re.compile(
    r"moderat|flagged|content[_ ]?(filter|policy)|safety|refus|prohibited|blocked|"
    r"violat|not allowed|inappropriate",
    re.IGNORECASE,
)


def _error(payload: object) -> dict:
    error = payload.get("error") if isinstance(payload, dict) else None
    return error if isinstance(error, dict) else {}


def classify(status: int, headers, body: object) -> ProviderError:
    """Return the error class for a non-2xx answer, by status and wording."""
    error = _error(as_json(body))
    message = str(error.get("message") or f"HTTP {status} from {SERVICE}")
    metadata = error.get("metadata") if isinstance(error.get("metadata"), dict) else {}
    reasons = " ".join(str(r) for r in metadata.get("reasons") or [])
    code = str(error.get("code") or error.get("type") or status)
    details = {"http_status": status, "code": code, "request_id": headers.get("x-request-id", "")}
    if not error and (
        stray := foreign_answer(
            status,
            headers,
            body,
            service=SERVICE,
            route_setting="STUDIO_CHAT_IMAGE_BASE_URL",
            **details,
        )
    ):
        return stray
    if status == 402 or says_out_of_credits(message, error.get("type"), error.get("code")):
        return OutOfCredits(message, **details)
    if status == 401:
        return AuthFailed(message, **details)
    if status == 403:
        if _REFUSAL.search(message + " " + reasons) or metadata.get("flagged_input"):
            return Rejected(message, **details)
        if re.search(r"key limit|limit exceeded", message, re.IGNORECASE):
            return OutOfCredits(message, **details)  # OpenRouter: the key's own spend cap
        return AuthFailed(message, **details)
    if status == 429:
        return RateLimited(message, retry_after=parse_retry_after(headers), **details)
    if status == 408 or status >= 500:
        return Transient(message, **details)
    if status == 404 or re.search(
        r"model|modalit|image_config|output modalit", message, re.IGNORECASE
    ):
        # "No endpoints found that support the requested output modalities", "… is not a
        # valid model ID": every page would fail the same way.
        return ConfigError(message, setting="STUDIO_CHAT_IMAGE_MODEL", **details)
    if re.search(r"aspect|size", message, re.IGNORECASE):
        return ConfigError(message, setting="STUDIO_IMAGE_SIZE", **details)
    return Rejected(message, **details)


def classify_in_band(error: dict, **details) -> ProviderError:
    """Return the error class of an `error` object inside an HTTP 200 answer (the model had
    started): a refusal is rejected, credits wording is out of credits, the rest transient."""
    message = str(error.get("message") or "The gateway reported an error.")
    metadata = error.get("metadata") if isinstance(error.get("metadata"), dict) else {}
    code = str(error.get("code") or "")
    details = {**details, "code": code or details.get("code", "")}
    if _REFUSAL.search(f"{message} {code} {metadata.get('reasons') or ''}"):
        return Rejected(message, **details)
    if says_out_of_credits(message, code) or code == "402":
        return OutOfCredits(message, **details)
    return Transient(message, **details)


class ChatImageProvider(KeyedImageProvider):
    """Images: POST {base}/chat/completions with modalities ["image", "text"]."""

    name = "openai-chat"
    label = "Chat gateway (OpenRouter, Lovable)"
    service = SERVICE
    base_url_setting = "STUDIO_CHAT_IMAGE_BASE_URL"
    key_setting = "STUDIO_CHAT_IMAGE_API_KEY"
    model_setting = "STUDIO_CHAT_IMAGE_MODEL"

    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.require_key()}"}

    @property
    def max_references(self) -> int:
        return reference_limit(self.model, self.name)

    def content(self, request: ImageRequest) -> str | list[dict]:
        """Return the message's content: the prompt alone, or each reference picture (a
        data URL) introduced by a text part naming it, and the prompt last."""
        references = prepared(
            request,
            limit=self.max_references,
            max_side=REFERENCE_SIDE,
            max_total=REFERENCE_BYTES,
        )
        if not references:
            return request.prompt
        content: list[dict] = []
        for n, (reference, picture) in enumerate(references):
            content.append({"type": "text", "text": introduction(n, reference)})
            content.append({"type": "image_url", "image_url": {"url": picture.data_url()}})
        content.append({"type": "text", "text": f"{KEEP_THEM}\n\n{request.prompt}"})
        return content

    def generate(self, request: ImageRequest) -> GeneratedImage:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": self.content(request)}],
            "modalities": ["image", "text"],
        }
        ratio = aspect_ratio(request.size)
        if ratio != "1:1":
            # Square is every image model's default; some routes refuse image_config
            # altogether, so it is only sent when it changes something.
            body["image_config"] = {"aspect_ratio": ratio}
        deadline = self.client.deadline()  # the whole exchange, download included
        answer = self.post("/chat/completions", body, deadline=deadline, classify=classify)
        header_id = answer.headers.get("x-request-id", "")
        payload = self.client.paid_object(answer, request_id=header_id)
        request_id = str(payload.get("id") or header_id)
        details = {"http_status": answer.status, "request_id": request_id}
        if error := _error(payload):
            raise self._safe(classify_in_band(error, **details))
        choices = payload.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else {}
        choice = choice if isinstance(choice, dict) else {}
        if error := _error(choice):
            raise self._safe(classify_in_band(error, **details))
        message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
        url = _image_url(message)
        if url is None:
            raise self._safe(_no_image(choice, message, details))
        if url.startswith("data:"):
            content = decode_data_url(url, **details)
        elif url.startswith(("https://", "http://")):
            content = self.client.download(url, deadline=deadline, request_id=request_id)
        else:
            raise Transient(
                f"{sentence(SERVICE)} sent an image URL it cannot be fetched from.",
                maybe_paid=True,
                **details,
            )
        usage = payload.get("usage") if isinstance(payload.get("usage"), dict) else None
        return received_image(
            content,
            model=str(payload.get("model") or self.model),
            usage=usage,
            reported_cost=_cost(usage),
            **details,
        )

    def _safe(self, error: ProviderError) -> ProviderError:
        error.message = self.client.safe(error.message)
        error.args = (error.message,)
        return error

    def check(self) -> list[Check]:
        """Return what the gateway's free look-ups say: the key (OpenRouter GET /key) and
        the model (GET /models lists it)."""
        key = check_get(
            self.client,
            f"{self.base_url}/key",
            headers=self.headers,
            classify=classify,
            what=("key",),
        )
        return model_after_key(
            key,
            lambda: check_get(
                self.client,
                f"{self.base_url}/models",
                headers=self.headers,
                classify=classify,
                what=("model",),
                found=lambda payload: _lists_model(payload, self.model),
            ),
        )


def _image_url(message: dict) -> str | None:
    for image in message.get("images") or []:
        image_url = image.get("image_url") if isinstance(image, dict) else None
        url = image_url.get("url") if isinstance(image_url, dict) else image_url
        if isinstance(url, str) and url:
            return url
    return None


def _no_image(choice: dict, message: dict, details: dict) -> ProviderError:
    """Return the error for a 200 without an image: a content filter or a refusal is this
    prompt's rejection; anything else is worth another try."""
    finish = str(choice.get("finish_reason") or "")
    native = str(choice.get("native_finish_reason") or "")
    text = str(message.get("content") or "").strip()
    said = f' It said: "{text[:300]}"' if text else ""
    if finish == "content_filter" or message.get("refusal"):
        reason = str(message.get("refusal") or native or finish)
        return Rejected(
            f"The gateway refused this prompt ({reason}).{said}", code=finish, **details
        )
    if native and _REFUSAL.search(native) or native.startswith(("IMAGE_", "PROHIBITED")):
        return Rejected(f"The model made no picture ({native}).{said}", code=native, **details)
    return Transient(
        f"{sentence(SERVICE)} answered without an image (finish_reason {finish or 'none'}).{said}",
        code=finish,
        **details,
    )


def _cost(usage: dict | None) -> Decimal | None:
    """Return the cost OpenRouter reports (usage.cost, USD), if any."""
    value = (usage or {}).get("cost")
    if value is None or isinstance(value, bool):
        return None
    try:
        cost = Decimal(str(value))
    except InvalidOperation:
        return None
    return cost if cost.is_finite() and cost >= 0 else None


def _lists_model(payload: object, model: str) -> bool:
    data = payload.get("data") if isinstance(payload, dict) else None
    return any(isinstance(item, dict) and item.get("id") == model for item in data or [])
