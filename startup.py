"""Start the stack: FastChat controller, OpenAI gateway, model workers, API server and web UI.

    python startup.py -a                  # everything (controller, gateway, workers, API, web UI)
    python startup.py --all-api           # everything but the web UI
    python startup.py --llm-api           # controller, gateway and model workers
    python startup.py -m -n Qwen2.5-7B-Instruct -c http://10.0.0.5:20001   # a worker for another machine's controller

Each process is a separate ``python -m ...`` child in its own process group, started in
dependency order; the launcher waits for each one's health check (HTTP), not a fixed time.
Each child's output goes to ``<LOG_PATH>/<name>.log``. Ctrl+C or SIGTERM stops every child
(SIGTERM, then SIGKILL after a few seconds). A child that dies is reported with the tail of
its log and the launcher exits with status 1, unless ``--restart N`` (or RESTART_CRASHED_SERVICES)
lets it start the child again, up to N times per service; a model worker that exits with status 0 was
stopped on request (``/llm_model/stop``) and is only reported. Configuration mistakes (a port
in use, an unknown model, an invalid setting) are reported in one line, with what to change,
before anything starts (exit status 2).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

STOP_GRACE_SECONDS = 8.0
SERVER_START_TIMEOUT = 120.0
WORKER_START_TIMEOUT = 1800.0  # large models on slow disks


class Shutdown(Exception):
    """SIGTERM or SIGINT arrived."""


_deferring = False
_deferred_signal: str | None = None


def on_signal(signum, frame) -> None:
    global _deferred_signal
    name = signal.Signals(signum).name
    if _deferring:
        _deferred_signal = name
        return
    raise Shutdown(name)


@contextlib.contextmanager
def signals_deferred():
    """Hold SIGINT/SIGTERM inside the block; raise Shutdown after it if one arrived."""
    global _deferring, _deferred_signal
    _deferring = True
    try:
        yield
    finally:
        _deferring = False
        pending, _deferred_signal = _deferred_signal, None
        if pending:
            raise Shutdown(pending)


class ConfigError(Exception):
    """A mistake the user fixes in settings or on the command line; reported in one line."""


@dataclass
class Service:
    name: str  # also the log file name
    title: str  # for the banner
    args: list[str]  # after ``python``
    url: str  # base URL clients use
    host: str
    port: int
    health_path: str = "/health"
    setting: str = ""  # which setting decides the port, for error messages
    kind: str = "server"  # server | worker | client (no port of its own: ready once running)
    models: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    info: dict = field(default_factory=dict)  # the worker's /health answer
    started_at: float = 0.0
    restarts: int = 0
    progress_at: float = 0.0  # when the launcher last said what this service is doing


# ---- command line ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="startup.py",
        description="Start the chatkb services (Langchain-Chatchat 0.2.x compatible). "
        "Choose what to start; with no choice this help is printed.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  python startup.py -a                      everything, with the web UI\n"
        "  python startup.py --all-api               everything but the web UI\n"
        "  python startup.py --llm-api               controller, gateway and model workers\n"
        "  python startup.py --api --api-workers 4   the API server as 4 processes on its one port\n"
        "  python startup.py -m -n MODEL -c http://controller-host:20001\n"
        "                                            a worker that joins another machine's controller\n",
    )
    parser.add_argument(
        "-a", "--all-webui", action="store_true", help="start everything: controller, gateway, workers, API, web UI"
    )
    parser.add_argument("--all-api", action="store_true", help="start everything but the web UI")
    parser.add_argument(
        "--llm-api", action="store_true", help="start the controller, the OpenAI gateway and the model workers"
    )
    parser.add_argument(
        "-o", "--openai-api", action="store_true", help="start the FastChat controller and the OpenAI gateway"
    )
    parser.add_argument(
        "-m",
        "--model-worker",
        action="store_true",
        help="start a worker for each local model in --model-name, and the embeddings worker",
    )
    parser.add_argument(
        "-n",
        "--model-name",
        nargs="+",
        metavar="NAME",
        help="models to serve (several allowed; default: LLM_MODELS from settings)",
    )
    parser.add_argument(
        "-c",
        "--controller",
        dest="controller_address",
        metavar="URL",
        help="controller address the workers register with (default: FSCHAT_CONTROLLER from settings); "
        "lets a worker on this machine join a controller on another",
    )
    parser.add_argument("--api", action="store_true", help="start the API server (:7861)")
    parser.add_argument(
        "--api-workers",
        type=int,
        metavar="N",
        default=None,
        help="run the API server as N processes sharing its port (default: API_WORKERS from settings, 1); "
        "for API servers on several hosts see docs/vector_stores.md",
    )
    parser.add_argument(
        "-p",
        "--api-worker",
        action="store_true",
        help="start a proxy worker for each online model (ONLINE_LLM_MODEL) in --model-name",
    )
    parser.add_argument("-w", "--webui", action="store_true", help="start the web UI (:8501)")
    parser.add_argument(
        "--mcp",
        action="store_true",
        help="start the MCP server (:7862, knowledge-base tools); -a/--all-api start it when MCP_ENABLED is true",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="children log warnings and errors only")
    parser.add_argument(
        "-i", "--lite", action="store_true", help="no local model workers: online (OpenAI-compatible) models only"
    )
    parser.add_argument(
        "--restart",
        type=int,
        metavar="N",
        default=None,
        help="restart a service that crashes, up to N times each (default: RESTART_CRASHED_SERVICES "
        "from settings, 0 = stop everything and exit with status 1 instead)",
    )
    return parser


def selection(args: argparse.Namespace) -> argparse.Namespace:
    if args.all_webui:
        args.openai_api = args.model_worker = args.api_worker = args.api = args.webui = True
    if args.all_api:
        args.openai_api = args.model_worker = args.api_worker = args.api = True
    if args.llm_api:
        args.openai_api = args.model_worker = args.api_worker = True
    if args.lite:
        args.model_worker = False
    return args


def anything_selected(args: argparse.Namespace) -> bool:
    return any(
        (args.all_webui, args.all_api, args.llm_api, args.openai_api, args.model_worker)
        + (args.api, args.api_worker, args.webui, args.mcp)
    )


# ---- settings and the plan -------------------------------------------------------------------


def load_settings():
    from pydantic import ValidationError

    try:
        from configs import get_settings

        return get_settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']} (got {err.get('input')!r})" for err in exc.errors()
        )
        raise ConfigError(
            f"invalid setting {problems}: fix it in {os.environ.get('CHATCHAT_CONFIG_FILE', 'configs/settings.yaml')} "
            "or in the matching CHATCHAT_* environment variable"
        )
    except Exception as exc:
        raise ConfigError(f"cannot read the settings: {' '.join(str(exc).split())}")


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"


def plan_services(args: argparse.Namespace, settings) -> tuple[list[list[Service]], list[str]]:
    """Stages of services to start in order, and notes for the user."""
    notes: list[str] = []
    log_level = ["--log-level", "warning"] if args.quiet else []
    stages: list[list[Service]] = []
    if args.openai_api:
        stages.extend(_gateway_stages(settings, log_level))
    workers = _worker_services(args, settings, log_level, notes)
    if workers:
        stages.append(workers)
    stages.extend([service] for service in _front_services(args, settings, log_level, notes))
    return stages, notes


def _server(name: str, title: str, module: str, address, setting: str, extra: list[str] | None = None) -> Service:
    """A service that is a ``python -m module --host H --port P`` process listening at ``address``."""
    args = ["-m", module, "--host", address.host, "--port", str(address.port), *(extra or [])]
    return Service(name, title, args, address.url, address.host, address.port, setting=setting)


def _gateway_stages(settings, log_level: list[str]) -> list[list[Service]]:
    """The FastChat controller, then the OpenAI-compatible gateway that asks it for workers."""
    controller = _server(
        "controller", "FastChat controller", "server.controller", settings.FSCHAT_CONTROLLER,
        "FSCHAT_CONTROLLER.port", log_level,
    )  # fmt: skip
    gateway = _server(
        "openai_gateway", "OpenAI-compatible API", "server.openai_gateway", settings.FSCHAT_OPENAI_API,
        "FSCHAT_OPENAI_API.port", ["--controller-address", settings.FSCHAT_CONTROLLER.url, *log_level],
    )  # fmt: skip
    return [[controller], [gateway]]


class _WorkerPorts:
    """Ports for model workers: the one a worker's settings name, else the next free one from the base."""

    def __init__(self, settings):
        self.settings = settings
        self.taken = {cfg.port for cfg in settings.FSCHAT_MODEL_WORKERS.values() if cfg.port}
        self.next_port = settings.MODEL_WORKER_BASE_PORT

    def __call__(self, name: str) -> tuple[str, int, str]:
        config = self.settings.FSCHAT_MODEL_WORKERS.get(name)
        host = config.host if config else self.settings.DEFAULT_BIND_HOST
        if config and config.port:
            return host, config.port, f"FSCHAT_MODEL_WORKERS.{name}.port"
        while self.next_port in self.taken:
            self.next_port += 1
        port, self.next_port = self.next_port, self.next_port + 1
        return host, port, "MODEL_WORKER_BASE_PORT"


def _worker_services(args, settings, log_level: list[str], notes: list[str]) -> list[Service]:
    """A worker per LLM to run here (local or proxied online), then one per embedding model to serve."""
    from server.knowledge_base.embeddings import list_embedding_models

    controller_url = (args.controller_address or settings.FSCHAT_CONTROLLER.url).rstrip("/")
    ports = _WorkerPorts(settings)

    def worker(module: str, title: str, model: str, log_prefix: str) -> Service:
        host, port, setting = ports(model)
        url_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        return Service(
            f"{log_prefix}-{safe_name(model)}",
            title,
            ["-m", module, "--host", host, "--port", str(port), "--controller-address", controller_url]
            + ["--model-name", model, *log_level],
            f"http://{url_host}:{port}",
            host,
            port,
            setting=setting,
            kind="worker",
            models=[model],
        )

    embedding_models = set(list_embedding_models(settings)) | {settings.EMBEDDING_MODEL}
    names = list(dict.fromkeys(args.model_name or settings.LLM_MODELS))
    workers: list[Service] = []
    for name in names:
        if name in embedding_models:
            continue
        if name in settings.ONLINE_LLM_MODEL:
            if args.api_worker:
                workers.append(
                    worker("server.model_workers.proxy_worker", "online model (proxy)", name, "proxy_worker")
                )
            else:
                notes.append(f"{name} is an online model: add -p/--api-worker to start its proxy worker")
        elif args.model_worker:
            _check_local_model(name, settings)
            workers.append(worker("server.model_workers.transformers_worker", "local model", name, "model_worker"))
        elif args.lite and args.api_worker:
            notes.append(f"{name} is a local model: not started in --lite mode")

    for embed in _embedding_models_to_serve(args, settings, [n for n in names if n in embedding_models]):
        workers.append(worker("server.model_workers.embedding_worker", "embeddings", embed, "embedding_worker"))
    return workers


def _check_local_model(name: str, settings) -> None:
    """A local LLM must exist and name a device we know, or startup stops with what to change."""
    from server.model_workers.model_paths import ModelNotFound, configured_device, resolve_local_model

    try:
        resolve_local_model(name, settings)
    except ModelNotFound as exc:
        raise ConfigError(f"{exc} (or leave it out of -n/LLM_MODELS)")
    device = (configured_device(name, settings) or "auto").strip().lower()
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device):
        config = settings.FSCHAT_MODEL_WORKERS.get(name)
        where = (
            f"FSCHAT_MODEL_WORKERS.{name}.device" if config and "device" in config.model_fields_set else "LLM_DEVICE"
        )
        raise ConfigError(f"device '{device}' of {name} is not one of auto, cpu, cuda, cuda:N, mps: change {where}")


def _embedding_models_to_serve(args, settings, requested: list[str]) -> list[str]:
    """Embedding models named among the LLMs, plus the configured one when the whole local stack runs."""
    from server.knowledge_base.embeddings.local import resolve_model_path

    names = list(requested)
    if args.openai_api and (args.model_worker or args.lite) and settings.EMBEDDING_MODEL not in names:
        names.append(settings.EMBEDDING_MODEL)
    served = []
    for embed in names:
        online = embed in settings.ONLINE_EMBEDDING_MODELS
        if not (args.model_worker or (online and args.api_worker)):
            continue
        if not online and resolve_model_path(embed, settings) is None:
            raise ConfigError(
                f"embedding model '{embed}' not found: put its folder at {settings.MODEL_ROOT_PATH / embed}, "
                "set EMBEDDING_MODEL_PATHS or ONLINE_EMBEDDING_MODELS, or change EMBEDDING_MODEL"
            )
        served.append(embed)
    return served


def _front_services(args, settings, log_level: list[str], notes: list[str]) -> list[Service]:
    """The API server, the MCP server and folder sync that use it, and the web UI; each its own stage."""
    services = []
    a = settings.API_SERVER
    if args.api:
        workers = settings.API_WORKERS if args.api_workers is None else args.api_workers
        if workers < 1:
            raise ConfigError(f"--api-workers {workers}: give 1 or more API server processes")
        service = _server("api", "API server", "server.api", a, "API_SERVER.port", ["--workers", str(workers)])
        service.info["workers"] = workers
        services.append(service)
    if args.mcp or (settings.MCP_ENABLED and (args.all_webui or args.all_api)):
        services.append(_server("mcp", "MCP server", "server.mcp_server", settings.MCP_SERVER, "MCP_SERVER.port"))
    if args.api and settings.FOLDER_SYNC:
        sync_args = ["-m", "server.knowledge_base.folder_sync", "--api", a.url, *log_level]
        services.append(Service("folder_sync", "folder sync", sync_args, a.url, a.host, 0, kind="client"))
    if args.webui:
        if (ROOT / "webui.py").is_file():
            services.append(_webui_service(settings.WEBUI_SERVER))
        else:
            notes.append("webui.py is missing: the web UI is not started")
    return services


def _webui_service(w) -> Service:
    args = ["-m", "streamlit", "run", str(ROOT / "webui.py"), "--server.port", str(w.port)]
    args += ["--server.address", w.host, "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    return Service(
        "webui", "web UI", args, w.url, w.host, w.port, health_path="/_stcore/health", setting="WEBUI_SERVER.port"
    )


def port_in_use(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def preflight(stages: list[list[Service]], args, settings) -> None:
    seen: dict[int, str] = {}
    for service in (s for stage in stages for s in stage):
        if service.kind == "client":
            continue
        if service.port in seen:
            raise ConfigError(
                f"port {service.port} is given to both {seen[service.port]} and {service.name}: "
                f"change {service.setting}"
            )
        seen[service.port] = service.name
        if port_in_use(service.host, service.port):
            hint = f"change {service.setting} in configs/settings.yaml"
            if "FSCHAT_MODEL_WORKERS" not in service.setting:
                hint += f" or set CHATCHAT_{service.setting.replace('.', '__').upper()}"
            raise ConfigError(
                f"port {service.port} on {service.host} is already in use (needed by {service.name}): "
                f"stop what uses it, or {hint}"
            )
    if any(s.name == "api" for stage in stages for s in stage):
        from server.knowledge_base.vector_stores.checks import check_store_servers

        try:
            check_store_servers(settings)
        except (ValueError, RuntimeError) as exc:  # StoreSettingsError, StoreUnavailable: one line each
            raise ConfigError(str(exc)) from None
    starts_controller = any(s.name == "controller" for stage in stages for s in stage)
    has_workers = any(s.kind == "worker" for stage in stages for s in stage)
    if has_workers and not starts_controller:
        controller = (args.controller_address or settings.FSCHAT_CONTROLLER.url).rstrip("/")
        import httpx

        try:
            httpx.get(controller + "/test_connection", timeout=5).raise_for_status()
        except httpx.HTTPError as exc:
            raise ConfigError(
                f"no controller answers at {controller} ({exc.__class__.__name__}): start one "
                "(python startup.py -o) or pass its address with -c http://HOST:PORT"
            )


# ---- processes -------------------------------------------------------------------------------


class Supervisor:
    def __init__(self, settings, quiet: bool, max_restarts: int = 0):
        self.settings = settings
        self.quiet = quiet
        self.max_restarts = max_restarts
        self.services: list[Service] = []
        self.log_dir = Path(settings.LOG_PATH)

    def say(self, message: str) -> None:
        print(message, flush=True)

    def start(self, service: Service) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        service.log_path = self.log_dir / f"{service.name}.log"
        env = dict(os.environ)
        env.update(PYTHONUNBUFFERED="1", LOGDIR="")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
        # A signal arriving between Popen and the bookkeeping would orphan the child: defer it meanwhile.
        with signals_deferred():
            with open(service.log_path, "ab") as log:
                log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} startup.py starts {service.name}\n".encode())
                log.flush()
                service.proc = subprocess.Popen(
                    [sys.executable, *service.args],
                    cwd=ROOT,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.services.append(service)
        service.started_at = time.monotonic()
        if not self.quiet:
            where = "" if service.kind == "client" else f" on {service.url}"
            self.say(f"starting {service.name}{where} (log: {service.log_path})")

    def is_ready(self, service: Service) -> bool:
        import httpx

        if service.kind == "client":
            return service.proc is not None and service.proc.poll() is None

        try:
            response = httpx.get(service.url + service.health_path, timeout=3)
        except httpx.HTTPError:
            return False
        if response.status_code != 200:
            return False
        if service.kind == "worker":
            try:
                service.info = response.json()
            except ValueError:
                return False
            return bool(service.info.get("registered"))
        return True

    def wait_ready(self, stage: list[Service]) -> None:
        pending = list(stage)
        while pending:
            for service in list(pending):
                self.check_alive(service, starting=True)
                if self.is_ready(service):
                    pending.remove(service)
                    if not self.quiet:
                        self.say(f"{service.name} is up ({time.monotonic() - service.started_at:.1f}s)")
                    continue
                self.report_progress(service)
                limit = WORKER_START_TIMEOUT if service.kind == "worker" else SERVER_START_TIMEOUT
                if time.monotonic() - service.started_at > limit:
                    raise ChildFailed(service, f"did not answer {service.url}{service.health_path} within {limit:.0f}s")
            if pending:
                time.sleep(0.25)

    def report_progress(self, service: Service) -> None:
        """Every STARTUP_PROGRESS_SECONDS of a slow start, the service's latest log line (a model
        conversion's step, a progress bar), so a first start does not look hung."""
        every = self.settings.STARTUP_PROGRESS_SECONDS
        now = time.monotonic()
        if self.quiet or not every or now - max(service.started_at, service.progress_at) < every:
            return
        service.progress_at = now
        activity = latest_activity(service.log_path)
        self.say(
            f"{service.name}: still starting ({now - service.started_at:.0f}s)" + (f": {activity}" if activity else "")
        )

    def check_alive(self, service: Service, starting: bool = False) -> None:
        code = service.proc.poll() if service.proc else None
        if code is None:
            return
        if code == 0 and service.kind == "worker" and not starting:
            self.services.remove(service)
            self.say(f"{service.name} ({', '.join(service.models)}) stopped on request; the others keep running")
            return
        raise ChildFailed(service, f"exited with status {code}")

    def monitor(self) -> None:
        while self.services:
            for service in list(self.services):
                try:
                    self.check_alive(service)
                except ChildFailed as exc:
                    if service.restarts >= self.max_restarts:
                        raise
                    self.restart(service, exc.what)
            time.sleep(0.5)

    def restart(self, service: Service, what: str) -> None:
        service.restarts += 1
        self.say(
            f"warning: {service.name} {what}; restarting it ({service.restarts} of {self.max_restarts})\n"
            f"{log_tail(service.log_path, 10)}"
        )
        self.services.remove(service)
        self.start(service)
        self.wait_ready([service])
        self.say(f"{service.name} is back on {service.url}")

    def stop_all(self) -> None:
        """SIGTERM every child's process group, newest first; SIGKILL what is left after the grace time."""
        running = [s for s in reversed(self.services) if s.proc and s.proc.poll() is None]
        for service in running:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(service.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for service in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                service.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        for service in self.services:
            if service.proc is None:
                continue
            # Kill the whole group: children of children (e.g. torch compile workers) included.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(service.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                service.proc.wait(timeout=5)


class ChildFailed(Exception):
    def __init__(self, service: Service, what: str):
        super().__init__(f"{service.name} {what}")
        self.service = service
        self.what = what


def log_tail(path: Path | None, lines: int = 30) -> str:
    if path is None:
        return "(no log)"
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    text = text.rsplit("===== ", 1)[-1]  # this run only
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


_LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d[ T][\d:,.]+\s+(?:INFO|WARNING|DEBUG)\s+\S+?:\s*")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def latest_activity(path: Path | None, width: int = 150) -> str:
    """The last line this run of a service wrote (progress bars rewrite their line with \\r)."""
    if path is None:
        return ""
    try:
        with open(path, "rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - 8192))
            text = log.read().decode(errors="replace")
    except OSError:
        return ""
    text = text.rsplit("===== ", 1)[-1]
    lines = [_ANSI.sub("", line).strip() for line in re.split(r"[\r\n]+", text)]
    lines = [line for line in lines[1:] if line] if "startup.py starts" in text else [line for line in lines if line]
    if not lines:
        return ""
    line = _LOG_PREFIX.sub("", lines[-1])
    return line if len(line) <= width else line[: width - 3] + "..."


# ---- banner ----------------------------------------------------------------------------------


def package_versions() -> str:
    found = []
    for name in ("torch", "transformers", "sentence-transformers", "fschat", "fastapi", "langchain", "streamlit"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append(f"{name} {metadata.version(name)}")
    return ", ".join(found)


def banner(supervisor: Supervisor, settings, args) -> str:
    from configs import VERSION

    line = "=" * 78
    rows = [
        line,
        f"chatkb {VERSION} (Langchain-Chatchat 0.2.x compatible) is running",
        f"OS: {platform.platform()}",
        f"Python: {platform.python_version()} ({sys.executable})",
        f"packages: {package_versions()}",
    ]
    for service in supervisor.services:
        if service.kind == "worker":
            info = service.info
            detail = ", ".join(str(x) for x in (info.get("device"), info.get("backend")) if x)
            rows.append(
                f"{service.title}: {', '.join(info.get('models') or service.models)} [{detail}] at {service.url}"
            )
    for service in supervisor.services:
        if service.name == "controller":
            rows.append(f"controller: {service.url}")
        elif service.name == "openai_gateway":
            rows.append(f"OpenAI-compatible API: {service.url}/v1")
        elif service.name == "api":
            processes = service.info.get("workers", 1)
            shared = f", {processes} processes on one port" if processes > 1 else ""
            rows.append(f"API server: {service.url} (docs at {service.url}/docs{shared})")
        elif service.name == "webui":
            rows.append(f"web UI: {service.url}")
        elif service.name == "mcp":
            rows.append(f"MCP server: {service.url}/mcp (streamable HTTP)")
        elif service.name == "folder_sync":
            followed = ", ".join(f"{kb} <- {folder or 'its content/'}" for kb, folder in settings.FOLDER_SYNC.items())
            rows.append(f"folder sync: {followed}")
    if any(s.kind == "worker" for s in supervisor.services):
        rows.append(
            f"workers registered with: {(args.controller_address or settings.FSCHAT_CONTROLLER.url).rstrip('/')}"
        )
    rows.append(f"logs: {supervisor.log_dir}")
    rows.append("Ctrl+C stops everything.")
    rows.append(line)
    return "\n".join(rows)


# ---- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not anything_selected(args):
        parser.print_help()
        return 0
    args = selection(args)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with contextlib.suppress(AttributeError):
        signal.signal(signal.SIGHUP, on_signal)

    try:
        settings = load_settings()
        stages, notes = plan_services(args, settings)
        if not any(stages):
            raise ConfigError("nothing to start with these flags (see --help)")
        preflight(stages, args, settings)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    except Shutdown:
        return 0

    restarts = settings.RESTART_CRASHED_SERVICES if args.restart is None else max(0, args.restart)
    supervisor = Supervisor(settings, args.quiet, restarts)
    for note in notes:
        supervisor.say(f"note: {note}")
    status = 0
    try:
        for stage in stages:
            for service in stage:
                supervisor.start(service)
            supervisor.wait_ready(stage)
        supervisor.say(banner(supervisor, settings, args))
        supervisor.monitor()
    except Shutdown as exc:
        supervisor.say(f"{exc.args[0] if exc.args else 'signal'} received: stopping all services")
    except ChildFailed as exc:
        print(f"error: {exc} (log: {exc.service.log_path})\n{log_tail(exc.service.log_path)}", file=sys.stderr)
        status = 1
    finally:
        # A second Ctrl+C must not interrupt the cleanup.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        supervisor.stop_all()
    if status == 0:
        supervisor.say("all services stopped")
    return status


if __name__ == "__main__":
    sys.exit(main())
