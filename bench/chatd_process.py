"""Start a ``twistd -n chatd`` for a benchmark and learn its port (shared by bench scripts).

``start_chatd(args, cwd=None, pin=None, repo=REPO, env=None, twistd=TWISTD)`` runs this
Python's twistd (or the command *twistd*, e.g. with a prelude) with *env* added and the
checkout (or the chatd tree *repo*) on PYTHONPATH, listening on ``tcp:0:interface=127.0.0.1`` plus *args*, optionally pinned to
core *pin* with ``taskset``; it returns ``(process, port)`` once chatd logged its
listening line, and keeps draining the log so a chatty server never blocks on the pipe.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LISTENING = re.compile(r"chatd listening on ws://[^\s]+:(\d+)/")
TWISTD = [
    sys.executable,
    "-c",
    "import sys; from twisted.scripts.twistd import run; sys.exit(run())",
]


def start_chatd(args, cwd=None, pin=None, timeout=30.0, repo=REPO, env=None, twistd=TWISTD):
    env = dict(os.environ, **(env or {}), PYTHONPATH=repo, PYTHONUNBUFFERED="1")
    cmd = [*twistd, "-n", "--pidfile=", "chatd", "--listen", "tcp:0:interface=127.0.0.1", *args]
    if pin is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(pin), *cmd]
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        match = LISTENING.search(line)
        if match:
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, int(match.group(1))
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise RuntimeError("chatd did not start")
