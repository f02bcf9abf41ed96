"""Check and repair: where the metadata database, the vector store (with its keyword index) and content/
disagree, and bringing them back together without embedding again what the store still holds.

Drift comes from crashes between a store save and the rows' commit, files copied or removed by hand, a
database restored from a backup, or older versions; Chatchat's users met it as a KeyError on delete, or as
files listed but never found. ``init_database.py --check`` / ``--repair``, POST
/knowledge_base/check_consistency and the knowledge-base page's button all run this module.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from functools import cached_property

from configs import get_settings, in_ui_language
from server.db.repositories import knowledge_base as kb_repo
from server.db.repositories import knowledge_file as file_repo
from server.db.repositories.knowledge_base import KnowledgeBaseRecord
from server.db.repositories.knowledge_file import ChunkRow, FileIngestion
from server.knowledge_base import paths, service
from server.knowledge_base.embeddings import get_embeddings
from server.knowledge_base.ingest import file_digest
from server.knowledge_base.vector_stores import StoreCorrupted, VectorStore, get_store_cache

logger = logging.getLogger(__name__)

# Every kind of disagreement, with what it means (Chinese, English; UI_LANGUAGE picks).
PROBLEM_KINDS = {
    "kb_not_listed": ("知识库根目录下有数据库未登记的文件夹", "a folder under the knowledge-base root that the database does not list"),
    "kb_folder_missing": ("数据库登记的知识库文件夹不存在", "a knowledge base the database lists whose folder is gone"),
    "store_unreadable": ("向量库无法读取", "the vector store cannot be read"),
    "orphan_chunks": ("向量库中有数据库未记录的分块", "chunks in the vector store that no file's rows in the database list"),
    "missing_chunks": ("数据库记录的分块在向量库中缺失", "chunks the database lists for a file that the vector store lacks"),
    "file_not_on_disk": ("数据库登记的文件不在 content/ 中", "a file the database lists that is not in content/"),
    "file_not_listed": ("content/ 中的文件未入库，也无失败记录", "a file in content/ that the database neither lists nor records as failed"),
    "keyword_index_stale": ("关键词索引与已存文本不符", "keyword-index terms that do not match the stored texts"),
    "counts_wrong": ("数据库中的文件数或分块数与记录不符", "file or chunk counts in the database that disagree with its rows"),
}
# What a repair does about a problem (Problem.action names one).
ACTIONS = {
    "register": ("登记为知识库（嵌入模型 {model}），再修复", "register it as a knowledge base (embedding model {model}), then repair it"),
    "make_folder": ("创建文件夹和空向量库", "make its folder and an empty vector store"),
    "rebuild": ("依据 content/ 重建（所有文件重新向量化）", "rebuild it from content/ (embeds every file again)"),
    "recount": ("重新计数", "count the rows again"),
    "adopt": ("登记为该文件的分块（无需重新向量化）", "list them as the file's chunks (no embedding)"),
    "remove": ("从向量库删除", "remove them"),
    "forget_chunks": ("删除这些分块的记录", "forget them"),
    "reingest": ("重新入库该文件（复用仍在的向量）", "ingest the file again (reusing stored vectors)"),
    "forget_file": ("删除该文件的记录和分块", "forget the file and its chunks"),
    "ingest": ("入库该文件", "ingest it"),
    "reindex": ("依据已存文本重建关键词（无需重新向量化）", "make their terms again from the stored texts (no embedding)"),
}
# The loader recorded for a file whose rows a repair rebuilt from the chunks in the store.
ADOPTED = "RepairedFromStore"


@dataclass
class Problem:
    kind: str
    file_name: str = ""
    chunks: int = 0
    action: str = ""  # a key of ACTIONS
    detail: str = ""
    model: str = ""  # for the "register" action

    def describe(self) -> str:
        return in_ui_language(*PROBLEM_KINDS[self.kind])

    def action_text(self) -> str:
        return in_ui_language(*ACTIONS[self.action]).format(model=self.model)

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "file_name": self.file_name,
            "chunks": self.chunks,
            "description": self.describe(),
            "action": self.action_text(),
            "detail": self.detail,
        }


@dataclass
class KbCheck:
    kb_name: str
    problems: list[Problem] = field(default_factory=list)
    remaining: list[Problem] | None = None  # after a repair: what is still wrong (normally nothing)

    @property
    def ok(self) -> bool:
        return not (self.problems if self.remaining is None else self.remaining)

    def to_dict(self) -> dict:
        remaining = None if self.remaining is None else [p.to_dict() for p in self.remaining]
        return {"kb_name": self.kb_name, "problems": [p.to_dict() for p in self.problems], "remaining": remaining}


@dataclass
class _State:
    """What the database, the store and content/ hold for one knowledge base (read once; the
    disagreements below are derived from it, each computed once)."""

    kb: KnowledgeBaseRecord
    listed: dict[str, list[str]]  # file -> chunk ids, as the database says
    custom: set[str]  # files whose chunks a client wrote (no file in content/ needed)
    on_disk: set[str]
    failed: set[str]
    stored: dict[str, list[str]]  # source -> chunk ids, as the store says
    stale_keywords: list[str]

    @cached_property
    def orphans(self) -> dict[str, list[str]]:
        listed_ids = {doc_id for ids in self.listed.values() for doc_id in ids}
        found = {source: [d for d in ids if d not in listed_ids] for source, ids in self.stored.items()}
        return {source: ids for source, ids in found.items() if ids}

    def adoptable(self, source: str) -> bool:
        """Orphans of a file in content/ that the database does not list are that file's chunks: keep them."""
        return source in self.on_disk and source not in self.listed

    @cached_property
    def missing(self) -> dict[str, list[str]]:
        stored_ids = {doc_id for ids in self.stored.values() for doc_id in ids}
        found = {name: [d for d in ids if d not in stored_ids] for name, ids in self.listed.items()}
        return {name: ids for name, ids in found.items() if ids}

    @cached_property
    def not_on_disk(self) -> list[str]:
        return sorted(name for name in self.listed if name not in self.on_disk and name not in self.custom)

    @cached_property
    def not_listed(self) -> list[str]:
        known = set(self.listed) | self.failed | set(self.orphans)
        return sorted(self.on_disk - known)


def _read_state(kb: KnowledgeBaseRecord) -> _State:
    backend = get_embeddings(kb.embed_model)

    def view(store: VectorStore) -> tuple[dict[str, list[str]], list[str]]:
        return store.sources(), store.stale_keyword_ids()

    stored, stale = service._read_store(kb, backend, view)
    return _State(
        kb,
        file_repo.chunk_ids_by_file(kb.kb_name),
        {record.file_name for record in file_repo.list_files(kb.kb_name) if record.custom_docs},
        set(paths.list_content_files(kb.kb_name)),
        set(file_repo.list_errors(kb.kb_name)),
        stored,
        stale,
    )


# ---- checking ---------------------------------------------------------------------------------------------


def check_kb(kb_name: str) -> KbCheck:
    report = KbCheck(kb_name)
    kb = kb_repo.get_kb(kb_name)
    if kb is None:
        report.problems.append(Problem("kb_not_listed", action="register", model=_model_for_folder(kb_name)))
        return report
    if not paths.kb_path(kb_name).is_dir():
        report.problems.append(Problem("kb_folder_missing", action="make_folder"))
    try:
        state = _read_state(kb)
    except (StoreCorrupted, ValueError, OSError) as exc:
        report.problems.append(Problem("store_unreadable", action="rebuild", detail=str(exc)))
        return report
    report.problems.extend(_problems(state))
    report.problems.extend(
        Problem("counts_wrong", name, action="recount") for name in file_repo.wrong_counts(kb_name)
    )
    return report


def _problems(state: _State) -> list[Problem]:
    problems = []
    for source, ids in state.orphans.items():
        problems.append(Problem("orphan_chunks", source, len(ids), "adopt" if state.adoptable(source) else "remove"))
    gone = set(state.not_on_disk)
    for name, ids in state.missing.items():
        if name not in gone:
            action = "forget_chunks" if name in state.custom else "reingest"
            problems.append(Problem("missing_chunks", name, len(ids), action))
    for name in sorted(gone):
        problems.append(Problem("file_not_on_disk", name, len(state.listed[name]), "forget_file"))
    for name in state.not_listed:
        problems.append(Problem("file_not_listed", name, action="ingest"))
    if state.stale_keywords:
        problems.append(Problem("keyword_index_stale", chunks=len(state.stale_keywords), action="reindex"))
    return problems


def kb_names_to_check() -> list[str]:
    """Knowledge bases the database lists, then folders it does not."""
    listed = [kb.kb_name for kb in kb_repo.list_kbs()]
    return listed + [name for name in paths.list_kb_folders() if name not in listed]


def check_all(kb_names: list[str] | None = None, *, repair: bool = False) -> list[KbCheck]:
    run = repair_kb if repair else check_kb
    return [run(name) for name in (kb_names or kb_names_to_check())]


# ---- repairing --------------------------------------------------------------------------------------------


def repair_kb(kb_name: str) -> KbCheck:
    """Fix what check_kb finds; ``remaining`` then says what is still wrong (normally nothing)."""
    report = check_kb(kb_name)
    kinds = {problem.kind for problem in report.problems}
    if "kb_not_listed" in kinds:
        kb_repo.insert_kb(kb_name, f"关于{kb_name}的知识库", get_settings().DEFAULT_VS_TYPE, _model_for_folder(kb_name))
        report.problems.extend(check_kb(kb_name).problems)
        kinds = {problem.kind for problem in report.problems}
    if report.problems:
        _repair(service.get_kb(kb_name), kinds)
        report.remaining = check_kb(kb_name).problems
    else:
        report.remaining = []
    return report


def _repair(kb: KnowledgeBaseRecord, kinds: set[str]) -> None:
    backend = get_embeddings(kb.embed_model)
    if "kb_folder_missing" in kinds:
        paths.content_path(kb.kb_name).mkdir(parents=True, exist_ok=True)
    if "store_unreadable" in kinds:
        _set_aside_unreadable_store(kb)
        service.recreate_vector_store(kb.kb_name)
        return
    with service.writing_to(kb):
        state = _read_state(kb)
        adopted = service._write_store(kb, backend, lambda store: _fix_store(store, state), force_save=True)
        file_repo.record_ingestions(kb.kb_name, adopted)
        lost_custom = [doc_id for name, ids in state.missing.items() if name in state.custom for doc_id in ids]
        file_repo.delete_chunk_rows(kb.kb_name, lost_custom)
    if state.not_on_disk:
        service.delete_files(kb.kb_name, state.not_on_disk)
    to_ingest = sorted({name for name in state.missing if name in state.on_disk} | set(state.not_listed))
    if to_ingest:
        report = service.ingest_files(kb.kb_name, to_ingest, kb=kb)
        for name, reason in report.failed.items():
            logger.warning("repair could not ingest %s/%s: %s", kb.kb_name, name, reason)
    file_repo.fix_counts(kb.kb_name)


def _set_aside_unreadable_store(kb: KnowledgeBaseRecord) -> None:
    """Keep the broken store for inspection (one copy, hidden from the model lookup) and start an empty one."""
    with service.writing_to(kb):
        folder = paths.vector_store_path(kb.kb_name, kb.embed_model)
        kept = folder.with_name(f".unreadable-{folder.name}")
        shutil.rmtree(kept, ignore_errors=True)
        folder.rename(kept)
        get_store_cache().forget_kb(kb.kb_name)
    logger.warning("vector store of %s unreadable: kept in %s, rebuilding from content/", kb.kb_name, kept)


def _fix_store(store: VectorStore, state: _State) -> list[FileIngestion]:
    """Remove orphan chunks nobody owns, re-make stale keyword terms; return rows for the chunks adopted."""
    adopted = []
    for source, ids in state.orphans.items():
        if state.adoptable(source):
            adopted.append(_adoption(state.kb.kb_name, source, store.get(ids)))
        else:
            store.delete(ids)
    still_stored = {chunk.doc_id for chunk in store.get(state.stale_keywords)}  # orphans may be gone by now
    store.reindex_keywords([doc_id for doc_id in state.stale_keywords if doc_id in still_stored])
    return adopted


def _adoption(kb_name: str, source: str, chunks) -> FileIngestion:
    path = paths.file_path(kb_name, source)
    stat = path.stat()
    rows = [ChunkRow(chunk.doc_id, chunk.metadata) for chunk in chunks]
    return FileIngestion(source, ADOPTED, ADOPTED, stat.st_mtime, stat.st_size, file_digest(path), False, rows)


def _model_for_folder(kb_name: str) -> str:
    """The embedding model of a folder's vector store: the configured one, unless only another's store exists."""
    configured = get_settings().EMBEDDING_MODEL
    stores = paths.kb_path(kb_name) / "vector_store"
    saved = sorted(p.name for p in stores.iterdir() if p.is_dir() and not p.name.startswith(".")) if stores.is_dir() else []
    return configured if configured in saved or not saved else saved[0]
