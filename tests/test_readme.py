"""Every command block of the README and of docs/ works as printed, on a fresh copy of the
repository.

The copy holds the files git would commit (tracked and new, not ignored) as they are in this
working tree, so uncommitted edits are tested too; no .venv, .env or database comes along.
The README's blocks run first, in its order, as a newcomer would type them (`make run`
first makes the copy's own .venv and .env, the demo book and its database), then the blocks
of every docs/**/*.md file, file by file in sorted order, each file's in its order; each
block runs with `bash -e -o pipefail` in its own process group.

An HTML comment right before each ```sh / ```bash / ```shell / ```console block says how:

    <!-- readme-test: first-line "TEXT" -->          exits 0; its first output line is TEXT
    <!-- readme-test: server first-line "TEXT" -->   long-running: read until a line holding
                                                     TEXT and until its output is quiet for a
                                                     second (five at most: a server still
                                                     starting workers would miss the signal),
                                                     then SIGINT to its process group; it
                                                     must exit and leave no process behind
    <!-- readme-test: skip "REASON" -->              not run (needs other machines or servers)
    ... env NAME=VALUE                               a variable the test adds for this block
    ... s3                                           the block's files go to a bucket named
                                                     studio-media on a local S3 server
                                                     (tests/s3.py) the test starts

Output is stdout and stderr together. A block without an annotation fails the test, in the
README or in any docs/ file. The
test adds these variables to every block: PYTHONUNBUFFERED=1 (lines arrive as printed),
and a free port as ADDRPORT=127.0.0.1:PORT (`make run`) and GUNICORN_CMD_ARGS="--bind
127.0.0.1:PORT" (gunicorn); "{port}" in TEXT stands for that port. `make test` runs one
small file here (env PYTEST_ARGS): the whole suite is what runs this test.
"""

import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests import s3
from tests.conftest import ROOT

COMMAND_FENCES = ("sh", "bash", "shell", "console")
BLOCK = re.compile(r"^```(?P<lang>[\w-]*)\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)
ANNOTATION = re.compile(r"<!--\s*readme-test:(?P<spec>.*?)-->\s*$")
SERVER_START_SECONDS = 300  # `make run` on a fresh copy makes its .venv first
BLOCK_SECONDS = 300
STOP_SECONDS = 30
SETTLE_SECONDS = 1.0
SECRET_KEY_MISSING = (
    "manage.py: Set DJANGO_SECRET_KEY (or DJANGO_DEBUG=true for local development)."
    " `make run` writes both to .env for a development checkout."
)


@dataclass
class Block:
    line: int  # where its fence opens in its file
    text: str
    path: str = "README.md"  # its file, relative to the repository
    server: bool = False
    s3: bool = False
    first_line: str | None = None
    skip: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.text.splitlines()[0]}"


def documents(root: Path) -> list[str]:
    """Return the files whose command blocks run, in the order they run: the README, then
    docs/**/*.md sorted."""
    docs = sorted(path.relative_to(root).as_posix() for path in (root / "docs").rglob("*.md"))
    return ["README.md", *docs]


def readme_blocks(readme: str, path: str = "README.md") -> list[Block]:
    """Return a document's command blocks with their annotations; fail on a missing one."""
    blocks, missing = [], []
    for match in BLOCK.finditer(readme):
        if match["lang"] not in COMMAND_FENCES:
            continue
        line = readme.count("\n", 0, match.start()) + 1
        before = readme[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        annotation = ANNOTATION.search(before)
        block = Block(line=line, text=match["body"], path=path)
        if annotation is None:
            missing.append(str(block))
            continue
        words = shlex.split(annotation["spec"])
        while words:
            word = words.pop(0)
            if word == "server":
                block.server = True
            elif word == "s3":
                block.s3 = True
            elif word == "first-line":
                block.first_line = words.pop(0)
            elif word == "skip":
                block.skip = words.pop(0)
            elif word == "env":
                name, value = words.pop(0).split("=", 1)
                block.env[name] = value
            else:
                pytest.fail(f"{path}:{line}: unknown readme-test word {word!r}")
        if block.skip is None and block.first_line is None:
            pytest.fail(f"{block}: its annotation says neither first-line nor skip")
        blocks.append(block)
    assert not missing, "command blocks without a readme-test annotation:\n" + "\n".join(missing)
    return blocks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def newcomer_env(**extra: str) -> dict[str, str]:
    """Return a shell's environment without what this suite sets or activates."""
    dropped_prefixes = ("DJANGO_", "STUDIO_", "PYTEST_", "MAKE", "GUNICORN_")
    dropped = {"MFLAGS", "MEDIA_ROOT", "DATABASE_URL", "REDIS_URL", "VIRTUAL_ENV", "ADDRPORT"}
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(dropped_prefixes) and k not in dropped
    }
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "/usr/bin:/bin").split(os.pathsep) if not p.endswith(".venv/bin")
    )
    return {**env, **extra}


def processes_in(directory: Path) -> list[int]:
    """Return the pids of processes whose working directory is inside directory."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cwd = Path(os.readlink(entry / "cwd"))
            except OSError:
                continue
            if cwd == directory or directory in cwd.parents:
                found.append(int(entry.name))
    return found


def process_state(pid: int) -> str:
    """Return a process's command, state and what it waits in, for a failure message."""
    proc = Path(f"/proc/{pid}")
    try:
        command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        return f"{command} [{state}, {(proc / 'wchan').read_text()}]"
    except OSError:
        return "gone"


class Output:
    """Lines of a process's output, read by a thread as they come."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream):
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, text: str, *, timeout: float) -> bool:
        """Return whether a line holding text arrived within timeout seconds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                return False
            if line is None:  # the process closed its output
                return False
            self.lines.append(line)
            if text in line:
                return True
        return False

    def settle(self, *, quiet: float, most: float) -> None:
        """Read on until no line arrives for `quiet` seconds, or for `most` seconds in all."""
        deadline = time.monotonic() + most
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=min(quiet, left))
            except queue.Empty:
                return
            if line is None:
                self._queue.put(None)  # closed: let a later read see it too
                return
            self.lines.append(line)

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.lines[-n:])


S3_BUCKET = "studio-media"  # the README's


def run_block(block: Block, copy: Path, *, s3_url: str = "") -> None:
    port = free_port()
    storage = {}
    if block.s3:
        storage = {
            **s3.CREDENTIALS,
            "STUDIO_MEDIA_STORAGE": "s3",
            "STUDIO_S3_BUCKET": S3_BUCKET,
            "STUDIO_S3_ENDPOINT_URL": s3_url,
        }
    env = newcomer_env(
        PYTHONUNBUFFERED="1",
        ADDRPORT=f"127.0.0.1:{port}",
        GUNICORN_CMD_ARGS=f"--bind 127.0.0.1:{port}",
        **storage,
        **block.env,
    )
    expected = block.first_line.replace("{port}", str(port))
    command = ["bash", "-e", "-o", "pipefail", "-c", block.text]
    if not block.server:
        result = subprocess.run(
            command,
            cwd=copy,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=BLOCK_SECONDS,
            start_new_session=True,
        )
        first = result.stdout.split("\n", 1)[0]
        assert (result.returncode, first) == (0, expected), f"{block}\n{result.stdout[-3000:]}"
        return
    process = subprocess.Popen(
        command,
        cwd=copy,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output = Output(process.stdout)
    try:
        started = output.wait_for(expected, timeout=SERVER_START_SECONDS)
        assert started, f"{block}: no line holding {expected!r}\n{output.tail()}"
        # gunicorn forks its workers one by one: a worker forked as the signal arrives has
        # no handler yet and misses it, and its master then waits 30 s to kill it.
        output.settle(quiet=SETTLE_SECONDS, most=5 * SETTLE_SECONDS)
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            output.wait_for("\0", timeout=1)  # whatever it said meanwhile
            states = {pid: process_state(pid) for pid in processes_in(copy)}
            pytest.fail(
                f"{block}: running {STOP_SECONDS} s after Ctrl-C: {states}\n{output.tail()}"
            )
        deadline = time.monotonic() + STOP_SECONDS
        while processes_in(copy) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = {pid: process_state(pid) for pid in processes_in(copy)}
        assert left == {}, f"{block}: processes left after Ctrl-C\n{output.tail()}"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for pid in processes_in(copy):  # what the block left behind, started by this test
            os.kill(pid, signal.SIGKILL)


def copy_of_the_tree(into: Path) -> Path:
    """Copy the files git would commit, as they are in this working tree, into a folder."""
    copy = into / "studio"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is not copied
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    return copy


@pytest.fixture(scope="module")
def fresh_copy(tmp_path_factory):
    """A copy of the tree that the doc test works in (it writes .env, a database, …)."""
    copy = copy_of_the_tree(tmp_path_factory.mktemp("readme"))
    yield copy
    shutil.rmtree(copy, ignore_errors=True)


def test_a_fresh_copy_without_env_file_or_secret_key_refuses_to_start(tmp_path):
    # A copy of its own: the doc test's copy has the .env that `make run` wrote.
    fresh_copy = copy_of_the_tree(tmp_path)
    assert not (fresh_copy / ".env").exists()
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=fresh_copy,
        env=newcomer_env(),
        capture_output=True,
        text=True,
    )
    assert (result.returncode, result.stdout, result.stderr) == (1, "", SECRET_KEY_MISSING + "\n")


def test_every_document_has_annotated_blocks_and_the_docs_are_collected():
    names = documents(ROOT)
    assert names[0] == "README.md" and "docs/operating.md" in names
    for name in names:  # annotations are checked before anything runs
        readme_blocks((ROOT / name).read_text(), name)


LINK = re.compile(r"\]\((?P<target>[^)\s#]+)(?:#[^)]*)?\)")


def test_every_relative_link_in_the_readme_and_docs_names_a_file():
    broken = []
    for name in documents(ROOT):
        text = (ROOT / name).read_text()
        for match in LINK.finditer(text):
            target = match["target"]
            if "://" in target or target.startswith("mailto:"):
                continue
            if not ((ROOT / name).parent / target).exists():
                broken.append(f"{name}: {target}")
    assert broken == []


@pytest.mark.long
@pytest.mark.newcomer
def test_every_command_block_in_the_readme_and_docs_works_as_printed(fresh_copy):
    blocks = [
        block
        for name in documents(fresh_copy)
        for block in readme_blocks((fresh_copy / name).read_text(), name)
    ]
    server, s3_url = None, ""
    if any(block.s3 and block.skip is None for block in blocks):
        server, s3_url = s3.start_server()  # the operator's S3, with their bucket
        s3.client(s3_url).create_bucket(Bucket=S3_BUCKET)
    try:
        for block in blocks:
            if block.skip is None:
                run_block(block, fresh_copy, s3_url=s3_url)
    finally:
        if server is not None:
            server.stdin.close()
            server.wait(timeout=STOP_SECONDS)
    assert (fresh_copy / ".env").is_file()  # `make run` wrote it, and git ignores it
