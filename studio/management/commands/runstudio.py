import os
import signal
import subprocess
import sys
import time

from django.core.management.base import BaseCommand

STOP_GRACE_SECONDS = 15
# A worker cluster that dies is started again after these waits (then every 30 s); one
# that stayed up for STABLE_SECONDS starts the series again.
RESTART_WAITS = (1, 2, 4, 8, 16, 30)
STABLE_SECONDS = 60


class Command(BaseCommand):
    help = (
        "Run the web server and a django-q2 cluster together; a cluster that dies is "
        "started again; Ctrl-C stops both."
    )

    def add_arguments(self, parser):
        parser.add_argument("--addrport", default="127.0.0.1:8000")

    def handle(self, *args, addrport, **options):
        stopping = False

        def request_stop(signum, frame):
            nonlocal stopping
            stopping = True

        # Before the children start: a Ctrl-C at any moment from here on stops them too.
        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        manage = [sys.executable, "manage.py"]
        # Each child gets its own process group, so the terminal's Ctrl-C reaches only us
        # and we stop them in the way each stops cleanly: SIGINT to the whole group
        # (a qcluster sent SIGTERM as a group does not stop).
        children = {
            "web": self._spawn([*manage, "runserver", "--noreload", addrport]),
            "workers": self._spawn([*manage, "qcluster"]),
        }
        self.stdout.write(f"Studio running at http://{addrport}/ — press Ctrl-C to stop.")
        exit_code = 0
        started = time.monotonic()
        restarts = 0  # in a row, without a stable spell between them
        restart_at = None
        while not stopping:
            if children["web"].poll() is not None:
                self.stderr.write(
                    f"The web process exited ({children['web'].returncode}); stopping."
                )
                exit_code = 1
                break
            workers = children["workers"]
            if restart_at is None and workers.poll() is not None:
                # The web server and the open tabs keep going; the cluster comes back.
                self._kill_group(workers)  # what is left of it (its workers, orphaned)
                if time.monotonic() - started >= STABLE_SECONDS:
                    restarts = 0
                wait = RESTART_WAITS[min(restarts, len(RESTART_WAITS) - 1)]
                restarts += 1
                self.stderr.write(
                    f"The workers exited ({workers.returncode}); starting them again in "
                    f"{wait} s (restart {restarts})."
                )
                restart_at = time.monotonic() + wait
            elif restart_at is not None and time.monotonic() >= restart_at:
                children["workers"] = self._spawn([*manage, "qcluster"])
                started, restart_at = time.monotonic(), None
                self.stderr.write(f"Started the workers again (pid {children['workers'].pid}).")
            time.sleep(0.5)
        self._stop_all(children)
        sys.exit(exit_code)

    @staticmethod
    def _kill_group(child) -> None:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    @staticmethod
    def _spawn(command):
        # A shell that starts us in the background ignores SIGINT, and children inherit
        # that; give them the default back so SIGINT stops them.
        return subprocess.Popen(
            command,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )

    def _stop_all(self, children):
        for child in children.values():
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGINT)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        self.stdout.write("Stopped the web server and the workers.")
