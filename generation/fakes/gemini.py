"""A loopback Gemini API (generativelanguage v1beta) that answers like Google does.

POST /v1beta/models/{model}:generateContent answers a `GenerateContentResponse` whose image
is an `inlineData` part, or one of the refusals Gemini sends with HTTP 200 (a blocked
prompt, an IMAGE_SAFETY finish, text only), or an error in Google's envelope
`{"error": {"code", "message", "status", "details"}}` with the details real answers carry
(RetryInfo, QuotaFailure, ErrorInfo). GET /v1beta/models/{model} is the free model look-up.

As strict as the service: no `x-goog-api-key` (nor `?key=`) → 403 PERMISSION_DENIED; a key
it does not know → 400 API_KEY_INVALID; a body that is not JSON → 400 INVALID_ARGUMENT;
no `contents`, an unknown field, a modality or aspect ratio it does not take → 400
INVALID_ARGUMENT; an inlineData picture of a MIME type it does not take, bad base64, bytes
that are no picture, or a request over 20 MB → 400 INVALID_ARGUMENT; a model it does not
know → 404 NOT_FOUND. Each call records its parts in order ("text" or "image") and pictures.
"""

import base64
import binascii
import io
import json
import uuid
from urllib.parse import parse_qs, urlsplit

from PIL import Image

from .base import FakeHandler, LoopbackServer
from .gemini_batches import GeminiBatchDesk
from .openai import png_bytes

PNG = png_bytes(colour=(200, 160, 60))
MODELS = {
    "gemini-3.1-flash-image",
    "gemini-3-pro-image",
    "gemini-2.5-flash-image",
    "gemini-3-pro-image-preview",
    "gemini-2.5-flash",
}
ASPECT_RATIOS = {"1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"}
REQUEST_FIELDS = {
    "contents",
    "generationConfig",
    "safetySettings",
    "systemInstruction",
    "tools",
    "toolConfig",
    "cachedContent",
}
GENERATION_FIELDS = {
    "responseModalities",
    "imageConfig",
    "candidateCount",
    "temperature",
    "topP",
    "topK",
    "seed",
    "maxOutputTokens",
    "stopSequences",
    "responseMimeType",
}
TYPE = "type.googleapis.com/google.rpc."
USAGE = {
    "promptTokenCount": 12,
    "candidatesTokenCount": 1290,
    "totalTokenCount": 1302,
    "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 1290}],
}


def google_error(code: int, status: str, message: str, details=None) -> dict:
    error = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return {"error": error}


def image_part(content: bytes = PNG) -> dict:
    return {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(content).decode()}}


def answer(parts: list, finish: str = "STOP", **extra) -> dict:
    candidate = {"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}
    return {
        "candidates": [candidate],
        "usageMetadata": USAGE,
        "modelVersion": "gemini-3.1-flash-image",
        "responseId": uuid.uuid4().hex[:22],
        **extra,
    }


def blocked(reason: str) -> dict:
    return {
        "promptFeedback": {"blockReason": reason},
        "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12},
        "modelVersion": "gemini-3.1-flash-image",
        "responseId": uuid.uuid4().hex[:22],
    }


QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
)


def quota_failure(value: str) -> dict:
    return {
        "@type": TYPE + "QuotaFailure",
        "violations": [
            {
                "quotaMetric": "generativelanguage.googleapis.com/"
                "generate_content_free_tier_requests",
                "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                "quotaDimensions": {"location": "global", "model": "gemini-2.5-flash-image"},
                "quotaValue": value,
            }
        ],
    }


# name -> (HTTP status, body); a body of bytes goes out as it is (broken or HTML answers).
REPLIES = {
    "ok": lambda: (200, answer([image_part()])),
    "ok_text_then_image": lambda: (
        200,
        answer([{"text": "Here is your fox."}, image_part()]),
    ),
    "ok_second_candidate": lambda: (
        200,
        {
            **answer([{"text": "A first thought."}]),
            "candidates": [
                {"content": {"role": "model", "parts": [{"text": "Hmm."}]}, "index": 0},
                {"content": {"role": "model", "parts": [image_part()]}, "index": 1},
            ],
        },
    ),
    "blocked_safety": lambda: (200, blocked("SAFETY")),
    "blocked_prohibited": lambda: (200, blocked("PROHIBITED_CONTENT")),
    "blocked_other": lambda: (200, blocked("OTHER")),
    "finish_image_safety": lambda: (200, answer([], finish="IMAGE_SAFETY")),
    "finish_prohibited": lambda: (200, answer([], finish="PROHIBITED_CONTENT")),
    "finish_image_prohibited": lambda: (200, answer([], finish="IMAGE_PROHIBITED_CONTENT")),
    "finish_safety": lambda: (200, answer([], finish="SAFETY")),
    "finish_no_image": lambda: (200, answer([], finish="NO_IMAGE")),
    "finish_other": lambda: (200, answer([], finish="OTHER")),
    "text_only": lambda: (
        200,
        answer([{"text": "I can't create images of that. Can I help with something else?"}]),
    ),
    "empty": lambda: (200, {"candidates": [], "usageMetadata": USAGE}),
    "bad_b64": lambda: (
        200,
        answer([{"inlineData": {"mimeType": "image/png", "data": "not*base64!!"}}]),
    ),
    "not_image": lambda: (200, answer([image_part(b"GIF89a but not really")])),
    "broken_json": lambda: (200, b'{"candidates": [{"content": {"parts": [{"inlineData'),
    "429_rate": lambda: (
        429,
        google_error(
            429,
            "RESOURCE_EXHAUSTED",
            QUOTA_MESSAGE,
            [
                quota_failure("10"),
                {
                    "@type": TYPE + "Help",
                    "links": [{"description": "Learn more", "url": "https://ai.google.dev/"}],
                },
                {"@type": TYPE + "RetryInfo", "retryDelay": "22s"},
            ],
        ),
    ),
    "429_quota_zero": lambda: (
        429,
        google_error(
            429,
            "RESOURCE_EXHAUSTED",
            QUOTA_MESSAGE,
            [quota_failure("0"), {"@type": TYPE + "RetryInfo", "retryDelay": "41s"}],
        ),
    ),
    "402": lambda: (
        402,
        google_error(
            402,
            "RESOURCE_EXHAUSTED",
            "Your prepayment credits are depleted. Please go to AI Studio to add credits.",
        ),
    ),
    "400_precondition": lambda: (
        400,
        google_error(400, "FAILED_PRECONDITION", "User location is not supported for the API use."),
    ),
    "400_key_invalid": lambda: (400, key_invalid()),
    "403_denied": lambda: (
        403,
        google_error(
            403,
            "PERMISSION_DENIED",
            "Generative Language API has not been used in project 123 before or it is disabled.",
        ),
    ),
    "404_model": lambda: (404, model_not_found("gemini-2.5-flash-imag")),
    "500": lambda: (
        500,
        google_error(500, "INTERNAL", "An internal error has occurred. Please retry."),
    ),
    "503": lambda: (
        503,
        google_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
    ),
    "504": lambda: (
        504,
        google_error(504, "DEADLINE_EXCEEDED", "The request timed out. Please try again."),
    ),
    "502_html": lambda: (502, b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>"),
}


def key_invalid() -> dict:
    return google_error(
        400,
        "INVALID_ARGUMENT",
        "API key not valid. Please pass a valid API key.",
        [
            {
                "@type": TYPE + "ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
        ],
    )


def model_not_found(model: str) -> dict:
    return google_error(
        404,
        "NOT_FOUND",
        f"models/{model} is not found for API version v1beta, or is not supported for "
        "generateContent. Call ListModels to see the list of available models and their "
        "supported methods.",
    )


def invalid(message: str) -> dict:
    return google_error(400, "INVALID_ARGUMENT", message)


# What an inline picture may be (ai.google.dev, image understanding: supported formats).
INLINE_TYPES = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/webp": "WEBP",
    "image/heic": None,
    "image/heif": None,
}
MAX_REQUEST_BYTES = 20 * 1024 * 1024  # inline data: the whole request is at most 20 MB


def inline_parts(contents: list, call: dict) -> str | None:
    """Check every inline picture as Gemini does (a MIME type it takes, valid base64, an
    image that decodes); record the parts in order in call["parts"] ("text" or "image")
    and the pictures in call["images"]. Return Google's message for a bad one, or None."""
    call["parts"], call["images"] = [], []
    for c, content in enumerate(contents):
        for p, part in enumerate(content.get("parts") or [] if isinstance(content, dict) else []):
            if not isinstance(part, dict):
                continue
            inline = part.get("inlineData", part.get("inline_data"))
            if inline is None:
                if "text" in part:
                    call["parts"].append(("text", part["text"]))
                continue
            where = f"contents[{c}].parts[{p}].inline_data"
            if not isinstance(inline, dict):
                return f"Invalid value at '{where}': expected an object."
            mime = inline.get("mimeType", inline.get("mime_type"))
            if mime not in INLINE_TYPES:
                return f"Unsupported MIME type: {mime}"
            data = inline.get("data")
            try:
                content_bytes = base64.b64decode(str(data or ""), validate=True)
            except (binascii.Error, ValueError):
                return (
                    f"Invalid value at '{where}.data' (TYPE_BYTES), Base64 decoding failed "
                    f'for "{str(data)[:40]}"'
                )
            image = {"mime_type": mime, "bytes": content_bytes}
            if INLINE_TYPES[mime] is not None:
                try:
                    with Image.open(io.BytesIO(content_bytes)) as picture:
                        picture.verify()
                        image.update(
                            format=picture.format, width=picture.width, height=picture.height
                        )
                except Exception:  # noqa: BLE001 - any decoding failure is the same refusal
                    image["format"] = None
                if image["format"] != INLINE_TYPES[mime]:
                    return (
                        "Unable to process input image. Please retry or report in "
                        "https://developers.generativeai.google/guide/troubleshooting"
                    )
            call["parts"].append(("image", mime))
            call["images"].append(image)
    return None


class FakeGemini(LoopbackServer):
    path_prefix = "/v1beta"
    transient_reply = "503"  # "The model is overloaded", Gemini's most common failure
    out_of_credits_reply = "402"  # prepaid credits used up

    def __init__(self, port: int = 0):
        self.valid_keys: set[str] | None = None  # None accepts any non-empty key
        self.max_request_bytes = MAX_REQUEST_BYTES
        self.models = set(MODELS)
        # Batch mode (economy): fake_gemini.batches has its knobs.
        self.batches = GeminiBatchDesk(lambda: REPLIES["ok"]()[1])
        super().__init__(port)

    class Handler(FakeHandler):
        def _key_error(self):
            query = parse_qs(urlsplit(self.path).query)
            key = self.headers.get("x-goog-api-key") or (query.get("key") or [""])[0]
            if not key:
                return 403, google_error(
                    403,
                    "PERMISSION_DENIED",
                    "Method doesn't allow unregistered callers (callers without established "
                    "identity). Please use API Key or other form of API consumer identity to "
                    "call this API.",
                )
            valid = self.service.valid_keys
            if valid is not None and key not in valid:
                return 400, key_invalid()
            return None

        def _reply(self, status: int, body):
            if isinstance(body, bytes):
                kind = "text/html" if body.lstrip().startswith(b"<") else "application/json"
                return self.send_bytes(status, body, kind)
            self.send_json(status, body, content_type="application/json; charset=UTF-8")

        def _batches(self, method: str, path: str, raw: bytes = b"", query: dict | None = None):
            """Batch mode: models/{model}:batchGenerateContent, batches, batches/{id},
            batches/{id}:cancel (generation.fakes.gemini_batches)."""
            desk = self.service.batches
            if (error := self._key_error()) is not None:
                return self._reply(*error)
            self.service.record(
                {"path": path, "query": query or {}, "method": method, "batch_api": True}
            )
            name = path.removeprefix("/v1beta/")
            if method == "POST" and name.endswith(":batchGenerateContent"):
                model = name.removeprefix("models/").removesuffix(":batchGenerateContent")
                try:
                    body = json.loads(raw) if self.is_json() else None
                except ValueError:
                    body = None

                def invalid(request: dict, call: dict) -> str | None:
                    return self._invalid(json.dumps(request).encode(), call)

                return self._reply(*desk.create(model, body, len(raw), invalid))
            if method == "POST" and name.startswith("batches/") and name.endswith(":cancel"):
                return self._reply(*desk.cancel(name.removesuffix(":cancel")))
            if method == "GET" and name == "batches":
                return self._reply(*desk.list(query or {}))
            if method == "GET" and name.startswith("batches/"):
                return self._reply(*desk.get(name))
            return self._reply(404, b"<!DOCTYPE html><html>Error 404 (Not Found)</html>")

        def do_GET(self):
            url = urlsplit(self.path)
            path = url.path
            if path.startswith("/v1beta/batches"):
                return self._batches("GET", path, query=parse_qs(url.query))
            if not path.startswith("/v1beta/models/"):
                return self._reply(404, b"<!DOCTYPE html><html>Error 404 (Not Found)</html>")
            if (error := self._key_error()) is not None:
                return self._reply(*error)
            model = path.removeprefix("/v1beta/models/")
            if model not in self.service.models:
                return self._reply(404, model_not_found(model))
            self._reply(
                200,
                {
                    "name": f"models/{model}",
                    "version": "2.0",
                    "displayName": model,
                    "supportedGenerationMethods": ["generateContent", "countTokens"],
                },
            )

        def do_POST(self):
            service = self.service
            raw = self.read_body()
            path = urlsplit(self.path).path
            if path.endswith(":batchGenerateContent") or path.startswith("/v1beta/batches/"):
                return self._batches("POST", path, raw)
            model, _, method = path.removeprefix("/v1beta/models/").partition(":")
            if not path.startswith("/v1beta/models/") or method != "generateContent":
                return self._reply(404, b"<!DOCTYPE html><html>Error 404 (Not Found)</html>")
            call = service.record(
                {
                    "model": model,
                    "key": self.headers.get("x-goog-api-key", ""),
                    "content_type": self.headers.get("Content-Type", ""),
                    "raw": raw,
                }
            )
            if (error := self._key_error()) is not None:
                return self._reply(*error)
            if model not in service.models:
                return self._reply(404, model_not_found(model))
            if (problem := self._invalid(raw, call)) is not None:
                return self._reply(400, invalid(problem))
            name = service.next_reply()
            call["reply"] = name
            status, body = REPLIES[name]()
            if status == 200:
                service.wait_if_held()
            self._reply(status, body)

        def _invalid(self, raw: bytes, call: dict) -> str | None:
            """Return Google's message for a malformed request, or None."""
            if not self.is_json():
                return "Invalid JSON payload received. Unexpected token."
            try:
                body = json.loads(raw)
            except ValueError:
                return "Invalid JSON payload received. Unexpected token."
            if not isinstance(body, dict):
                return "Invalid JSON payload received. Expected an object."
            call["body"] = body
            for name in body:
                if name not in REQUEST_FIELDS:
                    return (
                        f'Invalid JSON payload received. Unknown name "{name}": Cannot find field.'
                    )
            contents = body.get("contents")
            if not isinstance(contents, list) or not contents:
                return "* GenerateContentRequest.contents: contents is not specified"
            texts = [
                part.get("text")
                for content in contents
                if isinstance(content, dict)
                for part in content.get("parts") or []
                if isinstance(part, dict) and "text" in part
            ]
            if not any(isinstance(text, str) and text.strip() for text in texts):
                return "* GenerateContentRequest.contents[0].parts: contains an empty Part."
            call["prompt"] = " ".join(texts)
            if len(raw) > self.service.max_request_bytes:
                return (
                    "Request payload size exceeds the limit: "
                    f"{self.service.max_request_bytes} bytes."
                )
            if (problem := inline_parts(contents, call)) is not None:
                return problem
            config = body.get("generationConfig") or {}
            for name in config:
                if name not in GENERATION_FIELDS:
                    return (
                        f'Invalid JSON payload received. Unknown name "{name}" at '
                        "'generation_config': Cannot find field."
                    )
            for modality in config.get("responseModalities") or []:
                if modality not in ("TEXT", "IMAGE", "AUDIO"):
                    return (
                        "Invalid value at 'generation_config.response_modalities[0]' "
                        "(type.googleapis.com/google.ai.generativelanguage.v1beta.Modality), "
                        f'"{modality}"'
                    )
            ratio = (config.get("imageConfig") or {}).get("aspectRatio")
            if ratio is not None and ratio not in ASPECT_RATIOS:
                return (
                    "* GenerateContentRequest.generation_config.image_config.aspect_ratio: "
                    f"unsupported aspect ratio {ratio}"
                )
            return None
