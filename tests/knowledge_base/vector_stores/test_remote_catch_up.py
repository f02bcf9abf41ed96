"""Server stores (PostgreSQL/pgvector and Milvus Lite) keep up with other processes incrementally;
pgvector bulk-loads into HNSW and searches it as configured.

Two store objects on one table or collection stand for two API processes (each has its own
connection and its own in-memory keyword index). A foreign write must reach the other's keyword
index by reading only the changed rows, and leave it equal to a full rebuild's. Real PostgreSQL with
pgvector and real Milvus Lite (conftest.py).
"""

from __future__ import annotations

import numpy as np
import psycopg
import pytest

from server.knowledge_base.keyword_index import BM25Index, tokenize
from configs.settings import MilvusConfig
from server.knowledge_base.vector_stores import StoredChunk, milvus_store, pg_store
from server.knowledge_base.vector_stores.milvus_store import MilvusStore
from server.knowledge_base.vector_stores.pg_store import PgStore
from server.knowledge_base.vector_stores.remote import RemoteStore

DIMENSION = 8
TABLE = "chatkb_catch_up"
WORDS = ["apple", "banana", "cherry", "damson", "elder", "fig", "grape", "hazel", "iris", "juniper"]
QUERIES = ["apple banana", "cherry", "fig grape hazel", "juniper zebra", "kiwi"]


def chunks(start: int, count: int, extra: str = "") -> list[StoredChunk]:
    return [
        StoredChunk(
            f"c{i}", f"{WORDS[i % 10]} {WORDS[(i * 3) % 10]} {WORDS[(i * 7) % 10]} {extra}", {"source": f"f{i}"}
        )
        for i in range(start, start + count)
    ]


def vectors(count: int, seed: int) -> np.ndarray:
    found = np.random.default_rng(seed).normal(size=(count, DIMENSION)).astype(np.float32)
    return found / np.linalg.norm(found, axis=1, keepdims=True)


def write(store: RemoteStore, change) -> None:
    """One write block, as the cache runs it: catch up under the writers' lock, change, commit."""
    store.refresh(writing=True)
    change(store)
    store.save(None)


def keyword_results(store: RemoteStore) -> list[list[tuple[str, float]]]:
    return [
        [(chunk.doc_id, round(score, 6)) for chunk, score in store.keyword_search(tokenize(query), 100)]
        for query in QUERIES
    ]


@pytest.fixture
def pg_stores(pg_database):
    opened: list[PgStore] = []

    def open_store() -> PgStore:
        opened.append(PgStore(DIMENSION, pg_database, TABLE))
        return opened[-1]

    yield open_store
    for store in opened:
        store.discard()


@pytest.fixture(params=["pg", "milvus"])
def stores(request, tmp_path):
    """Opens store objects on one table (pg) or one Milvus Lite collection (milvus)."""
    opened: list[RemoteStore] = []

    def open_store() -> RemoteStore:
        if request.param == "pg":
            opened.append(PgStore(DIMENSION, request.getfixturevalue("pg_database"), TABLE))
        else:
            opened.append(MilvusStore(DIMENSION, MilvusConfig(), tmp_path, TABLE))
        return opened[-1]

    open_store.log_keep = (pg_store, "CHANGE_LOG_KEEP") if request.param == "pg" else (milvus_store, "LOG_KEEP")
    yield open_store
    for store in opened:
        store.discard()


def test_a_foreign_write_is_caught_up_from_the_changed_rows_only(stores, monkeypatch):
    # Removals are handed their terms (the deleted rows', logged with each deletion): the keyword index
    # keeps no chunk's terms, and never scans every term's postings to find them.
    monkeypatch.setattr(BM25Index, "_scan_terms", lambda self, slot: pytest.fail("scanned for a chunk's terms"))
    writer, reader = stores(), stores()
    write(writer, lambda s: s.add(chunks(0, 60), vectors(60, 1)))
    reader.refresh()
    assert (reader.full_rebuilds, reader.keyword_rows_read) == (1, 60)
    index = reader.keywords

    def change(store: RemoteStore) -> None:
        store.add(chunks(60, 3, "kiwi"), vectors(3, 2))  # 3 new
        store.delete(["c1", "c2", "c61"])  # 2 old and one of the new
        store.update_text("c5", "kiwi kiwi zebra", {"source": "f5"}, vectors(1, 3)[0])  # 1 replaced

    write(writer, change)
    reader.refresh()
    assert reader.full_rebuilds == 1  # no re-read of the 60 rows
    assert reader.keyword_rows_read == 60 + 3  # c60, c62 and the replaced c5
    assert reader.keywords is index and len(index) == 60 + 3 - 3 == len(reader)
    assert not index._doc_terms and not writer.keywords._doc_terms

    rebuilt = stores()
    rebuilt.refresh()
    assert rebuilt.full_rebuilds == 1
    assert keyword_results(reader) == keyword_results(rebuilt)
    found = {doc_id for hits in keyword_results(reader) for doc_id, _ in hits}
    assert keyword_results(reader)[4][0][0] == "c5" and {"c60", "c62"} <= found  # "kiwi": the new texts
    assert not found & {"c1", "c2", "c61"}

    # Nothing new: the next refresh reads nothing; the writer's own writes are not read back either.
    reader.refresh()
    writer.refresh()
    assert reader.keyword_rows_read == 63 and writer.keyword_rows_read == 0 and writer.full_rebuilds == 1


def test_a_clear_or_a_pruned_log_makes_the_others_rebuild_in_full(stores, monkeypatch):
    writer, reader = stores(), stores()
    write(writer, lambda s: s.add(chunks(0, 20), vectors(20, 1)))
    reader.refresh()

    def clear_and_refill(store: RemoteStore) -> None:
        store.clear()
        store.add(chunks(100, 5), vectors(5, 4))

    write(writer, clear_and_refill)
    reader.refresh()
    assert reader.full_rebuilds == 2 and len(reader.keywords) == 5
    assert keyword_results(reader) == keyword_results(writer)

    monkeypatch.setattr(*stores.log_keep, 3)  # the log keeps only the last 3 numbers
    write(writer, lambda s: s.delete(["c100"]))
    write(writer, lambda s: s.add(chunks(200, 5), vectors(5, 5)))
    reader.refresh()
    assert reader.full_rebuilds == 3  # its position is behind what the log still holds
    assert keyword_results(reader) == keyword_results(writer)
    assert "c100" not in {doc_id for hits in keyword_results(reader) for doc_id, _ in hits}


def index_exists(uri: str) -> bool:
    with psycopg.connect(uri) as connection:
        found = connection.execute("SELECT count(*) FROM pg_indexes WHERE indexname = %s", (f"{TABLE}_hnsw",))
        return found.fetchone()[0] == 1


def test_a_bulk_load_builds_the_index_once_before_its_commit(pg_stores, pg_database, monkeypatch):
    monkeypatch.setattr(pg_store, "BULK_LOAD_ROWS", 100)
    store = pg_stores()
    loaded = vectors(400, 7)

    def load(s: PgStore) -> None:
        for start in range(0, 400, 50):
            s.add(chunks(start, 50), loaded[start : start + 50])
        assert s._block.index_dropped  # built again at the commit

    write(store, load)
    assert index_exists(pg_database)
    exact = np.argsort(-(loaded @ loaded[:20].T), axis=0)[:5].T
    for query, best in zip(loaded[:20], exact, strict=True):
        assert [hit.chunk.doc_id for hit in store.search(query, 5)] == [f"c{i}" for i in best]

    # A block smaller than the table keeps the index; an abandoned bulk load leaves it as it was.
    write(store, lambda s: s.add(chunks(400, 150), vectors(150, 8)))
    assert not store._block.index_dropped and index_exists(pg_database)
    other = pg_stores()
    other.refresh(writing=True)
    other.clear()
    other.add(chunks(1000, 200), vectors(200, 9))
    assert other._block.index_dropped
    other.discard()  # rolled back: the rows and the index are as before
    assert index_exists(pg_database) and len(store) == 550


def full_scans(uri: str) -> int:
    """Sequential scans of the chunk table so far (pgvector's HNSW scans are not counted as index scans)."""
    with psycopg.connect(uri) as connection:
        found = connection.execute("SELECT seq_scan FROM pg_stat_user_tables WHERE relname = %s", (TABLE,))
        return found.fetchone()[0]


def test_searches_use_the_hnsw_index_once_the_table_is_analyzed(pg_database):
    """With chunk texts long enough to push vectors out of the row (TOAST), the planner preferred a full
    scan to HNSW once ANALYZE had counted the rows, and every search read every vector."""
    dimension, rows = 384, 6000  # where HNSW costs less than a full scan of vectors kept in the rows
    store = PgStore(dimension, pg_database, TABLE)
    try:
        loaded = np.random.default_rng(11).normal(size=(rows, dimension)).astype(np.float32)
        rng = np.random.default_rng(12)
        texts = [" ".join(rng.choice(WORDS, 200)) for _ in range(rows)]  # ~1.3 KB, compressing as prose does
        stored = [StoredChunk(f"c{i}", text, {"source": f"f{i % 60}"}) for i, text in enumerate(texts)]
        write(store, lambda s: s.add(stored, loaded))
        with psycopg.connect(pg_database, autocommit=True) as connection:
            connection.execute(f"ANALYZE {TABLE}")
        queries = loaded[:12]  # psycopg prepares a statement from its 6th run
        before = full_scans(pg_database)
        for query in queries:
            assert store.search(query, 50)[0].chunk.doc_id == f"c{loaded.tolist().index(query.tolist())}"
        store.connection.execute("SELECT pg_stat_force_next_flush()")  # the backend reports its statistics
        assert full_scans(pg_database) == before
    finally:
        store.discard()


def test_hnsw_settings_reach_the_index_and_the_session(pg_database, kb_root, monkeypatch):
    """KBS_CONFIG.pg's HNSW settings trade build and search time for recall on large tables: the graph's
    are in the index definition, ef_search is the session's, raised for a search asking for more rows
    (HNSW returns at most ef_search rows)."""
    from configs import reload_settings
    from server.knowledge_base.vector_stores import open_remote_store, store_name

    monkeypatch.setenv("CHATCHAT_KBS_CONFIG__PG__CONNECTION_URI", pg_database)
    monkeypatch.setenv("CHATCHAT_KBS_CONFIG__PG__EF_SEARCH", "300")
    monkeypatch.setenv("CHATCHAT_KBS_CONFIG__PG__HNSW_M", "24")
    monkeypatch.setenv("CHATCHAT_KBS_CONFIG__PG__HNSW_EF_CONSTRUCTION", "100")
    reload_settings()
    store = open_remote_store("pg", ("kb", "model"), kb_root, DIMENSION)
    try:
        write(store, lambda s: s.add(chunks(0, 20), vectors(20, 5)))
        with psycopg.connect(pg_database) as connection:
            index = f"{store_name(('kb', 'model'))}_hnsw"
            found = connection.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", (index,))
            definition = found.fetchone()[0].replace(" ", "")
        assert "(m='24',ef_construction='100')" in definition

        def ef_search_after_search(top_k: int) -> int:
            store.search(vectors(1, 6)[0], top_k)
            return int(store.connection.execute("SHOW hnsw.ef_search").fetchone()[0])

        assert ef_search_after_search(10) == 300
        assert ef_search_after_search(600) == 600
        assert ef_search_after_search(5) == 300
    finally:
        store.discard()


def test_a_milvus_store_from_before_the_change_log_is_rebuilt_once_then_caught_up(tmp_path):
    """Collections written before the log have a marker without a counter and rows numbered by the clock."""
    writer, reader = (MilvusStore(DIMENSION, MilvusConfig(), tmp_path, TABLE) for _ in range(2))
    try:
        write(writer, lambda s: s.add(chunks(0, 30), vectors(30, 1)))
        writer.client.upsert(writer.marker_name, [{"name": "marker", "marker": "a" * 32, "vector": [1.0, 0.0]}])
        reader.refresh()
        write(writer, lambda s: s.add(chunks(30, 5), vectors(5, 2)))  # numbered on from the clock
        reader.refresh()
        assert reader.full_rebuilds == 2  # the old marker told it no position
        write(writer, lambda s: (s.delete(["c3"]), s.add(chunks(40, 2, "kiwi"), vectors(2, 3))))
        reader.refresh()
        assert reader.full_rebuilds == 2 and reader.keyword_rows_read == 30 + 35 + 2
        # Equal scores may come in another order: the writer's index grew in another order.
        assert [sorted(hits) for hits in keyword_results(reader)] == [sorted(h) for h in keyword_results(writer)]
        assert writer.ids_for_source("f31") == ["c31"] and len(reader.keywords) == 36
    finally:
        writer.discard()
        reader.discard()


def test_milvus_writers_that_do_not_take_turns_make_every_reader_rebuild(tmp_path, caplog):
    """Writers must share the knowledge base's write lock; two that do not (a misconfiguration) number
    their rows from the same counter, which only a full rebuild survives: the second one says so."""
    first, second, reader = (MilvusStore(DIMENSION, MilvusConfig(), tmp_path, TABLE) for _ in range(3))
    try:
        write(first, lambda s: s.add(chunks(0, 10), vectors(10, 1)))
        reader.refresh()
        first.refresh(writing=True)
        second.refresh(writing=True)  # no lock between them: both begin from the same counter
        first.add(chunks(10, 3, "kiwi"), vectors(3, 2))
        second.delete(["c0"])
        second.add(chunks(20, 2, "fig"), vectors(2, 3))
        first.save(None)
        reader.refresh()  # now past the numbers the second writer is about to store
        with caplog.at_level("WARNING"):
            second.save(None)
        assert "written by another process" in caplog.text
        reader.refresh()
        assert reader.full_rebuilds == 2 and len(reader.keywords) == 10 + 3 - 1 + 2
        rebuilt = MilvusStore(DIMENSION, MilvusConfig(), tmp_path, TABLE)
        rebuilt.refresh()
        assert [sorted(h) for h in keyword_results(reader)] == [sorted(h) for h in keyword_results(rebuilt)]
        rebuilt.discard()
    finally:
        for store in (first, second, reader):
            store.discard()


def test_a_milvus_reader_skips_a_block_still_being_written_until_it_ends(tmp_path, monkeypatch):
    """Milvus has no snapshots: a reader reads only what the marker's counter covers, so it never holds
    half of a block, and every logged deletion it applies is of the version it holds (exact, no scan)."""
    monkeypatch.setattr(BM25Index, "_scan_terms", lambda self, slot: pytest.fail("scanned for a chunk's terms"))
    writer, reader = (MilvusStore(DIMENSION, MilvusConfig(), tmp_path, TABLE) for _ in range(2))
    try:
        write(writer, lambda s: s.add(chunks(0, 10), vectors(10, 1)))
        reader.refresh()
        write(writer, lambda s: s.add(chunks(10, 3, "kiwi"), vectors(3, 2)))
        writer.refresh(writing=True)  # the next block begins and is not done
        writer.delete(["c10"])
        writer.add(chunks(20, 1, "zebra"), vectors(1, 3))
        reader.refresh()
        found = {doc_id for hits in keyword_results(reader) for doc_id, _ in hits}
        assert "c20" not in found and {"c11", "c12"} <= found  # the finished block, not the open one
        writer.save(None)
        reader.refresh()
        assert reader.full_rebuilds == 1
        rebuilt = MilvusStore(DIMENSION, MilvusConfig(), tmp_path, TABLE)
        rebuilt.refresh()
        assert [sorted(h) for h in keyword_results(reader)] == [sorted(h) for h in keyword_results(rebuilt)]
        assert "c20" in {doc_id for hits in keyword_results(reader) for doc_id, _ in hits}
        rebuilt.discard()
    finally:
        writer.discard()
        reader.discard()
