"""LLM summaries of knowledge-base files (Chatchat's ``kb_summary_api``), kept as their own vectors.

A file's chunks are summarised in groups that fit the model's context ("map"), and the
partial summaries are then merged ("reduce"). Each summary is embedded into the knowledge
base's summary store (``<kb>/summary_vector_store/<embed_model>/``) and recorded in the
``summary_chunk`` table. The LLM is reached through the OpenAI-compatible gateway from
settings (never an address a client sent).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from langchain_core.documents import Document

from configs import get_settings
from server.db.repositories import summary as summary_repo
from server.knowledge_base import paths, service
from server.knowledge_base.embeddings import get_embeddings
from server.knowledge_base.vector_stores import REMOTE_VS_TYPES, StoredChunk, get_store_cache, open_remote_store

logger = logging.getLogger(__name__)

SUMMARY_FOLDER = "summary_vector_store"
# Characters of chunk text per "map" call: fits small local models' context with room for the answer.
GROUP_CHARS = 2000

MAP_PROMPT = (
    "Summarise the following text in a few sentences, keeping names, numbers and key facts.\n"
    "{description}\nText:\n{text}\n\nSummary:"
)
REDUCE_PROMPT = (
    "Combine these partial summaries of one document into a single concise summary.\n"
    "{description}\nPartial summaries:\n{text}\n\nSummary:"
)


class LLMUnavailable(RuntimeError):
    """The gateway (or the model behind it) could not be reached."""


@dataclass(frozen=True)
class LLMOptions:
    model_name: str
    temperature: float
    max_tokens: int | None


def gateway_url() -> str:
    return get_settings().FSCHAT_OPENAI_API.url + "/v1"


def check_gateway() -> None:
    """Fail fast, with the address, when the LLM gateway does not answer."""
    url = gateway_url()
    try:
        httpx.get(f"{url}/models", timeout=5.0).raise_for_status()
    except httpx.HTTPError as exc:
        raise LLMUnavailable(f"无法连接大模型服务 {url}：{exc}") from exc


def make_llm(options: LLMOptions):
    from langchain_openai import ChatOpenAI

    settings = get_settings()
    return ChatOpenAI(
        model=options.model_name or settings.LLM_MODELS[0],
        base_url=gateway_url(),
        api_key="EMPTY",
        temperature=options.temperature,
        max_tokens=options.max_tokens,
        timeout=settings.HTTPX_DEFAULT_TIMEOUT,
        max_retries=0,
    )


# ---- summarising --------------------------------------------------------------------------------


def group_texts(texts: list[str], limit: int = GROUP_CHARS) -> list[str]:
    """Pack texts, in order, into groups of at most ``limit`` characters (a longer text stays alone)."""
    groups: list[str] = []
    current = ""
    for text in texts:
        if current and len(current) + len(text) + 2 > limit:
            groups.append(current)
            current = ""
        current = f"{current}\n\n{text}" if current else text
    if current:
        groups.append(current)
    return groups


def summarize_texts(texts: list[str], description: str, llm) -> tuple[str, list[str]]:
    """(final summary, partial summaries) of texts, by map-reduce over groups that fit the model."""
    described = f"Document description: {description}" if description else ""
    partials = [_ask(llm, MAP_PROMPT.format(description=described, text=group)) for group in group_texts(texts)]
    if len(partials) <= 1:
        return (partials[0] if partials else ""), partials
    return _ask(llm, REDUCE_PROMPT.format(description=described, text="\n\n".join(partials))), partials


def _ask(llm, prompt: str) -> str:
    try:
        return str(llm.invoke(prompt).content).strip()
    except Exception as exc:
        if "connect" in type(exc).__name__.lower() or "connection" in str(exc).lower():
            raise LLMUnavailable(f"无法连接大模型服务 {gateway_url()}：{exc}") from exc
        raise


# ---- storing --------------------------------------------------------------------------------------


def summary_store_location(kb_name: str, embed_model: str):
    """(cache key, folder) of a knowledge base's summary store."""
    key = (kb_name, f"{SUMMARY_FOLDER}/{embed_model}")
    folder = paths.kb_path(kb_name) / SUMMARY_FOLDER / paths.validate_model_dir_name(embed_model)
    return key, folder



def summarize_file(kb_name: str, file_name: str, description: str, options: LLMOptions, embed_model: str = "") -> str:
    """Summarise one ingested file and store the summary (replacing an older one); returns the summary."""
    kb = service.get_kb(kb_name)
    chunks = service.list_docs(kb_name, file_name)
    if not chunks:
        raise ValueError(f"文件 {file_name} 没有可总结的内容（未入库或无文本）")
    text, partials = summarize_texts([c.page_content for c in chunks], description, make_llm(options))
    if not text:
        raise ValueError(f"大模型没有为文件 {file_name} 生成总结")
    doc_ids = [c.doc_id for c in chunks]
    metadata = {"source": file_name, "file_description": description, "summary_intermediate_steps": len(partials)}
    embed_model = embed_model or kb.embed_model
    backend = get_embeddings(embed_model)
    vector = backend.embed([text])
    key, folder = summary_store_location(kb_name, embed_model)
    cache = get_store_cache()
    with service.writing_to(kb), cache.write(key, folder, backend.dimension, vs_type=kb.vs_type) as store:
        store.delete(store.ids_for_source(file_name))
        summary_id = store.add([StoredChunk("", text, metadata)], vector)[0]
        summary_repo.replace_file_summary(kb_name, file_name, summary_id, text, doc_ids, metadata)
    return text


def summarize_doc_ids(kb_name: str, doc_ids: list[str], description: str, options: LLMOptions) -> list[dict]:
    """Summary of the given chunks, returned (not stored), in 0.2.10's shape."""
    chunks = service.get_chunks(kb_name, doc_ids)
    if not chunks:
        return []
    text, partials = summarize_texts([c.page_content for c in chunks], description, make_llm(options))
    metadata = {"file_description": description, "summary_intermediate_steps": partials, "doc_ids": doc_ids}
    document = Document(text, metadata=metadata)
    return [{"page_content": document.page_content, "metadata": document.metadata, "type": "Document"}]


def clear_summaries(kb_name: str, embed_model: str) -> None:
    key, folder = summary_store_location(kb_name, embed_model)
    get_store_cache().forget(key)
    kb = service.get_kb(kb_name)
    if kb.vs_type in REMOTE_VS_TYPES:
        open_remote_store(kb.vs_type, key, folder, get_embeddings(embed_model).dimension).drop()
    shutil.rmtree(folder, ignore_errors=True)
    summary_repo.delete_summaries(kb_name)


def recreate_summaries(
    kb_name: str, description: str, options: LLMOptions, embed_model: str, emit: Callable[[dict], None]
) -> None:
    """Drop the summaries of a knowledge base and summarise every file in content/, reporting each."""
    clear_summaries(kb_name, embed_model)
    files = paths.list_content_files(kb_name)
    for index, file_name in enumerate(files, start=1):
        try:
            summarize_file(kb_name, file_name, description, options, embed_model)
        except LLMUnavailable:
            raise
        except Exception as exc:
            logger.warning("summary of %s/%s failed: %s", kb_name, file_name, exc)
            emit(file_failed_event(kb_name, file_name, exc))
            continue
        emit(
            {
                "code": 200,
                "msg": f"({index} / {len(files)}): {file_name}",
                "total": len(files),
                "finished": index,
                "doc": file_name,
            }
        )


def file_failed_event(kb_name: str, file_name: str, exc: Exception) -> dict:
    return {"code": 500, "msg": f"知识库'{kb_name}'总结文件‘{file_name}’时出错。已跳过。", "error": str(exc)}
