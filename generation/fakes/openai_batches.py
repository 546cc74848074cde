"""The Files and Batches APIs of the loopback OpenAI service (economy mode), as strict as the
service: POST /v1/files (multipart, purpose "batch", a JSONL file whose every line is a
request with a unique custom_id), GET /v1/files (?purpose=), GET /v1/files/{id}/content,
POST /v1/batches (an uploaded input file, an endpoint it serves, completion window 24h),
GET /v1/batches (a page at a time: ?limit= 1 to 100, 20 unless given, ?after= a batch's id;
newest first, with has_more, first_id and last_id), GET /v1/batches/{id} and
POST /v1/batches/{id}/cancel.

A batch moves by the clock: validating, in_progress (its request counts rising), then
finalizing and completed, `batch_seconds` after it was created; its lines are drawn when
it ends. Validation as the service does it fails the whole batch (a line for another
endpoint, a model that takes no batches, a line that is not a request). Knobs: the time it
takes, expiry (only `batch_partial` of the lines were done), failed lines (by text in the
prompt, any reply of REPLIES), a batch that fails whole, and cancel (what was done by then
is kept); pass_time() moves the batches' clock on without waiting, and `others(count)`
puts other batches on the account (a busy one).

hold(step) keeps the next answer at one step waiting until release(), after the service
did its side, so that a test can kill the studio's worker while it waits on that answer:
"list_files" (GET /v1/files: nothing made yet), "upload" (the file is stored), "create"
(the batch is created) and "output" (the output file's headers and first half are sent).
"""

import base64
import io
import json
import threading
import time
import uuid

from PIL import Image

# The models and endpoints the Batch API takes for pictures.
# The Batch API announcement's list, and gpt-image-2, whose model page lists v1/batch.
BATCH_MODELS = {
    "gpt-image-2",
    "gpt-image-1.5",
    "gpt-image-1",
    "gpt-image-1-mini",
    "chatgpt-image-latest",
}
BATCH_ENDPOINTS = {"/v1/images/generations", "/v1/images/edits"}
# GET /v1/batches: a page holds `limit` batches, 20 unless asked, 100 at most.
LIST_DEFAULT, LIST_MOST = 20, 100
OTHER_ENDPOINTS = {
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/videos",
}

# The steps whose answer hold() can keep waiting.
HOLD_STEPS = ("list_files", "upload", "create", "output")


def _error(status: int, message: str, *, code=None, param=None) -> tuple[int, dict]:
    return status, {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": param,
            "code": code,
        }
    }


class BatchDesk:
    """The files and batches one fake account holds, and the knobs of their behaviour."""

    def __init__(self, png: bytes, replies: dict):
        self.png = png
        self.replies = replies  # the fake's REPLIES: a failed line answers as a live call
        self.lock = threading.Lock()
        self.files: dict[str, dict] = {}
        self.batches: dict[str, dict] = {}
        self.batch_seconds = 0.3  # from created to completed
        self.expire = False  # ends "expired" instead, with only `partial` of the lines done
        self.partial = 0.5
        self.fail_lines: list[tuple[str, str]] = []  # (text in the prompt, reply name)
        self.fail_batch = ""  # a message: validation fails the whole batch with it
        # A reply of REPLIES ("401", "429_quota", "500") for every Files and Batches call.
        self.refuse = ""
        self.created = 0  # batches created, in all
        self.uploads = 0
        self.downloads = 0
        self._holds: dict[str, tuple[threading.Event, threading.Event]] = {}
        self._gates: list[threading.Event] = []

    # --- holding an answer ----------------------------------------------------------

    def hold(self, step: str) -> threading.Event:
        """Keep the next successful answer at `step` (one of HOLD_STEPS) waiting until
        release(), once the service has done its side of it: the listing read, the file
        stored, the batch created, the output file's first half sent. Return an Event set
        when a request has reached that point (its client is waiting on the answer). One
        answer only: later ones at that step are not held."""
        if step not in HOLD_STEPS:
            raise ValueError(f"hold() takes one of {HOLD_STEPS}, not {step!r}")
        reached, gate = threading.Event(), threading.Event()
        with self.lock:
            self._holds[step] = (reached, gate)
            self._gates.append(gate)
        return reached

    def release(self) -> None:
        """Let every held answer go on (to a client that may be gone by then)."""
        with self.lock:
            gates = list(self._gates)
        for gate in gates:
            gate.set()

    def held(self, step: str) -> bool:
        """Called by the handler between the service's side of `step` and its answer: wait
        there if that step is held (at most a minute). Return whether it waited."""
        with self.lock:
            hold = self._holds.pop(step, None)
        if hold is None:
            return False
        reached, gate = hold
        reached.set()
        gate.wait(timeout=60)
        return True

    def is_output(self, file_id: str) -> bool:
        """Return whether the file is a batch's output file (the "output" hold's)."""
        with self.lock:
            entry = self.files.get(file_id)
        return entry is not None and entry["meta"]["filename"].endswith("_output.jsonl")

    # --- files ----------------------------------------------------------------------

    def upload(self, fields: dict, filename: str | None, content: bytes) -> tuple[int, dict]:
        purpose = fields.get("purpose")
        if purpose is None:
            return _error(400, "Missing required parameter: 'purpose'.", param="purpose")
        if purpose not in ("batch", "assistants", "fine-tune", "vision", "user_data", "evals"):
            return _error(400, f"Invalid value for 'purpose': '{purpose}'.", param="purpose")
        if filename is None:
            return _error(400, "Missing required parameter: 'file'.", param="file")
        lines = []
        if purpose == "batch":
            seen = set()
            for number, raw in enumerate(content.splitlines(), start=1):
                if not raw.strip():
                    continue
                try:
                    line = json.loads(raw)
                except ValueError:
                    return _error(
                        400,
                        f"Invalid file format for Batch API. Line {number} is not valid JSON.",
                        code="invalid_file_format",
                    )
                if not isinstance(line, dict) or not all(
                    key in line for key in ("custom_id", "method", "url", "body")
                ):
                    return _error(
                        400,
                        f"Invalid file format for Batch API. Line {number} must have "
                        "custom_id, method, url and body.",
                        code="invalid_file_format",
                    )
                if line["custom_id"] in seen:
                    return _error(
                        400,
                        f"The custom_id '{line['custom_id']}' on line {number} is not unique.",
                        code="duplicate_custom_id",
                    )
                seen.add(line["custom_id"])
                lines.append(line)
            if not lines:
                return _error(400, "The batch input file is empty.", code="invalid_file_format")
        item = {
            "id": f"file-{uuid.uuid4().hex[:24]}",
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
        }
        with self.lock:
            self.uploads += 1
            self.files[item["id"]] = {"meta": item, "content": content, "lines": lines}
        return 200, item

    def list_files(self, purpose: str | None) -> tuple[int, dict]:
        with self.lock:
            data = [
                entry["meta"]
                for entry in self.files.values()
                if purpose is None or entry["meta"]["purpose"] == purpose
            ]
        return 200, {"object": "list", "data": data, "has_more": False}

    def content(self, file_id: str) -> tuple[int, bytes | dict]:
        with self.lock:
            entry = self.files.get(file_id)
            if entry is not None:
                self.downloads += 1
        if entry is None:
            return _error(404, f"No such File object: {file_id}", param="id")
        return 200, entry["content"]

    # --- batches --------------------------------------------------------------------

    def create(self, body: dict) -> tuple[int, dict]:
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not body.get(name):
                return _error(400, f"Missing required parameter: '{name}'.", param=name)
        endpoint = body["endpoint"]
        if endpoint not in BATCH_ENDPOINTS | OTHER_ENDPOINTS:
            return _error(
                400,
                f"Invalid value: '{endpoint}'. Supported values are: "
                + ", ".join(sorted(BATCH_ENDPOINTS | OTHER_ENDPOINTS))
                + ".",
                param="endpoint",
                code="invalid_value",
            )
        if body["completion_window"] != "24h":
            return _error(
                400,
                f"Invalid value: '{body['completion_window']}'. Supported values are: '24h'.",
                param="completion_window",
                code="invalid_value",
            )
        metadata = body.get("metadata") or {}
        if not isinstance(metadata, dict) or len(metadata) > 16:
            return _error(400, "metadata: at most 16 keys.", param="metadata")
        with self.lock:
            entry = self.files.get(body["input_file_id"])
            if entry is None or entry["meta"]["purpose"] != "batch":
                return _error(
                    400,
                    f"Invalid 'input_file_id': '{body['input_file_id']}'. The file must be "
                    "uploaded with purpose 'batch'.",
                    param="input_file_id",
                )
            now = time.time()
            batch = {
                "id": f"batch_{uuid.uuid4().hex[:24]}",
                "object": "batch",
                "endpoint": endpoint,
                "errors": None,
                "input_file_id": body["input_file_id"],
                "completion_window": "24h",
                "status": "validating",
                "output_file_id": None,
                "error_file_id": None,
                "created_at": int(now),
                "in_progress_at": None,
                "expires_at": int(now) + 86400,
                "finalizing_at": None,
                "completed_at": None,
                "failed_at": None,
                "expired_at": None,
                "cancelling_at": None,
                "cancelled_at": None,
                "request_counts": {"total": 0, "completed": 0, "failed": 0},
                "metadata": metadata,
                "_started": now,
                "_lines": entry["lines"],
                "_problem": self._validate(endpoint, entry["lines"]),
            }
            self.batches[batch["id"]] = batch
            self.created += 1
            return 200, self._public(self._advance(batch))

    def _validate(self, endpoint: str, lines: list[dict]) -> str:
        """Return why validation fails the batch ("" when it passes), as the service does."""
        if self.fail_batch:
            return self.fail_batch
        for number, line in enumerate(lines, start=1):
            if line.get("method") != "POST":
                return f"Line {number}: the method must be POST."
            if line.get("url") != endpoint:
                return (
                    f"Line {number}: the url '{line.get('url')}' does not match the batch's "
                    f"endpoint '{endpoint}'."
                )
            body = line.get("body")
            if not isinstance(body, dict) or not str(body.get("prompt") or "").strip():
                return f"Line {number}: the body must have a prompt."
            if endpoint in BATCH_ENDPOINTS and body.get("model") not in BATCH_MODELS:
                return (
                    f"Line {number}: the model '{body.get('model')}' is not supported by the "
                    "Batch API for this endpoint."
                )
            if endpoint == "/v1/images/edits":
                images = body.get("images")
                if not isinstance(images, list) or not images or len(images) > 16:
                    return f"Line {number}: 'images' must list 1 to 16 pictures."
                for image in images:
                    url = image.get("image_url", "") if isinstance(image, dict) else ""
                    head, _, data = url.partition(",")
                    try:
                        if not head.startswith("data:image/"):
                            raise ValueError(head)
                        Image.open(io.BytesIO(base64.b64decode(data, validate=True))).verify()
                    except Exception:  # noqa: BLE001 - any undecodable picture is one refusal
                        return f"Line {number}: an image_url is not a picture's data URL."
        return ""

    def retrieve(self, batch_id: str) -> tuple[int, dict]:
        with self.lock:
            batch = self.batches.get(batch_id)
            if batch is None:
                return _error(404, f"No batch found with id '{batch_id}'.", param="batch_id")
            return 200, self._public(self._advance(batch))

    def list_batches(self, query: dict[str, list[str]]) -> tuple[int, dict]:
        """GET /v1/batches?limit=&after=: the account's batches newest first (created_at,
        then the order they were made), `limit` a page (1 to 100; 20 unless given), from
        the one after the batch `after` names. The service's answer to a cursor that names
        no batch is not documented: the fake refuses it."""
        raw = (query.get("limit") or [None])[-1]
        limit = LIST_DEFAULT
        if raw is not None:
            try:
                limit = int(raw)
            except ValueError:
                return _error(
                    400,
                    f"Invalid 'limit': expected an integer, but got '{raw}' instead.",
                    param="limit",
                    code="invalid_type",
                )
            if limit < 1:
                return _error(
                    400,
                    "Invalid 'limit': integer below minimum value. Expected a value >= 1, "
                    f"but got {limit} instead.",
                    param="limit",
                    code="integer_below_min_value",
                )
            if limit > LIST_MOST:
                return _error(
                    400,
                    "Invalid 'limit': integer above maximum value. Expected a value <= "
                    f"{LIST_MOST}, but got {limit} instead.",
                    param="limit",
                    code="integer_above_max_value",
                )
        after = (query.get("after") or [None])[-1]
        with self.lock:
            # Newest first; of two made the same second, the later first (a stable sort of
            # the newest-made-first list).
            ordered = sorted(
                reversed(list(self.batches.values())),
                key=lambda batch: batch["created_at"],
                reverse=True,
            )
            start = 0
            if after is not None:
                ids = [batch["id"] for batch in ordered]
                if after not in ids:
                    return _error(400, f"No batch found with id '{after}'.", param="after")
                start = ids.index(after) + 1
            page = ordered[start : start + limit]
            data = [self._public(self._advance(batch)) for batch in page]
            has_more = start + limit < len(ordered)
        return 200, {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": has_more,
        }

    def others(self, count: int, *, age: float = 0.0) -> list[str]:
        """Put `count` batches of someone else's on the account (their own input file and
        metadata), made `age` seconds ago; return their ids."""
        line = {
            "custom_id": "other-1",
            "method": "POST",
            "url": "/v1/images/generations",
            "body": {"model": "gpt-image-1", "prompt": "Someone else's picture."},
        }
        status, item = self.upload(
            {"purpose": "batch"}, "other.jsonl", json.dumps(line).encode() + b"\n"
        )
        assert status == 200, item
        ids = []
        for number in range(count):
            status, batch = self.create(
                {
                    "input_file_id": item["id"],
                    "endpoint": "/v1/images/generations",
                    "completion_window": "24h",
                    "metadata": {"job": f"other-{number}"},
                }
            )
            assert status == 200, batch
            ids.append(batch["id"])
        with self.lock:
            for batch_id in ids:
                self.batches[batch_id]["created_at"] -= int(age)
        return ids

    def cancel(self, batch_id: str) -> tuple[int, dict]:
        with self.lock:
            batch = self.batches.get(batch_id)
            if batch is None:
                return _error(404, f"No batch found with id '{batch_id}'.", param="batch_id")
            self._advance(batch)
            if batch["status"] in ("completed", "expired", "cancelled", "failed"):
                return _error(
                    409,
                    f"Cannot cancel a batch with status '{batch['status']}'.",
                    code="batch_not_cancellable",
                )
            if batch["status"] != "cancelling":
                batch["status"] = "cancelling"
                batch["cancelling_at"] = int(time.time())
                batch["_done_at_cancel"] = self._done(batch)
            return 200, self._public(batch)

    # --- the clock ------------------------------------------------------------------

    def _done(self, batch: dict) -> int:
        """Lines finished by now: they rise with the time in progress."""
        elapsed = time.time() - batch["_started"]
        share = min(1.0, elapsed / self.batch_seconds) if self.batch_seconds else 1.0
        if self.expire:
            share = min(share, self.partial)
        return int(len(batch["_lines"]) * share)

    def _advance(self, batch: dict) -> dict:
        """Move the batch on to where the clock has it. Call with the lock held."""
        status = batch["status"]
        if status in ("completed", "expired", "cancelled", "failed"):
            return batch
        now = time.time()
        elapsed = now - batch["_started"]
        if status == "cancelling":
            self._end(batch, "cancelled", done=batch["_done_at_cancel"])
            return batch
        if status == "validating" and elapsed >= self.batch_seconds * 0.1:
            if batch["_problem"]:
                batch.update(
                    status="failed",
                    failed_at=int(now),
                    errors={
                        "object": "list",
                        "data": [{"code": "invalid_request", "message": batch["_problem"]}],
                    },
                )
                return batch
            batch.update(status="in_progress", in_progress_at=int(now))
        if batch["status"] == "in_progress":
            total = len(batch["_lines"])
            batch["request_counts"] = {"total": total, "completed": self._done(batch), "failed": 0}
            if elapsed >= self.batch_seconds:
                if self.expire:
                    self._end(batch, "expired", done=self._done(batch))
                else:
                    batch.update(status="finalizing", finalizing_at=int(now))
        elif batch["status"] == "finalizing" and elapsed >= self.batch_seconds * 1.1:
            self._end(batch, "completed", done=len(batch["_lines"]))
        return batch

    def _end(self, batch: dict, status: str, *, done: int) -> None:
        """Write the output and error files of the lines done, and end the batch."""
        output, errors = [], []
        completed = failed = 0
        for index, line in enumerate(batch["_lines"]):
            custom_id = line["custom_id"]
            if index >= done:
                code = "batch_expired" if status == "expired" else "batch_cancelled"
                errors.append(
                    {
                        "id": f"batch_req_{uuid.uuid4().hex[:16]}",
                        "custom_id": custom_id,
                        "response": None,
                        "error": {
                            "code": code,
                            "message": "This request could not be executed before the "
                            "completion window expired."
                            if status == "expired"
                            else "This request was cancelled.",
                        },
                    }
                )
                continue
            reply = self._line_reply(line)
            if reply is None:
                completed += 1
                body = {
                    "created": int(time.time()),
                    "data": [{"b64_json": base64.b64encode(self.png).decode()}],
                    "usage": {"input_tokens": 50, "output_tokens": 1056, "total_tokens": 1106},
                }
                output.append(
                    {
                        "id": f"batch_req_{uuid.uuid4().hex[:16]}",
                        "custom_id": custom_id,
                        "response": {
                            "status_code": 200,
                            "request_id": f"req_{uuid.uuid4().hex[:12]}",
                            "body": body,
                        },
                        "error": None,
                    }
                )
            else:
                failed += 1
                errors.append(
                    {
                        "id": f"batch_req_{uuid.uuid4().hex[:16]}",
                        "custom_id": custom_id,
                        "response": {
                            "status_code": reply.status,
                            "request_id": f"req_{uuid.uuid4().hex[:12]}",
                            "body": json.loads(reply.body),
                        },
                        "error": None,
                    }
                )
        now = int(time.time())
        batch["status"] = status
        batch[f"{status}_at"] = now
        batch["request_counts"] = {
            "total": len(batch["_lines"]),
            "completed": completed,
            "failed": failed,
        }
        batch["output_file_id"] = self._result_file(batch, output, "output") if output else None
        batch["error_file_id"] = self._result_file(batch, errors, "error") if errors else None

    def _line_reply(self, line: dict):
        prompt = str(line["body"].get("prompt") or "")
        for text, name in self.fail_lines:
            if text in prompt:
                return self.replies[name]()
        return None

    def _result_file(self, batch: dict, lines: list[dict], kind: str) -> str:
        content = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        meta = {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": f"{batch['id']}_{kind}.jsonl",
            "purpose": "batch_output",
        }
        self.files[file_id] = {"meta": meta, "content": content, "lines": []}
        return file_id

    @staticmethod
    def _public(batch: dict) -> dict:
        return {key: value for key, value in batch.items() if not key.startswith("_")}

    def pass_time(self, seconds: float) -> None:
        """Move every batch's clock on by `seconds`, as if they had passed (never slept):
        the next look at a batch finds it where that time has it."""
        with self.lock:
            for batch in self.batches.values():
                batch["_started"] -= seconds

    def statuses(self) -> list[str]:
        with self.lock:
            return [batch["status"] for batch in self.batches.values()]
