"""Webhooks from the services that take long (Replicate, fal): where they are sent, whether
a model has them, and how a delivery is proven to come from the service.

With STUDIO_PUBLIC_URL set (and the service's verification key configured), a prediction
or queued request is created with a webhook and the worker that created it is released at
once; the delivery wakes the job (generation.webhooks). Nothing here knows a model row.

- Replicate signs as Standard Webhooks do: headers `webhook-id`, `webhook-timestamp`
  (seconds since the epoch) and `webhook-signature` (space-separated `v1,<base64>`), each
  signature an HMAC-SHA256 of "{id}.{timestamp}.{body}" under the base64 key after
  `whsec_` in REPLICATE_WEBHOOK_SECRET (replicate.com/docs/topics/webhooks/verify-webhook).
- fal signs with ED25519: `X-Fal-Webhook-Request-Id`, `X-Fal-Webhook-User-Id`,
  `X-Fal-Webhook-Timestamp` and `X-Fal-Webhook-Signature` (hex); the message is the
  request id, the user id, the timestamp and the hex SHA-256 of the body, joined by
  newlines, verified against any key of fal's published JWKS
  (https://rest.alpha.fal.ai/.well-known/jwks.json), which the operator copies into
  FAL_WEBHOOK_JWKS: the studio never fetches keys on its own.

Both refuse timestamps more than five minutes from the studio's clock, so a captured
delivery cannot be replayed later; within that window a repeated id is applied once.
"""

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping

from django.conf import settings

from .. import catalogue

TOLERANCE_SECONDS = 300  # both services' documented window
SERVICES = ("replicate", "fal")
# Replicate sends the final state only: the studio wants the end, not every log line.
REPLICATE_EVENTS = ["completed"]


class WebhookRefused(Exception):
    """A delivery that is not proven to come from the service: the reason goes back in a
    4xx answer, and nothing changes."""

    def __init__(self, reason: str, status: int = 400):
        super().__init__(reason)
        self.reason = reason
        self.status = status


def supports_webhooks(service: str, model: str = "") -> bool:
    """Return whether the service sends webhooks for the model: as the catalogue says for
    a model it lists; Replicate's predictions and fal's queue requests take a webhook
    whatever the model, so one it does not list (a version hash, a new model) does too."""
    if service not in SERVICES:
        return False
    entry = catalogue.model(service, model)
    return entry.webhooks or not entry.known


def verification_key(service: str) -> str:
    return {
        "replicate": settings.REPLICATE_WEBHOOK_SECRET,
        "fal": settings.FAL_WEBHOOK_JWKS,
    }.get(service, "")


def webhook_url(service: str, model: str = "") -> str:
    """Return the URL the service should call when a job ends, or "" when the studio polls
    instead: STUDIO_PUBLIC_URL unset, the model without webhooks, or no key configured to
    verify the deliveries with (they would all be refused)."""
    base = settings.STUDIO_PUBLIC_URL
    if not base or not supports_webhooks(service, model) or not verification_key(service):
        return ""
    return f"{base.rstrip('/')}/webhooks/{service}/"


def _header(headers: Mapping, name: str) -> str:
    value = headers.get(name) or headers.get(name.lower()) or ""
    return str(value).strip()


def _fresh(timestamp: str, now: float | None) -> None:
    try:
        sent = int(timestamp)
    except ValueError:
        raise WebhookRefused(f"the timestamp {timestamp[:40]!r} is not a number") from None
    now = time.time() if now is None else now
    if abs(now - sent) > TOLERANCE_SECONDS:
        raise WebhookRefused(
            f"the timestamp is {round(now - sent)} s from the studio's clock (over "
            f"{TOLERANCE_SECONDS} s): a stale or replayed delivery"
        )


def replicate_key(secret: str) -> bytes:
    """Return the HMAC key of a `whsec_…` signing secret; ValueError when it is not one."""
    if not secret.startswith("whsec_"):
        raise ValueError("REPLICATE_WEBHOOK_SECRET must start with whsec_")
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except binascii.Error as error:
        raise ValueError("REPLICATE_WEBHOOK_SECRET is not base64 after whsec_") from error


def verify_replicate(headers: Mapping, body: bytes, *, secret: str, now=None) -> str:
    """Return the delivery's webhook-id once its signature and timestamp hold; raise
    WebhookRefused otherwise."""
    delivery_id = _header(headers, "webhook-id")
    timestamp = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    if not (delivery_id and timestamp and signatures):
        raise WebhookRefused(
            "unsigned: webhook-id, webhook-timestamp and webhook-signature are required", 401
        )
    if not secret:
        raise WebhookRefused("REPLICATE_WEBHOOK_SECRET is not set: nothing can be verified", 403)
    try:
        key = replicate_key(secret)
    except ValueError as error:
        raise WebhookRefused(str(error), 403) from None
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [part.partition(",") for part in signatures.split()]
    if not any(
        version == "v1" and hmac.compare_digest(value.encode(), expected.encode())
        for version, _, value in offered
    ):
        raise WebhookRefused("forged: no signature matches the signing secret", 401)
    _fresh(timestamp, now)  # checked once signed: the timestamp is part of what is signed
    return delivery_id


def jwks_keys(jwks: str) -> list[bytes]:
    """Return the raw Ed25519 public keys of a JWKS (JSON); ValueError when it holds none."""
    try:
        document = json.loads(jwks)
    except ValueError as error:
        raise ValueError("FAL_WEBHOOK_JWKS is not JSON") from error
    keys = document.get("keys") if isinstance(document, dict) else None
    found = []
    for key in keys if isinstance(keys, list) else []:
        if not isinstance(key, dict) or key.get("kty") != "OKP" or key.get("crv") != "Ed25519":
            continue
        x = str(key.get("x") or "")
        try:
            raw = base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
        except (binascii.Error, ValueError):
            continue
        if len(raw) == 32:
            found.append(raw)
    if not found:
        raise ValueError("FAL_WEBHOOK_JWKS holds no Ed25519 (OKP) key")
    return found


def verify_fal(headers: Mapping, body: bytes, *, jwks: str, now=None) -> str:
    """Return the delivery's request id once its ED25519 signature (by a key of the
    configured JWKS) and its timestamp hold; raise WebhookRefused otherwise."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    request_id = _header(headers, "X-Fal-Webhook-Request-Id")
    user_id = _header(headers, "X-Fal-Webhook-User-Id")
    timestamp = _header(headers, "X-Fal-Webhook-Timestamp")
    signature = _header(headers, "X-Fal-Webhook-Signature")
    if not (request_id and user_id and timestamp and signature):
        raise WebhookRefused(
            "unsigned: X-Fal-Webhook-Request-Id, -User-Id, -Timestamp and -Signature are required",
            401,
        )
    if not jwks:
        raise WebhookRefused("FAL_WEBHOOK_JWKS is not set: nothing can be verified", 403)
    try:
        keys = jwks_keys(jwks)
    except ValueError as error:
        raise WebhookRefused(str(error), 403) from None
    try:
        raw_signature = bytes.fromhex(signature)
    except ValueError:
        raise WebhookRefused("forged: the signature is not hexadecimal", 401) from None
    message = "\n".join([request_id, user_id, timestamp, hashlib.sha256(body).hexdigest()]).encode()
    for key in keys:
        try:
            Ed25519PublicKey.from_public_bytes(key).verify(raw_signature, message)
            break
        except InvalidSignature:
            continue
    else:
        raise WebhookRefused("forged: no key of FAL_WEBHOOK_JWKS verifies the signature", 401)
    _fresh(timestamp, now)
    return request_id


def verify(service: str, headers: Mapping, body: bytes, *, now=None) -> str:
    """Return the delivery's id (Replicate's webhook-id, fal's request id), verified with
    the configured key; raise WebhookRefused otherwise."""
    if service == "replicate":
        return verify_replicate(headers, body, secret=settings.REPLICATE_WEBHOOK_SECRET, now=now)
    if service == "fal":
        return verify_fal(headers, body, jwks=settings.FAL_WEBHOOK_JWKS, now=now)
    raise WebhookRefused(f"no webhooks for {service!r}", 404)


def delivered_job(service: str, body: bytes) -> tuple[str, str, bool]:
    """Return (the service's job id, its status, whether it has ended) from a verified
    delivery's body; raise WebhookRefused for a body that names none."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise WebhookRefused("the body is not JSON") from None
    if not isinstance(payload, dict):
        raise WebhookRefused("the body is not a JSON object")
    if service == "replicate":
        job_id, status = payload.get("id"), str(payload.get("status") or "")
        ended = status in ("succeeded", "failed", "canceled", "aborted")
    else:
        job_id, status = payload.get("request_id"), str(payload.get("status") or "")
        ended = status in ("OK", "ERROR")  # fal calls only when the request is done
    if not isinstance(job_id, str) or not job_id:
        raise WebhookRefused("the body names no job id")
    return job_id[:120], status[:40], ended
