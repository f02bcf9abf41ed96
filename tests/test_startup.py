"""startup.py as users run it: help, configuration errors before anything starts, clean stops, dead children."""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.helpers.processes import REPO_ROOT, child_env, free_port, log_tail
from tests.helpers.stack import free_ports, stack_env


def run_startup(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "startup.py", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def openai_api_env(tmp_path: Path) -> tuple[dict[str, str], int, int]:
    controller, gateway = free_ports(2)
    return child_env(tmp_path, **stack_env(controller, gateway, {})), controller, gateway


def test_no_flag_prints_the_help(tmp_path):
    result = run_startup([], child_env(tmp_path))
    assert result.returncode == 0
    assert "usage: startup.py" in result.stdout
    for flag in ("--all-webui", "--all-api", "--llm-api", "--openai-api", "--model-worker", "--model-name"):
        assert flag in result.stdout
    for flag in ("--controller", "--api-worker", "--webui", "--quiet", "--lite"):
        assert flag in result.stdout


def test_a_port_in_use_is_one_line_before_anything_starts(tmp_path):
    env, controller, _ = openai_api_env(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", controller))
        busy.listen()
        result = run_startup(["-o"], env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"port {controller}" in lines[0] and "in use" in lines[0]
    assert "FSCHAT_CONTROLLER" in lines[0]  # what to change
    assert not (tmp_path / "logs").exists() or not list((tmp_path / "logs").glob("*.log"))


def test_an_unknown_model_is_one_line_before_anything_starts(tmp_path):
    env, _, _ = openai_api_env(tmp_path)
    result = run_startup(["--llm-api", "-n", "no-such-model"], env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no-such-model" in lines[0] and "not found" in lines[0]


def test_an_invalid_setting_is_one_line_naming_it(tmp_path):
    env, _, _ = openai_api_env(tmp_path)
    env["CHATCHAT_API_SERVER__PORT"] = "not-a-port"
    result = run_startup(["-o"], env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "API_SERVER.port" in lines[0]


def test_an_unknown_device_is_one_line_naming_the_setting(tmp_path):
    env, _, _ = openai_api_env(tmp_path)
    env["CHATCHAT_LLM_DEVICE"] = "gpu"
    result = run_startup(["--llm-api"], env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "'gpu'" in lines[0] and "LLM_DEVICE" in lines[0]


def test_a_worker_without_a_reachable_controller_is_refused(tmp_path):
    env, _, _ = openai_api_env(tmp_path)
    result = run_startup(["-m", "-c", f"http://127.0.0.1:{free_port()}"], env)
    assert result.returncode == 2
    assert "no controller answers" in result.stderr and "-c" in result.stderr


@contextlib.contextmanager
def launched(args: list[str], env: dict[str, str], log: Path):
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "startup.py", *args], cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:  # a failed test: SIGTERM first, so startup.py stops its children too
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_for_running(proc: subprocess.Popen, log: Path, timeout: float) -> float:
    """Wait for startup.py's "is running" line; returns the deadline, for what the test waits on next."""
    deadline = time.monotonic() + timeout
    while "is running" not in log.read_text():
        assert proc.poll() is None, log_tail(log)
        assert time.monotonic() < deadline, log_tail(log)
        time.sleep(0.2)
    return deadline


def wait_until_up(proc: subprocess.Popen, gateway_port: int, log: Path, timeout: float = 120) -> list[psutil.Process]:
    wait_for_running(proc, log, timeout)
    assert httpx.get(f"http://127.0.0.1:{gateway_port}/health").status_code == 200
    children = psutil.Process(proc.pid).children(recursive=True)
    assert len(children) >= 2
    return children


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_every_child_and_frees_the_ports(tmp_path, signum):
    env, controller, gateway = openai_api_env(tmp_path)
    log = tmp_path / "startup.log"
    with launched(["-o"], env, log) as proc:
        children = wait_until_up(proc, gateway, log)
        text = log.read_text()
        assert f"http://127.0.0.1:{gateway}/v1" in text and "Python" in text and "fschat" in text  # the banner
        started = time.monotonic()
        proc.send_signal(signum)
        assert proc.wait(timeout=20) == 0
        assert time.monotonic() - started < 12
    gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, [p.pid for p in alive]
    assert port_free(controller) and port_free(gateway)
    assert (tmp_path / "logs" / "controller.log").is_file() and (tmp_path / "logs" / "openai_gateway.log").is_file()


def test_a_child_that_dies_is_reported_and_the_launcher_exits_non_zero(tmp_path):
    env, controller, gateway = openai_api_env(tmp_path)
    log = tmp_path / "startup.log"
    with launched(["-o"], env, log) as proc:
        children = wait_until_up(proc, gateway, log)
        victim = next(p for p in children if "server.openai_gateway" in " ".join(p.cmdline()))
        victim.kill()
        assert proc.wait(timeout=30) == 1
    output = log.read_text()
    assert "openai_gateway exited with status -9" in output
    assert "Uvicorn running" in output  # the tail of the dead child's log
    gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive
    assert port_free(controller)


def gateway_process(launcher: subprocess.Popen) -> psutil.Process:
    children = psutil.Process(launcher.pid).children(recursive=True)
    return next(p for p in children if "server.openai_gateway" in " ".join(p.cmdline()))


def test_with_restart_a_crashed_child_is_started_again_until_the_limit(tmp_path):
    env, controller, gateway = openai_api_env(tmp_path)
    log = tmp_path / "startup.log"
    with launched(["-o", "--restart", "1"], env, log) as proc:
        wait_until_up(proc, gateway, log)
        first = gateway_process(proc)
        first.kill()
        deadline = time.monotonic() + 60
        while "openai_gateway is back" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log_tail(log)
            time.sleep(0.2)
        assert "restarting it (1 of 1)" in log.read_text()
        second = gateway_process(proc)
        assert second.pid != first.pid
        assert httpx.get(f"http://127.0.0.1:{gateway}/health").status_code == 200
        second.kill()  # the limit is reached: now the launcher gives up as without --restart
        assert proc.wait(timeout=30) == 1
    assert "openai_gateway exited with status -9" in log.read_text()
    assert port_free(controller) and port_free(gateway)


def test_a_slow_start_says_what_the_service_is_doing(tmp_path):
    env, controller, gateway = openai_api_env(tmp_path)
    env["CHATCHAT_STARTUP_PROGRESS_SECONDS"] = "0.3"  # the gateway takes seconds to import FastChat
    log = tmp_path / "startup.log"
    with launched(["-o"], env, log) as proc:
        wait_until_up(proc, gateway, log)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    lines = [line for line in log.read_text().splitlines() if ": still starting (" in line]
    assert lines, log.read_text()
    assert all(re.match(r"^(controller|openai_gateway): still starting \(\d+s\)", line) for line in lines), lines


def test_the_latest_activity_is_the_last_line_of_this_run_progress_bars_included(tmp_path):
    from startup import latest_activity

    log = tmp_path / "worker.log"
    log.write_text(
        "an earlier run's line\n===== 2026-12-02 12:00:00 startup.py starts model_worker\n"
        "2026-12-02 12:00:01,123 INFO chatkb.worker: converting M, step 2/3 (10s): de-quantizing the weights\n"
        "Converting and de-quantizing GGUF tensors...:  10%|#  | 27/272\r"
        "Converting and de-quantizing GGUF tensors...:  45%|####5 | 123/272\r"
    )
    assert latest_activity(log) == "Converting and de-quantizing GGUF tensors...:  45%|####5 | 123/272"
    log.write_text(
        log.read_text() + "\n2026-12-02 12:00:31,001 INFO chatkb.worker: converting M, step 3/3 (30s): saving\n"
    )
    assert latest_activity(log) == "converting M, step 3/3 (30s): saving"
    log.write_text("an earlier run's line\n===== 2026-12-02 12:01:00 startup.py starts model_worker\n")
    assert latest_activity(log) == ""
    assert latest_activity(tmp_path / "missing.log") == ""


def test_folder_sync_starts_with_the_api_server_when_settings_ask(tmp_path):
    api_port = free_port()
    env = child_env(
        tmp_path,
        CHATCHAT_API_SERVER__PORT=str(api_port),
        CHATCHAT_FOLDER_SYNC='{"notes": ""}',
        CHATCHAT_FOLDER_SYNC_SETTLE_SECONDS="0.3",
    )
    content = tmp_path / "knowledge_base" / "notes" / "content"
    log = tmp_path / "startup.log"
    with launched(["--api"], env, log) as proc:
        deadline = wait_for_running(proc, log, 180)
        assert "folder sync: notes <- its content/" in log.read_text()
        api = f"http://127.0.0.1:{api_port}"
        content.mkdir(parents=True, exist_ok=True)  # the knowledge base need not exist: folder sync creates it
        (content / "hello.txt").write_text("Folder sync started by startup.py ingested this file.")
        listed = f"{api}/knowledge_base/list_files?knowledge_base_name=notes"
        while "hello.txt" not in httpx.get(listed, timeout=30).text:
            assert time.monotonic() < deadline, log_tail(tmp_path / "logs" / "folder_sync.log")
            time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_zero_api_workers_is_one_line_before_anything_starts(tmp_path):
    result = run_startup(["--api", "--api-workers", "0"], child_env(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: --api-workers 0: give 1 or more API server processes"]


def test_api_workers_run_the_api_server_as_several_processes_on_one_port(tmp_path):
    api_port = free_port()
    env = child_env(tmp_path, CHATCHAT_API_SERVER__PORT=str(api_port))
    log = tmp_path / "startup.log"
    with launched(["--api", "--api-workers", "2"], env, log) as proc:
        deadline = wait_for_running(proc, log, 240)
        assert "2 processes on one port" in log.read_text()
        api = f"http://127.0.0.1:{api_port}"
        assert all(httpx.get(f"{api}/health", timeout=30).status_code == 200 for _ in range(4))
        workers = api_processes(proc)
        assert len(workers) == 2 and len({w.ppid() for w in workers}) == 1  # one uvicorn parent holds the port
        workers[0].kill()  # uvicorn's parent starts a process again in its place
        while len(api_processes(proc)) < 2 or workers[0].pid in [w.pid for w in api_processes(proc)]:
            assert time.monotonic() < deadline, log_tail(tmp_path / "logs" / "api.log")
            time.sleep(0.2)
        assert proc.poll() is None  # the launcher saw nothing to report
        everything = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    gone, alive = psutil.wait_procs(everything, timeout=10)
    assert not alive and port_free(api_port)


def api_processes(launcher: subprocess.Popen) -> list[psutil.Process]:
    """The API server's worker processes (multiprocessing children of uvicorn's parent)."""
    found = []
    for child in psutil.Process(launcher.pid).children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if "spawn_main" in " ".join(child.cmdline()) and child.is_running():
                found.append(child)
    return found
