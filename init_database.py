"""Build and maintain knowledge bases from the files under knowledge_base/<kb>/content/.

Examples:
  python init_database.py --recreate-vs            rebuild every knowledge base from its files
  python init_database.py -i -n samples            add files new to content/ (resumes a killed run)
  python init_database.py --prune-db -n samples    forget files deleted from content/
  python init_database.py --migrate-kb samples --to milvus   move a knowledge base to another store
"""

from __future__ import annotations

import argparse
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
        "--update-in-db, --increment, --prune-db, --prune-folder (--migrate-kb before all). --create-tables and --clear-tables run first.",
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


def print_summary(reports, elapsed: float) -> None:
    files = sum(len(r.files) for r in reports)
    ingested = sum(r.ingested for r in reports)
    chunks = sum(r.chunks for r in reports)
    print(f"\nSummary: {ingested}/{files} files ingested, {chunks} chunks, in {elapsed:.1f} s")
    for report in reports:
        if report.files:
            print(
                f"  {report.kb_name}: {report.ingested} files, {report.chunks} chunks "
                f"(load {report.load_seconds:.1f} s, split {report.split_seconds:.1f} s, "
                f"embed {report.embed_seconds:.1f} s, {report.reused_chunks} chunks reused)"
            )
        for name, reason in report.failed.items():
            print(f"  FAILED {report.kb_name}/{name}: {reason}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    actions = [
        args.migrate_kb,
        args.recreate_vs,
        args.import_db,
        args.update_in_db,
        args.increment,
        args.prune_db,
        args.prune_folder,
    ]
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
    print(f"总计用时： {time.perf_counter() - started:.1f} s")
    return 1 if any(r.failed for r in reports) and not any(r.ingested for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
