import os
import signal
import subprocess
import sys
import time

from django.core.management.base import BaseCommand

STOP_GRACE_SECONDS = 15


class Command(BaseCommand):
    help = "Run the web server and a django-q2 cluster together; Ctrl-C stops both."

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
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    self.stderr.write(f"The {name} process exited ({child.returncode}); stopping.")
                    exit_code = 1
                    stopping = True
            time.sleep(0.5)
        self._stop_all(children)
        sys.exit(exit_code)

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
