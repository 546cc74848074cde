"""`make run`'s last step: web server and workers together, stopped by one Ctrl-C."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, wait_until, worker_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                found.append(int(entry.name))
    return found


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


@pytest.mark.django_db(transaction=True)
def test_ctrl_c_stops_the_web_server_and_the_workers_leaving_no_process(broker):
    addrport = f"127.0.0.1:{free_port()}"
    studio = subprocess.Popen(
        [sys.executable, "manage.py", "runstudio", "--addrport", addrport],
        cwd=ROOT,
        env=worker_env(DJANGO_DEBUG="true"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until(lambda: answers(f"http://{addrport}/accounts/login/"), timeout=30)
        wait_until(lambda: len(processes_mentioning("manage.py qcluster")) >= 2, timeout=30)
        web_and_workers = processes_mentioning(addrport) + processes_mentioning("qcluster")

        os.killpg(studio.pid, signal.SIGINT)  # what the terminal does on Ctrl-C

        assert studio.wait(timeout=20) == 0
        alive = [pid for pid in web_and_workers if Path(f"/proc/{pid}").exists()]
        assert alive == []
    finally:
        if studio.poll() is None:
            os.killpg(studio.pid, signal.SIGKILL)
