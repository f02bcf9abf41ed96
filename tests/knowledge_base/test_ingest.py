"""Parsing files in worker processes gives the same chunks as in-process, and a broken file fails alone."""

from __future__ import annotations

from server.knowledge_base.ingest import MIN_FILES_FOR_POOL, ParseTask, parse_files
from server.knowledge_base.service import default_chunking


def _tasks(folder) -> list[ParseTask]:
    options = default_chunking(chunk_size=120, chunk_overlap=20)
    names = {f"note{i}.md": f"# Note {i}\n\n" + f"Line {i} of the notebook. " * 30 for i in range(MIN_FILES_FOR_POOL)}
    for name, text in names.items():
        (folder / name).write_text(text, encoding="utf-8")
    (folder / "broken.txt").write_bytes(b"\x00\x01\x02\x03")
    return [ParseTask(path.name, str(path), options) for path in sorted(folder.iterdir())]


def test_worker_pool_matches_in_process_parsing(tmp_path):
    tasks = _tasks(tmp_path)
    in_process = {parsed.file_name: parsed for parsed in parse_files(tasks, workers=1)}
    pooled = {parsed.file_name: parsed for parsed in parse_files(tasks, workers=2)}

    assert set(pooled) == set(in_process) == {task.file_name for task in tasks}
    for name, parsed in in_process.items():
        assert pooled[name].chunks == parsed.chunks
        assert pooled[name].error == parsed.error
    assert "binary" in pooled["broken.txt"].error
    assert all(len(parsed.chunks) > 1 for name, parsed in pooled.items() if name != "broken.txt")
