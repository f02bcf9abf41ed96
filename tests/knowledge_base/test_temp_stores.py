"""File chat's temporary indexes live on disk, shared by every API process: two registries on one folder stand
for two processes here (tests/chat/test_file_chat_two_servers.py runs two real API servers)."""

from __future__ import annotations

import os
import time

import pytest

from server.knowledge_base import service
from server.knowledge_base.temp_stores import TempStoreNotFound, TempStoreRegistry

FERRY = ("ferry.txt", b"The island ferry departs every 40 minutes from pier 9.")
BAKERY = ("bakery.txt", b"The bakery on Elm Street sells rye bread only on Saturdays.")


def sources(registry: TempStoreRegistry, temp_id: str, query: str) -> list[str]:
    return [hit.chunk.metadata["source"] for hit in registry.search(temp_id, query, 3, 1.0, "keyword")]


@pytest.fixture
def root(kb_root):
    return kb_root / ".temp_stores"


def test_an_upload_through_one_process_is_searchable_and_appendable_through_another(root):
    first, second = TempStoreRegistry(4, 600, root), TempStoreRegistry(4, 600, root)
    temp_id, failed = first.add_files([FERRY], service.default_chunking())
    assert failed == {}
    assert sources(second, temp_id, "ferry pier") == ["ferry.txt"]
    assert second.add_files([BAKERY], service.default_chunking(), prev_id=temp_id)[0] == temp_id
    # the first process's copy in memory is older than the disk's: it loads the new version
    assert set(sources(first, temp_id, "ferry bakery rye pier")) == {"ferry.txt", "bakery.txt"}
    versions = [p for p in (root / temp_id).iterdir() if p.is_dir()]
    assert len(versions) == 1  # older versions are removed once replaced


def test_hostile_or_unknown_ids_are_refused_and_touch_nothing(root, tmp_path):
    registry = TempStoreRegistry(4, 600, root)
    temp_id, _ = registry.add_files([FERRY], service.default_chunking())
    outside = tmp_path / "outside"
    (outside / "store").mkdir(parents=True)
    (outside / "meta.json").write_text('{"version": "store", "embed_model": "x", "files": []}')
    for hostile in ("../outside", str(outside), "..", "", temp_id.upper(), temp_id + "/..", "expired123"):
        with pytest.raises(TempStoreNotFound):
            registry.search(hostile, "ferry", 3, 1.0)
        assert hostile not in registry
    new_id, _ = registry.add_files([BAKERY], service.default_chunking(), prev_id="../outside")
    assert new_id != "../outside" and (root / new_id / "meta.json").is_file()
    assert sorted(p.name for p in outside.iterdir()) == ["meta.json", "store"]


def test_an_id_unused_for_the_ttl_expires_in_every_process(root):
    first, second = TempStoreRegistry(4, 30, root), TempStoreRegistry(4, 30, root)
    temp_id, _ = first.add_files([FERRY], service.default_chunking())
    kept_id, _ = first.add_files([BAKERY], service.default_chunking())
    assert sources(second, temp_id, "ferry") == ["ferry.txt"]  # now in both processes' memory
    old = time.time() - 31
    os.utime(root / temp_id / "meta.json", (old, old))  # last used 31 s ago, by any process
    second._swept_at = 0.0  # sweeps are rate-limited; this one is due
    with pytest.raises(TempStoreNotFound):
        second.search(temp_id, "ferry", 3, 1.0)
    assert not (root / temp_id).exists()
    with pytest.raises(TempStoreNotFound):  # the other process's copy in memory does not outlive the disk
        first.search(temp_id, "ferry", 3, 1.0)
    assert sources(first, kept_id, "bakery") == ["bakery.txt"]


def test_a_use_in_one_process_keeps_the_id_alive_for_the_others(root):
    first, second = TempStoreRegistry(4, 30, root), TempStoreRegistry(4, 30, root)
    temp_id, _ = first.add_files([FERRY], service.default_chunking())
    old = time.time() - 25
    os.utime(root / temp_id / "meta.json", (old, old))
    assert sources(second, temp_id, "ferry") == ["ferry.txt"]  # used: its clock starts again
    assert time.time() - (root / temp_id / "meta.json").stat().st_mtime < 5
