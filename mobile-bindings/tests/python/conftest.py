"""Fixtures for the Python binding tests: the generated module and a real relay process.

Environment (set by scripts/test-bindings.sh):
  HOMEROOM_PY_BINDINGS  directory holding homeroom_mobile.py and libhomeroom_mobile.so
  HOMEROOM_RELAY_BIN    path of the homeroom-relay binary
"""

import os
import re
import subprocess
import sys
import threading
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, os.environ.get("HOMEROOM_PY_BINDINGS", os.path.join(ROOT, "bindings", "python")))

LINE = re.compile(r"listening on (\S+) .*fingerprint \(SHA-256\): ([0-9a-f]{64})")


class Relay:
    """A real homeroom-relay process on a free loopback port with its own data folder."""

    def __init__(self, data_dir):
        binary = os.environ.get("HOMEROOM_RELAY_BIN", os.path.join(ROOT, "target", "debug", "homeroom-relay"))
        self.proc = subprocess.Popen(
            [binary, "serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=dict(os.environ, RUST_LOG="warn"),
        )
        self.log = []
        found = threading.Event()

        def read():
            for line in self.proc.stdout:
                self.log.append(line.rstrip())
                m = LINE.search(line)
                if m and not found.is_set():
                    self.address, self.fingerprint = m.group(1), m.group(2)
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(60):
            self.stop()
            raise RuntimeError("relay did not report its address: " + "\n".join(self.log))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def relay(tmp_path):
    r = Relay(tmp_path / "relay")
    yield r
    r.stop()


def wait_for(what, predicate, timeout=30.0):
    """Poll `predicate` until true, or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {what}")
