"""Tasks the benchmark's `overhead` scenario runs on a bare cluster, to show what the queue
alone carries with nothing of the studio in its tasks but the service's call."""

import base64

import requests

from . import catalogue

_session = requests.Session()


def call_service(url: str) -> int:
    """Ask the image service for one picture and decode it, as a provider does at least:
    the floor of any task that makes the call. Return the picture's size in bytes."""
    answer = _session.post(
        f"{url}/images/generations",
        json={
            "model": catalogue.default("openai"),
            "prompt": "a fox in a field",
            "size": "1024x1024",
            "n": 1,
        },
        headers={"Authorization": "Bearer sk-benchmark"},
        timeout=30,
    )
    answer.raise_for_status()
    return len(base64.b64decode(answer.json()["data"][0]["b64_json"]))
