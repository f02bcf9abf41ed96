"""The knowledge-base page's check/repair and export controls, against the real API server."""

from __future__ import annotations

import uuid

from tests.webui.support import ALPHA_TEXT, BETA_TEXT, texts
from tests.webui.test_knowledge_base_page import api, open_kb_page  # noqa: F401 (api is a fixture)
from webui_pages.knowledge_base.page import NEW_KB


def test_check_shows_the_problems_and_repair_fixes_them(api, api_server):  # noqa: F811
    name = f"ui_{uuid.uuid4().hex[:8]}"
    assert api.create_knowledge_base(name).ok
    files = [("alpha.txt", ALPHA_TEXT.encode()), ("beta.md", BETA_TEXT.encode())]
    assert api.upload_kb_docs(files, name).ok
    (api_server.kb_root / name / "content" / "beta.md").unlink()  # removed by hand: still listed and searchable

    at = open_kb_page()
    at.selectbox(key="kb_pick").set_value(name).run()
    assert at.button(key="kb_repair").disabled
    at.button(key="kb_check").click().run()
    assert not at.exception, at.exception
    assert "发现 1 处不一致" in texts(at.warning)
    [problems] = [frame.value for frame in at.dataframe if "问题" in frame.value.columns]
    assert list(problems["文档名称"]) == ["beta.md"]

    at.button(key="kb_repair").click().run()
    assert not at.exception, at.exception
    assert "已修复 1 处不一致" in texts(at.success)
    assert api.list_kb_docs(name).data == ["alpha.txt"]
    api.delete_knowledge_base(name)


def test_export_then_import_under_a_new_name(api):  # noqa: F811
    name, copy = f"ui_{uuid.uuid4().hex[:8]}", f"ui_{uuid.uuid4().hex[:8]}"
    assert api.create_knowledge_base(name).ok
    assert api.upload_kb_docs([("alpha.txt", ALPHA_TEXT.encode())], name).ok

    at = open_kb_page()
    at.selectbox(key="kb_pick").set_value(name).run()
    at.button(key=f"kb_export_prepare_{name}").click().run()
    assert not at.exception, at.exception
    archive = at.session_state[f"kb_export_{name}"]
    assert archive[:2] == b"PK" and at.get("download_button")

    at.selectbox(key="kb_pick").set_value(NEW_KB).run()
    assert at.button(key="kb_import_run").disabled
    at.file_uploader(key="kb_import_file").set_value([(f"{name}.zip", archive, "application/zip")])
    at.text_input(key="kb_import_name").input(copy).run()
    at.button(key="kb_import_run").click().run()
    assert not at.exception, at.exception
    assert at.selectbox(key="kb_pick").value == copy  # the page opens the imported knowledge base
    assert any("导入知识库成功" in text for text in texts(at.success)), texts(at.success)
    original = [hit["page_content"] for hit in api.search_kb_docs(name, "Zephyr warehouse", top_k=3).data]
    copied = [hit["page_content"] for hit in api.search_kb_docs(copy, "Zephyr warehouse", top_k=3).data]
    assert copied == original and copied
    for kb in (name, copy):
        api.delete_knowledge_base(kb)
