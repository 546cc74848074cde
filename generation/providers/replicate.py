"""Async-job clip service speaking the Replicate predictions protocol.

Create: POST /v1/models/{owner}/{name}/predictions (or POST /v1/predictions with a
version) → 201 {id, status, urls}. Then poll GET /v1/predictions/{id} through `starting`
and `processing` to `succeeded`, `failed` or `canceled`, and download the output at once
(it expires). Errors are problem+json: {"title", "detail", "status"}.

The engine stores the prediction id before the first poll, so a worker that takes over a
job resumes polling the same prediction and never pays for a second one.
"""

import base64
import json
import re
import time

import requests
from django.conf import settings

from .base import (
    AuthFailed,
    ClipRequest,
    ConfigError,
    GeneratedClip,
    OutOfCredits,
    ProviderError,
    RateLimited,
    Rejected,
    StartOver,
    StillRunning,
    Transient,
    account_key,
    verify_clip,
)
from .http import (
    MAX_RESPONSE_BYTES,
    POLL_FIRST,
    POLL_MAX,
    Deadline,
    download_image,
    looks_like_html,
    note_request_sent,
    parse_retry_after,
    read_capped,
    redact,
    required_key,
    says_out_of_credits,
    sentence,
)
from .webhooks import REPLICATE_EVENTS, webhook_url

TERMINAL_FAILED = {"failed"}
TERMINAL_CANCELED = {"canceled", "aborted"}


class PredictionFailed(StartOver):
    """The service ran the prediction and it failed: the next attempt starts a new one."""


class PredictionGone(StartOver):
    """The service no longer knows the prediction (expired): start a new one."""


def classify_problem(
    status: int, body: object, headers, *, content: bytes = b"", model_setting: str = ""
) -> ProviderError:
    """Return the error class for a problem+json answer, by status, body and wording."""
    html = looks_like_html(content, headers)
    body = body if isinstance(body, dict) else {}
    detail = str(body.get("detail") or body.get("title") or f"HTTP {status}")
    details = {
        "http_status": status,
        "code": str(body.get("title") or "")[:80],
        "request_id": headers.get("x-request-id", ""),
        "retry_after": parse_retry_after(headers),
    }
    if html:
        return Transient(f"The service answered with an HTML page (HTTP {status}).", **details)
    if status == 402 or says_out_of_credits(detail, body.get("title")):
        return OutOfCredits(detail, **details)
    if status in (401, 403):
        return AuthFailed(detail, **details)
    if status == 404 and model_setting:
        return ConfigError(
            f"The service does not know this model or route (HTTP 404: {detail})",
            setting=model_setting,
            **details,
        )
    if status == 429:
        if details["retry_after"] is None and (match := re.search(r"~?(\d+)\s*s", detail)):
            details["retry_after"] = float(match.group(1))  # "Your rate limit resets in ~30s."
        return RateLimited(detail, **details)
    if status == 408 or status >= 500:
        return Transient(detail, **details)
    return Rejected(detail, **details)


class ReplicateAPI:
    """What the clip and image providers share: the token, one session, the create path
    for a model or a version, cancel, and problem+json answers."""

    name = "replicate"
    asynchronous = True
    key_setting = "REPLICATE_API_TOKEN"
    service = "the service"  # how messages name it: "the clip service"

    def __init__(self, model: str):
        self.base_url = settings.REPLICATE_BASE_URL.rstrip("/")
        self.token = settings.REPLICATE_API_TOKEN
        self.model = model
        self.seconds = float(settings.STUDIO_PROVIDER_TIMEOUT)
        self.session = requests.Session()
        # Where the service calls when a prediction ends ("" without webhooks: polled).
        self.webhook = webhook_url(self.name, model)
        self._finished: dict[str, dict] = {}  # predictions that came back finished

    def finished(self, prediction_id: str) -> bool:
        """Whether the prediction came back finished from its create (no webhook to wait
        for: wait() reads it without a poll)."""
        return prediction_id in self._finished

    @property
    def account(self) -> str:
        return account_key(self.name, self.base_url, self.token)

    def headers(self) -> dict:
        """Return the header that carries the token (raising AuthFailed when it is not set)."""
        return {"Authorization": f"Bearer {required_key(self.token, self.key_setting)}"}

    def create_path(self, inputs: dict) -> tuple[str, dict]:
        """Return the path and body that start a prediction of the model: an official
        model by name ("owner/name"), anything else by version."""
        body: dict = {"input": inputs}
        if self.webhook:
            # Only the end: the studio fetches the result once it is there.
            body.update(webhook=self.webhook, webhook_events_filter=list(REPLICATE_EVENTS))
        if "/" in self.model and ":" not in self.model:
            return f"/models/{self.model}/predictions", body
        return "/predictions", {"version": self.model, **body}

    def cancel(self, prediction_id: str) -> str:
        """Ask the service to stop a prediction (POST /predictions/{id}/cancel); return
        its status after the request ("canceled", or "succeeded"/"failed" if it had
        already ended)."""
        payload, _, _ = self._json("POST", f"/predictions/{prediction_id}/cancel")
        return str(payload.get("status") or "")

    def _json(
        self,
        method: str,
        path: str,
        *,
        headers: dict | None = None,
        deadline: Deadline | None = None,
        classify=None,
        **kwargs,
    ) -> tuple[dict, int, dict]:
        """Send one request; return (payload, status, headers) of a 2xx JSON answer, raise
        the classified error otherwise (PredictionGone for a GET the service answers 404)."""
        deadline = deadline or Deadline(self.seconds, service=self.service)
        note_request_sent()
        try:
            response = self.session.request(
                method,
                f"{self.base_url}{path}",
                headers={"Authorization": f"Bearer {self.token}", **(headers or {})},
                timeout=deadline.timeout(),
                stream=True,
                **kwargs,
            )
        except requests.Timeout as exc:
            raise Transient(
                f"{sentence(self.service)} did not answer in time ({self._safe(exc)})"
            ) from exc
        except requests.RequestException as exc:
            raise Transient(f"Could not reach {self.service} ({self._safe(exc)})") from exc
        with response:
            content = read_capped(response, limit=MAX_RESPONSE_BYTES, deadline=deadline)
            try:
                payload = json.loads(content)
            except (ValueError, UnicodeDecodeError):
                payload = None
            if response.status_code == 404 and method == "GET":
                raise PredictionGone(
                    f"{sentence(self.service)} no longer knows this prediction.", http_status=404
                )
            if response.status_code >= 400:
                if classify is None:
                    error = classify_problem(
                        response.status_code,
                        payload,
                        response.headers,
                        content=content,
                        model_setting=self.model_setting if method == "POST" else "",
                    )
                else:
                    error = classify(response.status_code, response.headers, content)
                error.message = self._safe(error.message)
                raise error
            if not isinstance(payload, dict):
                raise Transient(
                    f"{sentence(self.service)} sent a broken answer (invalid JSON).",
                    http_status=response.status_code,
                )
            return payload, response.status_code, response.headers

    def _safe(self, text: object) -> str:
        return redact(text, self.token)


class ReplicateClipProvider(ReplicateAPI):
    service = "the clip service"
    model_setting = "STUDIO_CLIP_MODEL"

    def __init__(self):
        super().__init__(settings.STUDIO_CLIP_MODEL)
        # A prediction that has not finished in this long is given up on for this
        # attempt; the next attempt resumes polling the same prediction.
        self.poll_window = float(settings.STUDIO_CLIP_POLL_SECONDS)

    # --- create ----------------------------------------------------------------------

    def create(self, request: ClipRequest) -> str:
        """Start a prediction; return its id."""
        self.headers()  # no token, no call
        image = "data:image/png;base64," + base64.b64encode(request.image).decode()
        inputs = {"image": image, "prompt": request.prompt, "duration": request.seconds}
        path, body = self.create_path(inputs)
        payload, _, _ = self._json(
            "POST", path, json=body, headers={"Idempotency-Key": request.idempotency_key}
        )
        prediction_id = payload.get("id")
        if not isinstance(prediction_id, str) or not prediction_id:
            raise Transient("The clip service answered without a prediction id.")
        return prediction_id

    # --- poll ------------------------------------------------------------------------

    def wait(self, prediction_id: str, *, sleep, still_wanted=lambda: True) -> GeneratedClip:
        """Poll the prediction until it ends; return the downloaded clip."""
        delay = POLL_FIRST
        started = time.monotonic()
        while True:
            payload, status_code, headers = self._json("GET", f"/predictions/{prediction_id}")
            state = payload.get("status")
            if state == "succeeded":
                return self._download(payload, status_code, headers)
            if state in TERMINAL_FAILED:
                raise PredictionFailed(
                    f"The clip service's prediction failed: {payload.get('error') or 'no reason'}",
                    http_status=status_code,
                    request_id=prediction_id,
                )
            if state in TERMINAL_CANCELED:
                raise Rejected(
                    f"The prediction was {state} at the clip service.",
                    http_status=status_code,
                    request_id=prediction_id,
                )
            if time.monotonic() - started > self.poll_window:
                raise StillRunning("The clip service has not finished; polling again later.")
            hint = parse_retry_after(headers)
            sleep(hint if hint is not None else delay)
            delay = min(POLL_MAX, delay * 2)
            still_wanted()  # the caller ends the wait (raises) when the job is no longer wanted

    def _download(self, payload: dict, status_code: int, headers) -> GeneratedClip:
        output = payload.get("output")
        url = output[0] if isinstance(output, list) and output else output
        if not isinstance(url, str) or not url:
            raise PredictionFailed("The prediction succeeded without an output.")
        deadline = Deadline(self.seconds, service="the clip service")
        content = download_image(
            self.session,
            url,
            deadline=deadline,
            request_id=str(payload.get("id") or ""),
            safe=self._safe,
            service_url=self.base_url,
            what="clip",
            gone=lambda status: (
                PredictionGone("The clip expired before it could be downloaded.")
                if status == 404
                else None
            ),
        )
        return GeneratedClip(
            content=content,
            content_type=verify_clip(content),
            model=self.model,
            request_id=payload.get("id", ""),
            http_status=status_code,
        )
