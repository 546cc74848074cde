"""A real S3-compatible server for the tests (moto in server mode, in a process of its own),
and a proxy in front of it that answers 503 on demand: a storage that is down.

`python -m tests.s3` runs the server on a free loopback port, prints its URL on the first
line and stops when its standard input closes, so a test session that dies takes its
server with it. The studio talks to it through django-storages and boto3, unmodified.
"""

import http.client
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# moto accepts any keys; boto3 needs some, and a region for its signatures.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "studio-test-key",
    "AWS_SECRET_ACCESS_KEY": "studio-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# A storage that fails fails at once in tests: boto3's retries (up to about 15 s of
# backoff against a 503) are for production, where a blip should not halt a run.
TEST_CLIENT_ENV = {"AWS_MAX_ATTEMPTS": "1", "AWS_RETRY_MODE": "standard"}


def start_server() -> tuple[subprocess.Popen, str]:
    """Start the S3 server process; return it and its URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.s3"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    url = process.stdout.readline().strip()
    if not url.startswith("http://"):
        process.kill()
        raise RuntimeError(f"the S3 server did not start (it said {url!r})")
    return process, url


def client(endpoint_url: str):
    """Return a boto3 S3 client of the server, for what the tests set up around the studio."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
    )


def storage_options(bucket: str, endpoint_url: str, **extra) -> dict:
    """Return the STORAGES["default"] entry the studio's settings make for S3, for this
    bucket and endpoint."""
    from studio.settings import s3_storage

    entry = s3_storage(bucket=bucket, endpoint_url=endpoint_url, region="us-east-1")
    entry["OPTIONS"].update(extra)
    return entry


SERVICE_UNAVAILABLE = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ServiceUnavailable</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


class DownableProxy:
    """An HTTP proxy in front of the S3 server: passes requests through while up, answers
    every request with S3's own 503 ServiceUnavailable while down."""

    def __init__(self, upstream: str):
        self.upstream = upstream.removeprefix("http://").rstrip("/")
        self.down = False
        self.refused = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if proxy.down:
                    proxy.refused += 1
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(SERVICE_UNAVAILABLE)))
                    self.end_headers()
                    self.wfile.write(SERVICE_UNAVAILABLE)
                    return
                upstream = http.client.HTTPConnection(proxy.upstream, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "expect"}
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    content = answer.read()
                finally:
                    upstream.close()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(content)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> "DownableProxy":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def main() -> None:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    print(f"http://{host}:{port}", flush=True)
    sys.stdin.read()  # until the test session that started it ends, however it ends
    server.stop()


if __name__ == "__main__":
    os.environ.update(CREDENTIALS)
    main()
