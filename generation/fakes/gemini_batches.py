"""Gemini's batch mode on the loopback Gemini API, as strict as the service:
POST /v1beta/models/{model}:batchGenerateContent with inline requests
(`{"batch": {"displayName", "inputConfig": {"requests": {"requests": [{"request",
"metadata"}]}}}}`, at most 20 MB, each request as strict as generateContent), answered
with a long-running Operation named `batches/{id}`; GET /v1beta/batches/{id} polls it,
GET /v1beta/batches lists them a page at a time (?pageSize=, ?pageToken= from the last
page's nextPageToken), POST /v1beta/batches/{id}:cancel cancels it.

The operation's metadata is the batch (state BATCH_STATE_PENDING, RUNNING, SUCCEEDED,
FAILED, CANCELLED, EXPIRED; batchStats); once done, `response.inlinedResponses` holds one
response (or error) per request it finished, with the request's metadata. Knobs as the
OpenAI fake's: batch_seconds, expire with `partial` done, fail_lines (text in the prompt:
a blocked prompt), fail_batch; `newest_first` (the list's order is not documented: the
fake lists either way) and `others(count)` (other batches on the key).
"""

import base64
import threading
import time
import uuid
from datetime import UTC, datetime

MAX_INLINE_BYTES = 20 * 1024 * 1024
BATCH_MODELS = {
    "gemini-2.5-flash-image",
    "gemini-3-pro-image-preview",
    "gemini-3.1-flash-image",
    "gemini-3-pro-image",
}
OUTPUT_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatchOutput"
BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch"
# GET batches: a page holds at most this many (a larger pageSize is cut to it, as Google's
# list methods do; its true figure is not documented).
LIST_MOST = 100


def _rfc3339(seconds: float) -> str:
    return (
        datetime.fromtimestamp(seconds, tz=UTC)
        .isoformat(timespec="microseconds")
        .replace("+00:00", "Z")
    )


def _error(code: int, status: str, message: str) -> tuple[int, dict]:
    return code, {"error": {"code": code, "message": message, "status": status}}


class GeminiBatchDesk:
    """The batches one fake Gemini key holds."""

    def __init__(self, answer):
        self.answer = answer  # () -> a GenerateContentResponse with a picture
        self.lock = threading.Lock()
        self.batches: dict[str, dict] = {}
        self.batch_seconds = 0.3
        self.expire = False
        self.partial = 0.5
        self.fail_lines: list[str] = []  # text in the prompt: the prompt is blocked
        self.fail_batch = ""
        self.newest_first = True  # the list's order
        self.created = 0

    def create(self, model: str, body: object, raw_size: int, invalid) -> tuple[int, dict]:
        """POST models/{model}:batchGenerateContent; `invalid(request, call)` is
        generateContent's own check of one request (None when well formed; its inline
        pictures decoded, Google's 400 INVALID_ARGUMENT for a malformed one), which records
        what it saw in `call` (parts, images): the batch keeps these as "checked"."""
        if raw_size > MAX_INLINE_BYTES:
            return _error(
                400,
                "INVALID_ARGUMENT",
                f"Request payload size exceeds the limit: {MAX_INLINE_BYTES} bytes.",
            )
        batch = body.get("batch") if isinstance(body, dict) else None
        if not isinstance(batch, dict):
            return _error(400, "INVALID_ARGUMENT", "* batch: batch is not specified")
        if not str(batch.get("displayName") or "").strip():
            return _error(400, "INVALID_ARGUMENT", "* batch.display_name: is required")
        if model not in BATCH_MODELS:
            return _error(
                400, "INVALID_ARGUMENT", f"Batch mode is not supported for models/{model}."
            )
        requests = ((batch.get("inputConfig") or {}).get("requests") or {}).get("requests")
        if not isinstance(requests, list) or not requests:
            return _error(
                400, "INVALID_ARGUMENT", "* batch.input_config: requests or file_name is required"
            )
        prompts, checked = [], []
        for number, item in enumerate(requests):
            request = item.get("request") if isinstance(item, dict) else None
            call: dict = {}
            checked.append(call)
            problem = invalid(request, call) if isinstance(request, dict) else "request is required"
            if problem is not None:
                return _error(
                    400,
                    "INVALID_ARGUMENT",
                    f"* batch.input_config.requests.requests[{number}].request: {problem}",
                )
            prompts.append(
                " ".join(
                    str(part.get("text") or "")
                    for content in request["contents"]
                    for part in content.get("parts") or []
                    if isinstance(part, dict)
                )
            )
        now = time.time()
        name = f"batches/{uuid.uuid4().hex[:20]}"
        entry = {
            "name": name,
            "model": f"models/{model}",
            "displayName": batch["displayName"],
            "state": "BATCH_STATE_PENDING",
            "requests": requests,
            "prompts": prompts,
            "checked": checked,  # per request: its parts in order and its pictures, decoded
            "started": now,
            "created": now,  # createTime
            "done": None,  # how many it finished, once it ended
            "problem": self.fail_batch,
        }
        with self.lock:
            self.batches[name] = entry
            self.created += 1
            return 200, self._operation(entry)

    def get(self, name: str) -> tuple[int, dict]:
        with self.lock:
            entry = self.batches.get(name)
            if entry is None:
                return _error(404, "NOT_FOUND", f"Batch {name} not found.")
            return 200, self._operation(entry)

    def list(self, query: dict[str, list[str]]) -> tuple[int, dict]:
        """GET batches?pageSize=&pageToken=: `pageSize` operations a page (at most
        LIST_MOST), from where the last page's nextPageToken left off. Without a pageSize
        the list comes back empty, as the service answered then (python-genai#1250)."""
        raw = (query.get("pageSize") or [""])[-1]
        token = (query.get("pageToken") or [""])[-1]
        try:
            size = int(raw or 0)
        except ValueError:
            return _error(
                400, "INVALID_ARGUMENT", f"Invalid value at 'page_size' (TYPE_INT32), \"{raw}\""
            )
        if size < 0:
            return _error(400, "INVALID_ARGUMENT", "page_size must not be negative.")
        if size == 0:
            return 200, {}
        size = min(size, LIST_MOST)
        with self.lock:
            entries = sorted(
                self.batches.values(), key=lambda entry: entry["created"]
            )  # the order they were made in, oldest first
            if self.newest_first:
                entries.reverse()
            start = 0
            if token:
                try:
                    after = base64.urlsafe_b64decode(token.encode()).decode()
                except ValueError:
                    after = ""
                names = [entry["name"] for entry in entries]
                if after not in names:
                    return _error(400, "INVALID_ARGUMENT", "Invalid page token.")
                start = names.index(after) + 1
            page = entries[start : start + size]
            body: dict = {"operations": [self._operation(entry) for entry in page]}
            if start + size < len(entries):
                body["nextPageToken"] = base64.urlsafe_b64encode(page[-1]["name"].encode()).decode()
            return 200, body

    def others(self, count: int, *, age: float = 0.0) -> "list[str]":
        """Put `count` batches of someone else's on the key, made `age` seconds ago; return
        their names."""
        now = time.time()
        names = []
        with self.lock:
            for number in range(count):
                name = f"batches/other{uuid.uuid4().hex[:15]}"
                self.batches[name] = {
                    "name": name,
                    "model": "models/gemini-3.1-flash-image",
                    "displayName": f"other-{number}",
                    "state": "BATCH_STATE_PENDING",
                    "requests": [{"request": {}, "metadata": {"key": "other"}}],
                    "prompts": ["Someone else's picture."],
                    "started": now - age,
                    "created": now - age + number * 1e-6,  # one after another
                    "done": None,
                    "problem": "",
                }
                names.append(name)
        return names

    def cancel(self, name: str) -> tuple[int, dict]:
        with self.lock:
            entry = self.batches.get(name)
            if entry is None:
                return _error(404, "NOT_FOUND", f"Batch {name} not found.")
            self._advance(entry)
            if entry["done"] is not None:
                return _error(
                    400, "FAILED_PRECONDITION", f"Batch {name} is already in a terminal state."
                )
            entry["done"] = self._finished(entry)
            entry["state"] = "BATCH_STATE_CANCELLED"
            return 200, {}

    def _finished(self, entry: dict) -> int:
        share = min(1.0, (time.time() - entry["started"]) / (self.batch_seconds or 1e-9))
        if self.expire:
            share = min(share, self.partial)
        return int(len(entry["requests"]) * share)

    def _advance(self, entry: dict) -> None:
        if entry["done"] is not None:
            return
        elapsed = time.time() - entry["started"]
        if elapsed < self.batch_seconds * 0.1:
            return
        if entry["problem"]:
            entry.update(state="BATCH_STATE_FAILED", done=0)
            return
        entry["state"] = "BATCH_STATE_RUNNING"
        if elapsed >= self.batch_seconds:
            entry["done"] = self._finished(entry)
            entry["state"] = "BATCH_STATE_EXPIRED" if self.expire else "BATCH_STATE_SUCCEEDED"

    def _operation(self, entry: dict) -> dict:
        self._advance(entry)
        total = len(entry["requests"])
        done = entry["done"] if entry["done"] is not None else self._finished(entry)
        failed = sum(
            1 for prompt in entry["prompts"][:done] if any(t in prompt for t in self.fail_lines)
        )
        metadata = {
            "@type": BATCH_TYPE,
            "model": entry["model"],
            "name": entry["name"],
            "displayName": entry["displayName"],
            "createTime": _rfc3339(entry["created"]),
            "updateTime": _rfc3339(max(entry["created"], time.time())),
            "state": entry["state"],
            "batchStats": {
                "requestCount": str(total),
                "successfulRequestCount": str(done - failed),
                "failedRequestCount": str(failed),
                "pendingRequestCount": str(total - done),
            },
        }
        operation = {"name": entry["name"], "metadata": metadata}
        if entry["done"] is None:
            return operation
        operation["done"] = True
        if entry["state"] == "BATCH_STATE_FAILED":
            operation["error"] = {"code": 3, "message": entry["problem"]}
            return operation
        responses = []
        for item, prompt in list(zip(entry["requests"], entry["prompts"], strict=True))[:done]:
            if any(text in prompt for text in self.fail_lines):
                response = {
                    "promptFeedback": {"blockReason": "SAFETY"},
                    "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12},
                }
            else:
                response = self.answer()
            responses.append({"metadata": item.get("metadata") or {}, "response": response})
        operation["response"] = {
            "@type": OUTPUT_TYPE,
            "inlinedResponses": {"inlinedResponses": responses},
        }
        return operation
