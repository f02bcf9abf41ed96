"""Server information and helper routes: ``/server/*`` and ``/other/embed_texts``.

(``/other/completion`` belongs to the chat area and is mounted from there.)
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body
from starlette.concurrency import run_in_threadpool

from configs import get_settings
from server.knowledge_base.embeddings import get_embeddings, list_embedding_models
from server.responses import BaseResponse

router = APIRouter()

PromptType = Literal["llm_chat", "knowledge_base_chat", "search_engine_chat", "agent_chat"]
# 0.2.10's engines; used only if the chat area's registry is not installed.
FALLBACK_SEARCH_ENGINES = ["bing", "duckduckgo", "metaphor"]
MAX_EMBED_TEXTS = 2048


def search_engine_names() -> list[str]:
    try:
        from server.chat import search_engines
    except ImportError:
        return FALLBACK_SEARCH_ENGINES
    return list(search_engines.engine_names())


def server_configs() -> dict:
    """Public settings (no keys) plus the addresses 0.2.x clients read from this endpoint."""
    settings = get_settings()
    data = settings.public_dict()
    data.update(
        controller_address=settings.FSCHAT_CONTROLLER.url,
        openai_api_address=settings.FSCHAT_OPENAI_API.url,
        api_address=settings.API_SERVER.url,
        text_splitter_dict={name: {"source": "", "tokenizer_name_or_path": ""} for name in _splitter_names()},
    )
    return data


def _splitter_names() -> list[str]:
    return ["ChineseRecursiveTextSplitter", "RecursiveCharacterTextSplitter", "MarkdownHeaderTextSplitter"]


@router.post("/server/configs", tags=["Server State"], summary="获取服务器原始配置信息")
def get_server_configs() -> dict:
    return server_configs()


@router.post("/server/list_search_engines", tags=["Server State"], summary="获取服务器支持的搜索引擎")
def list_search_engines() -> BaseResponse:
    return BaseResponse(data=search_engine_names())


@router.post("/server/get_prompt_template", tags=["Server State"], summary="获取服务区配置的 prompt 模版")
def get_prompt_template(
    type: Annotated[PromptType, Body(description="模板类型", examples=["llm_chat"])] = "llm_chat",  # noqa: A002
    name: Annotated[str, Body(description="模板名称", max_length=200)] = "default",
) -> str | None:
    return get_settings().PROMPT_TEMPLATES.get(type, {}).get(name)


@router.post("/other/embed_texts", tags=["Other"], summary="将文本向量化，支持本地模型和在线模型")
async def embed_texts(
    texts: Annotated[list[str], Body(max_length=MAX_EMBED_TEXTS, description="要嵌入的文本列表", examples=[["hello"]])],
    embed_model: Annotated[str, Body(max_length=200, description="使用的嵌入模型")] = get_settings().EMBEDDING_MODEL,
    to_query: Annotated[bool, Body(description="向量是否用于查询（部分模型对查询做了优化）")] = False,
) -> BaseResponse:
    if embed_model not in list_embedding_models():
        return BaseResponse(code=500, msg=f"指定的模型 {embed_model} 不支持 Embeddings 功能。")
    if not texts:
        return BaseResponse(data=[])
    try:
        backend = await run_in_threadpool(get_embeddings, embed_model)
    except Exception:
        return BaseResponse(code=500, msg=f"指定的模型 {embed_model} 不支持 Embeddings 功能。")
    try:
        vectors = await run_in_threadpool(backend.embed, texts, is_query=to_query)
    except Exception as exc:
        return BaseResponse(code=500, msg=f"文本向量化过程中出现错误：{exc}")
    return BaseResponse(data=vectors.tolist())
