"""Simulated review tabs for the benchmark's `watchers` scenario: each tab polls the review
page's poll URL every few seconds and follows its own cursor (the URL the last changed
answer carried), as htmx does in a browser. With `max_interval`, a tab backs off as an idle
book's tab does (static/studio/app.js): the pause grows by half after each quiet answer
(204), up to that, and falls back to `interval` after a changed one.

It runs in a process of its own (`python -m generation.loadgen '<json>'`), on asyncio with
plain sockets: one small event loop drives hundreds of tabs without starving the server it
measures on a 2-core machine. It imports nothing from Django and prints one JSON object.
Only loopback addresses are accepted.
"""

import asyncio
import ipaddress
import json
import re
import resource
import sys
import time

POLL_URL = re.compile(rb'data-poll hx-get="([^"]+)"')


async def _request(host: str, port: int, path: str, headers: str) -> tuple[int, bytes]:
    """Send one GET and return (status, body); the server closes the connection after it
    (gunicorn's sync workers) or we do."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{headers}"
        writer.write(f"{request}Connection: close\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        if length:
            body = await reader.readexactly(int(length.group(1)))
        else:
            body = await reader.read()
        return status, body
    finally:
        writer.close()


async def _tab(index: int, config: dict, results: dict, stop_at: float) -> None:
    loop = asyncio.get_running_loop()
    interval, tabs = config["interval"], config["tabs"]
    longest = config.get("max_interval", interval)
    pause = interval
    path = config["url"]
    headers = f"Cookie: {config['cookie']}\r\nHX-Request: true\r\n"
    next_at = loop.time() + interval * index / tabs  # tabs opened spread over one interval
    while True:
        await asyncio.sleep(max(0.0, next_at - loop.time()))
        if loop.time() >= stop_at:
            return
        started = time.perf_counter()
        try:
            status, body = await asyncio.wait_for(
                _request(config["host"], config["port"], path, headers), timeout=30
            )
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            results["failed"] += 1
            status, body = 0, b""
        elapsed = (time.perf_counter() - started) * 1000
        if status:
            results["latencies"].append(elapsed)
            results["statuses"][str(status)] = results["statuses"].get(str(status), 0) + 1
            if status not in (200, 204, 286):
                results["failed"] += 1
            found = POLL_URL.search(body) if status == 200 else None
            if found:  # the changed answer carries the tab's new cursor and version
                path = found.group(1).decode().replace("&amp;", "&")
        pause = min(longest, pause * 1.5) if status == 204 else interval
        next_at += pause


async def _main(config: dict) -> dict:
    results = {"latencies": [], "failed": 0, "statuses": {}}
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + config["duration"]
    started = time.perf_counter()
    await asyncio.gather(*(_tab(i, config, results, stop_at) for i in range(config["tabs"])))
    results["seconds"] = time.perf_counter() - started
    return results


def main() -> None:
    config = json.loads(sys.argv[1])
    if not ipaddress.ip_address(config["host"]).is_loopback:
        raise SystemExit("loadgen: only loopback addresses")
    results = asyncio.run(_main(config))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    results["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    print(json.dumps(results))


if __name__ == "__main__":
    main()
