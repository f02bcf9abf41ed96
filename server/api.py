"""The API server process (:7861): ``python -m server.api --host 127.0.0.1 --port 7861 [--workers N]``.

Each API area is a package under ``server/`` with a ``router.py``; this module only
assembles them into one FastAPI app and runs it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os

import uvicorn
from fastapi import FastAPI

from configs import VERSION, get_settings
from server import security
from server.db.engine import create_tables
from server.other.docs import install_offline_docs

logger = logging.getLogger(__name__)

# (module, router attribute, prefix): every area mounts its routers here, so the app's shape is
# visible at a glance.
ROUTERS = [
    ("server.knowledge_base.router", "router", "/knowledge_base"),
    ("server.llm_model.router", "router", "/llm_model"),
    ("server.chat.router", "router", "/chat"),
    ("server.chat.router", "completion_router", ""),  # /other/completion
    ("server.other.router", "router", ""),
]


def create_app() -> FastAPI:
    settings = get_settings()
    app = FastAPI(
        title="chatkb API Server (Langchain-Chatchat 0.2.x compatible)",
        version=VERSION,
        docs_url=None,  # served offline by install_offline_docs
        redoc_url=None,
    )

    @app.get("/health", tags=["Server"], summary="Liveness check for launchers and load balancers")
    def health() -> dict:
        return {"status": "ok", "version": VERSION}

    for module_name, attribute, prefix in ROUTERS:
        app.include_router(getattr(importlib.import_module(module_name), attribute), prefix=prefix)

    create_tables()  # a fresh data root works without running init_database.py first
    install_offline_docs(app)
    security.install(app)  # API keys, body-size cap, 403/413 envelopes, no tracebacks

    if settings.OPEN_CROSS_DOMAIN:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware, allow_origins=["*"], allow_credentials=True, allow_methods=["*"], allow_headers=["*"]
        )
    return app


def create_worker_app() -> FastAPI:
    """The app of one of several API processes (``--workers N``): uvicorn builds it in each process it starts."""
    _configure_logging()
    return create_app()


def main(argv: list[str] | None = None) -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(description="chatkb API server (knowledge bases, chat, model management)")
    parser.add_argument("--host", default=settings.API_SERVER.host)
    parser.add_argument("--port", type=int, default=settings.API_SERVER.port)
    parser.add_argument(
        "--workers",
        type=int,
        default=settings.API_WORKERS,
        help="API server processes sharing the port (default: API_WORKERS); see docs/vector_stores.md",
    )
    parser.add_argument("--ssl_keyfile")
    parser.add_argument("--ssl_certfile")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    _configure_logging()
    ssl = {"ssl_keyfile": args.ssl_keyfile, "ssl_certfile": args.ssl_certfile}
    if args.workers == 1:
        uvicorn.run(create_app(), host=args.host, port=args.port, **ssl)
        return
    # Several processes on one port: uvicorn's parent holds the socket, the kernel spreads connections over
    # the processes, and the parent starts a process again if one dies. The schema is made here, once,
    # so the processes do not all create the same tables at the same moment.
    create_tables()
    _share_cores(args.workers)
    uvicorn.run(
        "server.api:create_worker_app", factory=True, workers=args.workers, host=args.host, port=args.port, **ssl
    )


def _share_cores(workers: int) -> None:
    """Give each API process its share of the cores for the model's threads (torch and OpenMP read
    OMP_NUM_THREADS at start): N processes each spinning up a thread per core would oversubscribe them.
    A value the user set is kept."""
    if "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":
    main()
