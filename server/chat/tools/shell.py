"""Run a shell command on the API server's machine. Only offered to the agent when
AGENT_SHELL_ENABLED is true: whoever can chat with the agent can then run commands."""

from __future__ import annotations

import subprocess

SHELL_TIMEOUT_SECONDS = 30
MAX_OUTPUT_CHARS = 4000


def run_shell(command: str) -> str:
    try:
        completed = subprocess.run(
            command, shell=True, capture_output=True, text=True, timeout=SHELL_TIMEOUT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired:
        return f"command timed out after {SHELL_TIMEOUT_SECONDS}s"
    output = (completed.stdout + completed.stderr).strip()
    return f"exit code {completed.returncode}\n{output[:MAX_OUTPUT_CHARS]}"
