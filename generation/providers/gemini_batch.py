"""Gemini's batch mode (economy): POST {base}/models/{model}:batchGenerateContent with the
pages' GenerateContentRequests inline (at most 20 MB in all), a long-running operation
named `batches/{id}` polled with GET {base}/batches/{id}, canceled with
POST {base}/batches/{id}:cancel. Its responses come inline in the finished operation,
each with the metadata it was sent with (the studio's custom id under "key").

The same shape as the OpenAI batch client (openai_batch.BatchState and the same calls),
so generation.batch_jobs works either. Inline requests need no upload: the "input file"
is the lines themselves, sent with the create call.
"""

import json
from collections.abc import Callable, Iterator
from datetime import datetime

from .base import GeneratedImage, ImageRequest, ProviderError, Transient
from .gemini import GeminiProvider, _first_image, _refusal, aspect_ratio, classify
from .http import decode_base64, received_image
from .openai_batch import SEARCH_PAGES, BatchState, LineTooLarge, search_pages

ENDPOINT = "batchGenerateContent"
INLINE = "inline"  # the input "file" of a batch sent inline
MAX_INLINE_BYTES = 20 * 1024 * 1024
# BatchState's words for the service's states (REST: BATCH_STATE_*; the SDKs: JOB_STATE_*).
STATES = {
    "PENDING": "validating",
    "QUEUED": "validating",
    "RUNNING": "in_progress",
    "SUCCEEDED": "completed",
    "FAILED": "failed",
    "CANCELLING": "cancelling",
    "CANCELLED": "cancelled",
    "EXPIRED": "expired",
}
PREFIX = "studio-"
# Batches a page when the studio lists them (GET batches?pageSize=&pageToken=): sent every
# time, since a list asked for without one has been answered empty (python-genai#1250).
PAGE_SIZE = 100


def _timestamp(value) -> datetime | None:
    """Return an RFC 3339 time ("2026-05-01T10:00:00.123456789Z") as an aware datetime
    (None if it is not one)."""
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def _status(state: str) -> str:
    word = state.removeprefix("BATCH_STATE_").removeprefix("JOB_STATE_")
    if word not in STATES:
        raise Transient(f"Gemini reported an unknown batch state '{state}'.")
    return STATES[word]


class GeminiBatches(GeminiProvider):
    """Batch mode on the same endpoint, key and model as live calls."""

    # Inline requests: 20 MB in all for the create call (room kept for its envelope).
    max_batch_lines = 50_000
    max_batch_bytes = MAX_INLINE_BYTES - 64 * 1024

    def endpoint(self, request: ImageRequest) -> str:
        return ENDPOINT

    def line(self, custom_id: str, request: ImageRequest) -> bytes:
        body = {
            "request": {
                "contents": [{"role": "user", "parts": self.parts(request)}],
                "generationConfig": {
                    "responseModalities": ["IMAGE"],
                    "imageConfig": {"aspectRatio": aspect_ratio(request.size)},
                },
            },
            "metadata": {"key": custom_id},
        }
        encoded = json.dumps(body, separators=(",", ":")).encode()
        # A line must fit in a batch of its own (the 20 MB are for the whole create call;
        # batch_jobs._groups puts a large line alone): only past that is the page refused.
        if len(encoded) > self.max_batch_bytes:
            raise LineTooLarge(
                f"This page's request with its reference pictures weighs "
                f"{len(encoded) / 2**20:.1f} MB, too much for Gemini's inline batch "
                f"({MAX_INLINE_BYTES // 2**20} MB in all); draw it now, or send fewer references."
            )
        return encoded

    def find_file(self, filename: str) -> str:
        return INLINE

    def upload(self, filename: str, content: bytes) -> str:
        return INLINE

    def find_batch(self, key: str, *, since: datetime | None = None) -> BatchState | None:
        """Return the batch whose display name names the studio's batch `key`, if the
        service has one, reading its list a page at a time (pageToken, nextPageToken) down
        to the batches created before `since` while the list shows itself newest first (its
        order is not documented), else to its end (openai_batch.search_pages). Raise
        SearchIncomplete when it could not read that far."""

        def page(token: str | None) -> tuple[list[dict], str | None]:
            params = {"pageSize": PAGE_SIZE} | ({"pageToken": token} if token else {})
            payload = self._call("GET", "/batches", params=params)
            operations = [
                item for item in payload.get("operations") or [] if isinstance(item, dict)
            ]
            return operations, str(payload.get("nextPageToken") or "") or None

        def matches(operation: dict) -> bool:
            metadata = operation.get("metadata")
            return isinstance(metadata, dict) and metadata.get("displayName") == PREFIX + key

        found = search_pages(
            page,
            matches=matches,
            created=lambda operation: _timestamp(
                (operation.get("metadata") or {}).get("createTime")
            ),
            since=since,
            most_pages=SEARCH_PAGES,
            service=self.service,
        )
        return None if found is None else self._state(found)

    def create(
        self, *, key: str, input_file_id: str, endpoint: str, lines: Callable[[], list[bytes]]
    ) -> BatchState:
        requests = [json.loads(line) for line in lines()]
        body = {
            "batch": {
                "displayName": PREFIX + key,
                "inputConfig": {"requests": {"requests": requests}},
            }
        }
        return self._state(self._call("POST", f"/models/{self.model}:{ENDPOINT}", body))

    def retrieve(self, batch_id: str) -> BatchState:
        return self._state(self._call("GET", f"/{batch_id}"))

    def cancel(self, batch_id: str) -> BatchState:
        self._call("POST", f"/{batch_id}:cancel", {})
        return self.retrieve(batch_id)

    def results(self, state: BatchState) -> Iterator[tuple[str, GeneratedImage | ProviderError]]:
        response = (state.raw or {}).get("response") or {}
        inlined = (response.get("inlinedResponses") or {}).get("inlinedResponses") or []
        for item in inlined:
            if not isinstance(item, dict):
                continue
            custom_id = str((item.get("metadata") or {}).get("key") or "")
            if not custom_id:
                continue
            if isinstance(item.get("error"), dict):
                error = item["error"]
                yield custom_id, Transient(str(error.get("message") or "The request failed."))
                continue
            payload = item.get("response")
            if not isinstance(payload, dict):
                continue
            data = _first_image(payload)
            details = {"http_status": 200, "request_id": str(payload.get("responseId") or "")}
            if data is None:
                yield custom_id, _refusal(payload, details)
                continue
            try:
                yield (
                    custom_id,
                    received_image(
                        decode_base64(data, **details),
                        model=str(payload.get("modelVersion") or self.model),
                        usage=payload.get("usageMetadata"),
                        **details,
                    ),
                )
            except ProviderError as error:
                yield custom_id, error

    def _state(self, operation: dict) -> BatchState:
        metadata = operation.get("metadata") or {}
        stats = metadata.get("batchStats") or {}
        error = operation.get("error") or {}
        status = _status(str(metadata.get("state") or ""))
        return BatchState(
            id=str(operation.get("name") or metadata.get("name") or ""),
            status=status,
            total=int(stats.get("requestCount") or 0),
            completed=int(stats.get("successfulRequestCount") or 0),
            failed=int(stats.get("failedRequestCount") or 0),
            message=str(error.get("message") or "")[:2000],
            raw=operation,
        )

    def _call(
        self, method: str, path: str, body: dict | None = None, params: dict | None = None
    ) -> dict:
        answer = self.client.send(
            method,
            f"{self.base_url}{path}",
            deadline=self.client.deadline(),
            headers=self.headers(),
            params=params,
            json=body,
        )
        self.client.raise_for(answer, classify)
        payload = answer.json_object()
        if payload is None:
            raise Transient(
                "Gemini sent a broken answer (invalid JSON).", http_status=answer.status
            )
        return payload
