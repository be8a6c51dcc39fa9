"""Start `python app.py` on a free localhost port and wait until it answers: shared by the benchmark, the load test and the
tests that go through the running app. Nothing in the library imports it."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

from cxr_demo.ui.warmup import MODELS_LOADED
from cxr_demo.zoo.catalog import REPO_ROOT


class AppDidNotStart(RuntimeError):
    pass


@dataclass(frozen=True)
class RunningApp:
    process: subprocess.Popen
    url: str
    ready_s: float  # from launch to the first HTTP answer
    models_loaded_s: float | None = None  # from launch to the warm-up's "default models loaded" (when waited for)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(log: IO | int = subprocess.DEVNULL, timeout: float = 120.0, root: str | Path = REPO_ROOT,
                until_models_loaded: bool = False) -> Iterator[RunningApp]:
    """`python app.py` from `root` (this checkout by default; a deploy's copy in the tests). With `until_models_loaded`,
    also wait for the background warm-up to load every default model: a class arrives at a Space that is up. The server's
    output then goes to a temporary file first (that is where the warm-up's line is looked for) and is copied to `log` at the end."""
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_ANALYTICS_ENABLED": "False"}
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") if until_models_loaded else nullcontext(log) as output:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=root, env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}/"
            ready = _wait_until_answering(process, url, start, timeout)
            loaded = _wait_for_line(process, output, MODELS_LOADED, start, timeout) if until_models_loaded else None
            yield RunningApp(process, url, ready, loaded)
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
            if until_models_loaded and hasattr(log, "write"):
                output.seek(0)
                log.write(output.read())


def _wait_for_line(process: subprocess.Popen, output: IO, text: str, start: float, timeout: float) -> float:
    while time.perf_counter() - start < timeout:
        if process.poll() is not None:
            raise AppDidNotStart(f"app.py exited with code {process.returncode}")
        output.seek(0)
        if text in output.read():
            return round(time.perf_counter() - start, 2)
        time.sleep(0.2)
    raise AppDidNotStart(f"app.py did not log {text!r} within {timeout:.0f} s")


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
