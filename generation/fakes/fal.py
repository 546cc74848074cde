"""A loopback fal queue (queue.fal.run) that answers like fal does.

POST /{model} submits (→ `request_id`, `status_url`, `response_url`, `cancel_url`,
`queue_position`); GET /{owner}/{app}/requests/{id}/status goes IN_QUEUE (with
`queue_position`, 202) → IN_PROGRESS (202) → COMPLETED (200); GET …/requests/{id} gives the
result (`images: [{url, width, height, content_type}]`, `has_nsfw_concepts`) or the model's
error; PUT …/cancel answers CANCELLATION_REQUESTED or ALREADY_COMPLETED. Failures on demand:
401, 403 "User is locked. Reason: Exhausted balance", 404 unknown app, 422 (content policy,
a bad prompt, a bad image_size), 500, and the request errors with `X-Fal-Error-Type`
(request_timeout 504, runner_disconnected 503). GET /platform/v1/models?endpoint_id= is the
Platform API's free model search.

As strict as fal: no `Authorization: Key …` (a Bearer token included) → 401; a body that is
not JSON → 422; no prompt → 422 `missing`; an image_size it does not take → 422.
"""

import base64
import hashlib
import io
import json
import re
import threading
import time
import uuid
from collections import Counter, deque
from urllib.parse import parse_qs, urlsplit

from PIL import Image

from .base import FakeHandler, LoopbackServer, WebhookSender
from .openai import png_bytes

PNG = png_bytes(colour=(60, 180, 120))
MODELS = {
    "fal-ai/flux/schnell",
    "fal-ai/flux/dev",
    "fal-ai/flux-pro/kontext",
    "fal-ai/flux-pro/kontext/text-to-image",
    "fal-ai/flux-pro/kontext/multi",
    "fal-ai/nano-banana",
    "fal-ai/nano-banana/edit",
    "fal-ai/flux-2-pro",
    "fal-ai/flux-2-pro/edit",
}
# Models that take input pictures, as their input schemas say: the field, whether it is
# required, the most pictures, and the aspect ratios they take.
KONTEXT_RATIOS = {"21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21"}
BANANA_RATIOS = {"21:9", "16:9", "3:2", "4:3", "5:4", "1:1", "4:5", "3:4", "2:3", "9:16"}
PICTURE_INPUTS = {
    "fal-ai/flux-pro/kontext": ("image_url", 1, KONTEXT_RATIOS),
    "fal-ai/flux-pro/kontext/multi": ("image_urls", 4, KONTEXT_RATIOS),
    "fal-ai/nano-banana/edit": ("image_urls", 10, BANANA_RATIOS),
    # FLUX.2 [pro] edit: `image_urls` and an `image_size` (no aspect_ratio).
    "fal-ai/flux-2-pro/edit": ("image_urls", 8, frozenset()),
}
RATIOS = {
    "fal-ai/flux-pro/kontext/text-to-image": KONTEXT_RATIOS,
    "fal-ai/nano-banana": BANANA_RATIOS,
    **{model: ratios for model, (_, _, ratios) in PICTURE_INPUTS.items()},
}
DATA_URI = re.compile(r"data:(image/(?:png|jpeg|webp|gif));base64,(.*)", re.DOTALL)
FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP", "image/gif": "GIF"}


def check_pictures(model: str, body: dict, call: dict):
    """Return the 422 a model answers bad input pictures (or aspect ratio) with, or None;
    record each good data URI picture in call["images"] ({mime_type, format, size,
    bytes}), in order."""
    call["images"] = []
    ratio = body.get("aspect_ratio")
    if model in RATIOS and ratio is not None and ratio not in RATIOS[model]:
        return (
            422,
            validation(
                ["body", "aspect_ratio"],
                "Input should be " + ", ".join(f"'{r}'" for r in sorted(RATIOS[model])),
                "enum",
            ),
            {"X-Fal-Retryable": "false"},
        )
    if model not in PICTURE_INPUTS:
        return None
    field, most, _ = PICTURE_INPUTS[model]
    value = body.get(field)
    if value is None:
        return 422, validation(["body", field], "Field required", "missing"), {}
    values = value if field == "image_urls" else [value]
    if field == "image_urls" and not isinstance(value, list) or not values:
        return 422, validation(["body", field], "Input should be a valid list", "list_type"), {}
    if len(values) > most:
        return (
            422,
            validation(
                ["body", field],
                f"List should have at most {most} items after validation, not {len(values)}",
                "too_long",
                max_length=most,
            ),
            {},
        )
    for n, url in enumerate(values):
        loc = ["body", field, n] if field == "image_urls" else ["body", field]
        if isinstance(url, str) and url.startswith("https://"):
            continue
        match = DATA_URI.fullmatch(url) if isinstance(url, str) else None
        if match is None:
            return (
                422,
                validation(
                    loc,
                    "Input should be a valid URL or a base64 data URI of an image",
                    "url_parsing",
                ),
                {},
            )
        try:
            data = base64.b64decode(match.group(2), validate=True)
            with Image.open(io.BytesIO(data)) as picture:
                picture.verify()
                found, size = picture.format, picture.size
        except Exception:  # noqa: BLE001 - bad base64 or bytes that are no picture
            found, size = None, None
        if found != FORMATS[match.group(1)]:
            message = "Could not load the image from the data URI"
            return 422, validation(loc, message, "image_load_error"), {}
        call["images"].append(
            {"mime_type": match.group(1), "format": found, "size": size, "bytes": data}
        )
    return None


SIZE_NAMES = {
    "square_hd",
    "square",
    "portrait_4_3",
    "portrait_16_9",
    "landscape_4_3",
    "landscape_16_9",
}


def validation(loc: list, msg: str, type_: str, **ctx) -> dict:
    item = {"loc": loc, "msg": msg, "type": type_, "url": f"https://docs.fal.ai/errors/#{type_}"}
    if ctx:
        item["ctx"] = ctx
    return {"detail": [item]}


# name -> (status, body, headers)
ERRORS = {
    "401": (401, {"detail": "Authentication is required to access this application."}, {}),
    "403_locked": (
        403,
        {
            "detail": "User is locked. Reason: Exhausted balance. Top up your balance at "
            "fal.ai/dashboard/billing."
        },
        {},
    ),
    "404": (404, {"detail": "Application 'flux-schnel' not found"}, {}),
    "422_policy": (
        422,
        validation(
            ["body", "prompt"],
            "The content could not be processed because it contained material flagged by a "
            "content checker.",
            "content_policy_violation",
        ),
        {"X-Fal-Retryable": "false"},
    ),
    "422_size": (
        422,
        validation(
            ["body", "image_size"],
            "Input should be 'square_hd', 'square', 'portrait_4_3', 'portrait_16_9', "
            "'landscape_4_3' or 'landscape_16_9'",
            "enum",
        ),
        {"X-Fal-Retryable": "false"},
    ),
    "500": (500, {"detail": "Internal server error"}, {}),
    "504_timeout": (
        504,
        {"detail": "Request timed out", "error_type": "request_timeout"},
        {"X-Fal-Error-Type": "request_timeout"},
    ),
    "503_runner": (
        503,
        {"detail": "Runner disconnected", "error_type": "runner_disconnected"},
        {"X-Fal-Error-Type": "runner_disconnected"},
    ),
    "502_html": (502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", {}),
}


def jwks_of(public_key: bytes, kid: str = "fake-fal-1") -> str:
    """Return a JWKS (JSON) holding one Ed25519 public key, as fal publishes its keys."""
    x = base64.urlsafe_b64encode(public_key).rstrip(b"=").decode()
    return json.dumps({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid}]})


class FakeFal(WebhookSender, LoopbackServer):
    transient_reply = "500"
    # fal's answer once the balance is spent (it may last a while after a top-up).
    out_of_credits_reply = "403_locked"

    def __init__(self, port: int = 0):
        self.valid_keys: set[str] | None = None  # None accepts any key
        self.models = set(MODELS)
        self.submit_script: deque[str] = deque()  # replies to the next submits, then "ok"
        # How the next requests' results come out: "ok", "nsfw", "no_image", or an ERRORS
        # name (the result answers that error).
        self.result = "ok"
        self.queue_positions = [2, 1, 0]  # what the first status polls say, in the queue
        self.in_progress_polls = 1  # then this many IN_PROGRESS, then COMPLETED
        self.finish = threading.Event()  # with in_progress_polls None, complete once set
        self.requests: dict[str, dict] = {}
        self.polls: Counter = Counter()
        self.submits = 0
        self.canceled: list[str] = []
        self.no_retry: list[str] = []  # the x-fal-no-retry header of every submit
        self.files: dict[str, bytes] = {}
        # Webhooks (a submit with `?fal_webhook=URL`): the request completes after
        # `latency` seconds by itself and the fake POSTs {request_id, gateway_request_id,
        # status, payload}, signed with ED25519 over the request id, user id, timestamp and
        # the body's SHA-256 (hex), joined by newlines; `jwks` is the public key set an
        # operator copies into FAL_WEBHOOK_JWKS. WebhookSender's knobs for bad days.
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        self.signing_key = Ed25519PrivateKey.generate()
        public = self.signing_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.jwks = jwks_of(public)
        self.user_id = "fake-user-" + uuid.uuid4().hex[:8]
        self.webhook_urls: list[str | None] = []  # the fal_webhook of every submit
        self.init_webhooks()
        super().__init__(port)
        self.platform_url = self.origin + "/platform/v1"

    def result_body(self, request_id: str) -> tuple[int, dict]:
        """Return (HTTP status, body) of the request's result, as GET response_url has it;
        the picture is served from then on."""
        request = self.requests[request_id]
        outcome = request["result"]
        if outcome in ERRORS:
            status, body, _ = ERRORS[outcome]
            return status, body if isinstance(body, dict) else {"detail": "Bad gateway"}
        name = f"{request_id}.png"
        self.files[name] = PNG
        images = (
            []
            if outcome == "no_image"
            else [
                {
                    "url": f"{self.links}/files/{name}",
                    "width": 64,
                    "height": 64,
                    "content_type": "image/png",
                }
            ]
        )
        return 200, {
            "images": images,
            "timings": {"inference": 0.41},
            "seed": 7,
            "has_nsfw_concepts": [outcome == "nsfw"],
            "prompt": "",
        }

    def signed(self, request_id: str, body: dict) -> tuple:
        """Return one delivery (id, status, body, headers), signed now as fal signs."""
        raw = json.dumps(body).encode()
        timestamp = str(int(time.time()))
        message = "\n".join([request_id, self.user_id, timestamp, hashlib.sha256(raw).hexdigest()])
        signature = self.signing_key.sign(message.encode()).hex()
        headers = {
            "Content-Type": "application/json",
            "X-Fal-Webhook-Request-Id": request_id,
            "X-Fal-Webhook-User-Id": self.user_id,
            "X-Fal-Webhook-Timestamp": timestamp,
            "X-Fal-Webhook-Signature": signature,
        }
        return request_id, body["status"], raw, headers

    def run_with_webhook(self, request_id: str, url: str) -> None:
        """The request runs for `latency` seconds (unless held), completes, and calls back."""

        def run():
            self.wait_if_held()
            with self._lock:
                request = self.requests[request_id]
                if self._shutdown.is_set() or request["state"] == "CANCELED":
                    return
                request["state"] = "COMPLETED"

            def deliveries():
                with self._lock:
                    status, payload = self.result_body(request_id)
                body = {
                    "request_id": request_id,
                    "gateway_request_id": request_id,
                    "status": "OK" if status == 200 else "ERROR",
                    "payload": payload,
                }
                if status != 200:
                    body["error"] = f"Invalid status code: {status}"
                return [self.signed(request_id, body)]

            self.after_end(request_id, url, deliveries)

        threading.Thread(target=run, daemon=True).start()

    class Handler(FakeHandler):
        def _reply(self, status, body, headers=None):
            if isinstance(body, bytes):
                return self.send_bytes(status, body, "text/html", headers)
            headers = {"x-fal-request-id": uuid.uuid4().hex, **(headers or {})}
            self.send_json(status, body, headers)

        def _auth_error(self):
            auth = self.headers.get("Authorization", "")
            key = auth.removeprefix("Key ").strip()
            if not auth.startswith("Key ") or not key:
                return ERRORS["401"]
            valid = self.service.valid_keys
            if valid is not None and key not in valid:
                return 401, {"detail": "Invalid API key"}, {}
            return None

        def do_POST(self):
            service = self.service
            raw = self.read_body()
            model = urlsplit(self.path).path.strip("/")
            call = service.record({"model": model, "raw": raw})
            if (error := self._auth_error()) is not None:
                return self._reply(*error)
            if model not in service.models:
                return self._reply(404, {"detail": f"Application '{model}' not found"})
            try:
                body = json.loads(raw) if self.is_json() else None
            except ValueError:
                body = None
            if not isinstance(body, dict):
                return self._reply(
                    422, validation(["body"], "Input should be a valid dictionary", "dict_type")
                )
            call["body"] = body
            if not str(body.get("prompt") or "").strip():
                return self._reply(422, validation(["body", "prompt"], "Field required", "missing"))
            if (bad := check_pictures(model, body, call)) is not None:
                return self._reply(*bad)
            size = body.get("image_size")
            if size is not None and not (
                isinstance(size, str)
                and size in SIZE_NAMES
                or isinstance(size, dict)
                and all(
                    isinstance(size.get(k), int) and 0 < size[k] <= 14142
                    for k in ("width", "height")
                )
            ):
                return self._reply(*ERRORS["422_size"])
            webhook = parse_qs(urlsplit(self.path).query).get("fal_webhook", [None])[0]
            with service._lock:
                service.webhook_urls.append(webhook)
                service.no_retry.append(self.headers.get("x-fal-no-retry", ""))
                reply = service.turn(
                    service.submit_script.popleft() if service.submit_script else "ok"
                )
                if reply != "ok":
                    return self._reply(*ERRORS[reply])
                service.submits += 1
                request_id = str(uuid.uuid4())
                service.requests[request_id] = {
                    "state": "IN_QUEUE",
                    "result": service.result,
                    "submitted": time.monotonic(),
                }
            if webhook:
                service.run_with_webhook(request_id, webhook)
            app = "/".join(model.split("/")[:2])
            base = f"{service.links}/{app}/requests/{request_id}"
            self._reply(
                200,
                {
                    "status": "IN_QUEUE",
                    "request_id": request_id,
                    "response_url": base,
                    "status_url": f"{base}/status",
                    "cancel_url": f"{base}/cancel",
                    "logs": None,
                    "metrics": {},
                    "queue_position": service.queue_positions[0] if service.queue_positions else 0,
                },
            )

        def do_GET(self):
            service = self.service
            split = urlsplit(self.path)
            path = split.path.strip("/")
            if path.startswith("files/"):
                content = service.files.get(path.removeprefix("files/"))
                if content is None:
                    return self.send_bytes(404, b"Not Found", "text/plain")
                return self.send_bytes(200, content, "image/png")
            if path == "platform/v1/models":
                wanted = parse_qs(split.query).get("endpoint_id", [])
                found = [
                    {"endpoint_id": m, "metadata": {"display_name": m, "category": "text-to-image"}}
                    for m in wanted
                    if m in service.models
                ]
                return self._reply(200, {"models": found, "has_more": False, "next_cursor": None})
            if (error := self._auth_error()) is not None:
                return self._reply(*error)
            parts = path.split("/")
            if len(parts) >= 4 and parts[2] == "requests":
                request_id = parts[3]
                with service._lock:
                    known = request_id in service.requests
                if not known:
                    return self._reply(404, {"detail": "Request not found"})
                if parts[4:] == ["status"]:
                    return self._status(request_id)
                if len(parts) == 4:
                    return self._result(request_id)
            self._reply(404, {"detail": "Not Found"})

        def _status(self, request_id: str):
            service = self.service
            with service._lock:
                service.polls[request_id] += 1
                polls = service.polls[request_id]
                request = service.requests[request_id]
            app_base = self.path.rsplit("/status", 1)[0]
            queued = len(service.queue_positions)
            # A picture takes `latency` seconds from its submission.
            ripe = time.monotonic() - request["submitted"] >= service.latency
            if request["state"] in ("CANCELED", "COMPLETED"):
                state = "COMPLETED"  # canceled, or completed by itself (a webhook's request)
            elif polls <= queued:
                body = {"status": "IN_QUEUE", "queue_position": service.queue_positions[polls - 1]}
                return self._reply(202, {**body, "response_url": service.origin + app_base})
            elif service.in_progress_polls is None:
                state = "COMPLETED" if service.finish.is_set() and ripe else "IN_PROGRESS"
            else:
                done = polls > queued + service.in_progress_polls and ripe
                state = "COMPLETED" if done else "IN_PROGRESS"
            with service._lock:
                request["state"] = state if request["state"] != "CANCELED" else "CANCELED"
            body = {"status": state, "response_url": service.origin + app_base, "logs": None}
            if state == "COMPLETED":
                body["metrics"] = {"inference_time": 0.41}
                return self._reply(200, body)
            self._reply(202, body)

        def _result(self, request_id: str):
            service = self.service
            request = service.requests[request_id]
            if request["state"] == "CANCELED":
                return self._reply(400, {"detail": "Request was cancelled"})
            if request["state"] != "COMPLETED":
                return self._reply(400, {"detail": "Request is still in progress"})
            outcome = request["result"]
            if outcome in ERRORS:
                return self._reply(*ERRORS[outcome])
            with service._lock:
                status, body = service.result_body(request_id)
            self._reply(status, body)

        def do_PUT(self):
            service = self.service
            self.read_body()
            if (error := self._auth_error()) is not None:
                return self._reply(*error)
            parts = urlsplit(self.path).path.strip("/").split("/")
            if len(parts) != 5 or parts[2] != "requests" or parts[4] != "cancel":
                return self._reply(404, {"detail": "Not Found"})
            with service._lock:
                request = service.requests.get(parts[3])
                if request is None:
                    return self._reply(404, {"status": "NOT_FOUND"})
                if request["state"] == "COMPLETED":
                    return self._reply(400, {"status": "ALREADY_COMPLETED"})
                request["state"] = "CANCELED"
                service.canceled.append(parts[3])
            self._reply(202, {"status": "CANCELLATION_REQUESTED"})
