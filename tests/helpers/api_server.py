"""Start the real API server (``python -m server.api``) on a free port for a test module.

Usage::

    with start_api_server(tmp_path, CHATCHAT_API_KEYS='["k1"]') as server:
        httpx.get(f"{server.url}/knowledge_base/list_knowledge_bases")

``extra_env`` entries override the child's environment (any ``CHATCHAT_*`` setting).
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.processes import child_env, free_port, log_tail, running_process


@dataclass
class ApiServer:
    url: str  # e.g. http://127.0.0.1:43121 (no trailing slash)
    port: int
    env: dict[str, str]
    data_root: Path
    log_path: Path
    process: subprocess.Popen

    @property
    def kb_root(self) -> Path:
        return Path(self.env["CHATCHAT_KB_ROOT_PATH"])

    def log(self, lines: int = 60) -> str:
        return log_tail(self.log_path, lines)


@contextlib.contextmanager
def start_api_server(data_root: Path, timeout: float = 180.0, **extra_env: str) -> Iterator[ApiServer]:
    """Run the API server with its own data root under ``data_root``; stop it (and its children) on exit."""
    data_root = Path(data_root)
    data_root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = child_env(data_root, CHATCHAT_API_SERVER__PORT=str(port), **extra_env)
    url = f"http://127.0.0.1:{port}"
    log_path = data_root / "logs" / f"api_server_{port}.log"
    args = ["-m", "server.api", "--host", "127.0.0.1", "--port", str(port)]
    with running_process(args, env=env, log_path=log_path, health_url=f"{url}/health", timeout=timeout) as proc:
        yield ApiServer(url, port, env, data_root, log_path, proc)
