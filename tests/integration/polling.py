"""Waiting for something in a test: poll with a deadline, never a bare sleep."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
DEADLINE = 10.0  # seconds any one expected thing may take before the test fails


def wait_until(condition: Callable[[], T | None], what: str, timeout: float = DEADLINE, interval: float = 0.005) -> T:
    """Poll `condition` until it returns something true and return that; fail naming `what`
    at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def terminate(process: subprocess.Popen | None, timeout: float = DEADLINE) -> None:
    """SIGTERM a child that still runs and wait for its exit; SIGKILL it after `timeout`."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)
