"""A loopback service speaking the Replicate predictions protocol, for tests and demos.

POST /v1/models/{owner}/{name}/predictions (or /v1/predictions) answers 201 with a
prediction that goes `starting` → `processing` → `succeeded` (output: a URL to an
animated WebP it serves) after a number of polls, or `failed` / `canceled` on demand.
Create can fail with the real problem+json bodies: 402 insufficient credit, 429 throttled,
503. It counts creates and polls per prediction.
"""

import io
import json
import threading
import uuid
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image

PROBLEMS = {
    "402": (
        402,
        {
            "title": "Insufficient credit",
            "status": 402,
            "detail": "You have insufficient credit to run this model. Go to "
            "https://replicate.com/account/billing#billing to purchase credit.",
        },
        {},
    ),
    "429": (
        429,
        {"detail": "Request was throttled. Your rate limit resets in ~30s.", "status": 429},
        {},
    ),
    "401": (
        401,
        {"title": "Unauthenticated", "detail": "You did not pass a valid token.", "status": 401},
        {},
    ),
    "503": (503, {"title": "Service unavailable", "detail": "Try again.", "status": 503}, {}),
}


def animated_webp(frames: int = 4, side: int = 64) -> bytes:
    images = [Image.new("RGB", (side, side), (40 * n, 120, 200 - 30 * n)) for n in range(frames)]
    buffer = io.BytesIO()
    images[0].save(
        buffer, format="WEBP", save_all=True, append_images=images[1:], duration=100, loop=0
    )
    return buffer.getvalue()


class FakePredictionService:
    def __init__(self):
        self._lock = threading.Lock()
        self.creates = 0
        self.polls: Counter = Counter()
        self.create_script: deque[str] = deque()  # replies to the next creates, then "ok"
        self.outcome = "succeeded"  # how predictions end: succeeded, failed, canceled
        self.polls_needed = 3  # polls a prediction answers "processing" before it ends
        self.finish = threading.Event()  # when polls_needed is None, end only once set
        self.predictions: dict[str, dict] = {}
        self.canceled: list[str] = []  # predictions canceled through the cancel endpoint
        self.idempotency_keys: list[str] = []  # the Idempotency-Key of every create
        self.output = animated_webp()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def start(self) -> "FakePredictionService":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.finish.set()
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                json.loads(self.rfile.read(length) or b"{}")
                parts = self.path.strip("/").split("/")
                if parts[:2] == ["v1", "predictions"] and len(parts) == 4 and parts[3] == "cancel":
                    return self._cancel(parts[2])
                if not self.path.endswith("/predictions"):
                    return self._send(404, {"title": "Not found", "status": 404})
                with service._lock:
                    service.idempotency_keys.append(self.headers.get("Idempotency-Key", ""))
                with service._lock:
                    reply = service.create_script.popleft() if service.create_script else "ok"
                    if reply != "ok":
                        status, body, headers = PROBLEMS[reply]
                        return self._send(status, body, headers)
                    service.creates += 1
                    prediction_id = uuid.uuid4().hex[:20]
                    service.predictions[prediction_id] = {"status": "starting"}
                self._send(201, self._prediction(prediction_id, "starting"))

            def do_GET(self):
                parts = self.path.strip("/").split("/")
                if parts[:2] == ["v1", "files"]:
                    return self._send_bytes(200, service.output, "image/webp")
                if parts[:2] != ["v1", "predictions"] or len(parts) != 3:
                    return self._send(404, {"title": "Not found", "status": 404})
                prediction_id = parts[2]
                with service._lock:
                    if prediction_id not in service.predictions:
                        return self._send(404, {"title": "Not found", "status": 404})
                    service.polls[prediction_id] += 1
                    polls = service.polls[prediction_id]
                    if service.predictions[prediction_id]["status"] == "canceled":
                        return self._send(200, self._prediction(prediction_id, "canceled"))
                needed = service.polls_needed
                done = service.finish.is_set() if needed is None else polls > needed
                if not done:
                    state = "starting" if polls == 1 else "processing"
                    return self._send(200, self._prediction(prediction_id, state))
                self._send(200, self._prediction(prediction_id, service.outcome))

            def _cancel(self, prediction_id: str):
                """POST /v1/predictions/{id}/cancel: the prediction ends as canceled (one
                that already ended keeps its status)."""
                with service._lock:
                    prediction = service.predictions.get(prediction_id)
                    if prediction is None:
                        return self._send(404, {"title": "Not found", "status": 404})
                    if prediction["status"] not in ("succeeded", "failed", "canceled"):
                        prediction["status"] = "canceled"
                        service.canceled.append(prediction_id)
                    status = prediction["status"]
                self._send(200, self._prediction(prediction_id, status))

            def _prediction(self, prediction_id: str, status: str) -> dict:
                base = service.url
                body = {
                    "id": prediction_id,
                    "model": "minimax/video-01",
                    "status": status,
                    "input": {},
                    "output": None,
                    "error": None,
                    "urls": {
                        "get": f"{base}/predictions/{prediction_id}",
                        "cancel": f"{base}/predictions/{prediction_id}/cancel",
                    },
                }
                if status == "succeeded":
                    body["output"] = f"{base}/files/{prediction_id}.webp"
                if status == "failed":
                    body["error"] = "CUDA out of memory"
                return body

            def _send(self, status, body, headers=None):
                content = json.dumps(body).encode()
                kind = "application/json" if status < 400 else "application/problem+json"
                self._send_bytes(status, content, kind, headers)

            def _send_bytes(self, status, content, content_type, headers=None):
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

        return Handler
