"""Gemini, native: POST {GEMINI_BASE_URL}/models/{model}:generateContent.

The request asks for an image only (`responseModalities: ["IMAGE"]`) at the aspect ratio
nearest the project's size. The picture is the first `inlineData` part of any candidate.
Gemini refuses with HTTP 200: a `promptFeedback.blockReason`, a `finishReason` such as
IMAGE_SAFETY, or an answer of text alone is a refusal of this prompt, never a success and
never worth a retry. Errors are Google's `{"error": {"code", "message", "status",
"details": [...]}}`, where the details say more than the status (RetryInfo, QuotaFailure,
ErrorInfo).
"""

import math
import re

from .. import catalogue
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
    parse_size,
)
from .checks import Check, check_get
from .http import (
    KeyedImageProvider,
    as_json,
    decode_base64,
    foreign_answer,
    parse_retry_after,
    received_image,
    sentence,
)
from .references import KEEP_THEM, introduction, prepared

SERVICE = "the image service (Gemini)"
# imageConfig.aspectRatio values the image models take (ai.google.dev image generation).
ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
# Reasons a prompt or an answer is refused (BlockReason and FinishReason in the API
# reference): the page is rejected with the reason shown.
REFUSALS = {
    "SAFETY",
    "OTHER",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "RECITATION",
    "LANGUAGE",
    "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT",
    "IMAGE_RECITATION",
    "IMAGE_OTHER",
    "NO_IMAGE",
}
TYPE_PREFIX = "type.googleapis.com/google.rpc."
# Reference pictures are sent no larger than this (a request is at most 20 MB in all).
REFERENCE_SIDE = 1024
# Their bytes together, so that base64 and the rest of the request stay under 20 MB.
REFERENCE_BYTES = 14 * 1024 * 1024


# A model the catalogue does not list gets the fewest any Gemini image model takes well.
UNLISTED_REFERENCES = 3


def reference_limit(model: str, service: str = "gemini") -> int:
    """Return how many reference pictures a Gemini image model takes in one call, as the
    catalogue says (the Gemini 3 image models 14, gemini-2.5-flash-image 3)."""
    listed = catalogue.model(service, model)
    return listed.references if listed.known else UNLISTED_REFERENCES


def aspect_ratio(size: str) -> str:
    """Return the supported aspect ratio nearest to a "WxH" size."""
    width, height = parse_size(size)
    wanted = math.log(width / height)

    def distance(ratio: str) -> float:
        w, h = (int(n) for n in ratio.split(":"))
        return abs(math.log(w / h) - wanted)

    return min(ASPECT_RATIOS, key=distance)


def _details(error: dict, kind: str) -> list[dict]:
    details = error.get("details")
    return [
        item
        for item in (details if isinstance(details, list) else [])
        if isinstance(item, dict) and item.get("@type") == TYPE_PREFIX + kind
    ]


def _seconds(duration: object) -> float | None:
    """Return seconds from a protobuf Duration in JSON ("22s", "1.5s")."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)s\s*", str(duration or ""))
    return float(match.group(1)) if match else None


def _quota_is_zero(error: dict) -> bool:
    for failure in _details(error, "QuotaFailure"):
        for violation in failure.get("violations") or []:
            if isinstance(violation, dict) and str(violation.get("quotaValue", "")) == "0":
                return True
    return False


def classify(status: int, headers, body: object) -> ProviderError:
    """Return the error class for a non-2xx answer from Gemini."""
    payload = as_json(body)
    error = payload.get("error") if isinstance(payload, dict) else None
    error = error if isinstance(error, dict) else {}
    state = str(error.get("status") or "")
    message = str(error.get("message") or f"HTTP {status} from {SERVICE}")
    reasons = {str(info.get("reason") or "") for info in _details(error, "ErrorInfo")}
    details = {"http_status": status, "code": state or str(status)}
    if not error and (
        stray := foreign_answer(
            status, headers, body, service=SERVICE, route_setting="GEMINI_BASE_URL", **details
        )
    ):
        # A wrong base URL, or a proxy's error page: not Google's answer.
        return stray
    if status == 402:
        # Prepay credits used up (the newer billing): a person must top up.
        return OutOfCredits(message, **details)
    if status == 429 or state == "RESOURCE_EXHAUSTED":
        if _quota_is_zero(error):
            return ConfigError(
                f"{message} (a quota of 0: this key's project has no quota for the model on "
                "its tier; enable billing for it or choose another model)",
                setting="GEMINI_IMAGE_MODEL",
                **details,
            )
        delay = next(
            (_seconds(info.get("retryDelay")) for info in _details(error, "RetryInfo")), None
        )
        return RateLimited(
            message,
            retry_after=delay if delay is not None else parse_retry_after(headers),
            **details,
        )
    if "API_KEY_INVALID" in reasons or status == 401 or state == "UNAUTHENTICATED":
        return AuthFailed(message, **details)
    if status == 403 or state == "PERMISSION_DENIED":
        return AuthFailed(message, **details)
    if state == "FAILED_PRECONDITION":
        # "User location is not supported", or billing not set up for this key's project.
        return ConfigError(message, setting="GEMINI_API_KEY", **details)
    if status == 404:
        return ConfigError(message, setting="GEMINI_IMAGE_MODEL", **details)
    if status == 408 or status >= 500:
        return Transient(message, **details)
    if status in (400, 422):
        fields = [
            str(violation.get("field") or "")
            for request in _details(error, "BadRequest")
            for violation in request.get("fieldViolations") or []
            if isinstance(violation, dict)
        ]
        about = " ".join(fields) + " " + message
        if re.search(r"aspect_?ratio", about, re.IGNORECASE):
            return ConfigError(message, setting="STUDIO_IMAGE_SIZE", **details)
        if re.search(
            r"modalit|generation_?config|image_?config|unknown name|model", about, re.IGNORECASE
        ):
            return ConfigError(message, setting="GEMINI_IMAGE_MODEL", **details)
    # Anything else about this request (its prompt): this page only.
    return Rejected(message, **details)


class GeminiProvider(KeyedImageProvider):
    """Images: POST {base}/models/{model}:generateContent with x-goog-api-key."""

    name = "gemini"
    label = "Gemini"
    service = SERVICE
    base_url_setting = "GEMINI_BASE_URL"
    key_setting = "GEMINI_API_KEY"
    model_setting = "GEMINI_IMAGE_MODEL"

    def headers(self) -> dict:
        return {"x-goog-api-key": self.require_key()}

    @property
    def max_references(self) -> int:
        return reference_limit(self.model)

    def generate(self, request: ImageRequest) -> GeneratedImage:
        body = {
            "contents": [{"role": "user", "parts": self.parts(request)}],
            "generationConfig": {
                "responseModalities": ["IMAGE"],
                "imageConfig": {"aspectRatio": aspect_ratio(request.size)},
            },
        }
        answer = self.post(
            f"/models/{self.model}:generateContent",
            body,
            deadline=self.client.deadline(),
            classify=classify,
        )
        payload = self.client.paid_object(answer)
        request_id = str(payload.get("responseId") or "")
        details = {"http_status": answer.status, "request_id": request_id}
        data = _first_image(payload)
        if data is None:
            raise _refusal(payload, details)
        content = decode_base64(data, **details)
        return received_image(
            content,
            model=str(payload.get("modelVersion") or self.model),
            usage=payload.get("usageMetadata"),
            **details,
        )

    def parts(self, request: ImageRequest) -> list[dict]:
        """Return the request's parts: each reference picture introduced by a text part
        naming it, then the picture inline, and the page's prompt last."""
        parts: list[dict] = []
        references = prepared(
            request,
            limit=self.max_references,
            max_side=REFERENCE_SIDE,
            max_total=REFERENCE_BYTES,
        )
        for n, (reference, picture) in enumerate(references):
            parts.append({"text": introduction(n, reference)})
            parts.append({"inlineData": {"mimeType": picture.mime_type, "data": picture.base64()}})
        prompt = f"{KEEP_THEM}\n\n{request.prompt}" if references else request.prompt
        parts.append({"text": prompt})
        return parts

    def check(self) -> list[Check]:
        """Return what Gemini's free model look-up (GET /models/{model}) says of the key
        and the model."""
        return check_get(
            self.client,
            f"{self.base_url}/models/{self.model}",
            headers=self.headers,
            classify=classify,
            what=("key", "model"),
        )


def _first_image(payload: dict) -> str | None:
    """Return the base64 data of the first image part of any candidate."""
    for candidate in payload.get("candidates") or []:
        content = candidate.get("content") if isinstance(candidate, dict) else None
        parts = content.get("parts") if isinstance(content, dict) else None
        for part in parts if isinstance(parts, list) else []:
            inline = (
                part.get("inlineData") or part.get("inline_data")
                if isinstance(part, dict)
                else None
            )
            if isinstance(inline, dict) and inline.get("data"):
                mime = str(inline.get("mimeType") or inline.get("mime_type") or "image/")
                if mime.startswith("image/"):
                    return inline["data"]
    return None


def _refusal(payload: dict, details: dict) -> ProviderError:
    """Return the error for a 200 without a picture: a refusal, with its reason, or (with
    no reason at all) a transient failure."""
    feedback = payload.get("promptFeedback")
    feedback = feedback if isinstance(feedback, dict) else {}
    if block := feedback.get("blockReason"):
        reason = str(block)
        extra = str(feedback.get("blockReasonMessage") or "")
        message = f"Gemini blocked the prompt ({reason})" + (f": {extra}" if extra else ".")
        return Rejected(message, code=reason, **details)
    candidates = [c for c in payload.get("candidates") or [] if isinstance(c, dict)]
    texts = [
        str(part.get("text"))
        for candidate in candidates
        for part in (candidate.get("content") or {}).get("parts") or []
        if isinstance(part, dict) and part.get("text")
    ]
    said = " ".join(texts).strip()
    said = f' It said: "{said[:300]}"' if said else ""
    for candidate in candidates:
        reason = str(candidate.get("finishReason") or "")
        if reason in REFUSALS:
            extra = str(candidate.get("finishMessage") or "")
            message = f"Gemini made no picture ({reason})" + (f": {extra}" if extra else ".")
            return Rejected(message + said, code=reason, **details)
    if texts:
        return Rejected(
            f"Gemini answered with text and no picture.{said}", code="TEXT_ONLY", **details
        )
    return Transient(f"{sentence(SERVICE)} answered without a picture.", **details)
