"""Build and maintain knowledge bases from the files under knowledge_base/<kb>/content/.

Examples:
  python init_database.py --recreate-vs            rebuild every knowledge base from its files
  python init_database.py -i -n samples            add files new to content/ (resumes a killed run)
  python init_database.py --prune-db -n samples    forget files deleted from content/
  python init_database.py --check                  report where the database, vector stores and content/ disagree
  python init_database.py --repair                 fix that (re-embeds only chunks whose vectors are gone)
  python init_database.py --migrate-kb samples --to milvus   move a knowledge base to another store
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def vs_types() -> tuple[str, ...]:
    from configs.settings import KbsConfig  # one entry per store type, Chatchat's kbs_config

    return tuple(KbsConfig.model_fields)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Only one main action runs per call, in this order of precedence: --recreate-vs, --import-db, "
        "--update-in-db, --increment, --prune-db, --prune-folder, --repair, --check (--migrate-kb before all); "
        "--export and --import run alone. --create-tables and --clear-tables run first.",
    )  # fmt: skip
    parser.add_argument(
        "-r",
        "--recreate-vs",
        action="store_true",
        help="drop the vectors and file records of each knowledge base and re-ingest every file in its "
        "content/ folder (creates knowledge bases found on disk but not in the database)",
    )
    parser.add_argument(
        "--create-tables", action="store_true", help="create missing tables and columns (safe to repeat)"
    )
    parser.add_argument(
        "--clear-tables",
        action="store_true",
        help="drop every table and create them empty (vector stores on disk are left as they are)",
    )
    parser.add_argument(
        "--import-db",
        metavar="PATH",
        help="copy knowledge base, file and chunk records from another info.db (e.g. Chatchat's)",
    )
    parser.add_argument(
        "--export",
        nargs=2,
        metavar=("KB", "FILE"),
        help="write knowledge base KB to one zip FILE: files, chunks, vectors, keyword index, settings",
    )
    parser.add_argument(
        "--import",
        dest="import_archive",
        metavar="FILE",
        help="create a knowledge base from an --export zip (named as exported, or by -n NAME; -e picks the "
        "embedding model); its vectors are kept unless the embedding model differs",
    )
    parser.add_argument(
        "-u",
        "--update-in-db",
        action="store_true",
        help="re-ingest the files the database already knows, from their copies in content/",
    )
    parser.add_argument(
        "-i",
        "--increment",
        action="store_true",
        help="ingest only files in content/ that the database does not know yet",
    )
    parser.add_argument(
        "--prune-db", action="store_true", help="remove records and vectors of files that were deleted from content/"
    )
    parser.add_argument(
        "--prune-folder", action="store_true", help="delete files in content/ that the database does not know"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="report orphan or missing chunks, files listed but not on disk (or on disk but not listed), a stale "
        "keyword index, wrong counts, unreadable stores; exit status 1 if anything is wrong",
    )
    parser.add_argument(
        "--repair",
        action="store_true",
        help="fix what --check reports: adopts or removes orphan chunks, forgets files gone from content/, "
        "ingests files not listed, re-embeds only chunks whose vectors are gone",
    )
    parser.add_argument("--json", action="store_true", help="with --check or --repair: print the report as JSON")
    parser.add_argument(
        "-n",
        "--kb-name",
        nargs="+",
        default=[],
        metavar="KB",
        help="only these knowledge bases (default: every folder under the knowledge base root)",
    )
    parser.add_argument(
        "-e",
        "--embed-model",
        default=None,
        metavar="MODEL",
        help="embedding model for the knowledge bases built (default: EMBEDDING_MODEL from settings)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes that parse files in parallel (default: INGEST_WORKERS, 0 = one per core)",
    )
    parser.add_argument(
        "--vs-type",
        choices=vs_types(),
        default=None,
        help="store type of the knowledge bases this run creates (default: DEFAULT_VS_TYPE from settings)",
    )
    parser.add_argument(
        "--migrate-kb",
        metavar="KB",
        help="copy a knowledge base's vectors, texts and metadata into the store type --to names (nothing is "
        "embedded again), check the counts, then switch the knowledge base to it",
    )
    parser.add_argument("--to", dest="to_vs_type", choices=vs_types(), help="the store type --migrate-kb moves to")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return parser  # fmt: skip


class ProgressBars:
    """A bar for files and one for embedded chunks, fed by the service's progress events."""

    def __init__(self, kb_name: str, total_files: int, quiet: bool):
        from tqdm import tqdm

        self.files = tqdm(total=total_files, desc=f"{kb_name}: files", unit="file", disable=quiet, position=0)
        self.chunks = tqdm(total=0, desc=f"{kb_name}: embedded", unit="chunk", disable=quiet, position=1)

    def __call__(self, event: str, payload) -> None:
        if event == "parsed":
            self.files.update(1)
            self.files.set_postfix_str(payload.file_name[-40:], refresh=False)
            self.chunks.total += len(payload.chunks)
            self.chunks.refresh()
        elif event == "embedded":
            self.chunks.update(payload)

    def close(self) -> None:
        self.files.close()
        self.chunks.close()


# What this script says, in the UI language (UI_LANGUAGE): (Chinese, English).
MESSAGES = {
    "summary": (
        "\n汇总：已导入 {ingested}/{files} 个文件，{chunks} 个分块，用时 {elapsed:.1f} 秒",
        "\nSummary: {ingested}/{files} files ingested, {chunks} chunks, in {elapsed:.1f} s",
    ),
    "kb_summary": (
        "  {kb}：{files} 个文件，{chunks} 个分块（读取 {load:.1f} 秒，切分 {split:.1f} 秒，"
        "向量化 {embed:.1f} 秒，复用 {reused} 个分块，{cached} 个来自入库缓存）",
        "  {kb}: {files} files, {chunks} chunks (load {load:.1f} s, split {split:.1f} s, "
        "embed {embed:.1f} s, {reused} chunks reused, {cached} from the ingest cache)",
    ),
    "failed": ("  失败 {kb}/{name}：{reason}", "  FAILED {kb}/{name}: {reason}"),
    "duplicate": (
        "  重复 {kb}/{name}：与 {original} 内容相同，只入库一次",
        "  DUPLICATE {kb}/{name}: same content as {original}, ingested once",
    ),
    "loading_embeddings": ("正在加载向量模型 {name} …", "loading the embedding model {name} ..."),
    "loaded_embeddings": ("向量模型已加载（{seconds:.1f} 秒）", "embedding model loaded in {seconds:.1f} s"),
    "check_kb": ("{kb}：{n} 处不一致", "{kb}: {n} problem(s)"),
    "still_wrong": ("  修复后仍有问题 [{kind}] {name} {detail}", "  STILL WRONG [{kind}] {name} {detail}"),
    "run_repair": (
        "运行 `python init_database.py --repair` 修复",
        "run `python init_database.py --repair` to fix these",
    ),
    "total_time": ("总计用时： {seconds:.1f} s", "Total time: {seconds:.1f} s"),
}


def message(key: str, **values) -> str:
    from configs import in_ui_language

    return in_ui_language(*MESSAGES[key]).format(**values)


def announce_embedding_model_loads() -> None:
    """Say when the embedding model's weights load: several seconds in which no bar moves. They load
    only when something must be embedded, so a rebuild served from the ingest cache never waits for them."""
    from tqdm import tqdm

    from server.knowledge_base.embeddings import local

    def say(event: str, name: str, seconds: float = 0.0) -> None:
        text = (
            message("loading_embeddings", name=name)
            if event == "loading"
            else message("loaded_embeddings", seconds=seconds)
        )
        tqdm.write(text)

    local.LOAD_LISTENERS.append(say)


def print_summary(reports, elapsed: float) -> None:
    files = sum(len(r.files) for r in reports)
    ingested = sum(r.ingested for r in reports)
    chunks = sum(r.chunks for r in reports)
    print(message("summary", ingested=ingested, files=files, chunks=chunks, elapsed=elapsed))
    for report in reports:
        if report.files:
            print(
                message(
                    "kb_summary",
                    kb=report.kb_name,
                    files=report.ingested,
                    chunks=report.chunks,
                    load=report.load_seconds,
                    split=report.split_seconds,
                    embed=report.embed_seconds,
                    reused=report.reused_chunks,
                    cached=report.cached_chunks,
                )
            )
        for name, reason in report.failed.items():
            print(message("failed", kb=report.kb_name, name=name, reason=reason))
        for name, original in report.duplicates.items():
            print(message("duplicate", kb=report.kb_name, name=name, original=original))


def check_or_repair(kb_names: list[str], *, repair: bool, as_json: bool) -> int:
    """Print what disagrees (and what a repair did); 1 when something is (still) wrong."""
    from server.knowledge_base import consistency

    reports = consistency.check_all(kb_names or None, repair=repair)
    if as_json:
        print(json.dumps([report.to_dict() for report in reports], ensure_ascii=False, indent=2))
    for report in [] if as_json else reports:
        print(message("check_kb", kb=report.kb_name, n=len(report.problems)))
        for problem in report.problems:
            where = f" {problem.file_name}" if problem.file_name else ""
            chunks = f" ({problem.chunks})" if problem.chunks else ""
            print(f"  [{problem.kind}]{where}{chunks}: {problem.describe()} -> {problem.action_text()}")
        for problem in report.remaining or []:
            print(message("still_wrong", kind=problem.kind, name=problem.file_name, detail=problem.detail))
    if not repair and not as_json and any(report.problems for report in reports):
        print(message("run_repair"))
    return 0 if all(report.ok for report in reports) else 1


def portable_action(args) -> int:
    """--export or --import; a refused archive or a taken name is a one-line error (exit status 2)."""
    from server.knowledge_base import portable, service
    from server.knowledge_base.embeddings import UnknownEmbeddingModel
    from server.knowledge_base.paths import UnsafeName

    try:
        if args.export:
            kb_name, destination = args.export
            manifest = portable.export_kb(kb_name, Path(destination))
            print(f"exported {kb_name}: {len(manifest['files'])} files, {manifest['chunks']} chunks -> {destination}")
            return 0
        name = args.kb_name[0] if args.kb_name else None
        with open(args.import_archive, "rb") as archive:
            result = portable.import_kb(archive, name, args.embed_model)
    except service.KnowledgeBaseNotFound as exc:
        print(f"error: no knowledge base named {exc}", file=sys.stderr)
        return 2
    except service.KnowledgeBaseExists as exc:
        print(f"error: a knowledge base named {exc} exists already: import it with -n ANOTHER_NAME", file=sys.stderr)
        return 2
    except (portable.ArchiveRefused, UnsafeName, UnknownEmbeddingModel, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for warning in result.warnings:
        print(f"warning: {warning}")
    print(
        f"imported {result.kb_name}: {result.files} files, {result.chunks} chunks, {result.content_files} files "
        f"in content/, embedding model {result.embed_model}"
        f"{' (embedded again)' if result.reembedded else ' (vectors kept)'} in {result.seconds:.1f} s"
    )
    return 0


def maintenance_actions(args) -> list:
    """The actions that change knowledge bases in bulk (--check/--repair run only without them)."""
    return [
        args.migrate_kb, args.recreate_vs, args.import_db, args.update_in_db, args.increment, args.prune_db,
        args.prune_folder,
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    actions = [*maintenance_actions(args), args.repair, args.check, args.export, args.import_archive]
    if not any(actions) and not (args.create_tables or args.clear_tables):
        build_parser().print_help()
        return 0

    from server.knowledge_base.vector_stores import StoreSettingsError, StoreUnavailable

    try:
        return run(args)
    except (StoreSettingsError, StoreUnavailable) as exc:  # a wrong KBS_CONFIG or a store server down
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run(args) -> int:
    from configs import get_settings
    from server.db.engine import create_tables, drop_tables
    from server.knowledge_base import migrate, paths, service

    settings = get_settings()
    started = time.perf_counter()
    if args.clear_tables:
        drop_tables()
        print("database tables reset")
    create_tables()
    if args.create_tables:
        print(f"database tables ready at {settings.database_url}")

    if args.export or args.import_archive:
        return portable_action(args)
    if (args.check or args.repair) and not any(maintenance_actions(args)):
        return check_or_repair(args.kb_name, repair=args.repair, as_json=args.json)
    kb_names = args.kb_name or paths.list_kb_folders()
    for name in kb_names:
        paths.validate_kb_name(name)
    reports = []
    if args.migrate_kb:
        if not args.to_vs_type:
            print("error: --migrate-kb needs --to VS_TYPE", file=sys.stderr)
            return 2
        copied = migrate.move_kb(args.migrate_kb, args.to_vs_type)
        counts = ", ".join(f"{store} {count} chunks" for store, count in copied.items())
        print(f"{args.migrate_kb}: moved to {args.to_vs_type} ({counts})")
    elif args.recreate_vs or args.update_in_db or args.increment:
        mode = "recreate_vs" if args.recreate_vs else "update_in_db" if args.update_in_db else "increment"
        options = service.default_chunking()
        if args.workers is not None:
            settings.INGEST_WORKERS = args.workers
        announce_embedding_model_loads()
        for kb_name in kb_names:
            if args.vs_type and not service.kb_exists(kb_name):
                service.create_kb(kb_name, args.vs_type, args.embed_model)
            total = len(paths.list_content_files(kb_name))
            bars = ProgressBars(kb_name, total, args.quiet)
            try:
                reports.append(migrate.MODES[mode](kb_name, args.embed_model, options, bars))
            finally:
                bars.close()
        print_summary(reports, time.perf_counter() - started)
    elif args.import_db:
        copied = migrate.import_db(Path(args.import_db))
        print("imported rows: " + ", ".join(f"{table} {count}" for table, count in copied.items()))
    elif args.prune_db:
        for kb_name in kb_names:
            print(f"{kb_name}: forgot {len(migrate.prune_db(kb_name))} deleted files")
    elif args.prune_folder:
        for kb_name in kb_names:
            print(f"{kb_name}: deleted {len(migrate.prune_folder(kb_name))} unknown files")
    print(message("total_time", seconds=time.perf_counter() - started))
    return 1 if any(r.failed for r in reports) and not any(r.ingested for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
