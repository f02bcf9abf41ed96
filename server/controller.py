"""FastChat controller process (:20001): ``python -m server.controller --host 127.0.0.1 --port 20001``.

Workers register and heart-beat here; the gateway asks it which worker serves a model.
This wraps ``fastchat.serve.controller`` and adds:

- ``GET /health`` for launchers;
- ``POST /unregister_worker`` ``{"worker_name": url}`` so a worker that stops or switches
  models disappears at once instead of after the heart-beat expiry (90 s);
- a heart-beat thread that does not keep the process alive after SIGTERM (FastChat's does).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading

os.environ.setdefault("LOGDIR", "")  # FastChat writes log files into the working directory otherwise

import fastchat.serve.controller as fastchat_controller  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import Request  # noqa: E402

from configs import get_settings  # noqa: E402

# Importing FastChat's controller swaps sys.stdout/stderr for loggers; keep the real streams.
sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
logger = logging.getLogger("chatkb.controller")
app = fastchat_controller.app


class Controller(fastchat_controller.Controller):
    def __init__(self, dispatch_method: str):  # noqa: D107 - same state as FastChat's, daemon heart beat
        self.worker_info = {}
        self.dispatch_method = fastchat_controller.DispatchMethod.from_str(dispatch_method)
        self.heart_beat_thread = threading.Thread(
            target=fastchat_controller.heart_beat_controller, args=(self,), name="expire-workers", daemon=True
        )
        self.heart_beat_thread.start()

    def remove_worker(self, worker_name: str) -> bool:
        return self.worker_info.pop(worker_name, None) is not None


@app.get("/health")
async def health() -> dict:
    controller = fastchat_controller.controller
    return {"status": "ok", "workers": len(controller.worker_info), "models": controller.list_models()}


@app.post("/unregister_worker")
async def unregister_worker(request: Request) -> dict:
    data = await request.json()
    name = str(data.get("worker_name") or "")
    removed = fastchat_controller.controller.remove_worker(name)
    if removed:
        logger.info("unregistered worker %s", name)
    return {"removed": removed}


def main(argv: list[str] | None = None) -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(description="chatkb FastChat controller (model workers register here)")
    parser.add_argument("--host", default=settings.FSCHAT_CONTROLLER.host)
    parser.add_argument("--port", type=int, default=settings.FSCHAT_CONTROLLER.port)
    parser.add_argument("--dispatch-method", choices=["lottery", "shortest_queue"], default="shortest_queue")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    fastchat_controller.controller = Controller(args.dispatch_method)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=3)


if __name__ == "__main__":
    main()
