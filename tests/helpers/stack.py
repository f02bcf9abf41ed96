"""The LLM serving stack on free ports, for tests: ``startup.py --llm-api`` as a real process.

    with start_llm_stack(tmp_dir) as stack:
        client = openai.OpenAI(base_url=stack.gateway_url + "/v1", api_key="EMPTY")
        ...
        # another process (e.g. the API server) that should use this stack:
        env = child_env(data_root, **stack.env)

The stack is: FastChat controller, the default LLM's worker (SmolLM2-135M-Instruct), the
embeddings worker (all-MiniLM-L6-v2) and the OpenAI-compatible gateway. It is ready when the
gateway answers and the controller lists both models. Leaving the block sends SIGTERM to
startup.py, which stops its children; anything still alive after that is killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.helpers.processes import REPO_ROOT, child_env, free_port, log_tail

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
DEFAULT_EMBED_MODEL = "all-MiniLM-L6-v2"


@dataclass
class LLMStack:
    gateway_url: str  # http://127.0.0.1:PORT (the OpenAI base URL is gateway_url + "/v1")
    controller_url: str
    model_name: str
    embed_model_name: str
    # CHATCHAT_* variables that point another process's settings at this stack.
    env: dict[str, str]
    worker_urls: dict[str, str] = field(default_factory=dict)  # model name -> worker URL
    log_dir: Path | None = None
    process: subprocess.Popen | None = None

    @property
    def openai_base_url(self) -> str:
        return self.gateway_url + "/v1"


def free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def stack_env(
    controller_port: int,
    gateway_port: int,
    worker_ports: dict[str, int],
    model_name: str = DEFAULT_MODEL,
    embed_model_name: str = DEFAULT_EMBED_MODEL,
) -> dict[str, str]:
    """The CHATCHAT_* variables of a stack on these ports."""
    return {
        "CHATCHAT_FSCHAT_CONTROLLER__HOST": "127.0.0.1",
        "CHATCHAT_FSCHAT_CONTROLLER__PORT": str(controller_port),
        "CHATCHAT_FSCHAT_OPENAI_API__HOST": "127.0.0.1",
        "CHATCHAT_FSCHAT_OPENAI_API__PORT": str(gateway_port),
        "CHATCHAT_FSCHAT_MODEL_WORKERS": json.dumps({name: {"port": port} for name, port in worker_ports.items()}),
        "CHATCHAT_MODEL_WORKER_BASE_PORT": str(max(worker_ports.values(), default=gateway_port) + 1),
        "CHATCHAT_LLM_MODELS": json.dumps([model_name]),
        "CHATCHAT_EMBEDDING_MODEL": embed_model_name,
    }


def _listed_models(controller_url: str) -> list[str]:
    try:
        response = httpx.post(controller_url + "/list_models", timeout=5)
        return response.json().get("models", []) if response.status_code == 200 else []
    except (httpx.HTTPError, ValueError):
        return []


def wait_listed(controller_url: str, name: str, timeout: float = 60) -> None:
    """Wait until a worker serving ``name`` registered with the controller."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if name in _listed_models(controller_url):
            return
        time.sleep(0.25)
    raise TimeoutError(f"{name} never registered")


def _gateway_up(gateway_url: str) -> bool:
    try:
        return httpx.get(gateway_url + "/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def describe_failure(log_dir: Path, startup_log: Path) -> str:
    parts = [f"--- startup.py ---\n{log_tail(startup_log, 60)}"]
    for log in sorted(log_dir.glob("*.log")):
        if log != startup_log:
            parts.append(f"--- {log.name} ---\n{log_tail(log, 25)}")
    return "\n".join(parts)


@contextlib.contextmanager
def start_llm_stack(
    directory: Path,
    *,
    model_name: str = DEFAULT_MODEL,
    embed_model_name: str = DEFAULT_EMBED_MODEL,
    extra_env: dict[str, str] | None = None,
    timeout: float = 600.0,
) -> Iterator[LLMStack]:
    """Run ``startup.py --llm-api`` on free ports in ``directory`` until the block ends."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    controller_port, gateway_port, llm_port, embed_port = free_ports(4)
    env_vars = stack_env(
        controller_port,
        gateway_port,
        {model_name: llm_port, embed_model_name: embed_port},
        model_name,
        embed_model_name,
    )
    env = child_env(directory, **env_vars, **(extra_env or {}))
    log_dir = Path(env["CHATCHAT_LOG_PATH"])
    log_dir.mkdir(parents=True, exist_ok=True)
    startup_log = log_dir / "startup.log"
    stack = LLMStack(
        gateway_url=f"http://127.0.0.1:{gateway_port}",
        controller_url=f"http://127.0.0.1:{controller_port}",
        model_name=model_name,
        embed_model_name=embed_model_name,
        env=env_vars,
        worker_urls={model_name: f"http://127.0.0.1:{llm_port}", embed_model_name: f"http://127.0.0.1:{embed_port}"},
        log_dir=log_dir,
    )
    with open(startup_log, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "startup.py"), "--llm-api", "-n", model_name],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack.process = proc
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"startup.py exited with {proc.returncode} before the stack was up:\n"
                    + describe_failure(log_dir, startup_log)
                )
            models = _listed_models(stack.controller_url)
            if model_name in models and embed_model_name in models and _gateway_up(stack.gateway_url):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the LLM stack was not up within {timeout:.0f}s:\n" + describe_failure(log_dir, startup_log)
                )
            time.sleep(0.5)
        yield stack
    finally:
        stop_stack(proc)


def stop_stack(proc: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM startup.py (it stops its children); kill whatever is left of the tree after ``grace``."""
    try:
        import psutil

        tree = psutil.Process(proc.pid).children(recursive=True)
    except Exception:
        tree = []
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    for child in tree:
        with contextlib.suppress(Exception):
            if child.is_running():
                child.kill()


def streamed_text(stream) -> tuple[list[str], str | None]:
    """The text pieces of an ``openai`` chat stream, and its finish reason."""
    pieces, finish = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    return pieces, finish
