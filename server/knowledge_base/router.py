"""Knowledge-base routes (``/knowledge_base/...``), wire-compatible with Chatchat 0.2.x.

Thin HTTP glue: names are checked (server/security.py), the work is done by service.py and
api_service.py in worker threads, and answers use the contract's envelopes and messages.
"""

from __future__ import annotations

import mimetypes
from dataclasses import asdict
from pathlib import PurePosixPath
from typing import Annotated, Any

from fastapi import APIRouter, Body, File, Form, Query, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from langchain_core.documents import Document
from sse_starlette.sse import EventSourceResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from configs import get_settings
from server import security
from server.db.repositories import summary as summary_repo
from server.knowledge_base import api_service, consistency, paths, portable, service, summary
from server.knowledge_base.api_service import DocumentIn
from server.knowledge_base.embeddings import UnknownEmbeddingModel, get_embeddings
from server.knowledge_base.paths import UnsafeName
from server.knowledge_base.search import SearchMode, UnknownRerankerModel
from server.knowledge_base.search.evaluation import QuestionsFileError, parse_questions
from server.knowledge_base.temp_stores import get_temp_stores
from server.knowledge_base.vector_stores import SUPPORTED_VS_TYPES
from server.responses import BaseResponse, ListResponse

router = APIRouter(tags=["Knowledge Base Management"])
settings = get_settings()

KbName = Annotated[str, Body(description="知识库名称", examples=["samples"])]
ChunkSize = Annotated[int, Body(ge=1, le=100_000, description="知识库中单段文本最大长度")]
ChunkOverlap = Annotated[int, Body(ge=0, le=100_000, description="知识库中相邻文本重合长度")]
NotRefresh = Annotated[bool, Body(description="暂不保存向量库（用于FAISS）")]
SSE_HEADERS = {"X-Accel-Buffering": "no"}


def envelope(code: int, msg: str, data: Any = None) -> BaseResponse:
    return BaseResponse(code=code, msg=msg, data=data)


def not_found(kb_name: str, data: Any = None) -> BaseResponse:
    return envelope(404, f"未找到知识库 {kb_name}", data)


def event_stream(events) -> EventSourceResponse:
    # No keep-alive pings (ping=0 turns them off in sse-starlette 3.x): Chatchat's scripts json.loads every
    # chunk they read, and a `: ping` comment in a long rebuild or summary would break them.
    return EventSourceResponse(events, ping=0, headers=SSE_HEADERS)


# ---- knowledge bases ----------------------------------------------------------------------------


@router.get("/list_knowledge_bases", response_model=ListResponse, summary="获取知识库列表")
def list_knowledge_bases() -> ListResponse:
    return ListResponse(data=[kb.kb_name for kb in service.list_kbs()])


@router.get("/list_knowledge_base_details", response_model=BaseResponse, summary="知识库详情列表（扩展接口）")
def list_knowledge_base_details() -> BaseResponse:
    return envelope(200, "success", [asdict(kb) for kb in service.list_kbs()])


@router.post("/create_knowledge_base", response_model=BaseResponse, summary="创建知识库")
def create_knowledge_base(
    knowledge_base_name: KbName,
    vector_store_type: Annotated[str, Body()] = settings.DEFAULT_VS_TYPE,
    embed_model: Annotated[str, Body()] = settings.EMBEDDING_MODEL,
) -> BaseResponse:
    if not knowledge_base_name or not knowledge_base_name.strip():
        return envelope(404, "知识库名称不能为空，请重新填写知识库名称")
    security.check_kb_name(knowledge_base_name)
    if service.kb_exists(knowledge_base_name):
        return envelope(404, f"已存在同名知识库 {knowledge_base_name}")
    if not api_service.embed_model_allowed(embed_model):
        return envelope(500, f"创建知识库出错： 未配置的嵌入模型 {embed_model}")
    try:
        service.create_kb(knowledge_base_name, vector_store_type, embed_model)
    except UnsafeName:
        raise
    except Exception as exc:
        return envelope(500, f"创建知识库出错： {exc}")
    return envelope(200, f"已新增知识库 {knowledge_base_name}")


@router.post("/delete_knowledge_base", response_model=BaseResponse, summary="删除知识库")
def delete_knowledge_base(knowledge_base_name: KbName) -> BaseResponse:
    security.check_kb_name(knowledge_base_name)
    if not service.kb_exists(knowledge_base_name):
        return not_found(knowledge_base_name)
    try:
        service.delete_kb(knowledge_base_name)
        summary_repo.delete_summaries(knowledge_base_name)
    except Exception as exc:
        return envelope(500, f"删除知识库时出现意外： {exc}")
    return envelope(200, f"成功删除知识库 {knowledge_base_name}")


@router.post("/update_info", response_model=BaseResponse, summary="更新知识库介绍")
def update_info(
    knowledge_base_name: KbName,
    kb_info: Annotated[str, Body(max_length=2000, description="知识库介绍", examples=["这是一个知识库"])],
) -> BaseResponse:
    security.check_kb_name(knowledge_base_name)
    try:
        service.update_info(knowledge_base_name, kb_info)
    except service.KnowledgeBaseNotFound:
        return not_found(knowledge_base_name)
    return envelope(200, "知识库介绍修改完成", {"kb_info": kb_info})


# ---- files --------------------------------------------------------------------------------------


@router.get("/list_files", response_model=ListResponse, summary="获取知识库内的文件列表")
def list_files(knowledge_base_name: Annotated[str, Query(examples=["samples"])]) -> ListResponse:
    try:
        security.check_kb_name(knowledge_base_name)
    except UnsafeName:
        return ListResponse(code=403, msg=security.ATTACK_MESSAGE, data=[])
    try:
        return ListResponse(data=service.list_files(knowledge_base_name))
    except service.KnowledgeBaseNotFound:
        return ListResponse(code=404, msg=f"未找到知识库 {knowledge_base_name}", data=[])


@router.get("/list_file_details", response_model=BaseResponse, summary="知识库内文件详情（扩展接口，含未入库文件）")
def list_file_details(knowledge_base_name: Annotated[str, Query(examples=["samples"])]) -> BaseResponse:
    try:
        security.check_kb_name(knowledge_base_name)
    except UnsafeName:
        return envelope(403, security.ATTACK_MESSAGE, [])
    try:
        return envelope(200, "success", service.file_details(knowledge_base_name))
    except service.KnowledgeBaseNotFound:
        return not_found(knowledge_base_name, [])


@router.post("/upload_docs", response_model=BaseResponse, summary="上传文件到知识库，并/或进行向量化")
async def upload_docs(
    files: Annotated[list[UploadFile], File(description="上传文件，支持多文件")],
    knowledge_base_name: Annotated[str, Form(description="知识库名称", examples=["samples"])],
    override: Annotated[bool, Form(description="覆盖已有文件")] = False,
    to_vector_store: Annotated[bool, Form(description="上传文件后是否进行向量化")] = True,
    chunk_size: Annotated[int, Form(ge=1, le=100_000)] = settings.CHUNK_SIZE,
    chunk_overlap: Annotated[int, Form(ge=0, le=100_000)] = settings.OVERLAP_SIZE,
    zh_title_enhance: Annotated[bool, Form()] = settings.ZH_TITLE_ENHANCE,
    docs: Annotated[str, Form(description="自定义的docs，需要转为json字符串")] = "",
    not_refresh_vs_cache: Annotated[bool, Form()] = False,
) -> BaseResponse:
    security.check_kb_name(knowledge_base_name)
    for upload in files:
        api_service.upload_name(upload)  # an unsafe name refuses the whole request before anything is written
    custom_docs = api_service.parse_custom_docs(docs)
    options = api_service.chunking(chunk_size, chunk_overlap, zh_title_enhance)
    api_service.check_upload_sizes(files)
    if not service.kb_exists(knowledge_base_name):
        return not_found(knowledge_base_name)

    duplicate_files: dict[str, str] = {}

    def save_and_vectorize() -> dict[str, str]:
        to_ingest, failed = api_service.save_uploads(knowledge_base_name, files, override)
        if to_vector_store:
            failed.update(
                api_service.vectorize(
                    knowledge_base_name,
                    to_ingest,
                    custom_docs,
                    options,
                    override_custom_docs=True,
                    not_refresh_vs_cache=not_refresh_vs_cache,
                    duplicate_files=duplicate_files,
                )
            )
        return failed

    failed = await run_in_threadpool(save_and_vectorize)
    data: dict[str, Any] = {"failed_files": failed}
    if duplicate_files:  # an extension, only when there are some: otherwise Chatchat's envelope exactly
        data["duplicate_files"] = duplicate_files  # {file: the file with the same content}, kept, not re-ingested
    return envelope(200, "文件上传与向量化完成", data)


@router.post("/delete_docs", response_model=BaseResponse, summary="删除知识库内指定文件")
def delete_docs(
    knowledge_base_name: KbName,
    file_names: Annotated[list[str], Body(examples=[["file_name.md", "test.txt"]])],
    delete_content: Annotated[bool, Body()] = False,
    not_refresh_vs_cache: NotRefresh = False,
) -> BaseResponse:
    security.check_kb_name(knowledge_base_name)
    names = security.check_file_names(file_names)
    if not service.kb_exists(knowledge_base_name):
        return not_found(knowledge_base_name)
    failed = service.delete_files(
        knowledge_base_name, names, delete_content=delete_content, not_refresh_vs_cache=not_refresh_vs_cache
    )
    return envelope(200, "文件删除完成", {"failed_files": failed})


@router.post("/update_docs", response_model=BaseResponse, summary="更新现有文件到知识库")
def update_docs(
    knowledge_base_name: KbName,
    file_names: Annotated[list[str], Body(examples=[["file_name.md", "test.txt"]])],
    chunk_size: ChunkSize = settings.CHUNK_SIZE,
    chunk_overlap: ChunkOverlap = settings.OVERLAP_SIZE,
    zh_title_enhance: Annotated[bool, Body()] = settings.ZH_TITLE_ENHANCE,
    override_custom_docs: Annotated[bool, Body(description="是否覆盖之前自定义的docs")] = False,
    docs: Annotated[str | dict[str, Any], Body(description="自定义的docs，需要转为json字符串")] = "",
    not_refresh_vs_cache: NotRefresh = False,
) -> BaseResponse:
    security.check_kb_name(knowledge_base_name)
    names = security.check_file_names(file_names)
    custom_docs = api_service.parse_custom_docs(docs)
    options = api_service.chunking(chunk_size, chunk_overlap, zh_title_enhance)
    if not service.kb_exists(knowledge_base_name):
        return not_found(knowledge_base_name)
    failed = api_service.vectorize(
        knowledge_base_name,
        names,
        custom_docs,
        options,
        override_custom_docs=override_custom_docs,
        not_refresh_vs_cache=not_refresh_vs_cache,
    )
    return envelope(200, "更新文档完成", {"failed_files": failed})


@router.get("/download_doc", summary="下载对应的知识文件", response_model=None)
def download_doc(
    knowledge_base_name: Annotated[str, Query(examples=["samples"])],
    file_name: Annotated[str, Query(examples=["test.txt"])],
    preview: Annotated[bool, Query(description="是：浏览器内预览；否：下载")] = False,
) -> FileResponse | BaseResponse:
    security.check_kb_name(knowledge_base_name)
    name = security.check_file_name(file_name)
    if not service.kb_exists(knowledge_base_name):
        return not_found(knowledge_base_name)
    path = paths.file_path(knowledge_base_name, name)
    if not path.is_file():
        return envelope(500, f"{file_name} 读取文件失败")
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(
        path,
        media_type=media_type,
        filename=PurePosixPath(name).name,
        content_disposition_type="inline" if preview else "attachment",
        # Uploaded HTML/SVG previewed from this origin must not run scripts.
        headers={"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"},
    )


# ---- search and chunks --------------------------------------------------------------------------


@router.post("/search_docs", summary="搜索知识库", response_model=None)
def search_docs(
    knowledge_base_name: KbName,
    query: Annotated[str, Body(description="用户输入", examples=["你好"])] = "",
    top_k: Annotated[int, Body(ge=1, le=10_000, description="匹配向量数")] = settings.VECTOR_SEARCH_TOP_K,
    score_threshold: Annotated[
        float, Body(ge=0.0, le=1.0, description="相关度阈值：0 表示完全相同，1 表示不过滤")
    ] = settings.SCORE_THRESHOLD,
    file_name: Annotated[str, Body(description="文件名称，支持 sql 通配符")] = "",
    metadata: Annotated[dict[str, Any], Body(description="根据 metadata 进行过滤，仅支持一级键")] = {},  # noqa: B006
    search_mode: Annotated[
        SearchMode | None, Body(description="检索方式：vector（向量）、keyword（关键词 BM25）、hybrid（混合，默认）")
    ] = None,
    rerank: Annotated[
        bool | None, Body(description="用交叉编码器（RERANKER_MODEL）重排候选；空为 USE_RERANKER 的设置")
    ] = None,
) -> list[dict] | JSONResponse:
    security.check_kb_name(knowledge_base_name)
    if file_name:
        security.check_file_name(file_name)
    if not service.kb_exists(knowledge_base_name):
        return []
    try:
        return api_service.search_documents(
            knowledge_base_name, query, top_k, score_threshold, file_name, metadata, search_mode, rerank
        )
    except UnknownRerankerModel as exc:
        return JSONResponse({"code": 500, "msg": str(exc)}, status_code=500)
    except Exception:
        if service.kb_exists(knowledge_base_name):
            raise
        return []  # the knowledge base was deleted (files and all) while we searched it


@router.post("/update_docs_by_id", response_model=BaseResponse, summary="按照文档 ID 更新文档内容")
def update_docs_by_id(
    knowledge_base_name: KbName,
    docs: Annotated[dict[str, DocumentIn], Body(description="要更新的文档内容，形如：{id: Document, ...}")],
) -> BaseResponse:
    security.check_kb_name(knowledge_base_name)
    if not service.kb_exists(knowledge_base_name):
        return envelope(500, f"指定的知识库 {knowledge_base_name} 不存在")
    documents = {doc_id: Document(d.page_content, metadata=d.metadata) for doc_id, d in docs.items()}
    if service.update_docs_by_id(knowledge_base_name, documents):
        return envelope(200, "文档更新成功")
    return envelope(500, "文档更新失败")


# ---- rebuilding ---------------------------------------------------------------------------------


@router.post("/recreate_vector_store", summary="根据content中文档重建向量库，流式输出处理进度。", response_model=None)
def recreate_vector_store(
    knowledge_base_name: KbName,
    allow_empty_kb: Annotated[bool, Body()] = True,
    vs_type: Annotated[str, Body()] = settings.DEFAULT_VS_TYPE,
    embed_model: Annotated[str, Body()] = settings.EMBEDDING_MODEL,
    chunk_size: ChunkSize = settings.CHUNK_SIZE,
    chunk_overlap: ChunkOverlap = settings.OVERLAP_SIZE,
    zh_title_enhance: Annotated[bool, Body()] = settings.ZH_TITLE_ENHANCE,
    not_refresh_vs_cache: NotRefresh = False,
) -> EventSourceResponse | BaseResponse:
    security.check_kb_name(knowledge_base_name)
    options = api_service.chunking(chunk_size, chunk_overlap, zh_title_enhance)
    if not allow_empty_kb and not service.kb_exists(knowledge_base_name):
        return not_found(knowledge_base_name)
    if vs_type not in SUPPORTED_VS_TYPES:
        return envelope(404, f"不支持的向量库类型 {vs_type}（支持：{', '.join(SUPPORTED_VS_TYPES)}）")
    if not api_service.embed_model_allowed(embed_model):
        return envelope(404, f"未配置的嵌入模型 {embed_model}")
    try:
        get_embeddings(embed_model)
    except Exception as exc:
        return envelope(500, f"无法加载嵌入模型 {embed_model}：{exc}")
    kb = knowledge_base_name

    def work(emit) -> None:
        total = len(paths.list_content_files(kb))
        finished = 0

        def progress(kind: str, item) -> None:
            # A file's event comes once its work is done: a failure when parsing fails, success once its
            # chunks are embedded, so events follow the work instead of all coming at the start.
            nonlocal finished
            if kind == "parsed" and item.error:
                finished += 1
                emit({"code": 500, "msg": f"添加文件‘{item.file_name}’到知识库‘{kb}’时出错：{item.error}。已跳过。"})
            elif kind == "embedded_file":
                finished += 1
                emit({"code": 200, "msg": f"({finished} / {total}): {item.file_name}", "total": total,
                      "finished": finished, "doc": item.file_name})  # fmt: skip

        service.recreate_vector_store(
            kb,
            options,
            embed_model=embed_model,
            progress=progress,
            not_refresh_vs_cache=not_refresh_vs_cache,
            vs_type=vs_type,
        )

    def on_error(exc: Exception) -> dict:
        return {"code": 500, "msg": f"重建知识库‘{kb}’时出错：{exc}"}

    return event_stream(api_service.stream_from_thread(work, on_error))


# ---- check and repair -----------------------------------------------------------------------------


@router.post(
    "/check_consistency", response_model=BaseResponse, summary="检查（并可修复）数据库、向量库与 content/ 之间的不一致"
)
def check_consistency(
    knowledge_base_name: Annotated[str | None, Body(description="知识库名称；为空时检查全部知识库")] = None,
    repair: Annotated[bool, Body(description="同时修复：能复用已存向量时不重新向量化")] = False,
) -> BaseResponse:
    names = None
    if knowledge_base_name:
        security.check_kb_name(knowledge_base_name)
        if not service.kb_exists(knowledge_base_name) and not paths.kb_path(knowledge_base_name).is_dir():
            return not_found(knowledge_base_name)
        names = [knowledge_base_name]
    reports = consistency.check_all(names, repair=repair)
    ok = all(report.ok for report in reports)
    msg = ("修复完成" if ok else "修复后仍有问题") if repair else ("未发现问题" if ok else "发现不一致，可修复")
    return envelope(200, msg, [report.to_dict() for report in reports])


# ---- portable knowledge bases (portable.py) --------------------------------------------------------


@router.get("/export_knowledge_base", summary="导出知识库：文件、分块、向量与设置打包为一个 zip", response_model=None)
def export_knowledge_base(
    knowledge_base_name: Annotated[str, Query(examples=["samples"])],
) -> FileResponse | BaseResponse:
    security.check_kb_name(knowledge_base_name)
    if not service.kb_exists(knowledge_base_name):
        return not_found(knowledge_base_name)
    archive = portable.temporary_export_path()
    try:
        portable.export_kb(knowledge_base_name, archive)
    except BaseException:
        archive.unlink(missing_ok=True)
        raise
    return FileResponse(
        archive,
        media_type="application/zip",
        filename=f"{knowledge_base_name}.zip",
        background=BackgroundTask(archive.unlink, missing_ok=True),
    )


@router.post("/import_knowledge_base", response_model=BaseResponse, summary="导入 export_knowledge_base 导出的知识库")
def import_knowledge_base(
    file: Annotated[UploadFile, File(description="export_knowledge_base 导出的 zip")],
    knowledge_base_name: Annotated[str, Form(description="新知识库名称；空为导出时的名称")] = "",
    embed_model: Annotated[str, Form(description="嵌入模型；空为导出时的模型（本机没有时用 EMBEDDING_MODEL）")] = "",
) -> BaseResponse:
    if knowledge_base_name:
        security.check_kb_name(knowledge_base_name)
    try:
        result = portable.import_kb(file.file, knowledge_base_name or None, embed_model or None)
    except portable.ArchiveRefused as exc:
        return envelope(400, f"无法导入：{exc}")
    except service.KnowledgeBaseExists as exc:
        return envelope(409, f"已存在同名知识库 {exc}")
    except UnknownEmbeddingModel as exc:
        return envelope(404, str(exc))
    message = "导入知识库成功" + ("；" + "；".join(result.warnings) if result.warnings else "")
    return envelope(200, message, asdict(result))


# ---- retrieval evaluation -------------------------------------------------------------------------


@router.post("/evaluate_retrieval", response_model=BaseResponse, summary="检索评测：按问题文件计算命中率与 MRR")
async def evaluate_retrieval(
    knowledge_base_name: Annotated[str, Form(description="知识库名称")],
    file: Annotated[
        UploadFile, File(description="问题文件：JSONL 或 CSV，字段 question、expected_file / expected_text")
    ],
    modes: Annotated[str, Form(description="逗号分隔：vector,keyword,hybrid,hybrid+rerank；空为默认")] = "",
    top_k: Annotated[int, Form(ge=1, le=100, description="每个问题取回的片段数")] = 5,
) -> BaseResponse | JSONResponse:
    security.check_kb_name(knowledge_base_name)
    mode_list = api_service.parse_eval_modes(modes)
    limit = settings.MAX_EVAL_QUESTIONS_FILE_SIZE
    data = await file.read(limit + 1)
    if len(data) > limit:
        return security.too_large_response(f"问题文件超过大小限制 ({limit} bytes, MAX_EVAL_QUESTIONS_FILE_SIZE)")
    try:
        questions = parse_questions(data, file.filename or "")
    except QuestionsFileError as exc:
        raise api_service.field_error("file", str(exc))
    if not service.kb_exists(knowledge_base_name):
        return not_found(knowledge_base_name)
    try:
        results = await run_in_threadpool(
            api_service.evaluate_retrieval, knowledge_base_name, questions, mode_list, top_k
        )
    except UnknownRerankerModel as exc:
        return envelope(500, str(exc))
    return envelope(200, "success", {"top_k": top_k, "questions": len(questions), "results": results})


# ---- file chat ------------------------------------------------------------------------------------


@router.post("/upload_temp_docs", response_model=BaseResponse, summary="上传文件到临时目录，用于文件对话。")
async def upload_temp_docs(
    files: Annotated[list[UploadFile], File(description="上传文件，支持多文件")],
    prev_id: Annotated[str | None, Form(max_length=64, description="前知识库ID")] = None,
    chunk_size: Annotated[int, Form(ge=1, le=100_000)] = settings.CHUNK_SIZE,
    chunk_overlap: Annotated[int, Form(ge=0, le=100_000)] = settings.OVERLAP_SIZE,
    zh_title_enhance: Annotated[bool, Form()] = settings.ZH_TITLE_ENHANCE,
    knowledge_id: Annotated[str | None, Form(max_length=64, description="prev_id 的别名（0.2.x 客户端）")] = None,
) -> BaseResponse:
    for upload in files:
        api_service.upload_name(upload)
    api_service.check_upload_sizes(files)
    options = api_service.chunking(chunk_size, chunk_overlap, zh_title_enhance)

    def index() -> tuple[str, dict[str, str]]:
        pairs = api_service.read_temp_uploads(files)
        return get_temp_stores().add_files(pairs, options, prev_id=prev_id or knowledge_id)

    temp_id, failed = await run_in_threadpool(index)
    failed_list = [{name: f"{name} 文件上传失败，报错信息为: {reason}"} for name, reason in failed.items()]
    return envelope(200, "success", {"id": temp_id, "failed_files": failed_list})


# ---- summaries ------------------------------------------------------------------------------------

ModelName = Annotated[str, Body(description="LLM 模型名称。")]
Temperature = Annotated[float, Body(ge=0.0, le=2.0, description="LLM 采样温度")]
MaxTokens = Annotated[int | None, Body(ge=1, le=100_000, description="限制LLM生成Token数量")]
FileDescription = Annotated[str, Body(max_length=1000)]


def _llm_options(model_name: str, temperature: float, max_tokens: int | None) -> summary.LLMOptions:
    return summary.LLMOptions(model_name or settings.LLM_MODELS[0], temperature, max_tokens)


def _summary_precheck(kb_name: str, allow_empty_kb: bool, vs_type: str) -> BaseResponse | None:
    """An envelope to answer before streaming (unknown KB, store type, unreachable LLM), or None."""
    security.check_kb_name(kb_name)
    if not service.kb_exists(kb_name):
        return not_found(kb_name)  # a summary needs ingested files: allow_empty_kb cannot help here
    if vs_type not in SUPPORTED_VS_TYPES:
        return envelope(404, f"不支持的向量库类型 {vs_type}")
    try:
        summary.check_gateway()
    except summary.LLMUnavailable as exc:
        return envelope(500, str(exc))
    return None


@router.post("/kb_summary_api/summary_file_to_vector_store", summary="单个知识库根据文件名称摘要", response_model=None)
def summary_file_to_vector_store(
    knowledge_base_name: KbName,
    file_name: Annotated[str, Body(examples=["test.pdf"])],
    allow_empty_kb: Annotated[bool, Body()] = True,
    vs_type: Annotated[str, Body()] = settings.DEFAULT_VS_TYPE,
    embed_model: Annotated[str, Body()] = settings.EMBEDDING_MODEL,
    file_description: FileDescription = "",
    model_name: ModelName = settings.LLM_MODELS[0],
    temperature: Temperature = settings.TEMPERATURE,
    max_tokens: MaxTokens = settings.MAX_TOKENS,
) -> EventSourceResponse | BaseResponse:
    name = security.check_file_name(file_name)
    early = _summary_precheck(knowledge_base_name, allow_empty_kb, vs_type)
    if early is not None:
        return early
    options = _llm_options(model_name, temperature, max_tokens)
    kb = knowledge_base_name
    store_model = service.get_kb(kb).embed_model

    def work(emit) -> None:
        summary.summarize_file(kb, name, file_description, options, store_model)
        emit({"code": 200, "msg": f"{name} 总结完成", "doc": name})

    return event_stream(api_service.stream_from_thread(work, lambda exc: summary.file_failed_event(kb, name, exc)))


@router.post(
    "/kb_summary_api/summary_doc_ids_to_vector_store", summary="单个知识库根据doc_ids摘要", response_model=None
)
def summary_doc_ids_to_vector_store(
    knowledge_base_name: KbName,
    doc_ids: Annotated[list[str], Body(examples=[["uuid"]])] = [],  # noqa: B006
    vs_type: Annotated[str, Body()] = settings.DEFAULT_VS_TYPE,
    embed_model: Annotated[str, Body()] = settings.EMBEDDING_MODEL,
    file_description: FileDescription = "",
    model_name: ModelName = settings.LLM_MODELS[0],
    temperature: Temperature = settings.TEMPERATURE,
    max_tokens: MaxTokens = settings.MAX_TOKENS,
) -> BaseResponse:
    security.check_kb_name(knowledge_base_name)
    if not service.kb_exists(knowledge_base_name):
        return not_found(knowledge_base_name, {})
    early = _summary_precheck(knowledge_base_name, False, vs_type)
    if early is not None:
        return early
    options = _llm_options(model_name, temperature, max_tokens)
    try:
        docs = summary.summarize_doc_ids(knowledge_base_name, doc_ids, file_description, options)
    except Exception as exc:
        return envelope(500, f"总结出错：{exc}", {})
    return envelope(200, "总结完成", {"summarize": docs})


@router.post("/kb_summary_api/recreate_summary_vector_store", summary="重建单个知识库文件摘要", response_model=None)
def recreate_summary_vector_store(
    knowledge_base_name: KbName,
    allow_empty_kb: Annotated[bool, Body()] = True,
    vs_type: Annotated[str, Body()] = settings.DEFAULT_VS_TYPE,
    embed_model: Annotated[str, Body()] = settings.EMBEDDING_MODEL,
    file_description: FileDescription = "",
    model_name: ModelName = settings.LLM_MODELS[0],
    temperature: Temperature = settings.TEMPERATURE,
    max_tokens: MaxTokens = settings.MAX_TOKENS,
) -> EventSourceResponse | BaseResponse:
    early = _summary_precheck(knowledge_base_name, allow_empty_kb, vs_type)
    if early is not None:
        return early
    options = _llm_options(model_name, temperature, max_tokens)
    kb = knowledge_base_name
    store_model = service.get_kb(kb).embed_model

    def on_error(exc: Exception) -> dict:
        return {"code": 500, "msg": f"知识库‘{kb}’重建摘要时出错：{exc}"}

    return event_stream(
        api_service.stream_from_thread(
            lambda emit: summary.recreate_summaries(kb, file_description, options, store_model, emit), on_error
        )
    )
