"""A loopback OpenAI-compatible service that speaks the real wire format and fails on demand.

It serves POST /v1/images/generations (b64_json or url answers), /v1/images/edits
(multipart/form-data with `image[]` parts, refused as the service refuses a missing picture,
a type other than PNG, JPEG or WebP, bytes that are not the declared picture, a picture over
`max_image_bytes`, more than 16, or input_fidelity where the model takes none; each call
records its pictures in order under "images") and /v1/chat/completions like the real
service, with the `{"error": {"message", "type", "param", "code"}}` envelope
and Retry-After headers; it counts calls per prompt and calls in flight, can hold answers
until released, and can behave like a real service under load: a latency per image, a
capacity (calls beyond it get 429 rate_limit_exceeded) and a random failure mix.

The tests use it, and so does `manage.py benchmark`: it is the studio's own stand-in for
an image service, never a mock of `requests`.
"""

import base64
import io
import json
import re
import struct
import time
import uuid
import zlib
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from PIL import Image

from .base import FakeHandler, LoopbackServer
from .openai_batches import BatchDesk


def png_bytes(size=(64, 64), colour=(120, 160, 90)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = png_bytes()


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """Return a tiny PNG whose header claims a huge image: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + chunk(b"IEND", b"")
    )


def _b64_reply(content: bytes) -> "Reply":
    body = {"created": 1713833628, "data": [{"b64_json": base64.b64encode(content).decode()}]}
    return Reply(body=json.dumps(body).encode())


@dataclass
class Reply:
    status: int = 200
    body: bytes | None = None
    headers: dict = field(default_factory=dict)
    hang: bool = False  # never answer (until the server shuts down)
    url: bool = False  # answer with data[0].url instead of b64_json
    story: str = ""  # chat completions only: "malformed" or "few"
    # A 200 whose body arrives a few bytes at a time, over `trickle` seconds (the picture
    # is made and billed; its answer dawdles), or breaks off half-way (`cut`).
    trickle: float = 0.0
    cut: bool = False


def ok() -> Reply:
    return Reply()


def error(
    status: int,
    *,
    code=None,
    type="invalid_request_error",
    message="error",
    headers=None,
    param=None,
):
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return Reply(status=status, body=json.dumps(body).encode(), headers=headers or {})


# The failures the real services send, as seen in shared/reference/service-wire-formats.md.
REPLIES = {
    "ok": ok,
    "ok_url": lambda: Reply(url=True),
    "402": lambda: Reply(
        status=402,
        body=json.dumps(
            {
                "error": {
                    "message": "Payment required: insufficient credits.",
                    "type": "billing_error",
                    "param": None,
                    "code": None,
                }
            }
        ).encode(),
    ),
    "429_quota": lambda: error(
        429,
        code="insufficient_quota",
        type="insufficient_quota",
        message="You exceeded your current quota, please check your plan and billing details.",
    ),
    "429_rate": lambda: error(
        429,
        code="rate_limit_exceeded",
        type="requests",
        message="Rate limit reached for gpt-image-1 on requests per min (RPM).",
        headers={"retry-after": "3"},
    ),
    "429_rate_short": lambda: error(
        429,
        code="rate_limit_exceeded",
        type="requests",
        message="Too many requests at once.",
        headers={"retry-after": "1"},
    ),
    "429_rate_long": lambda: error(
        429,
        code="rate_limit_exceeded",
        type="requests",
        message="Rate limit reached.",
        headers={"retry-after": "600"},
    ),
    "400_billing": lambda: error(
        400, code="billing_hard_limit_reached", message="Billing hard limit has been reached"
    ),
    "401": lambda: error(
        401,
        code="invalid_api_key",
        message="Incorrect API key provided: sk-abc***. You can find your API key at https://platform.openai.com/account/api-keys.",
    ),
    "403": lambda: error(
        403,
        code="unsupported_country_region_territory",
        message="Country, region, or territory not supported",
    ),
    "400_policy": lambda: error(
        400,
        code="content_policy_violation",
        message="Your request was rejected as a result of our safety system.",
    ),
    "400_moderation": lambda: error(
        400,
        code="moderation_blocked",
        type="image_generation_user_error",
        message="Your request was rejected by the safety system. safety_violations=[violence].",
    ),
    "500": lambda: error(
        500, type="server_error", message="The server had an error while processing your request."
    ),
    "503": lambda: error(
        503,
        code="server_is_overloaded",
        type="service_unavailable_error",
        message="The engine is currently overloaded, please try again later.",
    ),
    # As gateways and proxies send them (shared/reference/image-services-2026.md).
    "429_gateway_quota": lambda: error(
        429,
        code="429",
        type="throttling_error",
        message="You exceeded your current quota, please check your plan and billing details.",
    ),
    "403_locked": lambda: Reply(
        status=403,
        body=json.dumps(
            {"detail": "User is locked. Reason: Exhausted balance. Top up your balance."}
        ).encode(),
    ),
    "400_billing_not_active": lambda: error(
        400,
        code="billing_not_active",
        message="Your account is not active, please check your billing details on our website.",
    ),
    "404_model": lambda: error(
        404,
        code="model_not_found",
        message="The model `gpt-imgae-1` does not exist or you do not have access to it.",
    ),
    "404_route": lambda: Reply(status=404, body=b'{"detail": "Not Found"}'),
    "400_size": lambda: error(
        400,
        code="invalid_value",
        param="size",
        message="Invalid value: '999x999'. Supported values are: '1024x1024', '1024x1536'.",
    ),
    "403_html": lambda: Reply(
        status=403,
        body=b"<!DOCTYPE html><html><body><h1>403 Forbidden</h1>by the proxy</body></html>",
        headers={"Content-Type": "text/html"},
    ),
    "502_html": lambda: Reply(
        status=502,
        body=b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
        headers={"Content-Type": "text/html"},
    ),
    "200_error": lambda: Reply(
        body=json.dumps({"error": {"message": "Upstream provider failed", "code": 502}}).encode()
    ),
    "200_refusal": lambda: Reply(
        body=json.dumps(
            {
                "error": {
                    "message": "Request blocked by the content filter",
                    "code": "content_filter",
                }
            }
        ).encode()
    ),
    "200_no_image": lambda: Reply(body=json.dumps({"created": 1713833628, "data": []}).encode()),
    "503_retry_after": lambda: error(
        503, type="service_unavailable_error", message="Slow down", headers={"retry-after": "2"}
    ),
    "529": lambda: error(
        529, type="overloaded_error", message="Overloaded", headers={"retry-after-ms": "1500"}
    ),
    "429_absurd": lambda: error(
        429, code="rate_limit_exceeded", message="Slow down.", headers={"retry-after": "1e400"}
    ),
    "429_far_future": lambda: error(
        429,
        code="rate_limit_exceeded",
        message="Slow down.",
        headers={"retry-after": "Fri, 31 Dec 2100 23:59:59 GMT"},
    ),
    "429_negative": lambda: error(
        429, code="rate_limit_exceeded", message="Slow down.", headers={"retry-after": "-5"}
    ),
    "429_brief": lambda: error(
        429,
        code="rate_limit_exceeded",
        message="Too many requests.",
        headers={"retry-after-ms": "60"},
    ),
    "hang": lambda: Reply(hang=True),
    "trickle": lambda: Reply(trickle=30.0),
    "cut": lambda: Reply(cut=True),
    "bomb": lambda: _b64_reply(bomb_png()),
    "bomb_9000": lambda: _b64_reply(bomb_png(9000, 9000)),
    "huge": lambda: Reply(
        body=b'{"created": 1, "data": [{"b64_json": "' + b"A" * (50 * 1024 * 1024) + b'"}]}'
    ),
    "401_echo_key": lambda: error(401, code="invalid_api_key", message="__ECHO_KEY__"),
    # Out of credits, in words that quote the prompt of the call (some gateways do).
    "402_echo_prompt": lambda: error(
        402, code="billing_hard_limit_reached", message="__ECHO_PROMPT__"
    ),
    # Chat completions (the story phase): a reply whose content is not the JSON asked for,
    # and one with two pages fewer than asked.
    "story_malformed": lambda: Reply(story="malformed"),
    "story_few": lambda: Reply(story="few"),
    # A story whose first page is 300,004 characters with a NUL, its prompt 5,000 with
    # control characters, and whose second page has nothing but control characters.
    "story_hostile": lambda: Reply(story="hostile"),
    "broken_json": lambda: Reply(body=b'{"created": 1713833628, "data": [{"b64_json": "iVBO'),
    "bad_b64": lambda: Reply(
        body=json.dumps({"created": 1713833628, "data": [{"b64_json": "not*base64!!"}]}).encode()
    ),
    "not_image": lambda: Reply(
        body=json.dumps(
            {
                "created": 1713833628,
                "data": [{"b64_json": base64.b64encode(b"GIF89a but not really").decode()}],
            }
        ).encode()
    ),
}


# /images/edits, as the service takes it: up to 16 pictures, PNG, JPEG or WebP, each under
# 50 MB; input_fidelity high|low, not on gpt-image-1-mini; dall-e-3 edits nothing.
EDIT_MAX_IMAGES = 16
EDIT_MAX_BYTES = 50 * 1024 * 1024
EDIT_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
EDIT_FIELDS = {
    "model",
    "prompt",
    "size",
    "n",
    "quality",
    "background",
    "output_format",
    "output_compression",
    "input_fidelity",
    "response_format",
    "user",
}


# The sizes each model takes, as OpenAI's image generation guide and model pages give them:
# gpt-image-2 any WxH with both sides multiples of 16, no side over 3,840 px, the long side at
# most 3 times the short, 655,360 to 8,294,400 pixels (or "auto"); the earlier GPT image
# models three sizes; dall-e its own.
GPT_IMAGE_SIZES = ("1024x1024", "1536x1024", "1024x1536", "auto")
FIXED_SIZES = {
    "gpt-image-1": GPT_IMAGE_SIZES,
    "gpt-image-1-mini": GPT_IMAGE_SIZES,
    "gpt-image-1.5": GPT_IMAGE_SIZES,
    "dall-e-3": ("1024x1024", "1792x1024", "1024x1792"),
    "dall-e-2": ("256x256", "512x512", "1024x1024"),
}
FREE_SIZE_MODELS = {"gpt-image-2"}


def size_refusal(model: str, size) -> "Reply | None":
    """Return the 400 the service answers a size the model does not take with, or None."""
    if size is None:
        return None
    size = str(size)
    if model in FREE_SIZE_MODELS:
        if size == "auto":
            return None
        match = re.fullmatch(r"(\d+)x(\d+)", size)
        problem = None
        if match is None:
            problem = "Size must be 'auto' or WIDTHxHEIGHT in pixels."
        else:
            w, h = int(match.group(1)), int(match.group(2))
            if w % 16 or h % 16:
                problem = "Width and height must both be multiples of 16."
            elif max(w, h) > 3840:
                problem = "The longest edge must be at most 3840 pixels."
            elif max(w, h) > 3 * min(w, h):
                problem = "The aspect ratio must be at most 3:1."
            elif not 655_360 <= w * h <= 8_294_400:
                problem = "The total number of pixels must be between 655360 and 8294400."
        if problem is None:
            return None
        return error(
            400, message=f"Invalid size '{size}'. {problem}", param="size", code="invalid_value"
        )
    allowed = FIXED_SIZES.get(model)
    if allowed is None or size in allowed:
        return None
    listed = ", ".join(f"'{s}'" for s in allowed[:-1]) + f", and '{allowed[-1]}'"
    return error(
        400,
        message=f"Invalid value: '{size}'. Supported values are: {listed}.",
        param="size",
        code="invalid_value",
    )


def model_gone(model: str) -> "Reply":
    """Return the 404 the service answers a model it does not have (or no longer has)."""
    return error(
        404,
        message=f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
    )


def usage_of(model: str, size, images: int) -> dict:
    """Return the `usage` an answer reports: gpt-image-2's tokens grow with the picture's
    pixels and each reference picture's; the others report gpt-image-1's for one
    1024x1024 picture."""
    if model not in FREE_SIZE_MODELS:
        return {
            "input_tokens": 50,
            "input_tokens_details": {"text_tokens": 50, "image_tokens": 0},
            "output_tokens": 1056,
            "total_tokens": 1106,
        }
    match = re.fullmatch(r"(\d+)x(\d+)", str(size or ""))
    pixels = int(match.group(1)) * int(match.group(2)) if match else 1024 * 1024
    output = round(1056 * pixels / (1024 * 1024))
    image_tokens = 388 * images
    return {
        "input_tokens": 50 + image_tokens,
        "input_tokens_details": {"text_tokens": 50, "image_tokens": image_tokens},
        "output_tokens": output,
        "total_tokens": 50 + image_tokens + output,
    }


def parse_multipart(content_type: str, raw: bytes) -> list[tuple[dict, bytes]] | None:
    """Return the (headers, body) of each part of a multipart/form-data body, or None when
    the body is not multipart/form-data with a boundary."""
    kind, _, params = content_type.partition(";")
    match = re.search(r'boundary="?([^";]+)"?', params)
    if kind.strip().lower() != "multipart/form-data" or not match:
        return None
    delimiter = b"--" + match.group(1).encode()
    chunks = raw.split(delimiter)
    if len(chunks) < 2 or not chunks[-1].startswith(b"--"):
        return None  # no closing delimiter: a broken body
    parts = []
    for chunk in chunks[1:-1]:
        chunk = chunk.removeprefix(b"\r\n").removesuffix(b"\r\n")
        head, _, body = chunk.partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        parts.append((headers, body))
    return parts


def _disposition(headers: dict, param: str) -> str | None:
    match = re.search(rf'(?:^|;)\s*{param}="([^"]*)"', headers.get("content-disposition", ""))
    return match.group(1) if match else None


def parse_edit(content_type: str, raw: bytes, max_bytes: int = EDIT_MAX_BYTES):
    """Return (fields, images, problem) for an /images/edits body: its text fields, its
    pictures in order ({field, filename, content_type, bytes, width, height, format}), and
    the 400 the service answers a malformed request with (None when it is well formed)."""
    fields: dict = {}
    images: list[dict] = []
    parts = parse_multipart(content_type, raw)
    if parts is None:
        kind = content_type.split(";")[0].strip() or "none"
        return (
            fields,
            images,
            error(
                400,
                message=f"Invalid Content-Type header ({kind}), expected multipart/form-data.",
                code="invalid_content_type",
            ),
        )
    for headers, body in parts:
        name = _disposition(headers, "name")
        filename = _disposition(headers, "filename")
        if name in ("image", "image[]"):
            images.append(
                {
                    "field": name,
                    "filename": filename,
                    "content_type": headers.get("content-type", ""),
                    "bytes": body,
                }
            )
        elif name is not None and filename is None:
            fields[name] = body.decode("utf-8", "replace")
    for name in fields:
        if name not in EDIT_FIELDS:
            return (
                fields,
                images,
                error(
                    400,
                    message=f"Unknown parameter: '{name}'.",
                    param=name,
                    code="unknown_parameter",
                ),
            )
    if not fields.get("prompt", "").strip():
        return (
            fields,
            images,
            error(
                400,
                message="Missing required parameter: 'prompt'.",
                param="prompt",
                code="missing_required_parameter",
            ),
        )
    if not images:
        return (
            fields,
            images,
            error(
                400,
                message="Missing required parameter: 'image'.",
                param="image",
                code="missing_required_parameter",
            ),
        )
    model = fields.get("model", "dall-e-2")
    if model == "dall-e-3":
        return (
            fields,
            images,
            error(
                400,
                message="Invalid value: 'dall-e-3'. Value must be 'dall-e-2' or a GPT image model.",
                param="model",
                code="invalid_value",
            ),
        )
    most = 1 if model == "dall-e-2" else EDIT_MAX_IMAGES
    if len(images) > most:
        return (
            fields,
            images,
            error(
                400,
                message=f"Too many images: {len(images)} were given, at most {most} are allowed.",
                param="image",
                code="too_many_images",
            ),
        )
    fidelity = fields.get("input_fidelity")
    if fidelity is not None:
        if fidelity not in ("high", "low"):
            return (
                fields,
                images,
                error(
                    400,
                    message=f"Invalid value: '{fidelity}'. Supported values are: 'high' and 'low'.",
                    param="input_fidelity",
                    code="invalid_value",
                ),
            )
        if not model.startswith("gpt-image") or model.endswith("-mini"):
            return (
                fields,
                images,
                error(
                    400,
                    message=f"input_fidelity is not supported for the model '{model}'.",
                    param="input_fidelity",
                    code="unsupported_parameter",
                ),
            )
    for n, image in enumerate(images, start=1):
        declared = image["content_type"].split(";")[0].strip().lower()
        if image["filename"] is None:
            return (
                fields,
                images,
                error(
                    400,
                    message="Invalid type for 'image': expected a file, but got a string instead.",
                    param="image",
                    code="invalid_type",
                ),
            )
        if declared not in EDIT_TYPES:
            return (
                fields,
                images,
                error(
                    400,
                    message=f"Invalid file 'image': unsupported mimetype ('{declared or 'none'}'). "
                    "Supported file formats are 'image/jpeg', 'image/png', and 'image/webp'.",
                    param="image",
                    code="unsupported_file_mimetype",
                ),
            )
        if len(image["bytes"]) > max_bytes:
            return (
                fields,
                images,
                error(
                    400,
                    message=f"Invalid file 'image': image {n} is too large "
                    f"({len(image['bytes'])} bytes); each image must be under "
                    f"{max_bytes // (1024 * 1024) or max_bytes} MB.",
                    param="image",
                    code="image_too_large",
                ),
            )
        try:
            with Image.open(io.BytesIO(image["bytes"])) as picture:
                picture.verify()
                kind = picture.format
                image.update(width=picture.width, height=picture.height, format=kind)
        except Exception:  # noqa: BLE001 - any decoding failure is the same refusal
            kind = None
        if kind != EDIT_TYPES[declared]:
            return (
                fields,
                images,
                error(
                    400,
                    message=f"Invalid image file or mode for image {n}, please check your image "
                    "file.",
                    param="image",
                    code="invalid_image_file",
                ),
            )
    return fields, images, None


class FakeImageService(LoopbackServer):
    path_prefix = "/v1"
    # Models GET /v1/models/{model} knows (what check_services asks about).
    models = {
        "gpt-image-2",
        "gpt-image-1",
        "gpt-image-1-mini",
        "gpt-image-1.5",
        "dall-e-2",
        "dall-e-3",
    }
    success_replies = frozenset({"ok", "ok_url"})
    transient_reply = "500"
    # OpenAI's own word for no credits left; gateways in front of it say 402 instead.
    out_of_credits_reply = "429_quota"

    def __init__(self, port: int = 0):
        self.successes = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.capacity: int | None = None  # calls beyond this many in flight get a 429
        self.failure_mix: dict[str, float] = {}  # reply name -> probability, per call
        self.over_capacity = 0
        self.rules: list[tuple[str, str]] = []  # (text in prompt, reply) for every such call
        self.valid_keys: set[str] | None = None  # GET /models: None accepts any bearer key
        self._files: dict[str, bytes] = {}
        self.max_image_bytes = EDIT_MAX_BYTES  # /images/edits: the most one picture weighs
        # The models this service has: a test takes one away to have it answer 404.
        self.models = set(type(self).models)
        # Files and Batches (economy mode): fake_openai.batches has its knobs.
        self.batches = BatchDesk(PNG, REPLIES)
        super().__init__(port)

    def stop(self) -> None:
        self.batches.release()  # a held batch answer ends with the server
        super().stop()

    def calls_for(self, text: str) -> int:
        with self._lock:
            return sum(1 for call in self.calls if text in call["prompt"])

    def prompts(self) -> Counter:
        with self._lock:
            return Counter(call["prompt"] for call in self.calls)

    def _reply_for(self, prompt: str) -> Reply:
        with self._lock:
            for text, name in self.rules:
                if text in prompt:
                    return REPLIES[name]()
            if self.capacity is not None and self.in_flight > self.capacity:
                self.over_capacity += 1
                return REPLIES["429_rate_short"]()
            name = self.script.popleft() if self.script else self.default
            draw = self.random.random()
            for candidate, probability in self.failure_mix.items():
                if draw < probability:
                    name = candidate
                    break
                draw -= probability
            name = self.turn(name)
        return REPLIES[name]()

    # --- HTTP ----------------------------------------------------------------------

    def _handler(self):
        service = self

        class Handler(FakeHandler):
            def do_GET(self):
                if self.path.startswith(("/v1/files", "/v1/batches")):
                    return self._batch_api("GET")
                if self.path.startswith("/v1/models/"):
                    return self._model(self.path.removeprefix("/v1/models/"))
                name = self.path.rsplit("/", 1)[-1]
                if self.redirected(name, service):
                    return
                content = service._files.get(name)
                if content is None:
                    self._send(404, b"not found", "text/plain")
                else:
                    self._send(200, content, "image/png")

            def _model(self, model: str):
                """GET /v1/models/{model}: free, tells whether the key and the model exist."""
                key = self.headers.get("Authorization", "").removeprefix("Bearer ")
                if not key or (service.valid_keys is not None and key not in service.valid_keys):
                    body = json.loads(REPLIES["401"]().body)
                    return self.send_json(401, body)
                if model not in service.models:
                    message = f"The model '{model}' does not exist"
                    body = {
                        "error": {
                            "message": message,
                            "type": "invalid_request_error",
                            "param": "model",
                            "code": "model_not_found",
                        }
                    }
                    return self.send_json(404, body)
                body = {"id": model, "object": "model", "created": 1698785189, "owned_by": "system"}
                self.send_json(200, body)

            def _batch_api(self, method: str):
                """Files and Batches: /v1/files, /v1/files/{id}/content, /v1/batches,
                /v1/batches/{id}, /v1/batches/{id}/cancel (generation.fakes.openai_batches)."""
                desk = service.batches
                key = self.headers.get("Authorization", "").removeprefix("Bearer ")
                raw = self.read_body() if method == "POST" else b""
                if not key or (service.valid_keys is not None and key not in service.valid_keys):
                    return self.send_json(401, json.loads(REPLIES["401"]().body))
                if desk.refuse:
                    refused = REPLIES[desk.refuse]()
                    return self._send(refused.status, refused.body, headers=refused.headers)
                url = urlsplit(self.path)
                parts = url.path.strip("/").split("/")[1:]  # after "v1"
                query = parse_qs(url.query)
                service.record(
                    {
                        "path": url.path,
                        "query": query,
                        "prompt": "",
                        "method": method,
                        "batch_api": True,
                    }
                )
                answer, step = None, ""
                if method == "GET" and parts == ["files"]:
                    answer, step = (
                        desk.list_files((query.get("purpose") or [None])[0]),
                        "list_files",
                    )
                elif (
                    method == "GET"
                    and len(parts) == 3
                    and parts[0] == "files"
                    and parts[2] == "content"
                ):
                    status, content = desk.content(parts[1])
                    if status == 200 and desk.is_output(parts[1]):
                        return self._send_output(content)
                    if status == 200:
                        return self._send(200, content, "application/octet-stream")
                    answer = status, content
                elif method == "POST" and parts == ["files"]:
                    multipart = parse_multipart(self.headers.get("Content-Type", ""), raw)
                    if multipart is None:
                        answer = (
                            400,
                            json.loads(error(400, message="Expected multipart/form-data.").body),
                        )
                    else:
                        fields, filename, content = {}, None, b""
                        for headers, body in multipart:
                            name = _disposition(headers, "name")
                            if name == "file" and _disposition(headers, "filename") is not None:
                                filename, content = _disposition(headers, "filename"), body
                            elif name:
                                fields[name] = body.decode("utf-8", "replace")
                        answer, step = desk.upload(fields, filename, content), "upload"
                elif parts == ["batches"]:
                    if method == "GET":
                        answer = desk.list_batches(query)
                    else:
                        try:
                            body = json.loads(raw or b"{}")
                        except ValueError:
                            body = None
                        if not isinstance(body, dict) or not self.is_json():
                            answer = (
                                400,
                                json.loads(
                                    error(400, message="We could not parse the JSON body.").body
                                ),
                            )
                        else:
                            answer, step = desk.create(body), "create"
                elif len(parts) == 2 and parts[0] == "batches" and method == "GET":
                    answer = desk.retrieve(parts[1])
                elif (
                    len(parts) == 3
                    and parts[0] == "batches"
                    and parts[2] == "cancel"
                    and method == "POST"
                ):
                    answer = desk.cancel(parts[1])
                if answer is None:
                    answer = 404, json.loads(error(404, message="Not found").body)
                if answer[0] == 200 and step and desk.held(step):
                    self.close_connection = True  # its client may be gone: read no more
                try:
                    self.send_json(answer[0], answer[1])
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            def _send_output(self, content: bytes):
                """A batch's output file: its headers and first half, then (held at
                "output") the rest, to a client that may be gone by then."""
                half = len(content) // 2
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                try:
                    self.wfile.write(content[:half])
                    if service.batches.held("output"):
                        self.close_connection = True
                    self.wfile.write(content[half:])
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            def do_POST(self):
                if self.path.startswith(("/v1/files", "/v1/batches")):
                    return self._batch_api("POST")
                if self.path == "/v1/images/edits":
                    return self._edit()
                if self.path not in ("/v1/images/generations", "/v1/chat/completions"):
                    self._send(
                        404,
                        json.dumps(
                            {
                                "error": {
                                    "message": "Not found",
                                    "type": "invalid_request_error",
                                    "param": None,
                                    "code": None,
                                }
                            }
                        ).encode(),
                    )
                    return
                length = int(self.headers.get("Content-Length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                chat = self.path.endswith("/chat/completions")
                prompt = request["messages"][-1]["content"] if chat else request.get("prompt", "")
                call = self._call(prompt, request)
                if not chat:
                    model = str(request.get("model") or "dall-e-2")
                    refusal = (
                        model_gone(model)
                        if model not in service.models
                        else size_refusal(model, request.get("size"))
                    )
                    if refusal is not None:
                        # Refused before any picture is made: recorded, never billed.
                        call.update(status=refusal.status, refused=json.loads(refusal.body))
                        service.record(call)
                        headers = {"x-request-id": f"req_{uuid.uuid4().hex[:12]}"}
                        return self._send(refusal.status, refusal.body, headers=headers)
                self._serve(call, chat=chat)

            def _call(self, prompt: str, request: dict, **extra) -> dict:
                return {
                    "path": self.path,
                    "prompt": prompt,
                    "body": request,
                    "authorization": self.headers.get("Authorization", ""),
                    "idempotency_key": self.headers.get("Idempotency-Key", ""),
                    "started": time.monotonic(),
                    "at": time.time(),
                    **extra,
                }

            def _edit(self):
                """POST /v1/images/edits (multipart/form-data): reference pictures as
                `image[]` parts (or one `image`), as strict as the service about them."""
                raw = self.read_body()
                fields, images, problem = parse_edit(
                    self.headers.get("Content-Type", ""), raw, service.max_image_bytes
                )
                model = fields.get("model", "dall-e-2")
                if problem is None and model not in service.models:
                    problem = model_gone(model)
                if problem is None:
                    problem = size_refusal(model, fields.get("size"))
                call = self._call(fields.get("prompt", ""), fields, images=images)
                if problem is not None:
                    call.update(status=problem.status, refused=json.loads(problem.body))
                    service.record(call)
                    headers = {"x-request-id": f"req_{uuid.uuid4().hex[:12]}"}
                    return self._send(problem.status, problem.body, headers=headers)
                self._serve(call, chat=False)

            def _serve(self, call: dict, *, chat: bool):
                with service._lock:
                    service.calls.append(call)
                    service.in_flight += 1
                    service.max_in_flight = max(service.max_in_flight, service.in_flight)
                self._in_flight = True
                reply = None
                try:
                    reply = service._reply_for(call["prompt"])
                    if reply.body and b"__ECHO_KEY__" in reply.body:
                        # Some gateways echo the whole key back in their error message.
                        key = call["authorization"].removeprefix("Bearer ")
                        reply.body = reply.body.replace(
                            b"__ECHO_KEY__", f"Incorrect API key provided: {key}.".encode()
                        )
                    if reply.body and b"__ECHO_PROMPT__" in reply.body:
                        echoed = f"No credits left for: {call['prompt'][:200]}"
                        reply.body = reply.body.replace(
                            b"__ECHO_PROMPT__", json.dumps(echoed)[1:-1].encode()
                        )
                    if chat and reply.status == 200 and reply.body is None and not reply.hang:
                        reply = self._story(call["prompt"], reply)
                    self._answer(reply, call)
                finally:
                    self._leave()
                    with service._lock:
                        call["answered"] = time.monotonic()
                        call["status"] = reply.status if reply is not None else None

            def _leave(self) -> None:
                """The call is no longer in flight once its answer is ready to go: counted
                after the answer was written, the client could already be sending its next
                call while this thread had not yet counted the last one out (13 calls in
                flight seen from 12 workers on a busy host)."""
                if getattr(self, "_in_flight", False):
                    self._in_flight = False
                    with service._lock:
                        service.in_flight -= 1

            def _story(self, prompt: str, reply: Reply) -> Reply:
                """Answer a chat completion with the pages the prompt asked for."""
                wanted = int(re.search(r"Write exactly (\d+) pages", prompt).group(1))
                count = wanted - 2 if reply.story == "few" else wanted
                pages = [
                    {
                        "text": f"Once, on page {n}, the fox walked on.",
                        "prompt": f"A fox, scene {n}",
                    }
                    for n in range(1, count + 1)
                ]
                if reply.story == "hostile":
                    pages[0] = {"text": "A\x00B" + "x" * 300_000, "prompt": "\x1b[31m" + "p" * 5000}
                    pages[1] = {"text": "\x00\x01\x02", "prompt": "nothing"}
                content = (
                    "Here is your story!"
                    if reply.story == "malformed"
                    else json.dumps({"pages": pages})
                )
                body = {
                    "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": "gpt-4o-mini",
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": content},
                        }
                    ],
                    "usage": {"prompt_tokens": 80, "completion_tokens": 400, "total_tokens": 480},
                }
                return Reply(body=json.dumps(body).encode())

            def _answer(self, reply: Reply, call: dict | None = None):
                call_body = (call or {}).get("body") or {}
                call_images = (call or {}).get("images") or []
                if reply.hang:
                    service._shutdown.wait(timeout=30)
                    return
                if reply.trickle or reply.cut:
                    self._dawdle(reply)
                    return
                if reply.status == 200 and reply.body is None:
                    service.wait_if_held()
                    if reply.url:
                        name = f"{uuid.uuid4().hex}.png"
                        service._files[name] = PNG
                        item = {"url": f"{service.links}/files/{name}"}
                    else:
                        item = {"b64_json": base64.b64encode(PNG).decode()}
                    body = json.dumps(
                        {
                            "created": int(time.time()),
                            "data": [item],
                            "usage": usage_of(
                                str(call_body.get("model") or ""),
                                call_body.get("size"),
                                len(call_images),
                            ),
                        }
                    ).encode()
                    with service._lock:
                        service.successes += 1
                    self._leave()
                    self._send(200, body, headers={"x-request-id": f"req_{uuid.uuid4().hex[:12]}"})
                    return
                headers = {"x-request-id": f"req_{uuid.uuid4().hex[:12]}", **reply.headers}
                kind = headers.pop("Content-Type", "application/json")
                self._leave()
                self._send(reply.status, reply.body or b"", kind, headers=headers)

            def _dawdle(self, reply: Reply):
                body = json.dumps(
                    {
                        "created": int(time.time()),
                        "data": [{"b64_json": base64.b64encode(PNG).decode()}],
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    if reply.cut:
                        self.wfile.write(body[: len(body) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    pieces = [body[i : i + 16] for i in range(0, len(body), 16)]
                    for piece in pieces:
                        if service._shutdown.is_set():
                            break
                        self.wfile.write(piece)
                        self.wfile.flush()
                        service._shutdown.wait(timeout=reply.trickle / len(pieces))
                    self.close_connection = True
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _send(self, status, body, content_type="application/json", headers=None):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler
