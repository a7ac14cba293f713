"""Fixtures: a real paramd daemon on a free loopback port (PARAMD_PARAMD names the
binary), a connected client, and fresh model names."""

from __future__ import annotations

import itertools
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import time
from typing import Iterator

import pytest

import paramd

REPO = pathlib.Path(__file__).resolve().parents[3]
SPECS = REPO / "examples" / "specs"
sys.path.insert(0, str(REPO / "tests" / "interop"))  # seed_models.py


class Daemon:
    def __init__(self, root: str, extra_args: tuple[str, ...] = ()) -> None:
        binary = os.environ.get("PARAMD_PARAMD")
        if not binary or not os.path.exists(binary):
            pytest.fail("PARAMD_PARAMD must name the built paramd binary "
                        "(ctest -R python_client sets it)")
        self.data_dir = os.path.join(root, "data")
        self.checkpoint_dir = os.path.join(self.data_dir, "checkpoints")
        self.log_path = os.path.join(root, "paramd.log")
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [binary, "--listen", "127.0.0.1:0", "--data-dir", self.data_dir,
             "--snapshot-interval", "0", *extra_args], stderr=self.log)
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

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)
        self.log.close()


@pytest.fixture(scope="session")
def daemon() -> Iterator[Daemon]:
    with tempfile.TemporaryDirectory(prefix="paramd-python-") as root:
        d = Daemon(root)
        try:
            yield d
        finally:
            d.stop()


@pytest.fixture
def client(daemon: Daemon) -> Iterator[paramd.Client]:
    with paramd.connect(daemon.address, timeout=30) as c:
        yield c


_counter = itertools.count()


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    """A model name no other test uses."""
    return f"{request.node.name.split('[')[0]}-{next(_counter)}"
