"""OpenAI's Batch API for the Images API (economy mode): a JSONL file of requests uploaded
with POST {base}/files (purpose "batch"), one batch created from it with POST {base}/batches
(endpoint /v1/images/generations or /v1/images/edits, completion window 24h), polled with
GET {base}/batches/{id}, canceled with POST {base}/batches/{id}/cancel; its results are the
JSONL output and error files (GET {base}/files/{id}/content), one line per request, matched
by `custom_id`.

Only translation, as for live calls: answers become `BatchState`, pictures or the error
classes of base.py. Finding a file by its name and a batch by its metadata lets the studio
look for what a killed worker may have made before it makes it again.
"""

import base64
import binascii
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import requests

from .. import catalogue
from .base import GeneratedImage, ImageRequest, ProviderError, Transient, verify_image
from .http import Deadline, as_json, read_capped
from .openai import REFERENCE_SIDE, OpenAIProvider, classify, takes_input_fidelity
from .references import named_prompt, prepared

COMPLETION_WINDOW = "24h"
GENERATIONS, EDITS = "/v1/images/generations", "/v1/images/edits"
# A batch's statuses as the service names them, and those it never leaves.
STATUSES = (
    "validating",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
    "failed",
)
ENDED = frozenset({"completed", "expired", "cancelled", "failed"})
# One request line, references included, at most this big: the input file may weigh
# 200 MB in all, and a page whose pictures pass this fails alone, not the batch.
MAX_LINE_BYTES = 20 * 1024 * 1024
# A result file holds a picture per line: 24 pages of 1024 px weigh some 60 MB.
MAX_OUTPUT_BYTES = 2 * 1024**3
# The metadata key that names the studio's batch: how a batch a killed worker created is
# found again instead of created twice.
STUDIO_KEY = "studio_batch"
# Looking for that batch, the service's list of batches is read a page at a time (GET
# /batches?limit=&after=, newest first, LIST_LIMIT at most a page), down to the batches
# created before the studio wrote its own (SEARCH_SKEW earlier, for the two clocks), and
# never past SEARCH_PAGES pages: a search cut short finds nothing, it fails (SearchIncomplete).
LIST_LIMIT = 100
SEARCH_PAGES = 50
SEARCH_SKEW = timedelta(minutes=15)


class LineTooLarge(ProviderError):
    """A page's request is larger than one batch line may be: that page fails, the batch
    goes on without it."""

    outcome = "rejected"


class SearchIncomplete(Transient):
    """The studio could not read far enough into the service's batches to tell whether a
    batch it may have created is there: it creates none (one may exist, and a second would
    be paid twice) and looks again later."""


def search_pages(
    fetch: Callable[[str | None], tuple[list[dict], str | None]],
    *,
    matches: Callable[[dict], bool],
    created: Callable[[dict], datetime | None],
    since: datetime | None,
    most_pages: int,
    service: str,
) -> dict | None:
    """Return the first listed item that `matches`, reading the pages `fetch(token)` gives
    ((items, the next page's token or None)) one after another; None once the list has
    ended, or once it has reached items created before `since` (less SEARCH_SKEW), which
    is trusted only while the list has shown itself newest first (each item no newer than
    the one before it). Raise SearchIncomplete after `most_pages` pages that settled
    neither."""
    cutoff = None if since is None else since - SEARCH_SKEW
    newest_first, oldest = True, None
    token = None
    for _ in range(most_pages):
        items, token = fetch(token)
        for item in items:
            if matches(item):
                return item
            when = created(item)
            if when is None or (oldest is not None and when > oldest):
                newest_first = False
            oldest = when if when is not None else oldest
        if token is None:
            return None  # the whole list was read
        if cutoff is not None and newest_first and oldest is not None and oldest < cutoff:
            return None  # the rest was created before the studio wrote its batch
    raise SearchIncomplete(
        f"The studio read {most_pages} pages of the batches at {service} without reaching "
        "the list's end or the batches made before this one, so it cannot tell whether the "
        "batch was already created; it creates none (a second would be paid twice) and "
        "looks again later."
    )


def _unix(value) -> datetime | None:
    """Return an epoch-seconds `created_at` as an aware datetime (None if there is none)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return datetime.fromtimestamp(value, tz=UTC)


@dataclass(frozen=True)
class BatchState:
    """A batch as the service reports it, in the studio's words."""

    id: str
    status: str  # one of STATUSES
    total: int = 0
    completed: int = 0
    failed: int = 0
    output_file_id: str = ""
    error_file_id: str = ""
    message: str = ""  # why the whole batch failed (validation errors)
    raw: dict | None = None

    @property
    def ended(self) -> bool:
        return self.status in ENDED


class OpenAIBatches(OpenAIProvider):
    """The Batch API on the same endpoint, key and model as live calls."""

    # What one batch takes: 50,000 requests, an input file of 200 MB (some room kept).
    max_batch_lines = 50_000
    max_batch_bytes = 190 * 1024 * 1024

    def endpoint(self, request: ImageRequest) -> str:
        """Return the batch endpoint a request goes to: edits for a page with references."""
        return EDITS if request.references and self.max_references else GENERATIONS

    def line(self, custom_id: str, request: ImageRequest) -> bytes:
        """Return the request as one JSONL line (references inline, base64); raise
        LineTooLarge when it passes MAX_LINE_BYTES."""
        references = prepared(request, limit=self.max_references, max_side=REFERENCE_SIDE)
        prompt = named_prompt(request.prompt, [reference for reference, _ in references])
        body = {"model": self.model, "prompt": prompt, "size": request.size, "n": 1}
        if response_format := catalogue.model("openai", self.model).response_format:
            body["response_format"] = response_format
        if references:
            body["images"] = [{"image_url": picture.data_url()} for _, picture in references]
            if takes_input_fidelity(self.model):
                body["input_fidelity"] = "high"
        endpoint = self.endpoint(request)
        line = {"custom_id": custom_id, "method": "POST", "url": endpoint, "body": body}
        encoded = json.dumps(line, separators=(",", ":")).encode()
        if len(encoded) > MAX_LINE_BYTES:
            raise LineTooLarge(
                f"This page's request with its reference pictures weighs "
                f"{len(encoded) / 2**20:.1f} MB, over the {MAX_LINE_BYTES // 2**20} MB a batch "
                f"request may weigh; draw it now, or send fewer references."
            )
        return encoded

    # --- the input file -------------------------------------------------------------

    def find_file(self, filename: str) -> str:
        """Return the id of the batch input file of that name at the service ("" if none)."""
        payload = self._get("/files", params={"purpose": "batch", "limit": 10000})
        for item in payload.get("data") or []:
            if isinstance(item, dict) and item.get("filename") == filename:
                return str(item.get("id") or "")
        return ""

    def upload(self, filename: str, content: bytes) -> str:
        """Upload the JSONL input file; return its id."""
        answer = self._send(
            "POST",
            "/files",
            data=[("purpose", "batch")],
            files=[("file", (filename, content, "application/jsonl"))],
        )
        file_id = answer.get("id")
        if not file_id:
            raise Transient("The image service answered the upload without a file id.")
        return str(file_id)

    # --- the batch ------------------------------------------------------------------

    def find_batch(self, key: str, *, since: datetime | None = None) -> BatchState | None:
        """Return the batch whose metadata names the studio's batch `key`, if the service
        has one (a worker killed after creating it never stored its id). `since`: when the
        studio wrote that batch; the search reads the list no further back (search_pages).
        Raise SearchIncomplete when it could not read that far."""

        def page(after: str | None) -> tuple[list[dict], str | None]:
            params = {"limit": LIST_LIMIT} | ({"after": after} if after else {})
            payload = self._get("/batches", params=params)
            data = [item for item in payload.get("data") or [] if isinstance(item, dict)]
            has_more = payload.get("has_more")
            if has_more is False or (has_more is None and not data):
                return data, None
            # The next page starts after the last batch of this one (the SDK's cursor).
            cursor = (data[-1].get("id") if data else None) or payload.get("last_id")
            if not cursor:
                raise SearchIncomplete(
                    "The image service listed batches with more to come but no cursor."
                )
            return data, str(cursor)

        def matches(item: dict) -> bool:
            metadata = item.get("metadata")
            return isinstance(metadata, dict) and metadata.get(STUDIO_KEY) == key

        found = search_pages(
            page,
            matches=matches,
            created=lambda item: _unix(item.get("created_at")),
            since=since,
            most_pages=SEARCH_PAGES,
            service=self.service,
        )
        return None if found is None else self._state(found)

    def create(self, *, key: str, input_file_id: str, endpoint: str, lines=None) -> BatchState:
        """Create the batch from the uploaded file (`lines` is for services whose batches
        take their requests inline; this one reads the file)."""
        body = {
            "input_file_id": input_file_id,
            "endpoint": endpoint,
            "completion_window": COMPLETION_WINDOW,
            "metadata": {STUDIO_KEY: key},
        }
        return self._state(self._send("POST", "/batches", json_body=body))

    def retrieve(self, batch_id: str) -> BatchState:
        return self._state(self._get(f"/batches/{batch_id}"))

    def cancel(self, batch_id: str) -> BatchState:
        return self._state(self._send("POST", f"/batches/{batch_id}/cancel"))

    def results(self, state: BatchState) -> Iterator[tuple[str, GeneratedImage | ProviderError]]:
        """Yield (custom_id, picture or error) for every line the batch finished: its
        output file's, and its error file's failed requests. Lines it never ran (expired,
        cancelled) are not yielded: their pages were not done, nor charged."""
        for file_id in (state.output_file_id, state.error_file_id):
            if not file_id:
                continue
            for raw in self._content(file_id).splitlines():
                if raw.strip():
                    parsed = self._result(raw)
                    if parsed is not None:
                        yield parsed

    # --- plumbing -------------------------------------------------------------------

    def _result(self, raw: bytes) -> tuple[str, GeneratedImage | ProviderError] | None:
        try:
            line = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(line, dict) or not line.get("custom_id"):
            return None
        custom_id = str(line["custom_id"])
        error, response = line.get("error"), line.get("response")
        if isinstance(error, dict) and error:
            if error.get("code") in ("batch_expired", "batch_cancelled"):
                return None  # never ran: the page is missing, nothing was charged
            return custom_id, Transient(str(error.get("message") or error.get("code")))
        if not isinstance(response, dict):
            return None
        status = int(response.get("status_code") or 0)
        body = response.get("body")
        request_id = str(response.get("request_id") or "")
        if status >= 400 or not isinstance(body, dict):
            failure = classify(status or 500, body, {}, model=self.model, service=self.service)
            failure.message = self.client.safe(failure.message)
            return custom_id, failure
        data = body.get("data")
        item = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else {}
        try:
            content = base64.b64decode(item.get("b64_json") or "", validate=True)
            width, height = verify_image(content)
        except (binascii.Error, ValueError, TypeError, Transient) as exc:
            return custom_id, Transient(
                f"The batch's answer for this page holds no readable picture ({exc}).",
                maybe_paid=True,
                request_id=request_id,
            )
        usage = body.get("usage")
        return custom_id, GeneratedImage(
            content=content,
            width=width,
            height=height,
            model=self.model,
            request_id=request_id,
            http_status=status,
            usage=usage if isinstance(usage, dict) else None,
        )

    @staticmethod
    def _state(item: dict) -> BatchState:
        counts = item.get("request_counts") or {}
        errors = (item.get("errors") or {}).get("data") or []
        message = "; ".join(
            str(error.get("message") or error.get("code"))
            for error in errors
            if isinstance(error, dict)
        )
        status = str(item.get("status") or "")
        if status not in STATUSES:
            raise Transient(f"The image service reported an unknown batch status '{status}'.")
        return BatchState(
            id=str(item.get("id") or ""),
            status=status,
            total=int(counts.get("total") or 0),
            completed=int(counts.get("completed") or 0),
            failed=int(counts.get("failed") or 0),
            output_file_id=str(item.get("output_file_id") or ""),
            error_file_id=str(item.get("error_file_id") or ""),
            message=message[:2000],
            raw=item,
        )

    def _get(self, path: str, params: dict | None = None) -> dict:
        return self._send("GET", path, params=params)

    def _send(
        self,
        method: str,
        path: str,
        *,
        params=None,
        json_body=None,
        data=None,
        files=None,
    ) -> dict:
        deadline = Deadline(max(self.seconds, 30.0), service=self.service)
        answer = self.client.send(
            method,
            f"{self.base_url}{path}",
            deadline=deadline,
            headers=self.headers(),
            params=params,
            json=json_body,
            data=data,
            files=files,
        )
        if answer.status >= 400:
            error = classify(
                answer.status,
                as_json(answer.content),
                answer.headers,
                content=answer.content,
                model=self.model,
                service=self.service,
            )
            error.message = self.client.safe(error.message)
            raise error
        payload = answer.json_object()
        if payload is None:
            raise Transient(
                f"{self.service.capitalize()} sent a broken answer (invalid JSON).",
                http_status=answer.status,
            )
        return payload

    def _content(self, file_id: str) -> bytes:
        """Return a result file's bytes: larger than any live answer (a picture per line),
        so read with a cap of its own, MAX_OUTPUT_BYTES."""
        deadline = Deadline(max(self.seconds, 300.0), service=self.service)
        connect, read = deadline.timeout()
        try:
            response = self.client.session.get(
                f"{self.base_url}/files/{file_id}/content",
                headers=self.headers(),
                timeout=(connect, read),
                stream=True,
            )
        except requests.RequestException as exc:
            raise Transient(
                f"Could not fetch the batch's results ({self.client.safe(exc)})"
            ) from exc
        with response:
            content = read_capped(
                response, limit=MAX_OUTPUT_BYTES, deadline=deadline, what="result file"
            )
        if response.status_code >= 400:
            error = classify(
                response.status_code, as_json(content), response.headers, content=content
            )
            error.message = self.client.safe(error.message)
            raise error
        return content
