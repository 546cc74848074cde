"""OpenAI-compatible Images API: POST {base}/images/generations, or, for a page with
reference pictures, POST {base}/images/edits (multipart, one `image[]` part per picture).

The only job here is translation: a request goes out with explicit timeouts and an
idempotency key, and whatever comes back becomes image bytes that Pillow verified, or
one of the error classes in base.py, chosen by HTTP status *and* the body's error code.
"""

import base64
import binascii
import json

from django.conf import settings

from .. import catalogue
from ..story import story_prompt
from .base import (
    AuthFailed,
    ConfigError,
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
    account_key,
)
from .checks import Check, check_get
from .http import (
    Client,
    Deadline,
    as_json,
    looks_like_html,
    parse_retry_after,
    received_image,
    required_key,
    says_out_of_credits,
)
from .references import named_prompt, prepared

# /images/edits takes up to 16 input pictures (shared/reference/image-services-2026.md); how
# many a model takes, and whether it takes `input_fidelity`, is the catalogue's word.
MAX_EDIT_IMAGES = 16
# References are downscaled to this longer side: enough for a character to be recognised,
# and far under the 50 MB a picture may weigh.
REFERENCE_SIDE = 1536


def takes_input_fidelity(model: str) -> bool:
    return catalogue.model("openai", model).input_fidelity


CREDIT_CODES = {"insufficient_quota", "credit_balance_exhausted", "billing_hard_limit_reached"}
CREDIT_SUFFIXES = ("_spend_limit_exceeded", "_usage_limit_exceeded")


def is_credit_error(code: str, error_type: str) -> bool:
    return any(
        value in CREDIT_CODES or value.endswith(CREDIT_SUFFIXES) for value in (code, error_type)
    )


# Parameters an invalid request may be about that are settings, not the page's prompt.
SETTING_PARAMS = {
    "model": "STUDIO_IMAGE_MODEL",
    "size": "STUDIO_IMAGE_SIZE",
    "quality": "STUDIO_IMAGE_QUALITY",
    "n": "STUDIO_IMAGE_MODEL",
    "response_format": "STUDIO_IMAGE_MODEL",
    "style": "STUDIO_IMAGE_MODEL",
    "output_format": "STUDIO_IMAGE_MODEL",
    "background": "STUDIO_IMAGE_MODEL",
}
REFUSAL_CODES = {"content_policy_violation", "moderation_blocked", "content_filter", "safety"}
AUTH_CODES = {"invalid_api_key", "invalid_authentication", "unauthorized", "authentication_error"}
REGION_CODES = {"unsupported_country_region_territory"}


def classify(
    status: int,
    body: object,
    headers,
    *,
    content: bytes = b"",
    model: str = "",
    service: str = "the image service",
    settings_named: dict | None = None,
) -> ProviderError:
    """Return the error class for a non-2xx answer, by status, body *and* wording.

    Gateways and proxies rewrite codes, so what the message says counts too: wording that
    says the quota, balance, credits or billing is exhausted is out of credits whatever
    the code; an HTML page from a proxy is transient whatever its status; only 401, or a
    403 with a JSON auth error, means the key was refused; a 404 or an invalid parameter
    that is not the prompt is configuration, halted once and named.
    """
    names = {"model": "STUDIO_IMAGE_MODEL", "base_url": "OPENAI_BASE_URL", **(settings_named or {})}
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, str):
        error = {"message": error}
    error = error if isinstance(error, dict) else {}
    code = str(error.get("code") or "")
    error_type = str(error.get("type") or "")
    param = str(error.get("param") or "")
    fallback = body.get("detail") or body.get("message") if isinstance(body, dict) else None
    message = str(error.get("message") or fallback or f"HTTP {status} from {service}")
    details = {
        "http_status": status,
        "code": code or error_type,
        "request_id": headers.get("x-request-id", ""),
        "retry_after": parse_retry_after(headers),
    }
    if looks_like_html(content, headers) or (body is None and content.lstrip()[:1] == b"<"):
        # A proxy's error page (a 403 from a firewall, a 502 from a load balancer): not
        # the service's word on the key, the prompt or the account.
        return Transient(
            f"{service.capitalize()} answered with an HTML page (HTTP {status}).", **details
        )
    if (
        status == 402
        or is_credit_error(code, error_type)
        or says_out_of_credits(message, code, error_type)
    ):
        return OutOfCredits(message, **details)
    if status == 401 or (status == 403 and (code in AUTH_CODES or error_type in AUTH_CODES)):
        return AuthFailed(message, **details)
    if status == 403 and code in REGION_CODES:
        return ConfigError(
            f"{service.capitalize()} does not serve the region the studio calls from "
            f"(HTTP 403: {message})",
            setting=names["base_url"],
            **details,
        )
    if status == 403 and (code in REFUSAL_CODES or "moderation" in message.lower()):
        return Rejected(message, **details)
    if status == 403:
        return AuthFailed(message, **details)
    if status == 429:
        return RateLimited(message, **details)
    if status == 408 or status >= 500:
        return Transient(message, **details)
    if status == 404:
        if param == "model" or "model" in code or "model" in message.lower():
            return ConfigError(
                f"{service.capitalize()} does not know the model '{model}' (HTTP 404).",
                setting=names["model"],
                **details,
            )
        return ConfigError(
            f"{service.capitalize()} has no such endpoint (HTTP 404: {message}).",
            setting=names["base_url"],
            **details,
        )
    if code in REFUSAL_CODES or error_type == "image_generation_user_error" and not param:
        return Rejected(message, **details)
    if param in SETTING_PARAMS and param != "prompt":
        setting = names.get(param) or SETTING_PARAMS[param]
        return ConfigError(
            f"{service.capitalize()} refused the request's {param} (HTTP {status}: {message})",
            setting=setting,
            **details,
        )
    # 400 content_policy_violation, moderation_blocked and any other invalid prompt.
    return Rejected(message, **details)


def classify_in_band(payload: dict, *, status: int, request_id: str, service: str):
    """Return the error a 200 carries in its body (gateways that report failures after the
    model started), or None: a refusal is rejected, credits wording out of credits,
    anything else transient."""
    error = payload.get("error")
    if not error:
        return None
    error = error if isinstance(error, dict) else {"message": str(error)}
    message = str(error.get("message") or f"{service.capitalize()} reported an error.")
    code = str(error.get("code") or error.get("type") or "")
    details = {"http_status": status, "code": code[:80], "request_id": request_id}
    if code in REFUSAL_CODES or any(
        word in message.lower() for word in ("safety", "moderation", "content filter", "refus")
    ):
        return Rejected(message, **details)
    if says_out_of_credits(message, code):
        return OutOfCredits(message, **details)
    return Transient(message, **details)


class OpenAICompatible:
    """What the image and text providers share: auth, the call's deadline, capped reads,
    errors."""

    service = "the service"  # how messages name it: "the image service"
    key_setting = "OPENAI_API_KEY"

    def __init__(self):
        self.base_url = settings.OPENAI_BASE_URL
        self.api_key = settings.OPENAI_API_KEY
        self.seconds = float(settings.STUDIO_PROVIDER_TIMEOUT)
        self.client = Client(
            service=self.service,
            seconds=self.seconds,
            secrets=(self.api_key,),
            service_url=self.base_url,
        )

    @property
    def account(self) -> str:
        return account_key(self.name, self.base_url, self.api_key)

    def deadline(self) -> Deadline:
        return self.client.deadline()

    def headers(self) -> dict:
        """Return the header that carries the key (raising AuthFailed when it is not set)."""
        return {"Authorization": f"Bearer {required_key(self.api_key, self.key_setting)}"}

    def post_json(
        self,
        path: str,
        body: dict,
        *,
        idempotency_key: str,
        deadline: Deadline,
        files: list | None = None,
    ) -> tuple[dict, int, str]:
        """POST body and return (payload, HTTP status, request id) of a 2xx JSON answer;
        raise the classified ProviderError for anything else. With files (a list of
        (field, (filename, bytes, MIME type))), body and files go as multipart/form-data."""
        headers = {**self.headers(), "Idempotency-Key": idempotency_key}
        sent = {"data": list(body.items()), "files": files} if files else {"json": body}
        # Sent, a call that times out may well have made and billed the picture (the retry
        # sends the same key); a 200 is sent once the picture is made, so a body that then
        # breaks off has most likely been charged for.
        answer = self.client.send(
            "POST", f"{self.base_url}{path}", deadline=deadline, headers=headers, paid=True, **sent
        )
        request_id = answer.headers.get("x-request-id", "")
        payload = answer.payload
        if answer.status >= 400:
            error = classify(
                answer.status,
                payload,
                answer.headers,
                content=answer.content,
                model=getattr(self, "model", ""),
                service=self.service,
                settings_named={"model": getattr(self, "model_setting", "STUDIO_IMAGE_MODEL")},
            )
            error.message = self.client.safe(error.message)
            raise error
        if not isinstance(payload, dict):
            raise Transient(
                f"{self.service.capitalize()} sent a broken answer (invalid JSON).",
                http_status=answer.status,
                request_id=request_id,
                maybe_paid=True,
            )
        in_band = classify_in_band(
            payload, status=answer.status, request_id=request_id, service=self.service
        )
        if in_band is not None:
            in_band.message = self.client.safe(in_band.message)
            raise in_band
        return payload, answer.status, request_id


class OpenAIProvider(OpenAICompatible):
    """Images: POST {base}/images/generations."""

    name = "openai"
    service = "the image service"
    model_setting = "STUDIO_IMAGE_MODEL"

    def __init__(self):
        super().__init__()
        self.model = settings.STUDIO_IMAGE_MODEL

    @property
    def listed(self) -> catalogue.Model:
        return catalogue.model(self.name, self.model)

    @property
    def max_references(self) -> int:
        """How many reference pictures one call takes, as the catalogue says (16 through
        /images/edits for the GPT image models, none for dall-e); a model it does not
        list (a compatible endpoint's own) gets what /images/edits takes."""
        return self.listed.references if self.listed.known else MAX_EDIT_IMAGES

    def size_problem(self, size: str) -> str:
        """Return the rule of the model's sizes that size breaks ("" when it keeps them)."""
        return self.listed.size_problem(size) if self.listed.known else ""

    def generate(self, request: ImageRequest) -> GeneratedImage:
        if problem := self.size_problem(request.size):
            # Refused before a call: the service would refuse it too, and every page the same.
            raise ConfigError(problem, setting="STUDIO_IMAGE_SIZE", sent=False)
        references = prepared(request, limit=self.max_references, max_side=REFERENCE_SIDE)
        prompt = named_prompt(request.prompt, [reference for reference, _ in references])
        body = {"model": self.model, "prompt": prompt, "size": request.size, "n": 1}
        if self.listed.response_format:
            body["response_format"] = self.listed.response_format
        files = None
        path = "/images/generations"
        if references:
            # POST /images/edits, multipart: one image[] part per picture, in order (the
            # style reference first), as the official SDK sends a list of images.
            path = "/images/edits"
            files = [
                ("image[]", (picture.filename, picture.content, picture.mime_type))
                for _, picture in references
            ]
            if takes_input_fidelity(self.model):
                body["input_fidelity"] = "high"
        deadline = self.deadline()  # the whole exchange, download included
        payload, status, request_id = self.post_json(
            path,
            body,
            idempotency_key=request.idempotency_key,
            deadline=deadline,
            files=files,
        )
        return received_image(
            self._image_bytes(payload, status, request_id, deadline),
            model=self.model,
            http_status=status,
            request_id=request_id,
            usage=payload.get("usage"),
        )

    def check(self) -> list[Check]:
        """Return what the free model look-up (GET /models/{model}) says of the key and the
        model."""

        def by_status(status, headers, body) -> ProviderError:
            error = classify(status, as_json(body), headers)
            if status == 404:
                return ConfigError(error.message, setting="STUDIO_IMAGE_MODEL")
            return error

        return check_get(
            self.client,
            f"{self.base_url}/models/{self.model}",
            headers=self.headers,
            classify=by_status,
            what=("key", "model"),
        )

    def _image_bytes(self, payload: dict, status: int, request_id: str, deadline) -> bytes:
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
                    maybe_paid=True,
                ) from exc
        if url := item.get("url"):
            return self.client.download(url, deadline=deadline, request_id=request_id)
        raise Transient(
            "The image service answered without an image.",
            http_status=status,
            request_id=request_id,
        )


STORY_INSTRUCTIONS = (
    "You write picture books and storyboards. Answer with JSON only, in the form "
    '{"pages": [{"text": "...", "prompt": "..."}]}: one object per page, in order, where '
    '"text" is what the page says and "prompt" describes its illustration.'
)


class OpenAITextProvider(OpenAICompatible):
    """Stories: POST {base}/chat/completions, asking for JSON pages."""

    name = "openai"
    service = "the text service"
    model_setting = "STUDIO_TEXT_MODEL"

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
            "/chat/completions",
            body,
            idempotency_key=request.idempotency_key,
            deadline=self.deadline(),
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
