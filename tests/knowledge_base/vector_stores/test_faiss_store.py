"""The FAISS store: scores, deletes, atomic saves that write only the change, a kill in the middle of a
save, snapshots, catching up with another process, and stores saved in the layout before SQLite."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from contextlib import closing

import faiss
import numpy as np
import pytest

from server.knowledge_base.vector_stores import FaissStore, StoreCorrupted, StoredChunk, VectorStoreCache, faiss_store
from server.knowledge_base.vector_stores.faiss_store import read_generation

DIM = 8


def unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


def make_store(n: int, source: str = "a.txt") -> FaissStore:
    store = FaissStore(DIM)
    chunks = [StoredChunk("", f"text {i}", {"source": source, "i": i}) for i in range(n)]
    store.add(chunks, np.stack([unit(i) for i in range(n)]))
    return store


def test_scores_are_half_one_minus_cosine_and_threshold_filters():
    store = make_store(5)
    hits = store.search(unit(2), top_k=5, score_threshold=1.0)
    assert hits[0].chunk.page_content == "text 2"
    assert hits[0].score == pytest.approx(0.0, abs=1e-6)
    assert len(hits) == 5
    for hit in hits:
        cosine = float(unit(2) @ unit(hit.chunk.metadata["i"]))
        assert hit.score == pytest.approx((1 - cosine) / 2, abs=1e-5)
    strict = store.search(unit(2), top_k=5, score_threshold=0.01)
    assert [h.chunk.page_content for h in strict] == ["text 2"]


def test_top_k_limits_hits():
    assert len(make_store(10).search(unit(0), top_k=3)) == 3


def test_delete_by_source_removes_exactly_that_file():
    store = make_store(4, "a.txt")
    store.add([StoredChunk("", "other", {"source": "b.txt"})], unit(99).reshape(1, -1))
    removed = store.delete(store.ids_for_source("a.txt"))
    assert removed == 4 and len(store) == 1 and store.index.ntotal == 1
    assert store.search(unit(0), top_k=5)[0].chunk.metadata["source"] == "b.txt"


def test_texts_and_vectors_of_some_sources_survive_deletes_and_respect_the_limit():
    store = make_store(4, "a.txt")
    store.add([StoredChunk("", "other", {"source": "b.txt"})], unit(99).reshape(1, -1))
    store.delete(store.ids_for_source("a.txt")[:1])  # ids and positions no longer line up
    texts, vectors = store.texts_and_vectors({"a.txt"})
    assert texts == ["text 1", "text 2", "text 3"]
    np.testing.assert_allclose(vectors, np.stack([unit(1), unit(2), unit(3)]), atol=1e-6)
    texts, vectors = store.texts_and_vectors({"a.txt", "b.txt"}, limit=2)
    assert len(texts) == 2 and vectors.shape == (2, DIM)
    assert store.texts_and_vectors({"missing.txt"})[1].shape == (0, DIM)


def test_save_and_load_round_trip(tmp_path):
    store = make_store(6)
    store.delete(store.ids_for_source("a.txt")[:2])
    store.save(tmp_path)
    loaded = FaissStore.load(tmp_path)
    assert len(loaded) == 4 and loaded.index.ntotal == 4
    assert loaded.search(unit(5), top_k=1)[0].chunk.page_content == "text 5"
    new_ids = loaded.add([StoredChunk("", "new", {"source": "c"})], unit(50).reshape(1, -1))
    assert loaded.search(unit(50), top_k=1)[0].chunk.doc_id == new_ids[0]
    # The per-file lookup is rebuilt on load and follows later changes.
    assert loaded.ids_for_source("a.txt") == store.ids_for_source("a.txt") and len(loaded.ids_for_source("a.txt")) == 4
    assert loaded.ids_for_source("c") == new_ids
    loaded.delete(new_ids)
    assert loaded.ids_for_source("c") == []


def texts(store: FaissStore) -> list[str]:
    return sorted(chunk.page_content for chunks, _ in store.export() for chunk in chunks)


def test_no_pickle_files_are_written(tmp_path):
    make_store(3).save(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert not any(name.endswith(".pkl") for name in names)
    # WAL mode: the -wal and -shm files live beside the database while it is open
    assert [n for n in names if not n.startswith(f"{faiss_store.DB_FILE}-")] == ["CURRENT", faiss_store.DB_FILE]


def test_each_save_is_one_seq_and_at_most_one_snapshot_is_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(faiss_store, "SNAPSHOT_MIN_CHANGES", 3)
    store = make_store(2)
    store.save(tmp_path)
    assert read_generation(tmp_path) == 1 and snapshots(tmp_path) == []  # 2 changes: rows are enough
    store.add([StoredChunk("", f"x{i}", {"source": "b"}) for i in range(2)], np.stack([unit(7), unit(8)]))
    store.delete(store.ids_for_source("a.txt")[:1])
    store.save(tmp_path)
    assert read_generation(tmp_path) == 2 and snapshots(tmp_path) == ["index.2.faiss"]
    assert removed_rows(tmp_path) == 0  # the snapshot covers the tombstones
    store.delete(store.ids_for_source("b"))
    store.save(tmp_path)
    assert snapshots(tmp_path) == ["index.2.faiss"] and removed_rows(tmp_path) == 2
    for _ in range(2):
        store.add([StoredChunk("", "y", {"source": "c"})], unit(9).reshape(1, -1))
        store.save(tmp_path)
    assert read_generation(tmp_path) == 5 and snapshots(tmp_path) == ["index.5.faiss"]
    loaded = FaissStore.load(tmp_path)
    assert texts(loaded) == texts(store) == ["text 1", "y", "y"] and loaded.index.ntotal == 3


def snapshots(folder) -> list[str]:
    return sorted(p.name for p in folder.glob("index.*.faiss"))


def removed_rows(folder) -> int:
    with closing(sqlite3.connect(folder / faiss_store.DB_FILE)) as db:
        return db.execute("SELECT count(*) FROM removed").fetchone()[0]


def test_an_unreadable_database_raises_a_clear_error(tmp_path):
    store = make_store(2)
    store.save(tmp_path)
    store.discard()
    for path in tmp_path.glob(f"{faiss_store.DB_FILE}*"):
        path.write_bytes(b"garbage" * 1000)
    with pytest.raises(StoreCorrupted, match="cannot be read"):
        FaissStore.load(tmp_path)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other dimension"])
def test_a_bad_snapshot_is_ignored_and_the_index_rebuilt_from_the_rows(tmp_path, monkeypatch, damage):
    monkeypatch.setattr(faiss_store, "SNAPSHOT_MIN_CHANGES", 3)
    store = make_store(6)
    store.save(tmp_path)
    (snapshot,) = tmp_path.glob("index.*.faiss")
    if damage == "garbage":
        snapshot.write_bytes(b"garbage")
    elif damage == "truncated":
        snapshot.write_bytes(snapshot.read_bytes()[:100])
    else:
        snapshot.write_bytes(faiss.serialize_index(faiss.IndexIDMap2(faiss.IndexFlatIP(DIM + 1))).tobytes())
    loaded = FaissStore.load(tmp_path)
    assert loaded.index.ntotal == 6 and texts(loaded) == texts(store)
    assert loaded.search(unit(4), top_k=1)[0].chunk.page_content == "text 4"


def test_a_snapshot_that_disagrees_with_the_rows_is_not_trusted(tmp_path, monkeypatch):
    """A snapshot left from an older state (here: one with every vector twice) is caught by the count."""
    monkeypatch.setattr(faiss_store, "SNAPSHOT_MIN_CHANGES", 3)
    store = make_store(4)
    store.save(tmp_path)
    (snapshot,) = tmp_path.glob("index.*.faiss")
    index = faiss.deserialize_index(np.frombuffer(snapshot.read_bytes(), dtype=np.uint8))
    index.add_with_ids(np.stack([unit(20 + i) for i in range(4)]), np.arange(100, 104, dtype=np.int64))
    snapshot.write_bytes(faiss.serialize_index(index).tobytes())
    loaded = FaissStore.load(tmp_path)
    assert loaded.index.ntotal == 4 and loaded.search(unit(21), top_k=1)[0].chunk.page_content != "text 1"


def keyword_hits(store: FaissStore) -> list[list[tuple[str, float]]]:
    from server.knowledge_base.keyword_index import tokenize

    queries = ["text", "alpha beta", "gamma", "检索 知识库", "zebra"]
    return [
        sorted((chunk.page_content, round(score, 6)) for chunk, score in store.keyword_search(tokenize(q), 50))
        for q in queries
    ]


def worded_store(tmp_path, monkeypatch) -> FaissStore:
    """Saved with a keyword snapshot at its first save, then changed (adds, a delete, a replacement)."""
    monkeypatch.setattr(faiss_store, "SNAPSHOT_MIN_CHANGES", 5)
    words = ["alpha", "beta", "gamma", "检索", "知识库"]
    store = FaissStore(DIM)
    store.add([StoredChunk(f"d{i}", f"text {words[i % 5]} {words[i * 3 % 5]}", {"source": "a"}) for i in range(8)],
              np.stack([unit(i) for i in range(8)]))
    store.save(tmp_path)  # the snapshot: 8 changes
    store.add([StoredChunk("d8", "gamma gamma", {"source": "b"})], unit(8).reshape(1, -1))
    store.save(tmp_path)
    store.delete(["d1"])
    store.add([StoredChunk("d2", "zebra 检索", {"source": "a"}), StoredChunk("d9", "beta", {"source": "c"})],
              np.stack([unit(2), unit(9)]))
    store.save(tmp_path)  # 5 changes since the snapshot: replayed on top of it at load
    return store


def test_the_keyword_index_loads_from_its_snapshot_and_replays_the_changes_after_it(tmp_path, monkeypatch):
    store = worded_store(tmp_path, monkeypatch)
    assert sorted(p.name for p in tmp_path.glob("keywords.*.npz")) == ["keywords.1.npz"]
    monkeypatch.setattr(FaissStore, "_load_keywords", lambda self: pytest.fail("read every row's terms"))
    monkeypatch.setattr(FaissStore, "_rebuild_from_rows", lambda self: pytest.fail("did not trust the snapshot"))
    loaded = FaissStore.load(tmp_path)
    assert keyword_hits(loaded) == keyword_hits(store)
    assert [c.page_content for c, _ in loaded.keyword_search(["zebra"], 5)] == ["zebra 检索"]
    assert len(loaded.keywords) == len(loaded) == 9


@pytest.mark.parametrize("damage", ["missing", "garbage", "short postings", "other tokenizer"])
def test_a_missing_or_bad_keyword_snapshot_is_rebuilt_from_the_stored_terms(tmp_path, monkeypatch, damage):
    store = worded_store(tmp_path, monkeypatch)
    expected = keyword_hits(store)
    store.discard()
    (snapshot,) = tmp_path.glob("keywords.*.npz")
    if damage == "missing":  # saved by a version before keyword snapshots
        snapshot.unlink()
    elif damage == "garbage":
        snapshot.write_bytes(b"PK\x03\x04 not really a zip")
    else:
        with np.load(snapshot) as saved:
            arrays = dict(saved)
        if damage == "short postings":
            arrays["counts"] = arrays["counts"][:-2]
        else:
            arrays["tokenizer"] = arrays["tokenizer"] + 1
        with open(snapshot, "wb") as handle:
            np.savez(handle, **arrays)
    loaded = FaissStore.load(tmp_path)
    assert keyword_hits(loaded) == expected
    monkeypatch.setattr(faiss_store, "SNAPSHOT_MIN_CHANGES", 100)  # not due by the count of changes
    loaded.add([StoredChunk("d10", "alpha", {"source": "d"})], unit(10).reshape(1, -1))
    loaded.save(tmp_path)  # a store without a usable keyword snapshot writes both at its next save
    assert sorted(p.name for p in tmp_path.glob("*.faiss")) == ["index.4.faiss"]
    assert sorted(p.name for p in tmp_path.glob("keywords.*.npz")) == ["keywords.4.npz"]
    assert keyword_hits(FaissStore.load(tmp_path)) == keyword_hits(loaded)


KILLER = textwrap.dedent(
    """
    import sys, numpy as np
    sys.path.insert(0, {repo!r})
    from server.knowledge_base.vector_stores import FaissStore, StoredChunk
    from pathlib import Path
    folder = Path({folder!r})
    store = FaissStore.load(folder)
    rng = np.random.default_rng(0)
    print("ready", flush=True)
    while True:  # save bigger and bigger generations until killed
        vectors = rng.normal(size=(2000, 64)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store.add([StoredChunk("", "x" * 200, {{"source": "big"}}) for _ in range(2000)], vectors)
        store.save(folder)
    """
)


@pytest.mark.parametrize("delay", [0.3, 0.6, 0.9, 1.2])
def test_kill_during_save_leaves_a_loadable_store(tmp_path, delay):
    from tests.conftest import REPO_ROOT

    seed = FaissStore(64)
    vectors = np.eye(64, dtype=np.float32)[:3]
    seed.add([StoredChunk("", f"seed {i}", {"source": "seed"}) for i in range(3)], vectors)
    seed.save(tmp_path)
    script = KILLER.format(repo=str(REPO_ROOT), folder=str(tmp_path))
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert process.stdout.readline().strip() == b"ready"
    time.sleep(delay)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    loaded = FaissStore.load(tmp_path)  # must not raise
    assert loaded.index.ntotal == len(loaded)
    assert len(loaded) >= 3 and (len(loaded) - 3) % 2000 == 0
    assert {c.page_content for c in loaded.get(loaded.ids_for_source("seed"))} == {"seed 0", "seed 1", "seed 2"}
    # The keyword index of the same generation came with it: the same chunks, nothing rebuilt.
    assert not loaded.keywords_rebuilt and len(loaded.keywords) == len(loaded)
    assert len(loaded.keyword_search(["seed"], 10)) == 3


def test_cache_evicts_least_recently_used_and_saves_unsaved_changes(tmp_path):
    cache = VectorStoreCache(capacity=1)
    folder_a, folder_b = tmp_path / "a", tmp_path / "b"
    with cache.write(("a", "m"), folder_a, DIM, save=False) as store:
        store.add([StoredChunk("", "kept", {"source": "s"})], unit(1).reshape(1, -1))
    assert read_generation(folder_a) == 0  # not saved yet
    with cache.read(("b", "m"), folder_b, DIM):
        pass
    assert cache.keys() == [("b", "m")]
    assert read_generation(folder_a) == 1  # saved on eviction
    with cache.read(("a", "m"), folder_a, DIM) as store:
        assert texts(store) == ["kept"]


def test_cache_reloads_a_store_saved_by_another_process(tmp_path):
    cache = VectorStoreCache(capacity=2)
    with cache.write(("a", "m"), tmp_path, DIM) as store:
        store.add([StoredChunk("", "first", {"source": "s"})], unit(1).reshape(1, -1))
    other = FaissStore.load(tmp_path)  # stands for another process
    other.add([StoredChunk("", "second", {"source": "t"})], unit(2).reshape(1, -1))
    other.save(tmp_path)
    with cache.read(("a", "m"), tmp_path, DIM) as store:
        assert texts(store) == ["first", "second"]


def test_failed_write_drops_half_applied_changes(tmp_path):
    cache = VectorStoreCache(capacity=1)
    with cache.write(("a", "m"), tmp_path, DIM) as store:
        store.add([StoredChunk("", "saved", {"source": "s"})], unit(1).reshape(1, -1))
    with pytest.raises(RuntimeError), cache.write(("a", "m"), tmp_path, DIM) as store:
        store.add([StoredChunk("", "half", {"source": "s"})], unit(2).reshape(1, -1))
        raise RuntimeError("embedding failed midway")
    with cache.read(("a", "m"), tmp_path, DIM) as store:
        assert texts(store) == ["saved"]


def bytes_written() -> int:
    """What this process has handed to write() so far (Linux): SQLite's pages, the WAL, snapshots, CURRENT."""
    with open("/proc/self/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("wchar:"))


def test_a_small_change_to_a_big_store_writes_a_small_delta(tmp_path):
    rng = np.random.default_rng(0)
    big = 10_000
    vectors = rng.normal(size=(big, DIM)).astype(np.float32)
    store = FaissStore(DIM)
    store.add([StoredChunk("", f"chunk number {i} " * 5, {"source": f"f{i // 20}"}) for i in range(big)], vectors)
    before = bytes_written()
    store.save(tmp_path)
    with closing(sqlite3.connect(tmp_path / faiss_store.DB_FILE)) as db:  # its pages, moved from the WAL
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # into the database: part of the first save's cost
    full_save = bytes_written() - before
    small = rng.normal(size=(10, DIM)).astype(np.float32)
    before = bytes_written()
    store.delete(store.ids_for_source("f7"))  # a file's chunks, re-ingested
    store.add([StoredChunk("", f"new chunk {i}", {"source": "new"}) for i in range(10)], small)
    store.save(tmp_path)
    delta = bytes_written() - before
    assert full_save > 3_000_000  # 10,000 rows of text, terms and vectors, written twice
    assert delta < full_save / 20, (delta, full_save)
    with closing(sqlite3.connect(tmp_path / faiss_store.DB_FILE)) as db:
        latest = db.execute("SELECT count(*) FROM chunks WHERE seq = ?", (store.generation,)).fetchone()[0]
        tombstones = db.execute("SELECT count(*) FROM removed WHERE seq = ?", (store.generation,)).fetchone()[0]
    assert (latest, tombstones) == (10, 20)
    assert len(FaissStore.load(tmp_path)) == big - 20 + 10


CRASHER = textwrap.dedent(
    """
    import os, sys, numpy as np
    sys.path.insert(0, {repo!r})
    from pathlib import Path
    from server.knowledge_base.vector_stores import FaissStore, StoredChunk, faiss_store
    folder, when = Path({folder!r}), {when!r}
    store = FaissStore.load(folder)
    store.add([StoredChunk("", "crash chunk", {{"source": "crash"}})], np.eye({dim}, dtype=np.float32)[:1])
    if when == "before commit":
        os._exit(3)
    faiss_store._write_durably = lambda path, data: os._exit(3)  # right after the SQLite commit
    store.save(folder)
    """
)


@pytest.mark.parametrize("when", ["before commit", "after commit"])
def test_a_process_dying_around_the_commit_leaves_the_last_committed_state(tmp_path, when):
    from tests.conftest import REPO_ROOT

    make_store(3).save(tmp_path)
    script = CRASHER.format(repo=str(REPO_ROOT), folder=str(tmp_path), when=when, dim=DIM)
    assert subprocess.run([sys.executable, "-c", script], check=False).returncode == 3
    loaded = FaissStore.load(tmp_path)
    committed = when == "after commit"
    assert loaded.ids_for_source("crash") != [] if committed else loaded.ids_for_source("crash") == []
    assert len(loaded) == loaded.index.ntotal == 3 + committed and len(loaded.keywords) == len(loaded)
    assert loaded.generation == 1 + committed and read_generation(tmp_path) == 1  # CURRENT is only a hint
    loaded.add([StoredChunk("", "after", {"source": "after"})], unit(40).reshape(1, -1))
    loaded.save(tmp_path)
    assert read_generation(tmp_path) == 2 + committed and len(FaissStore.load(tmp_path)) == 4 + committed


def test_another_processs_commits_are_caught_up_without_a_reload(tmp_path, monkeypatch):
    cache = VectorStoreCache(capacity=2)
    with cache.write(("a", "m"), tmp_path, DIM) as store:
        store.add(
            [StoredChunk("", f"mine {i}", {"source": "mine"}) for i in range(3)], np.stack([unit(i) for i in range(3)])
        )
    cached = store
    other = FaissStore.load(tmp_path)  # stands for another process (one really is, below)
    other.delete(other.ids_for_source("mine")[:1])
    other.add([StoredChunk("", "zebra", {"source": "theirs"})], unit(10).reshape(1, -1))
    other.save(tmp_path)
    monkeypatch.setattr(FaissStore, "load", lambda folder: pytest.fail("reloaded instead of catching up"))
    monkeypatch.setattr(FaissStore, "_build_memory", lambda self: pytest.fail("rebuilt instead of catching up"))
    with cache.read(("a", "m"), tmp_path, DIM) as store:
        assert store is cached and store.generation == other.generation
        assert texts(store) == ["mine 1", "mine 2", "zebra"] and store.index.ntotal == 3
        assert store.search(unit(10), top_k=1)[0].chunk.page_content == "zebra"
        assert [c.page_content for c, _ in store.keyword_search(["zebra"], 5)] == ["zebra"]
        assert len(store.keyword_search(["mine"], 5)) == 2 and len(store.keywords) == 3
    monkeypatch.undo()
    from tests.conftest import REPO_ROOT

    script = textwrap.dedent(
        f"""
        import sys, numpy as np
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from pathlib import Path
        from server.knowledge_base.vector_stores import FaissStore, StoredChunk
        store = FaissStore.load(Path({str(tmp_path)!r}))
        store.delete(store.ids_for_source("theirs"))
        store.add([StoredChunk("", "from a process", {{"source": "process"}})], np.eye({DIM}, dtype=np.float32)[:1])
        store.save(Path({str(tmp_path)!r}))
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    with cache.write(("a", "m"), tmp_path, DIM) as store:  # a writer catches up before it writes
        assert store is cached and texts(store) == ["from a process", "mine 1", "mine 2"]
        store.add([StoredChunk("", "mine again", {"source": "mine"})], unit(30).reshape(1, -1))
    assert texts(FaissStore.load(tmp_path)) == ["from a process", "mine 1", "mine 2", "mine again"]


def test_a_store_behind_pruned_tombstones_rebuilds_and_stays_right(tmp_path, monkeypatch):
    monkeypatch.setattr(faiss_store, "SNAPSHOT_MIN_CHANGES", 2)
    first = make_store(4)
    first.save(tmp_path)
    behind = FaissStore.load(tmp_path)
    first.delete(first.ids_for_source("a.txt")[:3])
    first.save(tmp_path)  # a snapshot: the tombstones are pruned
    assert removed_rows(tmp_path) == 0
    behind.refresh()
    assert texts(behind) == ["text 3"] and behind.index.ntotal == 1 and len(behind.keywords) == 1


def test_a_store_made_in_memory_replaces_what_its_folder_held(tmp_path):
    """A new store saved into a folder with a store (init_database.py --recreate-vs builds a fresh one)."""
    make_store(3, "old").save(tmp_path)
    reader = FaissStore.load(tmp_path)
    fresh = make_store(2, "new")
    fresh.save(tmp_path)
    assert read_generation(tmp_path) == 2 and texts(FaissStore.load(tmp_path)) == ["text 0", "text 1"]
    assert FaissStore.load(tmp_path).ids_for_source("old") == []
    reader.refresh()  # the ids were reused: the reader removes the old rows, then adds the new ones
    assert texts(reader) == ["text 0", "text 1"] and reader.ids_for_source("new") == fresh.ids_for_source("new")
    assert reader.index.ntotal == 2 and len(reader.keywords) == 2


def write_old_layout(folder, with_keywords: bool = True) -> list[str]:
    """A store as versions before store.sqlite saved it: generation 3, two chunks (one deleted before)."""
    folder.mkdir(parents=True, exist_ok=True)
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
    index.add_with_ids(np.stack([unit(1), unit(2)]), np.array([1, 2], dtype=np.int64))
    chunks = [
        {"id": "doc-one", "int_id": 1, "text": "otters hold hands", "metadata": {"source": "a.md", "page": 1}},
        {"id": "doc-two", "int_id": 2, "text": "badgers dig tunnels", "metadata": {"source": "b.md"}},
    ]
    docs = {"format": 1, "dimension": DIM, "next_id": 3, "chunks": chunks}
    (folder / "docs.3.json").write_text(json.dumps(docs), encoding="utf-8")
    (folder / "index.3.faiss").write_bytes(faiss.serialize_index(index).tobytes())
    if with_keywords:
        terms = {"1": {"otter": 1, "hold": 1, "hand": 1}, "2": {"badger": 1, "dig": 1, "tunnel": 1}}
        keywords = {"tokenizer": faiss_store.TOKENIZER_VERSION, "terms": terms}
        (folder / "keywords.3.json").write_text(json.dumps(keywords), encoding="utf-8")
    (folder / "CURRENT").write_text("3")
    return ["doc-one", "doc-two"]


@pytest.mark.parametrize("with_keywords", [True, False])
def test_a_store_in_the_old_layout_is_converted_at_first_load(tmp_path, with_keywords):
    ids = write_old_layout(tmp_path, with_keywords)
    cache = VectorStoreCache(capacity=1)
    with cache.read(("kb", "m"), tmp_path, DIM) as store:
        assert [c.metadata for c in store.get(ids)] == [{"source": "a.md", "page": 1}, {"source": "b.md"}]
        assert store.search(unit(2), top_k=1)[0].chunk.doc_id == "doc-two"
        assert [c.doc_id for c, _ in store.keyword_search(["badger"], 5)] == ["doc-two"]
        assert store.stale_keyword_ids() == []
    names = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    # Without saved keywords the terms were made on load and saved once more (seq 5).
    seq = 4 if with_keywords else 5
    assert [n for n in names if not n.startswith(f"{faiss_store.DB_FILE}-")] == [
        "CURRENT",
        f"index.{seq - (not with_keywords)}.faiss",
        faiss_store.DB_FILE,
    ]
    assert read_generation(tmp_path) == seq
    with cache.write(("kb", "m"), tmp_path, DIM) as store:
        new_ids = store.add([StoredChunk("", "cats purr", {"source": "c.md"})], unit(3).reshape(1, -1))
        store.delete(["doc-one"])
    loaded = FaissStore.load(tmp_path)
    assert sorted(c.doc_id for c in loaded.get(["doc-one", "doc-two", *new_ids])) == sorted(["doc-two", *new_ids])
    assert loaded.index.ntotal == 2 and loaded.search(unit(3), top_k=1)[0].chunk.page_content == "cats purr"


def test_a_broken_old_layout_store_is_reported_and_left_as_it_was(tmp_path):
    write_old_layout(tmp_path)
    (tmp_path / "docs.3.json").write_text("{broken", encoding="utf-8")
    with pytest.raises(StoreCorrupted, match="cannot be read"):
        FaissStore.load(tmp_path)
    assert not (tmp_path / faiss_store.DB_FILE).exists() and (tmp_path / "index.3.faiss").exists()


def test_a_writer_behind_another_processs_commit_catches_up_before_writing(tmp_path):
    make_store(2).save(tmp_path)
    first, second = FaissStore.load(tmp_path), FaissStore.load(tmp_path)
    second.add([StoredChunk("", "second's", {"source": "s"})], unit(20).reshape(1, -1))
    second.save(tmp_path)
    first.add([StoredChunk("", "first's", {"source": "f"})], unit(21).reshape(1, -1))  # no refresh in between
    first.save(tmp_path)
    assert texts(first) == texts(FaissStore.load(tmp_path)) == ["first's", "second's", "text 0", "text 1"]
    assert first.index.ntotal == 4 and first.generation == 3


def test_a_store_whose_folder_was_made_again_is_loaded_afresh(tmp_path):
    """delete_kb and create_kb in another process: the cached store's database file is gone."""
    import shutil

    cache = VectorStoreCache(capacity=1)
    for _ in range(2):
        with cache.write(("a", "m"), tmp_path, DIM) as store:
            store.add([StoredChunk("", "old", {"source": "old"})], unit(1).reshape(1, -1))
    shutil.rmtree(tmp_path)
    make_store(1, "new").save(tmp_path)  # seq 1: below what the cached store has seen
    with cache.read(("a", "m"), tmp_path, DIM) as store:
        assert texts(store) == ["text 0"] and store.generation == 1


def test_after_clear_a_rebuild_keeps_its_chunks_out_of_memory_until_the_first_read(tmp_path, monkeypatch):
    """A recreate (clear, then many adds and saves) writes rows only: the FAISS and keyword indexes stay
    empty, so its memory does not grow with the corpus; the first read builds them from the rows, with
    the same results as a store that indexed every add."""
    monkeypatch.setattr(faiss_store, "SNAPSHOT_MIN_CHANGES", 10)
    rebuilt = make_store(30, "old.txt")
    rebuilt.save(tmp_path)
    rebuilt.clear()
    eager = FaissStore(DIM)
    for batch in range(4):  # checkpoints: add, delete, save
        chunks = [StoredChunk(f"d{batch}-{i}", f"word{i % 3} batch{batch}", {"source": f"f{batch}"}) for i in range(25)]
        vectors = np.stack([unit(100 * batch + i) for i in range(25)])
        for store in (rebuilt, eager):
            store.add([StoredChunk(c.doc_id, c.page_content, c.metadata) for c in chunks], vectors)
            store.delete([f"d{batch}-0"])
        rebuilt.save(tmp_path)
        assert rebuilt.index.ntotal == 0 and len(rebuilt.keywords) == 0 and len(rebuilt) == 24 * (batch + 1)
    assert snapshots(tmp_path) == []  # none of the old rows' snapshot is kept, none made without indexes

    other = FaissStore.load(tmp_path)  # another process's commit while the indexes are not built
    other.add([StoredChunk("z", "zebra", {"source": "theirs"})], unit(999).reshape(1, -1))
    other.save(tmp_path)
    eager.add([StoredChunk("z", "zebra", {"source": "theirs"})], unit(999).reshape(1, -1))
    rebuilt.refresh()
    assert rebuilt.index.ntotal == 0

    for query in (1, 102, 303, 999):
        assert [(h.chunk.doc_id, round(h.score, 6)) for h in rebuilt.search(unit(query), 10)] == [
            (h.chunk.doc_id, round(h.score, 6)) for h in eager.search(unit(query), 10)
        ]
    assert rebuilt.index.ntotal == len(rebuilt) == 97
    for terms in (["word1"], ["batch2", "word0"], ["zebra"]):
        assert [(c.doc_id, round(s, 6)) for c, s in rebuilt.keyword_search(terms, 50)] == [
            (c.doc_id, round(s, 6)) for c, s in eager.keyword_search(terms, 50)
        ]
    rebuilt.add([StoredChunk("new", "after the first read", {"source": "n"})], unit(5).reshape(1, -1))
    rebuilt.save(tmp_path)  # the indexes are built again: the next save may snapshot them
    assert rebuilt.index.ntotal == 98 and len(snapshots(tmp_path)) == 1
    assert texts(FaissStore.load(tmp_path)) == texts(rebuilt)
