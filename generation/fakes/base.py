"""What every loopback fake shares: a threaded HTTP server on 127.0.0.1 (port 0: a free
one), a script of replies, a record of every call, a hold/release switch for answers, and
the bad-day knobs of `manage.py fake_service`: a failure rate, the credits left, latency."""

import json
import random
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackServer:
    """Start with start(), stop with stop(); `url` is the service's base URL.

    Subclasses set `path_prefix` (e.g. "/v1") and give a `Handler` class (a subclass of
    FakeHandler) whose methods can reach this object as `self.service`.
    """

    path_prefix = ""
    Handler: type["FakeHandler"]
    # The knobs (`manage.py fake_service`), off by default. fail_rate: the share of picture
    # calls that get `transient_reply`; credits: the pictures the account can still pay for
    # (None: no end), after which every picture call gets `out_of_credits_reply`; latency:
    # seconds each successful answer takes. Each fake names its own service's replies.
    fail_rate = 0.0
    credits: int | None = None
    latency = 0.0
    success_replies = frozenset({"ok"})
    transient_reply = "500"
    out_of_credits_reply = "402"

    def __init__(self, port: int = 0):
        self._lock = threading.Lock()
        self.calls: list[dict] = []
        self.script: deque[str] = deque()  # the next calls' replies, in order, then default
        self.default = "ok"
        self._held = threading.Event()
        self._held.set()
        self._shutdown = threading.Event()
        self.random = random.Random(0)  # seeded: a failure rate fails the same calls each run
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self.server.server_port}"
        self.url = self.origin + self.path_prefix
        # The origin named in the URLs its answers give (pictures, fal's status URLs): a test
        # points it at another server to play a hostile or confused service.
        self.links = self.origin
        # When set, GET /files/<name> answers a redirect to <redirect_files_to>/files/<name>
        # (the fakes that serve pictures by URL honour it).
        self.redirect_files_to: str | None = None
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def _handler(self) -> type["FakeHandler"]:
        return type("Handler", (self.Handler,), {"service": self})

    # --- control -------------------------------------------------------------------

    def start(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        self._shutdown.set()
        self._held.set()
        self.server.shutdown()
        self.server.server_close()

    def hold(self) -> None:
        """Keep every successful answer waiting until release()."""
        self._held.clear()

    def release(self) -> None:
        self._held.set()

    def wait_if_held(self, timeout: float = 60) -> None:
        """Keep a successful answer waiting while held, then for `latency` seconds."""
        self._held.wait(timeout=timeout)
        if self.latency:
            self._shutdown.wait(timeout=self.latency)

    def next_reply(self) -> str:
        """Return the name of the next scripted reply, or the default, as the knobs leave
        it (see `turn`)."""
        with self._lock:
            return self.turn(self.script.popleft() if self.script else self.default)

    def turn(self, name: str) -> str:
        """Return the reply a picture call gets instead of `name` under the knobs: out of
        credits once they are spent, else a transient failure at `fail_rate`; a success
        spends a credit. Call it with the lock held."""
        if self.credits is not None and self.credits <= 0:
            return self.out_of_credits_reply
        if name not in self.success_replies:
            return name
        if self.fail_rate and self.random.random() < self.fail_rate:
            return self.transient_reply
        if self.credits is not None:
            self.credits -= 1
        return name

    def record(self, call: dict) -> dict:
        call.setdefault("at", time.time())
        with self._lock:
            self.calls.append(call)
        return call

    @property
    def call_count(self) -> int:
        with self._lock:
            return len(self.calls)


class FakeHandler(BaseHTTPRequestHandler):
    """A request handler that answers JSON, keeps connections alive, logs nothing."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without this, Nagle's algorithm and
    # delayed ACKs stall every kept-alive answer by ~40 ms.
    disable_nagle_algorithm = True
    service: LoopbackServer

    def log_message(self, *args):
        pass

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def is_json(self) -> bool:
        kind = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        return kind == "application/json"

    def send_json(self, status: int, body, headers=None, content_type="application/json"):
        self.send_bytes(status, json.dumps(body).encode(), content_type, headers)

    def send_bytes(self, status: int, content: bytes, content_type: str, headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(content)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        try:
            self.wfile.write(content)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def redirected(self, name: str, service: LoopbackServer | None = None) -> bool:
        """Answer a redirect for the picture `name` when the service is told to; return
        whether it did."""
        target = (service or self.service).redirect_files_to
        if not target:
            return False
        self.send_bytes(302, b"", "text/plain", {"Location": f"{target}/files/{name}"})
        return True

    def hang(self) -> None:
        """Never answer (until the server shuts down)."""
        self.service._shutdown.wait(timeout=30)
        self.close_connection = True


class WebhookSender:
    """What the fakes that call back share (Replicate, fal): real HTTP POSTs of signed
    deliveries to the URL a create named, each retried on a failure or a non-2xx answer as
    the services do, and the bad days of a webhook on demand. Mixed into a LoopbackServer.

    Knobs: webhook_delay (seconds after the job ends: late), webhook_repeats (each
    delivery sent this many times, with the same id: repeated), webhook_lost (never
    sent), webhook_out_of_order (deliveries held in pairs and sent newest first; a fake may
    add stale deliveries of its own), webhook_retries and webhook_retry_delay (doubling).
    `deliveries` records each POST: {"id", "job", "status", "answer", "reason"}.
    """

    webhook_delay = 0.0
    webhook_repeats = 1
    webhook_lost = False
    webhook_out_of_order = False
    webhook_retries = 4
    webhook_retry_delay = 0.25

    def init_webhooks(self) -> None:
        self.deliveries: list[dict] = []
        self._pending: list[tuple] = []
        self._webhook_threads: list[threading.Thread] = []

    def after_end(self, job_id: str, url: str, deliveries) -> None:
        """Once `job_id` ends, send its deliveries (a callable returning [(id, status,
        body, headers)], built when sent so the signature's timestamp is fresh)."""
        if self.webhook_lost:
            return
        thread = threading.Thread(
            target=self._deliver_later, args=(job_id, url, deliveries), daemon=True
        )
        self._webhook_threads.append(thread)
        thread.start()

    def _deliver_later(self, job_id, url, deliveries) -> None:
        if self.webhook_delay and self._shutdown.wait(timeout=self.webhook_delay):
            return
        if not self.webhook_out_of_order:
            return self._send_all(job_id, url, deliveries)
        with self._lock:
            self._pending.append((job_id, url, deliveries))
            batch = list(reversed(self._pending)) if len(self._pending) >= 2 else []
            if batch:
                self._pending.clear()
        if not batch:
            # Alone for a second: sent by itself.
            self._shutdown.wait(timeout=1.0)
            with self._lock:
                batch = list(reversed(self._pending))
                self._pending.clear()
        for item in batch:
            self._send_all(*item)

    def _send_all(self, job_id, url, deliveries) -> None:
        import requests  # the fakes' own client: a service's calls are real HTTP

        for delivery_id, status, body, headers in deliveries():
            for _ in range(max(1, self.webhook_repeats)):
                delay = self.webhook_retry_delay
                for _try in range(self.webhook_retries + 1):
                    record = {"id": delivery_id, "job": job_id, "status": status}
                    try:
                        answer = requests.post(url, data=body, headers=headers, timeout=10)
                        record.update(answer=answer.status_code, reason=answer.text.strip())
                    except requests.RequestException as error:
                        record.update(answer=None, reason=str(error))
                    with self._lock:
                        self.deliveries.append(record)
                    if record["answer"] is not None and 200 <= record["answer"] < 300:
                        break
                    if self._shutdown.wait(timeout=delay):
                        return
                    delay *= 2

    def delivered(self, job_id: str | None = None) -> list[dict]:
        with self._lock:
            return [d for d in self.deliveries if job_id is None or d["job"] == job_id]
