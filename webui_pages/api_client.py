"""The one client the web UI (and any script) uses to talk to the API server.

Like Chatchat's ``ApiRequest`` it wraps every endpoint in a method, but it never raises on
network or server trouble: calls return an :class:`ApiResult` (``ok``, ``code``, ``msg``,
``data``) and streams yield dicts, an error becoming one ``{"code": ..., "msg": ...}`` dict,
so a page can print what went wrong instead of a traceback.

``ApiClient`` is synchronous, ``AsyncApiClient`` has the same methods as coroutines and
async generators. Both are built from one list of endpoint methods in ``_Endpoints``.
"""

from __future__ import annotations

import json
import mimetypes
import re
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from server import signed_links

# A file to upload: a path, or (name, bytes or binary file object).
Upload = str | Path | tuple[str, bytes | IO[bytes]]


@dataclass
class ApiResult:
    """An answer of the API server, or a readable description of why there is none."""

    code: int = 200
    msg: str = "success"
    data: Any = None
    raw: Any = field(default=None, repr=False)  # body as sent when it was not an envelope

    @property
    def ok(self) -> bool:
        return self.code == 200

    def __bool__(self) -> bool:
        return self.ok


@dataclass
class _Request:
    """One HTTP call described as data, so the sync and async clients share every endpoint."""

    method: str
    path: str
    json: Any = None
    params: dict | None = None
    data: dict | None = None
    files: list | None = None
    timeout: float | None = None


def _default_base_url() -> str:
    from configs import get_settings

    return get_settings().API_SERVER.url


def _default_api_key() -> str | None:
    """The first of the server's API_KEYS: the UI shares the stack's settings."""
    from configs import get_settings

    keys = get_settings().API_KEYS
    return keys[0] if keys else None


def _auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _default_timeout() -> float:
    from configs import get_settings

    return get_settings().HTTPX_DEFAULT_TIMEOUT


def connection_error_message(base_url: str, exc: Exception) -> str:
    # Spaces around the address: Markdown would otherwise link the text that follows it too.
    return f"无法连接 API 服务器 {base_url} （{type(exc).__name__}: {exc}）"


def _result_from_response(response: httpx.Response) -> ApiResult:
    """Turn a response into an ApiResult; an envelope's code/msg win over the HTTP status."""
    body = _json_or_text(response)
    if isinstance(body, dict) and "code" in body and "msg" in body:
        return ApiResult(code=int(body["code"]), msg=str(body["msg"]), data=body.get("data"), raw=body)
    if response.status_code == 422:
        return ApiResult(code=422, msg=_validation_message(body), raw=body)
    if response.status_code >= 400:
        detail = (body.get("detail") or body.get("msg")) if isinstance(body, dict) else body
        return ApiResult(
            code=response.status_code, msg=f"HTTP {response.status_code}: {detail or response.reason_phrase}"
        )
    return ApiResult(data=body, raw=body)  # a bare answer: search_docs' list, /server/configs, a template


# Routes that answer with a file's bytes (or, on failure, a JSON envelope).
BINARY_ROUTES = ("download_doc", "export_knowledge_base")


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return _short_text(response.text)


def _short_text(text: str, limit: int = 300) -> str:
    """A non-JSON body in a few readable words: HTML error pages lose their markup."""
    if "<" in text and ">" in text:
        title = re.search(r"<title>(.*?)</title>", text, re.S | re.I)
        text = title.group(1) if title else re.sub(r"<[^>]+>", " ", text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _validation_message(body: Any) -> str:
    """FastAPI's 422 names the fields; keep just the field and the reason."""
    details = body.get("detail") if isinstance(body, dict) else None
    if isinstance(details, list):
        parts = []
        for item in details:
            location = ".".join(str(p) for p in item.get("loc", []) if p not in ("body", "query", "form"))
            parts.append(f"{location}: {item.get('msg', '')}")
        return "参数错误 / invalid input: " + "; ".join(parts)
    return f"参数错误 / invalid input: {body}"


class SSEDecoder:
    """Server-Sent Events, parsed by the standard's rules rather than one event per chunk."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed_line(self, line: str) -> dict | None:
        """Feed one line (without its newline); return an event when a blank line ends one."""
        if line == "":
            return self._flush()
        if line.startswith(":"):
            return None  # comment, e.g. sse_starlette's ping
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None

    def finish(self) -> dict | None:
        return self._flush()

    def _flush(self) -> dict | None:
        if not self._data:
            return None
        payload = "\n".join(self._data)
        self._data = []
        try:
            event = json.loads(payload)
        except ValueError:
            return {"text": payload}  # /other/completion streams raw text
        return event if isinstance(event, dict) else {"data": event}


def _stream_error(response_body: Any, status: int) -> dict:
    if isinstance(response_body, dict) and "msg" in response_body:
        return {"code": int(response_body.get("code", status)), "msg": str(response_body["msg"])}
    return {"code": status, "msg": f"HTTP {status}: {response_body}"}


def _file_part(item: Upload) -> tuple[str, tuple[str, Any, str]]:
    if isinstance(item, (str, Path)):
        path = Path(item)
        name, content = path.name, path.read_bytes()
    else:
        name, content = item
    mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return ("files", (name, content, mime))


def _form_value(value: Any) -> str:
    # Multipart fields are text; booleans travel as the JSON words FastAPI parses.
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _form(fields: dict) -> dict:
    return {key: _form_value(value) for key, value in fields.items() if value is not None}


def _history(messages: Iterable[dict] | None) -> list[dict]:
    return [{"role": m["role"], "content": m["content"]} for m in messages or []]


class _Endpoints:
    """Every endpoint of the API server, written once; subclasses decide how a call runs."""

    base_url: str
    api_key: str | None = None

    def _call(self, request: _Request):  # pragma: no cover - replaced by subclasses
        raise NotImplementedError

    def _stream(self, request: _Request):  # pragma: no cover - replaced by subclasses
        raise NotImplementedError

    # ---- server -----------------------------------------------------------------------

    def health(self):
        return self._call(_Request("GET", "/health", timeout=5.0))

    def get_server_configs(self):
        return self._call(_Request("POST", "/server/configs", json={}))

    def list_search_engines(self):
        return self._call(_Request("POST", "/server/list_search_engines", json={}))

    def get_prompt_template(self, type: str = "llm_chat", name: str = "default"):
        return self._call(_Request("POST", "/server/get_prompt_template", json={"type": type, "name": name}))

    # ---- models -----------------------------------------------------------------------

    def list_running_models(self):
        return self._call(_Request("POST", "/llm_model/list_running_models", json={"placeholder": None}))

    def list_config_models(self, types: list[str] | None = None):
        return self._call(
            _Request("POST", "/llm_model/list_config_models", json={"types": types or ["local", "online"]})
        )

    def get_model_config(self, model_name: str):
        return self._call(_Request("POST", "/llm_model/get_model_config", json={"model_name": model_name}))

    def stop_llm_model(self, model_name: str):
        return self._call(_Request("POST", "/llm_model/stop", json={"model_name": model_name}))

    def change_llm_model(self, model_name: str, new_model_name: str):
        body = {"model_name": model_name, "new_model_name": new_model_name}
        return self._call(_Request("POST", "/llm_model/change", json=body))

    # ---- knowledge bases --------------------------------------------------------------

    def list_knowledge_bases(self):
        return self._call(_Request("GET", "/knowledge_base/list_knowledge_bases"))

    def list_knowledge_base_details(self):
        """Name, info, vector store, embedding model and file count of each KB (our extension)."""
        return self._call(_Request("GET", "/knowledge_base/list_knowledge_base_details"))

    def create_knowledge_base(self, knowledge_base_name: str, vector_store_type: str = "faiss", embed_model=None):
        body = {"knowledge_base_name": knowledge_base_name, "vector_store_type": vector_store_type}
        if embed_model:
            body["embed_model"] = embed_model
        return self._call(_Request("POST", "/knowledge_base/create_knowledge_base", json=body))

    def delete_knowledge_base(self, knowledge_base_name: str):
        # The endpoint has one body field, so the body is the bare name (as Chatchat's client sends it).
        return self._call(_Request("POST", "/knowledge_base/delete_knowledge_base", json=knowledge_base_name))

    def update_kb_info(self, knowledge_base_name: str, kb_info: str):
        body = {"knowledge_base_name": knowledge_base_name, "kb_info": kb_info}
        return self._call(_Request("POST", "/knowledge_base/update_info", json=body))

    def export_knowledge_base(self, knowledge_base_name: str):
        """The knowledge base as one zip (files, chunks, vectors) in ``data`` (our extension)."""
        params = {"knowledge_base_name": knowledge_base_name}
        return self._call(_Request("GET", "/knowledge_base/export_knowledge_base", params=params, timeout=600))

    def import_knowledge_base(self, archive: Upload, knowledge_base_name: str = "", embed_model: str = ""):
        """Create a knowledge base from an export_knowledge_base zip (our extension)."""
        fields = _form({"knowledge_base_name": knowledge_base_name, "embed_model": embed_model})
        parts = [("file", _file_part(archive)[1])]
        return self._call(
            _Request("POST", "/knowledge_base/import_knowledge_base", data=fields, files=parts, timeout=600)
        )

    def check_consistency(self, knowledge_base_name: str, repair: bool = False):
        """Where database, vector store and content/ disagree; with repair, fix it (our extension)."""
        body = {"knowledge_base_name": knowledge_base_name, "repair": repair}
        return self._call(_Request("POST", "/knowledge_base/check_consistency", json=body, timeout=600))

    def list_kb_docs(self, knowledge_base_name: str):
        params = {"knowledge_base_name": knowledge_base_name}
        return self._call(_Request("GET", "/knowledge_base/list_files", params=params))

    def list_kb_file_details(self, knowledge_base_name: str):
        """Per file: loader, splitter, chunks, size, mtime, in folder / in vector store (our extension)."""
        params = {"knowledge_base_name": knowledge_base_name}
        return self._call(_Request("GET", "/knowledge_base/list_file_details", params=params))

    def search_kb_docs(
        self,
        knowledge_base_name: str,
        query: str = "",
        top_k: int | None = None,
        score_threshold: float | None = None,
        file_name: str = "",
        metadata: dict | None = None,
        search_mode: str | None = None,
    ):
        """``search_mode`` ("hybrid", "vector", "keyword") is sent only when given: without it the request is the
        0.2.x one, and the server's SEARCH_MODE applies."""
        body = {
            "knowledge_base_name": knowledge_base_name,
            "query": query,
            "top_k": top_k,
            "score_threshold": score_threshold,
            "file_name": file_name,
            "metadata": metadata or {},
            "search_mode": search_mode,
        }
        body = {k: v for k, v in body.items() if v is not None}
        return self._call(_Request("POST", "/knowledge_base/search_docs", json=body))

    def update_docs_by_id(self, knowledge_base_name: str, docs: dict[str, dict]):
        body = {"knowledge_base_name": knowledge_base_name, "docs": docs}
        return self._call(_Request("POST", "/knowledge_base/update_docs_by_id", json=body))

    def upload_kb_docs(
        self,
        files: list[Upload],
        knowledge_base_name: str,
        override: bool = False,
        to_vector_store: bool = True,
        chunk_size: int | None = None,
        chunk_overlap: int | None = None,
        zh_title_enhance: bool | None = None,
        docs: dict | None = None,
        not_refresh_vs_cache: bool = False,
    ):
        fields = _form(
            {
                "knowledge_base_name": knowledge_base_name,
                "override": override,
                "to_vector_store": to_vector_store,
                "chunk_size": chunk_size,
                "chunk_overlap": chunk_overlap,
                "zh_title_enhance": zh_title_enhance,
                "docs": json.dumps(docs or {}, ensure_ascii=False),
                "not_refresh_vs_cache": not_refresh_vs_cache,
            }
        )
        parts = [_file_part(f) for f in files]
        return self._call(_Request("POST", "/knowledge_base/upload_docs", data=fields, files=parts))

    def delete_kb_docs(
        self, knowledge_base_name: str, file_names: list[str], delete_content: bool = False, not_refresh_vs_cache=False
    ):
        body = {
            "knowledge_base_name": knowledge_base_name,
            "file_names": file_names,
            "delete_content": delete_content,
            "not_refresh_vs_cache": not_refresh_vs_cache,
        }
        return self._call(_Request("POST", "/knowledge_base/delete_docs", json=body))

    def update_kb_docs(
        self,
        knowledge_base_name: str,
        file_names: list[str],
        chunk_size: int | None = None,
        chunk_overlap: int | None = None,
        zh_title_enhance: bool | None = None,
        override_custom_docs: bool = False,
        docs: dict | None = None,
        not_refresh_vs_cache: bool = False,
    ):
        body = {
            "knowledge_base_name": knowledge_base_name,
            "file_names": file_names,
            "chunk_size": chunk_size,
            "chunk_overlap": chunk_overlap,
            "zh_title_enhance": zh_title_enhance,
            "override_custom_docs": override_custom_docs,
            "docs": json.dumps(docs or {}, ensure_ascii=False),  # a JSON string, as the contract says
            "not_refresh_vs_cache": not_refresh_vs_cache,
        }
        body = {k: v for k, v in body.items() if v is not None}
        return self._call(_Request("POST", "/knowledge_base/update_docs", json=body))

    def download_kb_doc(self, knowledge_base_name: str, file_name: str, preview: bool = False):
        """The file's bytes in ``data`` (or an error result)."""
        params = {"knowledge_base_name": knowledge_base_name, "file_name": file_name, "preview": preview}
        return self._call(_Request("GET", "/knowledge_base/download_doc", params=params))

    def download_url(self, knowledge_base_name: str, file_name: str, preview: bool = False) -> str:
        """A link the browser can open directly (download, or inline preview); the browser cannot send
        our key, so with one the link carries a signature instead."""
        return signed_links.download_url(self.base_url, knowledge_base_name, file_name, self.api_key, preview)

    def recreate_vector_store(
        self,
        knowledge_base_name: str,
        allow_empty_kb: bool = True,
        vs_type: str | None = None,
        embed_model: str | None = None,
        chunk_size: int | None = None,
        chunk_overlap: int | None = None,
        zh_title_enhance: bool | None = None,
    ):
        """Yields progress events: ``{"code", "msg", "total", "finished", "doc"}``."""
        body = {
            "knowledge_base_name": knowledge_base_name,
            "allow_empty_kb": allow_empty_kb,
            "vs_type": vs_type,
            "embed_model": embed_model,
            "chunk_size": chunk_size,
            "chunk_overlap": chunk_overlap,
            "zh_title_enhance": zh_title_enhance,
        }
        body = {k: v for k, v in body.items() if v is not None}
        return self._stream(_Request("POST", "/knowledge_base/recreate_vector_store", json=body))

    def upload_temp_docs(
        self,
        files: list[Upload],
        prev_id: str | None = None,
        chunk_size: int | None = None,
        chunk_overlap: int | None = None,
        zh_title_enhance: bool | None = None,
    ):
        fields = _form(
            {
                "prev_id": prev_id,
                "chunk_size": chunk_size,
                "chunk_overlap": chunk_overlap,
                "zh_title_enhance": zh_title_enhance,
            }
        )
        parts = [_file_part(f) for f in files]
        return self._call(_Request("POST", "/knowledge_base/upload_temp_docs", data=fields, files=parts))

    def evaluate_retrieval(
        self, knowledge_base_name: str, file: Upload, modes: list[str] | str | None = None, top_k: int = 5
    ):
        """hit@1/3/5, MRR and recall@k per search mode for a questions file (JSONL or CSV); ``data`` holds
        ``{"top_k", "questions", "results": [{"mode", "hit@1", ..., "misses"}]}``. No modes: the server's."""
        if isinstance(modes, (list, tuple)):
            modes = ",".join(modes)
        fields = _form({"knowledge_base_name": knowledge_base_name, "modes": modes or None, "top_k": top_k})
        _, part = _file_part(file)  # the endpoint's field is "file", not upload_docs' "files"
        return self._call(_Request("POST", "/knowledge_base/evaluate_retrieval", data=fields, files=[("file", part)]))

    # ---- chat -------------------------------------------------------------------------
    # Each mode keeps its own explicit signature (what scripts call); the fields every
    # LLM-backed mode shares are assembled in one place.

    def _chat(self, path: str, query: str, mode_fields: dict, common: dict):
        body = {"query": query, **mode_fields, **common, "history": _history(common.get("history"))}
        body["model_name"] = body.pop("model", None)
        return self._stream(_Request("POST", path, json=_without_none(body)))

    def chat_chat(
        self,
        query: str,
        conversation_id: str = "",
        history_len: int = -1,
        history: list[dict] | None = None,
        model: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        prompt_name: str = "default",
        stream: bool = True,
    ):
        common = dict(history=history, model=model, temperature=temperature, max_tokens=max_tokens,
                      prompt_name=prompt_name, stream=stream, conversation_id=conversation_id)  # fmt: skip
        return self._chat("/chat/chat", query, {"history_len": history_len}, common)

    def knowledge_base_chat(
        self,
        query: str,
        knowledge_base_name: str,
        top_k: int | None = None,
        score_threshold: float | None = None,
        history: list[dict] | None = None,
        model: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        prompt_name: str = "default",
        stream: bool = True,
        conversation_id: str | None = None,
    ):
        mode = {"knowledge_base_name": knowledge_base_name, "top_k": top_k, "score_threshold": score_threshold}
        common = dict(history=history, model=model, temperature=temperature, max_tokens=max_tokens,
                      prompt_name=prompt_name, stream=stream, conversation_id=conversation_id)  # fmt: skip
        return self._chat("/chat/knowledge_base_chat", query, mode, common)

    def file_chat(
        self,
        query: str,
        knowledge_id: str,
        top_k: int | None = None,
        score_threshold: float | None = None,
        history: list[dict] | None = None,
        model: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        prompt_name: str = "default",
        stream: bool = True,
        conversation_id: str | None = None,
    ):
        mode = {"knowledge_id": knowledge_id, "top_k": top_k, "score_threshold": score_threshold}
        common = dict(history=history, model=model, temperature=temperature, max_tokens=max_tokens,
                      prompt_name=prompt_name, stream=stream, conversation_id=conversation_id)  # fmt: skip
        return self._chat("/chat/file_chat", query, mode, common)

    def search_engine_chat(
        self,
        query: str,
        search_engine_name: str,
        top_k: int | None = None,
        history: list[dict] | None = None,
        model: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        prompt_name: str = "default",
        split_result: bool = False,
        stream: bool = True,
        conversation_id: str | None = None,
    ):
        mode = {"search_engine_name": search_engine_name, "top_k": top_k, "split_result": split_result}
        common = dict(history=history, model=model, temperature=temperature, max_tokens=max_tokens,
                      prompt_name=prompt_name, stream=stream, conversation_id=conversation_id)  # fmt: skip
        return self._chat("/chat/search_engine_chat", query, mode, common)

    def agent_chat(
        self,
        query: str,
        history: list[dict] | None = None,
        model: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        prompt_name: str = "default",
        stream: bool = True,
        conversation_id: str | None = None,
    ):
        common = dict(history=history, model=model, temperature=temperature, max_tokens=max_tokens,
                      prompt_name=prompt_name, stream=stream, conversation_id=conversation_id)  # fmt: skip
        return self._chat("/chat/agent_chat", query, {}, common)

    def chat_feedback(self, message_id: str, score: int, reason: str = ""):
        body = {"message_id": message_id, "score": score, "reason": reason}
        return self._call(_Request("POST", "/chat/feedback", json=body))

    # ---- conversations (our extension: history kept by the server) -----------------------

    def list_conversations(self):
        return self._call(_Request("GET", "/chat/conversations"))

    def get_conversation_messages(self, conversation_id: str):
        params = {"conversation_id": conversation_id}
        return self._call(_Request("GET", "/chat/conversations/messages", params=params))

    def rename_conversation(self, conversation_id: str, name: str):
        body = {"conversation_id": conversation_id, "name": name}
        return self._call(_Request("POST", "/chat/conversations/rename", json=body))

    def delete_conversation(self, conversation_id: str):
        body = {"conversation_id": conversation_id}
        return self._call(_Request("POST", "/chat/conversations/delete", json=body))


def _without_none(body: dict) -> dict:
    return {k: v for k, v in body.items() if v is not None}


class ApiClient(_Endpoints):
    """Synchronous client: methods return ApiResult, streaming methods return iterators of dicts."""

    def __init__(self, base_url: str | None = None, timeout: float | None = None, api_key: str | None = None):
        self.base_url = (base_url or _default_base_url()).rstrip("/")
        self.timeout = timeout if timeout is not None else _default_timeout()
        self.api_key = api_key if api_key is not None else _default_api_key()
        headers = _auth_headers(self.api_key)
        self._client = httpx.Client(base_url=self.base_url, timeout=self.timeout, headers=headers, trust_env=False)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _send_kwargs(self, request: _Request) -> dict:
        kwargs: dict[str, Any] = {"params": request.params, "data": request.data, "files": request.files}
        if request.json is not None or (request.data is None and request.files is None and request.method == "POST"):
            kwargs["json"] = request.json
        if request.timeout is not None:
            kwargs["timeout"] = request.timeout
        return kwargs

    def _call(self, request: _Request) -> ApiResult:
        try:
            response = self._client.request(request.method, request.path, **self._send_kwargs(request))
        except httpx.HTTPError as exc:
            return ApiResult(code=503, msg=connection_error_message(self.base_url, exc))
        if request.path.endswith(BINARY_ROUTES) and response.status_code == 200 and not _is_json(response):
            return ApiResult(data=response.content, raw=response.headers.get("content-disposition"))
        return _result_from_response(response)

    def _stream(self, request: _Request) -> Iterator[dict]:
        try:
            with self._client.stream(request.method, request.path, **self._send_kwargs(request)) as response:
                if not _is_event_stream(response):
                    response.read()
                    yield _stream_error(_json_or_text(response), response.status_code)
                    return
                decoder = SSEDecoder()
                for line in response.iter_lines():
                    event = decoder.feed_line(line)
                    if event is not None:
                        yield event
                last = decoder.finish()
                if last is not None:
                    yield last
        except httpx.HTTPError as exc:
            yield {"code": 503, "msg": connection_error_message(self.base_url, exc)}


class AsyncApiClient(_Endpoints):
    """Asynchronous twin: ``await client.list_knowledge_bases()``, ``async for e in client.chat_chat(q)``."""

    def __init__(self, base_url: str | None = None, timeout: float | None = None, api_key: str | None = None):
        self.base_url = (base_url or _default_base_url()).rstrip("/")
        self.timeout = timeout if timeout is not None else _default_timeout()
        self.api_key = api_key if api_key is not None else _default_api_key()
        headers = _auth_headers(self.api_key)
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout, headers=headers, trust_env=False)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> AsyncApiClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.aclose()

    _send_kwargs = ApiClient._send_kwargs

    async def _call(self, request: _Request) -> ApiResult:
        try:
            response = await self._client.request(request.method, request.path, **self._send_kwargs(request))
        except httpx.HTTPError as exc:
            return ApiResult(code=503, msg=connection_error_message(self.base_url, exc))
        if request.path.endswith(BINARY_ROUTES) and response.status_code == 200 and not _is_json(response):
            return ApiResult(data=response.content, raw=response.headers.get("content-disposition"))
        return _result_from_response(response)

    async def _stream(self, request: _Request) -> AsyncIterator[dict]:
        try:
            async with self._client.stream(request.method, request.path, **self._send_kwargs(request)) as response:
                if not _is_event_stream(response):
                    await response.aread()
                    yield _stream_error(_json_or_text(response), response.status_code)
                    return
                decoder = SSEDecoder()
                async for line in response.aiter_lines():
                    event = decoder.feed_line(line)
                    if event is not None:
                        yield event
                last = decoder.finish()
                if last is not None:
                    yield last
        except httpx.HTTPError as exc:
            yield {"code": 503, "msg": connection_error_message(self.base_url, exc)}


def _is_event_stream(response: httpx.Response) -> bool:
    return response.status_code == 200 and "text/event-stream" in response.headers.get("content-type", "")


def _is_json(response: httpx.Response) -> bool:
    return "application/json" in response.headers.get("content-type", "")


def is_error_event(event: dict) -> bool:
    """A stream event that reports a failure instead of carrying content."""
    code = event.get("code")
    return isinstance(code, int) and code != 200 and "msg" in event
