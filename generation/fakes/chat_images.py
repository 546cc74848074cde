"""A loopback OpenAI-compatible chat gateway that answers with images, like OpenRouter and
the Lovable AI gateway do.

POST /api/v1/chat/completions answers a chat completion whose message carries
`images: [{"type": "image_url", "image_url": {"url": "data:image/png;base64,…"}}]` (or an
http URL it serves), with OpenRouter's `usage.cost`. Failures come in OpenRouter's envelope
`{"error": {"code", "message", "metadata"}}`: 401, 402 insufficient credits, 403 flagged by
moderation, 404 no endpoint for the modalities, 429, 500/502/503, and the in-band failures
of a model that had started: HTTP 200 with an `error` object, with `finish_reason:
content_filter`, or with text and no image. GET /api/v1/key and /api/v1/models are the
free look-ups.

As strict as the gateway: no `Authorization: Bearer …` → 401; a body that is not JSON →
400; no `model` or no `messages` → 400; a model it does not know → 400 "not a valid model
ID"; a content part that is not text or an image_url whose url is an https URL or a base64
data URL of a picture → 400 (each call records its parts in order). Without `"image"` in
`modalities`, an image model answers with text only (as the real
ones do).
"""

import base64
import io
import json
import re
import time
import uuid
from urllib.parse import urlsplit

from PIL import Image

from .base import FakeHandler, LoopbackServer
from .openai import png_bytes

PNG = png_bytes(colour=(90, 120, 200))
MODELS = {
    "google/gemini-3.1-flash-image",
    "google/gemini-3-pro-image",
    "google/gemini-2.5-flash-image",
    "google/gemini-2.5-flash-image-preview",
}
COST = 0.0387  # one picture through OpenRouter, as usage.cost reports it


def or_error(code: int, message: str, **metadata) -> dict:
    error = {"code": code, "message": message}
    if metadata:
        error["metadata"] = metadata
    return {"error": error, "user_id": "user_2test"}


def completion(message: dict, finish: str = "stop", native: str = "STOP", cost=COST) -> dict:
    usage = {"prompt_tokens": 9, "completion_tokens": 1290, "total_tokens": 1299}
    if cost is not None:
        usage["cost"] = cost
    return {
        "id": f"gen-{int(time.time())}-{uuid.uuid4().hex[:20]}",
        "provider": "Google",
        "model": "google/gemini-3.1-flash-image",
        "object": "chat.completion",
        "created": int(time.time()),
        "choices": [
            {
                "logprobs": None,
                "finish_reason": finish,
                "native_finish_reason": native,
                "index": 0,
                "message": {"role": "assistant", "content": "", "refusal": None, **message},
            }
        ],
        "usage": usage,
    }


def with_image(url: str, cost=COST) -> dict:
    image = {"type": "image_url", "image_url": {"url": url}, "index": 0}
    return completion({"images": [image]}, cost=cost)


def data_url(content: bytes = PNG) -> str:
    return "data:image/png;base64," + base64.b64encode(content).decode()


# name -> (status, body, headers); "ok_url"/"url_gone" are built by the handler.
REPLIES = {
    "ok": lambda: (200, with_image(data_url()), {}),
    "ok_no_cost": lambda: (200, with_image(data_url(), cost=None), {}),
    "402": lambda: (
        402,
        or_error(
            402,
            "Insufficient credits. This account never purchased credits. Make sure your key "
            "is on the correct account or org, and if so, purchase more at "
            "https://openrouter.ai/settings/credits",
        ),
        {},
    ),
    "402_lovable": lambda: (
        402,
        {"error": {"message": "Payment required, please add funds to your Lovable AI workspace."}},
        {},
    ),
    "401": lambda: (401, or_error(401, "User not found."), {}),
    "403_moderation": lambda: (
        403,
        or_error(
            403,
            "google/gemini-2.5-flash-image requires moderation on OpenAI. Your input was "
            'flagged for "violence/graphic". No credits were charged.',
            reasons=["violence/graphic"],
            flagged_input="A fox in the snow",
            provider_name="OpenAI",
            model_slug="google/gemini-2.5-flash-image",
        ),
        {},
    ),
    "404_modalities": lambda: (
        404,
        or_error(404, "No endpoints found that support the requested output modalities: image"),
        {},
    ),
    "429": lambda: (
        429,
        or_error(429, "Rate limit exceeded: free-models-per-min."),
        {"Retry-After": "7", "X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "0"},
    ),
    "429_quota_rewritten": lambda: (
        429,
        {
            "error": {
                "code": "429",
                "type": "throttling_error",
                "message": "You exceeded your current quota, please check your plan and billing "
                "details.",
            }
        },
        {},
    ),
    "500": lambda: (500, or_error(500, "Internal Server Error"), {}),
    "502": lambda: (502, or_error(502, "Provider returned error", provider_name="Google"), {}),
    "503": lambda: (
        503,
        or_error(503, "No allowed providers are available for the selected model."),
        {},
    ),
    "502_html": lambda: (502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", {}),
    "200_error_moderation": lambda: (
        200,
        {
            **completion({}),
            "choices": [],
            "error": {
                "code": 400,
                "message": "Request blocked by the provider's content filter (IMAGE_SAFETY).",
                "metadata": {"provider_name": "Google"},
            },
        },
        {},
    ),
    "200_error_credits": lambda: (
        200,
        {
            **completion({}),
            "choices": [],
            "error": {"code": 402, "message": "Insufficient credits to finish this request."},
        },
        {},
    ),
    "200_error_other": lambda: (
        200,
        {
            **completion({}),
            "choices": [],
            "error": {"code": 502, "message": "Upstream error from Google: stream ended."},
        },
        {},
    ),
    "200_choice_error": lambda: (
        200,
        {
            **completion({}, finish="error", native="ERROR"),
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "error",
                    "message": {"role": "assistant", "content": ""},
                    "error": {"code": 502, "message": "Provider disconnected."},
                }
            ],
        },
        {},
    ),
    "200_content_filter": lambda: (
        200,
        completion({"content": ""}, finish="content_filter", native="IMAGE_SAFETY"),
        {},
    ),
    "200_no_image": lambda: (
        200,
        completion({"content": "Here is a description of a fox in the snow."}),
        {},
    ),
    "broken_json": lambda: (200, b'{"id": "gen-1", "choices": [{"message": {"images', {}),
    "bad_data_url": lambda: (200, with_image("data:image/png;base64,not*base64!!"), {}),
    "not_image": lambda: (200, with_image(data_url(b"GIF89a but not really")), {}),
}


# Pictures a message may carry (OpenRouter: image inputs as URLs or base64 data URLs).
DATA_URL = re.compile(r"data:(image/(?:png|jpeg|webp|gif));base64,(.*)", re.DOTALL)
PILLOW_FORMATS = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/webp": "WEBP",
    "image/gif": "GIF",
}


def content_parts(content: list, call: dict) -> str | None:
    """Check a message's content parts as the gateway does: each a text part or an
    image_url whose url is an https URL or a base64 data URL of an image. Record the parts
    in order in call["parts"] and the inline pictures in call["images"]; return the
    gateway's message for a bad part, or None."""
    call["parts"], call["images"] = [], []
    for n, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            call["parts"].append(("text", part["text"]))
            continue
        if kind != "image_url":
            return f"messages[0].content[{n}]: unknown content part type '{kind}'"
        image_url = part.get("image_url")
        url = image_url.get("url") if isinstance(image_url, dict) else None
        if not isinstance(url, str):
            return f"messages[0].content[{n}].image_url.url is required"
        if url.startswith("https://"):
            call["parts"].append(("image", url))
            continue
        match = DATA_URL.fullmatch(url)
        if match is None:
            return (
                f"messages[0].content[{n}].image_url.url: Invalid image URL: expected an "
                "https URL or a base64 data URL of a PNG, JPEG, WebP or GIF image"
            )
        try:
            data = base64.b64decode(match.group(2), validate=True)
            with Image.open(io.BytesIO(data)) as picture:
                picture.verify()
                found = picture.format
                size = picture.size
        except Exception:  # noqa: BLE001 - bad base64 or bytes that are no picture
            found, size = None, None
        if found != PILLOW_FORMATS[match.group(1)]:
            return f"messages[0].content[{n}].image_url.url: the data URL is not a valid image"
        call["parts"].append(("image", match.group(1)))
        call["images"].append({"mime_type": match.group(1), "bytes": data, "size": size})
    return None


class FakeChatImages(LoopbackServer):
    path_prefix = "/api/v1"
    transient_reply = "502"  # "Provider returned error"
    out_of_credits_reply = "402"  # "Insufficient credits"

    def __init__(self, port: int = 0):
        self.valid_keys: set[str] | None = None  # None accepts any bearer key
        self.models = set(MODELS)
        self.files: dict[str, bytes] = {}
        # /key answers like OpenRouter; a gateway without it (Lovable) answers 404.
        self.key_endpoint = True
        super().__init__(port)

    class Handler(FakeHandler):
        def _auth_error(self):
            auth = self.headers.get("Authorization", "")
            key = auth.removeprefix("Bearer ").strip()
            if not auth.startswith("Bearer ") or not key:
                return 401, or_error(401, "No auth credentials found"), {}
            valid = self.service.valid_keys
            if valid is not None and key not in valid:
                return 401, or_error(401, "User not found."), {}
            return None

        def _reply(self, status, body, headers=None):
            if isinstance(body, bytes):
                kind = "text/html" if body.lstrip().startswith(b"<") else "application/json"
                return self.send_bytes(status, body, kind, headers)
            self.send_json(status, body, headers)

        def do_GET(self):
            service = self.service
            path = urlsplit(self.path).path
            if path.startswith("/files/"):
                content = service.files.get(path.removeprefix("/files/"))
                if content is None:
                    return self.send_bytes(404, b"Not Found", "text/plain")
                return self.send_bytes(200, content, "image/png")
            if (error := self._auth_error()) is not None:
                return self._reply(*error)
            if path == "/api/v1/key" and service.key_endpoint:
                return self._reply(
                    200,
                    {
                        "data": {
                            "label": "sk-or-v1-abc...xyz",
                            "limit": 10,
                            "limit_remaining": 9.25,
                            "usage": 0.75,
                            "is_free_tier": False,
                        }
                    },
                )
            if path == "/api/v1/models":
                data = [
                    {"id": model, "architecture": {"output_modalities": ["image", "text"]}}
                    for model in sorted(service.models)
                ]
                return self._reply(200, {"data": data})
            self._reply(404, b"<!DOCTYPE html><html><body>Not Found</body></html>")

        def do_POST(self):
            service = self.service
            raw = self.read_body()
            if urlsplit(self.path).path != "/api/v1/chat/completions":
                return self._reply(404, b"<!DOCTYPE html><html><body>Not Found</body></html>")
            call = service.record(
                {"authorization": self.headers.get("Authorization", ""), "raw": raw}
            )
            if (error := self._auth_error()) is not None:
                return self._reply(*error)
            try:
                body = json.loads(raw) if self.is_json() else None
            except ValueError:
                body = None
            if not isinstance(body, dict):
                return self._reply(400, or_error(400, "Invalid JSON body"))
            call["body"] = body
            model = body.get("model")
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                return self._reply(400, or_error(400, 'Input required: specify "messages"'))
            if not model:
                return self._reply(400, or_error(400, "No models provided"))
            if model not in service.models:
                return self._reply(400, or_error(400, f"{model} is not a valid model ID"))
            content = messages[-1].get("content") if isinstance(messages[-1], dict) else ""
            if isinstance(content, list):
                if (problem := content_parts(content, call)) is not None:
                    return self._reply(400, or_error(400, problem))
                call["prompt"] = " ".join(text for kind, text in call["parts"] if kind == "text")
            else:
                call["prompt"] = str(content or "")
            name = service.next_reply()
            call["reply"] = name
            if "image" not in (body.get("modalities") or []) and name == "ok":
                name = "200_no_image"
            if name in ("ok_url", "url_gone"):
                file = f"{uuid.uuid4().hex}.png"
                if name == "ok_url":
                    service.files[file] = PNG
                status, reply, headers = 200, with_image(f"{service.links}/files/{file}"), {}
            else:
                status, reply, headers = REPLIES[name]()
            if status == 200:
                service.wait_if_held()
            self._reply(status, reply, headers)
