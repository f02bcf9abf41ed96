"""What every model worker shares: FastChat's worker protocol, registration, and control endpoints.

Workers are built on ``fastchat.serve.base_model_worker.BaseModelWorker`` (registration,
heart beats, queue length) but serve their own FastAPI app, so each process has exactly one
worker and a few endpoints FastChat lacks:

- FastChat's: ``/worker_generate_stream``, ``/worker_generate``, ``/worker_get_embeddings``,
  ``/worker_get_status``, ``/count_token``, ``/worker_get_conv_template``, ``/model_details``.
- ``POST /worker_apply_chat_template`` ``{"messages": [...]}`` -> ``{"prompt": str}``: the prompt
  rendered with the model's own chat template. Our gateway calls it instead of building the
  prompt from a FastChat conversation template (see ``server/openai_gateway.py``).
- ``POST /worker_change_model`` ``{"new_model_name"}``: replace the served model in place.
- ``POST /worker_release``: unregister and exit with status 0 (``startup.py`` treats a worker
  that exits 0 as stopped on request, not as a crash).
- ``GET /health``: ``{"status", "models", "registered", "device"}``.

Our workers advertise the conversation template named ``CHAT_TEMPLATE_MARKER``; a gateway
that knows it asks the worker to render prompts, a stock FastChat gateway still gets a
usable ChatML template.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

os.environ.setdefault("LOGDIR", "")  # FastChat writes log files into the working directory otherwise

import fastchat.serve.base_model_worker as fastchat_worker  # noqa: E402
import requests  # noqa: E402
from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import JSONResponse, StreamingResponse  # noqa: E402
from fastchat.constants import ErrorCode  # noqa: E402
from fastchat.conversation import Conversation, SeparatorStyle  # noqa: E402

from configs import Settings, get_settings  # noqa: E402

logger = logging.getLogger("chatkb.worker")
# BaseModelWorker builds FastChat's logger (which swaps sys.stdout/stderr) unless one is set.
fastchat_worker.logger = logger

CHAT_TEMPLATE_MARKER = "chatkb-chat-template"
HEART_BEAT_INTERVAL = float(os.environ.get("FASTCHAT_WORKER_HEART_BEAT_INTERVAL", 45))


def error_chunk(message: str, code: int = ErrorCode.INTERNAL_ERROR) -> dict[str, Any]:
    return {"text": message, "error_code": int(code)}


def normalize_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """OpenAI messages as chat templates expect them: string contents, known roles."""
    result = []
    for message in messages:
        role = message.get("role") or "user"
        if role == "developer":
            role = "system"
        content = message.get("content")
        if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
            content = "\n".join(
                part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
            )
        result.append({"role": role, "content": "" if content is None else str(content)})
    return result


class ChatkbWorker(fastchat_worker.BaseModelWorker):
    """A FastChat-compatible worker; subclasses implement generation or embeddings."""

    device: str = "cpu"

    def __init__(
        self,
        *,
        controller_addr: str,
        worker_addr: str,
        model_names: list[str],
        limit_worker_concurrency: int = 5,
    ):
        super().__init__(
            controller_addr=controller_addr.rstrip("/"),
            worker_addr=worker_addr.rstrip("/"),
            worker_id=uuid.uuid4().hex[:8],
            model_path=model_names[0],
            model_names=list(model_names),
            limit_worker_concurrency=limit_worker_concurrency,
        )
        self.registered = False
        self.switching = False
        self._inflight = 0
        self._inflight_cond = threading.Condition()
        self._stop_heart_beat = threading.Event()

    # ---- FastChat protocol ------------------------------------------------------------------
    def make_conv_template(self, conv_template: str | None = None, model_path: str | None = None) -> Conversation:
        return Conversation(
            name=CHAT_TEMPLATE_MARKER,
            system_template="<|im_start|>system\n{system_message}",
            roles=("<|im_start|>user", "<|im_start|>assistant"),
            sep_style=SeparatorStyle.CHATML,
            sep="<|im_end|>",
            stop_str=None,  # workers stop on their own end-of-turn tokens
        )

    def count_token(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"count": self.count_tokens(params.get("prompt") or ""), "error_code": 0}

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 3)

    def apply_chat_template(self, messages: list[dict[str, str]]) -> str:
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"

    async def generate_stream(self, params: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        yield error_chunk(f"{self.model_names[0]} does not generate text", ErrorCode.INTERNAL_ERROR)

    async def get_embeddings_async(self, params: dict[str, Any]) -> dict[str, Any]:
        return error_chunk(f"{self.model_names[0]} does not make embeddings", ErrorCode.INTERNAL_ERROR)

    async def change_model(self, new_model_name: str) -> dict[str, Any]:
        return {"code": 500, "msg": f"the worker of {self.model_names[0]} cannot switch models"}

    def describe(self) -> dict[str, Any]:
        return {"device": self.device}

    def request_exit(self) -> None:
        server = getattr(self, "server", None)
        if server is not None:
            server.should_exit = True
        else:
            os.kill(os.getpid(), signal.SIGTERM)

    # ---- registration -----------------------------------------------------------------------
    def register_to_controller(self) -> bool:
        try:
            response = requests.post(
                self.controller_addr + "/register_worker",
                json={
                    "worker_name": self.worker_addr,
                    "check_heart_beat": True,
                    "worker_status": self.get_status(),
                    "multimodal": False,
                },
                timeout=10,
            )
            response.raise_for_status()
        except requests.RequestException as exc:
            if self.registered or not getattr(self, "_warned_unreachable", False):
                logger.error("cannot register with the controller at %s: %s (retrying)", self.controller_addr, exc)
                self._warned_unreachable = True
            self.registered = False
            return False
        if not self.registered:
            logger.info("registered %s at %s with %s", self.model_names, self.worker_addr, self.controller_addr)
        self.registered = True
        return True

    def unregister_from_controller(self) -> None:
        """Tell the controller to forget this worker now (our controller's endpoint; a stock one ignores it)."""
        with contextlib.suppress(requests.RequestException):
            requests.post(
                self.controller_addr + "/unregister_worker", json={"worker_name": self.worker_addr}, timeout=3
            )
        self.registered = False

    def send_heart_beat(self) -> None:
        try:
            response = requests.post(
                self.controller_addr + "/receive_heart_beat",
                json={"worker_name": self.worker_addr, "queue_length": self.get_queue_length()},
                timeout=5,
            )
            exist = response.json()["exist"]
        except (requests.RequestException, ValueError, KeyError) as exc:
            logger.warning("heart beat to %s failed: %s", self.controller_addr, exc)
            self.registered = False
            return
        if not exist:
            self.register_to_controller()

    def start_registration(self, port: int) -> None:
        """Register once this process accepts connections, then keep the registration alive."""

        def run() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not self._stop_heart_beat.is_set():
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
                time.sleep(0.05)
            while not self._stop_heart_beat.is_set() and not self.register_to_controller():
                self._stop_heart_beat.wait(2.0)
            while not self._stop_heart_beat.wait(HEART_BEAT_INTERVAL):
                if self.switching:
                    continue
                if self.registered:
                    self.send_heart_beat()
                else:
                    self.register_to_controller()

        threading.Thread(target=run, name="register", daemon=True).start()

    def stop_registration(self) -> None:
        self._stop_heart_beat.set()
        self.unregister_from_controller()

    # ---- concurrency ------------------------------------------------------------------------
    @asynccontextmanager
    async def slot(self):
        if self.semaphore is None:
            self.semaphore = asyncio.Semaphore(self.limit_worker_concurrency)
        async with self.semaphore:
            with self._inflight_cond:
                self._inflight += 1
            try:
                yield
            finally:
                with self._inflight_cond:
                    self._inflight -= 1
                    self._inflight_cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._inflight_cond:
            return self._inflight_cond.wait_for(lambda: self._inflight == 0, timeout=timeout)


def create_worker_app(worker: ChatkbWorker, port: int) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker.start_registration(port)
        yield
        worker.stop_registration()

    app = FastAPI(title=f"chatkb model worker: {', '.join(worker.model_names)}", lifespan=lifespan)

    @app.get("/health")
    async def health() -> dict:
        return {
            "status": "switching" if worker.switching else "ok",
            "models": worker.model_names,
            "registered": worker.registered,
            "inflight": worker._inflight,
            "concurrency": worker.limit_worker_concurrency,
            "worker_address": worker.worker_addr,
            "controller_address": worker.controller_addr,
            **worker.describe(),
        }

    @app.post("/worker_get_status")
    async def get_status() -> dict:
        return worker.get_status()

    @app.post("/worker_generate_stream")
    async def generate_stream(request: Request):
        params = await request.json()

        async def body():
            try:
                async with worker.slot():
                    async for chunk in _guarded(worker, params):
                        yield json.dumps(chunk, ensure_ascii=False).encode() + b"\0"
            except asyncio.CancelledError:
                raise

        return StreamingResponse(body())

    @app.post("/worker_generate")
    async def generate(request: Request):
        params = await request.json()
        last: dict[str, Any] = error_chunk("no output")
        async with worker.slot():
            async for chunk in _guarded(worker, params):
                last = chunk
        return JSONResponse(last)

    @app.post("/worker_get_embeddings")
    async def embeddings(request: Request):
        params = await request.json()
        async with worker.slot():
            try:
                result = await worker.get_embeddings_async(params)
            except Exception as exc:
                logger.exception("embedding failed")
                result = error_chunk(f"embedding failed: {exc}")
        return JSONResponse(result)

    @app.post("/count_token")
    async def count_token(request: Request):
        params = await request.json()
        return await asyncio.to_thread(worker.count_token, params)

    @app.post("/worker_get_conv_template")
    async def conv_template(request: Request):
        return worker.get_conv_template()

    @app.post("/model_details")
    async def model_details(request: Request):
        return {"context_length": worker.context_len}

    @app.post("/worker_apply_chat_template")
    async def apply_chat_template(request: Request):
        params = await request.json()
        messages = normalize_messages(params.get("messages") or [])
        try:
            prompt = await asyncio.to_thread(worker.apply_chat_template, messages)
        except Exception as exc:
            return JSONResponse({"error_code": int(ErrorCode.INTERNAL_ERROR), "text": str(exc)}, status_code=400)
        return {"prompt": prompt, "error_code": 0}

    @app.post("/worker_change_model")
    async def change_model(request: Request):
        params = await request.json()
        new_name = str(params.get("new_model_name") or "").strip()
        if not new_name:
            return {"code": 500, "msg": "new_model_name is required"}
        if new_name in worker.model_names:
            return {"code": 200, "msg": f"{new_name} is already served by this worker"}
        return await worker.change_model(new_name)

    @app.post("/worker_release")
    async def release(request: Request):
        name = worker.model_names[0]
        await asyncio.to_thread(worker.stop_registration)
        logger.info("release requested: unregistered %s, exiting", name)
        # A normal uvicorn exit (status 0), unlike SIGTERM: startup.py reads it as "stopped on request".
        asyncio.get_running_loop().call_later(0.3, worker.request_exit)
        return {"code": 200, "msg": f"success to release model: {name}"}

    return app


async def _guarded(worker: ChatkbWorker, params: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    if worker.switching:
        yield error_chunk("the worker is switching models; retry in a moment", ErrorCode.INTERNAL_ERROR)
        return
    try:
        async for chunk in worker.generate_stream(params):
            yield chunk
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        logger.exception("generation failed")
        yield error_chunk(f"generation failed: {exc}")


# ---- command line ------------------------------------------------------------------------------


def worker_arg_parser(description: str, settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default=settings.DEFAULT_BIND_HOST, help="address to bind")
    parser.add_argument("--port", type=int, default=settings.MODEL_WORKER_BASE_PORT)
    parser.add_argument(
        "--controller-address",
        default=settings.FSCHAT_CONTROLLER.url,
        help="the controller to register with (default: FSCHAT_CONTROLLER from settings)",
    )
    parser.add_argument(
        "--worker-address",
        default=None,
        help="the URL the controller and gateway use to reach this worker "
        "(default: http://<host>:<port>, with 0.0.0.0 replaced by this machine's address)",
    )
    parser.add_argument(
        "--limit-worker-concurrency",
        type=int,
        default=None,
        help="requests served at once (default: the model's limit_worker_concurrency in FSCHAT_MODEL_WORKERS, 16)",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


def concurrency_limit(flag: int | None, model_name: str, settings) -> int:
    """--limit-worker-concurrency when given, else the model's entry in FSCHAT_MODEL_WORKERS (default 16)."""
    return flag or settings.worker_config(model_name).limit_worker_concurrency


def advertised_address(host: str, port: int, controller_address: str, explicit: str | None = None) -> str:
    """The worker URL others should use. A wildcard bind is advertised as the address that routes to the controller."""
    if explicit:
        return explicit.rstrip("/")
    if host in ("0.0.0.0", "::", ""):
        host = _route_address(controller_address)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _route_address(controller_address: str) -> str:
    from urllib.parse import urlparse

    target = urlparse(controller_address).hostname or "127.0.0.1"
    if target in ("127.0.0.1", "localhost", "::1"):
        return "127.0.0.1"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect((target, 9))  # no packet is sent for UDP connect
            return sock.getsockname()[0]
    except OSError:
        return socket.gethostbyname(socket.gethostname())


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def serve(worker: ChatkbWorker, host: str, port: int, log_level: str = "info") -> None:
    import uvicorn

    app = create_worker_app(worker, port)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=3)
    worker.server = uvicorn.Server(config)
    worker.server.run()


def settings_or_exit() -> Settings:
    """Settings, or a one-line error and exit status 2 when the configuration is invalid."""
    try:
        return get_settings()
    except Exception as exc:  # pydantic ValidationError, YAML errors
        print(f"error: invalid settings: {' '.join(str(exc).split())}", file=sys.stderr)
        raise SystemExit(2)
