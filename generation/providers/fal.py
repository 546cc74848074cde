"""Pictures from the fal queue (the catalogue's fal default unless STUDIO_FAL_IMAGE_MODEL
names another), in the asynchronous shape of clips: create(request) → request id, stored
by the engine before the first poll; wait(id) → the downloaded picture; cancel(id).

Submit: POST {FAL_QUEUE_URL}/{model} with `Authorization: Key …` and `x-fal-no-retry: 1`
(the queue's own retries of 503/504 would run behind our back; retries stay ours). The
answer names `status_url`, `response_url` and `cancel_url`: they are used as given while this
process remembers them, and built the documented way ({queue}/{owner}/{app}/requests/{id},
without the model's subpath) by a worker that takes the job over. They carry the key, so a
named URL off FAL_QUEUE_URL's origin (scheme, host and port) is never used: the built one
is, and the key goes nowhere else. Status goes IN_QUEUE
(with `queue_position`, reported through `progress`) → IN_PROGRESS → COMPLETED; the
result (or the model's error) is then at `response_url`.

fal's errors: 403 "User is locked. Reason: Exhausted balance" is out of credits; 422 (a
model's `{"detail": [{loc, msg, type}]}`) is this prompt's rejection, unless it is about a
parameter other than the prompt; 5xx and the request errors of `X-Fal-Error-Type`
(request_timeout, runner_disconnected, …) are worth another try.
"""

import math
import re
import time
from dataclasses import dataclass

from django.conf import settings

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
    StartOver,
    Transient,
    account_key,
    parse_size,
)
from .checks import Check, check_get, not_checked
from .http import (
    POLL_FIRST,
    Client,
    as_json,
    decode_data_url,
    foreign_answer,
    parse_retry_after,
    pause_polling,
    polling,
    received_image,
    required_key,
    same_origin,
    says_out_of_credits,
    sentence,
)
from .references import compose_sheet, named_prompt, prepared, sheet_prompt
from .webhooks import webhook_url

SERVICE = "the image service (fal)"
MODEL_SETTING = "STUDIO_FAL_IMAGE_MODEL"
SIZE_FIELDS = {"image_size", "width", "height", "aspect_ratio"}
REFERENCE_SIDE = 1024
SHEET_BYTES = 1024 * 1024


# The aspect_ratio values an edit model takes when the catalogue lists none of its own (the
# FLUX Kontext endpoints' schema on fal.ai).
KONTEXT_RATIOS = ("21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21")


@dataclass(frozen=True)
class EditModel:
    field: str  # "image_urls" (each picture) or "image_url" (one composed sheet)
    text_model: str  # the sibling that draws from the prompt alone, for pages without any
    most: int  # the most pictures it is given
    ratios: tuple[str, ...] = KONTEXT_RATIOS  # the aspect_ratio values it takes
    size_field: str = "aspect_ratio"  # or "image_size" ({width, height}: FLUX.2)


def nearest_ratio(size: str, ratios: tuple[str, ...]) -> str:
    """Return the ratio ("W:H") nearest to a "WxH" size."""
    width, height = parse_size(size)
    wanted = math.log(width / height)

    def distance(ratio: str) -> float:
        w, h = (int(n) for n in ratio.split(":"))
        return abs(math.log(w / h) - wanted)

    return min(ratios, key=distance)


def edit_model(model: str) -> EditModel | None:
    """Return how a model takes reference pictures, as the catalogue says (their input
    schemas on fal.ai): nano-banana's edit endpoint, FLUX Kontext's multi endpoints and
    FLUX.2's edit take `image_urls`; FLUX Kontext [pro] and [max] take one `image_url`.
    None for a model that takes none."""
    listed = catalogue.model("fal", model)
    if listed.references_how not in ("urls", "sheet") or not listed.input:
        return None
    return EditModel(
        listed.input,
        listed.text_model,
        listed.references,
        listed.ratios or KONTEXT_RATIOS,
        listed.size_input or "aspect_ratio",
    )


def _detail_text(detail: object) -> str:
    if isinstance(detail, list):
        return "; ".join(
            str(item.get("msg") or item.get("type") or item)
            for item in detail
            if isinstance(item, dict)
        )
    return str(detail or "")


def classify(status: int, headers, body: object) -> ProviderError:
    """Return the error class for a non-2xx answer from the fal queue or a model."""
    payload = as_json(body)
    payload = payload if isinstance(payload, dict) else {}
    detail = payload.get("detail")
    error_type = str(headers.get("x-fal-error-type") or payload.get("error_type") or "")
    message = _detail_text(detail) or f"HTTP {status} from {SERVICE}"
    items = [item for item in detail if isinstance(item, dict)] if isinstance(detail, list) else []
    types = {str(item.get("type") or "") for item in items}
    details = {
        "http_status": status,
        "code": error_type or ",".join(sorted(types - {""})) or str(status),
        "request_id": headers.get("x-fal-request-id", ""),
    }
    if not payload and (stray := foreign_answer(status, headers, body, service=SERVICE, **details)):
        return stray
    if status == 402 or says_out_of_credits(message) or re.search(r"user is locked", message, re.I):
        # 403 "User is locked. Reason: Exhausted balance…" (it may last a while after a top-up)
        return OutOfCredits(message, **details)
    if status in (401, 403):
        return AuthFailed(message, **details)
    if status == 429:
        return RateLimited(message, retry_after=parse_retry_after(headers), **details)
    if error_type or status == 408 or status >= 500:
        return Transient(message, **details)
    if status == 404:
        return ConfigError(message, setting=MODEL_SETTING, **details)
    if status in (400, 422):
        if "content_policy_violation" in types:
            return Rejected(message, **details)
        named = {
            str(part) for item in items if isinstance(item.get("loc"), list) for part in item["loc"]
        }
        if named & {"image_url", "image_urls"}:
            # A reference picture the model could not take: the pages that send it fail,
            # not the account.
            return Rejected(message, **details)
        fields = {
            str(item["loc"][-1])
            for item in items
            if isinstance(item.get("loc"), list) and item["loc"] and item["loc"][-1] != "body"
        }
        if fields & SIZE_FIELDS:
            return ConfigError(message, setting="STUDIO_IMAGE_SIZE", **details)
        if fields - {"prompt"}:
            return ConfigError(message, setting=MODEL_SETTING, **details)
    return Rejected(message, **details)


class FalProvider:
    name = "fal"
    label = "fal"
    key_setting = "FAL_KEY"
    model_setting = MODEL_SETTING
    asynchronous = True

    def __init__(self):
        self.queue_url = settings.FAL_QUEUE_URL.rstrip("/")
        self.platform_url = settings.FAL_PLATFORM_URL.rstrip("/")
        self.key = settings.FAL_KEY
        self.model = settings.STUDIO_FAL_IMAGE_MODEL.strip("/")
        self.seconds = float(settings.STUDIO_PROVIDER_TIMEOUT)
        self.client = Client(
            service=SERVICE, seconds=self.seconds, secrets=(self.key,), service_url=self.queue_url
        )
        self._urls: dict[str, dict] = {}  # request id -> the URLs its submit answer named
        # Where fal calls when a request ends ("" without webhooks: polled).
        self.webhook = webhook_url(self.name, self.model)

    def finished(self, request_id: str) -> bool:
        """A queued request never comes back finished from its submit."""
        return False

    @property
    def account(self) -> str:
        return account_key(self.name, self.queue_url, self.key)

    def headers(self) -> dict:
        return {"Authorization": f"Key {required_key(self.key, self.key_setting)}"}

    def generate(self, request: ImageRequest, *, sleep=None) -> GeneratedImage:
        """Submit and wait in one call (for callers that need not store the id)."""
        return self.wait(self.create(request), sleep=sleep or time.sleep)

    @property
    def edits(self) -> EditModel | None:
        return edit_model(self.model)

    @property
    def max_references(self) -> int:
        """How many references one call takes: an edit model that takes `image_urls` takes
        each picture, one that takes a single `image_url` takes them composed into one
        labelled sheet (up to STUDIO_MAX_REFERENCES either way); text-to-image models such
        as flux/schnell take none."""
        if self.edits is None:
            return 0
        return min(self.edits.most, int(settings.STUDIO_MAX_REFERENCES))

    def submission(self, request: ImageRequest) -> tuple[str, dict]:
        """Return the model to submit to and the body: an edit model gets the page's
        references (data URLs); without references it is its text-to-image sibling."""
        width, height = parse_size(request.size)
        edits = self.edits
        if edits is None:
            return self.model, {
                "prompt": request.prompt,
                "image_size": {"width": width, "height": height},
                "num_images": 1,
                "seed": request.seed,
                "enable_safety_checker": True,
            }
        references = request.references[: self.max_references]
        body = {
            "prompt": request.prompt,
            "num_images": 1,
            "output_format": "png",
            "seed": request.seed,
        }
        if edits.size_field == "image_size":
            body["image_size"] = {"width": width, "height": height}
        else:
            body["aspect_ratio"] = nearest_ratio(request.size, edits.ratios)
        if not references:
            return edits.text_model, body
        if edits.field == "image_url":
            sheet = compose_sheet(references, max_side=REFERENCE_SIDE, max_bytes=SHEET_BYTES)
            body["prompt"] = sheet_prompt(request.prompt, references)
            body["image_url"] = sheet.data_url()
        else:
            pictures = prepared(request, limit=len(references), max_side=REFERENCE_SIDE)
            body["prompt"] = named_prompt(request.prompt, references)
            body["image_urls"] = [picture.data_url() for _, picture in pictures]
        return self.model, body

    def create(self, request: ImageRequest) -> str:
        """Submit the request to the queue; return its request id."""
        model, body = self.submission(request)
        answer = self.client.send(
            "POST",
            f"{self.queue_url}/{model}",
            deadline=self.client.deadline(),
            headers={**self.headers(), "x-fal-no-retry": "1"},
            # fal POSTs the request's end (its result, or its error) to this URL.
            params={"fal_webhook": self.webhook} if self.webhook else None,
            json=body,
            request_id_header="x-fal-request-id",
        )
        self.client.raise_for(answer, classify)
        payload = answer.json_object() or {}
        request_id = payload.get("request_id")
        if not isinstance(request_id, str) or not request_id:
            raise Transient(f"{sentence(SERVICE)} answered without a request id.")
        # The key goes with these: only those on the queue's own origin are kept.
        self._urls[request_id] = {
            key: payload[key]
            for key in ("status_url", "response_url", "cancel_url")
            if isinstance(payload.get(key), str) and same_origin(payload[key], self.queue_url)
        }
        return request_id

    def urls(self, request_id: str) -> dict:
        """Return the status, response and cancel URLs of a request: as its submit named
        them, or built the documented way (the app id without the model's subpath)."""
        app = "/".join(self.model.split("/")[:2])
        base = f"{self.queue_url}/{app}/requests/{request_id}"
        built = {
            "status_url": f"{base}/status",
            "response_url": base,
            "cancel_url": f"{base}/cancel",
        }
        return {**built, **self._urls.get(request_id, {})}

    def wait(
        self, request_id: str, *, sleep, still_wanted=lambda: True, progress=None
    ) -> GeneratedImage:
        """Poll the request until it is completed (within one call's deadline), then fetch
        and download its picture. A request still queued or running at the deadline raises
        Transient: the next attempt polls the same request again."""
        urls = self.urls(request_id)
        deadline = self.client.deadline()
        delay = POLL_FIRST
        while True:
            with polling(deadline, request_id=request_id):
                answer = self.client.send(
                    "GET", urls["status_url"], deadline=deadline, headers=self.headers()
                )
            if answer.status == 404:
                raise StartOver(
                    f"{sentence(SERVICE)} no longer knows this request.",
                    http_status=404,
                    request_id=request_id,
                )
            self.client.raise_for(answer, classify)
            status = answer.json_object() or {}
            state = status.get("status")
            if state == "COMPLETED":
                break
            if progress is not None:
                if state == "IN_QUEUE":
                    position = status.get("queue_position")
                    progress(
                        f"In queue (position {position})"
                        if isinstance(position, int)
                        else "In queue"
                    )
                else:
                    progress("Generating")
            delay = pause_polling(
                deadline, delay, sleep=sleep, still_wanted=still_wanted, request_id=request_id
            )
        return self._result(request_id, urls, deadline)

    def _result(self, request_id: str, urls: dict, deadline) -> GeneratedImage:
        answer = self.client.send(
            "GET", urls["response_url"], deadline=deadline, headers=self.headers(), paid=True
        )
        if answer.status == 404:
            raise StartOver(
                f"{sentence(SERVICE)} no longer has this request's result.",
                http_status=404,
                request_id=request_id,
            )
        self.client.raise_for(answer, classify)
        details = {"http_status": answer.status, "request_id": request_id}
        result = self.client.paid_object(answer, request_id=request_id)
        nsfw = result.get("has_nsfw_concepts")
        if isinstance(nsfw, list) and nsfw and nsfw[0] is True:
            # The safety checker blanked the picture: this prompt is refused (and billed).
            raise Rejected(
                "fal's safety checker flagged the picture as NSFW.",
                code="nsfw",
                maybe_paid=True,
                **details,
            )
        images = result.get("images")
        image = images[0] if isinstance(images, list) and images else {}
        url = image.get("url") if isinstance(image, dict) else None
        if not isinstance(url, str) or not url:
            raise Transient(
                f"{sentence(SERVICE)} completed without an image.", maybe_paid=True, **details
            )
        if url.startswith("data:"):
            content = decode_data_url(url, **details)
        else:
            content = self.client.download(url, deadline=deadline, request_id=request_id)
        return received_image(content, model=self.model, **details)

    def cancel(self, request_id: str) -> str:
        """Ask the queue to drop the request (PUT cancel_url); return what it says:
        CANCELLATION_REQUESTED, ALREADY_COMPLETED or NOT_FOUND."""
        answer = self.client.send(
            "PUT",
            self.urls(request_id)["cancel_url"],
            deadline=self.client.deadline(),
            headers=self.headers(),
        )
        said = (answer.json_object() or {}).get("status")
        if isinstance(said, str) and said:
            return said
        self.client.raise_for(answer, classify)
        return ""

    def check(self) -> list[Check]:
        """fal has no free call that proves a key works; the model is looked up in the
        Platform API's model search (GET /models?endpoint_id=…, free)."""
        key = not_checked("key", "fal has no free call that checks a key")
        model = check_get(
            self.client,
            f"{self.platform_url}/models",
            params={"endpoint_id": self.model},
            classify=classify,
            what=("model",),
            found=lambda payload: (
                any(
                    isinstance(item, dict) and item.get("endpoint_id") == self.model
                    for item in (payload or {}).get("models") or []
                )
                if isinstance(payload, dict)
                else False
            ),
        )
        return [key, *model]
