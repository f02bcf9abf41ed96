"""Walks the Chatchat 0.2.x wire contract of the knowledge-base and server routes, over HTTP."""

from __future__ import annotations

import json
import math
import re

import pytest

from tests.api.helpers import create_kb, upload

SERVER_ENV = {"CHATCHAT_BING_SUBSCRIPTION_KEY": "bing-secret-value-123"}
KB = "compat_kb"

ANIMALS = (
    "Zebras live in Africa and have black and white stripes.\n\n"
    "Penguins cannot fly but they swim very well in cold water.\n\n"
    "Owls hunt at night and can turn their heads very far.\n\n"
    "Camels store fat in their humps and survive long trips through the desert.\n\n"
    "Dolphins are mammals that breathe air and communicate with clicks.\n"
)
COOKING = "# Bread\n\nKnead the dough for ten minutes, then let it rise for an hour.\n"


@pytest.fixture(scope="module")
def kb(client):
    create_kb(client, KB)
    answer = upload(
        client,
        KB,
        {"animals.txt": ANIMALS.encode(), "recipes/bread.md": COOKING.encode()},
        chunk_size=80,
        chunk_overlap=0,
    )
    assert answer == {"code": 200, "msg": "文件上传与向量化完成", "data": {"failed_files": {}}}
    return KB


def search(client, **body) -> list[dict]:
    response = client.post("/knowledge_base/search_docs", json={"knowledge_base_name": KB, **body})
    assert response.status_code == 200, response.text
    return response.json()


# ---- knowledge bases ---------------------------------------------------------------------------


def test_create_duplicate_and_blank_names(client, kb):
    answer = client.post("/knowledge_base/create_knowledge_base", json={"knowledge_base_name": "fresh_kb"}).json()
    assert answer == {"code": 200, "msg": "已新增知识库 fresh_kb", "data": None}
    answer = client.post("/knowledge_base/create_knowledge_base", json={"knowledge_base_name": "fresh_kb"}).json()
    assert answer["code"] == 404 and answer["msg"] == "已存在同名知识库 fresh_kb"
    for blank in ("", "   "):
        answer = client.post("/knowledge_base/create_knowledge_base", json={"knowledge_base_name": blank}).json()
        assert answer == {"code": 404, "msg": "知识库名称不能为空，请重新填写知识库名称", "data": None}
    listed = client.get("/knowledge_base/list_knowledge_bases").json()
    assert listed["code"] == 200 and {KB, "fresh_kb"} <= set(listed["data"])


def test_unknown_embed_model_and_store_type_are_refused(client):
    body = {"knowledge_base_name": "odd_kb", "embed_model": "/etc"}
    answer = client.post("/knowledge_base/create_knowledge_base", json=body).json()
    assert answer["code"] == 500 and answer["msg"].startswith("创建知识库出错： ")
    body = {"knowledge_base_name": "odd_kb", "vector_store_type": "es"}  # Chatchat's Elasticsearch: not offered
    answer = client.post("/knowledge_base/create_knowledge_base", json=body).json()
    assert answer["code"] == 500 and "es" in answer["msg"] and "milvus" in answer["msg"]  # names the supported
    assert "odd_kb" not in client.get("/knowledge_base/list_knowledge_bases").json()["data"]


def test_update_info(client, kb):
    body = {"knowledge_base_name": KB, "kb_info": "动物与面包"}
    assert client.post("/knowledge_base/update_info", json=body).json() == {
        "code": 200,
        "msg": "知识库介绍修改完成",
        "data": {"kb_info": "动物与面包"},
    }
    body["knowledge_base_name"] = "no_such_kb"
    assert client.post("/knowledge_base/update_info", json=body).json()["msg"] == "未找到知识库 no_such_kb"


def test_list_files_relative_to_content(client, kb):
    answer = client.get("/knowledge_base/list_files", params={"knowledge_base_name": KB}).json()
    assert answer["code"] == 200 and sorted(answer["data"]) == ["animals.txt", "recipes/bread.md"]
    answer = client.get("/knowledge_base/list_files", params={"knowledge_base_name": "no_such_kb"}).json()
    assert answer == {"code": 404, "msg": "未找到知识库 no_such_kb", "data": []}


# ---- search -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("top_k", [1, 2, 4])
def test_search_returns_exactly_top_k(client, kb, top_k):
    hits = search(client, query="animals", top_k=top_k)
    assert len(hits) == top_k
    scores = [hit["score"] for hit in hits]
    assert scores == sorted(scores) and all(0.0 <= s <= 1.0 for s in scores)
    for hit in hits:
        assert hit["type"] == "Document" and hit["id"] == hit["metadata"]["id"]
        assert hit["metadata"]["source"] in ("animals.txt", "recipes/bread.md")


def test_search_ranks_the_relevant_chunk_first(client, kb):
    assert "Penguins" in search(client, query="Which bird swims in cold water?", top_k=3)[0]["page_content"]
    assert "dough" in search(client, query="how long to knead bread dough", top_k=1)[0]["page_content"]


def test_search_threshold_filters_and_is_validated(client, kb):
    assert search(client, query="zebra stripes", top_k=10, score_threshold=0.0) == []
    assert len(search(client, query="zebra stripes", top_k=10, score_threshold=1.0)) >= 5
    response = client.post(
        "/knowledge_base/search_docs", json={"knowledge_base_name": KB, "query": "x", "score_threshold": 1.5}
    )
    assert response.status_code == 422 and "score_threshold" in json.dumps(response.json()["detail"])


def test_search_without_query_lists_chunks_of_a_file_or_metadata(client, kb):
    bread = search(client, file_name="recipes/bread.md")
    assert bread and all(doc["metadata"]["source"] == "recipes/bread.md" for doc in bread)
    assert search(client, metadata={"source": "recipes/bread.md"}) == bread
    like = search(client, file_name="recipes/%")
    assert like == bread
    assert search(client) == []
    assert search(client, query="anything", knowledge_base_name="no_such_kb") == []


# ---- uploads, custom docs, updates ------------------------------------------------------------------


def test_upload_without_and_with_override(client, kb):
    answer = upload(client, KB, {"animals.txt": ANIMALS.encode()})
    assert answer["data"]["failed_files"] == {"animals.txt": "文件 animals.txt 已存在。"}
    changed = ANIMALS.replace("Zebras live in Africa", "Quokkas live on Rottnest Island")
    answer = upload(client, KB, {"animals.txt": changed.encode()}, override="true", chunk_size=80, chunk_overlap=0)
    assert answer["data"]["failed_files"] == {}
    assert "Quokkas" in search(client, query="Quokkas island", top_k=1)[0]["page_content"]
    assert not any("Zebras" in doc["page_content"] for doc in search(client, file_name="animals.txt"))
    upload(client, KB, {"animals.txt": ANIMALS.encode()}, override="true", chunk_size=80, chunk_overlap=0)


def test_upload_to_unknown_kb(client):
    answer = upload(client, "no_such_kb", {"a.txt": b"hello"})
    assert answer["code"] == 404 and answer["msg"] == "未找到知识库 no_such_kb"


def test_upload_without_vectorizing_then_update_docs(client, kb):
    answer = upload(client, KB, {"later.txt": b"The lighthouse keeper lit the lamp at dusk."}, to_vector_store="false")
    assert answer["data"]["failed_files"] == {}
    assert search(client, file_name="later.txt") == []
    body = {"knowledge_base_name": KB, "file_names": ["later.txt", "missing.txt"]}
    answer = client.post("/knowledge_base/update_docs", json=body).json()
    assert answer["code"] == 200 and answer["msg"] == "更新文档完成"
    assert answer["data"]["failed_files"] == {"missing.txt": "未找到文件 missing.txt"}
    assert "lighthouse" in search(client, file_name="later.txt")[0]["page_content"]


def test_custom_docs_are_stored_and_kept_until_overridden(client, kb):
    docs = {"custom.txt": [{"page_content": "Hand written chunk about glaciers.", "metadata": {"author": "me"}}]}
    answer = upload(client, KB, {"custom.txt": b"Original text about volcanoes."}, docs=json.dumps(docs))
    assert answer["data"]["failed_files"] == {}
    chunks = search(client, file_name="custom.txt")
    assert [c["page_content"] for c in chunks] == ["Hand written chunk about glaciers."]
    assert chunks[0]["metadata"]["author"] == "me"
    body = {"knowledge_base_name": KB, "file_names": ["custom.txt"]}
    client.post("/knowledge_base/update_docs", json=body)
    assert [c["page_content"] for c in search(client, file_name="custom.txt")] == ["Hand written chunk about glaciers."]
    client.post("/knowledge_base/update_docs", json={**body, "override_custom_docs": True})
    assert "volcanoes" in search(client, file_name="custom.txt")[0]["page_content"]


def test_update_docs_by_id(client, kb):
    target = search(client, query="owls at night", top_k=1)[0]
    new_text = "Owls are nocturnal birds of prey with silent flight."
    body = {"knowledge_base_name": KB, "docs": {target["id"]: {"page_content": new_text, "metadata": {"edited": True}}}}
    assert client.post("/knowledge_base/update_docs_by_id", json=body).json()["msg"] == "文档更新成功"
    updated = [c for c in search(client, file_name="animals.txt") if c["id"] == target["id"]]
    assert updated[0]["page_content"] == new_text and updated[0]["metadata"]["edited"] is True
    body = {"knowledge_base_name": KB, "docs": {"no-such-id": {"page_content": "x"}}}
    assert client.post("/knowledge_base/update_docs_by_id", json=body).json()["msg"] == "文档更新失败"
    body["knowledge_base_name"] = "no_such_kb"
    answer = client.post("/knowledge_base/update_docs_by_id", json=body).json()
    assert answer == {"code": 500, "msg": "指定的知识库 no_such_kb 不存在", "data": None}


# ---- download, delete, recreate ---------------------------------------------------------------------


def test_download_attachment_and_preview(client, kb):
    params = {"knowledge_base_name": KB, "file_name": "recipes/bread.md"}
    response = client.get("/knowledge_base/download_doc", params=params)
    assert response.status_code == 200 and response.content == COOKING.encode()
    assert (
        response.headers["content-disposition"].startswith("attachment")
        and "bread.md" in response.headers["content-disposition"]
    )
    response = client.get("/knowledge_base/download_doc", params={**params, "preview": "true"})
    assert response.headers["content-disposition"].startswith("inline")
    answer = client.get("/knowledge_base/download_doc", params={**params, "file_name": "nope.txt"}).json()
    assert answer == {"code": 500, "msg": "nope.txt 读取文件失败", "data": None}


def test_delete_docs_keeps_or_removes_content(client):
    create_kb(client, "delete_kb")
    upload(client, "delete_kb", {"keep.txt": b"Keep the file on disk.", "drop.txt": b"Remove the file from disk."})
    body = {"knowledge_base_name": "delete_kb", "file_names": ["keep.txt", "ghost.txt"]}
    answer = client.post("/knowledge_base/delete_docs", json=body).json()
    assert answer == {
        "code": 200,
        "msg": "文件删除完成",
        "data": {"failed_files": {"ghost.txt": "未找到文件 ghost.txt"}},
    }
    files = client.get("/knowledge_base/list_files", params={"knowledge_base_name": "delete_kb"}).json()["data"]
    assert files == ["drop.txt"]
    params = {"knowledge_base_name": "delete_kb", "file_name": "keep.txt"}
    assert client.get("/knowledge_base/download_doc", params=params).content == b"Keep the file on disk."
    body = {"knowledge_base_name": "delete_kb", "file_names": ["drop.txt"], "delete_content": True}
    assert client.post("/knowledge_base/delete_docs", json=body).json()["data"]["failed_files"] == {}
    params["file_name"] = "drop.txt"
    assert client.get("/knowledge_base/download_doc", params=params).json()["code"] == 500
    search_body = {"knowledge_base_name": "delete_kb", "query": "remove the file", "top_k": 5}
    assert client.post("/knowledge_base/search_docs", json=search_body).json() == []


def test_recreate_streams_progress_per_file(client, api_server):
    create_kb(client, "rebuild_kb")
    upload(client, "rebuild_kb", {"one.txt": b"First file about rivers.", "two/three.md": b"# Lakes\n\nSecond file."})
    content = api_server.kb_root / "rebuild_kb" / "content"
    (content / "broken.unknownext").write_bytes(b"\x00\x01")
    (content / "dropped_in.txt").write_text("A file copied straight into content about mountains.")
    with client.stream(
        "POST", "/knowledge_base/recreate_vector_store", json={"knowledge_base_name": "rebuild_kb"}
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = [chunk for chunk in response.iter_raw()]
    events = [json.loads(chunk[6:-4]) for chunk in chunks if chunk.startswith(b"data: ")]
    done = [e for e in events if e["code"] == 200]
    failed = [e for e in events if e["code"] == 500]
    assert {e["doc"] for e in done} == {"one.txt", "two/three.md", "dropped_in.txt"}
    assert all(
        e["total"] == 4 and re.fullmatch(rf"\({e['finished']} / 4\): {re.escape(e['doc'])}", e["msg"]) for e in done
    )
    assert len(failed) == 1 and failed[0]["msg"].startswith("添加文件‘broken.unknownext’到知识库‘rebuild_kb’时出错：")
    assert failed[0]["msg"].endswith("。已跳过。")
    hits = client.post(
        "/knowledge_base/search_docs", json={"knowledge_base_name": "rebuild_kb", "query": "mountains", "top_k": 1}
    ).json()
    assert hits[0]["metadata"]["source"] == "dropped_in.txt"


def test_recreate_unknown_kb_without_allow_empty(client):
    body = {"knowledge_base_name": "never_made", "allow_empty_kb": False}
    assert client.post("/knowledge_base/recreate_vector_store", json=body).json()["msg"] == "未找到知识库 never_made"


def test_delete_knowledge_base(client, api_server):
    create_kb(client, "doomed_kb")
    upload(client, "doomed_kb", {"x.txt": b"soon gone"})
    answer = client.post("/knowledge_base/delete_knowledge_base", json="doomed_kb").json()
    assert answer == {"code": 200, "msg": "成功删除知识库 doomed_kb", "data": None}
    assert not (api_server.kb_root / "doomed_kb").exists()
    assert "doomed_kb" not in client.get("/knowledge_base/list_knowledge_bases").json()["data"]
    answer = client.post("/knowledge_base/delete_knowledge_base", json="doomed_kb").json()
    assert answer == {"code": 404, "msg": "未找到知识库 doomed_kb", "data": None}


# ---- file chat uploads ------------------------------------------------------------------------------


def test_upload_temp_docs_returns_an_id_and_reuses_it(client, api_server):
    files = [
        ("files", ("notes.txt", b"The secret launch code word is pineapple.")),
        ("files", ("bad.unknownext", b"??")),
    ]
    answer = client.post("/knowledge_base/upload_temp_docs", files=files).json()
    assert answer["code"] == 200 and re.fullmatch(r"[0-9a-f]{32}", answer["data"]["id"])
    failed = answer["data"]["failed_files"]
    assert isinstance(failed, list) and len(failed) == 1 and list(failed[0]) == ["bad.unknownext"]
    again = client.post(
        "/knowledge_base/upload_temp_docs",
        files=[("files", ("more.txt", b"more"))],
        data={"prev_id": answer["data"]["id"]},
    ).json()
    assert again["data"] == {"id": answer["data"]["id"], "failed_files": []}
    assert not list((api_server.kb_root).glob("*/content/notes.txt"))


# ---- server and other routes ------------------------------------------------------------------------


def test_embed_texts(client):
    answer = client.post("/other/embed_texts", json={"texts": ["hello world", "你好"], "to_query": True}).json()
    assert answer["code"] == 200 and len(answer["data"]) == 2
    assert all(len(v) == 384 and math.isclose(math.hypot(*v), 1.0, rel_tol=1e-3) for v in answer["data"])
    answer = client.post("/other/embed_texts", json={"texts": ["x"], "embed_model": "no-such-model"}).json()
    assert answer == {"code": 500, "msg": "指定的模型 no-such-model 不支持 Embeddings 功能。", "data": None}


def test_server_configs_hide_secrets(client):
    response = client.post("/server/configs")
    configs = response.json()
    for key in ("DEFAULT_KNOWLEDGE_BASE", "CHUNK_SIZE", "VECTOR_SEARCH_TOP_K", "LLM_MODELS", "PROMPT_TEMPLATES"):
        assert key in configs
    assert configs["controller_address"].startswith("http://") and configs["api_address"].startswith("http://")
    assert "bing-secret-value-123" not in response.text and "API_KEYS" not in configs


def test_search_engines_and_prompt_templates(client):
    engines = client.post("/server/list_search_engines").json()
    assert engines["code"] == 200 and "duckduckgo" in engines["data"]
    template = client.post(
        "/server/get_prompt_template", json={"type": "knowledge_base_chat", "name": "default"}
    ).json()
    assert isinstance(template, str) and "{{ context }}" in template
    assert client.post("/server/get_prompt_template", json={"type": "llm_chat", "name": "nope"}).json() is None
    assert client.post("/server/get_prompt_template", json={"type": "bogus"}).status_code == 422


def test_docs_are_served_offline(client):
    response = client.get("/", follow_redirects=False)
    assert response.status_code in (302, 307) and response.headers["location"] == "/docs"
    page = client.get("/docs").text
    assert not re.search(r"""(src|href)=["']https?://""", page)
    for asset in re.findall(r"""(?:src|href)=["'](/[^"']+)["']""", page):
        assert client.get(asset).status_code == 200, asset
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/knowledge_base/list_knowledge_bases", "/knowledge_base/create_knowledge_base", "/knowledge_base/delete_knowledge_base",
        "/knowledge_base/list_files", "/knowledge_base/search_docs", "/knowledge_base/update_docs_by_id",
        "/knowledge_base/upload_docs", "/knowledge_base/delete_docs", "/knowledge_base/update_info",
        "/knowledge_base/update_docs", "/knowledge_base/download_doc", "/knowledge_base/recreate_vector_store",
        "/knowledge_base/upload_temp_docs", "/knowledge_base/kb_summary_api/summary_file_to_vector_store",
        "/knowledge_base/kb_summary_api/summary_doc_ids_to_vector_store",
        "/knowledge_base/kb_summary_api/recreate_summary_vector_store",
        "/other/embed_texts", "/server/configs", "/server/list_search_engines", "/server/get_prompt_template",
    ):  # fmt: skip
        assert path in paths, path


def test_no_cors_unless_enabled(client):
    response = client.options(
        "/knowledge_base/list_knowledge_bases",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in response.headers


def test_chinese_names_round_trip(client):
    create_kb(client, "中文知识库")
    content = "知识库问答系统支持中文文档。".encode()
    assert upload(client, "中文知识库", {"资料/说明.txt": content})["data"]["failed_files"] == {}
    files = client.get("/knowledge_base/list_files", params={"knowledge_base_name": "中文知识库"}).json()["data"]
    assert files == ["资料/说明.txt"]
    params = {"knowledge_base_name": "中文知识库", "file_name": "资料/说明.txt"}
    response = client.get("/knowledge_base/download_doc", params=params)
    assert response.content == content and "filename*=utf-8''" in response.headers["content-disposition"]
    hits = client.post(
        "/knowledge_base/search_docs", json={"knowledge_base_name": "中文知识库", "query": "中文文档", "top_k": 1}
    ).json()
    assert hits[0]["metadata"]["source"] == "资料/说明.txt"
