"""init_database.py as users run it: every mode, in a child process, on a throw-away data root."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.processes import REPO_ROOT, child_env

FLAGS = [
    "--recreate-vs",
    "--create-tables",
    "--clear-tables",
    "--import-db",
    "--update-in-db",
    "--increment",
    "--prune-db",
    "--prune-folder",
    "--kb-name",
    "--embed-model",
]


def run_cli(data_root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "init_database.py"), "-q", *args],
        env=child_env(data_root),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def db_rows(data_root: Path, sql: str, *params) -> list[tuple]:
    with sqlite3.connect(data_root / "knowledge_base" / "info.db") as connection:
        return connection.execute(sql, params).fetchall()


def file_names(data_root: Path, kb: str) -> set[str]:
    return {row[0] for row in db_rows(data_root, "SELECT file_name FROM knowledge_file WHERE kb_name = ?", kb)}


@pytest.fixture
def data_root(tmp_path) -> Path:
    content = tmp_path / "knowledge_base" / "ops" / "content"
    (content / "runbooks").mkdir(parents=True)
    (content / "alpha.md").write_text("# Alpha\n\nThe alpha service listens on port 4100.\n", encoding="utf-8")
    (content / "runbooks" / "backup.txt").write_text("Backups run every night at 02:00.\n", encoding="utf-8")
    (content / "broken.txt").write_bytes(b"\x00\x01\x02 not text")
    return tmp_path


def test_no_flag_prints_help_naming_every_mode(tmp_path):
    result = run_cli(tmp_path)
    assert result.returncode == 0
    for flag in FLAGS:
        assert flag in result.stdout


def test_bundled_samples_build_with_summary(tmp_path):
    shutil.copytree(REPO_ROOT / "knowledge_base" / "samples", tmp_path / "knowledge_base" / "samples")
    result = run_cli(tmp_path, "--recreate-vs")
    assert result.returncode == 0, result.stderr
    total = len([p for p in (tmp_path / "knowledge_base" / "samples" / "content").rglob("*") if p.is_file()])
    assert f"汇总：已导入 {total}/{total} 个文件" in result.stdout
    assert "总计用时" in result.stdout
    assert file_names(tmp_path, "samples") >= {"faq.csv", "support_notice.png", "guides/quickstart.md"}


def test_recreate_reports_the_broken_file_and_keeps_the_rest(data_root):
    result = run_cli(data_root, "--recreate-vs", "-n", "ops")
    assert result.returncode == 0, result.stderr
    assert "汇总：已导入 2/3 个文件" in result.stdout
    assert "失败 ops/broken.txt：binary content" in result.stdout
    assert file_names(data_root, "ops") == {"alpha.md", "runbooks/backup.txt"}


def test_output_is_in_the_ui_language_and_says_when_the_embedding_model_loads(data_root):
    env = child_env(data_root, CHATCHAT_UI_LANGUAGE="en")
    args = [sys.executable, str(REPO_ROOT / "init_database.py"), "--recreate-vs", "-n", "ops"]
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.index("loading the embedding model all-MiniLM-L6-v2 ...") < out.index("embedding model loaded in")
    assert out.index("embedding model loaded in") < out.index("Summary: 2/3 files ingested")
    assert "FAILED ops/broken.txt: binary content" in out and "Total time:" in out
    assert not any("\u4e00" <= ch <= "\u9fff" for ch in out), out  # no Chinese line in the English output
    # the bars are on stderr; the loading lines above say why they wait while the weights load
    assert "ops: files" in result.stderr


def test_prune_db_forgets_deleted_files_and_prune_folder_keeps_failed_ones(data_root):
    assert run_cli(data_root, "--recreate-vs").returncode == 0
    content = data_root / "knowledge_base" / "ops" / "content"
    (content / "alpha.md").unlink()
    (content / "stray.md").write_text("Never ingested.", encoding="utf-8")

    assert run_cli(data_root, "--prune-db", "-n", "ops").returncode == 0
    assert file_names(data_root, "ops") == {"runbooks/backup.txt"}
    chunk_files = {row[0] for row in db_rows(data_root, "SELECT DISTINCT file_name FROM file_doc")}
    assert chunk_files == {"runbooks/backup.txt"}

    assert run_cli(data_root, "--prune-folder", "-n", "ops").returncode == 0
    assert not (content / "stray.md").exists()
    assert (content / "broken.txt").exists()  # a failed file is the user's to fix, not to lose
    assert (content / "runbooks" / "backup.txt").exists()


def test_update_in_db_and_increment(data_root):
    assert run_cli(data_root, "--recreate-vs").returncode == 0
    content = data_root / "knowledge_base" / "ops" / "content"
    (content / "alpha.md").write_text("# Alpha\n\nAlpha moved to port 4200.\n\nIt restarts weekly.\n", "utf-8")
    (content / "gamma.md").write_text("Gamma is new.", encoding="utf-8")

    assert run_cli(data_root, "-u", "-n", "ops").returncode == 0
    assert "gamma.md" not in file_names(data_root, "ops")  # -u touches only files the DB knows
    metadata = db_rows(data_root, "SELECT file_version FROM knowledge_file WHERE file_name = 'alpha.md'")
    assert metadata == [(2,)]

    result = run_cli(data_root, "-i", "-n", "ops")
    assert result.returncode == 0
    assert "gamma.md" in file_names(data_root, "ops")


def test_clear_tables_then_import_db_restores_records(data_root, tmp_path_factory):
    assert run_cli(data_root, "--recreate-vs").returncode == 0
    backup = tmp_path_factory.mktemp("backup") / "info.db"
    shutil.copy(data_root / "knowledge_base" / "info.db", backup)

    assert run_cli(data_root, "--clear-tables").returncode == 0
    assert file_names(data_root, "ops") == set()

    result = run_cli(data_root, "--import-db", str(backup))
    assert result.returncode == 0, result.stderr
    assert file_names(data_root, "ops") == {"alpha.md", "runbooks/backup.txt"}
    assert db_rows(data_root, "SELECT count(*) FROM file_doc")[0][0] >= 2
