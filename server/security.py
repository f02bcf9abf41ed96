"""Request guards of the API server: name checks, API keys, body-size limits, clean errors.

* Names a client sends (knowledge base, file) are checked here before any route touches the
  filesystem; a refused name answers the contract's 403 envelope ``Don't attack me``.
  Names are checked as sent and once URL-decoded, so ``%2e%2e%2f`` gains nothing.
* Optional API keys (``API_KEYS``): every route but health and the docs needs
  ``Authorization: Bearer <key>``, except download links signed for one file (signed_links.py).
* Request bodies are capped by ``MAX_UPLOAD_REQUEST_SIZE``: a too-large ``Content-Length`` is
  refused before reading, and a body without one is counted while it streams, so an upload
  can never fill the disk. Per-file caps (``MAX_UPLOAD_FILE_SIZE``) are counted per multipart part
  while an upload streams in, and checked again by the routes (``check_upload_size``).
* A vector store that cannot be saved (disk full) answers 507 with a message saying so; the
  store keeps its last saved state.
* Unexpected errors answer a short JSON envelope, never a traceback; a 422 echoing NaN or
  Infinity writes it as a string (JSON cannot carry it).
* JSON bodies are normalised before validation (json_body.py): null means the default, NaN and
  Infinity are refused with 422.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable
from urllib.parse import unquote

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from sqlalchemy.exc import OperationalError as SQLAlchemyOperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from configs import get_settings
from server.json_body import JsonBodyMiddleware, json_safe
from server.knowledge_base import paths
from server.knowledge_base.model_guard import EmbeddingModelChanged
from server.knowledge_base.paths import UnsafeName
from server.knowledge_base.vector_stores.base import StoreSettingsError, StoreUnavailable
from server.knowledge_base.vector_stores.faiss_store import StoreSaveFailed
from server.signed_links import DOWNLOAD_PATH, is_signed_download

logger = logging.getLogger(__name__)

ATTACK_MESSAGE = "Don't attack me"
BODY_PARSE_ERROR = "There was an error parsing the body"
# Paths that stay open when API keys are configured (liveness checks and the API docs).
PUBLIC_PATHS = frozenset({"/health", "/", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
PUBLIC_PREFIXES = ("/static-offline-docs/",)
# Routes whose multipart files are capped by MAX_UPLOAD_FILE_SIZE while they stream in.
UPLOAD_PATHS = frozenset({"/knowledge_base/upload_docs", "/knowledge_base/upload_temp_docs"})
# The retrieval evaluation's questions file, capped by MAX_EVAL_QUESTIONS_FILE_SIZE the same way.
EVALUATION_UPLOAD_PATHS = frozenset({"/knowledge_base/evaluate_retrieval"})


# ---- names --------------------------------------------------------------------------------


def _decoded_forms(name: str) -> list[str]:
    """The name as sent and URL-decoded (repeatedly, up to a few rounds) when that changes it."""
    forms = [name]
    for _ in range(3):
        decoded = unquote(forms[-1])
        if decoded == forms[-1]:
            break
        forms.append(decoded)
    return forms


def check_kb_name(name: str) -> str:
    """Return ``name`` if it is a safe knowledge-base name in every decoded form; raise UnsafeName otherwise."""
    for form in _decoded_forms(name):
        paths.validate_kb_name(form)
    return name


def check_file_name(name: str) -> str:
    """Return the normalised relative file name; raise UnsafeName for any unsafe (or decoded-unsafe) form."""
    forms = _decoded_forms(name)
    for form in forms:
        paths.validate_file_name(form)
    return paths.validate_file_name(name)


def check_file_names(names: list[str]) -> list[str]:
    return [check_file_name(name) for name in names]


def attack_response(data=None) -> JSONResponse:
    return JSONResponse({"code": 403, "msg": ATTACK_MESSAGE, "data": data})


# ---- upload sizes -----------------------------------------------------------------------------


class UploadTooLarge(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def check_upload_size(file_name: str, size: int | None) -> None:
    limit = get_settings().MAX_UPLOAD_FILE_SIZE
    if size is not None and size > limit:
        raise UploadTooLarge(f"文件 {file_name} 超过大小限制 ({size} > {limit} bytes)")


def too_large_response(message: str) -> JSONResponse:
    return JSONResponse({"code": 413, "msg": message, "data": None}, status_code=413)


class FileTooLarge(UploadTooLarge):
    """One file of a multipart upload passed MAX_UPLOAD_FILE_SIZE while the body streamed in."""


class BodySizeLimitMiddleware:
    """Refuse request bodies over ``limit`` bytes with 413, counting what streams in."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await _send_json(send, 413, _too_large_body(self.limit))
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise UploadTooLarge("request body too large")
            return message

        await _run_refusing(
            self.app, scope, counting_receive, send, UploadTooLarge, lambda: _too_large_body(self.limit)
        )


class UploadFileSizeMiddleware:
    """Refuse a multipart upload with 413 as soon as one of its files passes ``limit`` bytes.

    The routes' own check (check_upload_size) runs only after the whole body was read and spooled to
    disk; this one counts each file part while the body streams in, so a huge file is cut off early."""

    def __init__(self, app: ASGIApp, limit: int, paths: frozenset[str] = UPLOAD_PATHS, setting: str = ""):
        self.app = app
        self.limit = limit
        self.paths = paths
        self.setting = setting  # named in the refusal when it is not MAX_UPLOAD_FILE_SIZE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        boundary = _multipart_boundary(scope) if scope["type"] == "http" and scope["path"] in self.paths else None
        declared = _content_length(scope) if boundary else None
        if boundary is None or (declared is not None and declared <= self.limit):  # no file can pass the limit
            await self.app(scope, receive, send)
            return
        counter = _FilePartCounter(boundary, self.limit, self.setting)

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                counter.feed(message.get("body", b""))
            return message

        def body() -> dict:
            return {"code": 413, "msg": counter.refusal, "data": None}

        await _run_refusing(self.app, scope, counting_receive, send, FileTooLarge, body)


class _FilePartCounter:
    """Feeds a multipart body to python-multipart's streaming parser and counts each file part's bytes."""

    def __init__(self, boundary: bytes, limit: int, setting: str = ""):
        self.limit = limit
        self.setting = setting
        self.refusal: str | None = None  # the 413 message, once a file passed the limit
        self._broken = False  # a body the parser refuses is left to the app's own parser to report
        self._header = [b"", b""]
        self._file_name: str | None = None
        self._size = 0
        callbacks = {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._add_header(0, data[start:end]),
            "on_header_value": lambda data, start, end: self._add_header(1, data[start:end]),
            "on_header_end": self._header_end,
            "on_part_data": self._part_data,
        }
        self._parser = MultipartParser(boundary, callbacks)

    def feed(self, chunk: bytes) -> None:
        if self.refusal is None and not self._broken and chunk:
            try:
                self._parser.write(chunk)
            except FormParserError:
                self._broken = True
        if self.refusal is not None:
            raise FileTooLarge(self.refusal)

    def _part_begin(self) -> None:
        self._file_name, self._size = None, 0

    def _add_header(self, which: int, data: bytes) -> None:
        self._header[which] += data

    def _header_end(self) -> None:
        field, value = self._header
        self._header = [b"", b""]
        if field.lower() == b"content-disposition":
            _, options = parse_options_header(value)
            if b"filename" in options:  # a file part, as Starlette decides it
                self._file_name = options[b"filename"].decode("utf-8", "replace")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._file_name is None:
            return
        self._size += end - start
        if self._size > self.limit and self.refusal is None:
            setting = f", {self.setting}" if self.setting else ""
            self.refusal = f"文件 {self._file_name} 超过大小限制 ({self.limit} bytes{setting})"


def _multipart_boundary(scope: Scope) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key == b"content-type":
            content_type, options = parse_options_header(value)
            if content_type == b"multipart/form-data":
                return options.get(b"boundary") or None
    return None


async def _run_refusing(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send, refused: type[Exception], body: Callable[[], dict]
) -> None:
    """Run the app; once ``receive`` raised ``refused``, the client gets a 413 with ``body()`` whatever
    the app made of the aborted body (a parse error), and the connection is closed."""
    state = {"refused": False, "started": False}

    async def watched_receive() -> Message:
        try:
            return await receive()
        except refused:
            state["refused"] = True
            raise

    async def guarded_send(message: Message) -> None:
        if state["refused"]:
            if message["type"] == "http.response.start" and not state["started"]:
                state["started"] = True
                await _send_json(send, 413, body())
            return
        if message["type"] == "http.response.start":
            state["started"] = True
        await send(message)

    try:
        await app(scope, watched_receive, guarded_send)
    except refused:
        if not state["started"]:
            state["started"] = True
            await _send_json(send, 413, body())


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large_body(limit: int) -> dict:
    return {"code": 413, "msg": f"请求体超过大小限制 ({limit} bytes)", "data": None}


async def _send_json(send: Send, status: int, body: dict, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    payload = json.dumps(body, ensure_ascii=False).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


# ---- API keys -----------------------------------------------------------------------------------


def is_public_path(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def bearer_key_matches(header_value: str | None, keys: list[str]) -> bool:
    if not header_value:
        return False
    scheme, _, token = header_value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    token = token.strip().encode()
    # compare_digest against every key: the time taken does not tell which key was close.
    return any(hmac.compare_digest(token, key.encode()) for key in keys)


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, keys: list[str]):
        self.app = app
        self.keys = list(keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") == "OPTIONS" or is_public_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        if scope["path"] == DOWNLOAD_PATH and is_signed_download(scope.get("query_string", b""), self.keys):
            await self.app(scope, receive, send)  # a link from an answer, opened by a browser
            return
        header = None
        for key, value in scope.get("headers", []):
            if key == b"authorization":
                header = value.decode("latin-1")
                break
        if not bearer_key_matches(header, self.keys):
            body = {
                "code": 401,
                "msg": "需要有效的 API key：请在请求头中加入 Authorization: Bearer <key>",
                "data": None,
            }
            await _send_json(send, 401, body, [(b"www-authenticate", b"Bearer")])
            return
        await self.app(scope, receive, send)


# ---- wiring ---------------------------------------------------------------------------------------


def install(app: FastAPI) -> None:
    """Add the guards and error handlers to the app (call after the routers are mounted)."""
    settings = get_settings()

    @app.exception_handler(UnsafeName)
    async def _unsafe_name(_request: Request, exc: UnsafeName) -> JSONResponse:
        logger.warning("refused unsafe name: %s", exc)
        return attack_response()

    @app.exception_handler(UploadTooLarge)
    async def _too_large(_request: Request, exc: UploadTooLarge) -> JSONResponse:
        return too_large_response(exc.message)

    @app.exception_handler(StoreSaveFailed)
    async def _save_failed(request: Request, exc: StoreSaveFailed) -> JSONResponse:
        # The store kept its last saved state; say why (disk full) instead of a bare 500 OSError.
        logger.error("vector store save failed on %s: %s", request.url.path, exc)
        status = 507 if exc.disk_full else 500
        return JSONResponse({"code": status, "msg": f"保存向量库失败：{exc}", "data": None}, status)

    @app.exception_handler(EmbeddingModelChanged)
    async def _model_changed(_request: Request, exc: EmbeddingModelChanged) -> JSONResponse:
        # Refused, with the command that fixes it, rather than mixing two models' vectors.
        return JSONResponse({"code": 409, "msg": str(exc), "data": None}, 409)

    @app.exception_handler(StoreUnavailable)
    @app.exception_handler(StoreSettingsError)
    async def _store_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # Milvus or PostgreSQL is down or misconfigured: say so (one line, no secrets), not a bare 500.
        logger.error("vector store failed on %s: %s", request.url.path, exc)
        return JSONResponse({"code": 503, "msg": f"向量库不可用：{exc}", "data": None}, 503)

    @app.exception_handler(SQLAlchemyOperationalError)
    async def _database_unavailable(request: Request, exc: SQLAlchemyOperationalError) -> JSONResponse:
        # The metadata database (PostgreSQL when several servers share it) is down: one line, no SQL.
        lines = str(exc.orig or exc).strip().splitlines()
        logger.error("metadata database failed on %s: %s", request.url.path, exc)
        msg = f"元数据库不可用（SQLALCHEMY_DATABASE_URI）：{lines[0] if lines else type(exc).__name__}"
        return JSONResponse({"code": 503, "msg": msg, "data": None}, 503)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        # FastAPI answers an undecodable body with 400; the contract wants malformed bodies as 422.
        if exc.status_code == 400 and exc.detail == BODY_PARSE_ERROR:
            detail = [{"type": "json_invalid", "loc": ["body"], "msg": "request body is not valid JSON (UTF-8)"}]
            return JSONResponse({"detail": detail}, status_code=422)
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler fails (500) when the echoed input holds NaN or Infinity.
        return JSONResponse({"detail": json_safe(jsonable_encoder(exc.errors()))}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"code": 500, "msg": f"服务器内部错误：{type(exc).__name__}", "data": None}, 500)

    # Middlewares run outside-in in reverse order of adding: keys first, then the size cap, then the
    # per-file cap of uploads, then the JSON normalising, which reads only what the caps let through.
    app.add_middleware(JsonBodyMiddleware)
    app.add_middleware(UploadFileSizeMiddleware, limit=settings.MAX_UPLOAD_FILE_SIZE)
    app.add_middleware(
        UploadFileSizeMiddleware,
        limit=settings.MAX_EVAL_QUESTIONS_FILE_SIZE,
        paths=EVALUATION_UPLOAD_PATHS,
        setting="MAX_EVAL_QUESTIONS_FILE_SIZE",
    )
    app.add_middleware(BodySizeLimitMiddleware, limit=settings.MAX_UPLOAD_REQUEST_SIZE)
    if settings.API_KEYS:
        app.add_middleware(ApiKeyMiddleware, keys=settings.API_KEYS)
