"""Fixtures for the interop tests: the built binaries (from the environment the test
script sets), a running paramd on a free loopback port, and helpers to call them."""

import json
import os
import re
import signal
import subprocess
import tempfile
import time

import pytest


def _binary(name):
    path = os.environ.get(f"PARAMD_{name.upper()}")
    if not path or not os.path.exists(path):
        pytest.fail(f"PARAMD_{name.upper()} must name the built {name}; run tests/interop/run")
    return path


@pytest.fixture(scope="session")
def probe_path():
    return _binary("ckpt_probe")


@pytest.fixture
def probe(probe_path):
    """Runs ckpt_probe; returns the parsed JSON of `read`, or raises with its stderr."""

    def run(*args, check=True):
        result = subprocess.run([probe_path, *map(str, args)], capture_output=True, text=True)
        if check and result.returncode != 0:
            raise AssertionError(f"ckpt_probe {' '.join(map(str, args))}: {result.stderr}")
        if not check:
            return result
        return json.loads(result.stdout) if args[0] == "read" else None

    return run


class Daemon:
    def __init__(self, root):
        self.data_dir = os.path.join(root, "data")
        self.checkpoint_dir = os.path.join(self.data_dir, "checkpoints")
        self.log_path = os.path.join(root, "paramd.log")
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [_binary("paramd"), "--listen", "127.0.0.1:0", "--data-dir", self.data_dir,
             "--snapshot-interval", "0"],
            stderr=self.log)
        deadline = time.time() + 30
        while time.time() < deadline:
            match = re.search(r"\blisten=(\S+)", open(self.log_path).read())
            if match:
                self.address = match.group(1)
                return
            if self.process.poll() is not None:
                raise RuntimeError("paramd exited:\n" + open(self.log_path).read())
            time.sleep(0.02)
        raise RuntimeError("paramd did not start")

    def paramctl(self, *args, check=True):
        result = subprocess.run([_binary("paramctl"), "--server", self.address, *map(str, args)],
                                capture_output=True, text=True)
        if check and result.returncode != 0:
            raise AssertionError(f"paramctl {' '.join(map(str, args))}: {result.stderr}")
        return result

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)
        self.log.close()


@pytest.fixture
def daemon():
    with tempfile.TemporaryDirectory(prefix="paramd-interop-") as root:
        d = Daemon(root)
        try:
            yield d
        finally:
            d.stop()
