"""Pictures from Replicate (the catalogue's Replicate default unless
STUDIO_REPLICATE_IMAGE_MODEL names another), in the same asynchronous shape as clips:
create(request) → prediction id, which the engine stores before the first poll; wait(id) →
the downloaded picture; cancel(id).

With webhooks (STUDIO_PUBLIC_URL and REPLICATE_WEBHOOK_SECRET set, a model the catalogue
says calls back), the create names the studio's webhook and answers at once: the
prediction's end arrives there, and a webhook that never comes is polled by the sweep.
Without them the create asks the service to hold the answer (`Prefer: wait=N`, N ≤ 60): a
fast model usually answers finished, and that finished prediction is kept for wait(), which
then polls nothing. Otherwise wait() polls GET /v1/predictions/{id}. A prediction that
failed because its input or output was flagged as sensitive (E005) is this prompt's
rejection; any other failure starts over with a new prediction. Outputs are deleted after
an hour: they are downloaded at once, within the same deadline.
"""

import re
import time

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
)
from .checks import Check, check_get, model_after_key, not_checked
from .gemini import aspect_ratio
from .http import (
    MAX_DOWNLOAD_BYTES,
    POLL_FIRST,
    Client,
    Deadline,
    as_json,
    foreign_answer,
    parse_retry_after,
    pause_polling,
    polling,
    received_image,
    sentence,
)
from .references import compose_sheet, named_prompt, prepared, sheet_prompt
from .replicate import PredictionFailed, PredictionGone, ReplicateAPI

SERVICE = "the image service (Replicate)"
MODEL_SETTING = "STUDIO_REPLICATE_IMAGE_MODEL"
MAX_PREFER_WAIT = 60  # seconds: the most Replicate holds a create (Prefer: wait=1..60)
FINISHED = {"succeeded", "failed", "canceled", "aborted"}
# Which models take reference pictures, and in which input, is the catalogue's word: a model
# with one input picture (the FLUX Kontext models' `input_image`) gets the page's references
# as one composed, labelled sheet (a data URL, kept under 1 MB as Replicate recommends for
# data URLs); one with a list (FLUX.2's `input_images`) gets each picture, named in order in
# the prompt. Without references they draw from the prompt alone.
SHEET_SIDE = 1024
DATA_URL_BYTES = 1024 * 1024
# The output (or input) was flagged by the safety checker: E005.
_FLAGGED = re.compile(r"flagged as sensitive|\bE005\b|nsfw", re.IGNORECASE)


def classify(status: int, headers, body: object) -> ProviderError:
    """Return the error class for a problem+json answer to a picture's prediction."""
    payload = as_json(body)
    payload = payload if isinstance(payload, dict) else {}
    detail = str(payload.get("detail") or payload.get("title") or f"HTTP {status}")
    details = {
        "http_status": status,
        "code": str(payload.get("title") or "")[:80],
        "request_id": headers.get("x-request-id", ""),
    }
    if (
        not payload
        and status != 404
        and (stray := foreign_answer(status, headers, body, service=SERVICE, **details))
    ):
        return stray
    if status == 402:
        return OutOfCredits(detail, **details)
    if status in (401, 403):
        return AuthFailed(detail, **details)
    if status == 429:
        retry_after = parse_retry_after(headers)
        if retry_after is None and (match := re.search(r"~?(\d+)\s*s\b", detail)):
            retry_after = float(match.group(1))  # "Your rate limit resets in ~30s."
        return RateLimited(detail, retry_after=retry_after, **details)
    if status == 404:
        # Create answers 404 for a model (or version) it does not know.
        return ConfigError(detail, setting=MODEL_SETTING, **details)
    if status == 408 or status >= 500:
        return Transient(detail, **details)
    if status == 422:
        fields = " ".join(
            str(field.get("field") or "")
            for field in payload.get("invalid_fields") or []
            if isinstance(field, dict)
        )
        about = f"{fields} {detail}"
        if re.search(r"input\.aspect_ratio|aspect_ratio|width|height|megapixels", about):
            return ConfigError(detail, setting="STUDIO_IMAGE_SIZE", **details)
        if re.search(r"input_image", about):
            # A reference picture the model could not take: the pages that send it fail,
            # not the account.
            return Rejected(detail, **details)
        if re.search(r"input\.prompt|prompt", about) or not re.search(r"input\.\w|version", about):
            return Rejected(detail, **details)
        return ConfigError(detail, setting=MODEL_SETTING, **details)
    return Rejected(detail, **details)


class ReplicateImageProvider(ReplicateAPI):
    service = SERVICE
    label = "Replicate"
    model_setting = MODEL_SETTING
    # How its answers are classified (the upscaler names its own setting and input).
    classify = staticmethod(classify)
    download_limit = MAX_DOWNLOAD_BYTES  # bytes of one picture's download

    def __init__(self):
        super().__init__(settings.STUDIO_REPLICATE_IMAGE_MODEL)
        self.client = Client(
            service=SERVICE, seconds=self.seconds, secrets=(self.token,), service_url=self.base_url
        )
        self.client.session = self.session

    def generate(self, request: ImageRequest, *, sleep=None) -> GeneratedImage:
        """Create and wait in one call (for callers that need not store the id)."""
        return self.wait(self.create(request), sleep=sleep or time.sleep)

    @property
    def listed(self) -> catalogue.Model:
        return catalogue.model(self.name, self.model)

    @property
    def input_image(self) -> str:
        """The input that takes the references in the model's schema ("" when none)."""
        listed = self.listed
        return listed.input if listed.references_how in ("sheet", "urls") else ""

    @property
    def max_references(self) -> int:
        """How many references one call takes: a model with one input picture gets up to
        STUDIO_MAX_REFERENCES composed into one labelled sheet, one with a list as many as
        it takes (at most STUDIO_MAX_REFERENCES); flux-schnell, flux-dev and models named by
        version take none."""
        if not self.input_image:
            return 0
        return min(self.listed.references, int(settings.STUDIO_MAX_REFERENCES))

    def inputs(self, request: ImageRequest) -> dict:
        """Return the prediction's input: the model's own fields, and for a model that takes
        reference pictures, the page's references (one labelled sheet, or each picture)."""
        references = request.references[: self.max_references]
        if not self.input_image:
            return {
                "prompt": request.prompt,
                "aspect_ratio": aspect_ratio(request.size),
                "num_outputs": 1,
                "output_format": "png",
                "seed": request.seed,
            }
        inputs = {
            "prompt": sheet_prompt(request.prompt, references),
            "aspect_ratio": aspect_ratio(request.size),
            "output_format": "png",
            "seed": request.seed,
        }
        if references and self.listed.references_how == "urls":
            pictures = prepared(request, limit=len(references), max_side=SHEET_SIDE)
            inputs["prompt"] = named_prompt(request.prompt, references)
            inputs[self.input_image] = [picture.data_url() for _, picture in pictures]
        elif references:
            sheet = compose_sheet(references, max_side=SHEET_SIDE, max_bytes=DATA_URL_BYTES)
            inputs[self.input_image] = sheet.data_url()
        return inputs

    def create(self, request: ImageRequest) -> str:
        """Start a prediction; return its id (a finished one is kept for wait())."""
        self.headers()
        inputs = self.inputs(request)
        path, body = self.create_path(inputs)
        deadline = Deadline(self.seconds, service=self.service)
        headers = {"Idempotency-Key": request.idempotency_key}
        if not self.webhook:
            # Held no longer than the call's deadline allows (the read waits a little
            # longer). With a webhook, nobody waits: the create answers at once.
            hold = max(1, min(MAX_PREFER_WAIT, int(deadline.remaining() - 1)))
            headers["Prefer"] = f"wait={hold}"
        payload, status, _ = self._json(
            "POST",
            path,
            json=body,
            headers=headers,
            deadline=deadline,
            classify=self.classify,
        )
        prediction_id = payload.get("id")
        if not isinstance(prediction_id, str) or not prediction_id:
            raise Transient(f"{sentence(SERVICE)} answered without a prediction id.")
        if payload.get("status") in FINISHED:
            self._finished[prediction_id] = {**payload, "_http_status": status}
        return prediction_id

    def wait(
        self, prediction_id: str, *, sleep, still_wanted=lambda: True, progress=None
    ) -> GeneratedImage:
        """Follow the prediction until it ends (within one call's deadline); return the
        downloaded picture. A prediction still running at the deadline raises Transient:
        the next attempt polls the same id again."""
        deadline = Deadline(self.seconds, service=self.service)
        payload = self._finished.pop(prediction_id, None)
        status_code = payload.pop("_http_status", 201) if payload else 0
        delay = POLL_FIRST
        headers: dict = {}
        while payload is None or payload.get("status") not in FINISHED:
            if payload is not None:
                if progress is not None:
                    progress("Starting" if payload.get("status") == "starting" else "Generating")
                delay = pause_polling(
                    deadline,
                    delay,
                    sleep=sleep,
                    still_wanted=still_wanted,
                    request_id=prediction_id,
                    hint=parse_retry_after(headers),
                )
            with polling(deadline, request_id=prediction_id):
                payload, status_code, headers = self._json(
                    "GET",
                    f"/predictions/{prediction_id}",
                    deadline=deadline,
                    classify=self.classify,
                )
        return self._result(payload, status_code, prediction_id, deadline)

    def _result(self, payload: dict, status_code: int, prediction_id: str, deadline):
        details = {"http_status": status_code, "request_id": prediction_id}
        state = payload.get("status")
        if state == "failed":
            reason = str(payload.get("error") or "no reason given")
            if _FLAGGED.search(reason):
                raise Rejected(f"Replicate refused this prompt: {reason}", code="E005", **details)
            raise PredictionFailed(f"Replicate's prediction failed: {reason}", **details)
        if state == "aborted":
            raise StartOver("Replicate gave the prediction up before it started.", **details)
        if state == "canceled":
            raise Rejected("The prediction was canceled at Replicate.", **details)
        output = payload.get("output")
        url = output[0] if isinstance(output, list) and output else output
        if not isinstance(url, str) or not url:
            raise PredictionFailed("Replicate's prediction succeeded without an output.", **details)
        try:
            content = self.client.download(
                url, deadline=deadline, request_id=prediction_id, limit=self.download_limit
            )
        except Transient as error:
            if error.http_status == 404:
                raise PredictionGone(
                    "The picture expired before it could be downloaded.",
                    maybe_paid=True,
                    **details,
                ) from error
            raise
        return received_image(content, model=self.model, usage=payload.get("metrics"), **details)

    def check(self) -> list[Check]:
        """Return what Replicate's free look-ups say: the token (GET /account) and the model
        (GET /models/{owner}/{name})."""
        key = check_get(
            self.client,
            f"{self.base_url}/account",
            headers=self.headers,
            classify=self.classify,
            what=("key",),
        )
        return model_after_key(key, self._check_model)

    def _check_model(self) -> list[Check]:
        if "/" not in self.model or ":" in self.model:
            return [not_checked("model", "a version id, not a model name")]
        return check_get(
            self.client,
            f"{self.base_url}/models/{self.model}",
            headers=self.headers,
            classify=self.classify,
            what=("model",),
        )
