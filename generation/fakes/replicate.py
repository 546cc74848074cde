"""A loopback service speaking the Replicate predictions protocol, for tests and demos.

POST /v1/models/{owner}/{name}/predictions (or /v1/predictions with a version) answers 201
with a prediction that goes `starting` → `processing` → `succeeded` after a number of
polls, or `failed` / `canceled` on demand. A clip model's output is a URL to an animated
WebP, an image model's a list with one PNG URL; both are served here (and can expire).
With `Prefer: wait`, a prediction that needs no poll comes back finished from the create.
Create can fail with the real problem+json bodies: 402 insufficient credit, 429 throttled,
401, 404 unknown model, 422 invalid input, 503. It also serves the free lookups
check_services uses: GET /v1/account and GET /v1/models/{owner}/{name} (the upscaler's too).

As strict as the service: no `Authorization: Bearer <token>` → 401; a create that is not a
JSON object with an `input` object (or, on /v1/predictions, without a `version`) → 422; an
image model without a prompt or with an aspect ratio it does not know → 422; the upscaler
(nightmareai/real-esrgan, by version) without an `image`, with one that is not a URI of a
picture, or with a `scale` outside 0 to 10 → 422.
"""

import base64
import hashlib
import hmac
import io
import json
import os
import re
import threading
import time
import uuid
from collections import Counter, deque

from PIL import Image

from .base import FakeHandler, LoopbackServer, WebhookSender
from .openai import png_bytes

PROBLEMS = {
    "402": (
        402,
        {
            "title": "Insufficient credit",
            "status": 402,
            "detail": "You have insufficient credit to run this model. Go to "
            "https://replicate.com/account/billing#billing to purchase credit.",
        },
        {},
    ),
    "429": (
        429,
        {"detail": "Request was throttled. Your rate limit resets in ~30s.", "status": 429},
        {},
    ),
    "401": (
        401,
        {"title": "Unauthenticated", "detail": "You did not pass a valid token.", "status": 401},
        {},
    ),
    "503": (503, {"title": "Service unavailable", "detail": "Try again.", "status": 503}, {}),
}

FLAGGED = (
    "The input or output was flagged as sensitive. Please try again with different inputs. (E005)"
)
# flux-schnell's aspect_ratio choices (its input schema on replicate.com).
ASPECT_RATIOS = {"1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21"}
# Known models and what they make.
MODELS = {
    "minimax/video-01": "video",
    "black-forest-labs/flux-schnell": "image",
    "black-forest-labs/flux-dev": "image",
    "black-forest-labs/flux-kontext-pro": "image",
    "black-forest-labs/flux-kontext-max": "image",
    "black-forest-labs/flux-2-pro": "image",
    "black-forest-labs/flux-2-flex": "image",
}
# Models whose schema takes one input picture (`input_image`, a URI) and answers one URL.
KONTEXT = {"black-forest-labs/flux-kontext-pro", "black-forest-labs/flux-kontext-max"}
KONTEXT_RATIOS = ASPECT_RATIOS | {"match_input_image", "2:1", "1:2"}
# FLUX.2 takes a list of input pictures (`input_images`: at most 8 for [pro], 10 for [flex],
# jpeg, png, gif or webp) and answers one URL (their API pages on replicate.com).
FLUX2 = {"black-forest-labs/flux-2-pro": 8, "black-forest-labs/flux-2-flex": 10}
FLUX2_RATIOS = ASPECT_RATIOS | {"match_input_image", "custom"}
ONE_URL = KONTEXT | set(FLUX2)
# Community upscalers run by version on POST /v1/predictions ("owner/name:version" or the
# bare version id). Real-ESRGAN's input schema: image (a URI, required), scale (a number,
# 0 to 10, default 4), face_enhance (a boolean); its output one URI (its version's API
# page on replicate.com). Its output here is the input resized ×scale (Lanczos, not a GAN).
UPSCALERS = {
    "nightmareai/real-esrgan": "42fed1c4974146d4d2414e2be2c5277c7fcf05fcc3a73abf41610695738c1d7b"
}
UPSCALER_VERSIONS = {version: name for name, version in UPSCALERS.items()}
DATA_URI = re.compile(r"data:(image/(?:png|jpeg|webp|gif));base64,(.*)", re.DOTALL)
PILLOW_FORMATS = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/webp": "WEBP",
    "image/gif": "GIF",
}


def invalid_input(field: str, detail: str):
    detail = f"- input.{field}: {detail}"
    return problem(
        422,
        "Input validation failed",
        detail,
        invalid_fields=[{"type": "format", "field": f"input.{field}", "description": detail}],
    )


def check_input_image(inputs: dict):
    """Return the 422 a FLUX Kontext model answers a bad input picture with, or None."""
    value = inputs.get("input_image")
    if value is None:
        return None
    if not isinstance(value, str):
        return invalid_input("input_image", "Invalid type. Expected: string")
    if value.startswith(("https://", "http://")):
        return None
    match = DATA_URI.fullmatch(value)
    if match is None:
        return invalid_input("input_image", "Does not match format 'uri'")
    try:
        data = base64.b64decode(match.group(2), validate=True)
        with Image.open(io.BytesIO(data)) as picture:
            picture.verify()
            found = picture.format
    except Exception:  # noqa: BLE001 - bad base64 or bytes that are no picture
        found = None
    if found != PILLOW_FORMATS[match.group(1)]:
        return invalid_input("input_image", "cannot identify image file")
    if int(inputs.get("safety_tolerance", 2)) > 2:
        return invalid_input(
            "safety_tolerance", "safety_tolerance must be at most 2 with an input image"
        )
    return None


def check_input_images(inputs: dict, most: int):
    """Return the 422 a FLUX.2 model answers a bad `input_images` list with, or None."""
    values = inputs.get("input_images", [])
    if not isinstance(values, list):
        return invalid_input("input_images", "Invalid type. Expected: array")
    if len(values) > most:
        return invalid_input("input_images", f"Array must have at most {most} items")
    for value in values:
        bad = check_input_image({"input_image": value})
        if bad is not None:
            return invalid_input("input_images", "cannot identify image file")
    return None


def describe_input_image(inputs: dict) -> dict | None:
    """Return what a well-formed data URI input picture is: MIME type, format, size, bytes."""
    match = DATA_URI.fullmatch(str(inputs.get("input_image") or ""))
    if match is None:
        return None
    data = base64.b64decode(match.group(2))
    with Image.open(io.BytesIO(data)) as picture:
        return {
            "mime_type": match.group(1),
            "format": picture.format,
            "size": picture.size,
            "bytes": data,
        }


def upscaler_of(version: object) -> str | None:
    """Return the upscaler a create's `version` names ("owner/name:version" or the bare
    version id), or None."""
    if not isinstance(version, str):
        return None
    name, _, rest = version.rpartition(":")
    found = UPSCALER_VERSIONS.get(rest or version)
    return found if found and (not name or name == found) else None


def check_upscale_input(inputs: dict):
    """Return the 422 Real-ESRGAN's schema gives a bad input, or None."""
    if "image" not in inputs:
        return problem(422, "Input validation failed", "- input: image is required")
    bad = check_input_image({"input_image": inputs["image"]})
    if bad is not None:
        detail = bad[1]["detail"].replace("input.input_image", "input.image")
        return invalid_input("image", detail.split(": ", 1)[-1])
    scale = inputs.get("scale", 4)
    if isinstance(scale, bool) or not isinstance(scale, int | float):
        return invalid_input("scale", "Invalid type. Expected: number")
    if not 0 <= scale <= 10:
        return invalid_input("scale", "Must be less than or equal to 10")
    if not isinstance(inputs.get("face_enhance", False), bool):
        return invalid_input("face_enhance", "Invalid type. Expected: boolean")
    return None


def upscaled_png(inputs: dict) -> bytes:
    """Return the fake's upscale of the input picture: its pixels ×scale, as a PNG."""
    match = DATA_URI.fullmatch(inputs["image"])
    if match is None:  # an https URL: the fake fetches nothing
        return png_bytes()
    with Image.open(io.BytesIO(base64.b64decode(match.group(2)))) as picture:
        scale = inputs.get("scale", 4)
        size = (round(picture.width * scale), round(picture.height * scale))
        bigger = picture.convert("RGB").resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    bigger.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def animated_webp(frames: int = 4, side: int = 64) -> bytes:
    images = [Image.new("RGB", (side, side), (40 * n, 120, 200 - 30 * n)) for n in range(frames)]
    buffer = io.BytesIO()
    images[0].save(
        buffer, format="WEBP", save_all=True, append_images=images[1:], duration=100, loop=0
    )
    return buffer.getvalue()


def problem(status: int, title: str, detail: str, **extra) -> tuple[int, dict, dict]:
    return status, {"title": title, "detail": detail, "status": status, **extra}, {}


def prefer_wait(prefer: str) -> float:
    """Return the seconds `Prefer: wait[=N]` asks the create to be held (60 without N)."""
    _, _, seconds = prefer.partition("=")
    return float(seconds) if seconds.strip().isdigit() else 60.0


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """Return a Standard Webhooks signature header value ("v1,<base64>") of a delivery,
    under a `whsec_…` secret, as Replicate signs."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


class FakePredictionService(WebhookSender, LoopbackServer):
    path_prefix = "/v1"
    transient_reply = "503"
    out_of_credits_reply = "402"  # "Insufficient credit"

    def __init__(self, port: int = 0):
        self.creates = 0
        self.polls: Counter = Counter()
        self.create_script: deque[str] = deque()  # replies to the next creates, then "ok"
        # How predictions end: succeeded, failed, canceled, or flagged (failed with E005).
        self.outcome = "succeeded"
        # Polls a prediction answers "starting"/"processing" before it ends; 0: it ends
        # before the first (and a create with Prefer: wait answers it finished).
        self.polls_needed = 3
        self.finish = threading.Event()  # when polls_needed is None, end only once set
        self.predictions: dict[str, dict] = {}
        self.canceled: list[str] = []  # predictions canceled through the cancel endpoint
        self.idempotency_keys: list[str] = []  # the Idempotency-Key of every create
        self.prefer: list[str] = []  # the Prefer header of every create ("" without)
        self.inputs: list[dict] = []  # the input of every create
        # The input picture of every create (a data URI described), or None.
        self.input_images: list[dict | None] = []
        self.output = animated_webp()  # a clip model's output
        self.image = png_bytes()  # an image model's output
        self.files_expired = False  # output URLs answer 404 (outputs are deleted after 1 h)
        self.files_expire_next = 0  # … or only the next N downloads do
        self.valid_tokens: set[str] | None = None  # None accepts any bearer token
        self.models = dict(MODELS)
        # Webhooks (a create with `webhook`): the prediction ends after `latency` seconds
        # by itself and the fake POSTs it, signed with this secret (Standard Webhooks), to
        # the URL; with `webhook_events_filter` holding more than "completed", a "start"
        # delivery goes first. The bad days are WebhookSender's knobs.
        self.webhook_secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
        self.webhook_requests: list[dict] = []  # {"webhook", "filter"} of every create
        # The prediction ends and its deliveries are sent (and answered) before the
        # create's own answer goes out: a service faster than the studio reads its answers.
        self.webhook_before_answer = False
        self.init_webhooks()
        super().__init__(port)

    def prediction_body(self, prediction_id: str, status: str) -> dict:
        """Return the prediction object as GET /v1/predictions/{id} (and a webhook) has it."""
        base = self.url
        files = self.links + self.path_prefix
        prediction = self.predictions[prediction_id]
        image = prediction["kind"] == "image"
        body = {
            "id": prediction_id,
            "model": "black-forest-labs/flux-schnell" if image else "minimax/video-01",
            "status": status,
            "input": {},
            "output": None,
            "error": None,
            "logs": "",
            "urls": {
                "get": f"{base}/predictions/{prediction_id}",
                "cancel": f"{base}/predictions/{prediction_id}/cancel",
            },
        }
        if prediction["kind"] == "upscale":
            body["model"] = prediction["model"]
        if status == "succeeded":
            if prediction["kind"] == "upscale" or prediction.get("model") in ONE_URL:
                body["output"] = f"{files}/files/{prediction_id}-0.png"  # one URL
            elif image:
                body["output"] = [f"{files}/files/{prediction_id}-0.png"]
            else:
                body["output"] = f"{files}/files/{prediction_id}.webp"
        if status == "failed":
            body["error"] = FLAGGED if prediction.get("flagged") else "CUDA out of memory"
        return body

    def end(self, prediction_id: str) -> str:
        """End the prediction the way the service is set to (one already ended keeps its
        status); return its status."""
        with self._lock:
            prediction = self.predictions[prediction_id]
            if prediction["status"] not in ("succeeded", "failed", "canceled"):
                prediction["status"] = "failed" if self.outcome == "flagged" else self.outcome
                prediction["flagged"] = self.outcome == "flagged"
                prediction["ended"] = time.monotonic()
            return prediction["status"]

    def signed(self, status: str, body: dict) -> tuple:
        """Return one delivery (id, status, body, headers), signed now."""
        raw = json.dumps(body).encode()
        webhook_id = "msg_" + uuid.uuid4().hex
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self.webhook_secret, webhook_id, timestamp, raw),
        }
        return webhook_id, status, raw, headers

    def run_with_webhook(self, prediction_id: str, url: str, events: list) -> None:
        """The prediction runs for `latency` seconds (unless held), ends, and calls back."""

        def run():
            self.wait_if_held()
            if self._shutdown.is_set():
                return
            status = self.end(prediction_id)

            def deliveries():
                sent = []
                if "start" in events:
                    sent.append(
                        self.signed("processing", self.prediction_body(prediction_id, "processing"))
                    )
                final = self.signed(status, self.prediction_body(prediction_id, status))
                sent.append(final)
                if self.webhook_out_of_order:
                    # An earlier state's delivery arriving after the final one.
                    sent.append(
                        self.signed("processing", self.prediction_body(prediction_id, "processing"))
                    )
                return sent

            self.after_end(prediction_id, url, deliveries)

        if self.webhook_before_answer:
            run()
            for sender in list(self._webhook_threads):
                sender.join(timeout=30)
            return
        threading.Thread(target=run, daemon=True).start()

    def ripe(self, prediction_id: str) -> bool:
        """Whether the prediction has run for `latency` seconds (a picture takes time)."""
        started = self.predictions[prediction_id]["created"]
        return time.monotonic() - started >= self.latency

    class Handler(FakeHandler):
        def _token_problem(self):
            auth = self.headers.get("Authorization", "")
            token = auth.removeprefix("Bearer ").strip()
            if not auth.startswith("Bearer ") or not token:
                return problem(401, "Unauthenticated", "You did not pass an authentication token")
            valid = self.service.valid_tokens
            if valid is not None and token not in valid:
                return PROBLEMS["401"]
            return None

        def _problem(self, reply):
            status, body, headers = reply
            self.send_json(status, body, headers, content_type="application/problem+json")

        def do_POST(self):
            service = self.service
            raw = self.read_body()
            parts = self.path.strip("/").split("/")
            if (bad := self._token_problem()) is not None:
                return self._problem(bad)
            if parts[:2] == ["v1", "predictions"] and len(parts) == 4 and parts[3] == "cancel":
                return self._cancel(parts[2])
            if not self.path.endswith("/predictions"):
                return self._problem(problem(404, "Not found", "Not found."))
            model = None
            if parts[:2] == ["v1", "models"] and len(parts) == 5:
                model = f"{parts[2]}/{parts[3]}"
                if model not in service.models:
                    return self._problem(
                        problem(404, "Not found", "The requested model could not be found.")
                    )
            elif parts != ["v1", "predictions"]:
                return self._problem(problem(404, "Not found", "Not found."))
            if (bad := self._invalid(raw, model)) is not None:
                return self._problem(bad)
            body = json.loads(raw)
            webhook = body.get("webhook")
            events = body.get("webhook_events_filter") or ["start", "output", "logs", "completed"]
            if webhook is not None and not (
                isinstance(webhook, str) and webhook.startswith(("http://", "https://"))
            ):
                return self._problem(invalid_input("webhook", "Does not match format 'uri'"))
            with service._lock:
                service.idempotency_keys.append(self.headers.get("Idempotency-Key", ""))
                service.prefer.append(self.headers.get("Prefer", ""))
                service.webhook_requests.append({"webhook": webhook, "filter": events})
                service.inputs.append(body["input"])
                service.input_images.append(describe_input_image(service.inputs[-1]))
                reply = service.turn(
                    service.create_script.popleft() if service.create_script else "ok"
                )
                if reply != "ok":
                    return self._problem(PROBLEMS[reply])
                service.creates += 1
                prediction_id = uuid.uuid4().hex[:20]
                kind = service.models.get(model or "", "video")
                upscaler = upscaler_of(body.get("version")) if model is None else None
                service.predictions[prediction_id] = {
                    "status": "starting",
                    "kind": "upscale" if upscaler else kind,
                    "model": upscaler or model,
                    "created": time.monotonic(),
                }
                if upscaler:
                    service.predictions[prediction_id]["output"] = upscaled_png(body["input"])
            status = "starting"
            if webhook:
                service.run_with_webhook(prediction_id, webhook, events)
            prefer = self.headers.get("Prefer", "")
            if prefer.startswith("wait") and service.polls_needed == 0:
                # The service holds the create until the prediction ends, or for the
                # seconds asked, whichever comes first.
                if service.latency:
                    service._shutdown.wait(timeout=min(service.latency, prefer_wait(prefer)))
                if service.ripe(prediction_id):
                    status = self._end(prediction_id)
            self.send_json(201, self._prediction(prediction_id, status))

        def _invalid(self, raw: bytes, model: str | None):
            """Return the 422 problem the service gives a malformed create, or None."""
            try:
                body = json.loads(raw) if self.is_json() else None
            except ValueError:
                body = None
            if not isinstance(body, dict):
                return problem(422, "Input validation failed", "- (root): Invalid JSON body")
            if model is None and not body.get("version"):
                return problem(422, "Input validation failed", "- version: version is required")
            inputs = body.get("input")
            if not isinstance(inputs, dict):
                return problem(
                    422,
                    "Input validation failed",
                    "- input: Invalid type. Expected: object, given: null",
                )
            if model is None and upscaler_of(body.get("version")):
                return check_upscale_input(inputs)
            if self.service.models.get(model or "") == "image":
                if not str(inputs.get("prompt") or "").strip():
                    return problem(422, "Input validation failed", "- input: prompt is required")
                ratios = KONTEXT_RATIOS if model in KONTEXT else ASPECT_RATIOS
                if model in KONTEXT and (bad := check_input_image(inputs)) is not None:
                    return bad
                if model in FLUX2:
                    ratios = FLUX2_RATIOS
                    if (bad := check_input_images(inputs, FLUX2[model])) is not None:
                        return bad
                ratio = inputs.get("aspect_ratio")
                if ratio is not None and ratio not in ratios:
                    detail = (
                        "- input.aspect_ratio: aspect_ratio must be one of the following: "
                        + ", ".join(f'"{r}"' for r in sorted(ratios))
                    )
                    return problem(
                        422,
                        "Input validation failed",
                        detail,
                        invalid_fields=[
                            {"type": "enum", "field": "input.aspect_ratio", "description": detail}
                        ],
                    )
            return None

        def do_GET(self):
            service = self.service
            parts = self.path.strip("/").split("/")
            if parts[:2] == ["v1", "files"]:
                with service._lock:
                    expired = service.files_expired or service.files_expire_next > 0
                    service.files_expire_next = max(0, service.files_expire_next - 1)
                if expired:
                    return self.send_bytes(404, b"Not found", "text/plain")
                if self.path.endswith(".png"):
                    name = parts[-1].removesuffix("-0.png")
                    output = service.predictions.get(name, {}).get("output")
                    return self.send_bytes(200, output or service.image, "image/png")
                return self.send_bytes(200, service.output, "image/webp")
            if (bad := self._token_problem()) is not None:
                return self._problem(bad)
            if parts == ["v1", "account"]:
                account = {"type": "user", "username": "studio", "name": "Studio"}
                return self.send_json(200, account)
            if parts[:2] == ["v1", "models"] and len(parts) == 4:
                return self._model(f"{parts[2]}/{parts[3]}")
            if parts[:2] != ["v1", "predictions"] or len(parts) != 3:
                return self._problem(problem(404, "Not found", "Not found."))
            prediction_id = parts[2]
            with service._lock:
                if prediction_id not in service.predictions:
                    return self._problem(problem(404, "Not found", "Not found."))
                service.polls[prediction_id] += 1
                polls = service.polls[prediction_id]
                state = service.predictions[prediction_id]["status"]
                if state in ("canceled", "succeeded", "failed"):
                    return self.send_json(200, self._prediction(prediction_id, state))
            needed = service.polls_needed
            done = service.finish.is_set() if needed is None else polls > needed
            done = done and service.ripe(prediction_id)
            if not done:
                state = "starting" if polls == 1 else "processing"
                return self.send_json(200, self._prediction(prediction_id, state))
            self.send_json(200, self._prediction(prediction_id, self._end(prediction_id)))

        def _end(self, prediction_id: str) -> str:
            """End the prediction the way the service is set to; return its status."""
            return self.service.end(prediction_id)

        def _model(self, model: str):
            if model not in self.service.models and model not in UPSCALERS:
                return self._problem(
                    problem(404, "Not found", "The requested model could not be found.")
                )
            owner, name = model.split("/")
            latest = UPSCALERS.get(model) or uuid.uuid5(uuid.NAMESPACE_URL, model).hex * 2
            self.send_json(
                200,
                {
                    "url": f"https://replicate.com/{model}",
                    "owner": owner,
                    "name": name,
                    "visibility": "public",
                    "latest_version": {"id": latest},
                },
            )

        def _cancel(self, prediction_id: str):
            """POST /v1/predictions/{id}/cancel: the prediction ends as canceled (one
            that already ended keeps its status)."""
            service = self.service
            with service._lock:
                prediction = service.predictions.get(prediction_id)
                if prediction is None:
                    return self._problem(problem(404, "Not found", "Not found."))
                if prediction["status"] not in ("succeeded", "failed", "canceled"):
                    prediction["status"] = "canceled"
                    service.canceled.append(prediction_id)
                status = prediction["status"]
            self.send_json(200, self._prediction(prediction_id, status))

        def _prediction(self, prediction_id: str, status: str) -> dict:
            return self.service.prediction_body(prediction_id, status)
