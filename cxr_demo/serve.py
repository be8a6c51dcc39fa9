"""Start `python app.py` on a free localhost port and wait until it answers: shared by the benchmark, the load test and the
tests that go through the running app. Nothing in the library imports it."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

from cxr_demo.zoo.catalog import REPO_ROOT



class AppDidNotStart(RuntimeError):
    pass


@dataclass(frozen=True)
class RunningApp:
    process: subprocess.Popen
    url: str
    ready_s: float  # from launch to the first HTTP answer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(log: IO | int = subprocess.DEVNULL, timeout: float = 120.0, root: str | Path = REPO_ROOT) -> Iterator[RunningApp]:
    """`python app.py` from `root` (this checkout by default; a deploy's copy in the tests)."""
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_ANALYTICS_ENABLED": "False"}
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "app.py"], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        yield RunningApp(process, url, _wait_until_answering(process, url, start, timeout))
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_until_answering(process: subprocess.Popen, url: str, start: float, timeout: float) -> float:
    while time.perf_counter() - start < timeout:
        if process.poll() is not None:
            raise AppDidNotStart(f"app.py exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return round(time.perf_counter() - start, 2)
        except OSError:
            time.sleep(0.1)
    raise AppDidNotStart(f"app.py did not answer within {timeout:.0f} s")
