"""What every HTTP provider shares: one overall deadline per call, capped reads, key
redaction and Retry-After parsing.

A call's deadline covers the whole exchange (connecting, waiting for the answer, reading a
trickling body, downloading the picture a URL points at), not each read: a service that
sends a byte now and then must not hold a worker, and its lease, for ever.
"""

import base64
import binascii
import ipaddress
import json
import math
import re
import socket
import threading
import time
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from django.conf import settings

from .base import (
    AuthFailed,
    ConfigError,
    GeneratedImage,
    ProviderError,
    StillRunning,
    Transient,
    account_key,
    verify_image,
)

CONNECT_TIMEOUT = 10.0
# A b64 PNG of the largest sizes is a few MB; anything far beyond is not an answer.
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
MAX_DOWNLOAD_BYTES = 24 * 1024 * 1024
CHUNK = 256 * 1024
# Longer waits than this are not believed: a broken or hostile header (1e400, a date in
# 2100) must not park a page for days; the engine also caps a wait by its patience.
MAX_RETRY_AFTER = 3600.0
# Redirects a picture download follows, each hop checked like the first URL.
MAX_REDIRECTS = 3
DOWNLOAD_SETTING = "STUDIO_ALLOW_PRIVATE_DOWNLOADS"
# A service job is polled after this many seconds, then twice as long each time up to
# POLL_MAX (or as the service's Retry-After says).
POLL_FIRST = 0.5
POLL_MAX = 5.0


def sentence(text: str) -> str:
    """Return text with its first letter capitalised (and the rest, "(Gemini)", kept)."""
    return text[:1].upper() + text[1:]


class Deadline:
    """The end of one call: every network wait of the call fits before it."""

    def __init__(self, seconds: float, *, service: str = "the service"):
        self.seconds = seconds
        self.service = service
        self.ends = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.ends - time.monotonic()

    def timeout(self) -> tuple[float, float]:
        """Return (connect, read) timeouts for requests that end by the deadline."""
        left = max(0.05, self.remaining())
        return min(CONNECT_TIMEOUT, left), left

    def check(self, **details) -> None:
        if self.remaining() <= 0:
            raise Transient(
                f"{sentence(self.service)} did not finish within {self.seconds:g} s.",
                **details,
            )


def read_capped(
    response: requests.Response,
    *,
    limit: int,
    deadline: Deadline,
    what: str = "answer",
    request_id: str = "",
    paid: bool = False,
) -> bytes:
    """Return the body of a streamed response, refusing more than `limit` bytes and
    anything still arriving at the deadline. With paid, a body that broke off is marked
    as a call the service most likely charged for."""
    details = {"http_status": response.status_code, "request_id": request_id}
    chunks, size = [], 0
    raw = response.raw
    try:
        while True:
            deadline.check(maybe_paid=paid, **details)
            _read_timeout(raw, deadline.remaining())
            chunk = raw.read1(CHUNK) if hasattr(raw, "read1") else raw.read(CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise Transient(
                    f"The service sent more than {limit // 2**20} MB; refused.", **details
                )
            chunks.append(chunk)
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        if deadline.remaining() <= 0:
            deadline.check(maybe_paid=paid, **details)
        raise Transient(f"The {what} broke off ({exc})", maybe_paid=paid, **details) from exc
    return b"".join(chunks)


def _read_timeout(raw, seconds: float) -> None:
    """Let the next read wait no longer than the deadline allows."""
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    if sock is not None:
        sock.settimeout(max(0.05, seconds))


def parse_retry_after(headers, *, now: datetime | None = None) -> float | None:
    """Return seconds to wait from `retry-after-ms` or `Retry-After` (seconds or an HTTP
    date), clamped to [0, MAX_RETRY_AFTER]; None when absent or unreadable. Never raises."""
    value = headers.get("retry-after-ms")
    if value:
        seconds = _number(value)
        if seconds is not None:
            return _clamp(seconds / 1000)
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _number(value)
    if seconds is not None:
        return _clamp(seconds)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return _clamp((when - (now or datetime.now(UTC))).total_seconds())


def _number(value: str) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _clamp(seconds: float) -> float:
    return min(MAX_RETRY_AFTER, max(0.0, seconds))


def redact(text: object, *secrets: str) -> str:
    """Return text with every secret removed, so it can be stored, logged and shown."""
    text = str(text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text


def required_key(key: str, setting: str) -> str:
    """Return the key; raise AuthFailed naming its setting when it is not set."""
    if not key:
        raise AuthFailed(f"{setting} is not set.")
    return key


# Wording that says the account's money or quota is used up, whatever status and code a
# gateway put around it: gateways and proxies often pass the upstream's message on but
# replace its code with their own.
_OUT_OF_CREDITS = re.compile(
    r"exceeded your current quota|check your plan and billing|insufficient[_ ](credit|balance|"
    r"funds|quota)|exhausted[_ ]balance|balance (is )?(exhausted|too low|insufficient)|"
    r"out of credits?|no credits? (left|remaining)|credit[_ ]balance|add (more )?funds|"
    r"payment required|billing[_ ](hard[_ ]limit|not[_ ]active)|spend(ing)?[_ ]limit|"
    r"prepay(ment)? credits",
    re.IGNORECASE,
)


def says_out_of_credits(*texts: object) -> bool:
    """Return whether any text says the account's credits, balance, quota or billing is
    exhausted."""
    return any(_OUT_OF_CREDITS.search(str(text or "")) for text in texts)


def looks_like_html(content: bytes, headers) -> bool:
    """Return whether a body is an HTML page (a proxy's error page), not the service's own
    JSON answer."""
    kind = str(headers.get("content-type") or "").lower()
    head = content[:512].lstrip().lower()
    return "html" in kind or head.startswith((b"<!doctype html", b"<html"))


def foreign_answer(
    status: int, headers, body: object, *, service: str, route_setting: str = "", **details
) -> ProviderError | None:
    """Return the error of an error answer that is not the service's own, for a body
    without the service's error object: with route_setting, a 404 is a route the service
    does not have (its base URL, configuration); an HTML page, unless a 401, is a proxy's
    error page, worth another try. Return None for anything else."""
    if route_setting and status == 404:
        return ConfigError(
            f"{sentence(service)} has no such route (HTTP 404).", setting=route_setting, **details
        )
    if status != 401 and looks_like_html(as_bytes(body), headers):
        return Transient(f"{sentence(service)} answered HTTP {status} (an HTML page).", **details)
    return None


def as_json(body: object) -> object:
    """Return a body as parsed JSON (a dict or list), or None when it is not JSON: the
    classifiers take the raw bytes, the text, or an already parsed body alike."""
    if isinstance(body, dict | list):
        return body
    if isinstance(body, bytes | str):
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return None
    return None


def as_bytes(body: object) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return b""


def decode_base64(data: object, **details) -> bytes:
    """Return the bytes of base64 text; raise Transient (most likely paid: the picture was
    made) when it is not valid base64."""
    try:
        return base64.b64decode(str(data), validate=True)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise Transient(
            "The service sent image data that is not valid base64.", maybe_paid=True, **details
        ) from exc


def decode_data_url(url: str, **details) -> bytes:
    """Return the bytes of a `data:<type>;base64,<data>` URL."""
    head, _, data = url.partition(",")
    if not head.startswith("data:") or not head.endswith(";base64"):
        raise Transient(
            "The service sent a data URL that is not base64.", maybe_paid=True, **details
        )
    return decode_base64(data, **details)


def verified_image(content: bytes, *, http_status: int | None, request_id: str = ""):
    """Return (width, height) of a received picture; raise Transient, marked as most likely
    paid (the service made something and billed it), when it is not a sane image."""
    try:
        return verify_image(content)
    except Transient as error:
        error.maybe_paid = True
        error.http_status = http_status
        error.request_id = request_id
        raise


def received_image(
    content: bytes,
    *,
    model: str,
    http_status: int | None,
    request_id: str = "",
    usage: object = None,
    reported_cost=None,
) -> GeneratedImage:
    """Return the GeneratedImage of a received picture once verified_image passes it; the
    usage the service reported is kept when it is a JSON object."""
    width, height = verified_image(content, http_status=http_status, request_id=request_id)
    return GeneratedImage(
        content=content,
        width=width,
        height=height,
        model=model,
        request_id=request_id,
        http_status=http_status,
        reported_cost=reported_cost,
        usage=usage if isinstance(usage, dict) else None,
    )


def still_running(deadline: Deadline, *, request_id: str) -> StillRunning:
    """Return the error of a service job not finished by the call's deadline: it is kept,
    and the next attempt polls the same job again."""
    return StillRunning(
        f"{sentence(deadline.service)} has not finished; polling again later.",
        request_id=request_id,
    )


@contextmanager
def polling(deadline: Deadline, *, request_id: str):
    """Around one poll of a service job: a Transient it raises once the deadline has run
    out becomes still_running (the job is still the service's), any other passes."""
    try:
        yield
    except Transient as error:
        if deadline.remaining() > 0:
            raise
        raise still_running(deadline, request_id=request_id) from error


def pause_polling(
    deadline: Deadline, delay: float, *, sleep, still_wanted, request_id: str, hint=None
) -> float:
    """Sleep before the next poll of a service job (the service's hint, else delay, never
    past the deadline) and return the delay after it; the caller's still_wanted ends the
    wait (raises) when the job is no longer wanted, and a deadline run out raises
    still_running."""
    pause = min(hint if hint is not None else delay, deadline.remaining())
    if pause > 0:
        sleep(pause)
    delay = min(POLL_MAX, delay * 2)
    still_wanted()
    if deadline.remaining() <= 0:
        raise still_running(deadline, request_id=request_id)
    return delay


@dataclass
class Answer:
    """One HTTP answer, read whole (within the caps and the deadline)."""

    status: int
    headers: Mapping
    content: bytes

    @property
    def payload(self) -> object:
        return as_json(self.content)

    def json_object(self) -> dict | None:
        payload = self.payload
        return payload if isinstance(payload, dict) else None


class Client:
    """One session per provider: every request ends by the call's deadline, reads at most
    a capped body, and every message it raises has the key removed."""

    def __init__(
        self,
        *,
        service: str,
        seconds: float,
        secrets: tuple[str, ...] = (),
        service_url: str = "",
    ):
        self.service = service  # how messages name it: "the image service (Gemini)"
        self.seconds = seconds
        self.secrets = secrets
        # The configured endpoint: pictures on its origin are fetched whatever its address.
        self.service_url = service_url
        self.session = requests.Session()

    def deadline(self) -> Deadline:
        return Deadline(self.seconds, service=self.service)

    def safe(self, text: object) -> str:
        """Return text with every key removed, so it can be stored and shown."""
        return redact(text, *self.secrets)

    def send(
        self,
        method: str,
        url: str,
        *,
        deadline: Deadline,
        headers: dict | None = None,
        json: object = None,
        params: dict | None = None,
        data: list | None = None,
        files: list | None = None,
        paid: bool = False,
        read_timeout: float | None = None,
        request_id_header: str = "x-request-id",
    ) -> Answer:
        """Send one request and return its answer, whatever its status; raise Transient when
        the service cannot be reached or does not answer by the deadline. With paid, a 2xx
        body that breaks off is marked as most likely charged for. data and files go as
        multipart/form-data, as requests sends them."""
        connect, read = deadline.timeout()
        if read_timeout is not None:
            read = min(read, read_timeout)
        note_request_sent()
        try:
            response = self.session.request(
                method,
                url,
                headers=headers,
                json=json,
                params=params,
                data=data,
                files=files,
                timeout=(connect, read),
                stream=True,
            )
        except requests.ConnectTimeout as exc:
            raise Transient(f"Could not reach {self.service} in time ({self.safe(exc)})") from exc
        except requests.Timeout as exc:
            # The request went out and no answer came: the service may well have made (and
            # billed) the picture. The outcome is unknown; the retry sends the same key.
            raise Transient(
                f"{sentence(self.service)} did not answer in time ({self.safe(exc)})",
                maybe_paid=paid,
            ) from exc
        except requests.RequestException as exc:
            raise Transient(f"Could not reach {self.service} ({self.safe(exc)})") from exc
        with response:
            content = read_capped(
                response,
                limit=MAX_RESPONSE_BYTES,
                deadline=deadline,
                request_id=response.headers.get(request_id_header, ""),
                paid=paid and response.status_code < 300,
            )
            return Answer(response.status_code, response.headers, content)

    def download(
        self, url: str, *, deadline: Deadline, request_id: str = "", limit: int = MAX_DOWNLOAD_BYTES
    ) -> bytes:
        """Fetch the picture a URL answer points at (see download_image)."""
        return download_image(
            self.session,
            url,
            deadline=deadline,
            request_id=request_id,
            safe=self.safe,
            service_url=self.service_url,
            limit=limit,
        )

    def paid_object(self, answer: Answer, *, request_id: str = "") -> dict:
        """Return the JSON object of a 2xx answer to a call that made (and billed) a
        picture; raise Transient, most likely paid, when the body is not one."""
        payload = answer.json_object()
        if payload is None:
            raise Transient(
                f"{sentence(self.service)} sent a broken answer (invalid JSON).",
                maybe_paid=True,
                http_status=answer.status,
                request_id=request_id,
            )
        return payload

    def raise_for(self, answer: Answer, classify) -> None:
        """Raise the classified error of a 4xx/5xx answer, its message redacted."""
        if answer.status >= 400:
            error = classify(answer.status, answer.headers, answer.content)
            error.message = self.safe(error.message)
            error.args = (error.message,)
            raise error


_thread = threading.local()


def note_request_sent() -> None:
    _thread.sent = requests_sent() + 1


def requests_sent() -> int:
    """Return how many requests this thread has sent to a service. The engine compares it
    before and after a call: an error raised with none sent is the page's own (its input
    could not be turned into a request), never the shared account's."""
    return getattr(_thread, "sent", 0)


def origin(url: str) -> tuple[str, str, int | None]:
    """Return a URL's origin: scheme, host and port (the scheme's default when unsaid)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


def same_origin(url: str, base: str) -> bool:
    """Return whether a URL is on the base URL's origin (where the key may go)."""
    return bool(base) and origin(url) == origin(base)


def refused_url(message: str, *, setting: str = "", request_id: str = "") -> ConfigError:
    """Return the error of a picture URL the studio will not fetch. The picture was made
    and billed, so the call is most likely paid; and every page would meet the same
    answer, so the account's model halts once (naming the setting) instead of paying for
    picture after picture that cannot be fetched."""
    return ConfigError(
        message,
        setting=setting,
        code="refused_url",
        request_id=request_id,
        maybe_paid=True,
    )


def _not_public(address: str) -> str:
    """Return what kind of non-public address this is ("loopback", "private", …), or ""."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    mapped = getattr(ip, "ipv4_mapped", None)
    ip = mapped or ip
    for kind in ("loopback", "unspecified", "link_local", "multicast", "reserved", "private"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    return "" if ip.is_global else "non-public"


def check_download_url(url: str, *, service_url: str = "", request_id: str = "") -> None:
    """Raise a refusal (ConfigError, most likely paid) naming the rule a picture URL breaks:
    it must be http(s) on the configured service's own origin, or https on a host whose
    every address is public (private ones too with STUDIO_ALLOW_PRIVATE_DOWNLOADS, which
    also allows plain http to them)."""
    scheme, host, port = origin(url)
    shown = redact(url.split("?", 1)[0])[:200]
    if scheme not in ("http", "https") or not host or port is None:
        raise refused_url(
            f"Refused to download the picture from {shown}: not an http(s) URL.",
            request_id=request_id,
        )
    if same_origin(url, service_url):
        return
    try:
        found = {info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
    except (OSError, UnicodeError) as exc:
        raise Transient(
            f"Could not resolve the picture's host {host} ({exc}).",
            request_id=request_id,
            maybe_paid=True,
        ) from exc
    private = sorted((address, kind) for address in found if (kind := _not_public(address)))
    allow_private = bool(getattr(settings, DOWNLOAD_SETTING, False))
    if private and not allow_private:
        address, kind = private[0]
        raise refused_url(
            f"Refused to download the picture from {shown}: {host} is "
            f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} address "
            f"({address}), and pictures come only from public addresses or the service's own "
            f"URL; set {DOWNLOAD_SETTING}=true for a self-hosted service.",
            setting=DOWNLOAD_SETTING,
            request_id=request_id,
        )
    if scheme != "https" and not private:
        raise refused_url(
            f"Refused to download the picture from {shown}: pictures from other hosts than "
            f"the service's own come only over https.",
            request_id=request_id,
        )


def download_image(
    session,
    url: str,
    *,
    deadline: Deadline,
    request_id: str = "",
    safe=str,
    service_url: str = "",
    limit: int = MAX_DOWNLOAD_BYTES,
    what: str = "image",
    gone=None,
):
    """Fetch the picture a URL answer points at, within the call's deadline: made and
    billed already, so any failure here is a call the service most likely charged for.

    The URL and every redirect it leads to (at most MAX_REDIRECTS, followed here, not by
    requests) must pass check_download_url; no key is ever sent with it. `gone(status)`,
    when given, may return the error for an answer such as 404 (the output expired)."""
    for _ in range(MAX_REDIRECTS + 1):
        check_download_url(url, service_url=service_url, request_id=request_id)
        try:
            with session.get(
                url, timeout=deadline.timeout(), stream=True, allow_redirects=False
            ) as response:
                if response.is_redirect:
                    url = urljoin(url, response.headers["location"])
                    continue
                if response.status_code >= 400:
                    if gone is not None and (error := gone(response.status_code)) is not None:
                        raise error
                    raise Transient(
                        f"Downloading the {what} failed (HTTP {response.status_code}).",
                        http_status=response.status_code,
                        request_id=request_id,
                        maybe_paid=True,
                    )
                return read_capped(
                    response,
                    limit=limit,
                    deadline=deadline,
                    what=f"{what} download",
                    request_id=request_id,
                    paid=True,
                )
        except requests.RequestException as exc:
            raise Transient(
                f"Downloading the {what} failed ({safe(exc)})",
                request_id=request_id,
                maybe_paid=True,
            ) from exc
    raise refused_url(
        f"Refused to download the {what}: its URL redirected more than {MAX_REDIRECTS} times.",
        request_id=request_id,
    )


class KeyedImageProvider:
    """What the keyed HTTP image providers share: their endpoint, key and model read from
    the settings they name, one Client, and the provider account they call."""

    name = ""
    service = "the image service"
    base_url_setting = key_setting = model_setting = ""

    def __init__(self):
        self.base_url = getattr(settings, self.base_url_setting).rstrip("/")
        self.api_key = getattr(settings, self.key_setting)
        self.model = getattr(settings, self.model_setting)
        self.client = Client(
            service=self.service,
            seconds=float(settings.STUDIO_PROVIDER_TIMEOUT),
            secrets=(self.api_key,),
            service_url=self.base_url,
        )

    @property
    def account(self) -> str:
        return account_key(self.name, self.base_url, self.api_key)

    def headers(self) -> dict:
        """Return the headers that carry the key (raising AuthFailed when it is not set)."""
        raise NotImplementedError

    def require_key(self) -> str:
        return required_key(self.api_key, self.key_setting)

    def post(self, path: str, body: dict, *, deadline: Deadline, classify) -> Answer:
        """POST body to {base}{path}, a call that makes (and bills) a picture, and return
        its 2xx answer; raise the classified error of any other."""
        answer = self.client.send(
            "POST",
            f"{self.base_url}{path}",
            deadline=deadline,
            headers=self.headers(),
            json=body,
            paid=True,
        )
        self.client.raise_for(answer, classify)
        return answer
