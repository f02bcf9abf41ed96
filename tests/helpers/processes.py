"""Start real server processes for tests and wait for them to answer, not for a fixed time."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port nobody listens on right now.

    Alone, the OS picks it. Under pytest-xdist each worker picks from its own slice of 40000-59999
    instead, so two workers never hand out the same port (it is only taken once the server binds it,
    well after this returns). Filtering the OS's picks by worker would not do: Linux gives bind()
    ports of one parity only."""
    worker, workers = _xdist_worker()
    if workers == 1:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]
    span = 20000 // workers
    low = 40000 + worker * span
    for _ in range(1000):
        port = random.randrange(low, low + span)
        if is_free(port):
            return port
    raise RuntimeError(f"no free port in {low}-{low + span - 1}")


def is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _xdist_worker() -> tuple[int, int]:
    name = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ... when run by pytest-xdist
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    return (int(name[2:]), count) if name.startswith("gw") and name[2:].isdigit() else (0, 1)


def child_env(data_root: Path, **overrides: str) -> dict[str, str]:
    """Environment for a child process: its own data root, offline model hubs, repo on the path."""
    env = dict(os.environ)
    env.update(
        CHATCHAT_KB_ROOT_PATH=str(data_root / "knowledge_base"),
        CHATCHAT_LOG_PATH=str(data_root / "logs"),
        CHATCHAT_BASE_TEMP_DIR=str(data_root / "tmp"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")])),
    )
    env.update(overrides)
    return env


def log_tail(log_path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_for_http(url: str, proc: subprocess.Popen | None = None, timeout: float = 180.0, log_path: Path | None = None):
    """Poll ``url`` until it answers below 500; fail early, with the log's tail, if ``proc`` dies."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered:\n{_tail(log_path)}")
        try:
            response = httpx.get(url, timeout=5.0)
            if response.status_code < 500:
                return response
        except httpx.HTTPError as exc:
            last_error = exc
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s ({last_error}):\n{_tail(log_path)}")


def _tail(log_path: Path | None) -> str:
    return log_tail(log_path) if log_path else ""


@contextlib.contextmanager
def running_process(
    args: list[str],
    *,
    env: dict[str, str],
    log_path: Path,
    health_url: str | None = None,
    timeout: float = 180.0,
) -> Iterator[subprocess.Popen]:
    """Run ``python <args>`` in its own process group; stop the whole group on exit."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        if health_url:
            wait_for_http(health_url, proc, timeout=timeout, log_path=log_path)
        yield proc
    finally:
        stop_process_group(proc)


def stop_process_group(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM the child's group, then SIGKILL what is left after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
