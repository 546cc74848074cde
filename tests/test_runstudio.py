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


def descendants(root: int) -> list[int]:
    """Return the pids of every process below root, from /proc."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The command name may hold spaces; the parent pid is the 2nd field after it.
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        children = [child for child, parent in parents.items() if parent == pid]
        found += children
        frontier += children
    return found


def is_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


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
        # The web server, the cluster's parent and its workers, monitor and pusher.
        web_and_workers = wait_until(
            lambda: (found := descendants(studio.pid)) and len(found) >= 5 and found,
            timeout=30,
        )

        os.killpg(studio.pid, signal.SIGINT)  # what the terminal does on Ctrl-C

        assert studio.wait(timeout=20) == 0
        alive = [pid for pid in web_and_workers if is_alive(pid)]
        assert alive == []
    finally:
        if studio.poll() is None:
            os.killpg(studio.pid, signal.SIGKILL)


@pytest.mark.django_db(transaction=True)
def test_ctrl_c_as_soon_as_it_says_it_runs_stops_the_web_server_and_the_workers_too(broker):
    studio = subprocess.Popen(
        [sys.executable, "manage.py", "runstudio", "--addrport", f"127.0.0.1:{free_port()}"],
        cwd=ROOT,
        env=worker_env(DJANGO_DEBUG="true"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert studio.stdout.readline().startswith("Studio running at http://127.0.0.1:")
        os.killpg(studio.pid, signal.SIGINT)  # at once: its children are still starting
        children = Path(f"/proc/{studio.pid}/task/{studio.pid}/children").read_text().split()

        assert studio.wait(timeout=20) == 0
        assert len(children) == 2  # the web server and the cluster
        assert [pid for pid in map(int, children) if is_alive(pid)] == []
    finally:
        if studio.poll() is None:
            os.killpg(studio.pid, signal.SIGKILL)
            studio.wait()


def children_of(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def cluster_of(studio_pid: int) -> int | None:
    """Return the pid of runstudio's live qcluster child, if any."""
    found = [pid for pid in children_of(studio_pid) if "qcluster" in cmdline(pid) and is_alive(pid)]
    return found[0] if found else None


@pytest.mark.django_db(transaction=True)
def test_a_killed_worker_cluster_comes_back_and_the_web_server_stays_up(broker, tmp_path):
    from generation import workers

    addrport = f"127.0.0.1:{free_port()}"
    log = tmp_path / "runstudio.err"
    studio = subprocess.Popen(
        [sys.executable, "manage.py", "runstudio", "--addrport", addrport],
        cwd=ROOT,
        env=worker_env(DJANGO_DEBUG="true"),
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
        start_new_session=True,
    )
    try:
        wait_until(lambda: answers(f"http://{addrport}/accounts/login/"), timeout=30)
        first = wait_until(lambda: cluster_of(studio.pid), timeout=30)
        wait_until(lambda: any(c.pid == first for c in workers.alive()), timeout=30)
        group = [first, *descendants(first)]

        os.killpg(first, signal.SIGKILL)  # the whole cluster, as the OOM killer might

        second = wait_until(
            lambda: (pid := cluster_of(studio.pid)) and pid != first and pid, timeout=30
        )
        assert answers(f"http://{addrport}/accounts/login/")  # the web server never went
        wait_until(lambda: any(c.pid == second for c in workers.alive()), timeout=30)
        assert [pid for pid in group if is_alive(pid)] == []
        assert studio.poll() is None
        assert "The workers exited (-9); starting them again in 1 s (restart 1)." in (
            log.read_text()
        )

        os.killpg(studio.pid, signal.SIGINT)
        assert studio.wait(timeout=20) == 0
    finally:
        if studio.poll() is None:
            os.killpg(studio.pid, signal.SIGKILL)
            studio.wait()
