"""Typed settings for every process of the stack.

One place, no files to copy. Values come from (highest first):
  1. environment variables ``CHATCHAT_<NAME>`` (nested keys joined with ``__``),
  2. a YAML file: ``$CHATCHAT_CONFIG_FILE`` or ``configs/settings.yaml`` when present,
  3. the defaults below, which run on a fresh machine with the packaged models.

Names follow Langchain-Chatchat 0.2.x (CHUNK_SIZE, VECTOR_SEARCH_TOP_K, ...) so its
users find them where they expect.
"""

from __future__ import annotations

import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from configs.prompts import DEFAULT_PROMPT_TEMPLATES

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_FILE = PROJECT_ROOT / "configs" / "settings.yaml"
VERSION = "0.3.0"

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
DEFAULT_LLM_MODEL = "SmolLM2-135M-Instruct"


class ServerAddress(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)

    @property
    def url(self) -> str:
        # 0.0.0.0 is a bind address; clients reach it through loopback.
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"


class ModelWorkerConfig(BaseModel):
    """How one model is served. `path` may be a folder, a GGUF file, or a name under MODEL_ROOT_PATH."""

    host: str = "127.0.0.1"
    port: int | None = None
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    path: str | None = None
    gguf_file: str | None = None
    infer_turbo: Literal[False, "vllm"] = False
    max_context: int | None = None
    # Requests the worker runs at once; more wait in its queue (the controller sees the queue length).
    limit_worker_concurrency: int = Field(16, ge=1)


class OnlineModelConfig(BaseModel):
    """Any OpenAI-compatible upstream (OpenAI, Ollama, Xinference, a remote FastChat, ...)."""

    api_base_url: str
    api_key: str = "EMPTY"
    model_name: str
    embeddings: bool = False


class MilvusConfig(BaseModel):
    """Chatchat's kbs_config["milvus"] / ["zilliz"]. Empty uri and host: Milvus Lite in a file per store."""

    uri: str = ""  # http(s)://host:19530, or a Zilliz Cloud endpoint
    host: str = ""
    port: int = Field(19530, ge=1, le=65535)
    user: str = ""
    password: str = ""
    secure: bool = False
    token: str = ""  # Zilliz Cloud API key (or user:password)
    db_name: str = ""


class PgConfig(BaseModel):
    """Chatchat's kbs_config["pg"]: a PostgreSQL with the pgvector extension."""

    connection_uri: str = ""  # postgresql://user:password@host:5432/database
    # Rows the HNSW index gathers per search (pgvector's hnsw.ef_search; at least the rows asked for).
    # Higher finds more of the true nearest chunks in large tables, at the cost of slower searches.
    ef_search: int = Field(100, ge=10, le=1000)  # docs/vector_stores.md: 1,000,000 chunks
    # The HNSW graph's links per row and build-time candidates (pgvector's defaults). Larger: better
    # recall in large tables, slower builds; applied when the index is next built (--recreate-vs).
    hnsw_m: int = Field(16, ge=2, le=100)
    hnsw_ef_construction: int = Field(64, ge=4, le=1000)


class KbsConfig(BaseModel):
    faiss: dict[str, Any] = {}
    milvus: MilvusConfig = MilvusConfig()
    zilliz: MilvusConfig = MilvusConfig()
    pg: PgConfig = PgConfig()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CHATCHAT_",
        env_nested_delimiter="__",
        extra="ignore",
        validate_default=True,
    )

    # ---- paths -------------------------------------------------------------------
    KB_ROOT_PATH: Path = PROJECT_ROOT / "knowledge_base"
    DB_ROOT_PATH: Path | None = None  # default: KB_ROOT_PATH / "info.db"
    SQLALCHEMY_DATABASE_URI: str | None = None  # default: sqlite:///DB_ROOT_PATH
    MODEL_ROOT_PATH: Path = PROJECT_ROOT / "model"
    LOG_PATH: Path = PROJECT_ROOT / "logs"
    BASE_TEMP_DIR: Path = Path(tempfile.gettempdir()) / "chatchat"

    # ---- knowledge base ----------------------------------------------------------
    DEFAULT_KNOWLEDGE_BASE: str = "samples"
    # Chatchat's vs_type names (docs/vector_stores.md); each knowledge base keeps the type it was created with.
    DEFAULT_VS_TYPE: Literal["faiss", "milvus", "zilliz", "pg"] = "faiss"
    KBS_CONFIG: KbsConfig = KbsConfig()
    # A FAISS store searches exactly (flat) up to this many chunks, then switches to an IVF index that
    # reads FAISS_IVF_NPROBE of its ~sqrt(n) lists per query (bench/bench_scale.py: recall@10 and speed).
    FAISS_IVF_THRESHOLD: int = Field(200_000, ge=1_000)
    FAISS_IVF_NPROBE: int = Field(32, ge=1)
    CACHED_VS_NUM: int = Field(1, ge=1)
    CACHED_MEMO_VS_NUM: int = Field(10, ge=1)
    MEMO_VS_TTL_SECONDS: int = Field(3600, ge=1)
    # File chat's temporary indexes (upload_temp_docs), one folder per id, read by every API process that sees
    # it: with API processes on several hosts, put it on their shared file system. Default KB_ROOT_PATH/.temp_stores.
    TEMP_STORES_PATH: Path | None = None
    CHUNK_SIZE: int = Field(250, ge=1)
    OVERLAP_SIZE: int = Field(50, ge=0)
    VECTOR_SEARCH_TOP_K: int = Field(3, ge=1)
    # Score = (1 - cosine) / 2: 0 identical, 1 opposite. Hits with score <= threshold are kept.
    SCORE_THRESHOLD: float = Field(1.0, ge=0.0, le=2.0)
    ZH_TITLE_ENHANCE: bool = False
    # ---- retrieval (docs/retrieval.md) ---------------------------------------------
    # vector: embeddings only (Chatchat 0.2's search); keyword: BM25 over words (jieba for Chinese);
    # hybrid: both, fused. Per request: the "search_mode" field of search_docs and the chats.
    SEARCH_MODE: Literal["vector", "keyword", "hybrid"] = "hybrid"
    # Candidates each side offers to hybrid fusion (and to the reranker), at least top_k.
    HYBRID_CANDIDATES: int = Field(50, ge=1, le=1000)
    # Weights of the two sides' z-scored scores in hybrid fusion: raise one to trust that side more.
    HYBRID_VECTOR_WEIGHT: float = Field(1.0, ge=0.0)
    HYBRID_KEYWORD_WEIGHT: float = Field(1.0, ge=0.0)
    # A cross-encoder re-scores the best candidates (Chatchat 0.2.10's names): any sentence-transformers
    # CrossEncoder folder, by name under MODEL_ROOT_PATH or as a path. Loaded once per process.
    USE_RERANKER: bool = False
    RERANKER_MODEL: str = "bge-reranker-large"
    RERANKER_MAX_LENGTH: int = Field(1024, ge=16)
    RERANKER_CANDIDATES: int = Field(20, ge=1, le=1000)
    # A retrieval-evaluation questions file larger than this is refused.
    MAX_EVAL_QUESTIONS_FILE_SIZE: int = Field(5 * 1024 * 1024, ge=1)
    TEXT_SPLITTER_NAME: Literal[
        "ChineseRecursiveTextSplitter", "RecursiveCharacterTextSplitter", "MarkdownHeaderTextSplitter"
    ] = "ChineseRecursiveTextSplitter"
    MARKDOWN_HEADERS: list[tuple[str, str]] = [("#", "head1"), ("##", "head2"), ("###", "head3"), ("####", "head4")]
    # OCR images in PDFs only when they cover at least this share of the page (width, height).
    PDF_OCR_THRESHOLD: tuple[float, float] = (0.6, 0.6)
    OCR_ENABLED: bool = True
    # auto: OpenVINO when rapidocr-openvino is installed (same models and text, ~2x faster on CPU), else ONNX Runtime.
    OCR_BACKEND: Literal["auto", "openvino", "onnxruntime"] = "auto"
    # Size the text detector sees. RapidOCR's default ("min", 736) scales the short side up to 736,
    # so a 1080x153 banner is read at 5196x736. PaddleOCR's ("max", 960) reads Chatchat's sample
    # images about 1.7x faster, but the recognised text changes (better on some images, worse on others).
    OCR_DET_LIMIT_TYPE: Literal["min", "max"] = "min"
    OCR_DET_LIMIT_SIDE_LEN: int = Field(736, ge=32)
    # Worker processes that parse files in parallel (0 = one per CPU core). 1 parses in the ingesting
    # process, where OCR already uses every core; on 2 cores that is faster than 2 single-threaded
    # workers (bench_ingest: 65 s vs 80 s). More workers pay off with many cores and many non-OCR files.
    INGEST_WORKERS: int = Field(1, ge=0)
    # Chunks embedded before vectors are saved and rows committed: a killed ingestion resumes from there.
    # The interval grows to a quarter of the store's size, since each save rewrites the whole store.
    INGEST_CHECKPOINT_CHUNKS: int = Field(2000, ge=1)
    # Limits for untrusted files (docs/api.md "Safety"); a file over one fails alone, naming the setting.
    # Pixels one PDF page render or one picture may have before OCR decodes it (40 M: A0 at 144 dpi).
    # A bigger PDF page is rendered at a lower scale down to 72 dpi; below that its OCR is skipped.
    OCR_MAX_PIXELS: int = Field(40_000_000, ge=1)
    # .docx/.pptx/.xlsx/.epub are zips: checked before a library unpacks them. The sum of the members'
    # unpacked sizes, the members' count, and each member's unpacked/packed ratio (zip bombs reach 1000;
    # Apache POI's default, 100) for members over 1 MiB.
    MAX_OFFICE_UNZIPPED_BYTES: int = Field(512 * 1024 * 1024, ge=1)
    MAX_OFFICE_PARTS: int = Field(10_000, ge=1)
    MAX_OFFICE_COMPRESSION_RATIO: float = Field(100.0, ge=1.0)
    # Rows and cells read from one .csv/.tsv/.xlsx/.xls file (every sheet, empty rows and cells included).
    MAX_TABLE_ROWS: int = Field(200_000, ge=1)
    MAX_TABLE_CELLS: int = Field(20_000_000, ge=1)
    # Seconds one file may take to parse (load, OCR, split); 0 = no limit. With a limit, files are parsed
    # in a child process that is killed when its file overruns (or that the kernel kills for memory),
    # so the file fails alone; the child costs ~0.5 s to start per ingestion and again after each kill.
    PARSE_TIMEOUT_SECONDS: float = Field(0.0, ge=0.0)
    KB_INFO: dict[str, str] = {"samples": "关于本项目的使用指南与常见问题"}
    # Limits for importing a knowledge-base archive (portable.py): members, total unpacked bytes, and the
    # unpacked/packed ratio of any member over 1 MiB (zip bombs reach 1000). Content files also obey
    # MAX_UPLOAD_FILE_SIZE.
    KB_ARCHIVE_MAX_MEMBERS: int = Field(100_000, ge=1)
    KB_ARCHIVE_MAX_UNPACKED_BYTES: int = Field(8 * 1024 * 1024 * 1024, ge=1)
    KB_ARCHIVE_MAX_COMPRESSION_RATIO: float = Field(200.0, ge=1.0)
    # ---- knowledge bases as OpenAI models (the gateway's kb:<name> models, docs/chat.md) ----
    # More model names for knowledge bases: {"samples-qa": "samples"} answers "samples-qa" from "samples".
    KB_MODEL_ALIASES: dict[str, str] = {}
    # The LLM that answers kb: models; empty: the API server's default (the first of LLM_MODELS).
    KB_MODEL_LLM: str = ""
    # Append the numbered sources ("[1] [file](link)") to the answer text; they are in "sources" either way.
    KB_MODEL_CITATIONS: bool = True
    # Ingest cache (docs/ingest_cache.md): parsed documents and chunk vectors by content hash, reused by
    # rebuilds, re-uploads and file chat. One SQLite file (default KB_ROOT_PATH/ingest_cache.db), shared by
    # every process, safe to delete at any time; least-recently-used entries go past the size limit.
    INGEST_CACHE_ENABLED: bool = True
    INGEST_CACHE_PATH: Path | None = None
    INGEST_CACHE_MAX_BYTES: int = Field(2 * 1024**3, ge=1)
    # The same content uploaded under another name: skip (keep the file, ingest it once, report it),
    # refuse (do not save it; it is a failed file) or allow (ingest every copy).
    DUPLICATE_FILES: Literal["skip", "refuse", "allow"] = "skip"

    # ---- web search --------------------------------------------------------------
    DEFAULT_SEARCH_ENGINE: str = "duckduckgo"
    SEARCH_ENGINE_TOP_K: int = Field(3, ge=1)
    BING_SEARCH_URL: str = "https://api.bing.microsoft.com/v7.0/search"
    BING_SUBSCRIPTION_KEY: str = ""
    METAPHOR_API_KEY: str = ""
    SEARXNG_URL: str = ""
    SEARCH_PROXY: str = ""  # an http(s) proxy for the search engines, e.g. http://proxy:3128
    METAPHOR_SEARCH_URL: str = "https://api.exa.ai/search"  # Metaphor is now Exa

    # ---- agent chat ----------------------------------------------------------------
    # The shell tool runs commands on the API server's machine: off unless you mean it.
    AGENT_SHELL_ENABLED: bool = False
    AGENT_MAX_ITERATIONS: int = Field(5, ge=1, le=50)

    # ---- models -------------------------------------------------------------------
    EMBEDDING_MODEL: str = DEFAULT_EMBEDDING_MODEL
    EMBEDDING_DEVICE: str = "auto"
    # Texts per forward pass of a local model; None picks by device: 8 on a CPU, where small,
    # length-sorted batches pad least (bench_embed: bf16 87 chunks/s at 8 against 69 at 64) and a
    # search waits least behind an ingestion, and 64 on a GPU. Online models get 64 per request.
    EMBEDDING_BATCH_SIZE: int | None = Field(None, ge=1)
    # auto: fp16 on GPUs, bf16 on CPUs with native bf16 (AVX512-BF16/AMX), fp32 elsewhere.
    EMBEDDING_DTYPE: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # Local embedding model folders by name; names not listed are looked up under MODEL_ROOT_PATH.
    EMBEDDING_MODEL_PATHS: dict[str, str] = {}
    # OpenAI-compatible embedding endpoints by name.
    ONLINE_EMBEDDING_MODELS: dict[str, OnlineModelConfig] = {}
    LLM_MODELS: list[str] = [DEFAULT_LLM_MODEL]
    LLM_DEVICE: str = "auto"
    HISTORY_LEN: int = Field(3, ge=0)
    MAX_TOKENS: int | None = 2048
    TEMPERATURE: float = Field(0.7, ge=0.0, le=2.0)
    # The web UI's starting temperature per model (others start at TEMPERATURE): the packaged
    # 135M model rambles at 0.7 and its model card suggests 0.2.
    MODEL_TEMPERATURES: dict[str, float] = {DEFAULT_LLM_MODEL: 0.2}
    # Local model workers end an answer (finish_reason "stop") whose tail is one passage of 10+
    # characters repeated this many times back to back, or one sentence repeated once more than
    # this in the last 2000 characters; 0 turns the guard off.
    REPETITION_GUARD_REPEATS: int = Field(3, ge=0)
    FSCHAT_MODEL_WORKERS: dict[str, ModelWorkerConfig] = {}
    ONLINE_LLM_MODEL: dict[str, OnlineModelConfig] = {}

    # ---- servers ------------------------------------------------------------------
    DEFAULT_BIND_HOST: str = "127.0.0.1"
    API_SERVER: ServerAddress = ServerAddress(port=7861)
    # API server processes sharing API_SERVER's port (startup.py --api-workers); each loads its own models.
    # Several hosts: docs/vector_stores.md says what they must share.
    API_WORKERS: int = Field(1, ge=1)
    WEBUI_SERVER: ServerAddress = ServerAddress(port=8501)
    FSCHAT_CONTROLLER: ServerAddress = ServerAddress(port=20001)
    FSCHAT_OPENAI_API: ServerAddress = ServerAddress(port=20000)
    # The MCP server (knowledge-base tools over streamable HTTP at /mcp); startup.py starts it with
    # --mcp, or with -a/--all-api when MCP_ENABLED is true.
    MCP_SERVER: ServerAddress = ServerAddress(port=7862)
    MCP_ENABLED: bool = False
    MODEL_WORKER_BASE_PORT: int = 20002
    # startup.py: how many times a crashed service is started again before the launcher gives up.
    RESTART_CRASHED_SERVICES: int = Field(0, ge=0)
    # startup.py: while a service starts, say every this many seconds what it is doing (its latest
    # log line: a model conversion's step, a progress bar); 0 stays silent until it is up.
    STARTUP_PROGRESS_SECONDS: float = Field(10.0, ge=0)
    HTTPX_DEFAULT_TIMEOUT: float = 300.0
    OPEN_CROSS_DOMAIN: bool = False
    API_KEYS: list[str] = []  # when set, every API route but health and docs needs a Bearer key
    # With API_KEYS, download links in answers and the UI's previews are signed; they work this long.
    SIGNED_LINK_TTL_HOURS: float = Field(168.0, gt=0)
    MAX_UPLOAD_FILE_SIZE: int = 200 * 1024 * 1024
    MAX_UPLOAD_REQUEST_SIZE: int = 1024 * 1024 * 1024
    UI_LANGUAGE: Literal["zh", "en"] = "zh"
    # Knowledge bases that follow a folder, {kb_name: folder}; "" is the KB's own content/. startup.py
    # starts server/knowledge_base/folder_sync.py for them together with the API server.
    FOLDER_SYNC: dict[str, str] = {}
    # A file is read once it has not changed for this long (a copy in progress is not read half-way).
    FOLDER_SYNC_SETTLE_SECONDS: float = Field(1.0, ge=0)
    # Changes closer together than this form one batch (one request to the API server).
    FOLDER_SYNC_BATCH_MS: int = Field(500, ge=10)

    PROMPT_TEMPLATES: dict[str, dict[str, str]] = DEFAULT_PROMPT_TEMPLATES

    @field_validator("KB_ROOT_PATH", "MODEL_ROOT_PATH", "LOG_PATH", "BASE_TEMP_DIR", "TEMP_STORES_PATH")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return None if value is None else Path(value).expanduser().resolve()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config_file = Path(os.environ.get("CHATCHAT_CONFIG_FILE", DEFAULT_CONFIG_FILE))
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if config_file.is_file():
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)

    # ---- derived values -------------------------------------------------------------
    @property
    def db_path(self) -> Path:
        return (self.DB_ROOT_PATH or self.KB_ROOT_PATH / "info.db").resolve()

    @property
    def ingest_cache_path(self) -> Path:
        return Path(self.INGEST_CACHE_PATH or self.KB_ROOT_PATH / "ingest_cache.db").expanduser().resolve()

    @property
    def database_url(self) -> str:
        return self.SQLALCHEMY_DATABASE_URI or f"sqlite:///{self.db_path}"

    def worker_config(self, model_name: str) -> ModelWorkerConfig:
        """How a model is served; its device falls back to LLM_DEVICE unless its entry names one."""
        config = self.FSCHAT_MODEL_WORKERS.get(model_name)
        if config is None:
            return ModelWorkerConfig(device=self.LLM_DEVICE)
        if "device" in config.model_fields_set:
            return config
        return config.model_copy(update={"device": self.LLM_DEVICE})

    def temperature_for(self, model_name: str | None) -> float:
        """The temperature a chat with this model starts at."""
        return self.MODEL_TEMPERATURES.get(model_name or "", self.TEMPERATURE)

    def public_dict(self) -> dict[str, Any]:
        """Settings safe to show to API clients: no keys, no secrets."""
        hidden = ("KEY", "SECRET", "TOKEN", "PASSWORD")
        data = self.model_dump(mode="json")
        data.pop("ONLINE_LLM_MODEL", None)
        data.pop("ONLINE_EMBEDDING_MODELS", None)
        data.pop("SQLALCHEMY_DATABASE_URI", None)
        data.pop("KBS_CONFIG", None)  # passwords, tokens, connection URIs
        return {k: v for k, v in data.items() if not any(h in k.upper() for h in hidden)}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def in_ui_language(chinese: str, english: str) -> str:
    """Of a text in both languages, the one UI_LANGUAGE asks for (the web UI, init_database.py, check/repair)."""
    return english if get_settings().UI_LANGUAGE == "en" else chinese


def reload_settings() -> Settings:
    """Drop the cached settings (tests and the config-reload endpoint use this)."""
    get_settings.cache_clear()
    return get_settings()
